"""The binary32 units of ``hw/fp32.py`` under Verilator + cocotb, bit-exact against
``sim/fp32.py``, and the IEEE golden primitives against numpy on the same operand mix.

The testbench is ``sim/tb/tb_fp32.py``: one generic bench, one registry entry per unit
(:data:`tellme.sim.tb.tb_fp32.UNITS`: hw class, golden function, operand generator). Each unit
gets 100,000 random operands (pairs for binary units) from its generator's categories plus every
special value (crossed with every other for binary units), all of them under random stalls on
both streams, and the first 20,000 once more without stalls (one result per cycle). Set
``TELLME_FP32_SEED`` to draw a different operand set.
"""

from __future__ import annotations

import inspect
import os
import zlib

import numpy as np
import pytest
from amaranth.hdl import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tellme.hw import fp32 as hw_fp32
from tellme.hw.fp32 import FixedLatencyStream, FMul
from tellme.contract import fp32 as f
from tellme.sim.rtl import RTLTestFailure, run_cocotb
from tellme.sim.tb.streams import struct_fields
from tellme.sim.tb.tb_fp32 import UNITS, golden_to_int, make_operands

TB = "tellme.sim.tb.tb_fp32"
COUNT = 100_000
# The no-stall pass (one result per cycle) runs the first operands of the set: the specials,
# then random ones. All COUNT operands go through the random-stall pass.
FULL_RATE_COUNT = 20_000
BASE_SEED = int(os.environ.get("TELLME_FP32_SEED", "2024"))
MIN_NORMAL = 2.0 ** -126


def unit_seed(name: str) -> int:
    return BASE_SEED * 1_000_003 + zlib.crc32(name.encode())


def unit_or_skip(name: str):
    try:
        return UNITS[name].construct()
    except AttributeError:
        pytest.skip(f"hw/fp32.py has no {UNITS[name].cls} yet")


# -- the RTL units ------------------------------------------------------------------------------

def bench_parameters(name: str, dut: FixedLatencyStream, **overrides) -> dict:
    return {
        "unit": name,
        "count": COUNT,
        "seed": unit_seed(name),
        "latency": dut.unit.latency,
        "in_fields": struct_fields(dut.i.payload.shape()),
        "full_rate_count": FULL_RATE_COUNT,
        **overrides,
    }


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(UNITS))
def test_unit_bit_exact(name):
    dut = FixedLatencyStream(unit_or_skip(name))
    run_cocotb(dut, name=f"fp32_{name}", test_module=TB, testcase=["test_random_stalls", "test_full_rate"],
               parameters=bench_parameters(name, dut))


class FlushingMul(wiring.Component):
    """FMul with one corner wrong: results of magnitude 2^-126 come out as signed zero (what a
    multiplier rounding on the normal grid only, or flushing before rounding, gets wrong)."""

    latency = FMul.latency

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "en": In(1), "o": Out(32)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mul = mul = FMul()
        m.d.comb += [mul.a.eq(self.a), mul.b.eq(self.b), mul.en.eq(self.en),
                     self.o.eq(Mux(mul.o[:31] == 0x00800000, mul.o & 0x80000000, mul.o))]
        return m


@pytest.mark.rtl
def test_bench_catches_a_corner_bug():
    dut = FixedLatencyStream(FlushingMul())
    with pytest.raises(RTLTestFailure) as caught:
        run_cocotb(dut, name="fp32_flushing_mul", test_module=TB, testcase="test_random_stalls",
                   waves_on_failure=False, parameters=bench_parameters("fmul", dut, count=10_000))
    message = caught.value.failed["test_random_stalls"]
    assert "results differ" in message and "min_normal_edge" in message, message
    assert "expected 0x00800000" in message or "expected 0x80800000" in message, message


def test_registry_covers_every_unit():
    """Every fixed-latency unit class in hw/fp32.py has a registry entry."""
    units = {name for name, cls in inspect.getmembers(hw_fp32, inspect.isclass)
             if issubclass(cls, wiring.Component) and hasattr(cls, "latency")
             and cls.__module__ == hw_fp32.__name__}
    assert units, "no units found in hw/fp32.py"
    missing = units - {entry.cls for entry in UNITS.values()}
    assert not missing, f"add {sorted(missing)} to UNITS in sim/tb/tb_fp32.py"


# -- the golden IEEE primitives against numpy on the bench's operand mix ------------------------

def _flush(x: np.ndarray) -> np.ndarray:
    """Subnormals to signed zero."""
    x = np.array(x, dtype=np.float32)
    tiny = np.abs(x) < np.float32(MIN_NORMAL)
    x[tiny] = np.copysign(np.float32(0), x[tiny])
    return x


def _reference(op, *operands) -> np.ndarray:
    """IEEE binary32 with FTZ: operands flushed, computed in float64 and rounded once to float32
    with gradual underflow (for +, - and x of binary32 values the float64 result is exact or
    the double rounding is innocuous, 53 >= 2*24 + 2), then results below 2^-126 flushed."""
    with np.errstate(all="ignore"):
        wide = [_flush(x).astype(np.float64) for x in operands]
        return _flush(op(*wide).astype(np.float32))


