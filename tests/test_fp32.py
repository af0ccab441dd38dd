"""The golden floating-point primitives: exact where the spec says IEEE, bounded where approximate."""

import numpy as np
import pytest

from tellme.contract import fp32 as f

RNG = np.random.default_rng(1234)


def random_f32(n, lo=-60, hi=60):
    """Random binary32 over a wide exponent range, both signs."""
    mant = RNG.uniform(1, 2, n)
    exp = RNG.integers(lo, hi, n)
    sign = RNG.choice([-1.0, 1.0], n)
    return (sign * mant * 2.0 ** exp).astype(np.float32)


SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 2.0 ** -126, -(2.0 ** -126),
                     np.float32(3.4028235e38), 2.0 ** -149, 1.5, 2.5, 0.5, -0.5], dtype=np.float32)


def ulp_diff(a, b):
    ia = a.view(np.int32).astype(np.int64)
    ib = b.view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.abs(ia - ib)


def numpy_ftz(x):
    x = np.array(x, dtype=np.float32)
    x[np.abs(x) < 2.0 ** -126] = np.copysign(0, x[np.abs(x) < 2.0 ** -126])
    return x


@pytest.mark.parametrize("op, ref", [(f.add, np.add), (f.sub, np.subtract), (f.mul, np.multiply)])
def test_arith_is_ieee_with_ftz(op, ref):
    a = np.concatenate([random_f32(100_000), np.repeat(SPECIALS, len(SPECIALS))])
    b = np.concatenate([random_f32(100_000), np.tile(SPECIALS, len(SPECIALS))])
    with np.errstate(all="ignore"):
        expect = numpy_ftz(ref(numpy_ftz(a), numpy_ftz(b)))
    got = op(a, b)
    nan = np.isnan(expect)
    assert np.array_equal(np.isnan(got), nan)
    assert np.array_equal(got[~nan].view(np.uint32), expect[~nan].view(np.uint32))
    assert np.all(got[nan].view(np.uint32) == 0x7FC00000)


def test_subnormals_flush_keep_sign():
    tiny = np.array([2.0 ** -130, -(2.0 ** -130), 2.0 ** -149], dtype=np.float32)
    out = f.ftz(tiny)
    assert np.all(out == 0) and list(np.signbit(out)) == [False, True, False]
    # A product that rounds below 2^-126 flushes; one that rounds up to 2^-126 stays.
    assert f.mul(np.float32(2.0 ** -63), np.float32(2.0 ** -64)) == 0
    assert f.mul(np.float32(2.0 ** -63), np.float32(2.0 ** -63)) == np.float32(2.0 ** -126)


def test_to_int8_rounds_half_even_and_saturates():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5, 127.5, 1000, -128.5, -1000, np.nan, np.inf, -np.inf],
                 dtype=np.float32)
    assert f.to_int8(x).tolist() == [0, 2, 2, 0, -2, -2, 126, 127, 127, -128, -128, 0, 127, -128]


def test_from_int_rounds_to_nearest_even():
    n = np.array([0, 1, -1, 2 ** 24 + 1, 2 ** 24 + 3, -(2 ** 31), 2 ** 31 - 1], dtype=np.int64)
    assert np.array_equal(f.from_int(n), n.astype(np.float32))
    assert f.from_int(np.array([2 ** 24 + 1]))[0] == np.float32(2 ** 24)   # tie to even
    assert f.from_int(np.array([2 ** 24 + 3]))[0] == np.float32(2 ** 24 + 4)


def test_recip_within_two_ulp():
    x = random_f32(200_000, -120, 120)
    got = f.recip(x)
    expect = (1.0 / x.astype(np.float64)).astype(np.float32)
    assert ulp_diff(got, expect).max() <= 2


