"""cocotb tests of :class:`tellme.hw.weight_buffer.WeightBuffer` on its own: tile descriptors and
fill words in, every tile replayed ``passes`` times on ``out``.

A cycle monitor samples every handshake and ``waiting`` at each rising edge (the values of the
cycle that just ended) and checks ``waiting`` exactly against a model of the two banks:

* a tile is *complete* in cycle c once its last fill word moved in an earlier cycle;
* a tile is *released* once its last word (of its last pass) has been read into the output
  register: in cycle c the words read so far are the words consumed on ``out`` before c plus
  one if ``out.valid`` is high in c (the register holds at most one word);
* ``waiting`` must be high in cycle c exactly when the oldest unreleased tile is not complete.

In particular ``waiting`` is never high while a complete, unreleased tile is next in line.

Configuration (``run_cocotb(parameters=...)``):

``depth``, ``width``
    The buffer's bank depth (lane words) and word width (bits).
``fields``
    ``{"tile": struct_fields(tile_layout(depth))}``.
``stalls``
    (``test_random``) list of ``[p_tile, p_fill, p_out]`` stall probabilities; one batch of
    random tiles per entry, run one after another (each batch drains before the next).
``tiles_per_batch``
    (``test_random``) random tiles per batch (entries 1..depth, passes 1..5, corner values
    included).
``throughput``
    (``test_throughput``) list of ``[entries, passes, tiles]`` no-stall runs.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from . import tb_config
from .streams import (CycleTimeout, StreamSink, StreamSource, random_pause, reset_dut, start_clock,
                      start_watchdog, with_timeout)

RESET_CYCLES = 2
DEFAULT_STALLS = [[0.0, 0.0, 0.0], [0.3, 0.3, 0.3], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1],
                  [0.1, 0.1, 0.8], [0.5, 0.5, 0.5], [0.0, 0.0, 0.9]]


class BufferModel:
    """Cycle monitor: counts handshakes, checks ``waiting`` against the two-bank model and
    records the cycle of every fill and out handshake."""

    def __init__(self, dut, clock):
        self.dut = dut
        self.clock = clock
        self.tiles: list[tuple[int, int]] = []     # (entries, passes) in descriptor order
        self.fill_end: list[int] = []              # cumulative fill words through tile k
        self.out_end: list[int] = []               # cumulative out words through tile k
        self.fills = 0                             # fill words moved in cycles before this one
        self.outs = 0
        self.tiles_taken = 0
        self.cycle = 0
        self.fill_cycles: list[int] = []
        self.out_cycles: list[int] = []
        self.tile_cycles: list[int] = []
        self.waiting_cycles = 0
        self.errors: list[str] = []
        self.task = cocotb.start_soon(self._run())

    def add_tile(self, entries: int, passes: int) -> None:
        self.tiles.append((entries, passes))
        self.fill_end.append((self.fill_end[-1] if self.fill_end else 0) + entries)
        self.out_end.append((self.out_end[-1] if self.out_end else 0) + entries * passes)

    def expected_waiting(self, out_valid: bool) -> bool:
        issued = self.outs + int(out_valid)
        # oldest tile not yet released
        for k, end in enumerate(self.out_end):
            if end > issued:
                return not (k < self.tiles_taken and self.fills >= self.fill_end[k])
        return True

    async def _run(self) -> None:
        dut = self.dut
        edge = RisingEdge(self.clock)
        while True:
            await edge
            self.cycle += 1
            if dut.rst.value:
                continue
            out_valid = bool(dut.o__valid.value)
            waiting = bool(dut.waiting.value)
            want = self.expected_waiting(out_valid)
            if waiting != want and len(self.errors) < 20:
                self.errors.append(
                    f"cycle {self.cycle}: waiting={int(waiting)}, model {int(want)} (tiles taken "
                    f"{self.tiles_taken}, fill words {self.fills}, out words {self.outs}, "
                    f"out.valid {int(out_valid)})")
            self.waiting_cycles += waiting
            if dut.tile__valid.value and dut.tile__ready.value:
                self.tiles_taken += 1
                self.tile_cycles.append(self.cycle)
            if dut.fill__valid.value and dut.fill__ready.value:
                self.fills += 1
                self.fill_cycles.append(self.cycle)
            if out_valid and dut.o__ready.value:
                self.outs += 1
                self.out_cycles.append(self.cycle)

    def check(self, what: str) -> None:
        if self.errors:
            raise AssertionError(f"{what}: waiting disagrees with the bank model:\n  "
                                 + "\n  ".join(self.errors))


class Bench:
    def __init__(self, dut, cfg):
        self.dut, self.cfg = dut, cfg
        self.clock = start_clock(dut)
        self.tile = StreamSource(dut, "tile", self.clock, fields=cfg["fields"]["tile"])
        self.fill = StreamSource(dut, "fill", self.clock)
        self.out = StreamSink(dut, "o", self.clock)
        assert self.fill.width == cfg["width"] and self.out.width == cfg["width"]
        self.model = BufferModel(dut, self.clock)
        self.expected: list[int] = []
        self.checked = 0

    def queue_tile(self, rng: random.Random, entries: int, passes: int) -> list[int]:
        words = [rng.getrandbits(self.cfg["width"]) for _ in range(entries)]
        self.model.add_tile(entries, passes)
        self.tile.send_nowait({"entries": entries, "passes": passes})
        for w in words:
            self.fill.send_nowait(w)
        for _ in range(passes):
            self.expected += words
        return words

    async def drain(self, what: str, bound: int) -> None:
        async def collect():
            while self.out.received < len(self.expected):
                await RisingEdge(self.clock)
        try:
            await with_timeout(collect(), self.clock, bound, what)
        except CycleTimeout:
            raise CycleTimeout(f"{what}: {self.out.received} of {len(self.expected)} words within "
                               f"{bound} cycles; tiles left {self.tile.count()}, fill words left "
                               f"{self.fill.count()}") from None
        await ClockCycles(self.clock, 4)
        got = [self.out.recv_nowait() for _ in range(self.out.count())]
        base = self.checked
        for i, (g, w) in enumerate(zip(got, self.expected[base:])):
            if g != w:
                raise AssertionError(f"{what}: out word {base + i} is {g:#x}, expected {w:#x}")
        self.checked += len(got)
        assert self.out.received == len(self.expected), (
            f"{what}: {self.out.received} words out, expected {len(self.expected)}")
        assert self.tile.idle() and self.fill.idle(), f"{what}: stimulus left over"
        self.model.check(what)


def random_tiles(rng: random.Random, depth: int, count: int) -> list[tuple[int, int]]:
    tiles = [(1, 1), (depth, 1), (1, 5), (depth, 5), (depth - 1, 2)]
    while len(tiles) < count:
        entries = rng.choice([1, 2, depth, rng.randint(1, depth), rng.randint(1, depth)])
        tiles.append((entries, rng.randint(1, 5)))
    rng.shuffle(tiles)
    return tiles[:count]


@cocotb.test()
async def test_random(dut):
    """Random tiles under random stalls on tile/fill/out: every word of every tile comes out
    ``passes`` times in order, and ``waiting`` matches the bank model every cycle."""
    cfg = tb_config()
    depth = cfg["depth"]
    rng = random.Random(cocotb.RANDOM_SEED)
    bench = Bench(dut, cfg)
    stalls = cfg.get("stalls", DEFAULT_STALLS)
    count = cfg.get("tiles_per_batch", 24)
    batches = [(s, random_tiles(rng, depth, count)) for s in stalls]
    bounds = []
    for s, tiles in batches:
        slow = 1 / max(1 - max(s), 0.05)
        bounds.append(int(sum(e * (p + 1) + 8 for e, p in tiles) * 3 * slow) + 200)
    start_watchdog(bench.clock, sum(bounds) + 1000, "test_random")
    await reset_dut(dut, bench.clock, RESET_CYCLES)
    for (s, tiles), bound in zip(batches, bounds):
        p_tile, p_fill, p_out = s
        for port, p in ((bench.tile, p_tile), (bench.fill, p_fill), (bench.out, p_out)):
            port.set_pause_generator(random_pause(p, rng.randrange(1 << 30)) if p else None)
        start, waited = bench.model.cycle, bench.model.waiting_cycles
        for entries, passes in tiles:
            bench.queue_tile(rng, entries, passes)
        await bench.drain(f"stalls={s}", bound)
        dut._log.info("stalls %s: %d tiles, %d words out in %d cycles, waiting %d cycles", s,
                      len(tiles), sum(e * p for e, p in tiles), bench.model.cycle - start,
                      bench.model.waiting_cycles - waited)
    assert bench.model.tiles_taken == sum(len(t) for _, t in batches)


@cocotb.test()
async def test_throughput(dut):
    """No stalls: one word per cycle on ``out`` within a tile's replay, and a tile fills while
    the previous one replays (cycles per tile ~ max(fill, replay), not their sum)."""
    cfg = tb_config()
    rng = random.Random(cocotb.RANDOM_SEED)
    bench = Bench(dut, cfg)
    runs = cfg.get("throughput", [[cfg["depth"], 1, 8], [cfg["depth"], 3, 6]])
    start_watchdog(bench.clock, sum(e * (p + 2) * n + 100 for e, p, n in runs) * 2 + 1000,
                   "test_throughput")
    await reset_dut(dut, bench.clock, RESET_CYCLES)
    results = []
    for entries, passes, n in runs:
        model = bench.model
        out0, fill0 = len(model.out_cycles), len(model.fill_cycles)
        for _ in range(n):
            bench.queue_tile(rng, entries, passes)
        what = f"throughput entries={entries} passes={passes} tiles={n}"
        await bench.drain(what, (entries * (passes + 2) * n + 100) * 2)
        outs = model.out_cycles[out0:]
        fills = model.fill_cycles[fill0:]
        total = outs[-1] - fills[0] + 1
        span = outs[-1] - outs[0] + 1
        words = entries * passes * n
        gaps = [b - a - 1 for a, b in zip(outs, outs[1:]) if b - a > 1]
        # Overlap: tile k+1 starts filling before tile k's replay has ended.
        per_tile = [outs[(k + 1) * entries * passes - 1] for k in range(n)]
        for k in range(n - 1):
            assert fills[(k + 1) * entries] < per_tile[k], (
                f"{what}: tile {k + 1} filled only after tile {k} replayed (no overlap)")
        # Within each pass of a tile the read side moves one word per cycle.
        for k in range(n * passes):
            seg = outs[k * entries:(k + 1) * entries]
            assert seg[-1] - seg[0] == entries - 1, f"{what}: bubble within pass {k}: {seg}"
        period = max(entries, entries * passes)
        # Serial (no overlap) would take n * (entries + entries * passes); allow a few cycles of
        # handshake overhead per tile on top of max(fill, replay).
        bound = entries + n * (period + 3) + 4
        results.append((entries, passes, n, total, span, words, len(gaps), sum(gaps)))
        dut._log.info("%s: %d words in %d cycles from the first fill (%d from the first out word; "
                      "%.4f words/cycle), %d gaps (%d cycles); serial would be %d, bound %d",
                      what, words, total, span, words / span, len(gaps), sum(gaps),
                      n * (entries + entries * passes), bound)
        assert total <= bound, f"{what}: {total} cycles > {bound} (fill and replay not overlapped?)"
        if passes >= 2:
            # Fill (entries + handshake) is shorter than the replay: no bubble at all.
            assert span == words, f"{what}: {span} cycles for {words} words, gaps {gaps}"
        else:
            # The fill side spends one cycle per tile on the descriptor handshake, so the read
            # side waits at most one cycle at each tile boundary.
            assert len(gaps) <= n - 1 and sum(gaps) <= n - 1, f"{what}: gaps {gaps}"
    cocotb.log.info("throughput results (entries, passes, tiles, cycles, out span, words, gaps, "
                    "gap cycles): %s", results)
