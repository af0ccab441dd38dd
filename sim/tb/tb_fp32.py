"""cocotb tests of the binary32 units of :mod:`tellme.hw.fp32`, bit for bit against
:mod:`tellme.contract.fp32`.

One generic bench for every unit: the design under test is ``FixedLatencyStream(unit)`` (stream
``i`` carrying the operand struct, stream ``o`` the result). The operands are generated here with
numpy from the unit's entry in :data:`UNITS`, the expected results are the golden function applied
to the same arrays, and every result is compared bit for bit (NaNs included: the golden model and
the RTL both return the canonical ``0x7FC00000``).

Adding a unit is one line in :data:`UNITS`: the ``tellme.hw.fp32`` class name (and constructor
arguments), the golden function (numpy arrays in, numpy array out) and the operand generator
(``gen(rng, count) -> {category: (a[, b])}``, float32 arrays for binary32 ports, int32 for
``FromInt``). Every generator draws exactly ``count`` random operands (pairs for binary units) over
named categories that exercise its datapath, and adds the special values (for binary units every
special crossed with every other); the categories show up in mismatch reports.

Configuration (``run_cocotb(parameters=...)``, read with :func:`tellme.sim.tb.tb_config`):

``unit``
    Key of :data:`UNITS`.
``count``
    Random operands (or pairs) on top of the specials (default 100000).
``seed``
    Seed of the operand generator (numpy ``default_rng``); the stall patterns follow cocotb's
    seed, so ``run_cocotb(seed=...)`` replays them.
``latency``
    The unit's ``latency``: edges from an operand moving on ``i`` to its result moving on ``o``.
``in_fields``
    :data:`~tellme.sim.tb.streams.Field` list of the ``i`` payload (``struct_fields`` of the
    FixedLatencyStream input layout).
``stalls``
    List of ``[input, output]`` stall probabilities for ``test_random_stalls``; the operands are
    cut into one consecutive chunk per entry (default :data:`DEFAULT_STALLS`).
``full_rate_count``
    Operands sent in ``test_full_rate`` (no stalls; results must come one per cycle): the first
    ``full_rate_count`` of the set, which starts with the specials (default: all).
``max_report``
    Mismatches listed in a failure message (default 12).
"""

from __future__ import annotations

import collections
from typing import Callable, NamedTuple

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Timer

from ...contract import fp32
from . import tb_config
from .streams import StreamSink, StreamSource, random_pause, reset_dut, start_clock

__all__ = ["Unit", "UNITS", "FLOAT_SPECIALS", "INT_SPECIALS", "make_operands", "expected_bits",
           "raw_bits"]

RESET_CYCLES = 2
DEFAULT_COUNT = 100_000
DEFAULT_STALLS = [[0.1, 0.1], [0.02, 0.4], [0.4, 0.02]]
CLOCK_NS = 10
# Cycles between looks at the sink while waiting for results. The wait is a Timer, not
# ClockCycles: a ClockCycles (or a with_timeout/start_watchdog built on it) resumes Python at
# every edge, which costs as much as a stream driver.
WAIT_STEP = 1024


# -- operand building blocks ----------------------------------------------------------------------

def _u32(x) -> np.ndarray:
    return np.asarray(x).astype(np.uint32)


def _compose(sign, exp, frac) -> np.ndarray:
    """float32 array from sign bits, biased exponents and 23-bit fractions."""
    bits = (_u32(sign) << np.uint32(31)) | (_u32(exp) << np.uint32(23)) | _u32(frac)
    return bits.view(np.float32)


