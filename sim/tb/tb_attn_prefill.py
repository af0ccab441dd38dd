"""cocotb tests of :class:`tellme.hw.attn_prefill.PrefillAttention`, bit-exact against
``golden.attention_query`` for every (token, head) of a chunk, with the KV-cache history in a
cocotbext-axi AxiRamRead and the cache appends checked in an AxiRamWrite (layout of
docs/architecture.md section 6, shared with ``tb_attention``).

Configuration (``tb_config()``): ``head_dim``, ``tile``, ``chunk``, ``heads``, ``out_lanes``,
``seed``, optionally ``results`` (a JSON file for cycles per pass), ``bench_counts`` (token
counts of ``prefill_bench``).

- ``prefill_lengths``: first chunks (pos0 = 0) of 1, 2, tile, tile+1 and ``chunk`` tokens, no
  stalls (cycles per pass recorded);
- ``prefill_history``: chunks on top of a cache (pos0 > 0): aligned to a tile, straddling a
  tile (pos0 % tile != 0), a one-token chunk after a long history, with random pauses on
  AR/R/AW/W/B and stalls on cmd, load and out; every query's history bytes are counted;
- ``prefill_gqa``: a 5:1 GQA group in ceil(5 / heads) passes over one kv head with different
  query heads (only the first appends the k/v: ``write_kv``), with stalls;
- ``prefill_extremes``: ``tb_attention.extreme_cases`` (saturated int8, equal scores, zero
  query, dominant keys in the diagonal / older tiles, underflowing p_j, large values) as
  chunks, with stalls;
- ``prefill_bench``: no stalls or pauses, first chunks of ``bench_counts`` tokens: cycles.

Every pass checks: outputs in order (tokens descending, heads ascending, ``last`` per
(token, head)), bit-exact; AXI reads = count x pos0 x (2 hd + 16) bytes, all inside the
history of the pass's kv head; the write memory afterwards equals its start image with exactly
the chunk's K rows, V rows and scale records written (or untouched without ``write_kv``).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ...hw.attn_prefill import prefill_command_layout, prefill_load_layout, prefill_out_layout
from .. import golden
from . import tb_config
from .streams import (StreamSink, StreamSource, random_pause, reset_dut, start_clock, start_watchdog,
                      struct_fields, with_timeout)
from .tb_attention import (BEAT, PAGE, RECORD, Handshakes, check_output_bits, extreme_cases, f32_bits, kv_arrays,
                           kv_cache_map, lay_out_kv, out_words, page_up, quantized_rows, random_kv, random_query,
                           record, row_int)

CFG = tb_config()
HD = int(CFG.get("head_dim", 64))
TILE = int(CFG.get("tile", 8))
CHUNK = int(CFG.get("chunk", 24))
HEADS = int(CFG.get("heads", 1))
OUT_LANES = int(CFG.get("out_lanes", 8))
DOT_LANES = int(CFG.get("dot_lanes", 16))
PV_LANES = int(CFG.get("pv_lanes", 16))
SEED = int(CFG.get("seed", 1))
ADDR_WIDTH = 40
OUT_BEATS = HD // OUT_LANES
PERIOD_NS = 10
KV_BASE = 0x40000
CAPACITY = int(CFG.get("capacity", 4 * CHUNK + 2 * TILE))
CMD_FIELDS = struct_fields(prefill_command_layout(CHUNK, ADDR_WIDTH))
LOAD_FIELDS = struct_fields(prefill_load_layout(HD, HEADS))
OUT_FIELDS = struct_fields(prefill_out_layout(OUT_LANES, HEADS, CHUNK))


@dataclass
class Pass:
    """One chunk of one kv head: history positions 0..pos0-1 and the chunk pos0..pos0+count-1
    in ``cache`` (one kv head, golden layout), queries (count, HEADS) int8 + d_q."""
    label: str
    cache: golden.KVCache
    pos0: int
    count: int
    q_q: np.ndarray
    d_q: np.ndarray
    region: int = 0
    write_kv: bool = True

    def expected(self) -> list[tuple[int, int, np.ndarray]]:
        """(token, head, output) in the unit's output order."""
        return [(t, h, golden.attention_query(self.q_q[t, h], self.d_q[t, h], self.cache, 0, self.pos0 + t, TILE, HD))
                for t in range(self.count - 1, -1, -1) for h in range(HEADS)]

    def load_beats(self) -> list[dict]:
        c, beats = self.cache, []
        width = HD * 8 + 32
        for t in range(self.count):
            p = self.pos0 + t
            q = 0
            for h in range(HEADS):
                q |= (row_int(self.q_q[t, h]) | f32_bits(self.d_q[t, h]) << (HD * 8)) << (h * width)
            beats.append({"q": q, "k": row_int(c.k[0, p]), "k_scale": f32_bits(c.k_scale[0, p]),
                          "v": row_int(c.v[0, p]), "v_scale": f32_bits(c.v_scale[0, p])})
        return beats


