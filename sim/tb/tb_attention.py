"""cocotb tests of the attention units: :class:`tellme.hw.attention.AttentionCore`,
:class:`tellme.hw.attn_decode.DecodeAttention` (KvReader + core over AXI) and
:class:`tellme.hw.attn_decode.KvWriter`, bit-exact against ``golden.attention_query`` and the KV
cache layout of docs/architecture.md section 6.

Configuration (``tb_config()``): ``kind`` ("core", "decode", "decode_ddr" or "writer"), ``head_dim``, ``tile``,
``dot_lanes``, ``pv_lanes``, ``out_lanes``, ``seed``, optionally ``results`` (a JSON file the
tests write their measurements to: cycles per query, AXI bytes), ``lengths`` (core: sequence
lengths), ``contexts`` (decode), ``long_context``, ``bench_contexts``, ``appends`` (writer).
Tests of another ``kind`` are skipped.

Core tests (keys driven by the testbench in ``golden.key_tile_order`` order):

- ``core_lengths``: caches of 1, 2, tile, tile+1 and random lengths up to ~300 positions with
  queries at the last and at random positions, no stalls (the cycles per query come from here);
- ``core_stalls``: the same kind of cases with random stalls on query, keys and out;
- ``core_extremes``: q/k/v saturated at +-127 (and at -128), all-equal scores (identical keys,
  zero query, tiny scales), one dominant key in the top tile / an older tile / tile 0 (first
  or last key of its tile), a dominant key so far ahead that every other p_j underflows to 0,
  large values; with random stalls.

Decode tests (cache laid out in a cocotbext-axi AxiRamRead by :func:`lay_out_kv`, several
(layer, kv head) regions, random pauses on AR and R and stalls on query/kv/out):

- ``decode_contexts``: MHA, contexts 1, 2, 32, 33, 128 (and more from ``contexts``);
- ``decode_gqa``: 4:1 and 5:1 groups (several queries with the same kv command, back to back);
- ``decode_long``: one context >= 1024;
- ``decode_bench``: no pauses, contexts ``bench_contexts``: cycles and DDR bytes for
  ``bench/attention.py``;
- ``decode_ddr_bench`` (``kind`` "decode_ddr"): the same on ``bench/attention.py``'s harness
  DecodeOnDdr (the unit on :class:`tellme.hw.ddr_model.DdrModel`), for each of
  ``ddr_latencies`` at ``ddr_rate`` bytes per cycle.

Every decode query's AR bursts are checked to cover exactly the bytes of positions 0..pos of
its K, V and scale arrays, once each ((pos+1)*(2*hd+16) bytes), INCR, full width.

Writer test ``writer_appends``: random positions of several (layer, kv head) regions appended
into an AxiRamWrite (pauses on AW, W, B) whose memory starts random; afterwards the whole
memory must equal the start image with exactly the K row, V row and scale record {k_scale,
v_scale, 8 zero bytes} of each append written, and ``done`` must pulse once per append.

Cycles are counted in clock periods; "cycles per query" runs from the first key beat taken by
the core to the last output beat taken (both inclusive).
"""

from __future__ import annotations

import random
import struct
import time
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from ...hw.attention import key_layout, query_layout
from ...hw.pipeline import f32_vec
from .. import golden
from ...contract.layouts import (KV_RECORD_BYTES as RECORD, PAGE, KvBases, kv_arrays, kv_cache_map, page_up,
                                 scale_records)
from . import record_result, tb_config
from .streams import (StreamSink, StreamSource, random_pause, reset_dut, start_clock, start_watchdog,
                      struct_fields, with_timeout)

BEAT = 16
PERIOD_NS = 10


# ------------------------------------------------------------------------------------------------
# KV-cache layout in DDR (docs/architecture.md section 6): pure helpers, no cocotb
# ------------------------------------------------------------------------------------------------

def lay_out_kv(write, cache: golden.KVCache, kv_head: int, bases: KvBases, count: int) -> None:
    """Write positions 0..count-1 of ``cache``'s kv head ``kv_head`` at ``bases`` through
    ``write(addr, data)`` (e.g. an AxiRam's ``write``)."""
    k, v, s = kv_arrays(cache, kv_head, count)
    write(bases.k_base, k)
    write(bases.v_base, v)
    write(bases.s_base, s)