def _add_ulps(x, k) -> np.ndarray:
    """x moved by k units in the last place of its magnitude (crossing binades, possibly into
    infinity or NaN; never across zero: the magnitude is clamped at 0)."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.int64)
    sign, mag = bits & 0x80000000, bits & 0x7FFFFFFF
    mag = np.clip(mag + np.asarray(k, dtype=np.int64), 0, 0x7FFFFFFF)
    return _u32(sign | mag).view(np.float32)


def _random_sign_flip(rng, x) -> np.ndarray:
    """x with its sign flipped in a random half of the elements."""
    flip = _u32(_sign(rng, len(x))) << np.uint32(31)
    return (np.asarray(x, dtype=np.float32).view(np.uint32) ^ flip).view(np.float32)


def _bits(rng, n) -> np.ndarray:
    """Uniformly random bit patterns (all classes: NaNs, infinities, subnormals included)."""
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _sign(rng, n) -> np.ndarray:
    return rng.integers(0, 2, n)


def _frac(rng, n) -> np.ndarray:
    """23-bit fractions: mostly uniform, one in four a rounding-relevant pattern (0, all ones,
    a random value with many trailing zeros, or one with few set bits)."""
    frac = rng.integers(0, 1 << 23, n)
    kind = rng.integers(0, 8, n)
    trailing = rng.integers(1, 24, n)
    frac = np.where(kind == 0, 0, frac)
    frac = np.where(kind == 1, (1 << 23) - 1, frac)
    frac = np.where(kind == 2, frac & ~((1 << trailing) - 1), frac)
    sparse = (1 << rng.integers(0, 23, n)) | (1 << rng.integers(0, 23, n))
    frac = np.where(kind == 3, sparse, frac)
    return frac


def _float(rng, n, exp_lo, exp_hi, sign=None) -> np.ndarray:
    """Random normal floats with biased exponents in [exp_lo, exp_hi] (random signs unless
    ``sign`` is given)."""
    exp = rng.integers(exp_lo, exp_hi + 1, n)
    return _compose(_sign(rng, n) if sign is None else np.broadcast_to(sign, (n,)), exp,
                    _frac(rng, n))


def _subnormal(rng, n) -> np.ndarray:
    return _compose(_sign(rng, n), 0, rng.integers(1, 1 << 23, n))


def _pick(rng, n, values) -> np.ndarray:
    values = np.asarray(values)
    return values[rng.integers(0, len(values), n)]


def _counts(n: int, weights: dict) -> dict:
    """Split n over the categories in proportion to ``weights`` (the counts sum to n)."""
    total = sum(weights.values())
    counts = {name: int(n * w / total) for name, w in weights.items()}
    first = next(iter(counts))
    counts[first] += n - sum(counts.values())
    return counts


def _hex_f32(bits: list[int]) -> np.ndarray:
    return np.array(bits, dtype=np.uint32).view(np.float32)


#: Special binary32 values: signed zeros, infinities, NaNs with various payloads (quiet and
#: signalling, both signs), min and max normals, subnormals, and small exact values.
FLOAT_SPECIALS = _hex_f32([
    0x00000000, 0x80000000,                          # +-0
    0x7F800000, 0xFF800000,                          # +-inf
    0x7FC00000, 0xFFC00000, 0x7FC00001, 0x7FFFFFFF,  # quiet NaNs
    0xFFFFFFFF, 0x7F800001, 0xFF800001, 0x7FA5A5A5,  # ... and signalling ones
    0x00800000, 0x80800000, 0x00800001, 0x80800001,  # +-min normal (and its successor)
    0x7F7FFFFF, 0xFF7FFFFF, 0x7F7FFFFE,              # +-max normal
    0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF,  # subnormals: smallest, largest
    0x00400000, 0x80400000,
    0x3F800000, 0xBF800000,                          # 1, -1
    0x3F000000, 0xBF000000,                          # 0.5, -0.5
    0x3FC00000, 0xBFC00000,                          # 1.5, -1.5
    0x40200000, 0xC0200000,                          # 2.5, -2.5
])

#: Special int32 values for FromInt: zero, +-1, the extremes, and the neighbourhoods of 2^24,
#: 2^25 and 2^31 where rounding starts and ties appear.
INT_SPECIALS = np.array(
    [0, 1, -1, 2, -2, 3, 2 ** 31 - 1, -2 ** 31, -2 ** 31 + 1, 2 ** 31 - 64, 2 ** 31 - 65,
     2 ** 31 - 128, 2 ** 31 - 129, 2 ** 31 - 192, -2 ** 31 + 64, -2 ** 31 + 128, -2 ** 31 + 192,
     2 ** 24 - 1, 2 ** 24, 2 ** 24 + 1, 2 ** 24 + 2, 2 ** 24 + 3, -2 ** 24 - 1, -2 ** 24 - 3,
     2 ** 25 + 2, 2 ** 25 + 6, 2 ** 25 - 1, 2 ** 30, 2 ** 30 + 2 ** 6, 2 ** 30 + 3 * 2 ** 6,
     0x55555555, -0x55555555, 0x7FFFFF80, 0x7FFFFFBF, 0x7FFFFFC0], dtype=np.int64).astype(np.int32)


def _cross(values) -> tuple[np.ndarray, np.ndarray]:
    """Every value paired with every value (both orders)."""
    return np.repeat(values, len(values)), np.tile(values, len(values))


def _near_product(rng, n, target, a_exp_lo, a_exp_hi):
    """Pairs (a, b) whose product lies within a few ulp of ``target`` (float64 array): a random,
    b = fp32(target / a) moved by -2..2 ulp; signs random."""
    a = _float(rng, n, a_exp_lo, a_exp_hi, sign=0)
    b = (np.asarray(target, dtype=np.float64) / a.astype(np.float64)).astype(np.float32)
    b = _add_ulps(b, rng.integers(-2, 3, n))
    return _random_sign_flip(rng, a), _random_sign_flip(rng, b)


def _binary_common(rng, c: dict, near_one: tuple[int, int], *, wide: bool = True) -> dict:
    """The categories every two-operand generator starts with: every special against every
    special, random bits, values around 1 (exponents in ``near_one``) and, with ``wide``,
    independent wide exponents (counts from ``c``)."""
    out = {"specials": _cross(FLOAT_SPECIALS)}
    k = c["bits"]
    out["bits"] = (_bits(rng, k), _bits(rng, k))
    k = c["near_one"]
    out["near_one"] = (_float(rng, k, *near_one), _float(rng, k, *near_one))
    if wide:
        k = c["wide"]
        out["wide"] = (_float(rng, k, 1, 254), _float(rng, k, 1, 254))
    return out


# -- generators per unit --------------------------------------------------------------------------

def gen_add(rng, n) -> dict:
    """Pairs for add and subtract: random bits, values around 1, independent wide exponents,
    close exponents, near-cancellation (b = +-a moved by a few ulp, or with random low bits),
    alignment shifts around the guard/sticky boundary (exponent differences 20..30), operands
    near the bottom of the range (results below 2^-126 flush), and near the top (overflow)."""
    c = _counts(n, dict(bits=15, near_one=15, wide=10, close_exp=18, cancel=10, cancel_low=7,
                        align=10, tiny=8, huge=7))
    out = _binary_common(rng, c, (119, 135))
    k = c["close_exp"]
    ea = rng.integers(1, 255, k)
    eb = np.clip(ea + rng.integers(-3, 4, k), 1, 254)
    out["close_exp"] = (_compose(_sign(rng, k), ea, _frac(rng, k)),
                        _compose(_sign(rng, k), eb, _frac(rng, k)))
    k = c["cancel"]
    a = _float(rng, k, 1, 254)
    b = _add_ulps(a, rng.integers(-4, 5, k))
    # Also operands just above a power of two, moved down across the binade boundary.
    low = rng.random(k) < 0.25
    a = np.where(low, _compose(_sign(rng, k), rng.integers(2, 255, k), rng.integers(0, 3, k)), a)
    b = np.where(low, _add_ulps(a, -rng.integers(1, 5, k)), b)
    out["cancel"] = (a, _random_sign_flip(rng, b))
    k = c["cancel_low"]
    a = _float(rng, k, 1, 254)
    mask = _u32((1 << rng.integers(0, 24, k)) - 1)
    b_bits = (a.view(np.uint32) & ~mask) | (_u32(rng.integers(0, 1 << 23, k)) & mask)
    out["cancel_low"] = (a, _random_sign_flip(rng, b_bits.view(np.float32)))
    k = c["align"]
    ea = rng.integers(31, 255, k)
    eb = ea - rng.integers(20, 31, k)
    a = _compose(_sign(rng, k), ea, _frac(rng, k))
    b = _compose(_sign(rng, k), eb, _frac(rng, k))
    swap = rng.random(k) < 0.5
    out["align"] = (np.where(swap, b, a), np.where(swap, a, b))
    k = c["tiny"]
    out["tiny"] = (_float(rng, k, 1, 12), _float(rng, k, 1, 12))
    k = c["huge"]
    out["huge"] = (_float(rng, k, 251, 254), _float(rng, k, 251, 254))
    return out


def gen_mul(rng, n) -> dict:
    """Pairs for multiply: random bits, values around 1, products over the whole range, products
    near overflow (exponent 126..129, and within a few ulp of the rounding-to-infinity boundary
    2^128 - 2^103), products near the 2^-126 underflow boundary (exponents -129..-124, and within
    a few ulp of 2^-126, including those whose IEEE result rounds up to exactly 2^-126), and a
    subnormal or zero operand."""
    c = _counts(n, dict(bits=15, near_one=15, wide=12, overflow=10, overflow_edge=10,
                        underflow=12, min_normal_edge=20, subnormal=6))
    out = _binary_common(rng, c, (117, 137), wide=False)

    def product_exponent(k, lo, hi):
        # a anywhere; b's exponent chosen so the product's (unbiased) exponent is in [lo, hi].
        ea = rng.integers(1, 255, k)
        eb = np.clip(rng.integers(lo, hi + 1, k) - (ea - 127) + 127, 1, 254)
        return (_compose(_sign(rng, k), ea, _frac(rng, k)),
                _compose(_sign(rng, k), eb, _frac(rng, k)))
    out["wide"] = product_exponent(c["wide"], -140, 140)
    out["overflow"] = product_exponent(c["overflow"], 126, 129)
    k = c["overflow_edge"]
    target = 2.0 ** 128 * (1 - 2.0 ** -25 * rng.uniform(-2, 4, k))
    out["overflow_edge"] = _near_product(rng, k, target, 128, 254)
    out["underflow"] = product_exponent(c["underflow"], -129, -124)
    k = c["min_normal_edge"]
    # Products within about +-2 ulp of 2^-126; those in [2^-126 - 2^-150, 2^-126) round up to
    # 2^-126 with gradual underflow (and stay), below that they flush.
    target = 2.0 ** -126 * (1 - 2.0 ** -24 * rng.uniform(-2, 3, k))
    out["min_normal_edge"] = _near_product(rng, k, target, 2, 127)
    k = c["subnormal"]
    a, b = _subnormal(rng, k), _float(rng, k, 1, 254)
    swap = rng.random(k) < 0.5
    out["subnormal"] = (np.where(swap, b, a), np.where(swap, a, b))
    return out


def gen_from_int(rng, n) -> tuple:
    """int32 operands: random bits, magnitudes of every bit length, +-(2^p + k) around the
    powers of two from 2^20 to 2^31 (where rounding starts), exact ties (and +-1 around them)
    at every bit length that rounds, and the extremes."""
    c = _counts(n, dict(bits=20, lengths=25, near_pow2=25, ties=25, extremes=5))
    out = {"specials": (INT_SPECIALS,)}
    k = c["bits"]
    out["bits"] = (rng.integers(-2 ** 31, 2 ** 31, k, dtype=np.int64),)
    k = c["lengths"]
    mag = rng.integers(0, 2 ** 31, k, dtype=np.int64) >> rng.integers(0, 32, k)
    out["lengths"] = (np.where(_sign(rng, k) == 1, -mag, mag),)
    k = c["near_pow2"]
    p = rng.integers(20, 32, k)
    v = (np.int64(1) << p) + rng.integers(-160, 161, k)
    out["near_pow2"] = (np.where(_sign(rng, k) == 1, -v, v),)
    k = c["ties"]
    length = rng.integers(26, 32, k)                   # bit length of the magnitude
    mant = rng.integers(1 << 23, 1 << 24, k, dtype=np.int64)
    v = (mant << (length - 24)) | (np.int64(1) << (length - 25))
    v = v + rng.integers(-1, 2, k) * (rng.random(k) < 0.3)
    out["ties"] = (np.where(_sign(rng, k) == 1, -v, v),)
    k = c["extremes"]
    v = np.where(_sign(rng, k) == 1, -2 ** 31 + rng.integers(0, 300, k),
                 2 ** 31 - 1 - rng.integers(0, 300, k))
    out["extremes"] = (v,)
    return {name: tuple(np.clip(x, -2 ** 31, 2 ** 31 - 1).astype(np.int32) for x in ops)
            for name, ops in out.items()}


def gen_to_int(width: int):
    """Operand generator for binary32 -> ``width``-bit integer (H = 2^(width-1)): random bits,
    exact halves (k + 1/2), values within a few ulp of +-0.5, +-1, +-1.5, +-2.5, H-1.5, H-1,
    H-0.5, H, H+0.5, H+1, 2H-0.5, 2H, 2H+0.5 (for width 8: 126.5 .. 128.5 and 255.5 .. 256.5),
    uniform values in [-2.4H, 2.4H], small values and large ones."""
    h = 2.0 ** (width - 1)

    def gen(rng, n) -> dict:
        c = _counts(n, dict(bits=20, halves=20, boundaries=25, range=20, small=8, large=7))
        out = {"specials": (FLOAT_SPECIALS,)}
        k = c["bits"]
        out["bits"] = (_bits(rng, k),)
        k = c["halves"]
        out["halves"] = ((rng.integers(-int(2.4 * h), int(2.4 * h), k) + 0.5).astype(np.float32),)
        k = c["boundaries"]
        base = _pick(rng, k, np.array([0.5, 1.0, 1.5, 2.5, h - 1.5, h - 1, h - 0.5, h, h + 0.5,
                                       h + 1, 2 * h - 0.5, 2 * h, 2 * h + 0.5], dtype=np.float32))
        base = np.where(_sign(rng, k) == 1, -base, base)
        out["boundaries"] = (_add_ulps(base, rng.integers(-4, 5, k)),)
        k = c["range"]
        out["range"] = (rng.uniform(-2.4 * h, 2.4 * h, k).astype(np.float32),)
        k = c["small"]
        out["small"] = (_float(rng, k, 1, 126),)
        k = c["large"]
        out["large"] = (_float(rng, k, 127 + width, 254),)
        return out
    gen.__name__ = f"gen_to_int{width}"
    return gen


def golden_to_int(width: int):
    """binary32 -> ``width``-bit signed integer as ``ToInt(width)`` documents it: round half to
    even, saturate, NaN gives 0 (``fp32.to_int8`` for width 8, generalised)."""
    low, high = -(1 << (width - 1)), (1 << (width - 1)) - 1

    def golden(x):
        x = fp32.ftz(x)
        r = np.rint(np.where(np.isnan(x), np.float32(0), x).astype(np.float64))
        return np.clip(r, low, high).astype(np.int32)
    golden.__name__ = f"to_int{width}"
    return golden


def gen_fmax(rng, n) -> dict:
    """Pairs for max: random bits, values around 1, wide exponents, close pairs (b = +-a moved by
    a few ulp), equal magnitudes with either sign, and a subnormal against a zero or a normal."""
    c = _counts(n, dict(bits=30, near_one=15, wide=10, close=25, equal=10, subnormal=10))
    out = _binary_common(rng, c, (120, 134))
    k = c["close"]
    a = _float(rng, k, 1, 254)
    b = _add_ulps(a, rng.integers(-3, 4, k))
    out["close"] = (a, _random_sign_flip(rng, b))
    k = c["equal"]
    a = _bits(rng, k)
    out["equal"] = (a, _random_sign_flip(rng, a))
    k = c["subnormal"]
    other = np.where(rng.random(k) < 0.5, _subnormal(rng, k),
                     _pick(rng, k, FLOAT_SPECIALS[:2]))
    out["subnormal"] = (_subnormal(rng, k), other)
    return out


def gen_unary_float(rng, n) -> dict:
    """Unary binary32 operands: random bits, values around 1, wide exponents, subnormals."""
    c = _counts(n, dict(bits=50, near_one=20, wide=20, subnormal=10))
    return {"specials": (FLOAT_SPECIALS,), "bits": (_bits(rng, c["bits"]),),
            "near_one": (_float(rng, c["near_one"], 117, 137),),
            "wide": (_float(rng, c["wide"], 1, 254),),
            "subnormal": (_subnormal(rng, c["subnormal"]),)}


def _seed_index(rng, k, index_bits, exp_lo, exp_hi, sign=None):
    """Floats covering every seed-table index (top ``index_bits`` fraction bits) evenly, with
    the low fraction bits all zero, all one or random, and random exponents."""
    low_bits = 23 - index_bits
    index = np.arange(k) % (1 << index_bits)
    kind = rng.integers(0, 4, k)
    low = np.where(kind == 0, 0, np.where(kind == 1, (1 << low_bits) - 1,
                                           rng.integers(0, 1 << low_bits, k)))
    sign = _sign(rng, k) if sign is None else np.broadcast_to(sign, (k,))
    return _compose(sign, rng.integers(exp_lo, exp_hi + 1, k), (index << low_bits) | low)


EXTREME_EXPONENTS = np.array([1, 2, 3, 4, 124, 125, 126, 127, 128, 129, 250, 251, 252, 253, 254])


def gen_recip(rng, n) -> dict:
    """recip: random bits, wide exponents, every seed index (x 7 fraction bits) with all-zero /
    all-one / random low bits, the exponent extremes (1/x is subnormal, hence 0, for
    |x| > 2^126), values around 1 and subnormals."""
    c = _counts(n, dict(bits=20, wide=20, seed_index=30, exp_extremes=20, near_one=5,
                        subnormal=5))
    return {"specials": (FLOAT_SPECIALS,), "bits": (_bits(rng, c["bits"]),),
            "wide": (_float(rng, c["wide"], 1, 254),),
            "seed_index": (_seed_index(rng, c["seed_index"], fp32.SEED_BITS, 1, 254),),
            "exp_extremes": (_compose(_sign(rng, c["exp_extremes"]),
                                      _pick(rng, c["exp_extremes"], EXTREME_EXPONENTS),
                                      _frac(rng, c["exp_extremes"])),),
            "near_one": (_float(rng, c["near_one"], 120, 134),),
            "subnormal": (_subnormal(rng, c["subnormal"]),)}


def gen_rsqrt(rng, n) -> dict:
    """rsqrt: random bits, wide positive exponents, every seed index of both exponent parities
    (exponents drawn at random, so both parities), the exponent extremes, negative values and
    subnormals."""
    c = _counts(n, dict(bits=20, wide=20, seed_index=30, exp_extremes=15, negative=5,
                        near_one=5, subnormal=5))
    k = c["seed_index"]
    seeds = _seed_index(rng, k, fp32.RSQRT_SEED_BITS, 1, 254, sign=0)
    # Force the parity to alternate per full pass over the indices: every (parity, index).
    exp = (seeds.view(np.uint32) >> np.uint32(23)).astype(np.int64)
    parity = (np.arange(k) >> fp32.RSQRT_SEED_BITS) & 1
    exp = np.clip(exp - ((exp - 127) & 1) + parity, 1, 254)
    seeds = ((seeds.view(np.uint32) & np.uint32(0x807FFFFF)) | (_u32(exp) << np.uint32(23)))
    k2 = c["exp_extremes"]
    return {"specials": (FLOAT_SPECIALS,), "bits": (_bits(rng, c["bits"]),),
            "wide": (_float(rng, c["wide"], 1, 254, sign=0),),
            "seed_index": (seeds.view(np.float32),),
            "exp_extremes": (_compose(0, _pick(rng, k2, EXTREME_EXPONENTS), _frac(rng, k2)),),
            "negative": (_float(rng, c["negative"], 1, 254, sign=1),),
            "near_one": (_float(rng, c["near_one"], 120, 134, sign=0),),
            "subnormal": (_subnormal(rng, c["subnormal"]),)}


def gen_exp(rng, n) -> dict:
    """exp: random bits, uniform values over the finite range, small |x| of every exponent,
    the overflow and underflow thresholds +-8 ulp, x whose t = x*log2(e) is near a half integer
    (rint ties), and large |x|."""
    c = _counts(n, dict(bits=15, range=25, small=15, thresholds=15, rint_ties=15, large=15))
    k = c["thresholds"]
    base = _pick(rng, k, np.array([fp32.EXP_OVERFLOW, fp32.EXP_UNDERFLOW, -fp32.EXP_OVERFLOW,
                                   -fp32.EXP_UNDERFLOW], dtype=np.float32))
    k2 = c["rint_ties"]
    half = (rng.integers(-127, 128, k2) + 0.5) / np.log2(np.e)
    return {"specials": (FLOAT_SPECIALS,), "bits": (_bits(rng, c["bits"]),),
            "range": (rng.uniform(-90, 90, c["range"]).astype(np.float32),),
            "small": (_float(rng, c["small"], 60, 132),),
            "thresholds": (_add_ulps(base, rng.integers(-8, 9, k)),),
            "rint_ties": (_add_ulps(half.astype(np.float32), rng.integers(-3, 4, k2)),),
            "large": (_float(rng, c["large"], 133, 254),)}


def gen_silu(rng, n) -> dict:
    """silu: random bits, uniform values in [-20, 20] and [-100, 100], large |x| (exp(-x)
    overflows or underflows), exp's thresholds of -x +-8 ulp, and small |x|."""
    c = _counts(n, dict(bits=15, range=20, wide_range=15, large=15, thresholds=15, small=20))
    k = c["thresholds"]
    base = _pick(rng, k, np.array([fp32.EXP_OVERFLOW, fp32.EXP_UNDERFLOW, -fp32.EXP_OVERFLOW,
                                   -fp32.EXP_UNDERFLOW], dtype=np.float32))
    return {"specials": (FLOAT_SPECIALS,), "bits": (_bits(rng, c["bits"]),),
            "range": (rng.uniform(-20, 20, c["range"]).astype(np.float32),),
            "wide_range": (rng.uniform(-100, 100, c["wide_range"]).astype(np.float32),),
            "large": (_float(rng, c["large"], 133, 254),),
            "thresholds": (_add_ulps(base, rng.integers(-8, 9, k)),),
            "small": (_float(rng, c["small"], 60, 132),)}


