"""cocotb tests of :class:`tellme.hw.striped_read.StripedReadMaster`.

The design under test is the unit itself: ports ``cmd__*``, ``rdata__*``, ``axi__<k>__*`` (one
AXI read port per stripe), ``stripe_base``, ``stripe_bytes``, ``error``, ``clear_error``,
``busy``. Configuration (``tb_config()``): ``ports`` (P), ``data_width`` (B = ``data_width / 8``
bytes per AXI beat, W = P x B bytes per logical word), ``max_burst``, ``max_outstanding``,
``addr_width``, ``seed`` and optionally ``commands`` (random test), ``full_rate_beats``,
``results``.

The golden model is the unit's docstring: a *layout* (``stripe_base``, ``stripe_bytes``) puts
stripe k at ``stripe_base + k * stripe_bytes``; the logical stream is
:func:`~tellme.hw.striped_read.unstripe` of the P stripes (checked against an explicit
construction by ``tests/test_striped_read.py``), and a command {addr, beats} (addr a multiple
of W) must deliver its words ``stream[addr + i W : addr + (i + 1) W]`` as ``rdata`` beats
(port k's B bytes in bits [k dw, (k+1) dw)), ``last`` exactly on the final one; port k must
read exactly ``beats`` beats at ``stripe_base + k * stripe_bytes + addr / P``.

Subordinates: one cocotbext-axi :class:`AxiRamRead` per port, all on one memory image, each
channel with its own random pause generator, port k pausing more than port k - 1 (so the ports
run out of step and the all-valid gate and the per-master command hand-off are exercised);
:class:`~.tb_axi.ReadResponder` (the AXI master tests' minimal subordinate) on the ports that
answer SLVERR/DECERR in the error test and on every port in the full-rate test (a different
latency per port).

Checks on top of the data: :class:`~.tb_axi.ManagerMonitor` on *each* port (AXI rules, INCR
full-width bursts of at most ``max_burst`` beats never crossing 4 KiB, bursts tiling that port's
commands exactly and in order, at most ``max_outstanding`` in flight), the stream rules on
``rdata`` (:class:`~.streams.StreamSink`), :class:`~.tb_axi.StickyChecker` on ``error`` against
the error responses of all ports, :class:`BusyChecker` (``busy`` high from the cycle after a
command is taken until its final word moved) and ``busy`` low at the end.

Tests (each under a watchdog):

``read_random``
    Five phases, each with its own random layout (4 KiB aligned, stripes disjoint, inside
    memory), changed while the unit is idle: the first phase's stripes hold :func:`stripe` of a
    random stream whose length is no multiple of W (expected: that stream, zero-padded; its
    last word is read too), the others read the random memory image. Phases 0, 1, 3: random
    commands (``commands`` in all; 1 to several hundred words, a third of them with per-port
    addresses 1-3 beats before a 4 KiB boundary), random stalls on ``cmd`` and ``rdata``.
    Phases 2, 4: 16 short commands back to back, the AR channels setting the pace, so that a
    master is done with a command before a slower one has taken it (:func:`handoff_hazards`
    counts these; with more than one burst in flight the test requires some). In phases 1 and
    3 the first command is offered exactly one cycle after the layout changed (the earliest the
    docstring allows) and is checked to be taken then.
``read_errors``
    SLVERR on a page of the last port's stripe, DECERR on a page of port 0's: ``error`` rises
    after the first error beat, stays high until ``clear_error``, and every word still arrives
    in place (the erring port's part zero, the others' data intact, ``last`` where it belongs).
``read_full_rate``
    No stalls, a subordinate per port answering 1, 2, 3, 1, ... cycles after AR: every port's
    first AR two cycles after the command is taken, and one long command streams at (nearly) one
    logical word per cycle despite the skew.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from ...contract.layouts import PAGE
from ...hw.axi_bursts import command_layout
from ...hw.axi_read import read_data_layout
from ...contract.layouts import stripe, unstripe
from .axi import axi_ram_read, random_pauses
from .streams import (HandshakeMonitor, StreamSink, StreamSource, cycle_now, random_pause, struct_fields,
                      unpack_struct, with_timeout)
from .tb_axi import ManagerMonitor, ReadResponder, StickyChecker, _resp_for, random_commands
from .testbench import Testbench

MEM_SIZE = 1 << 20          # 1 MiB of modelled memory, shared by the ports


# -- golden model ---------------------------------------------------------------------------------

def port_address(layout: tuple[int, int], port: int, ports: int, addr: int) -> int:
    """Where port ``port`` reads the command at logical ``addr`` (the docstring's mapping)."""
    base, stripe_bytes = layout
    return base + port * stripe_bytes + addr // ports


def logical_stream(memory, layout: tuple[int, int], ports: int, beat: int) -> bytes:
    """The logical byte stream of the ``ports`` stripes of ``layout`` in ``memory``."""
    base, stripe_bytes = layout
    return unstripe([bytes(memory[base + k * stripe_bytes:base + (k + 1) * stripe_bytes]) for k in range(ports)],
                    beat_bytes=beat)


# -- checkers -------------------------------------------------------------------------------------

class _AnyErrorResponse:
    """``.value``: 1 in a cycle where an R beat with RRESP != OKAY moves on any port (the
    ``valid`` of :class:`~.tb_axi.StickyChecker`, whose ``ready`` and ``resp`` are :class:`_One`)."""

    def __init__(self, dut, ports: int):
        self.channels = [tuple(getattr(dut, f"axi__{k}__r{s}") for s in ("valid", "ready", "resp"))
                         for k in range(ports)]

    @property
    def value(self) -> int:
        return int(any(v.value and r.value and int(s.value) for v, r, s in self.channels))


class _One:
    value = 1


class BusyChecker:
    """Checks every cycle that ``busy`` is high while a command taken on ``cmd`` (in an earlier
    cycle) has words not yet moved on ``rdata`` (the final word's cycle included)."""

    def __init__(self, dut, clock, cmd_fields):
        self.dut, self.clock, self.cmd_fields = dut, clock, cmd_fields
        self.pending = 0
        self.mismatches: list[str] = []
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        dut, edge = self.dut, RisingEdge(self.clock)
        while True:
            await edge
            if dut.rst.value:
                self.pending = 0
                continue
            if self.pending and not dut.busy.value:
                message = f"cycle {cycle_now() - 1}: busy low with {self.pending} words still to come"
                self.mismatches.append(message)
                raise AssertionError(message)
            if dut.cmd__valid.value and dut.cmd__ready.value:
                self.pending += unpack_struct(self.cmd_fields, dut.cmd__payload.value.to_unsigned())["beats"]
            if dut.rdata__valid.value and dut.rdata__ready.value:
                self.pending -= 1


class _Pause:
    """A random pause generator that :meth:`go` makes not stall once (the next draw), and
    ``off`` not at all."""

    def __init__(self, probability: float, seed: int):
        self._gen = random_pause(probability, seed)
        self._go = False
        self.off = False

    def go(self) -> None:
        self._go = True

    def __iter__(self):
        return self

    def __next__(self) -> bool:
        if self._go or self.off:
            self._go = False
            return False
        return next(self._gen)


def handoff_hazards(monitors) -> int:
    """How many commands some port had finished (its final AR) before another port had finished
    the command before (so before that port's master could take it): commands a master had
    taken and was done with while the unit still offered them to a slower master, which then
    must not take them again. From the monitors' burst records (a lower bound)."""
    finals = [[cycle for cycle, _, _, final in monitor.bursts if final] for monitor in monitors]
    return sum(1 for n in range(1, min(map(len, finals)))
               if min(f[n] for f in finals) <= max(f[n - 1] for f in finals))


# -- the testbench object -------------------------------------------------------------------------

class StripedTB(Testbench):
    """The unit with its clock, idle inputs and a watchdog of ``watchdog_cycles``; the
    configuration in attributes (``ports``, ``data_width``, ``beat``, ``word``, ...)."""

    def __init__(self, dut, watchdog_cycles: int):
        super().__init__(dut)
        cfg = self.cfg
        self.ports = int(cfg.get("ports", 4))
        self.data_width = int(cfg.get("data_width", 128))
        self.beat = self.data_width // 8
        self.word = self.ports * self.beat
        self.max_burst = int(cfg.get("max_burst", 256))
        self.max_outstanding = int(cfg.get("max_outstanding", 4))
        self.addr_width = int(cfg.get("addr_width", 40))
        self.seed = int(cfg.get("seed", 1))
        self.commands = int(cfg.get("commands", 24))
        self.full_rate_beats = int(cfg.get("full_rate_beats", 2048))
        self.cmd_fields = struct_fields(command_layout(self.addr_width))
        self.data_fields = struct_fields(read_data_layout(self.ports * self.data_width))
        self.watchdog(watchdog_cycles)
        self.hold_low("cmd__valid", "rdata__ready", "clear_error", "stripe_base", "stripe_bytes")

    def log_config(self, what: str) -> None:
        self.log.info("%s: ports=%d data_width=%d max_burst=%d max_outstanding=%d seed=%d", what, self.ports,
                      self.data_width, self.max_burst, self.max_outstanding, self.seed)

    def set_layout(self, layout: tuple[int, int]) -> None:
        self.dut.stripe_base.value, self.dut.stripe_bytes.value = layout

    def random_layout(self, rng: random.Random) -> tuple[int, int]:
        """A random (stripe_base, stripe_bytes): 4 KiB aligned, 16..64 KiB per stripe (at most
        half the memory in all), the stripes of the P ports disjoint and inside the memory."""
        stripe_bytes = PAGE * rng.randint(4, max(4, min(16, MEM_SIZE // (2 * self.ports * PAGE))))
        base = PAGE * rng.randrange((MEM_SIZE - self.ports * stripe_bytes) // PAGE + 1)
        return base, stripe_bytes

    def random_commands(self, rng: random.Random, count: int, stripe_bytes: int, max_beats: int = 700):
        """``count`` logical commands (addr, beats) inside stripes of ``stripe_bytes``: the AXI
        master tests' random commands placed in one stripe's offsets (a third of them 1-3 beats
        before a 4 KiB boundary of the stripe, hence of every port), scaled by P."""
        return [(offset * self.ports, beats)
                for offset, beats in random_commands(rng, count, beat=self.beat, max_beats=max_beats,
                                                     region=(0, stripe_bytes))]

    def short_commands(self, rng: random.Random, count: int, stripe_bytes: int):
        """``count`` logical commands of mostly 1..8 words (some up to 64), a third of them 1-3
        beats before a 4 KiB boundary of the stripe: back to back, they make the masters take
        commands far apart (one master done with a command before a slower one took it)."""
        P, B = self.ports, self.beat
        commands = []
        for _ in range(count):
            beats = rng.randint(1, 8) if rng.random() < 0.8 else rng.randint(9, 64)
            if rng.random() < 0.35:
                offset = PAGE * rng.randint(1, stripe_bytes // PAGE - 1) - rng.randint(1, 3) * B
            else:
                offset = rng.randrange((stripe_bytes - beats * B) // B + 1) * B
            commands.append((offset * P, beats))
        return commands

    def port_commands(self, phases) -> list[list[tuple[int, int]]]:
        """Per port, the (address, beats) it must read for ``phases`` [(layout, commands)]."""
        return [[(port_address(layout, k, self.ports, addr), beats) for layout, commands in phases
                 for addr, beats in commands] for k in range(self.ports)]

    def monitors(self, phases) -> list[ManagerMonitor]:
        """A :class:`~.tb_axi.ManagerMonitor` on every port over its commands."""
        return [ManagerMonitor(self.dut, f"axi__{k}", "read", cmds, clock=self.clock, reset=self.dut.rst,
                               beat=self.beat, max_burst=self.max_burst, max_outstanding=self.max_outstanding)
                for k, cmds in enumerate(self.port_commands(phases))]

    def sticky(self) -> StickyChecker:
        return StickyChecker(self.clock, self.dut.error, self.dut.clear_error, _AnyErrorResponse(self.dut, self.ports),
                             _One(), _One())

    def streams(self, rng: random.Random | None = None, cmd_pause: float = 0.0, data_pause: float = 0.0):
        """The command source and the data sink, stalling at random with the given probabilities
        (seeds drawn from ``rng``); the source's pause generator is ``cmd_pause`` (a
        :class:`_Pause`, or None)."""
        cmd_gen = _Pause(cmd_pause, rng.randrange(1 << 30)) if cmd_pause else None
        data_gen = random_pause(data_pause, rng.randrange(1 << 30)) if data_pause else None
        self.cmd_pause = cmd_gen
        source = StreamSource(self.dut, "cmd", self.clock, fields=self.cmd_fields, pause=cmd_gen)
        return source, StreamSink(self.dut, "rdata", self.clock, fields=self.data_fields, pause=data_gen)

    def expected(self, stream: bytes, commands, layout=None, errors=None):
        """(data, last) of every word of ``commands`` read from the logical ``stream``; with
        ``errors`` {port: [(lo, hi, resp)]}, the B bytes of a port whose beat (at the docstring's
        address in ``layout``) gets an error response are zero (the responder's error data)."""
        W, B, P = self.word, self.beat, self.ports
        words = []
        for addr, beats in commands:
            for i in range(beats):
                a = addr + i * W
                data = bytearray(stream[a:a + W])
                assert len(data) == W, f"command {addr:#x} x {beats} beyond the stream ({len(stream)} bytes)"
                for k, ranges in (errors or {}).items():
                    if _resp_for(ranges, port_address(layout, k, P, a), B):
                        data[k * B:(k + 1) * B] = bytes(B)
                words.append((int.from_bytes(data, "little"), int(i == beats - 1)))
        return words

    async def collect_and_check(self, sink, expected, what: str, cycles: int = 50_000):
        """Receive ``expected`` (data, last) in order; a wrong word names the ports that differ."""
        B, dw = self.beat, self.data_width
        mask = (1 << dw) - 1
        for index, (data, last) in enumerate(expected):
            got = await with_timeout(sink.recv(), self.clock, cycles, f"{what}: word {index} of {len(expected)}")
            if got["data"] != data or got["last"] != last:
                bad = [k for k in range(self.ports) if (got["data"] >> k * dw) & mask != (data >> k * dw) & mask]
                raise AssertionError(
                    f"{what}: word {index}: last={got['last']} (expected {last}); ports differing: {bad}; got "
                    f"{got['data'].to_bytes(self.word, 'little').hex(' ', B)}, expected "
                    f"{data.to_bytes(self.word, 'little').hex(' ', B)}")

    async def wait_idle(self, what: str, cycles: int = 2000) -> None:
        """Until ``busy`` is low (sampled at an edge)."""
        await self.wait_until(lambda: not int(self.dut.busy.value), cycles, f"{what}: busy to fall")

    async def clear_error(self) -> None:
        """Pulse ``clear_error`` for one cycle (while no response moves)."""
        self.dut.clear_error.value = 1
        await RisingEdge(self.clock)
        self.dut.clear_error.value = 0
        await ClockCycles(self.clock, 2)

    async def check_error(self, expected: int, test: str, phase: str) -> None:
        await ClockCycles(self.clock, 3)
        assert int(self.dut.error.value) == expected, f"after phase {phase!r}: error={int(self.dut.error.value)}"
        self.log.info("%s: phase %-18s error=%d", test, phase, expected)

    def check_end(self, sink, monitors, busy, sticky, expected_count: int) -> None:
        assert sink.count() == 0, f"{sink.count()} words beyond the {expected_count} expected"
        for monitor in monitors:
            monitor.check_done()
        assert not int(self.dut.busy.value), "busy still high after the last word"
        assert not busy.mismatches and not sticky.mismatches


# -- tests ----------------------------------------------------------------------------------------

@cocotb.test()
async def read_random(dut):
    """Random layouts and commands against P AxiRamReads on one memory, random pauses on every
    channel of every port and on cmd and rdata: every word once, in order, equal to the golden
    stream, ``last`` exactly on each command's final word (see the module doc)."""
    tb = StripedTB(dut, 3_000_000)
    tb.log_config("read_random")
    P, B, W = tb.ports, tb.beat, tb.word
    rng = random.Random(tb.seed * 1000 + 1)
    memory = bytearray(rng.randbytes(MEM_SIZE))

    # -- phases: (layout, commands, logical stream, short): 0, 1, 3 with random commands, 2 and
    # 4 with short ones back to back
    count = 3
    per_phase = [tb.commands // count + (i < tb.commands % count) for i in range(count)]
    phases = []
    layout = tb.random_layout(rng)
    # phase 0: the stripes of a random stream (no multiple of W long) written into memory
    length = rng.randrange(P * layout[1] // 2, P * layout[1] - W)
    length += (length % W == 0)
    stream = rng.randbytes(length)
    stripes = stripe(stream, ports=P, beat_bytes=B)
    assert all(len(s) == -(-length // W) * B for s in stripes)
    for k, s in enumerate(stripes):
        memory[layout[0] + k * layout[1]:layout[0] + k * layout[1] + len(s)] = s
    padded = stream + bytes(-length % W)
    phases.append((layout, tb.random_commands(rng, per_phase[0], len(stripes[0])), padded, False))
    # the last word, partly padding, is read
    phases[0][1].append(((len(padded) - W), 1))
    for n in [per_phase[1], None, per_phase[2], None]:
        layout = tb.random_layout(rng)
        commands = tb.short_commands(rng, 16, layout[1]) if n is None else tb.random_commands(rng, n, layout[1])
        phases.append((layout, commands, logical_stream(memory, layout, P, B), n is None))

    rams = [axi_ram_read(dut, "axi__0", tb.clock, MEM_SIZE, image=memory)]
    rams += [axi_ram_read(dut, f"axi__{k}", tb.clock, MEM_SIZE, mem=rams[0].mem) for k in range(1, P)]

    def pauses(short: bool) -> None:
        """Random phases: every channel of port k pauses with probability 0.1 .. 0.6 (the last
        port slowest), rdata with 0.3; short phases: AR of port k with 0.1 .. 0.7, R with 0.1,
        rdata never, so the AR channels, not the data, set the pace and the masters drift apart
        (take commands in different cycles, wait for each other's data)."""
        for k, ram in enumerate(rams):
            spread = k / max(1, P - 1)
            if short:
                ram.ar_channel.set_pause_generator(random_pause(0.1 + 0.6 * spread, rng.randrange(1 << 30)))
                ram.r_channel.set_pause_generator(random_pause(0.1, rng.randrange(1 << 30)))
            else:
                random_pauses([ram], 0.1 + 0.5 * spread, rng)
        sink.set_pause_generator(None if short else random_pause(0.3, rng.randrange(1 << 30)))

    monitors = tb.monitors([(lay, cmds) for lay, cmds, _, _ in phases])
    sticky, busy = tb.sticky(), BusyChecker(dut, tb.clock, tb.cmd_fields)
    source, sink = tb.streams(rng, 0.4, 0.3)
    cmd_moves = HandshakeMonitor(dut, tb.clock, ["cmd"])
    await tb.reset()
    start = tb.cycle()
    total = 0
    for index, (layout, commands, stream, short) in enumerate(phases):
        tight = index % 2 == 1              # first command offered one cycle after the layout
        if not tight:
            await ClockCycles(tb.clock, rng.randint(1, 5))
        tb.set_layout(layout)
        set_cycle = tb.cycle()              # the layout holds from this cycle on
        if tight:
            tb.cmd_pause.go()
        else:
            await ClockCycles(tb.clock, rng.randint(1, 4))
        tb.cmd_pause.off = short
        pauses(short)
        mark = len(cmd_moves.moves["cmd"])
        for addr, beats in commands:
            source.send_nowait({"addr": addr, "beats": beats})
        expected = tb.expected(stream, commands)
        await tb.collect_and_check(sink, expected, f"read_random phase {index} (layout {layout[0]:#x}, "
                                                   f"{layout[1]:#x})")
        total += len(expected)
        await tb.wait_idle(f"phase {index}")
        first = cmd_moves.moves["cmd"][mark]
        if tight:
            assert first == set_cycle + 1, f"phase {index}: layout set in cycle {set_cycle}, first command " \
                                           f"taken in cycle {first}"
        tb.log.info("read_random: phase %d layout (%#x, %#x): %d commands, %d words (first command taken %d "
                    "cycles after the layout)", index, *layout, len(commands), len(expected), first - set_cycle)
    await ClockCycles(tb.clock, 50)
    tb.check_end(sink, monitors, busy, sticky, total)
    assert sticky.high_cycles == 0 and not int(dut.error.value), "error raised without an error response"
    assert len(cmd_moves.moves["cmd"]) == sum(len(c) for _, c, _, _ in phases)
    tb.log.info("read_random: %d phases, %d words, bursts per port %s (max in flight %s) in %d cycles",
                len(phases), total, [len(m.bursts) for m in monitors], [m.max_in_flight for m in monitors],
                tb.cycle() - start)
    hazards = handoff_hazards(monitors)
    # (With one burst in flight a master's next AR waits for its last burst's data, which come in
    # step with every port's, so no master can get a whole command ahead: no hazard possible.)
    assert P == 1 or tb.max_outstanding == 1 or hazards, \
        "no master was done with a command before another took it: stimulus too tame"
    tb.record("read_random", {"phases": len(phases), "handoff_hazards": hazards,
                              "commands": len(cmd_moves.moves["cmd"]), "words": total, "cycles": tb.cycle() - start,
                              "bursts": [len(m.bursts) for m in monitors],
                              "max_in_flight": [m.max_in_flight for m in monitors]})


@cocotb.test()
async def read_errors(dut):
    """SLVERR on a page of the last port's stripe and DECERR on a page of port 0's (a
    :class:`~.tb_axi.ReadResponder` on those ports, AxiRamReads with random pauses on the
    others): ``error`` sticky until ``clear_error``, the stream complete and aligned."""
    tb = StripedTB(dut, 2_000_000)
    tb.log_config("read_errors")
    P, B = tb.ports, tb.beat
    rng = random.Random(tb.seed * 1000 + 2)
    memory = bytearray(rng.randbytes(MEM_SIZE))
    layout = (0x10000, 0x8000)
    base, sb = layout
    last = P - 1
    errors = {last: [(base + last * sb + 0x4000, base + last * sb + 0x5000, 2)]}
    errors.setdefault(0, []).append((base + 0x6000, base + 0x7000, 3))
    rams = []
    for k in range(P):
        prefix = f"axi__{k}"
        if k in errors:
            ReadResponder(dut, prefix, tb.clock, memory, beat=B, latency=3, queue=4, errors=errors[k],
                          ar_pause=random_pause(0.3, rng.randrange(1 << 30)),
                          r_pause=random_pause(0.3, rng.randrange(1 << 30)))
        else:
            rams.append(axi_ram_read(dut, prefix, tb.clock, MEM_SIZE, image=memory))
    random_pauses(rams, 0.3, rng)
    stream = logical_stream(memory, layout, P, B)

    def logical(cmds):                     # stripe offsets -> logical addresses
        return [(offset * P, beats) for offset, beats in cmds]
    good = logical([(0x1000 - B, 20), (0x2000, 300), (0x3000 + 3 * B, 5)])
    into_slverr = logical([(0x4000 - 10 * B, 30)])      # 10 good words, then SLVERR on the last port
    in_decerr = logical([(0x6800, 1), (0x6000, 3)])        # port 0 only
    phases = [("good", good, 0), ("slverr", into_slverr, 1), ("good after error", good, 1),
              ("clear", [], 0), ("good after clear", good, 0), ("decerr", in_decerr, 1),
              ("mixed", good[:1] + into_slverr + good[1:], 1), ("clear", [], 0)]
    all_commands = [c for _, cmds, _ in phases for c in cmds]
    monitors = tb.monitors([(layout, all_commands)])
    sticky, busy = tb.sticky(), BusyChecker(dut, tb.clock, tb.cmd_fields)
    source, sink = tb.streams(rng, 0.3, 0.3)
    await tb.reset()
    tb.set_layout(layout)
    await ClockCycles(tb.clock, 2)
    total = 0
    for name, commands, error_after in phases:
        if name == "clear":
            await tb.clear_error()
        for addr, beats in commands:
            source.send_nowait({"addr": addr, "beats": beats})
        expected = tb.expected(stream, commands, layout, errors)
        total += len(expected)
        await tb.collect_and_check(sink, expected, f"phase {name}")
        await tb.wait_idle(name)
        await tb.check_error(error_after, "read_errors", name)
    await ClockCycles(tb.clock, 20)
    tb.check_end(sink, monitors, busy, sticky, total)
    assert all(monitors[k].error_cycles for k in errors), "a responder sent no error response"
    assert not any(m.error_cycles for k, m in enumerate(monitors) if k not in errors)
    tb.record("read_errors", {"words": total, "error_beats": [len(m.error_cycles) for m in monitors]})


@cocotb.test()
async def read_full_rate(dut):
    """No stalls anywhere, port k's subordinate answering 1 + k % 3 cycles after AR: one long
    command streams at (nearly) one logical word per cycle."""
    tb = StripedTB(dut, 200_000)
    P, B = tb.ports, tb.beat
    beats = tb.full_rate_beats
    stripe_bytes = -(-beats * B // PAGE) * PAGE + PAGE
    layout = (0x10000, stripe_bytes)
    memory = bytearray(random.Random(tb.seed).randbytes(MEM_SIZE))
    latencies = [1 + k % 3 for k in range(P)]
    for k in range(P):
        ReadResponder(dut, f"axi__{k}", tb.clock, memory, beat=B, latency=latencies[k], queue=64)
    commands = [(0, beats)]
    monitors = tb.monitors([(layout, commands)])
    source, sink = tb.streams()
    cmd_moves = HandshakeMonitor(dut, tb.clock, ["cmd"])
    await tb.reset()
    tb.set_layout(layout)
    await RisingEdge(tb.clock)
    source.send_nowait({"addr": 0, "beats": beats})
    first = tb.cycle()                      # the command is offered from the next cycle on
    await tb.collect_and_check(sink, tb.expected(logical_stream(memory, layout, P, B), commands), "full-rate read")
    last = tb.cycle() - 1                   # cycle in which the final word moved
    for monitor in monitors:
        monitor.check_done()
    # the docstring's latency: every master's first AR two cycles after the command is taken
    taken = cmd_moves.moves["cmd"][0]
    assert [m.bursts[0][0] - taken for m in monitors] == [2] * P, \
        f"command taken in cycle {taken}, first ARs in cycles {[m.bursts[0][0] for m in monitors]}"
    cycles = last - first + 1
    rate = beats / cycles
    tb.log.info("FULL-RATE striped read: ports=%d data_width=%d max_burst=%d max_outstanding=%d latencies %s: "
                "%d words (%d bursts per port) in %d cycles = %.4f words/cycle (%.2f B/cycle, peak %d)", P,
                tb.data_width, tb.max_burst, tb.max_outstanding, latencies, beats, len(monitors[0].bursts),
                cycles, rate, rate * tb.word, tb.word)
    tb.record("read_full_rate", {"words": beats, "cycles": cycles, "words_per_cycle": round(rate, 4)})
    # With one burst in flight per port, each burst pays the AR round trip of the slowest port
    # (about its latency + 3 cycles): the plain master's rate, as in tb_axi.
    mb = min(tb.max_burst, PAGE // B)
    floor = 0.9 if tb.max_outstanding > 1 else 0.95 * mb / (mb + max(latencies) + 3)
    assert rate >= floor, f"{beats} words took {cycles} cycles ({rate:.3f} words/cycle < {floor:.3f})"