def test_recip_specials():
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 2.0 ** 127, 1.0, -4.0], dtype=np.float32)
    out = f.recip(x)
    assert out[0] == np.inf and out[1] == -np.inf
    assert out[2] == 0 and not np.signbit(out[2]) and out[3] == 0 and np.signbit(out[3])
    assert np.isnan(out[4])
    assert out[5] == 0                     # 2^-127 is subnormal: flushed
    assert out[6] == 1.0 and out[7] == -0.25


def test_rsqrt_within_two_ulp():
    x = np.abs(random_f32(200_000, -120, 120))
    got = f.rsqrt(x)
    expect = (1.0 / np.sqrt(x.astype(np.float64))).astype(np.float32)
    assert ulp_diff(got, expect).max() <= 2


def test_rsqrt_specials():
    out = f.rsqrt(np.array([0.0, -0.0, np.inf, -1.0, np.nan, 4.0, 0.25], dtype=np.float32))
    assert out[0] == np.inf and out[1] == np.inf and out[2] == 0
    assert np.isnan(out[3]) and np.isnan(out[4])
    assert out[5] == 0.5 and out[6] == 2.0


def test_exp_relative_error():
    x = RNG.uniform(-87, 88.7, 200_000).astype(np.float32)
    got = f.exp(x).astype(np.float64)
    expect = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got / expect - 1)) < 5e-6
    small = RNG.uniform(-1, 1, 100_000).astype(np.float32)
    assert np.max(np.abs(f.exp(small) / np.exp(small.astype(np.float64)) - 1)) < 5e-7


def test_exp_specials():
    out = f.exp(np.array([0.0, -np.inf, np.inf, np.nan, 89.0, -88.0, -0.0], dtype=np.float32))
    assert out[0] == 1.0 and out[1] == 0 and out[2] == np.inf and np.isnan(out[3])
    assert out[4] == np.inf and out[5] == 0 and out[6] == 1.0


def test_silu_and_relu2():
    x = RNG.uniform(-30, 30, 50_000).astype(np.float32)
    expect = x / (1 + np.exp(-x.astype(np.float64)))
    assert np.allclose(f.silu(x), expect, rtol=1e-5, atol=1e-30)
    extreme = f.silu(np.array([-1000.0, 1000.0], dtype=np.float32))
    assert extreme[0] == 0 and extreme[1] == 1000.0
    r = f.relu2(np.array([-2.0, -0.0, 0.0, 3.0], dtype=np.float32))
    assert r.tolist() == [0.0, 0.0, 0.0, 9.0] and not np.signbit(r[1])


@pytest.mark.parametrize("n", [1, 7, 8, 37, 64, 100])
def test_vector_sum_order_is_the_documented_one(n):
    x = random_f32(n, -5, 5)
    lanes, interleave = 4, 4
    beats = -(-n // lanes)
    padded = list(x) + [np.float32(0)] * (beats * lanes - n)
    partial = [np.float32(0)] * interleave
    for k in range(beats):
        b = padded[k * lanes:(k + 1) * lanes]
        beat_sum = np.float32(np.float32(b[0] + b[1]) + np.float32(b[2] + b[3]))
        partial[k % interleave] = np.float32(partial[k % interleave] + beat_sum)
    expect = np.float32(np.float32(partial[0] + partial[1]) + np.float32(partial[2] + partial[3]))
    assert f.vector_sum(x, lanes, interleave) == expect
    # batched form agrees row by row
    xs = random_f32(5 * n, -5, 5).reshape(5, n)
    assert np.array_equal(f.vector_sum(xs, 8), np.array([f.vector_sum(r, 8) for r in xs]))
    with pytest.raises(ValueError, match="power of two"):
        f.vector_sum(x, 3)


def test_max_and_fmax():
    assert f.max_abs(np.array([[-3.0, 2.0], [0.5, -0.25]], dtype=np.float32)).tolist() == [3.0, 0.5]
    out = f.fmax(np.array([-0.0, np.nan, 1.0], np.float32), np.array([0.0, 1.0, np.float32(-np.inf)], np.float32))
    assert out[0] == 0 and not np.signbit(out[0]) and np.isnan(out[1]) and out[2] == 1.0