def gen_relu2(rng, n) -> dict:
    """relu2: random bits, values around 1, wide exponents, and values within 8 ulp of
    sqrt(max normal) (overflow of the square) and of 2^-63 (the square near 2^-126)."""
    c = _counts(n, dict(bits=30, near_one=20, wide=20, boundaries=30))
    k = c["boundaries"]
    base = _pick(rng, k, np.array([np.sqrt(np.float64(fp32.F32(3.4028235e38))), 2.0 ** 64,
                                   2.0 ** -63, 2.0 ** -63 * np.sqrt(2.0)], dtype=np.float32))
    base = np.where(_sign(rng, k) == 1, -base, base)
    return {"specials": (FLOAT_SPECIALS,), "bits": (_bits(rng, c["bits"]),),
            "near_one": (_float(rng, c["near_one"], 117, 137),),
            "wide": (_float(rng, c["wide"], 1, 254),),
            "boundaries": (_add_ulps(base, rng.integers(-8, 9, k)),)}


def _fabs(a):
    return fp32.ftz(np.abs(fp32.ftz(a)))


# -- the registry ---------------------------------------------------------------------------------

class Unit(NamedTuple):
    """A unit under test: ``tellme.hw.fp32.<cls>(**kwargs)``, its golden function and its
    operand generator."""
    cls: str
    kwargs: dict
    golden: Callable
    operands: Callable

    def construct(self):
        """The Amaranth unit (``AttributeError`` if ``hw/fp32.py`` has no such class yet)."""
        from ...hw import fp32 as hw_fp32
        return getattr(hw_fp32, self.cls)(**self.kwargs)


