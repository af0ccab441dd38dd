"""The element-wise pipelines under Verilator + cocotb, bit-exact against the golden model:
NormQuant (RMSNorm + absmax int8 quantiser), Dequant (+ residual), Gating (ReLU^2, SiLU) and
Rope. The testbench is ``sim/tb/tb_elementwise.py`` (its docstring lists what each cocotb test
covers); every run checks every output beat bit for bit, under random valid/ready stalls on every
stream, plus a stall-free run measuring latency and throughput against lower bounds.

The default run covers every real vector width (1536, 2560, 4096, 6912; heads of 96 and 128) with
a handful of vectors each; ``slow`` runs longer sweeps (more stall settings, more vectors).
"""

from __future__ import annotations

import pytest
from helpers import kwargs_id

from tellme.hw.dequant import Dequant
from tellme.hw.gating import Gating
from tellme.hw.norm_quant import NormQuant, norm_command_layout
from tellme.hw.pipeline import f32_vec, q8_vec
from tellme.hw.rope import Rope, cos_sin_layout
from tellme.hw.tlmm import result_layout
from tellme.hw.vec_width import RowNarrow, VecNarrow, VecWiden
from tellme.sim.rtl import RTLTestFailure, run_cocotb
from tellme.sim.tb.streams import struct_fields

TB = "tellme.sim.tb.tb_elementwise"
TESTS = {"test_random", "test_extremes", "test_throughput", "test_reset"}

def _run(dut, name, parameters, testcase=None, timeout=600.0):
    # run_cocotb fails unless every requested test (default: all of TESTS) ran and passed.
    return run_cocotb(dut, name=name, test_module=TB, parameters=parameters,
                      testcase=sorted(TESTS) if testcase is None else testcase, timeout=timeout)


# -- NormQuant ----------------------------------------------------------------------------------

REAL_WIDTHS = (1536, 2560, 4096, 6912)     # hidden and FFN widths of bitnet-b1.58-large / 2B-4T
HEAD_WIDTHS = (96, 128)                    # per-head quantisation (attention q, K/V cache)
MAX_DIM = 6912


def norm_quant_parameters(lanes: int, max_dim: int = MAX_DIM, **extra) -> dict:
    return {
        "unit": "norm_quant", "lanes": lanes, "max_dim": max_dim, "eps": 1e-5,
        "fields": {"cmd": struct_fields(norm_command_layout()), "x": struct_fields(f32_vec(lanes)),
                   "q": struct_fields(q8_vec(lanes))},
        # stalls: [cmd, x, gain, q, scale]
        "stalls": [[0.0, 0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3, 0.3],
                   [0.1, 0.6, 0.5, 0.7, 0.9]],
        "widths": ([[d, "norm"] for d in REAL_WIDTHS] + [[d, "quant"] for d in REAL_WIDTHS]
                   + [[d, "quant"] for d in HEAD_WIDTHS]),
        "random_vectors": 3,
        "random_max_dim": 700,
        "throughput_dim": 1536,
        "throughput_vectors": 8,
        **extra,
    }


