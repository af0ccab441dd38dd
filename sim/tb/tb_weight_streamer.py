"""cocotb tests of :class:`tellme.hw.weight_streamer.WeightStreamer`: projection commands in, TLMM
lane words out, with every AXI read port served by a cocotbext-axi ``AxiRamRead`` model.

All port models share one sparse memory holding the real DDR image bytes of the projections
(``image.encode_projection``: ``ports`` sub-streams, each starting on a 4 KiB boundary), placed
at 4 KiB-aligned addresses above 32 GiB (the address bits above 32 are used). Random pause
generators act on every AR and R channel and on ``codes``.

Checks, per projection command (``base[i]`` = the address of port i's sub-stream, ``tile_rows``
from ``gen.tiling.tile_projection`` with the bank depth under test):

* ``codes`` carries, tile by tile and pass by pass, the golden lane words
  (``formats.tlmm_weight_stream`` of ``formats.tlmm_encode`` of the weights) of the tile's rows for
  all blocks in (block, row) order, each tile repeated ``passes`` times, lane p in element p;
* a monitor on every AR and R channel records the bursts: on port i the beat addresses read for
  one command are exactly the port's sub-stream (``ProjectionTiling.port_runs`` of each tile, in
  order), so the bytes per port equal ``blocks * rows * subword_bytes`` and no byte is read twice,
  whatever ``passes`` is; every burst is INCR, full-width, within one 4 KiB page, and the R
  channel returns exactly the beats asked for;
* ``error`` stays low.

Configuration (``run_cocotb(parameters=...)``):

``group``, ``lanes``, ``ports``, ``beat_bytes``, ``depth``, ``addr_width``
    The streamer's geometry and bank depth.
``fields``
    ``{"proj": struct_fields(projection_layout(ports, addr_width))}``.
``projections``
    List of ``[rows, k]`` shapes; random ternary weights are drawn for each.
``runs``
    (``test_stream``) list of runs ``{"passes": p, "order": [projection indices],
    "stalls": [p_ar, p_r, p_codes]}``; a run's commands are queued back to back.
"""

from __future__ import annotations

import itertools
import logging
import types
from collections import Counter

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiRamRead, AxiReadBus

from ...contract import formats
from ...contract.formats import code_bits
from ...contract.layouts import ImageFormat
from ...gen import image
from ...gen.tiling import tile_projection
from ...weights import TernaryTensor
from . import tb_config
from .axi import set_pauses
from .streams import (CycleTimeout, StreamSink, StreamSource, random_pause, reset_dut,
                      start_clock, start_watchdog, with_timeout)

RESET_CYCLES = 2
IMAGE_BASE = 0x8_0000_0000      # 32 GiB: addresses need more than 32 bits of the 40-bit port
PROJECTION_GAP = 0x3000         # untouched pages between projections