#: Unit name -> (hw class, constructor arguments, golden function, operand generator).
UNITS: dict[str, Unit] = {
    "fadd": Unit("FAdd", {}, fp32.add, gen_add),
    "fsub": Unit("FAdd", {"subtract": True}, fp32.sub, gen_add),
    "fmul": Unit("FMul", {}, fp32.mul, gen_mul),
    "from_int": Unit("FromInt", {}, fp32.from_int, gen_from_int),
    "to_int8": Unit("ToInt8", {}, fp32.to_int8, gen_to_int(8)),
    "to_int9": Unit("ToInt", {"width": 9}, golden_to_int(9), gen_to_int(9)),      # in Exp
    "to_int24": Unit("ToInt", {"width": 24}, golden_to_int(24), gen_to_int(24)),
    "fmax": Unit("FMax", {}, fp32.fmax, gen_fmax),
    "fabs": Unit("FAbs", {}, _fabs, gen_unary_float),
    "recip": Unit("Recip", {}, fp32.recip, gen_recip),
    "rsqrt": Unit("Rsqrt", {}, fp32.rsqrt, gen_rsqrt),
    "exp": Unit("Exp", {}, fp32.exp, gen_exp),
    "silu": Unit("Silu", {}, fp32.silu, gen_silu),
    "relu2": Unit("Relu2", {}, fp32.relu2, gen_relu2),
}