def expected_read_ranges(bases: KvBases, pos: int, head_dim: int) -> list[tuple[int, int]]:
    """The byte ranges [start, end) a query at ``pos`` must read: positions 0..pos."""
    n = pos + 1
    return sorted([(bases.k_base, bases.k_base + n * head_dim), (bases.v_base, bases.v_base + n * head_dim),
                   (bases.s_base, bases.s_base + n * RECORD)])


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


def random_cache(rng: np.random.Generator, count: int, head_dim: int, kv_heads: int = 1) -> golden.KVCache:
    cache = golden.KVCache.empty(kv_heads, count, head_dim)
    for h in range(kv_heads):
        k, v = random_kv(rng, count, head_dim)
        kq, kd = quantized_rows(k)
        vq, vd = quantized_rows(v)
        cache.k[h], cache.v[h], cache.k_scale[h], cache.v_scale[h] = kq, vq, kd, vd
    return cache


def random_query(rng: np.random.Generator, head_dim: int, sigma: float | None = None):
    """(q_q, d_q) of a random float query quantised with golden.quantize."""
    sigma = sigma if sigma is not None else float(np.exp(rng.uniform(np.log(0.3), np.log(4.0))))
    q_q, d_q = golden.quantize((rng.standard_normal(head_dim) * sigma).astype(np.float32))
    return q_q, np.float32(d_q)


@dataclass
class Case:
    """One query: int8 q and d_q against kv head ``kv_head`` of ``cache`` at position ``pos``."""
    label: str
    q_q: np.ndarray
    d_q: np.float32
    cache: golden.KVCache
    pos: int
    kv_head: int = 0

    def golden(self, tile: int) -> np.ndarray:
        hd = self.q_q.shape[0]
        return golden.attention_query(self.q_q, self.d_q, self.cache, self.kv_head, self.pos, tile, hd)

    def query_beat(self) -> dict:
        return {"q": row_int(self.q_q), "d_q": f32_bits(self.d_q)}

    def key_beats(self, tile: int) -> list[dict]:
        c, h = self.cache, self.kv_head
        beats = []
        for lo, hi in golden.key_tile_order(self.pos, tile):
            for j in range(lo, hi):
                beats.append({"k": row_int(c.k[h, j]), "k_scale": f32_bits(c.k_scale[h, j]),
                              "v": row_int(c.v[h, j]), "v_scale": f32_bits(c.v_scale[h, j]),
                              "tile_last": int(j == hi - 1), "last": int(lo == 0 and j == hi - 1)})
        return beats


def length_cases(rng: np.random.Generator, head_dim: int, tile: int, lengths: list[int],
                 extra_positions: int = 1) -> list[Case]:
    """For each sequence length n: a cache of n positions, a query at n-1 and (for n > 2)
    ``extra_positions`` queries at random earlier positions."""
    cases = []
    for n in lengths:
        cache = random_cache(rng, n, head_dim)
        positions = [n - 1] + ([int(p) for p in rng.integers(0, n - 1, size=extra_positions)] if n > 2 else [])
        for pos in positions:
            q_q, d_q = random_query(rng, head_dim)
            cases.append(Case(f"len{n}@{pos}", q_q, d_q, cache, pos))
    return cases


def extreme_cases(rng: np.random.Generator, head_dim: int, tile: int) -> list[Case]:
    """Saturated values, all-equal scores, dominant keys (see the module doc)."""
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


# ------------------------------------------------------------------------------------------------
# cocotb side
# ------------------------------------------------------------------------------------------------
CFG = tb_config()
KIND = CFG.get("kind", "core")
HD = int(CFG.get("head_dim", 64))
TILE = int(CFG.get("tile", 8))
DOT_LANES = int(CFG.get("dot_lanes", 16))
PV_LANES = int(CFG.get("pv_lanes", 16))
OUT_LANES = int(CFG.get("out_lanes", 8))
SEED = int(CFG.get("seed", 1))
ADDR_WIDTH = int(CFG.get("addr_width", 40))
RESULTS = CFG.get("results")
#: Tile size the golden model uses (default: the design's). Only for checking that the harness
#: notices a wrong expectation (a different key order rounds differently).
GOLDEN_TILE = int(CFG.get("golden_tile", TILE))
Q_FIELDS = struct_fields(query_layout(HD))
K_FIELDS = struct_fields(key_layout(HD))
OUT_FIELDS = struct_fields(f32_vec(OUT_LANES))
OUT_BEATS = HD // OUT_LANES


def cycle_now() -> int:
    return int(get_sim_time("ns")) // PERIOD_NS


def record(key: str, value) -> None:
    """Merge ``{key: value}`` into the results file the test was given (if any)."""
    record_result(RESULTS, key, value)


