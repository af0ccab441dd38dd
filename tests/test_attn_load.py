"""The attention load assembler (hw/attn_load.py) under Verilator: every token's beat holds
exactly the vectors and scales sent, under random stalls."""

import pytest

from tellme.hw.attn_load import AttentionLoad
from tellme.sim.rtl import run_cocotb


@pytest.mark.rtl
@pytest.mark.parametrize("head_dim, heads, lanes, attn_format", [(16, 2, 4, "int8"), (32, 1, 8, "int8"),
                                                                 (16, 2, 4, "fp32")])
def test_attention_load(head_dim, heads, lanes, attn_format):
    run_cocotb(AttentionLoad(head_dim=head_dim, heads=heads, lanes=lanes, attn_format=attn_format),
               name=f"attn_load_{attn_format}", test_module="tellme.sim.tb.tb_attn_load",
               parameters={"head_dim": head_dim, "heads": heads, "lanes": lanes, "tokens": 12,
                           "attn_format": attn_format})


def test_attention_load_parameters():
    with pytest.raises(ValueError, match="multiple of lanes"):
        AttentionLoad(head_dim=12, heads=1, lanes=8)
    with pytest.raises(ValueError, match="heads"):
        AttentionLoad(head_dim=16, heads=0, lanes=4)
    with pytest.raises(ValueError, match="attn_format"):
        AttentionLoad(head_dim=16, heads=1, lanes=4, attn_format="fp16")