# -- operand sets and expected results ------------------------------------------------------------

class Operands(NamedTuple):
    ops: tuple            # one array per operand (a[, b]), in the generator's dtype
    labels: np.ndarray    # category index of each operand
    categories: list      # category names
    random_count: int     # operands outside "specials"


def make_operands(unit: str, count: int = DEFAULT_COUNT, seed: int = 0) -> Operands:
    """The operand set of ``unit``: the specials first, then ``count`` random operands of all
    categories in random order."""
    rng = np.random.default_rng(seed)
    with np.errstate(all="ignore"):
        parts = UNITS[unit].operands(rng, count)
    names = ["specials"] + [name for name in parts if name != "specials"]
    arity = {len(ops) for ops in parts.values()}
    assert len(arity) == 1, f"{unit}: categories disagree on the operand count"
    ops = tuple(np.concatenate([parts[name][i] for name in names]) for i in range(arity.pop()))
    labels = np.concatenate([np.full(len(parts[name][0]), i) for i, name in enumerate(names)])
    specials = len(parts["specials"][0])
    random_count = len(labels) - specials
    assert random_count == count, (unit, random_count, count)
    # Shuffle the random operands (the specials stay first), so that every stall setting and
    # the full-rate prefix see every category.
    order = np.concatenate([np.arange(specials), specials + rng.permutation(random_count)])
    return Operands(tuple(op[order] for op in ops), labels[order], names, random_count)


