"""cocotb tests of the attention units: :class:`tellme.hw.attention.AttentionCore`,
:class:`tellme.hw.attn_decode.DecodeAttention` (KvReader + core over AXI) and
:class:`tellme.hw.attn_decode.KvWriter`, bit-exact against ``golden.attention_query`` and the KV
cache layout of docs/architecture.md section 6.

Configuration (``tb_config()``): ``kind`` ("core", "decode", "decode_ddr" or "writer"), ``head_dim``, ``tile``,
``dot_lanes``, ``pv_lanes``, ``out_lanes``, ``seed``, ``attn_format`` (``"int8"``, the default, or
``"fp32"``: the unit's cache/query format, the golden ``KVCache`` or ``FloatKVCache`` and the
fp32 score's summation over ``dot_lanes``), optionally ``results`` (a JSON file the
tests write their measurements to: cycles per query, AXI bytes), ``lengths`` (core: sequence
lengths), ``contexts`` (decode), ``long_context``, ``bench_contexts``, ``appends`` (writer).
Tests of another ``kind`` are skipped. Every test builds its testbench object (:class:`CoreTB`,
:class:`DecodeTB`, or :class:`TB` for the writer) from the configuration; the KV-cache layout,
the random and extreme cases and the bit-exact output check it shares with ``tb_attn_prefill``
are in :mod:`.attention_common`.

Core tests (keys driven by the testbench in ``golden.key_tile_order`` order):

- ``core_lengths``: caches of 1, 2, tile, tile+1 and random lengths up to ~300 positions with
  queries at the last and at random positions, no stalls (the cycles per query come from here);
- ``core_stalls``: the same kind of cases with random stalls on query, keys and out;
- ``core_extremes``: q/k/v saturated at +-127 (and at -128), all-equal scores (identical keys,
  zero query, tiny scales), one dominant key in the top tile / an older tile / tile 0 (first
  or last key of its tile), a dominant key so far ahead that every other p_j underflows to 0,
  large values; with random stalls. In fp32 (``attention_common.float_extreme_cases``):
  magnitudes near both ends of the range (products overflowing to +-inf scores, a NaN
  output; products underflowing to subnormals), subnormal inputs, +-0 everywhere, equal
  scores, dominant keys, large terms cancelling in pairs, exact cancellation, large values.

Decode tests (cache laid out in a cocotbext-axi AxiRamRead by :func:`lay_out_kv`, several
(layer, kv head) regions, random pauses on AR and R and stalls on query/kv/out):

- ``decode_contexts``: MHA, contexts 1, 2, 32, 33, 128 (or those of ``contexts``);
- ``decode_gqa``: 4:1 and 5:1 groups (several queries with the same kv command, back to back);
- ``decode_long``: one context >= 1024;
- ``decode_bench``: no pauses, contexts ``bench_contexts``: cycles and DDR bytes for
  ``bench/attention.py``;
- ``decode_ddr_bench`` (``kind`` "decode_ddr"): the same on ``bench/attention.py``'s harness
  DecodeOnDdr (the unit on :class:`tellme.hw.ddr_model.DdrModel`), for each of
  ``ddr_latencies`` at ``ddr_rate`` bytes per cycle.

Every decode query's AR bursts are checked to cover exactly the bytes of positions 0..pos of
its K, V and scale arrays, once each ((pos+1)*(2*hd+16) bytes; fp32: K and V rows of 4*hd
bytes, no scale records, (pos+1)*8*hd bytes), INCR, full width.

Writer test ``writer_appends``: random positions of several (layer, kv head) regions appended
into an AxiRamWrite (pauses on AW, W, B) whose memory starts random; afterwards the whole
memory must equal the start image with exactly the K row, V row and scale record {k_scale,
v_scale, 8 zero bytes} of each append written (fp32: the float32 K and V rows, raw bit
patterns, no record), and ``done`` must pulse once per append.

Cycles are counted in clock periods; "cycles per query" runs from the first key beat taken by
the core to the last output beat taken (both inclusive).
"""