def skip_unless(kind: str) -> bool:
    return KIND != kind


class Handshakes:
    """Records, every cycle, the handshakes of (valid, ready) pairs: name -> list of cycles,
    plus chosen payload signals (name -> list of values at those cycles)."""

    def __init__(self, clock, streams: dict):
        self.clock = clock
        self.streams = streams               # name -> (valid, ready, {field: signal})
        self.cycles = {name: [] for name in streams}
        self.values = {name: [] for name in streams}
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        edge = RisingEdge(self.clock)
        while True:
            await edge
            for name, (valid, ready, payload) in self.streams.items():
                if valid.value and ready.value:
                    self.cycles[name].append(cycle_now())
                    if payload:
                        self.values[name].append({k: s.value.to_unsigned() for k, s in payload.items()})

    def stop(self):
        self._task.cancel()


def out_words(beat: dict) -> list[int]:
    data = beat["data"]
    return [(data >> (32 * i)) & 0xFFFFFFFF for i in range(OUT_LANES)]


async def collect_output(clock, sink, case: Case, expected: np.ndarray, index: int, bound: int) -> None:
    """Receive one query's output beats and compare them bit for bit with ``expected``."""
    got = []
    for b in range(OUT_BEATS):
        beat = await with_timeout(sink.recv(), clock, bound, f"query {index} ({case.label}) output beat {b}")
        if beat["last"] != int(b == OUT_BEATS - 1):
            raise AssertionError(f"query {index} ({case.label}): beat {b} of {OUT_BEATS} has last={beat['last']}")
        got.extend(out_words(beat))
    check_output_bits(got, expected, f"query {index} ({case.label}, pos {case.pos}, {case.pos + 1} keys)")


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