def raw_bits(x) -> np.ndarray:
    """The unsigned bit patterns of a numpy array (float32/int32 -> uint32, int8 -> uint8)."""
    x = np.asarray(x)
    return x.view(np.dtype(f"u{x.dtype.itemsize}"))


def expected_bits(unit: str, ops, width: int = 32) -> np.ndarray:
    """Bit patterns (uint64) of the golden results on a ``width``-bit output port: binary32
    patterns for float results, two's complement for integer ones (which must fit)."""
    with np.errstate(all="ignore"):
        result = np.asarray(UNITS[unit].golden(*ops))
    if result.dtype.kind == "f":
        assert result.dtype == np.float32 and width == 32, (unit, result.dtype, width)
        return raw_bits(result).astype(np.uint64)
    assert result.dtype.kind == "i", (unit, result.dtype)
    values = result.astype(np.int64)
    assert np.all((values >= -(1 << (width - 1))) & (values < (1 << (width - 1)))), \
        f"{unit}: golden results do not fit the {width}-bit output"
    return (values & ((1 << width) - 1)).astype(np.uint64)


def _describe(bits_value: int, width: int, is_int: bool) -> str:
    """Hex bits plus the value: a float for 32-bit binary32, a signed integer otherwise."""
    digits = (width + 3) // 4
    if is_int or width != 32:
        signed = bits_value - (1 << width) if bits_value >> (width - 1) else bits_value
        return f"0x{bits_value:0{digits}x} ({signed})"
    value = np.array([bits_value], dtype=np.uint32).view(np.float32)[0]
    return f"0x{bits_value:08x} ({str(value)})"


