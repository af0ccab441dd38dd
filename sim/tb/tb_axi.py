"""cocotb tests of :class:`tellme.hw.axi_read.AxiReadMaster` and
:class:`tellme.hw.axi_write.AxiWriteMaster`.

The design under test is a wrapper (``tests/test_axi.py``) holding one read and one write master
with the same parameters; their ports appear with the prefixes ``rd_`` and ``wr_`` (Verilog
``rd_axi__arvalid``, ``rd_cmd__valid``, ``wr_wdata__payload``, ``wr_done``, ...). Configuration
(``tb_config()``): ``data_width``, ``max_burst``, ``max_outstanding``, ``seed`` and optionally
``commands`` (per random test) and ``full_rate_beats``.

Subordinates:

- cocotbext-axi's :class:`AxiRamRead` / :class:`AxiRamWrite` with a random pause generator on
  every channel (AR, R / AW, W, B) for the random traffic tests;
- :class:`ReadResponder` / :class:`WriteResponder` below (minimal per-cycle AXI subordinates) for
  error responses (SLVERR/DECERR on address ranges) and for the full-rate measurements (never
  stalling, one cycle from AR to R).

:class:`ManagerMonitor` watches every channel the master drives and checks the AXI rules and the
burst contract: VALID never drops and the payload never changes before READY (AR, AW, W); bursts
are INCR, full width (xxSIZE = beat size), at most ``max_burst`` beats, aligned, never cross
4 KiB, and tile each command exactly, in order; at most ``max_outstanding`` bursts in flight;
W beats never run ahead of the AW'd bursts, WLAST exactly on each burst's final beat, all byte
strobes set. :class:`StickyChecker` checks the ``error`` output every cycle against the sticky
rule (set by an error response, held until ``clear_error``). Every test runs under a watchdog.
"""

from __future__ import annotations

import collections
import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from ...contract.layouts import PAGE
from ...hw.axi_read import read_command_layout, read_data_layout
from .axi import axi_ram_read, axi_ram_write, random_pauses
from .streams import DoneCounter, StreamSink, StreamSource, cycle_now, random_pause, struct_fields, with_timeout
from .testbench import Testbench

MEM_SIZE = 1 << 21          # 2 MiB of modelled memory
RESP_NAMES = {0: "OKAY", 1: "EXOKAY", 2: "SLVERR", 3: "DECERR"}


# -- stimulus -------------------------------------------------------------------------------------