def _norm_bounds(lanes: int) -> dict:
    # At L=8 a 1536-element RMSNorm+quantise vector (n = 192 beats) must take about 2.5 cycles
    # per beat in steady state (measured 2.52: 2n + 100 with pass 3 draining before the next
    # vector); 2.6 catches a back end that stops overlapping with the front (about 3n). Other L
    # use the testbench default (2n + 120).
    return {"max_norm_cycles_per_vector": 2.6 * (1536 // 8)} if lanes == 8 else {}


# L=8 is the kv260 configuration. L=4 (sim-small's, which the step-path and end-to-end tests
# also run) and L=16 build for minutes: they run in the sweep (`make test-all`).
@pytest.mark.rtl
@pytest.mark.parametrize("lanes", [8])
def test_norm_quant(lanes):
    _run(NormQuant(lanes=lanes, max_dim=MAX_DIM), f"norm_quant_l{lanes}",
         norm_quant_parameters(lanes, **_norm_bounds(lanes)))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("lanes", [4, 8, 16])
def test_norm_quant_sweep(lanes):
    stalls = [[0.0] * 5, [0.5] * 5, [0.9, 0.0, 0.0, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0, 0.0],
              [0.0, 0.0, 0.9, 0.0, 0.0], [0.0, 0.0, 0.0, 0.9, 0.0], [0.0, 0.0, 0.0, 0.0, 0.9],
              [0.2, 0.2, 0.8, 0.2, 0.2]]
    _run(NormQuant(lanes=lanes, max_dim=MAX_DIM), f"norm_quant_l{lanes}",
         norm_quant_parameters(lanes, stalls=stalls, random_vectors=10, random_max_dim=MAX_DIM,
                               throughput_vectors=16, **_norm_bounds(lanes)),
         testcase=["test_random", "test_throughput", "test_reset"], timeout=3600.0)


# -- Dequant ------------------------------------------------------------------------------------

def dequant_parameters(dut: Dequant, **extra) -> dict:
    t = dut.tokens
    fields = {"acc": struct_fields(result_layout(t)), "o": struct_fields(f32_vec(t))}
    n = 2
    if dut.residual:
        fields["res"] = struct_fields(f32_vec(t))
        n = 3
    stalls = [[0.0] * n, [0.3] * n, [0.7] * (n - 1) + [0.2], [0.2] * (n - 1) + [0.8]]
    return {"unit": "dequant", "lanes": t, "residual": dut.residual, "latency": dut.latency,
            "min_beats_per_cycle": dut.lanes / t * 0.999,
            "fields": fields, "stalls": stalls, "commands": 10, "max_rows": 64,
            "throughput_rows": 128, "throughput_commands": 12, **extra}


@pytest.mark.rtl
@pytest.mark.parametrize("tokens", [1, 8])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_dequant(tokens, residual):
    dut = Dequant(tokens=tokens, residual=residual)
    _run(dut, f"dequant_t{tokens}_{'res' if residual else 'plain'}", dequant_parameters(dut))


@pytest.mark.rtl
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_dequant_narrowed(residual):
    """Two lanes for T = 8 (the kv260 MATMUL path's setting): each row in four parts."""
    dut = Dequant(tokens=8, residual=residual, lanes=2)
    _run(dut, f"dequant_t8_a2_{'res' if residual else 'plain'}", dequant_parameters(dut))


@pytest.mark.rtl
def test_dequant_narrowed_one_token_rows():
    """A decode step's rows (one used token of T = 8) pass the two-lane Dequant at one row per
    cycle: only the part holding the token is converted."""
    dut = Dequant(tokens=8, residual=False, lanes=2)
    _run(dut, "dequant_t8_a2_plain", dequant_parameters(dut, throughput_used=1, min_beats_per_cycle=0.999))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("tokens", [1, 8])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_dequant_sweep(tokens, residual):
    dut = Dequant(tokens=tokens, residual=residual)
    n = 3 if residual else 2
    stalls = [[p] * n for p in (0.0, 0.1, 0.5, 0.9)] + [[0.9] + [0.0] * (n - 1), [0.0] * (n - 1) + [0.9]]
    if residual:
        stalls.append([0.0, 0.9, 0.0])
    _run(dut, f"dequant_t{tokens}_{'res' if residual else 'plain'}",
         dequant_parameters(dut, stalls=stalls, commands=150, max_rows=256), testcase="test_random",
         timeout=3600.0)


# -- Gating -------------------------------------------------------------------------------------

def gating_parameters(dut: Gating, **extra) -> dict:
    lanes = dut.lanes
    vec = struct_fields(f32_vec(lanes))
    return {"unit": "gating", "lanes": lanes, "act": dut.act, "latency": dut.latency,
            "min_beats_per_cycle": dut.act_lanes / lanes * 0.999,
            "fields": {"gate": vec, "up": vec, "o": vec},
            # stalls: [gate, up, o]
            "stalls": [[0.0, 0.0, 0.0], [0.3, 0.3, 0.3], [0.7, 0.1, 0.2], [0.1, 0.7, 0.2],
                       [0.2, 0.2, 0.8]],
            "vectors": 6, "max_dim": 600, "throughput_dim": 4096, "throughput_vectors": 2, **extra}


# (act, act_lanes): SiLU runs at 2 activation lanes in the KV260 composition (HardwareConfig
# gating_lanes). Both SiLU builds take minutes and run in `make test-all`; in `make test` SiLU
# gating is checked inside the MATMUL path (tests/test_matmul_path.py, extreme gate rows
# included) and end to end.
GATING_CONFIGS = [("relu2", 8), pytest.param("silu", 2, marks=pytest.mark.slow),
                  pytest.param("silu", 8, marks=pytest.mark.slow), ("relu2", 2)]


@pytest.mark.rtl
@pytest.mark.parametrize("act,act_lanes", GATING_CONFIGS)
def test_gating(act, act_lanes):
    dut = Gating(lanes=8, act=act, act_lanes=act_lanes)
    suffix = "" if act_lanes == 8 else f"_a{act_lanes}"
    _run(dut, f"gating_{act}_l8{suffix}", gating_parameters(dut))


@pytest.mark.parametrize("cls,kwargs,match", [
    (Gating, dict(lanes=8, act="silu", act_lanes=3), "act_lanes"),
    (Gating, dict(lanes=8, act="silu", act_lanes=16), "act_lanes"),
    (VecNarrow, dict(lanes=8, out_lanes=3), "divide"),
    (VecNarrow, dict(lanes=2, out_lanes=8), "exceed"),
    (VecWiden, dict(lanes=8, out_lanes=2), "below"),
    (Dequant, dict(tokens=8, residual=False, lanes=3), "lanes must divide"),
    (Dequant, dict(tokens=8, residual=False, lanes=0), "lanes"),
    (RowNarrow, dict(layout=result_layout, count=4, out_count=8), "must divide"),
    (Rope, dict(lanes=8, head_dim=96, rotate_lanes=3), "rotate_lanes must divide"),
], ids=kwargs_id)
def test_gating_parameters_checked(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("act", ["relu2", "silu"])
def test_gating_sweep(act):
    dut = Gating(lanes=8, act=act)
    stalls = [[p, q, r] for p in (0.0, 0.5, 0.9) for q in (0.0, 0.5) for r in (0.0, 0.5, 0.9)]
    _run(dut, f"gating_{act}_l8", gating_parameters(dut, stalls=stalls, vectors=10, max_dim=2000),
         testcase="test_random", timeout=3600.0)


# -- Rope ---------------------------------------------------------------------------------------

# (lanes, head_dim, least output beats per cycle with no stalls). With two output banks, a
# head's second half waits for the bank of the head two back to drain: about n/(n+1) for n
# beats per head at real sizes, about 0.6 for the 4-beat heads of the tiny model. The TLMM
# produces at most 1.6 elements per cycle for it, so even the small case keeps up.
ROPE_SETS = {"l8_hd96": (8, 96, 0.9), "l8_hd128": (8, 128, 0.9), "l4_hd16": (4, 16, 0.55)}
# Rotation narrowed to 4 of 8 lanes (the kv260 attention path's setting): half the rate.
NARROW_ROPE_SETS = {"l8_hd96_r4": (8, 96, 4, 0.45), "l8_hd16_r2": (8, 16, 2, 0.12)}


def rope_parameters(dut: Rope, **extra) -> dict:
    lanes = dut.lanes
    vec = struct_fields(f32_vec(lanes))
    return {"unit": "rope", "lanes": lanes, "head_dim": dut.head_dim, "latency": dut.latency,
            "rotate_lanes": dut.rotate_lanes,
            "thetas": [10000.0, 500000.0], "positions": 2048,
            "fields": {"x": vec, "cs": struct_fields(cos_sin_layout(lanes)), "o": vec},
            # stalls: [x, cs, o]
            "stalls": [[0.0, 0.0, 0.0], [0.3, 0.3, 0.3], [0.7, 0.1, 0.1], [0.1, 0.7, 0.1],
                       [0.1, 0.1, 0.8]],
            "heads": 20, "throughput_heads": 64, **extra}


# hd96 (bitnet-b1.58-large) and hd16 (the tiny models); hd128 (2B4T) runs in the sweep.
@pytest.mark.rtl
@pytest.mark.parametrize("config", [c for c in ROPE_SETS if c != "l8_hd128"])
def test_rope(config):
    lanes, head_dim, min_rate = ROPE_SETS[config]
    dut = Rope(lanes=lanes, head_dim=head_dim)
    _run(dut, f"rope_{config}", rope_parameters(dut, min_beats_per_cycle=min_rate))


@pytest.mark.rtl
@pytest.mark.parametrize("config", list(NARROW_ROPE_SETS))
def test_rope_narrowed(config):
    lanes, head_dim, rotate_lanes, min_rate = NARROW_ROPE_SETS[config]
    dut = Rope(lanes=lanes, head_dim=head_dim, rotate_lanes=rotate_lanes)
    _run(dut, f"rope_{config}", rope_parameters(dut, min_beats_per_cycle=min_rate))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("config", list(ROPE_SETS), ids=list(ROPE_SETS))
def test_rope_sweep(config):
    lanes, head_dim, _ = ROPE_SETS[config]
    dut = Rope(lanes=lanes, head_dim=head_dim)
    stalls = [[p, q, r] for p in (0.0, 0.5, 0.9) for q in (0.0, 0.5, 0.9) for r in (0.0, 0.5, 0.9)]
    _run(dut, f"rope_{config}", rope_parameters(dut, stalls=stalls, heads=200), testcase="test_random",
         timeout=3600.0)


# -- the testbench must reject a wrong model ----------------------------------------------------

@pytest.mark.rtl
def test_testbench_catches_wrong_activation():
    """The ReLU^2 unit checked against the SiLU golden model must fail, with a lane-level report."""
    dut = Gating(lanes=8, act="relu2")
    with pytest.raises(RTLTestFailure) as caught:
        run_cocotb(dut, name="gating_relu2_l8", test_module=TB, testcase="test_extremes",
                   parameters={**gating_parameters(dut), "act": "silu"}, waves_on_failure=False)
    message = caught.value.failed["test_extremes"]
    assert "expected" in message and "gate=" in message, message