def mismatch_report(unit: str, operands: Operands, expected, got, *, out_width: int,
                    max_report: int = 12, offset: int = 0, what: str = "") -> str | None:
    """None if ``got`` equals ``expected`` (integer arrays of result bits); else a message
    listing the first ``max_report`` differences with operands, expected and actual bits in hex,
    and the number of differences per category. ``offset``: index of got[0] in the operand
    set."""
    expected = np.asarray(expected, dtype=np.uint64)
    got = np.asarray(got, dtype=np.uint64)
    bad = np.flatnonzero(expected != got)
    if not len(bad):
        return None
    names = ["a", "b"]
    lines = [f"{unit}{' ' + what if what else ''}: {len(bad)} of {len(got)} results differ"]
    per_category = collections.Counter(operands.categories[operands.labels[offset + i]]
                                       for i in bad)
    lines.append("  by category: " + ", ".join(f"{name} {n}" for name, n in
                                                per_category.most_common()))
    for i in bad[:max_report]:
        j = offset + int(i)
        parts = []
        for name, op in zip(names, operands.ops):
            is_int = op.dtype.kind == "i"
            parts.append(f"{name}={_describe(int(raw_bits(op[j:j + 1])[0]), 32, is_int)}")
        lines.append(f"  #{j} [{operands.categories[operands.labels[j]]}] {' '.join(parts)}: "
                     f"expected {_describe(int(expected[i]), out_width, False)}, "
                     f"got {_describe(int(got[i]), out_width, False)}")
    return "\n".join(lines)


# -- the bench ------------------------------------------------------------------------------------