from __future__ import annotations

import random
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ...contract.layouts import KV_RECORD_BYTES as RECORD, PAGE, kv_row_bytes, scale_records
from .. import golden
from ...hw.attention import key_layout, query_layout
from ...hw.kv_reader import kv_command_layout
from ...hw.pipeline import f32_vec
from .attention_common import (BEAT, AttentionTB, Case, check_burst, check_coverage, check_memory, check_output_bits,
                               expected_read_ranges, extreme_cases, f32_bits, f32_row_int, format_cache, format_query,
                               kv_memory, kv_position_bytes, lay_out_kv, length_cases, quantized_rows, random_kv,
                               row_int)
from .axi import ADDRESS_FIELDS, axi_channel, axi_ram_read, axi_ram_write, random_pauses
from .streams import (DoneCounter, HandshakeMonitor, StreamSink, StreamSource, random_pause, stream_channel,
                      struct_fields, with_timeout)
from .testbench import config_value

# ------------------------------------------------------------------------------------------------
# cocotb side
# ------------------------------------------------------------------------------------------------

KV_BASE = 0x20000                 # 4 KiB aligned, not 0


def skip_unless(kind: str) -> bool:
    """Whether a test of ``kind`` is skipped: the configuration's ``kind`` is another one (read
    when the module is imported, for the ``cocotb.test`` decorator)."""
    return config_value("kind", "core") != kind


class TB(AttentionTB):
    """An attention unit under test and this module's configuration (see the module doc; the
    shared keys are :class:`AttentionTB`'s): ``kind``, and ``golden_tile``, the tile size the
    golden model uses (default the design's; only for checking that the harness notices a wrong
    expectation: a different key order rounds differently)."""

    def __init__(self, dut):
        super().__init__(dut)
        self.kind = self.cfg.get("kind", "core")
        self.golden_tile = int(self.cfg.get("golden_tile", self.tile))
        self.q_fields = struct_fields(query_layout(self.hd, self.attn_format))
        self.k_fields = struct_fields(key_layout(self.hd, self.attn_format))
        self.out_fields = struct_fields(f32_vec(self.out_lanes))

    def unit_config(self) -> dict:
        return {"head_dim": self.hd, "tile": self.tile, "dot_lanes": self.dot_lanes, "pv_lanes": self.pv_lanes,
                "out_lanes": self.out_lanes, "attn_format": self.attn_format}

    def golden(self, case: Case) -> np.ndarray:
        """The expected output of ``case``: ``golden.attention_query`` at ``golden_tile`` with
        the unit's ``dot_lanes`` (the fp32 score's beats)."""
        return case.golden(self.golden_tile, self.dot_lanes)

    def query_bound(self, pos: int) -> int:
        """Generous cycle bound for one query (stalls included)."""
        keys = pos + 1
        tiles = pos // self.tile + 1
        return 40 * keys * self.per_key_cycles() + 2000 * tiles + 20_000

    async def collect_output(self, sink, case: Case, expected: np.ndarray, index: int, bound: int) -> None:
        """Receive one query's output beats and compare them bit for bit with ``expected``."""
        got = []
        for b in range(self.out_beats):
            beat = await with_timeout(sink.recv(), self.clock, bound, f"query {index} ({case.label}) output beat {b}")
            if beat["last"] != int(b == self.out_beats - 1):
                raise AssertionError(f"query {index} ({case.label}): beat {b} of {self.out_beats} has "
                                     f"last={beat['last']}")
            got.extend(self.out_words(beat))
        check_output_bits(got, expected, f"query {index} ({case.label}, pos {case.pos}, {case.pos + 1} keys)")


# -- core ------------------------------------------------------------------------------------------

