"""cocotb drivers and checkers for Amaranth :mod:`amaranth.lib.stream` ports.

Port naming
-----------
``amaranth.back.verilog.convert`` flattens a component's signature into Verilog ports named by
their path joined with ``__``. A stream member ``i: In(stream.Signature(shape))`` becomes::

    input             i__valid
    output            i__ready
    input  [W-1:0]    i__payload     (absent when the payload shape has width 0)

and ``o: Out(...)`` the same with directions swapped. The payload is always *one flat vector*,
whatever its shape: a :class:`~amaranth.lib.data.StructLayout` is not split into one port per
field. Its fields are packed least significant first, in declaration order (the first field
starts at bit 0, each next field at the bit after the previous one ends), and a signed field
is stored in two's complement. The Verilog also carries internal wires named
``\\i__payload.field`` (escaped identifiers) for waveform viewing, but they are not ports and a
testbench should not rely on them: use :func:`pack_struct`/:func:`unpack_struct` on the flat
value. The sync domain's clock and reset are the ports ``clk`` and ``rst`` (reset active high).

Timing model
------------
Like cocotbext-axi, the drivers run once per rising clock edge: right after ``RisingEdge`` they
read the values the design held during the cycle that just ended (the edge has not yet been
evaluated when the callback runs), then write the values for the next cycle. So a beat "moved"
at an edge exactly when the sampled ``valid`` and ``ready`` were both high.

Stalls
------
:class:`StreamSource` and :class:`StreamSink` take a *pause generator*, modelled on
cocotbext-axi's ``set_pause_generator``: an iterator of truth values, ``True`` meaning "stall
this cycle". The sink draws one value every cycle (``True``: hold ``ready`` low); the source draws
one in each cycle where it could start offering a beat (``True``: leave ``valid`` low this cycle),
never while a beat it offered is still waiting, since that beat must stay valid. A finite
iterator stops stalling when exhausted. :func:`random_pause` and :func:`burst_pause` make common
ones; ``itertools.cycle([...])`` makes a fixed pattern.

Monitors and cycles
-------------------
Cycle numbers are ``simulation time // PERIOD_NS`` (:func:`cycle_now`); a monitor records the
cycle in which something happened. :class:`HandshakeMonitor` records every beat that moves on
stream ports or any valid/ready pair (AXI channels included), with its payload where asked;
:class:`DoneCounter` records the cycles of a ``done`` pulse (and the handshakes of a channel up
to each, or a sticky ``error``); :func:`expect_beats` is the in-order scoreboard of one sink.
"""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Event, RisingEdge, select
from cocotb.utils import get_sim_time

__all__ = [
    "Field", "struct_fields", "fields_width", "pack_struct", "unpack_struct",
    "to_unsigned", "to_signed",
    "random_pause", "burst_pause", "no_pause",
    "CycleTimeout", "with_timeout", "start_watchdog",
    "start_clock", "reset_dut",
    "StreamProtocolError", "StreamSource", "StreamSink",
    "PERIOD_NS", "cycle_now", "Channel", "stream_channel", "HandshakeMonitor", "DoneCounter", "expect_beats",
]

T = TypeVar("T")

#: A payload field: ``(name, width, signed)``. A list of them, in declaration order, describes a
#: :class:`~amaranth.lib.data.StructLayout` payload (see :func:`struct_fields`).
Field = tuple[str, int, bool]


# -- payload packing ------------------------------------------------------------------------------

def to_unsigned(value: int, width: int, *, signed: bool = False, what: str = "value") -> int:
    """Return the ``width``-bit two's complement encoding of ``value``.

    ``value`` must lie in the range of a ``width``-bit signed (``signed=True``) or unsigned
    integer; anything else is a test bug and raises :class:`ValueError` rather than being
    silently truncated.
    """
    if signed:
        low, high = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if width else (0, 0)
    else:
        low, high = 0, (1 << width) - 1
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"{what} {value!r} does not fit {kind}({width}) "
                         f"(range {low}..{high})")
    return value & ((1 << width) - 1)


def to_signed(raw: int, width: int) -> int:
    """Interpret the low ``width`` bits of ``raw`` as a two's complement integer."""
    raw &= (1 << width) - 1
    if width and raw >> (width - 1):
        raw -= 1 << width
    return raw


