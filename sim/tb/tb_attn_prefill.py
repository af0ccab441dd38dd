"""cocotb tests of :class:`tellme.hw.attn_prefill.PrefillAttention`, bit-exact against
``golden.attention_query`` for every (token, head) of a chunk, with the KV-cache history in a
cocotbext-axi AxiRamRead and the cache appends checked in an AxiRamWrite (layout of
docs/architecture.md section 6; the cases and checks shared with ``tb_attention`` are in
:mod:`.attention_common`).

Configuration (``tb_config()``): ``head_dim``, ``tile``, ``chunk``, ``heads``, ``dot_lanes``,
``pv_lanes``, ``out_lanes``, ``seed``, ``attn_format``, ``history_per`` (``"query"``, the
default, or ``"query_tile"``: how often the unit reads a pass's history) (``"int8"``, the default: golden
``KVCache`` and int8 queries with d_q; or ``"fp32"``: ``FloatKVCache``, float32 queries, the
fp32 score summed over ``dot_lanes``, which must match the build), optionally ``results`` (a
JSON file for cycles per pass), ``bench_counts`` (token counts of ``prefill_bench``),
``bench_contexts`` (contexts of ``decode_bench``), ``load_lanes`` (TiledAttention: the load
as beats of that many float32 per vector instead of a token per beat), ``history_ports``
(TiledAttention: its history read managers, each on its own AxiRamRead of one memory).

- ``prefill_lengths``: first chunks (pos0 = 0) of 1, 2, tile, tile+1 and ``chunk`` tokens, no
  stalls (cycles per pass recorded);
- ``prefill_history``: chunks on top of a cache (pos0 > 0): aligned to a tile, straddling a
  tile (pos0 % tile != 0), a one-token chunk after a long history, with random pauses on
  AR/R/AW/W/B and stalls on cmd, load and out; every query's history bytes are counted;
- ``prefill_gqa``: a 5:1 GQA group in ceil(5 / heads) passes over one kv head with different
  query heads (only the first appends the k/v: ``write_kv``), with stalls;
- ``prefill_extremes``: ``attention_common.extreme_cases`` (saturated int8, equal scores, zero
  query, dominant keys in the diagonal / older tiles, underflowing p_j, large values; in fp32
  ``float_extreme_cases``: overflow to inf and NaN, subnormals, +-0, cancellation, ...) as
  chunks, with stalls;
- ``prefill_bench``: no stalls or pauses, first chunks of ``bench_counts`` tokens: cycles;
- ``decode_bench``: no stalls or pauses, one-token passes at the contexts ``bench_contexts``
  (``capacity`` must hold them): cycles and history bytes.

Every pass checks: outputs in order (tokens descending, heads ascending, ``last`` per
(token, head)), bit-exact; AXI reads = pos0 x (2 hd + 16) bytes (fp32: pos0 x 8 hd) per query
or query tile (``history_per``), all inside the history of the pass's kv head; the write
memory afterwards equals its
start image with exactly the chunk's K rows, V rows and (int8) scale records written (or
untouched without ``write_kv``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ...contract.layouts import KV_RECORD_BYTES as RECORD, kv_arrays, kv_row_bytes
from ...hw.attn_prefill import prefill_command_layout, prefill_load_layout, prefill_out_layout
from ...hw.pipeline import f32_vec
from .. import golden
from .attention_common import (BEAT, AttentionTB, check_memory, check_output_bits, expected_read_ranges,
                               extreme_cases, f32_bits, f32_row_int, format_cache, kv_memory, kv_position_bytes,
                               lay_out_kv, random_queries, row_int)
from .axi import axi_channel, axi_ram_read, axi_ram_write, random_pauses
from .streams import HandshakeMonitor, StreamSink, StreamSource, struct_fields, with_timeout
from .testbench import config_value

KV_BASE = 0x40000


@dataclass
class Pass:
    """One chunk of one kv head: history positions 0..pos0-1 and the chunk pos0..pos0+count-1
    in ``cache`` (one kv head, golden layout), queries (count, heads, hd) in the cache's format:
    int8 ``q_q`` with ``d_q`` (count, heads) (``golden.KVCache``), or float32 ``q_q`` and
    ``d_q`` None (``golden.FloatKVCache``)."""
    label: str
    cache: golden.KVCache
    pos0: int
    count: int
    q_q: np.ndarray
    d_q: np.ndarray | None
    region: int = 0
    write_kv: bool = True

    @property
    def fp32(self) -> bool:
        return self.cache.format == "fp32"

    def expected(self, tile: int, lanes: int = golden.SCORE_LANES) -> list[tuple[int, int, np.ndarray]]:
        """(token, head, output) in the unit's output order; ``lanes``: the cores' dot_lanes
        (the fp32 score's summation order)."""
        _, heads, hd = self.q_q.shape
        return [(t, h, golden.attention_query(self.q_q[t, h], None if self.fp32 else self.d_q[t, h], self.cache,
                                              0, self.pos0 + t, tile, hd, lanes=lanes))
                for t in range(self.count - 1, -1, -1) for h in range(heads)]

    def vector_beats(self, lanes: int) -> list[dict]:
        """The load as beats of ``lanes`` float32 (TiledAttention): per token its query heads,
        its key and its value, hd/lanes beats each, ``last`` on a vector's final beat."""
        _, heads, hd = self.q_q.shape
        beats = []
        for t in range(self.count):
            p = self.pos0 + t
            for row in [*self.q_q[t], self.cache.k[0, p], self.cache.v[0, p]]:
                for b in range(hd // lanes):
                    beats.append({"data": f32_row_int(np.asarray(row[b * lanes:(b + 1) * lanes], np.float32)),
                                  "last": int(b == hd // lanes - 1)})
        return beats

    def load_beats(self) -> list[dict]:
        c, beats = self.cache, []
        _, heads, hd = self.q_q.shape
        width = hd * 32 if self.fp32 else hd * 8 + 32          # query_layout(hd, format) per head
        for t in range(self.count):
            p = self.pos0 + t
            q = 0
            for h in range(heads):
                if self.fp32:
                    q |= f32_row_int(self.q_q[t, h]) << (h * width)
                else:
                    q |= (row_int(self.q_q[t, h]) | f32_bits(self.d_q[t, h]) << (hd * 8)) << (h * width)
            if self.fp32:
                beats.append({"q": q, "k": f32_row_int(c.k[0, p]), "v": f32_row_int(c.v[0, p])})
            else:
                beats.append({"q": q, "k": row_int(c.k[0, p]), "k_scale": f32_bits(c.k_scale[0, p]),
                              "v": row_int(c.v[0, p]), "v_scale": f32_bits(c.v_scale[0, p])})
        return beats


def random_pass(rng: np.random.Generator, label: str, pos0: int, count: int, *, head_dim: int, heads: int,
                attn_format: str = "int8", **kw) -> Pass:
    cache = format_cache(rng, pos0 + count, head_dim, attn_format)
    q_q, d_q = random_queries(rng, count, heads, head_dim, attn_format)
    return Pass(label, cache, pos0, count, q_q, d_q, **kw)


class PrefillTB(AttentionTB):
    """The unit with its history in an AxiRamRead (two kv-head regions, random gaps) and its
    appends going to an AxiRamWrite that starts random (:meth:`connect`). Configuration beyond
    :class:`AttentionTB`'s: ``chunk``, ``heads``, ``capacity`` (positions per region)."""

    def __init__(self, dut):
        super().__init__(dut)
        self.chunk = int(self.cfg.get("chunk", 24))
        self.heads = int(self.cfg.get("heads", 1))
        self.capacity = int(self.cfg.get("capacity", 4 * self.chunk + 2 * self.tile))
        self.cmd_fields = struct_fields(prefill_command_layout(self.chunk, self.addr_width))
        # whole tokens per load beat, or (``load_lanes``, TiledAttention) beats of a vector
        self.load_lanes = self.cfg.get("load_lanes")
        self.load_fields = struct_fields(prefill_load_layout(self.hd, self.heads, self.attn_format)
                                         if self.load_lanes is None else f32_vec(int(self.load_lanes)))
        self.out_fields = struct_fields(prefill_out_layout(self.out_lanes, self.heads, self.chunk))
        self.history_ports = int(self.cfg.get("history_ports", 1))

    def connect(self, *, seed: int, pauses: bool, stall: float) -> None:
        dut, clock = self.dut, self.clock
        prng = random.Random(seed)
        self.bases, self.mem_size = kv_memory(KV_BASE, 1, 2, self.capacity, self.hd, self.attn_format)
        # the history read managers (TiledAttention's ``history_ports``: one RAM each, one memory)
        self.read_ports = [f"axi_read__{j}" for j in range(self.history_ports)] if self.history_ports > 1 \
            else ["axi_read"]
        self.rram = axi_ram_read(dut, self.read_ports[0], clock, self.mem_size)
        rrams = [self.rram] + [axi_ram_read(dut, port, clock, self.mem_size, mem=self.rram.mem)
                               for port in self.read_ports[1:]]
        self.wimage = bytearray(prng.randbytes(self.mem_size))
        self.wram = axi_ram_write(dut, "axi_write", clock, self.mem_size, image=self.wimage)
        if pauses:
            random_pauses([*rrams, self.wram], 0.3, prng)
        self.csrc = StreamSource(dut, "cmd", clock, fields=self.cmd_fields, pause=self.stall(stall, prng))
        self.lsrc = StreamSource(dut, "load", clock, fields=self.load_fields, pause=self.stall(stall, prng))
        self.sink = StreamSink(dut, "o", clock, fields=self.out_fields, pause=self.stall(stall, prng))
        self.mon = HandshakeMonitor(dut, clock, {"cmd": None, "load": None, "o": None,
                                                 **{f"ar{j}": axi_channel(dut, port, "ar", ("addr", "len"))
                                                    for j, port in enumerate(self.read_ports)}})

    def random_pass(self, rng: np.random.Generator, label: str, pos0: int, count: int, **kw) -> Pass:
        return random_pass(rng, label, pos0, count, head_dim=self.hd, heads=self.heads,
                           attn_format=self.attn_format, **kw)

    def history_reads(self, p: Pass) -> int:
        """How often a pass reads its history: once per query (``history_per`` "query",
        PrefillAttention) or once per query tile ("query_tile", TiledAttention)."""
        if self.cfg.get("history_per", "query") == "query":
            return p.count
        return (p.pos0 + p.count - 1) // self.tile - p.pos0 // self.tile + 1

    def lengths(self) -> list[int]:
        return sorted({n for n in (1, 2, self.tile, self.tile + 1, self.chunk) if n <= self.chunk})

    def pass_bound(self, p: Pass) -> int:
        """Generous cycle bound for one pass (stalls included)."""
        keys = sum(p.pos0 + t + 1 for t in range(p.count))
        tiles = sum((p.pos0 + t) // self.tile + 1 for t in range(p.count))
        return 40 * (keys * self.per_key_cycles() + 300 * tiles + p.count * (200 + 2 * self.hd) * self.heads) + 20_000

    async def run(self, p: Pass) -> dict:
        """Lay out p's history, run the pass, check outputs, reads and writes; return cycles."""
        hd, out_beats, fmt = self.hd, self.out_beats, self.attn_format
        assert p.cache.format == fmt, f"{p.label}: a {p.cache.format} pass on a {fmt} unit"
        b = self.bases[0, p.region]
        if p.pos0:
            lay_out_kv(self.rram.write, p.cache, 0, b, p.pos0)
        expected = p.expected(self.tile, self.dot_lanes)
        before = self.mon.mark()
        bound = self.pass_bound(p)
        watchdog = self.watchdog(bound, f"pass {p.label}")
        self.csrc.send_nowait({"k_base": b.k_base, "v_base": b.v_base, "s_base": b.s_base, "pos0": p.pos0,
                               "count": p.count, "write_kv": int(p.write_kv)})
        for beat in p.load_beats() if self.load_lanes is None else p.vector_beats(int(self.load_lanes)):
            self.lsrc.send_nowait(beat)
        for t, h, want in expected:
            got = []
            for i in range(out_beats):
                beat = await with_timeout(self.sink.recv(), self.clock, bound,
                                          f"{p.label}: token {t} head {h} beat {i}")
                if (beat["token"], beat["head"], beat["last"]) != (t, h, int(i == out_beats - 1)):
                    raise AssertionError(f"{p.label}: beat {i} of token {t} head {h} came tagged token "
                                         f"{beat['token']} head {beat['head']} last {beat['last']}")
                got.extend(self.out_words(beat))
            check_output_bits(got, want, f"{p.label} (pos0 {p.pos0}, count {p.count}): token {t} "
                                         f"(position {p.pos0 + t}) head {h}")
        # the pass ends (cmd ready again) once its cache appends are acknowledged
        for _ in range(bound // 20):
            if self.csrc.idle() and int(self.dut.busy.value) == 0:
                break
            await ClockCycles(self.clock, 20)
        watchdog.cancel()
        assert int(self.dut.busy.value) == 0, f"{p.label}: still busy after its outputs"
        assert self.sink.count() == 0, f"{p.label}: {self.sink.count()} output beats beyond the expected ones"
        assert not int(self.dut.error.value), f"{p.label}: error raised without an error response"
        # reads: the history 0..pos0-1 once per query (or query tile), nothing else
        ar = [v for j in range(len(self.read_ports)) for v in self.mon.values[f"ar{j}"][before[f"ar{j}"]:]]
        nbytes = sum((v["len"] + 1) * BEAT for v in ar)
        want_bytes = self.history_reads(p) * p.pos0 * kv_position_bytes(hd, fmt)
        assert nbytes == want_bytes, f"{p.label}: read {nbytes} bytes, expected {want_bytes}"
        ranges = expected_read_ranges(b, p.pos0 - 1, hd, fmt)     # positions 0..pos0-1
        for v in ar:
            lo, hi = v["addr"], v["addr"] + (v["len"] + 1) * BEAT
            assert any(s <= lo and hi <= e for s, e in ranges), f"{p.label}: burst [{lo:#x}, {hi:#x}) outside the history"
        # writes: exactly the chunk's rows and (int8) records (when write_kv)
        if p.write_kv:
            k, v_, s = kv_arrays(p.cache, 0, p.pos0 + p.count)
            row, lo, hi = kv_row_bytes(hd, fmt), p.pos0, p.pos0 + p.count
            self.wimage[b.k_base + lo * row:b.k_base + hi * row] = k[lo * row:]
            self.wimage[b.v_base + lo * row:b.v_base + hi * row] = v_[lo * row:]
            if s:
                self.wimage[b.s_base + lo * RECORD:b.s_base + hi * RECORD] = s[lo * RECORD:]
        check_memory(self.wram.read(0, self.mem_size), self.wimage, f"{p.label}: write memory")
        outs = self.mon.moves["o"][before["o"]:]
        cmd_cycle = self.mon.moves["cmd"][-1]
        load_cycles = self.mon.moves["load"][-p.count:]
        row = {"label": p.label, "pos0": p.pos0, "count": p.count, "heads": self.heads,
               "scores": sum(p.pos0 + t + 1 for t in range(p.count)),
               "tiles": sum((p.pos0 + t) // self.tile + 1 for t in range(p.count)),
               "history_bytes": nbytes, "load_cycles": load_cycles[-1] - cmd_cycle + 1,
               "cycles": outs[-1] - load_cycles[-1]}
        self.log.info("%s: pos0 %d count %d: %d scores per head, %d cycles after the load (%d load), "
                      "%d history bytes", p.label, p.pos0, p.count, row["scores"], row["cycles"],
                      row["load_cycles"], nbytes)
        return row


@cocotb.test()
async def prefill_lengths(dut):
    """First chunks of 1, 2, tile, tile+1 and chunk tokens, no stalls."""
    tb = PrefillTB(dut)
    rng = np.random.default_rng(tb.seed)
    tb.connect(seed=tb.seed, pauses=False, stall=0.0)
    await tb.reset()
    rows = [await tb.run(tb.random_pass(rng, f"first{n}", 0, n)) for n in tb.lengths()]
    tb.record("prefill_lengths", rows)


@cocotb.test()
async def prefill_history(dut):
    """Chunks on top of a cache: aligned, straddling a tile, one token after a long history, one
    history row in the top tile; pauses on every AXI channel, stalls on every stream."""
    tb = PrefillTB(dut)
    tile, chunk = tb.tile, tb.chunk
    rng = np.random.default_rng(tb.seed + 1)
    tb.connect(seed=tb.seed + 1, pauses=True, stall=0.3)
    await tb.reset()
    cases = [("aligned", 2 * tile, min(chunk, tile + 3)), ("straddle", tile + 3, min(chunk, tile)),
             ("straddle-short", 5, 2), ("one-after-long", min(tb.capacity - 1, 3 * chunk + 1), 1),
             # one history row in the top tile (a multi-port fill's second K / V piece is empty)
             ("one-row-top", tile + 1, 2),
             ("second-chunk", chunk, chunk)]
    for i, (label, pos0, count) in enumerate(cases):
        if pos0 + count <= tb.capacity:
            await tb.run(tb.random_pass(rng, label, pos0, count, region=i % 2))


@cocotb.test()
async def prefill_gqa(dut):
    """A GQA group of 5 query heads per kv head (2B4T) in ceil(5 / heads) passes over one kv
    head, new query heads each pass; only the first appends the k/v."""
    tb = PrefillTB(dut)
    rng = np.random.default_rng(tb.seed + 2)
    tb.connect(seed=tb.seed + 2, pauses=True, stall=0.2)
    await tb.reset()
    first = tb.random_pass(rng, "group-pass0", tb.tile // 2, min(tb.chunk, tb.tile + 1), region=1)
    await tb.run(first)
    for i in range(1, max(2, -(-5 // tb.heads))):
        q_q, d_q = random_queries(rng, first.count, tb.heads, tb.hd, tb.attn_format)
        await tb.run(Pass(f"group-pass{i}", first.cache, first.pos0, first.count, q_q, d_q, region=1,
                          write_kv=False))


@cocotb.test()
async def prefill_extremes(dut):
    """The attention testbenches' extreme caches (``attention_common.extreme_cases``; in fp32
    ``float_extreme_cases``) as chunks (every token queries with the case's query)."""
    tb = PrefillTB(dut)
    rng = np.random.default_rng(tb.seed + 3)
    tb.connect(seed=tb.seed + 3, pauses=True, stall=0.3)
    await tb.reset()
    for case in extreme_cases(rng, tb.hd, tb.tile, tb.attn_format):
        n = case.pos + 1
        count = min(n, tb.chunk)
        pos0 = n - count
        q_q = np.repeat(np.repeat(case.q_q[None, None], count, 0), tb.heads, 1)
        if case.fp32:
            d_q = None
            cache = golden.FloatKVCache(case.cache.k[:, :n].copy(), case.cache.v[:, :n].copy())
        else:
            d_q = np.full((count, tb.heads), case.d_q, np.float32)
            cache = golden.KVCache(case.cache.k[:, :n].copy(), case.cache.v[:, :n].copy(),
                                   case.cache.k_scale[:, :n].copy(), case.cache.v_scale[:, :n].copy())
        await tb.run(Pass(case.label, cache, pos0, count, q_q, d_q))


@cocotb.test(skip=config_value("bench_contexts") is None)
async def decode_bench(dut):
    """No stalls or pauses: one-token passes (decode steps) at the contexts ``bench_contexts``
    (history 0..ctx-2 from the AxiRamRead, the token at ctx-1): cycles and history bytes."""
    tb = PrefillTB(dut)
    rng = np.random.default_rng(tb.seed + 5)
    tb.connect(seed=tb.seed + 5, pauses=False, stall=0.0)
    await tb.reset()
    rows = [await tb.run(tb.random_pass(rng, f"decode{n}", n - 1, 1)) for n in tb.cfg.get("bench_contexts", [])]
    tb.record("decode_bench", rows)


@cocotb.test(skip=config_value("bench_counts") is None)
async def prefill_bench(dut):
    """No stalls or pauses: cycles of first chunks of ``bench_counts`` tokens."""
    tb = PrefillTB(dut)
    rng = np.random.default_rng(tb.seed + 4)
    tb.connect(seed=tb.seed + 4, pauses=False, stall=0.0)
    await tb.reset()
    t0 = time.monotonic()
    rows = [await tb.run(tb.random_pass(rng, f"bench{n}", 0, n)) for n in tb.cfg.get("bench_counts", [])]
    tb.log.info("prefill_bench: %.1f s", time.monotonic() - t0)
    tb.record("prefill_bench", rows)