class CoreTB(TB):
    """AttentionCore alone: the testbench drives ``query`` and ``keys`` (in golden.key_tile_order
    order) and checks ``out``."""

    def default_lengths(self, rng: np.random.Generator) -> list[int]:
        lengths = self.cfg.get("lengths")
        if lengths:
            return [int(n) for n in lengths]
        randoms = sorted(int(n) for n in rng.integers(3, 301, size=int(self.cfg.get("random_lengths", 3))))
        return [1, 2, self.tile, self.tile + 1] + randoms

    async def run(self, cases: list[Case], *, stall: float, label: str, rng: random.Random) -> list[dict]:
        """Queue every case (stalls with probability ``stall``, seeded from ``rng``), check the
        outputs; one row of measurements per query."""
        dut, clock = self.dut, self.clock
        total_bound = sum(self.query_bound(c.pos) for c in cases)
        self.watchdog(total_bound + 10_000, label)
        qsrc = StreamSource(dut, "query", clock, fields=self.q_fields, pause=self.stall(stall, rng))
        ksrc = StreamSource(dut, "keys", clock, fields=self.k_fields, pause=self.stall(stall, rng))
        sink = StreamSink(dut, "o", clock, fields=self.out_fields, pause=self.stall(stall, rng))
        mon = HandshakeMonitor(dut, clock, ["keys", "o", "query"])
        await self.reset()
        t0 = time.monotonic()
        expected = [self.golden(c) for c in cases]
        golden_s = time.monotonic() - t0
        key_counts = []
        for c in cases:
            qsrc.send_nowait(c.query_beat())
            beats = c.key_beats(self.tile)
            key_counts.append(len(beats))
            for beat in beats:
                ksrc.send_nowait(beat)
        t0 = time.monotonic()
        for i, (c, e) in enumerate(zip(cases, expected)):
            await self.collect_output(sink, c, e, i, self.query_bound(c.pos))
        sim_s = time.monotonic() - t0
        await ClockCycles(clock, 30)
        assert sink.count() == 0, f"{sink.count()} output beats beyond the expected ones"
        assert ksrc.idle() and qsrc.idle(), "keys or queries left untaken"
        rows, k_first = [], 0
        for i, (c, n) in enumerate(zip(cases, key_counts)):
            first_key = mon.moves["keys"][k_first]
            last_out = mon.moves["o"][(i + 1) * self.out_beats - 1]
            k_first += n
            rows.append({"label": c.label, "pos": c.pos, "keys": n, "tiles": c.pos // self.tile + 1,
                         "cycles": last_out - first_key + 1})
        mon.stop()
        for r in rows:
            self.log.info("%s: %-24s pos %4d: %4d keys, %3d tiles: %6d cycles (first key in .. last out)",
                          label, r["label"], r["pos"], r["keys"], r["tiles"], r["cycles"])
        self.log.info("%s: %d queries bit-exact; golden %.1f s, simulation %.1f s", label, len(cases), golden_s,
                      sim_s)
        return rows


@cocotb.test(skip=skip_unless("core"))
async def core_lengths(dut):
    """Lengths 1, 2, tile, tile+1, random up to 300; queries at the last and random positions;
    no stalls: bit-exact outputs and cycles per query."""
    tb = CoreTB(dut)
    rng = np.random.default_rng(tb.seed * 101 + 1)
    cases = length_cases(rng, tb.hd, tb.tile, tb.default_lengths(rng), attn_format=tb.attn_format)
    rows = await tb.run(cases, stall=0.0, label="core_lengths", rng=random.Random(tb.seed))
    tb.record("core_lengths", {"config": tb.unit_config(), "queries": rows})


@cocotb.test(skip=skip_unless("core"))
async def core_stalls(dut):
    """Random cases with random stalls (probability 0.3) on query, keys and out."""
    tb = CoreTB(dut)
    rng = np.random.default_rng(tb.seed * 101 + 2)
    lengths = [tb.tile + 1] + sorted(int(n) for n in rng.integers(2, 301, size=2))
    cases = length_cases(rng, tb.hd, tb.tile, lengths, attn_format=tb.attn_format)
    rows = await tb.run(cases, stall=0.3, label="core_stalls", rng=random.Random(tb.seed + 2))
    tb.record("core_stalls", {"config": tb.unit_config(), "queries": rows})