class Fp32Bench:
    def __init__(self, dut):
        self.dut = dut
        self.cfg = cfg = tb_config()
        self.unit = cfg["unit"]
        self.latency = int(cfg["latency"])
        self.max_report = int(cfg.get("max_report", 12))
        self.clock = start_clock(dut, CLOCK_NS)
        self.source = StreamSource(dut, "i", self.clock)
        self.sink = StreamSink(dut, "o", self.clock)
        self.log = dut._log
        self.operands = make_operands(self.unit, int(cfg.get("count", DEFAULT_COUNT)),
                                      int(cfg.get("seed", 0)))
        self.out_width = self.sink.width
        self.expected = expected_bits(self.unit, self.operands.ops, self.out_width)
        self.payloads = self._pack(cfg["in_fields"])

    def _pack(self, fields) -> list[int]:
        """Flat ``i`` payloads: field k (a, b) from operand k, least significant field first."""
        assert [name for name, _, _ in fields] == ["a", "b"][:len(self.operands.ops)], \
            f"input fields {fields} do not match {len(self.operands.ops)} operand(s)"
        assert sum(width for _, width, _ in fields) <= 64
        packed = np.zeros(len(self.operands.ops[0]), dtype=np.uint64)
        offset = 0
        for (name, width, _), op in zip(fields, self.operands.ops):
            assert width == 8 * op.dtype.itemsize, (name, width, op.dtype)
            packed |= raw_bits(op).astype(np.uint64) << np.uint64(offset)
            offset += width
        assert offset == self.source.width, (offset, self.source.width)
        return packed.tolist()

    async def reset(self):
        await reset_dut(self.dut, self.clock, RESET_CYCLES)

    async def run_chunk(self, start: int, stop: int, bound: int, what: str) -> str | None:
        """Send operands [start, stop), wait for as many results (at most ``bound`` cycles),
        check that no extra result follows, and compare them all bit for bit. Lost or extra
        results fail at once; wrong values are returned as a report (None if all are right),
        so that a test can go through the whole set and report every category that fails."""
        for payload in self.payloads[start:stop]:
            self.source.send_nowait(payload)
        count = stop - start
        base = self.sink.received
        waited = 0
        while self.sink.received - base < count and waited < bound:
            await Timer(WAIT_STEP * CLOCK_NS, unit="ns")
            waited += WAIT_STEP
        arrived = self.sink.received - base
        got = np.array([self.sink.recv_nowait() for _ in range(self.sink.count())],
                       dtype=np.uint64)
        report = mismatch_report(self.unit, self.operands, self.expected[start:start + len(got)],
                                 got[:count], out_width=self.out_width,
                                 max_report=self.max_report, offset=start, what=what)
        if arrived < count:
            raise AssertionError(f"{self.unit} {what}: only {arrived} of {count} results "
                                 f"arrived within {bound} cycles ({self.source.count()} operands "
                                 f"not taken)" + (f"; among them:\n{report}" if report else ""))
        # No extra results: watch the output for a while with ready high.
        self.sink.clear_pause_generator()
        await ClockCycles(self.clock, self.latency + 8)
        assert self.sink.count() == 0 and len(got) == count, \
            f"{self.unit} {what}: {self.sink.count() + len(got) - count} extra result(s)"
        assert not self.sink.protocol_errors, self.sink.protocol_errors
        if report:
            self.log.error("%s", report)
        else:
            self.log.info("%s %s: %d results bit-exact in <= %d cycles", self.unit, what, count,
                          waited)
        return report


@cocotb.test(timeout_time=1, timeout_unit="sec")
async def test_random_stalls(dut):
    """Every operand through the unit under random stalls on ``i`` and ``o`` (one chunk of the
    set per stall setting); every result bit-exact, in order, none lost or extra, ``o`` obeying
    the stream rules while stalled."""
    bench = Fp32Bench(dut)
    await bench.reset()
    stalls = bench.cfg.get("stalls", DEFAULT_STALLS)
    total = len(bench.payloads)
    rng = np.random.default_rng(cocotb.RANDOM_SEED)
    edges = np.linspace(0, total, len(stalls) + 1).astype(int)
    reports = []
    for (p_in, p_out), start, stop in zip(stalls, edges[:-1], edges[1:]):
        bench.source.set_pause_generator(random_pause(p_in, int(rng.integers(1 << 31))))
        bench.sink.set_pause_generator(random_pause(p_out, int(rng.integers(1 << 31))))
        rate = max((1 - p_in) * (1 - p_out), 0.01)
        bound = int(4 * (stop - start) / rate) + 1000
        reports.append(await bench.run_chunk(
            int(start), int(stop), bound,
            f"operands {start}..{stop - 1}, stalls in={p_in} out={p_out}"))
    reports = [report for report in reports if report]
    assert not reports, "\n".join(reports)


@cocotb.test(timeout_time=1, timeout_unit="sec")
async def test_full_rate(dut):
    """Without stalls the unit takes an operand and delivers a result every cycle: N results on
    N consecutive cycles, the first ``latency`` cycles after the first operand moved."""
    bench = Fp32Bench(dut)
    await bench.reset()
    count = bench.cfg.get("full_rate_count")
    count = len(bench.payloads) if count is None else min(int(count), len(bench.payloads))
    report = await bench.run_chunk(0, count, 2 * count + 1000, "full rate")
    assert report is None, report
    first, last = bench.sink.beat_cycles[0], bench.sink.beat_cycles[-1]
    assert last - first == count - 1, \
        f"{count} results took {last - first + 1} cycles on o (expected {count})"
    # As in tb_stream_buffer: RESET_CYCLES edges in reset, one releasing it, one at which the
    # source starts offering, one at which `i` takes the operand; `latency` edges later the
    # result moves on `o`.
    expected_first = RESET_CYCLES + 3 + bench.latency
    assert first == expected_first, \
        f"first result moved on o at sink cycle {first}, expected {expected_first}"