def random_pass(rng: np.random.Generator, label: str, pos0: int, count: int, **kw) -> Pass:
    n = pos0 + count
    cache = golden.KVCache.empty(1, n, HD)
    k, v = random_kv(rng, n, HD)
    kq, kd = quantized_rows(k)
    vq, vd = quantized_rows(v)
    cache.k[0], cache.v[0], cache.k_scale[0], cache.v_scale[0] = kq, vq, kd, vd
    qs = [random_query(rng, HD) for _ in range(count * HEADS)]
    q_q = np.array([q for q, _ in qs], np.int8).reshape(count, HEADS, HD)
    d_q = np.array([d for _, d in qs], np.float32).reshape(count, HEADS)
    return Pass(label, cache, pos0, count, q_q, d_q, **kw)


def pass_bound(p: Pass) -> int:
    """Generous cycle bound for one pass (stalls included)."""
    keys = sum(p.pos0 + t + 1 for t in range(p.count))
    tiles = sum((p.pos0 + t) // TILE + 1 for t in range(p.count))
    per_key = HD // DOT_LANES + max(5, HD // PV_LANES) + 4
    return 40 * (keys * per_key + 300 * tiles + p.count * (200 + 2 * HD) * HEADS) + 20_000


class PrefillBench:
    """The unit with its history in an AxiRamRead (two kv-head regions, random gaps) and its
    appends going to an AxiRamWrite that starts random."""

    def __init__(self, dut, *, seed: int, pauses: bool, stall: float):
        from cocotbext.axi import AxiRamRead, AxiRamWrite, AxiReadBus, AxiWriteBus

        self.dut = dut
        self.prng = random.Random(seed)
        self.clock = start_clock(dut, PERIOD_NS)
        self.bases, size = kv_cache_map(KV_BASE, 1, 2, CAPACITY, HD)
        self.mem_size = page_up(KV_BASE + size + PAGE)
        self.rram = AxiRamRead(AxiReadBus.from_prefix(dut, "axi_read_"), self.clock, dut.rst, size=self.mem_size)
        self.wram = AxiRamWrite(AxiWriteBus.from_prefix(dut, "axi_write_"), self.clock, dut.rst, size=self.mem_size)
        for ram in (self.rram, self.wram):
            ram.log.setLevel("WARNING")
        self.wimage = bytearray(self.prng.randbytes(self.mem_size))
        self.wram.write(0, bytes(self.wimage))
        if pauses:
            for ch in (self.rram.ar_channel, self.rram.r_channel, self.wram.aw_channel, self.wram.w_channel,
                       self.wram.b_channel):
                ch.set_pause_generator(random_pause(0.3, self.prng.randrange(1 << 30)))
        pause = (lambda: random_pause(stall, self.prng.randrange(1 << 30))) if stall else (lambda: None)
        self.csrc = StreamSource(dut, "cmd", self.clock, fields=CMD_FIELDS, pause=pause())
        self.lsrc = StreamSource(dut, "load", self.clock, fields=LOAD_FIELDS, pause=pause())
        self.sink = StreamSink(dut, "o", self.clock, fields=OUT_FIELDS, pause=pause())
        self.mon = Handshakes(self.clock, {
            "cmd": (dut.cmd__valid, dut.cmd__ready, None),
            "load": (dut.load__valid, dut.load__ready, None),
            "o": (dut.o__valid, dut.o__ready, None),
            "ar": (dut.axi_read__arvalid, dut.axi_read__arready,
                   {"addr": dut.axi_read__araddr, "len": dut.axi_read__arlen}),
        })

    async def reset(self):
        await reset_dut(self.dut, self.clock)

    async def run(self, p: Pass) -> dict:
        """Lay out p's history, run the pass, check outputs, reads and writes; return cycles."""
        b = self.bases[0, p.region]
        if p.pos0:
            lay_out_kv(self.rram.write, p.cache, 0, b, p.pos0)
        expected = p.expected()
        ar_before = len(self.mon.cycles["ar"])
        out_before = len(self.mon.cycles["o"])
        bound = pass_bound(p)
        watchdog = start_watchdog(self.clock, bound, f"pass {p.label}")
        self.csrc.send_nowait({"k_base": b.k_base, "v_base": b.v_base, "s_base": b.s_base, "pos0": p.pos0,
                               "count": p.count, "write_kv": int(p.write_kv)})
        for beat in p.load_beats():
            self.lsrc.send_nowait(beat)
        for t, h, want in expected:
            got = []
            for i in range(OUT_BEATS):
                beat = await with_timeout(self.sink.recv(), self.clock, bound,
                                          f"{p.label}: token {t} head {h} beat {i}")
                if (beat["token"], beat["head"], beat["last"]) != (t, h, int(i == OUT_BEATS - 1)):
                    raise AssertionError(f"{p.label}: beat {i} of token {t} head {h} came tagged token "
                                         f"{beat['token']} head {beat['head']} last {beat['last']}")
                got.extend(out_words(beat))
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
        # reads: each query reads the history 0..pos0-1 once, nothing else
        ar = self.mon.values["ar"][ar_before:]
        nbytes = sum((v["len"] + 1) * BEAT for v in ar)
        want_bytes = p.count * p.pos0 * (2 * HD + RECORD)
        assert nbytes == want_bytes, f"{p.label}: read {nbytes} bytes, expected {want_bytes}"
        ranges = [(b.k_base, b.k_base + p.pos0 * HD), (b.v_base, b.v_base + p.pos0 * HD),
                  (b.s_base, b.s_base + p.pos0 * RECORD)]
        for v in ar:
            lo, hi = v["addr"], v["addr"] + (v["len"] + 1) * BEAT
            assert any(s <= lo and hi <= e for s, e in ranges), f"{p.label}: burst [{lo:#x}, {hi:#x}) outside the history"
        # writes: exactly the chunk's rows and records (when write_kv)
        if p.write_kv:
            k, v_, s = kv_arrays(p.cache, 0, p.pos0 + p.count)
            self.wimage[b.k_base + p.pos0 * HD:b.k_base + (p.pos0 + p.count) * HD] = k[p.pos0 * HD:]
            self.wimage[b.v_base + p.pos0 * HD:b.v_base + (p.pos0 + p.count) * HD] = v_[p.pos0 * HD:]
            self.wimage[b.s_base + p.pos0 * RECORD:b.s_base + (p.pos0 + p.count) * RECORD] = s[p.pos0 * RECORD:]
        mem = self.wram.read(0, self.mem_size)
        if mem != bytes(self.wimage):
            diff = next(i for i in range(self.mem_size) if mem[i] != self.wimage[i])
            raise AssertionError(f"{p.label}: write memory differs from the expected cache first at {diff:#x}")
        outs = self.mon.cycles["o"][out_before:]
        cmd_cycle = self.mon.cycles["cmd"][-1]
        load_cycles = self.mon.cycles["load"][-p.count:]
        row = {"label": p.label, "pos0": p.pos0, "count": p.count, "heads": HEADS,
               "scores": sum(p.pos0 + t + 1 for t in range(p.count)),
               "tiles": sum((p.pos0 + t) // TILE + 1 for t in range(p.count)),
               "history_bytes": nbytes, "load_cycles": load_cycles[-1] - cmd_cycle + 1,
               "cycles": outs[-1] - load_cycles[-1]}
        self.dut._log.info("%s: pos0 %d count %d: %d scores per head, %d cycles after the load (%d load), "
                           "%d history bytes", p.label, p.pos0, p.count, row["scores"], row["cycles"],
                           row["load_cycles"], nbytes)
        return row


def lengths() -> list[int]:
    return sorted({n for n in (1, 2, TILE, TILE + 1, CHUNK) if n <= CHUNK})


@cocotb.test()
async def prefill_lengths(dut):
    """First chunks of 1, 2, tile, tile+1 and chunk tokens, no stalls."""
    rng = np.random.default_rng(SEED)
    bench = PrefillBench(dut, seed=SEED, pauses=False, stall=0.0)
    await bench.reset()
    rows = [await bench.run(random_pass(rng, f"first{n}", 0, n)) for n in lengths()]
    record("prefill_lengths", rows)


@cocotb.test()
async def prefill_history(dut):
    """Chunks on top of a cache: aligned, straddling a tile, one token after a long history;
    pauses on every AXI channel, stalls on every stream."""
    rng = np.random.default_rng(SEED + 1)
    bench = PrefillBench(dut, seed=SEED + 1, pauses=True, stall=0.3)
    await bench.reset()
    cases = [("aligned", 2 * TILE, min(CHUNK, TILE + 3)), ("straddle", TILE + 3, min(CHUNK, TILE)),
             ("straddle-short", 5, 2), ("one-after-long", min(CAPACITY - 1, 3 * CHUNK + 1), 1),
             ("second-chunk", CHUNK, CHUNK)]
    for i, (label, pos0, count) in enumerate(cases):
        if pos0 + count <= CAPACITY:
            await bench.run(random_pass(rng, label, pos0, count, region=i % 2))


@cocotb.test()
async def prefill_gqa(dut):
    """A GQA group of 5 query heads per kv head (2B4T) in ceil(5 / heads) passes over one kv
    head, new query heads each pass; only the first appends the k/v."""
    rng = np.random.default_rng(SEED + 2)
    bench = PrefillBench(dut, seed=SEED + 2, pauses=True, stall=0.2)
    await bench.reset()
    first = random_pass(rng, "group-pass0", TILE // 2, min(CHUNK, TILE + 1), region=1)
    await bench.run(first)
    for i in range(1, max(2, -(-5 // HEADS))):
        qs = [random_query(rng, HD) for _ in range(first.count * HEADS)]
        q_q = np.array([q for q, _ in qs], np.int8).reshape(first.count, HEADS, HD)
        d_q = np.array([d for _, d in qs], np.float32).reshape(first.count, HEADS)
        await bench.run(Pass(f"group-pass{i}", first.cache, first.pos0, first.count, q_q, d_q, region=1,
                             write_kv=False))


@cocotb.test()
async def prefill_extremes(dut):
    """tb_attention's extreme caches as chunks (every token queries with the case's query)."""
    rng = np.random.default_rng(SEED + 3)
    bench = PrefillBench(dut, seed=SEED + 3, pauses=True, stall=0.3)
    await bench.reset()
    for case in extreme_cases(rng, HD, TILE):
        n = case.pos + 1
        count = min(n, CHUNK)
        pos0 = n - count
        q_q = np.repeat(np.repeat(case.q_q[None, None], count, 0), HEADS, 1)
        d_q = np.full((count, HEADS), case.d_q, np.float32)
        cache = golden.KVCache(case.cache.k[:, :n].copy(), case.cache.v[:, :n].copy(),
                               case.cache.k_scale[:, :n].copy(), case.cache.v_scale[:, :n].copy())
        await bench.run(Pass(case.label, cache, pos0, count, q_q, d_q))


@cocotb.test(skip="bench_counts" not in CFG)
async def prefill_bench(dut):
    """No stalls or pauses: cycles of first chunks of ``bench_counts`` tokens."""
    rng = np.random.default_rng(SEED + 4)
    bench = PrefillBench(dut, seed=SEED + 4, pauses=False, stall=0.0)
    await bench.reset()
    t0 = time.monotonic()
    rows = [await bench.run(random_pass(rng, f"bench{n}", 0, n)) for n in CFG.get("bench_counts", [])]
    dut._log.info("prefill_bench: %.1f s", time.monotonic() - t0)
    record("prefill_bench", rows)
