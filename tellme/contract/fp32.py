"""Golden floating-point primitives of the element-wise path (docs/architecture.md, "Numerics").

Format: IEEE 754 binary32, round to nearest even, subnormals flushed to zero (FTZ) on input and on
output. An output is flushed when its magnitude, rounded as IEEE (gradual underflow), is below
2^-126; the sign of a flushed value is kept. NaN results are the canonical quiet NaN 0x7FC00000.

Every function works element-wise on numpy float32 arrays (or scalars) and is exactly what the
hardware computes, bit for bit. Approximated functions (``recip``, ``rsqrt``, ``exp``, ``silu``)
are compositions of the exact primitives with the seed tables and coefficients defined here; the
RTL units use the same tables (generated from these functions) and the same operation order.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
MIN_NORMAL = np.float32(2.0 ** -126)
QNAN_BITS = np.uint32(0x7FC00000)

SEED_BITS = 7        # reciprocal seed table: 2^7 entries, indexed by the top mantissa bits
RSQRT_SEED_BITS = 6  # rsqrt seed table: 2 x 2^6 entries (exponent parity, top mantissa bits)
NEWTON_STEPS = 2
LOG2E = np.float32(1.4426950408889634)
# exp: 2^f on f in [-0.5, 0.5] by the degree-6 Taylor polynomial of exp(f*ln2), coefficients
# ln(2)^k / k! rounded to binary32, evaluated by Horner's rule highest degree first.
EXP2_COEFFS = tuple(np.float32(np.log(2.0) ** k / float(np.prod(np.arange(1, k + 1)))) for k in range(7))
EXP_OVERFLOW = np.float32(88.72283935546875)     # exp(x) >= 2^128 from here: +inf
EXP_UNDERFLOW = np.float32(-87.33654022216797)   # exp(x) < 2^-126 below here: +0 (FTZ)


def as_f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def bits(x) -> np.ndarray:
    """Raw binary32 bit patterns (uint32) of x."""
    return as_f32(x).view(np.uint32)


def from_bits(b) -> np.ndarray:
    return np.asarray(b, dtype=np.uint32).view(np.float32)


def ftz(x) -> np.ndarray:
    """Flush subnormals to signed zero and canonicalise NaNs."""
    x = np.array(x, dtype=np.float32, copy=True)
    tiny = np.abs(x) < MIN_NORMAL
    x[tiny] = np.copysign(np.float32(0.0), x[tiny])
    nan = np.isnan(x)
    if nan.any():
        x.view(np.uint32)[nan] = QNAN_BITS
    return x


def _op(fn, *args):
    with np.errstate(all="ignore"):
        return ftz(fn(*[ftz(a) for a in args]))


def add(a, b):
    return _op(np.add, a, b)


def sub(a, b):
    return _op(np.subtract, a, b)


def mul(a, b):
    return _op(np.multiply, a, b)


def neg(a):
    return ftz(np.negative(as_f32(a)))


def fmax(a, b):
    """max with NaN propagation; max(-0, +0) = +0."""
    a, b = ftz(a), ftz(b)
    out = np.where(a > b, a, b)
    out = np.where((a == 0) & (b == 0), np.where(np.signbit(a) & np.signbit(b), a, np.abs(a)), out)
    return ftz(np.where(np.isnan(a) | np.isnan(b), np.float32(np.nan), out))


def from_int(n) -> np.ndarray:
    """int32 -> binary32, round to nearest even."""
    return ftz(np.asarray(n, dtype=np.int64).astype(np.float32))


def to_int8(x) -> np.ndarray:
    """binary32 -> int8: round half to even, saturate to [-128, 127]; NaN gives 0."""
    x = ftz(x)
    with np.errstate(invalid="ignore"):
        r = np.rint(np.where(np.isnan(x), np.float32(0), x))
    return np.clip(r, -128, 127).astype(np.int8)


def _split(x):
    """Decompose |x| (normal, finite) into exponent e and mantissa m in [1, 2) as float32."""
    b = bits(x).astype(np.uint32)
    e = ((b >> 23) & 0xFF).astype(np.int32) - 127
    m = from_bits((b & np.uint32(0x007FFFFF)) | np.uint32(0x3F800000))
    frac = (b & np.uint32(0x007FFFFF))
    return e, m, frac


def scale_pow2(x, n) -> np.ndarray:
    """x * 2^n for normal x, exactly, with overflow to infinity and FTZ underflow."""
    x = as_f32(x)
    n = np.asarray(n, dtype=np.int64)
    b = bits(x).astype(np.int64)
    e = ((b >> 23) & 0xFF) + n
    sign = b & 0x80000000
    out = np.where(e >= 255, sign | 0x7F800000, np.where(e <= 0, sign, (b & ~np.int64(0x7F800000)) | (e << 23)))
    out = np.where(x == 0, sign, out)
    return from_bits(out.astype(np.uint32))


def recip_seed_table() -> np.ndarray:
    """2^SEED_BITS binary32 seeds: 1 / (midpoint of each mantissa interval)."""
    i = np.arange(2 ** SEED_BITS, dtype=np.float64)
    return (1.0 / (1.0 + (i + 0.5) / 2 ** SEED_BITS)).astype(np.float32)


def rsqrt_seed_table() -> np.ndarray:
    """2 x 2^RSQRT_SEED_BITS seeds, [parity][index]: 1/sqrt(midpoint) of m in [1,2) (even
    exponent) and of 2m in [2,4) (odd exponent)."""
    i = np.arange(2 ** RSQRT_SEED_BITS, dtype=np.float64)
    mid = 1.0 + (i + 0.5) / 2 ** RSQRT_SEED_BITS
    return np.stack([1.0 / np.sqrt(mid), 1.0 / np.sqrt(2.0 * mid)]).astype(np.float32)


_RECIP_SEEDS = recip_seed_table()
_RSQRT_SEEDS = rsqrt_seed_table()
_TWO = np.float32(2.0)
_HALF = np.float32(0.5)
_THREE_HALVES = np.float32(1.5)


def recip(x) -> np.ndarray:
    """1/x: seed from the top SEED_BITS mantissa bits, NEWTON_STEPS steps y = y*(2 - m*y) on the
    mantissa m in [1,2), then y * 2^-e. Specials: 1/±0 = ±inf, 1/±inf = ±0, NaN -> NaN,
    |x| >= 2^126 -> ±0 (the result would be subnormal)."""
    x = ftz(x)
    shape = x.shape
    x = x.reshape(-1)
    e, m, frac = _split(x)
    y = _RECIP_SEEDS[(frac >> (23 - SEED_BITS)).astype(np.int64)]
    for _ in range(NEWTON_STEPS):
        y = mul(y, sub(_TWO, mul(m, y)))
    out = scale_pow2(y, -e.astype(np.int64))
    out = np.where(np.signbit(x), -out, out)
    sign_zero = np.copysign(np.float32(0), x)
    out = np.where(np.isinf(x), sign_zero, out)
    out = np.where(x == 0, np.copysign(np.float32(np.inf), x), out)
    out = np.where(np.isnan(x), np.float32(np.nan), out)
    return ftz(out).reshape(shape)


def rsqrt(x) -> np.ndarray:
    """1/sqrt(x): the exponent is made even (m' = m or 2m), seed from [parity][top mantissa bits],
    NEWTON_STEPS steps y = y*(1.5 - (0.5*m')*(y*y)), then y * 2^(-e'/2).
    Specials: rsqrt(±0) = +inf, rsqrt(+inf) = +0, x < 0 or NaN -> NaN."""
    x = ftz(x)
    shape = x.shape
    x = x.reshape(-1)
    e, m, frac = _split(x)
    odd = (e & 1).astype(np.int64)
    m2 = np.where(odd == 1, mul(m, _TWO), m)
    y = _RSQRT_SEEDS[odd, (frac >> (23 - RSQRT_SEED_BITS)).astype(np.int64)]
    h = mul(_HALF, m2)
    for _ in range(NEWTON_STEPS):
        y = mul(y, sub(_THREE_HALVES, mul(h, mul(y, y))))
    out = scale_pow2(y, -((e - odd) // 2).astype(np.int64))
    out = np.where(np.isinf(x), np.float32(0), out)
    out = np.where(x == 0, np.float32(np.inf), out)
    out = np.where(np.isnan(x) | (x < 0), np.float32(np.nan), out)
    return ftz(out).reshape(shape)


def exp(x) -> np.ndarray:
    """e^x: t = x*LOG2E; n = rint(t) (half to even); f = t - n (exact); p = Horner of EXP2_COEFFS
    at f; result p * 2^n. x >= EXP_OVERFLOW -> +inf, x < EXP_UNDERFLOW -> +0, NaN -> NaN."""
    x = ftz(x)
    shape = x.shape
    x = x.reshape(-1)
    xc = np.clip(np.where(np.isnan(x), np.float32(0), x), EXP_UNDERFLOW, EXP_OVERFLOW)
    t = mul(xc, LOG2E)
    n = np.rint(t)
    f = sub(t, n)
    p = np.full_like(f, EXP2_COEFFS[-1])
    for c in EXP2_COEFFS[-2::-1]:
        p = add(mul(p, f), c)
    out = scale_pow2(p, n.astype(np.int64))
    out = np.where(x >= EXP_OVERFLOW, np.float32(np.inf), out)
    out = np.where(x < EXP_UNDERFLOW, np.float32(0), out)
    out = np.where(np.isnan(x), np.float32(np.nan), out)
    return ftz(out).reshape(shape)


def silu(x) -> np.ndarray:
    """x * sigmoid(x) = x * recip(1 + exp(-x))."""
    return mul(x, recip(add(np.float32(1.0), exp(neg(x)))))


def relu2(x) -> np.ndarray:
    """max(x, 0)^2 (ReLU of -0 is +0)."""
    r = np.where(ftz(x) > 0, ftz(x), np.float32(0))
    return mul(r, r)


ACC_INTERLEAVE = 4     # partial sums in flight in the accumulating adder (= FAdd latency)


def _pairwise(x) -> np.ndarray:
    """Pairwise tree over the last axis (a power-of-two length): ((x0+x1)+(x2+x3))+..."""
    while x.shape[-1] > 1:
        x = add(x[..., 0::2], x[..., 1::2])
    return x[..., 0]


def vector_sum(x, lanes: int, interleave: int = ACC_INTERLEAVE) -> np.ndarray:
    """Sum over the last axis in the hardware's order (docs/architecture.md 3.3):
    the vector arrives in beats of ``lanes`` elements (the last beat zero-padded); each beat is
    summed by a pairwise tree; beat k is accumulated into partial k mod ``interleave``,
    sequentially, each partial starting from +0; the partials are summed by a pairwise tree.
    ``lanes`` and ``interleave`` are powers of two. Returns float32 of shape x.shape[:-1]."""
    for name, v in (("lanes", lanes), ("interleave", interleave)):
        if v < 1 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two, got {v}")
    x = ftz(np.asarray(x, dtype=np.float32))
    n = x.shape[-1]
    beats = max(1, -(-n // lanes))
    padded = np.zeros(x.shape[:-1] + (beats * lanes,), dtype=np.float32)
    padded[..., :n] = x
    beat_sums = _pairwise(padded.reshape(x.shape[:-1] + (beats, lanes)))
    partial = np.zeros(x.shape[:-1] + (interleave,), dtype=np.float32)
    for k in range(beats):
        partial[..., k % interleave] = add(partial[..., k % interleave], beat_sums[..., k])
    return _pairwise(partial)


def max_abs(x) -> np.ndarray:
    """max |x_i| over the last axis (exact, so order-free); NaN propagates."""
    return np.max(np.abs(ftz(x)), axis=-1)
