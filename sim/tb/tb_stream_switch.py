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
from . import tb_config
from .streams import StreamSink, StreamSource, random_pause, reset_dut, start_clock, with_timeout


def vec_fields(lanes):
    return [("data", 32 * lanes, False), ("last", 1, False)]


def random_beat(rng, lanes):
    return {"data": rng.getrandbits(32 * lanes), "last": rng.getrandbits(1)}


@cocotb.test()
async def test_mux(dut):
    cfg = tb_config()
    count, lanes = cfg["count"], cfg["lanes"]
    rng = random.Random(cocotb.RANDOM_SEED)
    clock = start_clock(dut)
    sources = [StreamSource(dut, f"i__{k}", clock, fields=vec_fields(lanes), pause=random_pause(0.3, rng.getrandbits(32)))
               for k in range(count)]
    sink = StreamSink(dut, "o", clock, fields=vec_fields(lanes), pause=random_pause(0.3, rng.getrandbits(32)))
    dut.sel.value = 0
    await reset_dut(dut, clock)
    for phase in range(2 * count):
        sel = rng.randrange(count)
        dut.sel.value = sel
        taken = [s.sent for s in sources]
        beats = [random_beat(rng, lanes) for _ in range(40)]
        for beat in beats:
            sources[sel].send_nowait(beat)
        for i, beat in enumerate(beats):
            got = await with_timeout(sink.recv(), clock, 2000, f"beat {i} of input {sel}")
            assert got == beat, f"phase {phase}: beat {i} of input {sel} differs"
        await ClockCycles(clock, 5)
        assert [s.sent for s in sources] == [t + (40 if k == sel else 0) for k, t in enumerate(taken)]
        assert sink.empty()


@cocotb.test()
async def test_demux(dut):
    cfg = tb_config()
    count, lanes = cfg["count"], cfg["lanes"]
    rng = random.Random(cocotb.RANDOM_SEED)
    clock = start_clock(dut)
    source = StreamSource(dut, "i", clock, fields=vec_fields(lanes), pause=random_pause(0.3, rng.getrandbits(32)))
    sinks = [StreamSink(dut, f"o__{k}", clock, fields=vec_fields(lanes), pause=random_pause(0.3, rng.getrandbits(32)))
             for k in range(count)]
    dut.sel.value = 0
    await reset_dut(dut, clock)
    for phase in range(2 * count):
        sel = rng.randrange(count)
        dut.sel.value = sel
        beats = [random_beat(rng, lanes) for _ in range(40)]
        for beat in beats:
            source.send_nowait(beat)
        for i, beat in enumerate(beats):
            got = await with_timeout(sinks[sel].recv(), clock, 2000, f"beat {i} to output {sel}")
            assert got == beat, f"phase {phase}: beat {i} to output {sel} differs"
        await ClockCycles(clock, 5)
        assert all(s.empty() for s in sinks), "a beat reached an output that was not selected"


@cocotb.test()
async def test_ftz(dut):
    lanes = tb_config()["lanes"]
    rng = random.Random(cocotb.RANDOM_SEED)
    clock = start_clock(dut)
    source = StreamSource(dut, "i", clock, fields=vec_fields(lanes), pause=random_pause(0.3, rng.getrandbits(32)))
    sink = StreamSink(dut, "o", clock, fields=vec_fields(lanes), pause=random_pause(0.3, rng.getrandbits(32)))
    await reset_dut(dut, clock)
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
