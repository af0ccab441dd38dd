"""What the attention testbenches share: :mod:`.tb_attention` (AttentionCore, DecodeAttention,
KvWriter) and :mod:`.tb_attn_prefill` (PrefillAttention).

- the KV cache in DDR (docs/architecture.md section 6, laid out by :mod:`tellme.contract.layouts`):
  :func:`kv_memory`, :func:`lay_out_kv`, the bytes a query must read (:func:`expected_read_ranges`,
  :func:`check_coverage`), :func:`check_burst`, :func:`check_memory`;
- stimulus: random and extreme golden caches and queries (:class:`Case`, :func:`length_cases`,
  :func:`extreme_cases`, ...) in either cache format (``attn_format``: ``"int8"``, the golden
  ``KVCache`` with int8 queries and their scales, or ``"fp32"``, ``FloatKVCache`` with float32
  queries; :func:`float_extreme_cases`);
- outputs: :func:`out_words` and the bit-exact :func:`check_output_bits`;
- :class:`AttentionTB`, the testbench object both build on (the units' common configuration:
  ``head_dim``, ``tile``, ``dot_lanes``, ``pv_lanes``, ``out_lanes``, ``seed``, ``addr_width``,
  ``attn_format``).

Everything takes its sizes as arguments; nothing here reads the configuration itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from ...contract.layouts import (KV_RECORD_BYTES as RECORD, PAGE, KvBases, kv_arrays, kv_cache_map, kv_row_bytes,
                                 page_up)
from .. import golden
from .streams import random_pause
from .testbench import Testbench

#: Bytes per AXI beat of the attention units' 128-bit ports.
BEAT = 16


# ------------------------------------------------------------------------------------------------
# KV-cache layout in DDR (docs/architecture.md section 6): pure helpers, no cocotb
# ------------------------------------------------------------------------------------------------

def kv_memory(kv_base: int, layers: int, kv_heads: int, capacity: int, head_dim: int, attn_format: str = "int8"
              ) -> tuple[dict[tuple[int, int], KvBases], int]:
    """The KV-cache map of ``layers`` x ``kv_heads`` regions of ``capacity`` positions at
    ``kv_base`` (:func:`~tellme.contract.layouts.kv_cache_map`, in ``attn_format``) and the size
    of a memory holding it (a page beyond its end)."""
    bases, size = kv_cache_map(kv_base, layers, kv_heads, capacity, head_dim, attn_format)
    return bases, page_up(kv_base + size + PAGE)


def lay_out_kv(write, cache: golden.KVCache, kv_head: int, bases: KvBases, count: int) -> None:
    """Write positions 0..count-1 of ``cache``'s kv head ``kv_head`` at ``bases`` through
    ``write(addr, data)`` (e.g. an AxiRam's ``write``); the fp32 format has no scale records."""
    k, v, s = kv_arrays(cache, kv_head, count)
    write(bases.k_base, k)
    write(bases.v_base, v)
    if s:
        write(bases.s_base, s)


def expected_read_ranges(bases: KvBases, pos: int, head_dim: int, attn_format: str = "int8"
                         ) -> list[tuple[int, int]]:
    """The byte ranges [start, end) a query at ``pos`` must read: positions 0..pos (K and V
    rows, and the scale records in the int8 format)."""
    n, row = pos + 1, kv_row_bytes(head_dim, attn_format)
    ranges = [(bases.k_base, bases.k_base + n * row), (bases.v_base, bases.v_base + n * row)]
    if attn_format == "int8":
        ranges.append((bases.s_base, bases.s_base + n * RECORD))
    return sorted(ranges)


def kv_position_bytes(head_dim: int, attn_format: str = "int8") -> int:
    """Cache bytes of one position of one kv head: its K and V rows (and scale record)."""
    return 2 * kv_row_bytes(head_dim, attn_format) + (RECORD if attn_format == "int8" else 0)


def check_coverage(bursts: list[tuple[int, int]], expected: list[tuple[int, int]], what: str) -> int:
    """``bursts`` (addr, bytes) must tile ``expected`` exactly: every byte once, nothing else.
    Returns the bytes read."""
    total = sum(n for _, n in bursts)
    want = sum(e - s for s, e in expected)
    intervals = sorted((a, a + n) for a, n in bursts)
    merged: list[list[int]] = []
    for start, end in intervals:
        if merged and start < merged[-1][1]:
            raise AssertionError(f"{what}: burst [{start:#x}, {end:#x}) overlaps bytes already read "
                                 f"(up to {merged[-1][1]:#x})")
        if merged and start == merged[-1][1]:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    got = [tuple(r) for r in merged]
    want_merged: list[list[int]] = []
    for start, end in sorted(expected):      # arrays that end on the next one's page merge
        if want_merged and start == want_merged[-1][1]:
            want_merged[-1][1] = end
        else:
            want_merged.append([start, end])
    if got != [tuple(r) for r in want_merged] or total != want:
        raise AssertionError(f"{what}: read {total} bytes in ranges {[(hex(s), hex(e)) for s, e in got]}, "
                             f"expected {want} bytes in {[(hex(s), hex(e)) for s, e in expected]}")
    return total


# ------------------------------------------------------------------------------------------------
# Stimulus: golden caches, queries, key beats
# ------------------------------------------------------------------------------------------------

def f32_bits(x) -> int:
    return int(np.asarray(x, dtype=np.float32).view(np.uint32))


def row_int(row) -> int:
    """An int8 row as the flat integer of an ArrayLayout(signed(8), n) (element 0 in bits 0-7)."""
    return int.from_bytes(np.asarray(row, dtype=np.int8).tobytes(), "little")


def f32_row_int(row) -> int:
    """A float32 row as the flat integer of an ArrayLayout(unsigned(32), n) (element 0 in bits
    0-31), its bit patterns unchanged (subnormals, -0 and NaN payloads included)."""
    return int.from_bytes(np.asarray(row, dtype=np.float32).tobytes(), "little")


def quantized_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """golden.quantize per row (as the golden model quantises k and v per token and kv head)."""
    q, d = golden.quantize(np.asarray(x, dtype=np.float32))
    return q, np.asarray(d, dtype=np.float32)


def random_kv(rng: np.random.Generator, count: int, head_dim: int, *, outliers: bool = True
              ) -> tuple[np.ndarray, np.ndarray]:
    """Float k and v rows (count, hd) with per-token magnitudes spread over two decades and, if
    ``outliers``, a few large channels in k (as real keys after RoPE have)."""
    scale = np.exp(rng.uniform(-2.3, 2.3, size=(count, 1)))
    k = rng.standard_normal((count, head_dim)) * scale
    if outliers:
        ch = rng.choice(head_dim, size=max(1, head_dim // 32), replace=False)
        k[:, ch] *= rng.uniform(3, 8)
    v = rng.standard_normal((count, head_dim)) * np.exp(rng.uniform(-1, 1, size=(count, 1)))
    return k.astype(np.float32), v.astype(np.float32)


def cache_from_rows(kq, kd, vq, vd, capacity: int | None = None) -> golden.KVCache:
    """A one-kv-head golden KVCache holding the given quantised rows at positions 0..n-1."""
    n, hd = kq.shape
    cache = golden.KVCache.empty(1, capacity or n, hd)
    cache.write(0, kq[:, None, :], np.asarray(kd)[:, None], vq[:, None, :], np.asarray(vd)[:, None])
    return cache


def random_float_cache(rng: np.random.Generator, count: int, head_dim: int, kv_heads: int = 1
                       ) -> golden.FloatKVCache:
    """A golden FloatKVCache (fp32 format) of :func:`random_kv` rows in every kv head."""
    cache = golden.FloatKVCache.empty(kv_heads, count, head_dim)
    for h in range(kv_heads):
        cache.k[h], cache.v[h] = random_kv(rng, count, head_dim)
    return cache


def random_cache(rng: np.random.Generator, count: int, head_dim: int, kv_heads: int = 1) -> golden.KVCache:
    """A golden KVCache (int8 format): the rows of :func:`random_float_cache` quantised."""
    rows = random_float_cache(rng, count, head_dim, kv_heads)
    cache = golden.KVCache.empty(kv_heads, count, head_dim)
    for h in range(kv_heads):
        cache.k[h], cache.k_scale[h] = quantized_rows(rows.k[h])
        cache.v[h], cache.v_scale[h] = quantized_rows(rows.v[h])
    return cache


def random_float_query(rng: np.random.Generator, head_dim: int, sigma: float | None = None) -> tuple[np.ndarray, None]:
    """(q, None): a random float32 query (the fp32 format's, no scale) of standard deviation
    ``sigma`` (drawn log-uniform in [0.3, 4] if not given)."""
    sigma = sigma if sigma is not None else float(np.exp(rng.uniform(np.log(0.3), np.log(4.0))))
    return (rng.standard_normal(head_dim) * sigma).astype(np.float32), None


def random_query(rng: np.random.Generator, head_dim: int, sigma: float | None = None):
    """(q_q, d_q): :func:`random_float_query` quantised with golden.quantize (the int8 format)."""
    q_q, d_q = golden.quantize(random_float_query(rng, head_dim, sigma)[0])
    return q_q, np.float32(d_q)


def format_cache(rng: np.random.Generator, count: int, head_dim: int, attn_format: str = "int8",
                 kv_heads: int = 1) -> golden.KVCache:
    """:func:`random_cache` (int8) or :func:`random_float_cache` (fp32)."""
    if attn_format == "fp32":
        return random_float_cache(rng, count, head_dim, kv_heads)
    return random_cache(rng, count, head_dim, kv_heads)


def format_query(rng: np.random.Generator, head_dim: int, attn_format: str = "int8"):
    """:func:`random_query` (int8: (q_q, d_q)) or :func:`random_float_query` (fp32: (q, None))."""
    if attn_format == "fp32":
        return random_float_query(rng, head_dim)
    return random_query(rng, head_dim)


@dataclass
class Case:
    """One query against kv head ``kv_head`` of ``cache`` at position ``pos``, in the cache's
    format: int8 ``q_q`` and its scale ``d_q`` (``golden.KVCache``), or the float32 query
    ``q_q`` and ``d_q`` None (``golden.FloatKVCache``)."""
    label: str
    q_q: np.ndarray
    d_q: np.float32 | None
    cache: golden.KVCache
    pos: int
    kv_head: int = 0

    @property
    def fp32(self) -> bool:
        return self.cache.format == "fp32"

    def golden(self, tile: int, lanes: int | None = None) -> np.ndarray:
        """``golden.attention_query``; ``lanes``: the core's dot_lanes (the fp32 score's
        summation order; default ``golden.SCORE_LANES``)."""
        hd = self.q_q.shape[0]
        return golden.attention_query(self.q_q, self.d_q, self.cache, self.kv_head, self.pos, tile, hd,
                                      lanes=golden.SCORE_LANES if lanes is None else lanes)

    def query_beat(self) -> dict:
        if self.fp32:
            return {"q": f32_row_int(self.q_q)}
        return {"q": row_int(self.q_q), "d_q": f32_bits(self.d_q)}

    def key_beats(self, tile: int) -> list[dict]:
        c, h = self.cache, self.kv_head
        beats = []
        for lo, hi in golden.key_tile_order(self.pos, tile):
            for j in range(lo, hi):
                flags = {"tile_last": int(j == hi - 1), "last": int(lo == 0 and j == hi - 1)}
                if self.fp32:
                    beats.append({"k": f32_row_int(c.k[h, j]), "v": f32_row_int(c.v[h, j]), **flags})
                else:
                    beats.append({"k": row_int(c.k[h, j]), "k_scale": f32_bits(c.k_scale[h, j]),
                                  "v": row_int(c.v[h, j]), "v_scale": f32_bits(c.v_scale[h, j]), **flags})
        return beats


def length_cases(rng: np.random.Generator, head_dim: int, tile: int, lengths: list[int],
                 extra_positions: int = 1, attn_format: str = "int8") -> list[Case]:
    """For each sequence length n: a cache of n positions, a query at n-1 and (for n > 2)
    ``extra_positions`` queries at random earlier positions; in ``attn_format``."""
    cases = []
    for n in lengths:
        cache = format_cache(rng, n, head_dim, attn_format)
        positions = [n - 1] + ([int(p) for p in rng.integers(0, n - 1, size=extra_positions)] if n > 2 else [])
        for pos in positions:
            q_q, d_q = format_query(rng, head_dim, attn_format)
            cases.append(Case(f"len{n}@{pos}", q_q, d_q, cache, pos))
    return cases


def extreme_cases(rng: np.random.Generator, head_dim: int, tile: int, attn_format: str = "int8") -> list[Case]:
    """Saturated values, all-equal scores, dominant keys (see the module doc); the fp32 format's
    are :func:`float_extreme_cases`."""
    if attn_format == "fp32":
        return float_extreme_cases(rng, head_dim, tile)
    hd = head_dim
    cases = []
    n = 2 * tile + 5                                   # three tiles, the top one partial
    pos = n - 1

    def signs(shape):
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)

    def quantised(k, v):
        kq, kd = quantized_rows(k)
        vq, vd = quantized_rows(v)
        return cache_from_rows(kq, kd, vq, vd)

    # q/k/v all at +-127 (random signs; per-row magnitudes so the scales differ)
    mag = rng.uniform(0.5, 3.0, size=(n, 1)).astype(np.float32)
    cache = quantised(signs((n, hd)) * mag, signs((n, hd)) * mag)
    assert np.all(np.abs(cache.k[0].astype(int)) == 127) and np.all(np.abs(cache.v[0].astype(int)) == 127)
    q_q, d_q = golden.quantize(signs(hd) * np.float32(1.7))
    assert np.all(np.abs(q_q.astype(int)) == 127)
    cases.append(Case("pm127-random-signs", q_q, np.float32(d_q), cache, pos))
    # all +127 against all +127 (the largest dot product, all scores equal up to the scales), big scales
    cache = quantised(np.full((n, hd), 40.0, np.float32) * mag, np.full((n, hd), -3.0, np.float32) * mag)
    q_q, d_q = golden.quantize(np.full(hd, 25.0, np.float32))
    cases.append(Case("all+127-large", q_q, np.float32(d_q), cache, pos))
    # int8 minimum everywhere (outside what quantize produces, still exact int arithmetic)
    kq = np.full((n, hd), -128, np.int8)
    vq = np.full((n, hd), -128, np.int8)
    kd = np.full(n, 0.003, np.float32)
    vd = rng.uniform(0.001, 0.01, n).astype(np.float32)
    cases.append(Case("all-128", np.full(hd, -128, np.int8), np.float32(0.002), cache_from_rows(kq, kd, vq, vd), pos))
    # all-equal scores: identical keys (same int8, same scale), random values
    k_row, _ = random_kv(rng, 1, hd)
    v = random_kv(rng, n, hd)[1]
    kq1, kd1 = quantized_rows(k_row)
    vq, vd = quantized_rows(v)
    cache = cache_from_rows(np.repeat(kq1, n, 0), np.repeat(kd1, n), vq, vd)
    q_q, d_q = random_query(rng, hd)
    cases.append(Case("equal-keys", q_q, d_q, cache, pos))
    # zero query: q_q = 0, d_q = 1e-5 * fp32(1/127): every score is 0
    q_q, d_q = golden.quantize(np.zeros(hd, np.float32))
    cases.append(Case("zero-query", q_q, np.float32(d_q), random_cache(rng, n, hd), pos))
    # tiny scales everywhere: scores ~ 1e-10, p_j ~ 1
    k, v = random_kv(rng, n, hd)
    cache = quantised(k * np.float32(1e-7), v)
    q_q, d_q = golden.quantize(rng.standard_normal(hd).astype(np.float32) * np.float32(1e-6))
    cases.append(Case("tiny-scales", q_q, np.float32(d_q), cache, pos))
    # one dominant key: k_j* = q direction, scaled to lead the other scores by `lead`
    top_lo = (pos // tile) * tile
    for where, j_star, lead in (("top-tile-first", top_lo, 12.0), ("top-tile-last", pos, 12.0),
                                ("older-tile-mid", tile + tile // 2, 20.0), ("tile0-first", 0, 30.0),
                                ("tile0-last", tile - 1, 12.0), ("underflow-top", top_lo + 1, 400.0),
                                ("underflow-tile0", 1, 400.0)):
        k, v = random_kv(rng, n, hd, outliers=False)
        qf = rng.standard_normal(hd).astype(np.float32)
        q_q, d_q = golden.quantize(qf)
        # ordinary scores are O(1); make key j* parallel to q with score ~ lead
        norm_q = float(np.linalg.norm(qf))
        k[j_star] = (qf / norm_q * lead * np.sqrt(hd) / norm_q).astype(np.float32)
        cache = quantised(k, v)
        cases.append(Case(f"dominant-{where}", q_q, np.float32(d_q), cache, pos))
    # large values: v saturated with big scales (o grows to ~1e5), plain random keys
    k, _ = random_kv(rng, n, hd)
    vv = signs((n, hd)) * np.float32(800.0)
    cache = quantised(k, vv)
    q_q, d_q = random_query(rng, hd, 2.0)
    cases.append(Case("large-v", q_q, d_q, cache, pos))
    # single key of a single tile (pos 0) with saturated values
    cache = quantised(signs((1, hd)) * np.float32(5.0), signs((1, hd)) * np.float32(5.0))
    q_q, d_q = golden.quantize(signs(hd) * np.float32(5.0))
    cases.append(Case("pos0-pm127", q_q, np.float32(d_q), cache, 0))
    return cases


def float_cache(k: np.ndarray, v: np.ndarray) -> golden.FloatKVCache:
    """A one-kv-head golden FloatKVCache holding float32 rows k, v (n, hd) at positions 0..n-1,
    their bit patterns as given (subnormals, -0 included)."""
    n, hd = k.shape
    cache = golden.FloatKVCache.empty(1, n, hd)
    cache.k[0], cache.v[0] = np.asarray(k, np.float32), np.asarray(v, np.float32)
    return cache


def float_extreme_cases(rng: np.random.Generator, head_dim: int, tile: int) -> list[Case]:
    """Extreme cases of the fp32 format (three tiles, the top one partial, and a query at pos 0):
    magnitudes near the largest and smallest normal numbers (products overflowing to inf and
    underflowing to subnormals, which the golden flushes), subnormal inputs, +-0 everywhere,
    all-equal scores (identical keys, a zero query), dominant keys in the top tile, an older
    tile and tile 0 (the others' p_j underflowing to 0), terms spread over 60 decades (the
    summation order decides the rounding), exact cancellation, large values."""
    hd = head_dim
    f32 = np.float32
    cases = []
    n = 2 * tile + 5
    pos = n - 1

    def signs(shape):
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(f32)

    def normal(shape, sigma=1.0):
        return (rng.standard_normal(shape) * sigma).astype(f32)

    def add(label, q, k, v, at=pos):
        cases.append(Case(label, np.asarray(q, f32), None, float_cache(k, v), at))

    # large: products ~ 1e36 (finite scores up to ~1e37), values ~ 1e30
    add("large", normal(hd, 1e18), normal((n, hd), 1e18), normal((n, hd), 1e30))
    # one key's products all overflow to +inf (score +inf, then inf - inf = NaN: a NaN output)
    # or to -inf (score -inf, p_j = 0: a finite output)
    for label, sign in (("pos-inf-score", 1), ("neg-inf-score", -1)):
        q = normal(hd, 1e18)
        k = normal((n, hd), 1e18)
        k[5] = np.where(q < 0, f32(-3e38), f32(3e38)) * f32(sign)
        add(label, q, k, normal((n, hd)))
    # tiny: products ~ 2^-126 * N(0,1): about half of them subnormal, flushed to +-0
    tiny = f32(2.0 ** -63)
    add("tiny-products", normal(hd) * tiny, normal((n, hd)) * tiny, normal((n, hd)) * f32(1e-30))
    # subnormal inputs (flushed on input) mixed into normal rows and the query
    sub = lambda shape: (signs(shape) * rng.uniform(1e-45, 1.1e-38, size=shape)).astype(f32)  # noqa: E731
    k, v, q = normal((n, hd)), normal((n, hd)), normal(hd)
    for x in (k, v, q):
        mask = rng.random(x.shape) < 0.3
        x[mask] = sub(x.shape)[mask]
    assert np.any((np.abs(k) < 2.0 ** -126) & (k != 0))
    add("subnormal-inputs", q, k, v)
    add("all-subnormal", sub(hd), sub((n, hd)), sub((n, hd)))
    # +0/-0 everywhere: every score +0, values +-0 or random
    zeros = lambda shape: (signs(shape) * f32(0.0)).astype(f32)  # noqa: E731
    add("signed-zeros", zeros(hd), zeros((n, hd)), zeros((n, hd)))
    add("neg-zero-query", np.full(hd, -0.0, f32), normal((n, hd)), normal((n, hd)))
    k = normal((n, hd))
    k[rng.random((n, hd)) < 0.5] = f32(-0.0)
    add("neg-zero-keys", normal(hd), k, np.where(rng.random((n, hd)) < 0.5, f32(-0.0), normal((n, hd))))
    # all-equal scores: identical keys; random values
    add("equal-keys", normal(hd, 2.0), np.repeat(normal((1, hd)), n, 0), normal((n, hd)))
    # one dominant key j*: parallel to q, score ~ lead
    top_lo = (pos // tile) * tile
    for where, j_star, lead in (("top-tile-first", top_lo, 12.0), ("older-tile-mid", tile + tile // 2, 20.0),
                                ("tile0-last", tile - 1, 12.0), ("underflow-top", min(top_lo + 1, pos), 400.0),
                                ("underflow-tile0", 1, 400.0)):
        k, v = random_kv(rng, n, hd, outliers=False)
        q = normal(hd)
        norm_q = float(np.linalg.norm(q))
        k[j_star] = (q / norm_q * lead * np.sqrt(hd) / norm_q).astype(f32)
        add(f"dominant-{where}", q, k, v)
    # large terms cancelling in pairs of lanes (products +-B, B up to ~2e7): each score is the
    # sum of their rounding residuals and small terms, O(1), its rounding set by the order
    q = normal(hd)
    q[np.abs(q) < 0.1] = f32(0.5)
    k = normal((n, hd))
    for j in range(n):
        lanes = rng.permutation(hd)[:2 * max(1, hd // 8)].reshape(-1, 2)
        for a, b in lanes:
            big = float(np.exp(rng.uniform(5, 17)))
            k[j, a] += f32(big / q[a])
            k[j, b] -= f32(big / q[b])
    add("cancel-pairs", q, k, normal((n, hd)))
    # exact cancellation: lane pairs +x, -x (beat sums +0), and one key of alternating huge terms
    q = np.abs(normal(hd))
    k = normal((n, hd))
    k[:, 1::2] = -k[:, 0::2]
    q[1::2] = q[0::2]
    k[3, :] = np.where(np.arange(hd) % 2 == 0, f32(1e20), f32(-1e20))
    k[3, 0] = f32(1e20 + 1e13)
    add("cancellation", q, k, normal((n, hd)))
    # large values: o ~ 1e35 before the division by l
    add("large-v", normal(hd), normal((n, hd)), signs((n, hd)) * f32(3e35))
    # a single key of a single tile (pos 0)
    add("pos0", normal(hd, 3.0), normal((1, hd), 3.0), normal((1, hd), 3.0), at=0)
    return cases


def random_queries(rng: np.random.Generator, count: int, heads: int, head_dim: int, attn_format: str = "int8"
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """``count * heads`` random queries (:func:`format_query`) as (count, heads, hd) int8 and
    (count, heads) d_q, or (count, heads, hd) float32 and None in the fp32 format."""
    qs = [format_query(rng, head_dim, attn_format) for _ in range(count * heads)]
    if attn_format == "fp32":
        return np.array([q for q, _ in qs], np.float32).reshape(count, heads, head_dim), None
    q_q = np.array([q for q, _ in qs], np.int8).reshape(count, heads, head_dim)
    d_q = np.array([d for _, d in qs], np.float32).reshape(count, heads)
    return q_q, d_q


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------

def out_words(beat: dict, lanes: int) -> list[int]:
    """The ``lanes`` binary32 words of an output beat's ``data``, lane 0 first."""
    data = beat["data"]
    return [(data >> (32 * i)) & 0xFFFFFFFF for i in range(lanes)]


def check_output_bits(got: list[int], expected: np.ndarray, what: str) -> None:
    """``got`` (binary32 words) must equal ``expected`` bit for bit; the error names ``what``
    and the first differing elements."""
    want = [int(x) for x in np.asarray(expected, np.float32).view(np.uint32)]
    bad = [i for i in range(len(want)) if got[i] != want[i]]
    if bad:
        f = lambda w: float(np.uint32(w).view(np.float32))  # noqa: E731
        detail = ", ".join(f"o[{i}]: got {got[i]:#010x} ({f(got[i]):.8g}) expected {want[i]:#010x} "
                           f"({f(want[i]):.8g})" for i in bad[:6])
        raise AssertionError(f"{what}: {len(bad)}/{len(want)} output elements differ: {detail}")


def check_burst(burst: dict, what: str) -> int:
    """An address handshake (a monitor's ``addr``, ``len``, ``size``, ``burst`` record) must be
    INCR with full-width beats; returns its bytes."""
    if burst["burst"] != 1 or (1 << burst["size"]) != BEAT:
        raise AssertionError(f"{what}: burst at {burst['addr']:#x} BURST={burst['burst']} SIZE={burst['size']}: "
                             f"expected INCR, {BEAT}-byte beats")
    return (burst["len"] + 1) * BEAT


def check_memory(got: bytes, want: bytes, what: str) -> None:
    """A memory read back must equal the golden image; the error counts the differing bytes
    and names the first addresses."""
    if got != bytes(want):
        diff = [i for i in range(len(want)) if got[i] != want[i]]
        raise AssertionError(f"{what}: memory differs from the golden layout at {len(diff)} bytes, first at "
                             f"{[hex(a) for a in diff[:8]]}")


# ------------------------------------------------------------------------------------------------
# The testbench object
# ------------------------------------------------------------------------------------------------

class AttentionTB(Testbench):
    """An attention unit with its clock, and the configuration the units share: ``head_dim``
    (``hd``), ``tile``, ``dot_lanes``, ``pv_lanes``, ``out_lanes``, ``seed``, ``addr_width``,
    ``attn_format`` (defaults 64, 8, 16, 16, 8, 1, 40, "int8"); ``out_beats`` output beats per
    head vector."""

    def __init__(self, dut, **kwargs):
        super().__init__(dut, **kwargs)
        cfg = self.cfg
        self.hd = int(cfg.get("head_dim", 64))
        self.tile = int(cfg.get("tile", 8))
        self.dot_lanes = int(cfg.get("dot_lanes", 16))
        self.pv_lanes = int(cfg.get("pv_lanes", 16))
        self.out_lanes = int(cfg.get("out_lanes", 8))
        self.seed = int(cfg.get("seed", 1))
        self.addr_width = int(cfg.get("addr_width", 40))
        self.attn_format = str(cfg.get("attn_format", "int8"))
        self.out_beats = self.hd // self.out_lanes

    def per_key_cycles(self) -> int:
        """A generous per-key cycle cost (dot product, P.V, a few of overhead)."""
        return self.hd // self.dot_lanes + max(5, self.hd // self.pv_lanes) + 4

    @staticmethod
    def stall(probability: float, rng: random.Random):
        """A random pause generator stalling with ``probability`` (seeded from ``rng``), or
        None when 0 (no seed drawn then)."""
        return random_pause(probability, rng.randrange(1 << 30)) if probability else None

    def out_words(self, beat: dict) -> list[int]:
        return out_words(beat, self.out_lanes)