@cocotb.test(skip=skip_unless("core"))
async def core_extremes(dut):
    """Saturated values, equal scores, dominant keys, underflowing p_j; random stalls."""
    tb = CoreTB(dut)
    rng = np.random.default_rng(tb.seed * 101 + 3)
    cases = extreme_cases(rng, tb.hd, tb.tile, tb.attn_format)
    rows = await tb.run(cases, stall=0.25, label="core_extremes", rng=random.Random(tb.seed + 3))
    tb.record("core_extremes", {"config": tb.unit_config(), "queries": rows})


# -- decode ----------------------------------------------------------------------------------------

class DecodeTB(TB):
    """A DecodeAttention with its cache in memory (:meth:`connect`): golden caches of ``layers`` x
    ``kv_heads`` regions (capacity positions each, all filled), the gaps between arrays random.

    ``memory="axiram"``: the DUT is the DecodeAttention itself, its AXI port on a cocotbext-axi
    AxiRamRead (``pauses``: random pauses on AR and R). ``memory="ddr"``: the DUT is the
    bench's harness (``bench/attention.py`` DecodeOnDdr: the unit as ``attn`` on a
    :class:`tellme.hw.ddr_model.DdrModel` ``ddr`` with ``cfg_latency``/``cfg_rate`` inputs), the
    image loaded into ``dut.ddr.mem`` through VPI; the AXI port is observed inside ``attn``."""

    def unit_config(self) -> dict:
        return {**super().unit_config(), "data_width": 128}

    def connect(self, *, layers: int, kv_heads: int, capacity: int, seed: int, pauses: bool, stall: float,
                memory: str = "axiram") -> None:
        dut = self.dut
        self.rng = np.random.default_rng(seed)
        prng = random.Random(seed)
        self.bases, mem_size = kv_memory(KV_BASE, layers, kv_heads, capacity, self.hd, self.attn_format)
        image = bytearray(prng.randbytes(mem_size))

        def write(addr, data):
            image[addr:addr + len(data)] = data

        self.caches = {}
        for (layer, head), bases in self.bases.items():
            cache = format_cache(self.rng, capacity, self.hd, self.attn_format)
            lay_out_kv(write, cache, 0, bases, capacity)
            self.caches[layer, head] = cache
        if memory == "axiram":
            self.ram = axi_ram_read(dut, "axi", self.clock, mem_size, image=image)
            if pauses:
                random_pauses([self.ram], 0.3, prng)
            unit = dut
        elif memory == "ddr":
            from .ddr import load_ddr_image
            t0 = time.monotonic()
            load_ddr_image(dut.ddr.mem, bytes(image), 0)
            self.log.info("loaded %d bytes into the DDR model in %.1f s", mem_size, time.monotonic() - t0)
            unit = dut.attn
        else:
            raise ValueError(f"memory must be 'axiram' or 'ddr', not {memory!r}")
        self.error = dut.error
        self.qsrc = StreamSource(dut, "query", self.clock, fields=self.q_fields, pause=self.stall(stall, prng))
        self.ksrc = StreamSource(dut, "kv", self.clock, fields=struct_fields(kv_command_layout(self.addr_width)),
                                 pause=self.stall(stall, prng))
        self.sink = StreamSink(dut, "o", self.clock, fields=self.out_fields, pause=self.stall(stall, prng))
        channels = {"kv": None, "o": None, "ar": axi_channel(unit, "axi", "ar", ADDRESS_FIELDS),
                    "r": axi_channel(unit, "axi", "r")}
        try:                             # the core's keys handshake inside the unit, if visible
            channels["keys"] = stream_channel(unit.core, "keys")
        except AttributeError:
            pass
        self.mon = HandshakeMonitor(dut, self.clock, channels)

    def query(self) -> tuple:
        """A random query in the unit's format: (q_q, d_q) or (q float32, None)."""
        return format_query(self.rng, self.hd, self.attn_format)

    def command(self, layer: int, head: int, pos: int) -> dict:
        b = self.bases[layer, head]
        return {"k_base": b.k_base, "v_base": b.v_base, "s_base": b.s_base, "pos": pos}

    async def run(self, jobs: list[tuple[Case, tuple[int, int]]], label: str) -> list[dict]:
        """Queue every query with its kv command (back to back), check the outputs and each
        query's AXI reads; returns one row of measurements per query."""
        hd = self.hd
        t0 = time.monotonic()
        expected = [self.golden(case) for case, _ in jobs]
        golden_s = time.monotonic() - t0
        bound = sum(self.query_bound(case.pos) for case, _ in jobs)
        watchdog = self.watchdog(bound + 20_000, label)
        for case, (layer, head) in jobs:
            self.qsrc.send_nowait(case.query_beat())
            self.ksrc.send_nowait(self.command(layer, head, case.pos))
        t0 = time.monotonic()
        for i, ((case, _), e) in enumerate(zip(jobs, expected)):
            await self.collect_output(self.sink, case, e, i, self.query_bound(case.pos))
        sim_s = time.monotonic() - t0
        await ClockCycles(self.clock, 30)
        watchdog.cancel()
        assert self.sink.count() == 0, f"{self.sink.count()} output beats beyond the expected ones"
        assert not int(self.error.value), "error raised without an error response"
        mon = self.mon
        ar = list(zip(mon.moves["ar"], mon.values["ar"]))
        cmd_cycles = mon.moves["kv"]
        assert len(cmd_cycles) == len(jobs), f"{len(cmd_cycles)} kv commands taken, {len(jobs)} sent"
        rows = []
        key_index = 0
        for i, (case, (layer, head)) in enumerate(jobs):
            lo_c = cmd_cycles[i]
            hi_c = cmd_cycles[i + 1] if i + 1 < len(jobs) else 1 << 62
            bursts = [(v["addr"], check_burst(v, f"{label}: query {i}")) for cyc, v in ar if lo_c <= cyc < hi_c]
            nbytes = check_coverage(bursts, expected_read_ranges(self.bases[layer, head], case.pos, hd,
                                                                 self.attn_format),
                                    f"{label}: query {i} ({case.label}, pos {case.pos})")
            assert nbytes == (case.pos + 1) * kv_position_bytes(hd, self.attn_format)
            last_out = mon.moves["o"][(i + 1) * self.out_beats - 1]
            row = {"label": case.label, "layer": layer, "kv_head": head, "pos": case.pos,
                   "keys": case.pos + 1, "tiles": case.pos // self.tile + 1, "bursts": len(bursts),
                   "bytes": nbytes, "cmd_to_last_out": last_out - lo_c + 1}
            if "keys" in mon.moves:
                first_key = mon.moves["keys"][key_index]
                row["cycles"] = last_out - first_key + 1
                key_index += case.pos + 1
            rows.append(row)
        total_r = len(mon.moves["r"])
        assert total_r * BEAT == sum(r["bytes"] for r in rows), "R beats differ from the AR bursts"
        for r in rows:
            dut_cycles = r.get("cycles", "-")
            self.log.info("%s: %-12s L%d H%d pos %4d: %3d bursts %7d B, %6s cycles first key .. last out, "
                          "%6d cycles command .. last out", label, r["label"], r["layer"], r["kv_head"],
                          r["pos"], r["bursts"], r["bytes"], dut_cycles, r["cmd_to_last_out"])
        self.log.info("%s: %d queries bit-exact, reads exact; golden %.1f s, simulation %.1f s",
                      label, len(jobs), golden_s, sim_s)
        return rows

    async def bench_contexts(self, contexts: list[int], label: str) -> list[dict]:
        """One query at a time (no overlap between queries) per context, on region (0, 0)."""
        rows = []
        for ctx in contexts:
            q_q, d_q = self.query()
            self.mon.clear()
            rows += await self.run([(Case(f"ctx{ctx}", q_q, d_q, self.caches[0, 0], ctx - 1), (0, 0))],
                                   f"{label} ctx {ctx}")
        return rows


