"""TLMM engine and weight decode under Verilator + cocotb, bit-exact against the golden model.

The testbenches are ``sim/tb/tb_tlmm.py`` and ``sim/tb/tb_tlmm_decode.py``; their docstrings
list what every cocotb test covers. Fast parameter sets run in ``make test``; the full
bitnet-b1.58-large matrices (in their real N_t tiling) and a long random sweep are ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

from tellme.hw.tlmm import TlmmEngine, act_layout, command_layout, result_layout
from tellme.hw.tlmm_decode import TlmmWeightDecode
from tellme.sim.rtl import RTLTestFailure, run_cocotb
from tellme.sim.tb.streams import struct_fields

TB = "tellme.sim.tb.tb_tlmm"
TB_DECODE = "tellme.sim.tb.tb_tlmm_decode"

# (G, P, T) sets with their command limits. max_rows leaves room for test_throughput's rows,
# which must outlast a block's table precompute (about T * (max(P, E) + 1) cycles).
ENGINE_SETS = {
    "g5p4t2": dict(group=5, lanes=4, tokens=2, max_rows=320, max_blocks=8),
    "g3p8t1": dict(group=3, lanes=8, tokens=1, max_rows=64, max_blocks=6),
    "g2p16t4": dict(group=2, lanes=16, tokens=4, max_rows=128, max_blocks=4),
    "g4p3t3": dict(group=4, lanes=3, tokens=3, max_rows=192, max_blocks=8),
    # one token column per build (the default builds min(2, T) at once)
    "g3p4t4k1": dict(group=3, lanes=4, tokens=4, max_rows=64, max_blocks=6, build_tokens=1),
}
# The KV260 lane count and code (T = 1: decode; precompute of 122 entries hides behind 128-row
# tiles), with room for the real tiles of docs/architecture.md section 4 (N_t <= 1536, B <= 13).
REAL_SET = dict(group=5, lanes=64, tokens=1, max_rows=2048, max_blocks=16)

ENGINE_TESTS = ["test_random", "test_corners", "test_back_to_back", "test_late_codes",
                "test_throughput"]


def limit_tiles(k: int, rows: int = 4, tokens: int | None = None) -> list[dict]:
    """The accumulator's limits over ``k`` inputs (issue #16): all-127 activations against all
    +1 weights (+127 K), -128 against -1 (+128 K, the largest sum) and -128 against +1
    (-128 K, the most negative), as ``real_tiles`` entries. (test_corners runs the same cases
    at every ENGINE_SETS engine's own longest K.)"""
    extra = {} if tokens is None else {"tokens": tokens}
    return [{"name": f"limit x={x} w={w} K={k}", "rows": rows, "k": k, "weights": weights, "acts": acts, **extra}
            for x, w, weights, acts in ((127, "+1", "plus", "max"), (-128, "-1", "minus", "min"),
                                        (-128, "+1", "plus", "min"))]

# bitnet-b1.58-large (hidden 1536, FFN 4096): one output tile of 128 rows over the full K.
REAL_TILES = [
    {"name": "q/k/v/o 1536x1536", "rows": 128, "k": 1536},
    {"name": "gate/up 4096x1536", "rows": 128, "k": 1536},
    {"name": "down 1536x4096", "rows": 128, "k": 4096},
]
# The whole matrices in their real tiling (N_t of docs/architecture.md section 4).
FULL_MATRICES = [
    {"name": "q/k/v/o 1536x1536", "rows": 1536, "k": 1536, "tiles": [1536]},
    {"name": "gate/up 4096x1536", "rows": 4096, "k": 1536, "tiles": [1366, 1366, 1364]},
    {"name": "down 1536x4096", "rows": 1536, "k": 4096, "tiles": [512, 512, 512]},
]


def engine(params: dict) -> TlmmEngine:
    return TlmmEngine(**params)


def engine_parameters(dut: TlmmEngine, params: dict, **extra) -> dict:
    t = params["tokens"]
    return {
        **params,
        "latency": dut.latency,
        "fields": {
            "cmd": struct_fields(command_layout(t, params["max_blocks"], params["max_rows"])),
            "act": struct_fields(act_layout(params["group"])),
            "out": struct_fields(result_layout(t)),
        },
        **extra,
    }


def run_engine(params: dict, testcase, *, timeout: float = 600, **extra):
    dut = engine(params)
    result = run_cocotb(dut, name="tlmm", test_module=TB, testcase=testcase,
                        parameters=engine_parameters(dut, params, **extra), timeout=timeout)
    report(result)
    return result


def report(result):
    # Shown with `pytest -rP`: where the time goes (build 0 s = cached build reused).
    print(f"{result.name}: build {result.build_seconds:.1f} s, simulation {result.sim_seconds:.1f} s, "
          f"seed {result.seed}, {result.build_dir.name}")


@pytest.mark.rtl
@pytest.mark.parametrize("key", list(ENGINE_SETS))
def test_tlmm_engine(key):
    run_engine(ENGINE_SETS[key], ENGINE_TESTS)


@pytest.mark.rtl
def test_tlmm_real_tiles():
    """One 128-row tile of each bitnet-b1.58-large projection shape at P=64, G=5: stall-free
    (rows/cycle logged) and with stalls on every stream; plus the full-rate check at P=64. And
    the accumulator's limits at the engine's longest K (16 blocks of 64 x 5 = 5120 inputs, more
    than large's 4096): all-127 x all +1, -128 x -1, -128 x +1 (limit_tiles)."""
    longest_k = REAL_SET["max_blocks"] * REAL_SET["lanes"] * REAL_SET["group"]
    run_engine(REAL_SET, ["test_real_tiles", "test_throughput"], real_tiles=REAL_TILES + limit_tiles(longest_k),
               real_stalls=[[0.0] * 4, [0.2, 0.2, 0.2, 0.3]])


@pytest.mark.rtl
@pytest.mark.slow
def test_tlmm_limits_at_the_longest_k():
    """The engine the kv260 composition builds for bitnet-b1.58-2B-4T's longest K (down_proj,
    K = 6912: 22 blocks of 64 lanes x G 5, 8 tokens): all-127 x all +1 and the other int8
    limits (limit_tiles) over that K, without and with stalls, bit-exact."""
    from tellme.config import hardware_preset, model_preset
    hw, model = hardware_preset("kv260"), model_preset("bitnet-b1.58-2B-4T")
    k = max(model.hidden_size, model.intermediate_size)
    blocks = -(-(-(-k // hw.tlmm_group)) // hw.tlmm_lanes)          # as hw/matmul_path.py sizes it
    params = dict(group=hw.tlmm_group, lanes=hw.tlmm_lanes, tokens=hw.tlmm_tokens, max_rows=64, max_blocks=blocks)
    assert (k, blocks) == (6912, 22)
    run_engine(params, ["test_real_tiles"], real_tiles=limit_tiles(k),
               real_stalls=[[0.0] * 4, [0.3, 0.3, 0.3, 0.3]], timeout=3600)


@pytest.mark.rtl
def test_tlmm_harness_catches_wrong_code():
    """A lane word with one code's sign flipped (the expected rows are those of the true code)
    must fail the scoreboard: the harness really compares what the engine computes."""
    params = ENGINE_SETS["g5p4t2"]
    dut = engine(params)
    with pytest.raises(RTLTestFailure) as caught:
        run_cocotb(dut, name="tlmm", test_module=TB, testcase="test_random",
                   waves_on_failure=False,
                   parameters=engine_parameters(dut, params, corrupt=True, random_problems=2,
                                                stalls=[[0.0] * 4]))
    message = caught.value.failed["test_random"]
    assert "acc" in message and "expected" in message, message


@pytest.mark.rtl
@pytest.mark.slow
def test_tlmm_full_matrices():
    """The whole bitnet-b1.58-large projections, tile by tile, at P=64, G=5, T=1."""
    run_engine(REAL_SET, ["test_real_tiles"], real_tiles=FULL_MATRICES,
               real_stalls=[[0.0] * 4, [0.2, 0.2, 0.2, 0.3]], timeout=3600)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("key", list(ENGINE_SETS))
def test_tlmm_engine_sweep(key):
    """A long random sweep: many more problems per stall setting."""
    run_engine(ENGINE_SETS[key], ["test_random", "test_back_to_back"], random_problems=60,
               timeout=3600)


# -- weight decode --------------------------------------------------------------------------------

DECODE_SETS = {
    # KV260 default: 16 lanes x 8 bits per port = one 128-bit beat per port per lane word.
    "g5p64x4": dict(group=5, lanes=64, ports=4, beat_bits=128,
                    shapes=[[7, 100], [1, 3], [64, 1536], [16, 4096]]),
    # A port's share spans two beats: 32 lanes x 7 bits = 224 bits.
    "g4p64x2": dict(group=4, lanes=64, ports=2, beat_bits=128),
    # Another beat width (pack_codes layout): 4 lanes x 4 bits = 16 bits padded into one 32-bit
    # beat, on three ports.
    "g2p12x3b32": dict(group=2, lanes=12, ports=3, beat_bits=32),
}
# More of the same (each is a separate Verilator build, so they wait for `make test-all`).
DECODE_SETS_SLOW = {
    # 32 lanes x 5 bits = 160 bits: two beats, the second mostly padding.
    "g3p64x2": dict(group=3, lanes=64, ports=2, beat_bits=128),
    # One port of 8 lanes x 8 bits = exactly one 64-bit beat.
    "g5p8x1b64": dict(group=5, lanes=8, ports=1, beat_bits=64),
    # One port for all 64 lanes: 512 bits = four 128-bit beats per lane word.
    "g5p64x1": dict(group=5, lanes=64, ports=1, beat_bits=128),
}


def run_decode(params: dict):
    params = dict(params)
    shapes = params.pop("shapes", None)
    dut = TlmmWeightDecode(**params)
    result = run_cocotb(dut, name="tlmm_decode", test_module=TB_DECODE, testcase="test_decode",
                        parameters={**params, "beats_per_word": dut.beats_per_word,
                                    **({"shapes": shapes} if shapes else {})})
    report(result)


@pytest.mark.rtl
@pytest.mark.parametrize("key", list(DECODE_SETS))
def test_tlmm_weight_decode(key):
    run_decode(DECODE_SETS[key])


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("key", list(DECODE_SETS_SLOW))
def test_tlmm_weight_decode_more(key):
    run_decode(DECODE_SETS_SLOW[key])


def test_build_tokens_are_checked():
    assert TlmmEngine(group=5, lanes=4, tokens=8, max_rows=8, max_blocks=2).build_tokens == 2
    assert TlmmEngine(group=5, lanes=4, tokens=1, max_rows=8, max_blocks=2).build_tokens == 1
    for bad in (0, 3):
        with pytest.raises(ValueError, match="build_tokens"):
            TlmmEngine(group=5, lanes=4, tokens=2, max_rows=8, max_blocks=2, build_tokens=bad)


@pytest.mark.parametrize("group", [2, 3, 4, 5])
def test_build_order_steps_one_digit_at_a_time(group):
    """The tables' build order visits every magnitude once from 0, each step changing one
    balanced-ternary digit by +-1: entry(next) = entry(previous) + sign x_digit."""
    from tellme.contract.formats import table_entries, tlmm_digits
    from tellme.hw.tlmm import build_order

    order = build_order(group)
    digits = tlmm_digits(group).astype(int)
    assert order[0] == (0, None, None)
    assert sorted(mag for mag, _, _ in order) == list(range(table_entries(group)))
    x = np.random.default_rng(group).integers(-128, 128, size=group)
    entry = 0
    for (before, _, _), (mag, digit, sign) in zip(order, order[1:]):
        change = digits[mag] - digits[before]
        assert np.count_nonzero(change) == 1 and change[digit] == sign
        entry += sign * x[digit]
        assert entry == digits[mag] @ x
