"""cocotb tests of :class:`tellme.hw.stream_buffer.StreamBuffer` (and of anything with the same
ports: ``i``/``o`` streams of one payload shape, plus ``clk``/``rst``).

Configuration (``run_cocotb(parameters=...)``):

``fields``
    :data:`~tellme.sim.tb.streams.Field` list of a StructLayout payload, or absent/``None`` for a
    plain unsigned payload of the port's width.
``beats``
    Beats sent per stall setting (default 2000).
``stall_probabilities``
    List of ``[input, output]`` stall probabilities, one random-stall pass each.
``latency``
    Expected cycles from a beat moving on ``i`` to it being offered on ``o`` (default 1).
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from . import tb_config
from .streams import StreamSink, StreamSource, expect_beats, random_pause, reset_dut, start_clock

RESET_CYCLES = 2
DEFAULT_STALLS = [[0.0, 0.0], [0.3, 0.0], [0.0, 0.3], [0.5, 0.5], [0.8, 0.2], [0.2, 0.8]]


def _extremes(width: int, signed: bool) -> list[int]:
    if width == 0:
        return [0]
    if signed:
        return [0, -1, -(1 << (width - 1)), (1 << (width - 1)) - 1]
    return [0, (1 << width) - 1]


def _random_value(rng: random.Random, width: int, signed: bool) -> int:
    # One beat in five takes an extreme value (0, all ones, most negative/positive), where
    # truncation and sign bugs show.
    if rng.random() < 0.2:
        return rng.choice(_extremes(width, signed))
    value = rng.getrandbits(width) if width else 0
    if signed and width and value >> (width - 1):
        value -= 1 << width
    return value


def random_beats(rng: random.Random, count: int, width: int, fields) -> list:
    """``count`` random payloads: ints for a plain payload, dicts for a struct payload. The
    first beats are the all-zeros and all-ones patterns."""
    if fields is None:
        beats = [0, (1 << width) - 1]
        beats += [_random_value(rng, width, False) for _ in range(count - len(beats))]
    else:
        beats = [{name: 0 for name, _, _ in fields},
                 {name: (-1 if signed else (1 << w) - 1) for name, w, signed in fields}]
        beats += [{name: _random_value(rng, w, signed) for name, w, signed in fields}
                  for _ in range(count - len(beats))]
    return beats[:count]


def _setup(dut):
    config = tb_config()
    fields = config.get("fields")
    clock = start_clock(dut)
    source = StreamSource(dut, "i", clock, fields=fields)
    sink = StreamSink(dut, "o", clock, fields=fields)
    return config, fields, clock, source, sink


@cocotb.test(timeout_time=20, timeout_unit="ms")
async def test_random_stalls(dut):
    """Random beats under random stalls on both sides arrive once each, in order, and ``o``
    obeys the handshake rules (the source keeps ``i`` within them by construction)."""
    config, fields, clock, source, sink = _setup(dut)
    await reset_dut(dut, clock, RESET_CYCLES)
    rng = random.Random(cocotb.RANDOM_SEED)
    count = int(config.get("beats", 2000))
    for p_in, p_out in config.get("stall_probabilities", DEFAULT_STALLS):
        what = f"stalls in={p_in} out={p_out}"
        source.set_pause_generator(random_pause(p_in, rng.getrandbits(32)))
        sink.set_pause_generator(random_pause(p_out, rng.getrandbits(32)))
        beats = random_beats(rng, count, source.width, fields)
        for beat in beats:
            source.send_nowait(beat)
        # Expected cycles ~ count / ((1 - p_in) * (1 - p_out)); allow 4x that plus slack.
        rate = max((1 - p_in) * (1 - p_out), 0.01)
        bound = int(4 * count / rate) + 100
        await expect_beats(sink, beats, clock, bound, what)
        # Nothing more may come out (no duplicated beats): watch a few cycles with `o` ready.
        sink.clear_pause_generator()
        await ClockCycles(clock, 10)
        assert sink.count() == 0, f"{what}: {sink.count()} extra beat(s), first " \
                                  f"{sink.recv_nowait()!r}"
        assert source.idle()
        dut._log.info("%s: %d beats ok", what, count)
    assert not sink.protocol_errors, sink.protocol_errors


@cocotb.test(timeout_time=5, timeout_unit="ms")
async def test_full_throughput(dut):
    """Without stalls one beat moves per cycle: N beats take N consecutive cycles on ``o``,
    the first arriving ``latency`` cycles after it was offered."""
    config, fields, clock, source, sink = _setup(dut)
    latency = int(config.get("latency", 1))
    await reset_dut(dut, clock, RESET_CYCLES)
    rng = random.Random(cocotb.RANDOM_SEED + 1)
    count = int(config.get("beats", 2000))
    beats = random_beats(rng, count, source.width, fields)
    for beat in beats:
        source.send_nowait(beat)
    await expect_beats(sink, beats, clock, 2 * count + 100, "full rate")
    first, last = sink.beat_cycles[0], sink.beat_cycles[-1]
    assert last - first == count - 1, \
        f"{count} beats took {last - first + 1} cycles on o (expected {count})"
    # The sink counts edges from its creation: RESET_CYCLES edges in reset, one releasing it
    # (reset_dut returns), one at which the source starts offering, one at which `i` takes the
    # beat; `latency` edges later the sink sees it move on `o`.
    expected_first = RESET_CYCLES + 3 + latency
    assert first == expected_first, \
        f"first beat moved on o at sink cycle {first}, expected {expected_first}"
    assert not sink.protocol_errors, sink.protocol_errors


@cocotb.test(timeout_time=1, timeout_unit="ms")
async def test_backpressure(dut):
    """With ``o`` stalled, the buffer takes exactly two beats (output and skid register), then
    holds ``i.ready`` low; releasing ``o`` delivers everything in order."""
    config, fields, clock, source, sink = _setup(dut)
    await reset_dut(dut, clock, RESET_CYCLES)
    rng = random.Random(cocotb.RANDOM_SEED + 2)
    sink.set_pause_generator(iter([True] * 20))  # stall 20 cycles, then run freely
    beats = random_beats(rng, 8, source.width, fields)
    for beat in beats:
        source.send_nowait(beat)
    await ClockCycles(clock, 15)
    assert source.sent == 2, f"buffer accepted {source.sent} beats while stalled (expected 2)"
    assert not dut.i__ready.value, "i.ready high while both registers are full"
    await expect_beats(sink, beats, clock, 100, "drain")
    assert not sink.protocol_errors, sink.protocol_errors


@cocotb.test(timeout_time=1, timeout_unit="ms")
async def test_no_combinational_paths(dut):
    """``i.ready`` and ``o.valid``/``o.payload`` are registered: toggling ``o.ready`` or
    ``i.valid``/``i.payload`` in the middle of a cycle does not change them."""
    clock = start_clock(dut)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await reset_dut(dut, clock, RESET_CYCLES)
    width = len(dut.i__payload)
    observed = {"i.ready": dut.i__ready, "o.valid": dut.o__valid, "o.payload": dut.o__payload}
    # Walk through empty, one-beat and full states, probing at each falling edge.
    for cycle in range(8):
        # Cycles 0-3 offer beats into a stalled output (filling both registers), cycles 6-7
        # drain it.
        i_valid_next, o_ready_next = int(cycle < 4), int(cycle >= 6)
        payload_next = (cycle * 0x5A5A5A5A) & ((1 << width) - 1)
        dut.i__valid.value = i_valid_next
        dut.o__ready.value = o_ready_next
        dut.i__payload.value = payload_next
        await FallingEdge(clock)
        before = {name: str(signal.value) for name, signal in observed.items()}
        for i_valid, o_ready, payload in ((0, 1, 0), (1, 0, (1 << width) - 1), (0, 0, 0)):
            dut.i__valid.value = i_valid
            dut.o__ready.value = o_ready
            dut.i__payload.value = payload
            await Timer(1, unit="ns")
            after = {name: str(signal.value) for name, signal in observed.items()}
            assert after == before, (f"cycle {cycle}: outputs {before} changed to {after} "
                                     f"combinationally (i.valid={i_valid}, o.ready={o_ready})")
        # Put the cycle's real inputs back before the edge samples them.
        dut.i__valid.value = i_valid_next
        dut.o__ready.value = o_ready_next
        dut.i__payload.value = payload_next
        await RisingEdge(clock)