@cocotb.test(skip=skip_unless("decode"))
async def decode_contexts(dut):
    """MHA: contexts 1, 2, 32, 33, 128 (plus ``contexts``), each on its own (layer, kv head),
    random pauses on AR/R and stalls on query/kv/out."""
    tb = DecodeTB(dut)
    contexts = [int(c) for c in tb.cfg.get("contexts", [1, 2, 32, 33, 128])]
    tb.connect(layers=2, kv_heads=2, capacity=max(contexts), seed=tb.seed * 7 + 1, pauses=True, stall=0.2)
    await tb.reset()
    regions = list(tb.bases)
    jobs = []
    for i, ctx in enumerate(contexts):
        layer, head = regions[i % len(regions)]
        q_q, d_q = tb.query()
        jobs.append((Case(f"ctx{ctx}", q_q, d_q, tb.caches[layer, head], ctx - 1), (layer, head)))
    rows = await tb.run(jobs, "decode_contexts")
    tb.record("decode_contexts", {"config": tb.unit_config(), "queries": rows})


@cocotb.test(skip=skip_unless("decode"))
async def decode_gqa(dut):
    """GQA 4:1 and 5:1: groups of queries issuing the same kv command back to back (and an
    MHA query in between on another region), random pauses and stalls."""
    tb = DecodeTB(dut)
    tb.connect(layers=1, kv_heads=2, capacity=100, seed=tb.seed * 7 + 2, pauses=True, stall=0.2)
    await tb.reset()
    jobs = []
    for group, (layer, head), pos in ((4, (0, 1), 70), (5, (0, 0), 45), (4, (0, 0), 99)):
        for h in range(group):
            q_q, d_q = tb.query()
            jobs.append((Case(f"gqa{group}:1-q{h}", q_q, d_q, tb.caches[layer, head], pos), (layer, head)))
    rows = await tb.run(jobs, "decode_gqa")
    tb.record("decode_gqa", {"config": tb.unit_config(), "queries": rows})


