"""cocotb tests of :mod:`tellme.hw.stream_switch`: StreamMux and StreamDemux route every beat
to/from the selected port only, in order, under random stalls, for every select value; Ftz
equals ``fp32.ftz`` on random, subnormal, NaN and infinite lanes.

Configuration (``run_cocotb(parameters=...)``): ``count`` (ports of the mux/demux), ``lanes``.
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ...contract import fp32
from .streams import StreamSink, StreamSource, random_pause, with_timeout
from .testbench import Testbench


def vec_fields(lanes):
    return [("data", 32 * lanes, False), ("last", 1, False)]


class SwitchTB(Testbench):
    """One of the units: ``lanes`` binary32 lanes a beat (and ``count`` ports, for the mux and
    demux), the random generator of stalls and beats (cocotb's seed), stream ends that stall
    at random."""

    def __init__(self, dut):
        super().__init__(dut)
        self.count, self.lanes = self.cfg.get("count"), self.cfg["lanes"]
        self.rng = random.Random(cocotb.RANDOM_SEED)

    def source(self, name: str) -> StreamSource:
        return StreamSource(self.dut, name, self.clock, fields=vec_fields(self.lanes),
                            pause=random_pause(0.3, self.rng.getrandbits(32)))

    def sink(self, name: str) -> StreamSink:
        return StreamSink(self.dut, name, self.clock, fields=vec_fields(self.lanes),
                          pause=random_pause(0.3, self.rng.getrandbits(32)))

    def select(self) -> int:
        """Drive a random ``sel``; returns it."""
        sel = self.rng.randrange(self.count)
        self.dut.sel.value = sel
        return sel

    async def route(self, source: StreamSource, sink: StreamSink, what: str) -> None:
        """40 random beats sent on ``source`` arrive on ``sink`` unchanged and in order (``what``
        names the route in the messages), then 5 idle cycles."""
        beats = [{"data": self.rng.getrandbits(32 * self.lanes), "last": self.rng.getrandbits(1)}
                 for _ in range(40)]
        for beat in beats:
            source.send_nowait(beat)
        for i, beat in enumerate(beats):
            got = await with_timeout(sink.recv(), self.clock, 2000, f"{what}: beat {i}")
            assert got == beat, f"{what}: beat {i} differs"
        await ClockCycles(self.clock, 5)


@cocotb.test()
async def test_mux(dut):
    tb = SwitchTB(dut)
    sources = [tb.source(f"i__{k}") for k in range(tb.count)]
    sink = tb.sink("o")
    dut.sel.value = 0
    await tb.reset()
    for phase in range(2 * tb.count):
        sel = tb.select()
        taken = [s.sent for s in sources]
        await tb.route(sources[sel], sink, f"phase {phase}, input {sel}")
        assert [s.sent for s in sources] == [t + (40 if k == sel else 0) for k, t in enumerate(taken)]
        assert sink.empty()


@cocotb.test()
async def test_demux(dut):
    tb = SwitchTB(dut)
    source = tb.source("i")
    sinks = [tb.sink(f"o__{k}") for k in range(tb.count)]
    dut.sel.value = 0
    await tb.reset()
    for phase in range(2 * tb.count):
        sel = tb.select()
        await tb.route(source, sinks[sel], f"phase {phase}, output {sel}")
        assert all(s.empty() for s in sinks), "a beat reached an output that was not selected"


@cocotb.test()
async def test_ftz(dut):
    tb = SwitchTB(dut)
    lanes, rng, clock = tb.lanes, tb.rng, tb.clock
    source, sink = tb.source("i"), tb.sink("o")
    await tb.reset()
    special = [0, 0x8000_0000, 1, 0x8000_0001, 0x007F_FFFF, 0x807F_FFFF, 0x0080_0000, 0x7F80_0000, 0xFF80_0000,
               0x7F80_0001, 0xFFC0_0000, 0x7FFF_FFFF, 0x3F80_0000]
    words = special + [rng.getrandbits(32) for _ in range(400)] + [rng.getrandbits(23) | (rng.getrandbits(1) << 31)
                                                                   for _ in range(100)]
    words += [0] * (-len(words) % lanes)
    expected = fp32.ftz(np.array(words, dtype=np.uint32).view(np.float32)).view(np.uint32)
    beats = []
    for b in range(len(words) // lanes):
        lane = words[b * lanes:(b + 1) * lanes]
        beats.append(({"data": sum(w << (32 * k) for k, w in enumerate(lane)), "last": b % 2},
                      {"data": sum(int(w) << (32 * k) for k, w in enumerate(expected[b * lanes:(b + 1) * lanes])),
                       "last": b % 2}))
    for beat, _ in beats:
        source.send_nowait(beat)
    for b, (_, want) in enumerate(beats):
        got = await with_timeout(sink.recv(), clock, 2000, f"beat {b}")
        assert got == want, f"beat {b}: {got['data']:#x} != {want['data']:#x}"