def _assert_same(got, expect, operands, what):
    nan = np.isnan(expect)
    assert np.array_equal(np.isnan(got), nan), what
    assert np.all(got[nan].view(np.uint32) == f.QNAN_BITS), what
    bad = np.flatnonzero(got[~nan].view(np.uint32) != expect[~nan].view(np.uint32))
    if len(bad):
        i = np.flatnonzero(~nan)[bad[0]]
        ops = " ".join(f"0x{int(np.asarray(x)[i:i + 1].view(np.uint32)[0]):08x}" for x in operands)
        raise AssertionError(f"{what}: {len(bad)} differences, first operands {ops}: golden "
                             f"0x{int(got[i:i + 1].view(np.uint32)[0]):08x}, numpy "
                             f"0x{int(expect[i:i + 1].view(np.uint32)[0]):08x}")


@pytest.mark.parametrize("name, golden, ref", [("fadd", f.add, np.add),
                                               ("fsub", f.sub, np.subtract),
                                               ("fmul", f.mul, np.multiply)])
def test_golden_arith_is_ieee_ftz_on_bench_mix(name, golden, ref):
    a, b = make_operands(name, COUNT, unit_seed(name)).ops
    _assert_same(golden(a, b), _reference(ref, a, b), (a, b), name)
    # numpy's own float32 arithmetic (gradual underflow) agrees too.
    with np.errstate(all="ignore"):
        direct = _flush(ref(_flush(a), _flush(b)))
    _assert_same(golden(a, b), direct, (a, b), f"{name} (float32)")


def test_golden_from_int_on_bench_mix():
    (n,) = make_operands("from_int", COUNT, unit_seed("from_int")).ops
    expect = n.astype(np.int64).astype(np.float64).astype(np.float32)   # exact, then one rounding
    _assert_same(f.from_int(n), expect, (n,), "from_int")


def test_generic_to_int_matches_golden_to_int8():
    """The bench's golden for ToInt(width) is fp32.to_int8 generalised: equal at width 8."""
    (x,) = make_operands("to_int8", COUNT, unit_seed("to_int8")).ops
    assert np.array_equal(golden_to_int(8)(x), f.to_int8(x).astype(np.int32))


def test_bench_mix_reaches_the_corners():
    """The operand mix hits the cases it is meant to: products that round up to 2^-126 only
    with gradual underflow, products rounding to infinity from below 2^128, sums that flush,
    additions overflowing, int32 conversions that tie."""
    a, b = make_operands("fmul", COUNT, unit_seed("fmul")).ops
    with np.errstate(all="ignore"):
        exact = np.abs(a.astype(np.float64) * b.astype(np.float64))
        product = np.abs(a * b)
    finite = np.isfinite(exact)
    # [2^-126 - 2^-150, 2^-126 - 2^-151): below the threshold of unbounded-exponent rounding,
    # rounds up to 2^-126 on the subnormal grid.
    subnormal_round_up = finite & (exact < MIN_NORMAL - 2.0 ** -151) & (product == MIN_NORMAL)
    assert subnormal_round_up.sum() >= 1000, subnormal_round_up.sum()
    assert (finite & (exact < MIN_NORMAL) & (product == MIN_NORMAL)).sum() >= 2000
    assert (finite & (exact > 0) & (product < MIN_NORMAL)).sum() >= 10_000
    assert (finite & (exact < 2.0 ** 128) & np.isinf(product)).sum() >= 300

    for name in ("fadd", "fsub"):
        a, b = make_operands(name, COUNT, unit_seed(name)).ops
        with np.errstate(all="ignore"):
            fa, fb = _flush(a).astype(np.float64), _flush(b).astype(np.float64)
            exact = np.abs(fa + fb if name == "fadd" else fa - fb)
            rounded = exact.astype(np.float32)
        assert ((exact > 0) & (exact < MIN_NORMAL)).sum() >= 300, name        # flushed sums
        assert (np.isfinite(fa) & np.isfinite(fb) & (rounded == np.inf)).sum() >= 500, name

    (n,) = make_operands("from_int", COUNT, unit_seed("from_int")).ops
    magnitude = np.abs(n.astype(np.int64))
    shift = np.maximum(np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int64) - 23, 0)
    tie = (shift > 0) & ((magnitude & ((np.int64(1) << shift) - 1)) == (np.int64(1) << shift) // 2)
    assert tie.sum() >= 10_000


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 10, 12])
def test_leading_zeros_tree_counts_every_value(width):
    """hw.fp32.leading_zeros (a tree, used by FAdd, FromInt and the LM head's binary16 widening)
    on every value of small widths: the count of leading zeros, the width for zero."""
    from amaranth.hdl import Module, Signal
    from amaranth.sim import Simulator
    from tellme.hw.fp32 import leading_zeros

    m = Module()
    value = Signal(width)
    count = leading_zeros(m, value, "lz")
    sim = Simulator(m)
    wrong = []

    async def bench(ctx):
        for x in range(1 << width):
            ctx.set(value, x)
            if ctx.get(count) != width - x.bit_length():
                wrong.append((x, ctx.get(count)))

    sim.add_testbench(bench)
    sim.run()
    assert not wrong, wrong[:5]