@cocotb.test(skip=skip_unless("decode"))
async def decode_long(dut):
    """One long context (``long_context``, default 1024) with pauses on AR/R."""
    tb = DecodeTB(dut)
    ctx = int(tb.cfg.get("long_context", 1024))
    tb.connect(layers=1, kv_heads=1, capacity=ctx, seed=tb.seed * 7 + 3, pauses=True, stall=0.1)
    await tb.reset()
    q_q, d_q = tb.query()
    t0 = time.monotonic()
    rows = await tb.run([(Case(f"ctx{ctx}", q_q, d_q, tb.caches[0, 0], ctx - 1), (0, 0))], "decode_long")
    rows[0]["wall_seconds"] = round(time.monotonic() - t0, 1)
    tb.record("decode_long", {"config": tb.unit_config(), "queries": rows})


@cocotb.test(skip=skip_unless("decode"))
async def decode_bench(dut):
    """No pauses anywhere (AxiRamRead): cycles per query and DDR bytes at ``bench_contexts``."""
    tb = DecodeTB(dut)
    contexts = [int(c) for c in tb.cfg.get("bench_contexts", [128, 512, 1024])]
    tb.connect(layers=1, kv_heads=1, capacity=max(contexts), seed=tb.seed * 7 + 4, pauses=False, stall=0.0)
    await tb.reset()
    rows = await tb.bench_contexts(contexts, "decode_bench")
    tb.record("decode_bench", {"config": tb.unit_config(), "memory": "AxiRamRead, no pauses", "queries": rows})


