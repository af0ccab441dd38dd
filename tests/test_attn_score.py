"""DotScore (hw/attn_score.py, the fp32 attention score of TiledAttention) under Verilator +
cocotb, bit-exact against 3.8's score on random and extreme rows, pairs back to back and with
gaps (``sim/tb/tb_attn_score.py``)."""

from __future__ import annotations

import pytest

from tellme.hw.attn_score import DotScore
from tellme.sim.rtl import run_cocotb

#: (head_dim, lanes): six beats per pair (two of them into partials already holding a beat, as
#: at hd 96 / 16 lanes), and one beat per pair (step always 0).
CONFIGS = {"hd24_l4": (24, 4), "hd8_l8": (8, 8)}


def test_parameters_checked():
    with pytest.raises(ValueError, match="power of two"):
        DotScore(head_dim=24, lanes=6)
    with pytest.raises(ValueError, match="power of two"):
        DotScore(head_dim=24, lanes=16)


@pytest.mark.rtl
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_dot_score(config):
    head_dim, lanes = CONFIGS[config]
    run_cocotb(DotScore(head_dim=head_dim, lanes=lanes), name=f"attn_score_{config}",
               test_module="tellme.sim.tb.tb_attn_score", testcase="scores", timeout=1200,
               parameters={"head_dim": head_dim, "lanes": lanes, "seed": 5 + head_dim})
