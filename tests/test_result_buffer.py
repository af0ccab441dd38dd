"""The MATMUL path's result buffer (hw/result_buffer.py) under Verilator: rows unchanged under
random stalls, and a burst taken at full rate (sim/tb/tb_result_buffer.py)."""

from __future__ import annotations

import pytest

from tellme.hw.result_buffer import ResultBuffer
from tellme.hw.tlmm import result_layout
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields


@pytest.mark.parametrize("params,match", [
    (dict(tokens=0, acc_bits=20, depth=8), "tokens"),
    (dict(tokens=2, acc_bits=33, depth=8), "acc_bits"),
    (dict(tokens=2, acc_bits=20, depth=0), "depth"),
    (dict(tokens=2, acc_bits=20, depth=8, commands=0), "commands"),
])
def test_parameters_are_checked(params, match):
    with pytest.raises(ValueError, match=match):
        ResultBuffer(**params)


@pytest.mark.rtl
@pytest.mark.parametrize("tokens,acc_bits,depth", [(2, 17, 40), (8, 21, 64)], ids=["T2", "T8"])
def test_result_buffer_rtl(tokens, acc_bits, depth):
    run_cocotb(ResultBuffer(tokens=tokens, acc_bits=acc_bits, depth=depth), name=f"result_buffer_t{tokens}",
               test_module="tellme.sim.tb.tb_result_buffer",
               parameters={"tokens": tokens, "acc_bits": acc_bits, "depth": depth, "commands": 4,
                           "fields": struct_fields(result_layout(tokens)), "rows": 600})