@cocotb.test(skip=skip_unless("decode_ddr"))
async def decode_ddr_bench(dut):
    """The unit on the DDR model (bench/attention.py DecodeOnDdr): for each latency in
    ``ddr_latencies`` (cycles, AR to first R beat) at ``ddr_rate`` bytes per cycle, cycles per
    query at ``bench_contexts``, outputs and reads checked as everywhere else."""
    from ...hw.ddr_model import rate_fixed

    tb = DecodeTB(dut)
    contexts = [int(c) for c in tb.cfg.get("bench_contexts", [128, 512, 1024])]
    latencies = [int(x) for x in tb.cfg.get("ddr_latencies", [40])]
    rate = tb.cfg.get("ddr_rate", 64)
    tb.connect(layers=1, kv_heads=1, capacity=max(contexts), seed=tb.seed * 7 + 4, pauses=False, stall=0.0,
               memory="ddr")
    dut.cfg_latency.value = latencies[0]
    dut.cfg_rate.value = rate_fixed(rate)
    await tb.reset()
    result = {}
    for latency in latencies:
        dut.cfg_latency.value = latency
        await ClockCycles(tb.clock, 5)
        result[str(latency)] = await tb.bench_contexts(contexts, f"decode_ddr_bench latency {latency}")
    tb.record("decode_ddr_bench", {"config": tb.unit_config(), "ddr_rate_bytes_per_cycle": rate,
                                   "latencies": result})


# -- writer ----------------------------------------------------------------------------------------

