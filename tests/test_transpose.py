"""Transpose and ResidualAdd (hw/transpose.py): parameter checks, and cocotb tests under
Verilator (sim/tb/tb_transpose.py, whose docstring lists what each covers): every output beat
bit for bit against a numpy transpose per block (zero padded) or ``golden.residual_add``, under
random valid/ready stalls on every stream, plus stall-free runs checking one beat per cycle and
the stated latency.

The default configurations are small (T=4, L=4, R=8 and T=3, L=2, R=6: drain-bound with a
non-power-of-two bank depth); ``slow`` runs T=8, L=8, R=64 (the KV260's T and L).
"""

from __future__ import annotations

import pytest

from tellme.hw.pipeline import f32_vec
from tellme.hw.transpose import (ResidualAdd, Transpose, transpose_block_layout,
                                 transpose_command_layout)
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields

TB = "tellme.sim.tb.tb_transpose"
TRANSPOSE_TESTS = ["test_transpose_ranges", "test_transpose_throughput"]
RESIDUAL_TESTS = ["test_residual_values", "test_residual_limits", "test_residual_throughput"]
# [cmd, i, o, blocks] stall probabilities, one random-stall pass each
TRANSPOSE_STALLS = [[0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3], [0.8, 0.1, 0.2, 0.1],
                    [0.1, 0.1, 0.7, 0.1], [0.1, 0.6, 0.1, 0.7]]
# [y, h, o]
RESIDUAL_STALLS = [[0.0, 0.0, 0.0], [0.3, 0.3, 0.3], [0.6, 0.1, 0.2], [0.1, 0.2, 0.7]]


def _run(dut, name, parameters, tests):
    result = run_cocotb(dut, name=name, test_module=TB, parameters=parameters, testcase=tests)
    assert result.tests == {test: "passed" for test in tests}, result.tests
    return result


def transpose_parameters(tokens, lanes, block, **extra):
    return {
        "unit": "transpose", "tokens": tokens, "lanes": lanes, "block": block,
        "latency": Transpose.latency,
        "fields": {"cmd": struct_fields(transpose_command_layout(tokens)),
                   "i": struct_fields(f32_vec(tokens)), "o": struct_fields(f32_vec(lanes)),
                   "blocks": struct_fields(transpose_block_layout(block))},
        "stalls": TRANSPOSE_STALLS,
        # whole blocks, R+3, fewer than L, exactly L, one row, several blocks plus a partial one
        "lengths": sorted({block, block + 3, max(lanes - 1, 1), lanes, 1, 3 * block + lanes + 1, 2 * block}),
        "repeat": 2,
        **extra,
    }


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="multiple of lanes"):
        Transpose(tokens=4, lanes=4, block=6)
    for name in ("tokens", "lanes", "block"):
        params = dict(tokens=4, lanes=4, block=8)
        for bad in (0, -1, True, 2.0):
            params[name] = bad
            with pytest.raises(ValueError, match=name):
                Transpose(**params)
    with pytest.raises(ValueError, match="below 2"):
        Transpose(tokens=1, lanes=1, block=1 << 16)
    with pytest.raises(ValueError, match="lanes"):
        ResidualAdd(lanes=0)
    with pytest.raises(ValueError, match="add_lanes must divide"):
        ResidualAdd(lanes=8, add_lanes=3)
    with pytest.raises(TypeError):
        Transpose(4, 4, 8)                               # keyword-only
    with pytest.raises(TypeError):
        ResidualAdd(4)


def test_ports():
    unit = Transpose(tokens=3, lanes=2, block=6)
    members = unit.signature.members
    assert set(members) == {"cmd", "i", "o", "blocks"}
    assert members["i"].signature.members["payload"].shape == f32_vec(3)
    assert members["o"].signature.members["payload"].shape == f32_vec(2)
    assert dict((name, f.width) for name, f in transpose_block_layout(6)) == {"row0": 16, "rows": 3}
    assert dict((name, f.width) for name, f in transpose_command_layout(3)) == {"tokens": 2}
    add = ResidualAdd(lanes=4)
    assert set(add.signature.members) == {"y", "h", "o"} and add.latency == 4


@pytest.mark.rtl
@pytest.mark.parametrize("tokens,lanes,block", [(4, 4, 8), (3, 2, 6)])
def test_transpose(tokens, lanes, block):
    _run(Transpose(tokens=tokens, lanes=lanes, block=block), f"transpose_t{tokens}_l{lanes}_r{block}",
         transpose_parameters(tokens, lanes, block), TRANSPOSE_TESTS)


@pytest.mark.rtl
@pytest.mark.slow
def test_transpose_large():
    _run(Transpose(tokens=8, lanes=8, block=64), "transpose_t8_l8_r64",
         transpose_parameters(8, 8, 64, lengths=[64, 67, 7, 8, 1, 200, 128, 640], repeat=1), TRANSPOSE_TESTS)


def residual_parameters(unit: ResidualAdd, **extra):
    lanes = unit.lanes
    return {"unit": "residual", "lanes": lanes, "latency": unit.latency, "parts": lanes // unit.add_lanes,
            "fields": {name: struct_fields(f32_vec(lanes)) for name in ("y", "h", "o")},
            "stalls": RESIDUAL_STALLS, "beats": 400, **extra}


def test_golden_residual_add_at_the_largest_values():
    """The golden model gives the hand-derived sums of the largest residual values
    (tb_transpose.RESIDUAL_LIMITS: overflow to infinity, ties at FLT_MAX, cancellation), which
    test_residual_limits then holds the unit to."""
    import numpy as np

    from tellme.sim import golden
    from tellme.sim.tb.tb_transpose import residual_limit_operands
    h, y, want = residual_limit_operands()
    got = golden.residual_add(h.view(np.float32), y.view(np.float32)).view(np.uint32)
    assert [f"{v:#010x}" for v in got] == [f"{v:#010x}" for v in want]
    # and IEEE binary32 (numpy) agrees: these sums are far from the flushed range
    with np.errstate(over="ignore"):
        assert np.array_equal((h.view(np.float32) + y.view(np.float32)).view(np.uint32), want)


@pytest.mark.rtl
def test_residual_add():
    unit = ResidualAdd(lanes=4)
    _run(unit, "residual_add_l4", residual_parameters(unit), RESIDUAL_TESTS)


@pytest.mark.rtl
def test_residual_add_narrowed():
    """Two adders for eight lanes (the kv260 MATMUL path's setting): each beat in four parts."""
    unit = ResidualAdd(lanes=8, add_lanes=2)
    _run(unit, "residual_add_l8_a2", residual_parameters(unit), RESIDUAL_TESTS)


@pytest.mark.rtl
@pytest.mark.slow
def test_residual_add_large():
    unit = ResidualAdd(lanes=8)
    _run(unit, "residual_add_l8", residual_parameters(unit, beats=3000), RESIDUAL_TESTS)