class Projection:
    """One projection's weights, image bytes, tiling and golden lane words."""

    def __init__(self, cfg: dict, rows: int, k: int, rng: np.random.Generator, base: int):
        g, lanes, ports = cfg["group"], cfg["lanes"], cfg["ports"]
        self.rows, self.k = rows, k
        zero = float(rng.choice([0.0, 0.3, 0.8]))
        self.trits = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(rows, k),
                                p=[(1 - zero) / 2, zero, (1 - zero) / 2])
        fmt = ImageFormat(g, lanes, ports, "int8", 128)
        self.raw = image.encode_projection(TernaryTensor(self.trits, np.float32(1.0)), fmt)
        self.stride = image.projection_port_stride((rows, k), fmt)
        assert len(self.raw) == ports * self.stride
        self.bases = [base + p * self.stride for p in range(ports)]
        # The tiling the controller uses (gen.tiling), for a bank of ``depth`` lane words.
        geometry = types.SimpleNamespace(group=g, lanes=lanes, entries_per_bank=cfg["depth"],
                                         subword_bytes=fmt.subword_bytes)
        self.tiling = tile_projection(f"{rows}x{k}", rows, k, geometry)
        self.subword_bytes = fmt.subword_bytes
        assert self.subword_bytes % cfg["beat_bytes"] == 0
        codes = formats.tlmm_encode(self.trits, g)
        stream = formats.tlmm_weight_stream(codes, lanes)                  # (B, N, P)
        assert stream.shape[0] == self.tiling.blocks
        bits = code_bits(g)
        word_bytes = -(-lanes * bits // 8)
        packed = formats.pack_codes(stream, bits, word_bytes)               # (B, N, bytes)
        self.words = [[int.from_bytes(packed[b, r].tobytes(), "little") for r in range(rows)]
                      for b in range(self.tiling.blocks)]

    @property
    def end(self) -> int:
        return self.bases[0] + len(self.raw)

    def command(self, cfg: dict, passes: int) -> dict:
        aw = cfg["addr_width"]
        base = 0
        for p, a in enumerate(self.bases):
            base |= a << (p * aw)
        return {"base": base, "blocks": self.tiling.blocks, "rows": self.rows,
                "tile_rows": self.tiling.tile_rows, "passes": passes}

    def expected_words(self, passes: int):
        """(word, (tile, pass, block, row)) in the order the lanes must see them."""
        for t, tile in enumerate(self.tiling.tiles):
            for p in range(passes):
                for b in range(self.tiling.blocks):
                    for r in range(tile.row0, tile.row0 + tile.rows):
                        yield self.words[b][r], (t, p, b, r)

    def expected_beats(self, port: int, beat_bytes: int) -> list[int]:
        """Beat addresses port ``port`` must read for one command, in order."""
        beats = []
        for tile in self.tiling.tiles:
            for offset, size in self.tiling.port_runs(tile):
                beats += range(self.bases[port] + offset, self.bases[port] + offset + size, beat_bytes)
        assert len(beats) * beat_bytes == self.tiling.bytes_per_port
        return beats


class AxiPortMonitor:
    """Records every AR and R handshake of one port; checks the burst rules as they happen and
    counts the cycles an R beat waits (``r_waits``: RVALID without RREADY), which a weight beat
    must never do (it would hold every other reader of a shared HP port)."""

    def __init__(self, dut, clock, prefix: str, beat_bytes: int):
        self.dut, self.clock, self.beat_bytes = dut, clock, beat_bytes
        self.sig = {name: getattr(dut, f"{prefix}_{name}") for name in
                    ("arvalid", "arready", "araddr", "arlen", "arsize", "arburst", "rvalid", "rready",
                     "rlast")}
        self.beat_addrs: list[int] = []   # every beat address requested, in AR order
        self.bursts = 0
        self.r_beats = 0
        self.r_bursts = 0
        self.r_waits = 0
        self.errors: list[str] = []
        self.task = cocotb.start_soon(self._run())

    async def _run(self):
        s = self.sig
        shift = self.beat_bytes.bit_length() - 1
        edge = RisingEdge(self.clock)
        cycle = 0
        while True:
            await edge
            cycle += 1
            if self.dut.rst.value:
                continue
            if s["arvalid"].value and s["arready"].value:
                addr, beats = int(s["araddr"].value), int(s["arlen"].value) + 1
                if int(s["arsize"].value) != shift or int(s["arburst"].value) != 1:
                    self.errors.append(f"cycle {cycle}: burst at {addr:#x} arsize "
                                       f"{int(s['arsize'].value)} arburst {int(s['arburst'].value)}")
                if addr % self.beat_bytes or (addr & 0xFFF) + beats * self.beat_bytes > 0x1000:
                    self.errors.append(f"cycle {cycle}: burst at {addr:#x} of {beats} beats is "
                                       f"unaligned or crosses 4 KiB")
                self.beat_addrs += range(addr, addr + beats * self.beat_bytes, self.beat_bytes)
                self.bursts += 1
            if s["rvalid"].value and s["rready"].value:
                self.r_beats += 1
                self.r_bursts += int(s["rlast"].value)
            elif s["rvalid"].value:
                self.r_waits += 1


class Bench:
    def __init__(self, dut, cfg, rng: np.random.Generator):
        self.dut, self.cfg, self.rng = dut, cfg, rng
        self.clock = start_clock(dut)
        ports = cfg["ports"]
        self.proj = StreamSource(dut, "proj", self.clock, fields=cfg["fields"]["proj"])
        self.codes = StreamSink(dut, "codes", self.clock)
        assert self.codes.width == cfg["lanes"] * code_bits(cfg["group"])
        self.rams = []
        for p in range(ports):
            bus = AxiReadBus.from_prefix(dut, f"axi__{p}_")
            # One sparse memory of the port's address space, shared by every port's model.
            ram = AxiRamRead(bus, self.clock, dut.rst, size=1 << cfg["addr_width"],
                             mem=self.rams[0].mem if self.rams else None)
            for log in (ram.log, ram.ar_channel.log, ram.r_channel.log):
                log.setLevel(logging.WARNING)
            self.rams.append(ram)
        self.monitors = [AxiPortMonitor(dut, self.clock, f"axi__{p}_", cfg["beat_bytes"])
                         for p in range(ports)]
        self.projections: list[Projection] = []
        self.expected_beats = [[] for _ in range(ports)]   # per port, over all commands so far
        self.expected: list[tuple[int, tuple]] = []          # (word, where) over all commands
        self.checked = 0
        self.commands = 0
        self.command_projections: list[Projection] = []
        self.waiting_cycles = 0
        self.command_cycles: list[int] = []     # cycle (from the sink's start) of each command
        cocotb.start_soon(self._monitor())

    async def _monitor(self):
        cycle = 0
        while True:
            await RisingEdge(self.clock)
            cycle += 1
            self.waiting_cycles += int(self.dut.waiting.value)
            if self.dut.proj__valid.value and self.dut.proj__ready.value:
                self.command_cycles.append(cycle)

    def load(self, shapes) -> None:
        address = IMAGE_BASE
        for rows, k in shapes:
            proj = Projection(self.cfg, rows, k, self.rng, address)
            self.rams[0].write(address, proj.raw)
            self.projections.append(proj)
            address = proj.end + PROJECTION_GAP
        # The memory is shared: every port model sees what port 0's model was given.
        for ram in self.rams[1:]:
            assert ram.mem is self.rams[0].mem

    def set_stalls(self, p_ar: float, p_r: float, p_codes: float) -> None:
        for ram in self.rams:
            for channel, p in ((ram.ar_channel, p_ar), (ram.r_channel, p_r)):
                set_pauses(channel, random_pause(p, int(self.rng.integers(1 << 30))) if p else None)
        self.codes.set_pause_generator(random_pause(p_codes, int(self.rng.integers(1 << 30))) if p_codes else None)

    def queue(self, index: int, passes: int) -> None:
        proj = self.projections[index]
        self.proj.send_nowait(proj.command(self.cfg, passes))
        cmd = self.commands
        self.commands += 1
        self.command_projections.append(proj)
        for word, where in proj.expected_words(passes):
            self.expected.append((word, (cmd, index) + where))
        for p in range(self.cfg["ports"]):
            self.expected_beats[p].append(proj.expected_beats(p, self.cfg["beat_bytes"]))

    async def scoreboard(self, what: str) -> None:
        bits = code_bits(self.cfg["group"])
        mask = (1 << bits) - 1
        while self.checked < len(self.expected):
            got = await self.codes.recv()
            want, (cmd, index, tile, pas, block, row) = self.expected[self.checked]
            if got != want:
                lanes = [p for p in range(self.cfg["lanes"])
                         if (got >> (p * bits)) & mask != (want >> (p * bits)) & mask]
                raise AssertionError(
                    f"{what}: lane word {self.checked} (command {cmd}: projection {index}, tile "
                    f"{tile}, pass {pas}, block {block}, row {row}) is {got:#x}, expected {want:#x}; "
                    f"wrong lanes {lanes}")
            self.checked += 1

    def check_traffic(self, what: str) -> list[tuple[int, int]]:
        """Per port: the beats read are each command's sub-stream, in order, once. Returns
        (bytes, bursts) read per port so far."""
        bb = self.cfg["beat_bytes"]
        per_port = []
        for p, (mon, commands) in enumerate(zip(self.monitors, self.expected_beats)):
            assert not mon.errors, f"{what}: port {p}: " + "; ".join(mon.errors[:5])
            want = [a for beats in commands for a in beats]
            got = mon.beat_addrs
            if got != want:
                # Locate the first difference by command for the message.
                pos, cmd = 0, 0
                for cmd, beats in enumerate(commands):
                    if got[pos:pos + len(beats)] != beats:
                        break
                    pos += len(beats)
                extra = Counter(got) - Counter(want)
                missing = Counter(want) - Counter(got)
                raise AssertionError(
                    f"{what}: port {p} read {len(got)} beats, expected {len(want)}; first "
                    f"difference in command {cmd}; {sum(extra.values())} beats read in excess "
                    f"(e.g. {[hex(a) for a in list(extra)[:4]]}), {sum(missing.values())} missing "
                    f"(e.g. {[hex(a) for a in list(missing)[:4]]})")
            # Independently of port_runs: each command's beats are its port's sub-stream
            # [base, base + blocks * rows * subword_bytes), each beat exactly once.
            for cmd, (beats, proj) in enumerate(zip(commands, self.command_projections)):
                base, size = proj.bases[p], proj.tiling.bytes_per_port
                assert size == proj.tiling.blocks * proj.rows * proj.subword_bytes <= proj.stride
                assert len(beats) * bb == size and sorted(beats) == list(range(base, base + size, bb)), (
                    f"{what}: port {p}, command {cmd}: not the sub-stream, once")
            assert mon.r_beats == len(got), f"{what}: port {p}: {mon.r_beats} R beats for {len(got)} requested"
            assert mon.r_bursts == mon.bursts, f"{what}: port {p}: {mon.r_bursts} RLAST for {mon.bursts} bursts"
            assert mon.r_waits == 0, f"{what}: port {p}: R beats waited {mon.r_waits} cycles for RREADY"
            per_port.append((len(got) * bb, mon.bursts))
        return per_port

    async def run(self, what: str, bound: int) -> int:
        start_received = self.codes.received
        try:
            await with_timeout(self.scoreboard(what), self.clock, bound, what)
        except CycleTimeout:
            raise CycleTimeout(f"{what}: only {self.checked} of {len(self.expected)} lane words within "
                               f"{bound} cycles; commands left {self.proj.count()}; beats read per port "
                               f"{[len(m.beat_addrs) for m in self.monitors]}") from None
        await ClockCycles(self.clock, 40)
        assert self.codes.count() == 0, f"{what}: {self.codes.count()} extra lane words"
        assert self.proj.idle(), f"{what}: commands left"
        assert not int(self.dut.error.value), f"{what}: error raised"
        return self.codes.beat_cycles[-1] - self.codes.beat_cycles[start_received] + 1


def _budget(cfg, words: int, stalls) -> int:
    bpw = cfg["subword_beats"]
    slow = 1 / max((1 - max(stalls)) ** 2, 0.02)
    return int(words * bpw * 4 * slow) + 2000


@cocotb.test()
async def test_stream(dut):
    """Back-to-back projection commands under random AR/R/codes stalls: golden lane words tile
    by tile and pass by pass, and each port reads its sub-stream exactly once per command."""
    cfg = tb_config()
    rng = np.random.default_rng([cocotb.RANDOM_SEED, 7])
    bench = Bench(dut, cfg, rng)
    bench.load(cfg["projections"])
    plans = []
    for run in cfg["runs"]:
        words = sum(p.tiling.blocks * p.rows * run["passes"]
                    for p in (bench.projections[i] for i in run["order"]))
        plans.append((run, words, _budget(cfg, words, run["stalls"])))
    start_watchdog(bench.clock, sum(b for _, _, b in plans) + 2000, "test_stream")
    await reset_dut(dut, bench.clock, RESET_CYCLES)
    for run, words, bound in plans:
        bench.set_stalls(*run["stalls"])
        for index in run["order"]:
            bench.queue(index, run["passes"])
        what = f"passes={run['passes']} order={run['order']} stalls={run['stalls']}"
        waited = bench.waiting_cycles
        cycles = await bench.run(what, bound)
        traffic = bench.check_traffic(what)
        dut._log.info("%s: %d lane words in %d cycles (%.3f words/cycle), waiting %d cycles; "
                      "bytes/bursts read per port so far %s", what, words, cycles, words / cycles,
                      bench.waiting_cycles - waited, traffic)


@cocotb.test()
async def test_throughput(dut):
    """No stalls anywhere: lane words per cycle for each projection in decode (passes=1) and
    prefill (passes=3), one command at a time; the port traffic is checked as in test_stream."""
    cfg = tb_config()
    rng = np.random.default_rng([cocotb.RANDOM_SEED, 8])
    bench = Bench(dut, cfg, rng)
    bench.load(cfg["projections"])
    total = sum(p.tiling.blocks * p.rows for p in bench.projections) * 4
    start_watchdog(bench.clock, _budget(cfg, total, [0.0]) * 2, "test_throughput")
    await reset_dut(dut, bench.clock, RESET_CYCLES)
    results = []
    for passes in (1, 3):
        for index, proj in enumerate(bench.projections):
            bench.queue(index, passes)
            words = proj.tiling.blocks * proj.rows * passes
            what = f"throughput {proj.rows}x{proj.k} passes={passes}"
            cycles = await bench.run(what, _budget(cfg, words, [0.0]))
            bench.check_traffic(what)
            # From the command handshake to the last lane word (the first tile's load included).
            latency = bench.codes.beat_cycles[-words] - bench.command_cycles[-1]
            overall = bench.codes.beat_cycles[-1] - bench.command_cycles[-1]
            tiles = len(proj.tiling.tiles)
            entries = proj.tiling.tile_rows * proj.tiling.blocks
            results.append({"shape": [proj.rows, proj.k], "passes": passes, "blocks": proj.tiling.blocks,
                            "tile_rows": proj.tiling.tile_rows, "tiles": tiles, "words": words,
                            "cycles": cycles, "words_per_cycle": round(words / cycles, 4),
                            "first_word_latency": latency, "cycles_from_command": overall})
            dut._log.info("%s: B=%d N_t=%d (%d tiles of %d words): %d lane words in %d cycles "
                          "first to last (%.4f words/cycle; DDR bound %.3f); first word %d cycles "
                          "after the command, last %d (%.4f words/cycle)", what, proj.tiling.blocks,
                          proj.tiling.tile_rows, tiles, entries, words, cycles, words / cycles,
                          1 / cfg["subword_beats"], latency, overall, words / overall)
            # Loading overlaps the replay: decode runs at the DDR rate less a few cycles of read
            # latency per tile; a prefill tile's 3 passes hide its loading entirely.
            if entries >= 100:
                floor = 0.9 / cfg["subword_beats"] if passes == 1 else min(1.0, passes / cfg["subword_beats"])
                assert words / cycles >= floor * (0.999 if passes > 1 else 1), (
                    f"{what}: {words / cycles:.4f} words/cycle, expected >= {floor:.3f}")
    cocotb.log.info("THROUGHPUT %s", results)


@cocotb.test()
async def test_reads_wait_for_a_free_bank(dut):
    """The lanes hold ``codes`` (never ready) on a projection of three tiles or more: the
    streamer fills both banks (tiles 0 and 1) and issues no read for tile 2, so no weight beat
    waits on an R channel, where it would hold the beats of every other reader sharing that
    HP port. Once the lanes take words, the rest follows, golden, each beat read once."""
    cfg = tb_config()
    rng = np.random.default_rng([cocotb.RANDOM_SEED, 9])
    bench = Bench(dut, cfg, rng)
    bench.load(cfg["projections"])
    index = max(range(len(bench.projections)), key=lambda i: len(bench.projections[i].tiling.tiles))
    proj = bench.projections[index]
    assert len(proj.tiling.tiles) >= 3, "the test needs a projection of three tiles or more"
    words = proj.tiling.blocks * proj.rows
    bound = _budget(cfg, words, [0.0])
    start_watchdog(bench.clock, 2 * bound + 4000, "test_reads_wait_for_a_free_bank")
    await reset_dut(dut, bench.clock, RESET_CYCLES)
    bench.codes.set_pause_generator(itertools.repeat(True))        # lanes never ready
    bench.queue(index, 1)
    await ClockCycles(bench.clock, bound)
    first_two = sum(t.rows for t in proj.tiling.tiles[:2]) * proj.tiling.blocks * cfg["subword_beats"]
    for p, mon in enumerate(bench.monitors):
        assert len(mon.beat_addrs) == first_two, (
            f"port {p}: {len(mon.beat_addrs)} beats requested with both banks full, expected "
            f"{first_two} (tiles 0 and 1 only)")
        assert mon.r_beats == first_two, f"port {p}: {first_two - mon.r_beats} requested beats wait on R"
    bench.codes.clear_pause_generator()
    await bench.run("after the lanes' hold", bound)
    bench.check_traffic("after the lanes' hold")