@cocotb.test(skip=skip_unless("writer"))
async def writer_appends(dut):
    """Random appends (positions at 0, at the capacity's end, across 4 KiB boundaries) into an
    AxiRamWrite starting random, pauses on AW/W/B and stalls on append: exactly the K row, V
    row and scale record of each append change (fp32: the float32 K and V rows, some with
    subnormal, +-0, inf and NaN bit patterns), ``done`` pulses once per append."""
    from ...contract.layouts import kv_arrays
    from ...hw.attn_decode import kv_append_layout

    tb = TB(dut)
    hd, clock, fmt = tb.hd, tb.clock, tb.attn_format
    fp32 = fmt == "fp32"
    row = kv_row_bytes(hd, fmt)
    prng = random.Random(tb.seed * 13 + 5)
    rng = np.random.default_rng(tb.seed * 13 + 5)
    capacity, layers, kv_heads = 300, 2, 2
    bases, mem_size = kv_memory(KV_BASE, layers, kv_heads, capacity, hd, fmt)
    image = bytearray(prng.randbytes(mem_size))
    ram = axi_ram_write(dut, "axi", clock, mem_size, image=image)
    random_pauses([ram], 0.3, prng)
    fields = struct_fields(kv_append_layout(hd, tb.addr_width, fmt))
    src = StreamSource(dut, "append", clock, fields=fields, pause=random_pause(0.3, prng.randrange(1 << 30)))
    mon = HandshakeMonitor(dut, clock, {"append": None, "aw": axi_channel(dut, "axi", "aw", ADDRESS_FIELDS),
                                        "b": axi_channel(dut, "axi", "b")})
    # positions: 0, capacity-1, rows across a 4 KiB boundary, random ones
    crossing = [p for p in range(capacity) if (p * row) % PAGE > PAGE - row]
    positions = [0, capacity - 1] + crossing[:3] + [int(p) for p in rng.integers(0, capacity,
                                                                               size=int(tb.cfg.get("appends", 30)))]
    specials = np.array([0.0, -0.0, 1e-40, -1e-45, np.inf, -np.inf, np.nan, 3.4e38], np.float32)
    jobs = []
    for pos in positions:
        layer, head = prng.randrange(layers), prng.randrange(kv_heads)
        k, v = random_kv(rng, 1, hd)
        b = bases[layer, head]
        if fp32:
            for x in (k, v):                # the writer moves bit patterns: specials in some lanes
                mask = rng.random(hd) < 0.2
                x[0, mask] = rng.choice(specials, size=int(mask.sum()))
            x_bits = np.frombuffer(rng.bytes(4 * hd), np.float32)
            if rng.random() < 0.2:          # any bit pattern, NaN payloads included
                k = x_bits[None, :].copy()
            cache = golden.FloatKVCache.empty(1, 1, hd)
            cache.write(0, k[:, None, :], v[:, None, :])
            k_bytes, v_bytes, _ = kv_arrays(cache, 0, 1)
            payload = {"k": f32_row_int(k[0]), "v": f32_row_int(v[0])}
            jobs.append((b, pos, payload, k_bytes, v_bytes, b""))
        else:
            kq, kd = quantized_rows(k)
            vq, vd = quantized_rows(v)
            payload = {"k": row_int(kq[0]), "v": row_int(vq[0]), "k_scale": f32_bits(kd[0]),
                       "v_scale": f32_bits(vd[0])}
            jobs.append((b, pos, payload, kq[0].astype(np.int8).tobytes(), vq[0].astype(np.int8).tobytes(),
                         scale_records([kd[0]], [vd[0]])))
    await tb.reset()
    done = DoneCounter(clock, dut.done, error=dut.error, what="KvWriter")
    per_append = 400 + 8 * row // BEAT
    tb.watchdog(per_append * len(jobs) + 10_000, "writer_appends")
    for b, pos, payload, k_bytes, v_bytes, record in jobs:
        src.send_nowait({"k_base": b.k_base, "v_base": b.v_base, "s_base": b.s_base, "pos": pos, **payload})
        # the golden layout (later appends to the same position overwrite earlier ones)
        image[b.k_base + pos * row: b.k_base + (pos + 1) * row] = k_bytes
        image[b.v_base + pos * row: b.v_base + (pos + 1) * row] = v_bytes
        if record:
            image[b.s_base + pos * RECORD: b.s_base + (pos + 1) * RECORD] = record
    for _ in range(len(jobs) * per_append // 50):
        await ClockCycles(clock, 50)
        if len(done.cycles) >= len(jobs) and src.idle():
            break
    await ClockCycles(clock, 50)
    done.stop()
    mon.stop()
    assert len(done.cycles) == len(jobs), f"done pulsed {len(done.cycles)} times for {len(jobs)} appends"
    assert len(mon.moves["b"]) == len(mon.moves["aw"]), \
        f"{len(mon.moves['b'])} write responses for {len(mon.moves['aw'])} AW bursts"
    # every burst INCR, full width, inside one of the appended K rows / V rows / scale records
    targets = set()
    for b, pos, *_ in jobs:
        targets.update([(b.k_base + pos * row, row), (b.v_base + pos * row, row)])
        if not fp32:
            targets.add((b.s_base + pos * RECORD, RECORD))
    for v in mon.values["aw"]:
        start, nbytes = v["addr"], check_burst(v, "AW")
        if not any(t <= start and start + nbytes <= t + n for t, n in targets):
            raise AssertionError(f"AW burst [{start:#x}, {start + nbytes:#x}) outside every appended row/record")
    check_memory(ram.read(0, mem_size), image, "writer_appends")
    # per-append cycles: append taken .. done
    takes = mon.moves["append"]
    per = [d - t + 1 for t, d in zip(takes, done.cycles)]
    tb.log.info("writer_appends: %d appends (%d across a 4 KiB boundary) exact; %d AW bursts; cycles per "
                "append (taken .. done) min %d mean %.1f max %d", len(jobs), len(crossing[:3]), len(mon.moves["aw"]),
                min(per), sum(per) / len(per), max(per))
    tb.record("writer_appends", {"config": {"head_dim": hd, "attn_format": fmt}, "appends": len(jobs),
                                 "aw_bursts": len(mon.moves["aw"]), "b_responses": len(mon.moves["b"]),
                                 "cycles_per_append": {"min": min(per), "mean": sum(per) / len(per), "max": max(per)}})