def struct_fields(layout) -> list[Field]:
    """Return the :data:`Field` list of an Amaranth :class:`~amaranth.lib.data.StructLayout`.

    Nested layouts and arrays are kept as one unsigned field of their total width (pack them
    separately if a test needs their parts). The result is plain data, so it can be sent to the
    testbench through ``run_cocotb(parameters=...)``.
    """
    from amaranth.hdl import Shape
    from amaranth.lib import data

    if not isinstance(layout, data.StructLayout):
        raise TypeError(f"expected a StructLayout, got {layout!r}")
    fields: list[Field] = []
    offset = 0
    for name, field in layout:
        # StructLayout places fields back to back in order; check it so that the flat
        # (name, width, signed) description stays exact.
        assert field.offset == offset, (name, field.offset, offset)
        shape = Shape.cast(field.shape)
        fields.append((name, shape.width, shape.signed))
        offset += field.width
    return fields


def fields_width(fields: Sequence[Field]) -> int:
    """Total width in bits of a payload made of ``fields``."""
    return sum(width for _, width, _ in fields)


def pack_struct(fields: Sequence[Field], values: Mapping[str, int]) -> int:
    """Pack ``values`` (field name -> int) into the flat payload integer of layout ``fields``.

    The first field lands at bit 0 (Amaranth's StructLayout order). Every field must be given
    and fit its width (negative values only for signed fields); unknown names are an error.
    """
    unknown = set(values) - {name for name, _, _ in fields}
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}; layout has "
                         f"{[name for name, _, _ in fields]}")
    raw = 0
    offset = 0
    for name, width, signed in fields:
        if name not in values:
            raise ValueError(f"field {name!r} missing from {dict(values)!r}")
        raw |= to_unsigned(values[name], width, signed=signed, what=f"field {name!r}") << offset
        offset += width
    return raw


def unpack_struct(fields: Sequence[Field], raw: int) -> dict[str, int]:
    """Split the flat payload integer ``raw`` into a dict of field values (the inverse of
    :func:`pack_struct`); signed fields come back negative where their sign bit is set."""
    values = {}
    offset = 0
    for name, width, signed in fields:
        bits = (raw >> offset) & ((1 << width) - 1)
        values[name] = to_signed(bits, width) if signed else bits
        offset += width
    return values


# -- pause generators -----------------------------------------------------------------------------