def query_bound(pos: int) -> int:
    """Generous cycle bound for one query (stalls included)."""
    keys = pos + 1
    tiles = pos // TILE + 1
    return 40 * keys * (HD // DOT_LANES + max(5, HD // PV_LANES) + 4) + 2000 * tiles + 20_000


# -- core ------------------------------------------------------------------------------------------

async def run_core(dut, cases: list[Case], *, stall: float, label: str, rng: random.Random) -> list[dict]:
    clock = start_clock(dut, PERIOD_NS)
    total_bound = sum(query_bound(c.pos) for c in cases)
    start_watchdog(clock, total_bound + 10_000, label)
    pause = (lambda: random_pause(stall, rng.randrange(1 << 30))) if stall else (lambda: None)
    qsrc = StreamSource(dut, "query", clock, fields=Q_FIELDS, pause=pause())
    ksrc = StreamSource(dut, "keys", clock, fields=K_FIELDS, pause=pause())
    sink = StreamSink(dut, "o", clock, fields=OUT_FIELDS, pause=pause())
    mon = Handshakes(clock, {"keys": (dut.keys__valid, dut.keys__ready, None),
                             "o": (dut.o__valid, dut.o__ready, None),
                             "query": (dut.query__valid, dut.query__ready, None)})
    await reset_dut(dut, clock)
    t0 = time.monotonic()
    expected = [c.golden(GOLDEN_TILE) for c in cases]
    golden_s = time.monotonic() - t0
    key_counts = []
    for c in cases:
        qsrc.send_nowait(c.query_beat())
        beats = c.key_beats(TILE)
        key_counts.append(len(beats))
        for beat in beats:
            ksrc.send_nowait(beat)
    t0 = time.monotonic()
    for i, (c, e) in enumerate(zip(cases, expected)):
        await collect_output(clock, sink, c, e, i, query_bound(c.pos))
    sim_s = time.monotonic() - t0
    await ClockCycles(clock, 30)
    assert sink.count() == 0, f"{sink.count()} output beats beyond the expected ones"
    assert ksrc.idle() and qsrc.idle(), "keys or queries left untaken"
    rows, k_first = [], 0
    for i, (c, n) in enumerate(zip(cases, key_counts)):
        first_key = mon.cycles["keys"][k_first]
        last_out = mon.cycles["o"][(i + 1) * OUT_BEATS - 1]
        k_first += n
        rows.append({"label": c.label, "pos": c.pos, "keys": n, "tiles": c.pos // TILE + 1,
                     "cycles": last_out - first_key + 1})
    mon.stop()
    for r in rows:
        dut._log.info("%s: %-24s pos %4d: %4d keys, %3d tiles: %6d cycles (first key in .. last out)",
                      label, r["label"], r["pos"], r["keys"], r["tiles"], r["cycles"])
    dut._log.info("%s: %d queries bit-exact; golden %.1f s, simulation %.1f s", label, len(cases), golden_s, sim_s)
    return rows


def core_config() -> dict:
    return {"head_dim": HD, "tile": TILE, "dot_lanes": DOT_LANES, "pv_lanes": PV_LANES, "out_lanes": OUT_LANES}


def default_lengths(rng: np.random.Generator) -> list[int]:
    lengths = CFG.get("lengths")
    if lengths:
        return [int(n) for n in lengths]
    randoms = sorted(int(n) for n in rng.integers(3, 301, size=int(CFG.get("random_lengths", 3))))
    return [1, 2, TILE, TILE + 1] + randoms


@cocotb.test(skip=skip_unless("core"))
async def core_lengths(dut):
    """Lengths 1, 2, tile, tile+1, random up to 300; queries at the last and random positions;
    no stalls: bit-exact outputs and cycles per query."""
    rng = np.random.default_rng(SEED * 101 + 1)
    cases = length_cases(rng, HD, TILE, default_lengths(rng))
    rows = await run_core(dut, cases, stall=0.0, label="core_lengths", rng=random.Random(SEED))
    record("core_lengths", {"config": core_config(), "queries": rows})


@cocotb.test(skip=skip_unless("core"))
async def core_stalls(dut):
    """Random cases with random stalls (probability 0.3) on query, keys and out."""
    rng = np.random.default_rng(SEED * 101 + 2)
    lengths = [TILE + 1] + sorted(int(n) for n in rng.integers(2, 301, size=2))
    cases = length_cases(rng, HD, TILE, lengths)
    rows = await run_core(dut, cases, stall=0.3, label="core_stalls", rng=random.Random(SEED + 2))
    record("core_stalls", {"config": core_config(), "queries": rows})


@cocotb.test(skip=skip_unless("core"))
async def core_extremes(dut):
    """Saturated values, equal scores, dominant keys, underflowing p_j; random stalls."""
    rng = np.random.default_rng(SEED * 101 + 3)
    cases = extreme_cases(rng, HD, TILE)
    rows = await run_core(dut, cases, stall=0.25, label="core_extremes", rng=random.Random(SEED + 3))
    record("core_extremes", {"config": core_config(), "queries": rows})


# -- decode ----------------------------------------------------------------------------------------

KV_BASE = 0x20000                 # 4 KiB aligned, not 0


class DecodeBench:
    """A DecodeAttention with its cache in memory: golden caches of ``layers`` x ``kv_heads``
    regions (capacity positions each, all filled), the gaps between arrays random.

    ``memory="axiram"``: the DUT is the DecodeAttention itself, its AXI port on a cocotbext-axi
    AxiRamRead (``pauses``: random pauses on AR and R). ``memory="ddr"``: the DUT is the
    bench's harness (``bench/attention.py`` DecodeOnDdr: the unit as ``attn`` on a
    :class:`tellme.hw.ddr_model.DdrModel` ``ddr`` with ``cfg_latency``/``cfg_rate`` inputs), the
    image loaded into ``dut.ddr.mem`` through VPI; the AXI port is observed inside ``attn``."""

    def __init__(self, dut, *, layers: int, kv_heads: int, capacity: int, seed: int, pauses: bool, stall: float,
                 memory: str = "axiram"):
        self.dut = dut
        self.rng = np.random.default_rng(seed)
        prng = random.Random(seed)
        self.clock = start_clock(dut, PERIOD_NS)
        self.bases, size = kv_cache_map(KV_BASE, layers, kv_heads, capacity, HD)
        mem_size = page_up(KV_BASE + size + PAGE)
        image = bytearray(prng.randbytes(mem_size))

        def write(addr, data):
            image[addr:addr + len(data)] = data

        self.caches = {}
        for (layer, head), bases in self.bases.items():
            cache = random_cache(self.rng, capacity, HD)
            lay_out_kv(write, cache, 0, bases, capacity)
            self.caches[layer, head] = cache
        if memory == "axiram":
            from cocotbext.axi import AxiRamRead, AxiReadBus
            self.ram = AxiRamRead(AxiReadBus.from_prefix(dut, "axi_"), self.clock, dut.rst, size=mem_size)
            self.ram.log.setLevel("WARNING")
            self.ram.write(0, bytes(image))
            if pauses:
                self.ram.ar_channel.set_pause_generator(random_pause(0.3, prng.randrange(1 << 30)))
                self.ram.r_channel.set_pause_generator(random_pause(0.3, prng.randrange(1 << 30)))
            axi, unit = dut, dut
        elif memory == "ddr":
            from .ddr import load_ddr_image
            t0 = time.monotonic()
            load_ddr_image(dut.ddr.mem, bytes(image), 0)
            dut._log.info("loaded %d bytes into the DDR model in %.1f s", mem_size, time.monotonic() - t0)
            axi, unit = dut.attn, dut.attn
        else:
            raise ValueError(f"memory must be 'axiram' or 'ddr', not {memory!r}")
        self.error = dut.error
        pause = (lambda: random_pause(stall, prng.randrange(1 << 30))) if stall else (lambda: None)
        self.qsrc = StreamSource(dut, "query", self.clock, fields=Q_FIELDS, pause=pause())
        self.ksrc = StreamSource(dut, "kv", self.clock, fields=struct_fields(_kv_cmd_layout()), pause=pause())
        self.sink = StreamSink(dut, "o", self.clock, fields=OUT_FIELDS, pause=pause())
        streams = {
            "kv": (dut.kv__valid, dut.kv__ready, None),
            "o": (dut.o__valid, dut.o__ready, None),
            "ar": (axi.axi__arvalid, axi.axi__arready,
                   {"addr": axi.axi__araddr, "len": axi.axi__arlen, "size": axi.axi__arsize,
                    "burst": axi.axi__arburst}),
            "r": (axi.axi__rvalid, axi.axi__rready, None),
        }
        core_keys = _core_keys_handles(unit)
        if core_keys is not None:
            streams["keys"] = core_keys
        self.mon = Handshakes(self.clock, streams)

    async def reset(self):
        self.dut.rst.value = 1
        await reset_dut(self.dut, self.clock)

    def command(self, layer: int, head: int, pos: int) -> dict:
        b = self.bases[layer, head]
        return {"k_base": b.k_base, "v_base": b.v_base, "s_base": b.s_base, "pos": pos}

    async def run(self, jobs: list[tuple[Case, tuple[int, int]]], label: str) -> list[dict]:
        """Queue every query with its kv command (back to back), check the outputs and each
        query's AXI reads; returns one row of measurements per query."""
        t0 = time.monotonic()
        expected = [case.golden(GOLDEN_TILE) for case, _ in jobs]
        golden_s = time.monotonic() - t0
        bound = sum(query_bound(case.pos) for case, _ in jobs)
        watchdog = start_watchdog(self.clock, bound + 20_000, label)
        for case, (layer, head) in jobs:
            self.qsrc.send_nowait(case.query_beat())
            self.ksrc.send_nowait(self.command(layer, head, case.pos))
        t0 = time.monotonic()
        for i, ((case, _), e) in enumerate(zip(jobs, expected)):
            await collect_output(self.clock, self.sink, case, e, i, query_bound(case.pos))
        sim_s = time.monotonic() - t0
        await ClockCycles(self.clock, 30)
        watchdog.cancel()
        assert self.sink.count() == 0, f"{self.sink.count()} output beats beyond the expected ones"
        assert not int(self.error.value), "error raised without an error response"
        mon = self.mon
        ar = list(zip(mon.cycles["ar"], mon.values["ar"]))
        cmd_cycles = mon.cycles["kv"]
        assert len(cmd_cycles) == len(jobs), f"{len(cmd_cycles)} kv commands taken, {len(jobs)} sent"
        rows = []
        key_index = 0
        for i, (case, (layer, head)) in enumerate(jobs):
            lo_c = cmd_cycles[i]
            hi_c = cmd_cycles[i + 1] if i + 1 < len(jobs) else 1 << 62
            bursts = []
            for cyc, v in ar:
                if lo_c <= cyc < hi_c:
                    if v["burst"] != 1 or (1 << v["size"]) != BEAT:
                        raise AssertionError(f"{label}: query {i}: burst at {v['addr']:#x} ARBURST={v['burst']} "
                                             f"ARSIZE={v['size']}: expected INCR, {BEAT}-byte beats")
                    bursts.append((v["addr"], (v["len"] + 1) * BEAT))
            nbytes = check_coverage(bursts, expected_read_ranges(self.bases[layer, head], case.pos, HD),
                                    f"{label}: query {i} ({case.label}, pos {case.pos})")
            assert nbytes == (case.pos + 1) * (2 * HD + RECORD)
            last_out = mon.cycles["o"][(i + 1) * OUT_BEATS - 1]
            row = {"label": case.label, "layer": layer, "kv_head": head, "pos": case.pos,
                   "keys": case.pos + 1, "tiles": case.pos // TILE + 1, "bursts": len(bursts),
                   "bytes": nbytes, "cmd_to_last_out": last_out - lo_c + 1}
            if "keys" in mon.cycles:
                first_key = mon.cycles["keys"][key_index]
                row["cycles"] = last_out - first_key + 1
                key_index += case.pos + 1
            rows.append(row)
        total_r = len(mon.cycles["r"])
        assert total_r * BEAT == sum(r["bytes"] for r in rows), "R beats differ from the AR bursts"
        for r in rows:
            dut_cycles = r.get("cycles", "-")
            self.dut._log.info("%s: %-12s L%d H%d pos %4d: %3d bursts %7d B, %6s cycles first key .. last out, "
                               "%6d cycles command .. last out", label, r["label"], r["layer"], r["kv_head"],
                               r["pos"], r["bursts"], r["bytes"], dut_cycles, r["cmd_to_last_out"])
        self.dut._log.info("%s: %d queries bit-exact, reads exact; golden %.1f s, simulation %.1f s",
                           label, len(jobs), golden_s, sim_s)
        return rows


def _kv_cmd_layout():
    from ...hw.kv_reader import kv_command_layout
    return kv_command_layout(ADDR_WIDTH)


def _core_keys_handles(dut):
    """The core's keys handshake inside DecodeAttention (hierarchical access), if visible."""
    try:
        core = dut.core
        return (core.keys__valid, core.keys__ready, None)
    except AttributeError:
        return None


def decode_config() -> dict:
    return {"head_dim": HD, "tile": TILE, "dot_lanes": DOT_LANES, "pv_lanes": PV_LANES,
            "out_lanes": OUT_LANES, "data_width": 128}


@cocotb.test(skip=skip_unless("decode"))
async def decode_contexts(dut):
    """MHA: contexts 1, 2, 32, 33, 128 (plus ``contexts``), each on its own (layer, kv head),
    random pauses on AR/R and stalls on query/kv/out."""
    contexts = [int(c) for c in CFG.get("contexts", [1, 2, 32, 33, 128])]
    bench = DecodeBench(dut, layers=2, kv_heads=2, capacity=max(contexts), seed=SEED * 7 + 1,
                        pauses=True, stall=0.2)
    await bench.reset()
    regions = list(bench.bases)
    jobs = []
    for i, ctx in enumerate(contexts):
        layer, head = regions[i % len(regions)]
        q_q, d_q = random_query(bench.rng, HD)
        jobs.append((Case(f"ctx{ctx}", q_q, d_q, bench.caches[layer, head], ctx - 1), (layer, head)))
    rows = await bench.run(jobs, "decode_contexts")
    record("decode_contexts", {"config": decode_config(), "queries": rows})


@cocotb.test(skip=skip_unless("decode"))
async def decode_gqa(dut):
    """GQA 4:1 and 5:1: groups of queries issuing the same kv command back to back (and an
    MHA query in between on another region), random pauses and stalls."""
    capacity = 100
    bench = DecodeBench(dut, layers=1, kv_heads=2, capacity=capacity, seed=SEED * 7 + 2, pauses=True, stall=0.2)
    await bench.reset()
    jobs = []
    for group, (layer, head), pos in ((4, (0, 1), 70), (5, (0, 0), 45), (4, (0, 0), 99)):
        for h in range(group):
            q_q, d_q = random_query(bench.rng, HD)
            jobs.append((Case(f"gqa{group}:1-q{h}", q_q, d_q, bench.caches[layer, head], pos), (layer, head)))
    rows = await bench.run(jobs, "decode_gqa")
    record("decode_gqa", {"config": decode_config(), "queries": rows})


@cocotb.test(skip=skip_unless("decode"))
async def decode_long(dut):
    """One long context (``long_context``, default 1024) with pauses on AR/R."""
    ctx = int(CFG.get("long_context", 1024))
    bench = DecodeBench(dut, layers=1, kv_heads=1, capacity=ctx, seed=SEED * 7 + 3, pauses=True, stall=0.1)
    await bench.reset()
    q_q, d_q = random_query(bench.rng, HD)
    t0 = time.monotonic()
    rows = await bench.run([(Case(f"ctx{ctx}", q_q, d_q, bench.caches[0, 0], ctx - 1), (0, 0))], "decode_long")
    rows[0]["wall_seconds"] = round(time.monotonic() - t0, 1)
    record("decode_long", {"config": decode_config(), "queries": rows})


async def bench_contexts(bench: DecodeBench, contexts: list[int], label: str) -> list[dict]:
    """One query at a time (no overlap between queries) per context, on region (0, 0)."""
    rows = []
    for ctx in contexts:
        q_q, d_q = random_query(bench.rng, HD)
        bench.mon.cycles = {k: [] for k in bench.mon.cycles}
        bench.mon.values = {k: [] for k in bench.mon.values}
        rows += await bench.run([(Case(f"ctx{ctx}", q_q, d_q, bench.caches[0, 0], ctx - 1), (0, 0))],
                                f"{label} ctx {ctx}")
    return rows


@cocotb.test(skip=skip_unless("decode"))
async def decode_bench(dut):
    """No pauses anywhere (AxiRamRead): cycles per query and DDR bytes at ``bench_contexts``."""
    contexts = [int(c) for c in CFG.get("bench_contexts", [128, 512, 1024])]
    bench = DecodeBench(dut, layers=1, kv_heads=1, capacity=max(contexts), seed=SEED * 7 + 4, pauses=False, stall=0.0)
    await bench.reset()
    rows = await bench_contexts(bench, contexts, "decode_bench")
    record("decode_bench", {"config": decode_config(), "memory": "AxiRamRead, no pauses", "queries": rows})


@cocotb.test(skip=skip_unless("decode_ddr"))
async def decode_ddr_bench(dut):
    """The unit on the DDR model (bench/attention.py DecodeOnDdr): for each latency in
    ``ddr_latencies`` (cycles, AR to first R beat) at ``ddr_rate`` bytes per cycle, cycles per
    query at ``bench_contexts``, outputs and reads checked as everywhere else."""
    from ...hw.ddr_model import rate_fixed

    contexts = [int(c) for c in CFG.get("bench_contexts", [128, 512, 1024])]
    latencies = [int(x) for x in CFG.get("ddr_latencies", [40])]
    rate = CFG.get("ddr_rate", 64)
    bench = DecodeBench(dut, layers=1, kv_heads=1, capacity=max(contexts), seed=SEED * 7 + 4, pauses=False,
                        stall=0.0, memory="ddr")
    dut.cfg_latency.value = latencies[0]
    dut.cfg_rate.value = rate_fixed(rate)
    await bench.reset()
    result = {}
    for latency in latencies:
        dut.cfg_latency.value = latency
        await ClockCycles(bench.clock, 5)
        result[str(latency)] = await bench_contexts(bench, contexts, f"decode_ddr_bench latency {latency}")
    record("decode_ddr_bench", {"config": decode_config(), "ddr_rate_bytes_per_cycle": rate,
                                "latencies": result})


# -- writer ----------------------------------------------------------------------------------------

@cocotb.test(skip=skip_unless("writer"))
async def writer_appends(dut):
    """Random appends (positions at 0, at the capacity's end, across 4 KiB boundaries) into an
    AxiRamWrite starting random, pauses on AW/W/B and stalls on append: exactly the K row, V
    row and scale record of each append change, ``done`` pulses once per append."""
    from cocotbext.axi import AxiRamWrite, AxiWriteBus

    from ...hw.attn_decode import kv_append_layout

    prng = random.Random(SEED * 13 + 5)
    rng = np.random.default_rng(SEED * 13 + 5)
    clock = start_clock(dut, PERIOD_NS)
    capacity, layers, kv_heads = 300, 2, 2
    bases, size = kv_cache_map(KV_BASE, layers, kv_heads, capacity, HD)
    mem_size = page_up(KV_BASE + size + PAGE)
    ram = AxiRamWrite(AxiWriteBus.from_prefix(dut, "axi_"), clock, dut.rst, size=mem_size)
    ram.log.setLevel("WARNING")
    image = bytearray(prng.randbytes(mem_size))
    ram.write(0, bytes(image))
    for ch in (ram.aw_channel, ram.w_channel, ram.b_channel):
        ch.set_pause_generator(random_pause(0.3, prng.randrange(1 << 30)))
    fields = struct_fields(kv_append_layout(HD, ADDR_WIDTH))
    src = StreamSource(dut, "append", clock, fields=fields, pause=random_pause(0.3, prng.randrange(1 << 30)))
    mon = Handshakes(clock, {"append": (dut.append__valid, dut.append__ready, None),
                             "aw": (dut.axi__awvalid, dut.axi__awready,
                                    {"addr": dut.axi__awaddr, "len": dut.axi__awlen, "size": dut.axi__awsize,
                                     "burst": dut.axi__awburst}),
                             "b": (dut.axi__bvalid, dut.axi__bready, None)})
    done_cycles = []

    async def count_done():
        while True:
            await RisingEdge(clock)
            if int(dut.done.value):
                done_cycles.append(cycle_now())
            assert not int(dut.error.value), "KvWriter raised error"

    # positions: 0, capacity-1, rows across a 4 KiB boundary, random ones
    crossing = [p for p in range(capacity) if (p * HD) % PAGE > PAGE - HD]
    positions = [0, capacity - 1] + crossing[:3] + [int(p) for p in rng.integers(0, capacity, size=int(CFG.get("appends", 30)))]
    jobs = []
    for pos in positions:
        layer, head = prng.randrange(layers), prng.randrange(kv_heads)
        k, v = random_kv(rng, 1, HD)
        kq, kd = quantized_rows(k)
        vq, vd = quantized_rows(v)
        jobs.append((bases[layer, head], pos, kq[0], kd[0], vq[0], vd[0]))
    await reset_dut(dut, clock)
    counter = cocotb.start_soon(count_done())
    start_watchdog(clock, 400 * len(jobs) + 10_000, "writer_appends")
    for b, pos, kq, kd, vq, vd in jobs:
        src.send_nowait({"k_base": b.k_base, "v_base": b.v_base, "s_base": b.s_base, "pos": pos,
                         "k": row_int(kq), "v": row_int(vq), "k_scale": f32_bits(kd), "v_scale": f32_bits(vd)})
        # the golden layout (later appends to the same position overwrite earlier ones)
        image[b.k_base + pos * HD: b.k_base + (pos + 1) * HD] = kq.astype(np.int8).tobytes()
        image[b.v_base + pos * HD: b.v_base + (pos + 1) * HD] = vq.astype(np.int8).tobytes()
        image[b.s_base + pos * RECORD: b.s_base + (pos + 1) * RECORD] = scale_records([kd], [vd])
    for _ in range(len(jobs) * 400 // 50):
        await ClockCycles(clock, 50)
        if len(done_cycles) >= len(jobs) and src.idle():
            break
    await ClockCycles(clock, 50)
    counter.cancel()
    mon.stop()
    assert len(done_cycles) == len(jobs), f"done pulsed {len(done_cycles)} times for {len(jobs)} appends"
    assert len(mon.cycles["b"]) == len(mon.cycles["aw"]), \
        f"{len(mon.cycles['b'])} write responses for {len(mon.cycles['aw'])} AW bursts"
    # every burst INCR, full width, inside one of the appended K rows / V rows / scale records
    targets = set()
    for b, pos, *_ in jobs:
        targets.update([(b.k_base + pos * HD, HD), (b.v_base + pos * HD, HD), (b.s_base + pos * RECORD, RECORD)])
    for v in mon.values["aw"]:
        start, nbytes = v["addr"], (v["len"] + 1) * BEAT
        if v["burst"] != 1 or (1 << v["size"]) != BEAT:
            raise AssertionError(f"AW burst at {start:#x}: AWBURST={v['burst']} AWSIZE={v['size']}")
        if not any(t <= start and start + nbytes <= t + n for t, n in targets):
            raise AssertionError(f"AW burst [{start:#x}, {start + nbytes:#x}) outside every appended row/record")
    got = ram.read(0, mem_size)
    if got != bytes(image):
        diff = [i for i in range(mem_size) if got[i] != image[i]]
        raise AssertionError(f"memory differs from the golden layout at {len(diff)} bytes, first at "
                             f"{[hex(a) for a in diff[:8]]}")
    # per-append cycles: append taken .. done
    takes = mon.cycles["append"]
    per = [d - t + 1 for t, d in zip(takes, done_cycles)]
    dut._log.info("writer_appends: %d appends (%d across a 4 KiB boundary) exact; %d AW bursts; cycles per "
                  "append (taken .. done) min %d mean %.1f max %d", len(jobs), len(crossing[:3]), len(mon.cycles["aw"]),
                  min(per), sum(per) / len(per), max(per))
    record("writer_appends", {"config": {"head_dim": HD}, "appends": len(jobs), "aw_bursts": len(mon.cycles["aw"]),
                              "b_responses": len(mon.cycles["b"]),
                              "cycles_per_append": {"min": min(per), "mean": sum(per) / len(per), "max": max(per)}})