def random_commands(rng: random.Random, count: int, *, beat: int, max_beats: int = 4000,
                    disjoint: bool = False, region: tuple[int, int] = (0, MEM_SIZE)):
    """``count`` commands (addr, beats): lengths from 1 beat to several thousand (mostly short,
    some long), aligned addresses, a third of them starting 1-3 beats before a 4 KiB boundary.
    With ``disjoint`` the byte ranges do not overlap (and leave gaps between them)."""
    lo, hi = region
    commands: list[tuple[int, int]] = []
    taken: list[tuple[int, int]] = []
    tries = 0
    while len(commands) < count:
        tries += 1
        if tries > 100_000:
            raise RuntimeError("could not place the commands; region too small")
        kind = rng.random()
        if kind < 0.35:
            beats = rng.randint(1, 8)
        elif kind < 0.75:
            beats = rng.randint(9, 600)
        else:
            beats = rng.randint(601, max_beats)
        size = beats * beat
        if size > hi - lo:
            continue
        if rng.random() < 0.35:          # just before a 4 KiB boundary
            page = rng.randrange((lo + PAGE) // PAGE, max(lo // PAGE + 2, hi // PAGE))
            addr = page * PAGE - rng.randint(1, 3) * beat
        else:
            addr = lo + rng.randrange((hi - lo - size) // beat + 1) * beat
        if addr < lo or addr + size > hi:
            continue
        if disjoint and any(addr < e + beat and s < addr + size + beat for s, e in taken):
            continue
        taken.append((addr, addr + size))
        commands.append((addr, beats))
    return commands


# -- monitors -------------------------------------------------------------------------------------

class AxiRuleError(AssertionError):
    """The master broke an AXI rule or the burst contract."""


class ManagerMonitor:
    """Checks every cycle what an AXI manager drives (see the module doc).

    ``kind`` is ``"read"`` (channels AR, R of ``<prefix>__ar*``/``r*``) or ``"write"`` (AW, W,
    B). ``commands`` is the list of (addr, beats) commands in the order the test sends them;
    bursts must tile them exactly. Violations raise :class:`AxiRuleError` from the monitor's
    task (which fails the test) and are kept in :attr:`errors`.
    """

    def __init__(self, dut, prefix: str, kind: str, commands, *, clock, reset, beat: int, max_burst: int,
                 max_outstanding: int):
        self.kind, self.clock, self.reset, self.beat = kind, clock, reset, beat
        a = "ar" if kind == "read" else "aw"
        self.a = a
        get = lambda s: getattr(dut, f"{prefix}__{s}")  # noqa: E731
        self.avalid, self.aready = get(f"{a}valid"), get(f"{a}ready")
        self.apayload = [get(f"{a}{s}") for s in ("addr", "len", "size", "burst", "id", "cache", "prot",
                                                  "lock", "qos")]
        if kind == "read":
            self.rvalid, self.rready, self.rlast, self.rresp = get("rvalid"), get("rready"), get("rlast"), get("rresp")
        else:
            self.wvalid, self.wready = get("wvalid"), get("wready")
            self.wdata, self.wstrb, self.wlast = get("wdata"), get("wstrb"), get("wlast")
            self.bvalid, self.bready, self.bresp = get("bvalid"), get("bready"), get("bresp")
        self.commands = list(commands)
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.errors: list[str] = []
        #: (cycle, addr, beats, final) of every address handshake; final = ends its command.
        self.bursts: list[tuple[int, int, int, bool]] = []
        #: cycles of every error response handshake (R beats or B responses)
        self.error_cycles: list[int] = []
        #: cycles of the completion of each burst (last R beat / B response), and of final ones
        self.completions: list[int] = []
        self.final_completions: list[int] = []
        self.data_beats = 0          # R beats or W beats that moved
        self.max_in_flight = 0
        self._cmd_index = 0
        self._cursor = None          # next byte address expected in the current command
        self._left = 0               # bytes of the current command not yet covered
        self._task = cocotb.start_soon(self._run())

    def _fail(self, cycle: int, message: str) -> None:
        message = f"{self.kind} channels, cycle {cycle}: {message}"
        self.errors.append(message)
        raise AxiRuleError(message)

    def _address(self, cycle: int, payload) -> None:
        addr, length, size, burst, *_ = payload
        beats = length + 1
        a = self.a.upper()
        if burst != 1:
            self._fail(cycle, f"{a}BURST={burst}, expected INCR (1)")
        if 1 << size != self.beat:
            self._fail(cycle, f"{a}SIZE={size} ({1 << size} bytes), beat is {self.beat} bytes")
        if beats > self.max_burst:
            self._fail(cycle, f"{a}LEN+1={beats} > max_burst {self.max_burst}")
        if addr % self.beat:
            self._fail(cycle, f"{a}ADDR={addr:#x} not aligned to {self.beat} bytes")
        if addr % PAGE + beats * self.beat > PAGE:
            self._fail(cycle, f"burst {a}ADDR={addr:#x} x {beats} beats crosses a 4 KiB boundary")
        if self._left == 0:
            if self._cmd_index >= len(self.commands):
                self._fail(cycle, f"burst {addr:#x} x {beats} beyond the {len(self.commands)} commands sent")
            start, cmd_beats = self.commands[self._cmd_index]
            self._cmd_index += 1
            self._cursor, self._left = start, cmd_beats * self.beat
        if addr != self._cursor:
            self._fail(cycle, f"burst at {addr:#x}, expected {self._cursor:#x} (command "
                              f"{self._cmd_index - 1}: {self.commands[self._cmd_index - 1]})")
        if beats * self.beat > self._left:
            self._fail(cycle, f"burst {addr:#x} x {beats} beats runs {beats * self.beat - self._left} bytes past "
                              f"the end of command {self._cmd_index - 1}")
        self._cursor += beats * self.beat
        self._left -= beats * self.beat
        self.bursts.append((cycle, addr, beats, self._left == 0))
        in_flight = len(self.bursts) - len(self.completions)
        self.max_in_flight = max(self.max_in_flight, in_flight)
        if in_flight > self.max_outstanding:
            self._fail(cycle, f"{in_flight} bursts in flight > max_outstanding {self.max_outstanding}")

    async def _run(self) -> None:
        edge = RisingEdge(self.clock)
        held_a = None      # payload of an address offer not taken in the previous cycle
        held_w = None
        w_in_burst = 0     # W beats of the current burst so far
        w_burst = 0        # index of the burst the W beats belong to
        r_in_burst = 0
        r_burst = 0
        while True:
            await edge
            cycle = cycle_now() - 1          # the cycle whose values we sample
            if self.reset.value:
                held_a = held_w = None
                continue
            # -- address channel
            avalid = bool(self.avalid.value)
            payload = tuple(int(s.value) for s in self.apayload) if avalid else None
            if held_a is not None:
                if not avalid:
                    self._fail(cycle, f"{self.a.upper()}VALID dropped before {self.a.upper()}READY "
                                      f"(addr {held_a[0]:#x}, len {held_a[1]})")
                elif payload != held_a:
                    self._fail(cycle, f"{self.a.upper()} payload changed before READY: {held_a} -> {payload}")
            # completions first: a burst finishing in the same cycle as a new address handshake
            # is not counted as in flight
            if self.kind == "read":
                if self.rvalid.value and self.rready.value:
                    if r_burst >= len(self.bursts):
                        self._fail(cycle, "R beat for a burst that was never requested")
                    last = bool(self.rlast.value)
                    resp = int(self.rresp.value)
                    self.data_beats += 1
                    r_in_burst += 1
                    if resp:
                        self.error_cycles.append(cycle)
                    if last:
                        self.completions.append(cycle)
                        if self.bursts[r_burst][3]:
                            self.final_completions.append(cycle)
                        r_burst += 1
                        r_in_burst = 0
            else:
                if self.bvalid.value and self.bready.value:
                    if len(self.completions) >= w_burst:
                        self._fail(cycle, "B response before the burst's W beats were all sent")
                    if int(self.bresp.value):
                        self.error_cycles.append(cycle)
                    if self.bursts[len(self.completions)][3]:
                        self.final_completions.append(cycle)
                    self.completions.append(cycle)
            if avalid and self.aready.value:
                self._address(cycle, payload)
                held_a = None
            else:
                held_a = payload
            # -- write data channel
            if self.kind == "write":
                wvalid = bool(self.wvalid.value)
                wpay = (int(self.wdata.value), int(self.wstrb.value),
                        int(self.wlast.value)) if wvalid else None
                if held_w is not None:
                    if not wvalid:
                        self._fail(cycle, "WVALID dropped before WREADY")
                    elif wpay != held_w:
                        self._fail(cycle, f"W payload changed before WREADY: {held_w} -> {wpay}")
                if wvalid:
                    if w_burst >= len(self.bursts):
                        self._fail(cycle, f"W beat offered beyond the {len(self.bursts)} AW'd bursts "
                                          f"({self.data_beats} beats sent)")
                    beats = self.bursts[w_burst][2]
                    want_last = w_in_burst == beats - 1
                    if wpay[2] != want_last:
                        self._fail(cycle, f"WLAST={wpay[2]} on beat {w_in_burst} of a {beats}-beat burst")
                    if wpay[1] != (1 << self.beat) - 1:
                        self._fail(cycle, f"WSTRB={wpay[1]:#x}, expected all {self.beat} strobes")
                if wvalid and self.wready.value:
                    self.data_beats += 1
                    w_in_burst += 1
                    if w_in_burst == self.bursts[w_burst][2]:
                        w_burst += 1
                        w_in_burst = 0
                    held_w = None
                else:
                    held_w = wpay

    def check_done(self) -> None:
        """At the end of a test: every command was covered exactly and every burst completed."""
        if self._cmd_index != len(self.commands) or self._left:
            raise AxiRuleError(f"{self.kind}: bursts covered {self._cmd_index} of {len(self.commands)} "
                               f"commands ({self._left} bytes of the last one missing)")
        if len(self.completions) != len(self.bursts):
            raise AxiRuleError(f"{self.kind}: {len(self.bursts)} bursts but {len(self.completions)} completed")
        if self.errors:
            raise AxiRuleError("; ".join(self.errors))


class StickyChecker:
    """Checks every cycle that ``error`` equals the sticky rule: it rises the cycle after an error
    response moves (R beat or B response with RESP != OKAY), and falls the cycle after a
    ``clear_error`` pulse, never otherwise. The test clears only while no response moves."""

    def __init__(self, clock, error, clear, valid, ready, resp):
        self.clock, self.error, self.clear = clock, error, clear
        self.valid, self.ready, self.resp = valid, ready, resp
        self.expected = 0
        self.high_cycles = 0
        self.mismatches: list[str] = []
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        edge = RisingEdge(self.clock)
        await edge
        self.expected = int(self.error.value)
        while True:
            await edge
            cycle = cycle_now() - 1
            got = int(self.error.value)
            if got != self.expected:
                message = f"cycle {cycle}: error={got}, expected {self.expected}"
                self.mismatches.append(message)
                raise AssertionError(message)
            self.high_cycles += got
            moved_error = bool(self.valid.value and self.ready.value and int(self.resp.value))
            self.expected = (self.expected and not int(self.clear.value)) or moved_error
            self.expected = int(self.expected)


# -- minimal subordinates -------------------------------------------------------------------------

def _resp_for(errors, addr: int, nbytes: int) -> int:
    for lo, hi, resp in errors:
        if addr < hi and lo < addr + nbytes:
            return resp
    return 0


class ReadResponder:
    """A minimal AXI4 read subordinate over ``memory`` (a bytearray indexed by address).

    Accepts up to ``queue`` bursts ahead; the first beat of a burst whose AR moved in cycle c
    is offered in cycle c + ``latency`` at the earliest (``latency`` >= 1), then one per cycle.
    ``errors`` is a list of (lo, hi, resp): a beat whose bytes overlap [lo, hi) gets RRESP
    ``resp`` and zero data. Pause generators stall ARREADY / RVALID.
    """

    def __init__(self, dut, prefix, clock, memory, *, beat: int, latency=1, queue=8, ar_pause=None, r_pause=None,
                 errors=()):
        get = lambda s: getattr(dut, f"{prefix}__{s}")  # noqa: E731
        self.arvalid, self.arready, self.araddr, self.arlen, self.arid = (
            get("arvalid"), get("arready"), get("araddr"), get("arlen"), get("arid"))
        self.rvalid, self.rready, self.rdata, self.rlast, self.rresp, self.rid = (
            get("rvalid"), get("rready"), get("rdata"), get("rlast"), get("rresp"), get("rid"))
        self.clock, self.memory, self.latency, self.queue, self.beat = clock, memory, latency, queue, beat
        self.ar_pause, self.r_pause = ar_pause, r_pause
        self.errors = list(errors)
        self.reset = dut.rst
        self.beats = 0
        self.arready.value = 0
        self.rvalid.value = 0
        self._task = cocotb.start_soon(self._run())

    @staticmethod
    def _stall(gen) -> bool:
        return gen is not None and bool(next(gen, False))

    async def _run(self):
        edge = RisingEdge(self.clock)
        bursts = collections.deque()     # [due cycle, addr, beats left, id]
        arready = rvalid = False
        while True:
            await edge
            cycle = cycle_now()          # the cycle that starts now
            if self.reset.value:
                bursts.clear()
                arready = rvalid = False
                self.arready.value = 0
                self.rvalid.value = 0
                continue
            if arready and self.arvalid.value:
                bursts.append([cycle - 1 + self.latency, int(self.araddr.value),
                               int(self.arlen.value) + 1, int(self.arid.value)])
            if rvalid and self.rready.value:
                rvalid = False
                self.beats += 1
                head = bursts[0]
                head[1] += self.beat
                head[2] -= 1
                if head[2] == 0:
                    bursts.popleft()
            if not rvalid and bursts and bursts[0][0] <= cycle and not self._stall(self.r_pause):
                _, addr, left, ident = bursts[0]
                resp = _resp_for(self.errors, addr, self.beat)
                data = 0 if resp else int.from_bytes(self.memory[addr:addr + self.beat], "little")
                self.rdata.value = data
                self.rresp.value = resp
                self.rlast.value = int(left == 1)
                self.rid.value = ident
                rvalid = True
            self.rvalid.value = int(rvalid)
            arready = len(bursts) < self.queue and not self._stall(self.ar_pause)
            self.arready.value = int(arready)


class WriteResponder:
    """A minimal AXI4 write subordinate over ``memory``: accepts AW (up to ``queue`` ahead), takes
    W beats of the oldest burst (never before its AW), writes them unless the burst overlaps an
    ``errors`` range (then BRESP is that range's resp and nothing is written), and answers B one
    cycle after the last beat at the earliest. Pause generators stall AWREADY, WREADY, BVALID."""

    def __init__(self, dut, prefix, clock, memory, *, beat: int, queue=8, aw_pause=None, w_pause=None,
                 b_pause=None, errors=()):
        get = lambda s: getattr(dut, f"{prefix}__{s}")  # noqa: E731
        self.awvalid, self.awready, self.awaddr, self.awlen, self.awid = (
            get("awvalid"), get("awready"), get("awaddr"), get("awlen"), get("awid"))
        self.wvalid, self.wready, self.wdata, self.wstrb, self.wlast = (
            get("wvalid"), get("wready"), get("wdata"), get("wstrb"), get("wlast"))
        self.bvalid, self.bready, self.bresp, self.bid = get("bvalid"), get("bready"), get("bresp"), get("bid")
        self.clock, self.memory, self.queue, self.beat = clock, memory, queue, beat
        self.aw_pause, self.w_pause, self.b_pause = aw_pause, w_pause, b_pause
        self.errors = list(errors)
        self.reset = dut.rst
        self.beats = 0
        for sig in (self.awready, self.wready, self.bvalid):
            sig.value = 0
        self._task = cocotb.start_soon(self._run())

    _stall = staticmethod(ReadResponder._stall)

    async def _run(self):
        edge = RisingEdge(self.clock)
        bursts = collections.deque()     # [addr, beats left, id, resp]
        responses = collections.deque()  # (id, resp)
        awready = wready = bvalid = False
        while True:
            await edge
            if self.reset.value:
                bursts.clear()
                responses.clear()
                awready = wready = bvalid = False
                for sig in (self.awready, self.wready, self.bvalid):
                    sig.value = 0
                continue
            if awready and self.awvalid.value:
                addr = int(self.awaddr.value)
                beats = int(self.awlen.value) + 1
                bursts.append([addr, beats, int(self.awid.value),
                               _resp_for(self.errors, addr, beats * self.beat)])
            if wready and self.wvalid.value:
                head = bursts[0]
                self.beats += 1
                if not head[3]:
                    data = int(self.wdata.value).to_bytes(self.beat, "little")
                    strb = int(self.wstrb.value)
                    for i in range(self.beat):
                        if strb >> i & 1:
                            self.memory[head[0] + i] = data[i]
                head[0] += self.beat
                head[1] -= 1
                if head[1] == 0:
                    responses.append((head[2], head[3]))
                    bursts.popleft()
            if bvalid and self.bready.value:
                bvalid = False
                responses.popleft()
            if not bvalid and responses and not self._stall(self.b_pause):
                self.bid.value, self.bresp.value = responses[0]
                bvalid = True
            self.bvalid.value = int(bvalid)
            wready = bool(bursts) and not self._stall(self.w_pause)
            self.wready.value = int(wready)
            awready = len(bursts) < self.queue and not self._stall(self.aw_pause)
            self.awready.value = int(awready)


# -- the testbench object -------------------------------------------------------------------------

#: The inputs of each master, held idle while the other one is under test.
IDLE_INPUTS = {
    "rd": ("rd_cmd__valid", "rd_rdata__ready", "rd_clear_error", "rd_axi__arready", "rd_axi__rvalid",
           "rd_axi__rlast", "rd_axi__rresp", "rd_axi__rdata", "rd_axi__rid"),
    "wr": ("wr_cmd__valid", "wr_wdata__valid", "wr_clear_error", "wr_axi__awready", "wr_axi__wready",
           "wr_axi__bvalid", "wr_axi__bresp", "wr_axi__bid"),
}


class AxiTB(Testbench):
    """The wrapper with the master ``side`` ("rd" or "wr") under test and the other one's inputs
    idle, its clock and a watchdog of ``watchdog_cycles``. Configuration: ``data_width``
    (``beat`` bytes per beat), ``max_burst``, ``max_outstanding``, ``seed``, ``commands``,
    ``full_rate_beats``, ``addr_width``."""

    def __init__(self, dut, side: str, watchdog_cycles: int):
        super().__init__(dut)
        cfg = self.cfg
        self.side = side
        self.data_width = int(cfg.get("data_width", 128))
        self.beat = self.data_width // 8
        self.max_burst = int(cfg.get("max_burst", 256))
        self.max_outstanding = int(cfg.get("max_outstanding", 4))
        self.seed = int(cfg.get("seed", 1))
        self.commands = int(cfg.get("commands", 40))
        self.full_rate_beats = int(cfg.get("full_rate_beats", 4096))
        self.cmd_fields = struct_fields(read_command_layout(int(cfg.get("addr_width", 40))))
        self.data_fields = struct_fields(read_data_layout(self.data_width))
        self.port = f"{side}_axi"
        self.error = getattr(dut, f"{side}_error")
        self.clear = getattr(dut, f"{side}_clear_error")
        self.watchdog(watchdog_cycles, f"{side} test")
        self.hold_low(*IDLE_INPUTS["wr" if side == "rd" else "rd"])
        self.clear.value = 0

    def log_config(self, what: str) -> None:
        self.log.info("%s: data_width=%d max_burst=%d max_outstanding=%d seed=%d", what, self.data_width,
                      self.max_burst, self.max_outstanding, self.seed)

    def random_commands(self, rng: random.Random, count: int, **kwargs):
        return random_commands(rng, count, beat=self.beat, **kwargs)

    def monitor(self, commands) -> ManagerMonitor:
        """The :class:`ManagerMonitor` of the master under test, over ``commands``."""
        return ManagerMonitor(self.dut, self.port, "read" if self.side == "rd" else "write", commands,
                              clock=self.clock, reset=self.dut.rst, beat=self.beat, max_burst=self.max_burst,
                              max_outstanding=self.max_outstanding)

    def sticky(self) -> StickyChecker:
        """The :class:`StickyChecker` of the master's ``error`` (responses on R or B)."""
        resp = [getattr(self.dut, f"{self.port}__{'r' if self.side == 'rd' else 'b'}{name}")
                for name in ("valid", "ready", "resp")]
        return StickyChecker(self.clock, self.error, self.clear, *resp)

    def streams(self, rng: random.Random | None = None, cmd_pause: float = 0.0, data_pause: float = 0.0):
        """The master's command source and its data sink (read) or source (write), stalling at
        random with the given probabilities (seeds drawn from ``rng``, the command's first)."""
        def pause(p):
            return random_pause(p, rng.randrange(1 << 30)) if p else None
        cmd = StreamSource(self.dut, f"{self.side}_cmd", self.clock, fields=self.cmd_fields, pause=pause(cmd_pause))
        if self.side == "rd":
            return cmd, StreamSink(self.dut, "rd_rdata", self.clock, fields=self.data_fields, pause=pause(data_pause))
        return cmd, StreamSource(self.dut, "wr_wdata", self.clock, pause=pause(data_pause))

    async def clear_error(self) -> None:
        """Pulse ``clear_error`` for one cycle (the tests clear while no response moves)."""
        self.clear.value = 1
        await RisingEdge(self.clock)
        self.clear.value = 0
        await ClockCycles(self.clock, 2)

    async def check_error(self, expected: int, test: str, phase: str) -> None:
        """A few cycles after a phase, ``error`` must be ``expected``."""
        await ClockCycles(self.clock, 3)
        assert int(self.error.value) == expected, f"after phase {phase!r}: error={int(self.error.value)}"
        self.log.info("%s: phase %-18s error=%d", test, phase, expected)

    def expected_read(self, memory, commands, errors=()):
        """Expected data beats: list of (data or None for error beats, last)."""
        beat, beats = self.beat, []
        for addr, n in commands:
            for i in range(n):
                a = addr + i * beat
                data = None if _resp_for(errors, a, beat) else int.from_bytes(memory[a:a + beat], "little")
                beats.append((data, int(i == n - 1)))
        return beats

    async def collect_and_check(self, sink, expected, what):
        for index, (data, last) in enumerate(expected):
            got = await with_timeout(sink.recv(), self.clock, 50_000, f"{what}: data beat {index}")
            if (data is not None and got["data"] != data) or got["last"] != last:
                raise AssertionError(f"{what}: beat {index}: got data={got['data']:#x} last={got['last']}, "
                                     f"expected data={'(error beat)' if data is None else hex(data)} last={last}")

    def apply_writes(self, memory: bytearray, commands, words, skip=lambda addr: False):
        """The memory expected after ``commands`` wrote the beats ``words`` in order (a beat whose
        address satisfies ``skip`` is expected to be dropped)."""
        beat = self.beat
        expected = bytearray(memory)
        index = 0
        for addr, beats in commands:
            for i in range(beats):
                a = addr + i * beat
                if not skip(a):
                    expected[a:a + beat] = words[index].to_bytes(beat, "little")
                index += 1
        return expected

    def first_difference(self, got: bytes, want: bytes) -> str:
        beat = self.beat
        for i in range(len(want)):
            if got[i] != want[i]:
                a = i - i % beat
                return (f"first difference at byte {i:#x}: word {a:#x} is {bytes(got[a:a + beat]).hex()}, "
                        f"expected {bytes(want[a:a + beat]).hex()}")
        return "no difference"

    def full_rate_floor(self, single: float) -> float:
        # With one burst in flight each burst pays the AR/AW round trip (a ~3-cycle gap); short
        # bursts cannot reach 90 % that way, by design.
        return 0.9 if self.max_outstanding > 1 or self.max_burst >= 64 else single


#: Error ranges of the error tests: (lo, hi, resp).
SLVERR = (0x40000, 0x42000, 2)
DECERR = (0x80000, 0x81000, 3)


# -- read master ----------------------------------------------------------------------------------

@cocotb.test()
async def read_random(dut):
    """Random commands against cocotbext-axi's AxiRamRead with random pauses on AR and R and
    random stalls on cmd and data: every beat once, in order, equal to memory, ``last`` exactly
    on each command's final beat; the monitor checks the AXI rules and the burst contract."""
    tb = AxiTB(dut, "rd", 3_000_000)
    tb.log_config("read_random")
    rng = random.Random(tb.seed * 1000 + 1)
    ram = axi_ram_read(dut, "rd_axi", tb.clock, MEM_SIZE, image=rng.randbytes(MEM_SIZE))
    random_pauses([ram], 0.3, rng)
    commands = tb.random_commands(rng, tb.commands)
    monitor, sticky = tb.monitor(commands), tb.sticky()
    source, sink = tb.streams(rng, 0.4, 0.3)
    await tb.reset()
    start = tb.cycle()
    for addr, beats in commands:
        source.send_nowait({"addr": addr, "beats": beats})
    expected = tb.expected_read(ram.mem, commands)
    await tb.collect_and_check(sink, expected, "read_random")
    await ClockCycles(tb.clock, 50)
    assert sink.count() == 0, f"{sink.count()} beats beyond the {len(expected)} expected"
    monitor.check_done()
    assert not int(dut.rd_busy.value), "busy still high after the last beat"
    assert sticky.high_cycles == 0 and not int(dut.rd_error.value), "error raised without an error response"
    assert monitor.max_in_flight <= tb.max_outstanding
    tb.log.info("read_random: %d commands, %d beats, %d bursts (max %d in flight) in %d cycles",
                len(commands), len(expected), len(monitor.bursts), monitor.max_in_flight, tb.cycle() - start)


@cocotb.test()
async def read_errors(dut):
    """SLVERR/DECERR from a read subordinate on some address ranges: ``error`` rises after the
    first error beat, stays high through later good commands until ``clear_error``, and the data
    stream stays aligned (every command still delivers its beats with ``last`` in place)."""
    tb = AxiTB(dut, "rd", 2_000_000)
    tb.log_config("read_errors")
    beat = tb.beat
    rng = random.Random(tb.seed * 1000 + 2)
    memory = bytearray(rng.randbytes(MEM_SIZE))
    ReadResponder(dut, "rd_axi", tb.clock, memory, beat=beat, latency=3, queue=4, errors=[SLVERR, DECERR],
                  ar_pause=random_pause(0.3, rng.randrange(1 << 30)),
                  r_pause=random_pause(0.3, rng.randrange(1 << 30)))
    good = [(0x1000 - beat, 20), (0x10000, 700), (0x20000 + 3 * beat, 5)]
    into_slverr = [(0x40000 - 10 * beat, 30)]        # 10 good beats, then SLVERR beats
    in_decerr = [(0x80000 + 0xFF0 - (0xFF0 % beat), 1), (0x80000, 3)]
    phases = [("good", good, 0), ("slverr", into_slverr, 1), ("good after error", good, 1),
              ("clear", [], 0), ("good after clear", good, 0), ("decerr", in_decerr, 1),
              ("mixed", good[:1] + into_slverr + good[1:], 1), ("clear", [], 0)]
    all_commands = [c for _, cmds, _ in phases for c in cmds]
    monitor, sticky = tb.monitor(all_commands), tb.sticky()
    source, sink = tb.streams(rng, 0.3, 0.3)
    await tb.reset()
    for name, commands, error_after in phases:
        if name == "clear":
            await tb.clear_error()
        for addr, beats in commands:
            source.send_nowait({"addr": addr, "beats": beats})
        await tb.collect_and_check(sink, tb.expected_read(memory, commands, [SLVERR, DECERR]), f"phase {name}")
        await tb.check_error(error_after, "read_errors", name)
    await ClockCycles(tb.clock, 20)
    assert sink.count() == 0
    monitor.check_done()
    assert monitor.error_cycles, "the subordinate sent no error response"
    assert not sticky.mismatches


@cocotb.test()
async def read_full_rate(dut):
    """No stalls anywhere, a subordinate answering one cycle after AR: a long read streams at
    (nearly) one beat per cycle."""
    tb = AxiTB(dut, "rd", 200_000)
    beats, addr = tb.full_rate_beats, 0x10000
    memory = bytearray(random.Random(tb.seed).randbytes(MEM_SIZE))
    ReadResponder(dut, "rd_axi", tb.clock, memory, beat=tb.beat, latency=1, queue=64)
    commands = [(addr, beats)]
    monitor = tb.monitor(commands)
    source, sink = tb.streams()
    await tb.reset()
    source.send_nowait({"addr": addr, "beats": beats})
    first = tb.cycle()                      # the command is offered from this cycle on
    await tb.collect_and_check(sink, tb.expected_read(memory, commands), "full-rate read")
    last = tb.cycle() - 1                   # cycle in which the final beat moved
    monitor.check_done()
    cycles, bursts = last - first + 1, len(monitor.bursts)
    rate = beats / cycles
    tb.log.info("FULL-RATE read: data_width=%d max_burst=%d max_outstanding=%d: %d beats (%d bursts) in "
                "%d cycles = %.4f beats/cycle (%.2f B/cycle, peak %d)", tb.data_width, tb.max_burst,
                tb.max_outstanding, beats, bursts, cycles, rate, rate * tb.beat, tb.beat)
    tb.record("read_full_rate", {"beats": beats, "bursts": bursts, "cycles": cycles, "beats_per_cycle": round(rate, 4)})
    floor = tb.full_rate_floor(0.8)
    assert rate >= floor, f"{beats} beats took {cycles} cycles ({rate:.3f} beats/cycle < {floor})"


# -- write master ---------------------------------------------------------------------------------

@cocotb.test()
async def write_random(dut):
    """Random disjoint commands against cocotbext-axi's AxiRamWrite with random pauses on AW, W
    and B and random stalls on cmd and data: memory equals the data written, nothing outside the
    written ranges changes, ``done`` pulses once per command after its last response."""
    tb = AxiTB(dut, "wr", 3_000_000)
    tb.log_config("write_random")
    rng = random.Random(tb.seed * 1000 + 3)
    background = rng.randbytes(MEM_SIZE)
    ram = axi_ram_write(dut, "wr_axi", tb.clock, MEM_SIZE, image=background)
    random_pauses([ram], 0.3, rng)
    commands = tb.random_commands(rng, tb.commands, disjoint=True)
    words = [rng.getrandbits(tb.data_width) for _ in range(sum(b for _, b in commands))]
    monitor, sticky = tb.monitor(commands), tb.sticky()
    done = DoneCounter(tb.clock, dut.wr_done)
    cmd, data = tb.streams(rng, 0.4, 0.3)
    await tb.reset()
    start = tb.cycle()
    for addr, beats in commands:
        cmd.send_nowait({"addr": addr, "beats": beats})
    for word in words:
        data.send_nowait(word)
    await done.wait(len(commands), 500_000, "write_random: done pulses")
    await ClockCycles(tb.clock, 50)
    assert len(done.cycles) == len(commands), f"{len(done.cycles)} done pulses for {len(commands)} commands"
    monitor.check_done()
    assert monitor.data_beats == len(words), f"{monitor.data_beats} W beats for {len(words)} data beats"
    finals = monitor.final_completions
    assert all(0 < d - b <= 2 for d, b in zip(done.cycles, finals)), \
        f"done pulses {done.cycles[:8]} do not follow the final B responses {finals[:8]}"
    assert not int(dut.wr_busy.value), "busy still high after the last response"
    assert sticky.high_cycles == 0
    expected = tb.apply_writes(bytearray(background), commands, words)
    got = ram.read(0, MEM_SIZE)
    assert got == expected, f"memory differs: {tb.first_difference(got, expected)}"
    tb.log.info("write_random: %d commands, %d beats, %d bursts (max %d in flight) in %d cycles",
                len(commands), len(words), len(monitor.bursts), monitor.max_in_flight, tb.cycle() - start)


@cocotb.test()
async def write_errors(dut):
    """SLVERR/DECERR B responses for some address ranges: ``error`` rises after the first one and
    stays high until ``clear_error``; ``done`` still pulses per command and later commands'
    data land where they belong (the data stream stays aligned)."""
    tb = AxiTB(dut, "wr", 2_000_000)
    tb.log_config("write_errors")
    beat = tb.beat
    rng = random.Random(tb.seed * 1000 + 4)
    background = rng.randbytes(MEM_SIZE)
    memory = bytearray(background)
    errors = [SLVERR, DECERR]
    WriteResponder(dut, "wr_axi", tb.clock, memory, beat=beat, queue=4, errors=errors,
                   aw_pause=random_pause(0.3, rng.randrange(1 << 30)),
                   w_pause=random_pause(0.3, rng.randrange(1 << 30)),
                   b_pause=random_pause(0.3, rng.randrange(1 << 30)))
    phases = [("good", [(0x1000 - beat, 20), (0x10000, 300)], 0),
              ("slverr", [(0x40000 - 2 * beat, 30)], 1),
              ("good after error", [(0x20000 + 3 * beat, 5), (0x30000 - beat, 2)], 1),
              ("clear", [], 0),
              ("good after clear", [(0x50000, 64)], 0),
              ("decerr", [(0x80000, 3)], 1),
              ("mixed", [(0x60000, 7), (0x41000, 4), (0x61000, 40)], 1),
              ("clear", [], 0)]
    all_commands = [c for _, cmds, _ in phases for c in cmds]
    monitor, sticky = tb.monitor(all_commands), tb.sticky()
    done = DoneCounter(tb.clock, dut.wr_done)
    cmd, data = tb.streams(rng, 0.3, 0.3)
    await tb.reset()
    words = []
    sent = 0
    for name, commands, error_after in phases:
        if name == "clear":
            await tb.clear_error()
        for addr, beats in commands:
            cmd.send_nowait({"addr": addr, "beats": beats})
            for _ in range(beats):
                words.append(rng.getrandbits(tb.data_width))
                data.send_nowait(words[-1])
        sent += len(commands)
        await done.wait(sent, 500_000, f"write_errors: done pulses of phase {name}")
        await tb.check_error(error_after, "write_errors", name)
    await ClockCycles(tb.clock, 20)
    assert len(done.cycles) == len(all_commands)
    monitor.check_done()
    assert monitor.error_cycles, "the subordinate sent no error response"
    # The responder drops every burst that overlaps an error range; the ranges are 4 KiB aligned
    # and bursts never cross 4 KiB, so exactly the words in those pages keep their old contents.
    expected = tb.apply_writes(bytearray(background), all_commands, words,
                               skip=lambda a: _resp_for(errors, a - a % PAGE, PAGE) != 0)
    assert memory == expected, f"memory differs: {tb.first_difference(memory, expected)}"
    assert not sticky.mismatches


@cocotb.test()
async def write_full_rate(dut):
    """No stalls anywhere: a long write streams at (nearly) one beat per cycle."""
    tb = AxiTB(dut, "wr", 200_000)
    beats = tb.full_rate_beats
    memory = bytearray(MEM_SIZE)
    WriteResponder(dut, "wr_axi", tb.clock, memory, beat=tb.beat, queue=64)
    commands = [(0x10000, beats)]
    monitor = tb.monitor(commands)
    done = DoneCounter(tb.clock, dut.wr_done)
    cmd, data = tb.streams()
    await tb.reset()
    rng = random.Random(tb.seed)
    words = [rng.getrandbits(tb.data_width) for _ in range(beats)]
    cmd.send_nowait({"addr": 0x10000, "beats": beats})
    for word in words:
        data.send_nowait(word)
    first = tb.cycle()
    await done.wait(1, 500_000, "write_full_rate: done")
    cycles = done.cycles[0] - first          # through the final B response
    monitor.check_done()
    expected = tb.apply_writes(bytearray(MEM_SIZE), commands, words)
    assert memory == expected, f"memory differs: {tb.first_difference(memory, expected)}"
    rate = beats / cycles
    tb.log.info("FULL-RATE write: data_width=%d max_burst=%d max_outstanding=%d: %d beats (%d bursts) "
                "in %d cycles to the last response = %.4f beats/cycle", tb.data_width, tb.max_burst,
                tb.max_outstanding, beats, len(monitor.bursts), cycles, rate)
    tb.record("write_full_rate", {"beats": beats, "bursts": len(monitor.bursts), "cycles": cycles,
                                  "beats_per_cycle": round(rate, 4)})
    floor = tb.full_rate_floor(0.7)
    assert rate >= floor, f"{beats} beats took {cycles} cycles ({rate:.3f} beats/cycle < {floor})"