def random_pause(probability: float, seed: int | None = None) -> Iterator[bool]:
    """Endless pause generator stalling each cycle independently with ``probability``.

    With the same ``seed`` it yields the same sequence, so a failing stall pattern replays.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be within [0, 1], got {probability!r}")
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


def burst_pause(run: int, stall: int) -> Iterator[bool]:
    """Endless pause generator: ``run`` cycles go, then ``stall`` cycles stall, repeating."""
    if run < 0 or stall < 0 or run + stall == 0:
        raise ValueError(f"run and stall must be non-negative and not both 0, got {run}, {stall}")
    return itertools.cycle([False] * run + [True] * stall)


def no_pause() -> Iterator[bool]:
    """Endless pause generator that never stalls."""
    return itertools.repeat(False)


# -- clock, reset, timeouts -----------------------------------------------------------------------

#: Clock period in ns of :func:`start_clock` (and of the cycle numbers of :func:`cycle_now`).
PERIOD_NS = 10


class CycleTimeout(AssertionError):
    """Something a test waited for did not happen within its bound of clock cycles."""


async def with_timeout(awaitable: Awaitable[T], clock, cycles: int, what: str | None = None) -> T:
    """Await ``awaitable`` but give up after ``cycles`` rising edges of ``clock``.

    Returns the awaitable's result, or raises :class:`CycleTimeout` naming ``what`` (a
    coroutine passed in is cancelled). Use it around every wait on the design so that a stuck
    handshake fails the test quickly instead of hanging the simulator.
    """
    index, result = await select(ClockCycles(clock, cycles), awaitable)
    if index == 0:
        raise CycleTimeout(f"{what or awaitable!r} did not complete within {cycles} cycles")
    return result


def start_watchdog(clock, cycles: int, what: str = "test"):
    """Start a background task failing the running test once ``cycles`` clock edges pass.

    A last-resort bound for a whole test (on top of :func:`with_timeout` around individual
    waits); cancel the returned task to disarm it.
    """
    async def watchdog():
        await ClockCycles(clock, cycles)
        raise CycleTimeout(f"{what} still running after {cycles} cycles (watchdog)")
    return cocotb.start_soon(watchdog())


def start_clock(dut, period_ns: int = PERIOD_NS, name: str = "clk"):
    """Start a free-running clock on ``dut.<name>`` and return the clock signal handle."""
    clock = getattr(dut, name)
    Clock(clock, period_ns, unit="ns").start()
    return clock


async def reset_dut(dut, clock, cycles: int = 2, name: str = "rst") -> None:
    """Hold the active-high synchronous reset ``dut.<name>`` for ``cycles`` clock cycles.

    Returns right after the rising edge at which reset is released, so the caller's next
    writes take effect in the first cycle out of reset.
    """
    reset = getattr(dut, name)
    reset.value = 1
    await ClockCycles(clock, cycles)
    reset.value = 0
    await RisingEdge(clock)


# -- stream drivers -------------------------------------------------------------------------------

class StreamProtocolError(AssertionError):
    """A stream broke the handshake rules (observed by :class:`StreamSink`)."""


class _StreamPort:
    """The Verilog ports ``<name>__valid``, ``<name>__ready``, ``<name>__payload`` of ``dut``,
    plus the payload codec shared by source and sink."""

    def __init__(self, dut, name: str, clock, *, reset, pause, fields, signed):
        self.name = name
        self.clock = clock
        if not hasattr(dut, f"{name}__valid") or not hasattr(dut, f"{name}__ready"):
            raise AttributeError(f"{dut._name} has no ports {name}__valid/{name}__ready; is "
                                 f"{name!r} a lib.stream member of the component's signature?")
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        # A zero-width payload has no port at all.
        self.payload = getattr(dut, f"{name}__payload", None)
        self.width = 0 if self.payload is None else len(self.payload)
        if reset is None and hasattr(dut, "rst"):
            reset = dut.rst
        self.reset = reset
        if fields is not None:
            fields = [tuple(field) for field in fields]
            if fields_width(fields) != self.width:
                raise ValueError(f"fields {fields} are {fields_width(fields)} bits wide but "
                                 f"{name}__payload is {self.width} bits wide")
        self.fields = fields
        self.signed = signed
        self._pause: Iterator[bool] | None = None
        self.set_pause_generator(pause)
        self.log = dut._log

    def set_pause_generator(self, generator: Iterable[bool] | None = None) -> None:
        """Use ``generator`` (one truth value per cycle, ``True`` = stall) from the next cycle;
        ``None`` stops stalling."""
        self._pause = None if generator is None else iter(generator)

    def clear_pause_generator(self) -> None:
        self.set_pause_generator(None)

    def _paused(self) -> bool:
        if self._pause is None:
            return False
        # An exhausted finite pattern means "no more stalls".
        return bool(next(self._pause, False))

    def _in_reset(self) -> bool:
        return self.reset is not None and bool(self.reset.value)

    def encode(self, value) -> int:
        if self.fields is not None:
            if not isinstance(value, Mapping):
                raise TypeError(f"{self.name}: payload has fields, send a dict, not {value!r}")
            return pack_struct(self.fields, value)
        return to_unsigned(value, self.width, signed=self.signed, what=f"{self.name} payload")

    def decode(self, raw: int):
        if self.fields is not None:
            return unpack_struct(self.fields, raw)
        return to_signed(raw, self.width) if self.signed else raw

    def _read_payload(self) -> int:
        return 0 if self.payload is None else self.payload.value.to_unsigned()


class StreamSource(_StreamPort):
    """Drive the stream input ``<name>`` of ``dut`` (the design's ``In(stream.Signature)``).

    Beats queued with :meth:`send`/:meth:`send_nowait` are offered in order, one per cycle at
    most; a beat is removed from the queue when the design takes it (``valid & ready`` at an
    edge). A stall from the pause generator only delays the *next* beat: once ``valid`` is
    raised, it and the payload hold until the beat moves, as the stream rules require. While the
    reset (``dut.rst`` by default) is high, ``valid`` is held low and nothing moves.

    Payload values are ints (range-checked against the port width; negative ones when
    ``signed=True``), or dicts when ``fields`` (a :data:`Field` list) is given.
    """

    def __init__(self, dut, name: str, clock, *, reset=None, pause: Iterable[bool] | None = None,
                 fields: Sequence[Field] | None = None, signed: bool = False):
        super().__init__(dut, name, clock, reset=reset, pause=pause, fields=fields, signed=signed)
        self._queue: collections.deque[int] = collections.deque()
        self._has_beats = Event()
        self._idle = Event()
        self._idle.set()
        #: Number of beats the design has taken so far.
        self.sent = 0
        self.valid.value = 0
        self._task = cocotb.start_soon(self._run())

    async def send(self, value) -> None:
        """Queue one beat (never blocks: the queue is unbounded)."""
        self.send_nowait(value)

    def send_nowait(self, value) -> None:
        """Queue one beat."""
        self._queue.append(self.encode(value))
        self._idle.clear()
        self._has_beats.set()

    def count(self) -> int:
        """Number of beats queued and not yet taken by the design (including one on the bus)."""
        return len(self._queue)

    def idle(self) -> bool:
        return not self._queue

    async def wait(self) -> None:
        """Return once the design has taken every queued beat."""
        await self._idle.wait()

    async def _run(self) -> None:
        edge = RisingEdge(self.clock)
        offering = False  # whether valid was driven high for the cycle that just ended
        while True:
            if not offering and not self._queue:
                # Nothing to offer: sleep instead of waking every cycle. The pause generator
                # is advanced only in cycles with a beat to offer.
                self._idle.set()
                self._has_beats.clear()
                await self._has_beats.wait()
            await edge
            if self._in_reset():
                self.valid.value = 0
                offering = False
                continue
            if offering and self.ready.value:
                self._queue.popleft()
                self.sent += 1
                offering = False
            if offering:
                continue  # hold valid and payload until the design takes the beat
            if self._queue and not self._paused():
                if self.payload is not None:
                    self.payload.value = self._queue[0]
                self.valid.value = 1
                offering = True
            else:
                self.valid.value = 0


class StreamSink(_StreamPort):
    """Receive the stream output ``<name>`` of ``dut`` (the design's ``Out(stream.Signature)``)
    and check that the design obeys the stream rules on it.

    ``ready`` is driven high except in cycles the pause generator stalls. Every beat that moves
    is queued for :meth:`recv`. Every cycle the sink checks that once ``valid`` was high without
    the beat moving, ``valid`` stays high and the payload is unchanged in the next cycle; a
    violation is appended to :attr:`protocol_errors` and, when ``strict`` (the default), raised
    as :class:`StreamProtocolError` from the sink's task, which fails the running test.
    (That ``valid`` does not combinationally depend on ``ready`` cannot be seen from
    cycle samples; a unit test checks it by toggling ``ready`` within a cycle.)
    """

    def __init__(self, dut, name: str, clock, *, reset=None, pause: Iterable[bool] | None = None,
                 fields: Sequence[Field] | None = None, signed: bool = False, strict: bool = True):
        super().__init__(dut, name, clock, reset=reset, pause=pause, fields=fields, signed=signed)
        self.strict = strict
        self._queue: collections.deque[Any] = collections.deque()
        self._has_beats = Event()
        #: Number of beats received so far (including those already taken out with recv).
        self.received = 0
        #: Clock cycle (counted from the sink's creation) at which each beat moved.
        self.beat_cycles: list[int] = []
        #: Descriptions of every stream rule violation seen.
        self.protocol_errors: list[str] = []
        self.ready.value = 0
        self._task = cocotb.start_soon(self._run())

    def count(self) -> int:
        """Number of received beats not yet taken out with :meth:`recv`."""
        return len(self._queue)

    def empty(self) -> bool:
        return not self._queue

    async def recv(self):
        """Return the oldest received beat, waiting for one if none has arrived."""
        while not self._queue:
            self._has_beats.clear()
            await self._has_beats.wait()
        return self._queue.popleft()

    def recv_nowait(self):
        """Return the oldest received beat; :class:`IndexError` if none has arrived."""
        return self._queue.popleft()

    def _violation(self, cycle: int, message: str) -> None:
        message = f"{self.name} stream, cycle {cycle}: {message}"
        self.protocol_errors.append(message)
        self.log.error("protocol violation: %s", message)
        if self.strict:
            raise StreamProtocolError(message)

    async def _run(self) -> None:
        edge = RisingEdge(self.clock)
        cycle = 0
        held: int | None = None  # payload of a beat offered but not taken in the previous cycle
        ready = False
        while True:
            await edge
            cycle += 1
            if self._in_reset():
                held = None
                ready = not self._paused()
                self.ready.value = ready
                continue
            valid = bool(self.valid.value)
            payload = self._read_payload() if valid else None
            if held is not None:
                if not valid:
                    self._violation(cycle, f"valid dropped before the beat "
                                           f"{self.decode(held)!r} was taken")
                elif payload != held:
                    self._violation(cycle, f"payload changed from {self.decode(held)!r} to "
                                           f"{self.decode(payload)!r} while waiting for ready")
            if valid and ready:
                self._queue.append(self.decode(payload))
                self.received += 1
                self.beat_cycles.append(cycle)
                self._has_beats.set()
                held = None
            else:
                held = payload
            ready = not self._paused()
            self.ready.value = ready


# -- cycles, handshake monitor, done pulses, scoreboard -------------------------------------------

def cycle_now(period_ns: int = PERIOD_NS) -> int:
    """Index of the current clock cycle: simulation time // ``period_ns``.

    Right after a ``RisingEdge`` (where every driver and monitor here runs) the values a
    testbench samples are those of the cycle that just ended, ``cycle_now() - 1``: that is the
    number :class:`HandshakeMonitor` and :class:`DoneCounter` record.
    """
    return int(get_sim_time("ns")) // period_ns


#: A channel :class:`HandshakeMonitor` watches: ``(valid, ready)`` or ``(valid, ready, payload)``
#: signal handles, ``payload`` being one handle (recorded as an unsigned int), a mapping field
#: name -> handle (recorded as a dict of unsigned ints) or ``None`` (nothing recorded).
Channel = tuple


def stream_channel(dut, name: str, *, payload: bool = False) -> Channel:
    """The :data:`Channel` of the stream port ``name`` of ``dut`` (``<name>__valid``,
    ``<name>__ready`` and, with ``payload``, the flat ``<name>__payload``)."""
    return (getattr(dut, f"{name}__valid"), getattr(dut, f"{name}__ready"),
            getattr(dut, f"{name}__payload", None) if payload else None)


class HandshakeMonitor:
    """Records every beat that moves on a set of valid/ready channels: the cycle in which it
    moved (``valid & ready`` sampled right after a rising edge of ``clock``; cycle numbers as
    :func:`cycle_now` counts them, so they compare with it and with :class:`DoneCounter`) and,
    for channels with a payload, the payload. It only watches (drives nothing).

    ``channels`` is either a list of stream names of ``dut`` (their ``valid``/``ready`` ports,
    no payload) or a mapping name -> :data:`Channel` (``None`` for the stream port of that
    name); :func:`stream_channel` and :func:`tellme.sim.tb.axi.axi_channel` build channels.

    ``moves[name]`` lists the cycles, ``values[name]`` the payloads (channels with one), ``cycle``
    is the last cycle sampled; ``task`` is the running coroutine (:meth:`stop` cancels it).
    """

    def __init__(self, dut, clock, channels, *, period_ns: int = PERIOD_NS):
        if not isinstance(channels, Mapping):
            channels = {name: None for name in channels}
        self._channels = []
        for name, channel in channels.items():
            valid, ready, *rest = stream_channel(dut, name) if channel is None else channel
            self._channels.append((name, valid, ready, rest[0] if rest else None))
        self.moves: dict[str, list[int]] = {name: [] for name in channels}
        self.values: dict[str, list] = {name: [] for name in channels}
        self.period_ns = period_ns
        self.cycle = cycle_now(period_ns) - 1
        self._clock = clock
        self.task = cocotb.start_soon(self._run())

    async def _run(self):
        edge = RisingEdge(self._clock)
        while True:
            await edge
            self.cycle = cycle = cycle_now(self.period_ns) - 1
            for name, valid, ready, payload in self._channels:
                if valid.value == 1 and ready.value == 1:
                    self.moves[name].append(cycle)
                    if isinstance(payload, Mapping):
                        self.values[name].append({k: s.value.to_unsigned() for k, s in payload.items()})
                    elif payload is not None:
                        self.values[name].append(payload.value.to_unsigned())

    def mark(self) -> dict:
        """Beats moved so far per channel (to slice ``moves`` later)."""
        return {name: len(moves) for name, moves in self.moves.items()}

    def clear(self) -> None:
        """Forget every beat recorded so far."""
        for name in self.moves:
            self.moves[name].clear()
            self.values[name].clear()

    def stop(self) -> None:
        self.task.cancel()


class DoneCounter:
    """Records every cycle in which the pulse ``done`` is high (sampled like
    :class:`HandshakeMonitor`): ``cycles``. With ``count`` (a ``(valid, ready)`` pair, e.g. an
    AXI B channel), ``counts`` holds the handshakes seen on it up to and including each of those
    cycles. With ``error`` (a signal), the counter fails the running test in the first cycle
    ``error`` is high."""

    def __init__(self, clock, done, *, count: Channel | None = None, error=None, what: str = "design",
                 period_ns: int = PERIOD_NS):
        self.clock, self.done, self.count, self.error, self.what = clock, done, count, error, what
        self.period_ns = period_ns
        self.cycles: list[int] = []
        self.counts: list[int] = []
        self.handshakes = 0
        self.task = cocotb.start_soon(self._run())

    async def _run(self):
        edge = RisingEdge(self.clock)
        while True:
            await edge
            cycle = cycle_now(self.period_ns) - 1
            if self.count is not None and self.count[0].value and self.count[1].value:
                self.handshakes += 1
            if self.done.value:
                self.cycles.append(cycle)
                self.counts.append(self.handshakes)
            if self.error is not None and int(self.error.value):
                raise AssertionError(f"{self.what} raised error in cycle {cycle}")

    async def wait(self, pulses: int, cycles: int, what: str) -> None:
        """Return once ``pulses`` pulses were seen; :class:`CycleTimeout` after ``cycles``."""
        async def enough():
            while len(self.cycles) < pulses:
                await RisingEdge(self.clock)
        await with_timeout(enough(), self.clock, cycles, what)

    def stop(self) -> None:
        self.task.cancel()


async def expect_beats(sink: "StreamSink", expected: Sequence, clock, cycles: int, what: str, *,
                       mismatch=None, waiting=None, describe=None) -> None:
    """Check that ``sink`` receives exactly ``expected``, in order, within ``cycles`` cycles.

    Each beat is compared as it arrives, so a lost, duplicated or corrupted beat is reported at
    the first wrong position (a lost beat shows as the next one arriving early) rather than as
    a timeout. ``mismatch(index, got, want)`` returns the message for a wrong beat (by default
    it shows the beats sent around it); ``waiting()`` adds to the timeout message (what is left
    on the inputs, say); ``describe(index)`` says what expected beat ``index`` stands for, in
    the default mismatch message and the timeout message. Beats arriving after the last
    expected one are left in the sink.
    """
    received = 0

    def named(index: int) -> str:
        return f" ({describe(index)})" if describe is not None else ""

    async def scoreboard():
        nonlocal received
        for index, want in enumerate(expected):
            got = await sink.recv()
            if got != want:
                if mismatch is not None:
                    raise AssertionError(mismatch(index, got, want))
                raise AssertionError(
                    f"{what}: beat {index}{named(index)} is {got!r}, expected {want!r} (the beats "
                    f"around it were sent as {expected[max(0, index - 2):index + 3]!r})")
            received += 1

    try:
        await with_timeout(scoreboard(), clock, cycles, what)
    except CycleTimeout:
        extra = f"; {waiting()}" if waiting is not None else ""
        raise CycleTimeout(f"{what}: only {received} of {len(expected)} beats arrived within "
                           f"{cycles} cycles; next expected {expected[received]!r}"
                           f"{named(received)}{extra}") from None
