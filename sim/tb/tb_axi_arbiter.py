"""cocotb tests of :class:`tellme.hw.axi_arbiter.AxiReadArbiter` and
:class:`tellme.hw.axi_arbiter.AxiWriteArbiter`.

The design under test is a wrapper (``tests/test_axi_arbiter.py``) holding one read and one write
arbiter with the same parameters: manager ports ``rd_mgr__<i>__*`` / ``wr_mgr__<i>__*``, shared
ports ``rd_axi__*`` / ``wr_axi__*``. Configuration (``tb_config()``): ``managers``,
``data_width``, ``max_outstanding``, ``seed`` and optionally ``transfers`` (per manager and
phase of the random test).

Every manager port is driven by cocotbext-axi's ``AxiMasterRead`` / ``AxiMasterWrite`` (ID 0, as
the datapath's managers); the shared ports end in one cocotbext-axi RAM (``AxiRamRead`` and
``AxiRamWrite`` on one memory) extended with error pages: a beat in the SLVERR page or the
DECERR page answers RRESP/BRESP with that code (read data zero, writes dropped). Random pause
generators stall every channel of every bus in the random test.

:class:`ArbiterChecker` watches all ports of one arbiter every cycle and checks what the
arbiter does against a model of it: at most one manager address handshake per cycle; a waiting
manager is granted after at most ``managers - 1`` grants to others (round robin, so nobody
starves); each granted address appears on the shared port in grant order with every field
unchanged, VALID held and payload stable until READY; at most ``max_outstanding`` bursts
granted and not finished (R: RLAST, W: B response); every R / B beat of the shared port goes
to exactly the manager whose burst it answers (grant order), payload unchanged, and the port's
READY is that manager's; W beats on the port come from the head burst's manager only, with
WLAST on its final beat. The cocotbext managers check the data (byte-exact against a
reference memory) and response codes of every transfer. Every test runs under a watchdog.
"""

from __future__ import annotations

import collections
import random

import cocotb
from cocotb.triggers import RisingEdge
from cocotbext.axi import AxiMasterRead, AxiMasterWrite, AxiRamRead, AxiRamWrite, AxiReadBus, AxiWriteBus

from . import record_result, tb_config
from .streams import random_pause, reset_dut, start_clock, start_watchdog, with_timeout

CFG = tb_config()
MANAGERS = int(CFG.get("managers", 3))
DATA_WIDTH = int(CFG.get("data_width", 128))
MAX_OUTSTANDING = int(CFG.get("max_outstanding", 4))
SEED = int(CFG.get("seed", 1))
TRANSFERS = int(CFG.get("transfers", 8))
BEAT = DATA_WIDTH // 8
PAGE = 4096
REGION = 32 * PAGE                          # per manager: written by that manager only
ERR_BASE = MANAGERS * REGION                # guard, SLVERR, guard, DECERR, guard page
SLVERR_PAGE = ERR_BASE + PAGE
DECERR_PAGE = ERR_BASE + 3 * PAGE
MEM_SIZE = ERR_BASE + 5 * PAGE
OKAY, SLVERR, DECERR = 0, 2, 3
ERRORS = ((SLVERR_PAGE, SLVERR_PAGE + PAGE, SLVERR), (DECERR_PAGE, DECERR_PAGE + PAGE, DECERR))


def resp_for(addr: int, nbytes: int) -> int:
    """The response the subordinate gives bytes [addr, addr + nbytes) (one error page at most)."""
    for lo, hi, resp in ERRORS:
        if addr < hi and lo < addr + nbytes:
            return resp
    return OKAY


def _quiet(model):
    model.log.setLevel("WARNING")
    return model


# -- subordinate: a cocotbext-axi RAM with error pages -------------------------------------------

class ErrorRamRead(AxiRamRead):
    """``AxiRamRead`` answering beats in the error pages with their RRESP and zero data."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resp = OKAY
        send = self.r_channel.send

        async def send_with_resp(r):        # the model sets RRESP=OKAY, then reads, then sends
            if self._resp:
                r.rresp, self._resp = self._resp, OKAY
            await send(r)
        self.r_channel.send = send_with_resp

    async def _read(self, address, length):
        resp = resp_for(address, length)
        if resp:
            self._resp = resp
            return bytes(length)
        return await super()._read(address, length)


class ErrorRamWrite(AxiRamWrite):
    """``AxiRamWrite`` dropping beats in the error pages and answering their burst's BRESP."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._resp = OKAY
        send = self.b_channel.send

        async def send_with_resp(b):
            if self._resp:
                b.bresp, self._resp = self._resp, OKAY
            await send(b)
        self.b_channel.send = send_with_resp

    async def _write(self, address, data):
        resp = resp_for(address, len(data))
        if resp:
            self._resp = resp
            return
        await super()._write(address, data)


# -- the checker ----------------------------------------------------------------------------------

class ArbiterRuleError(AssertionError):
    """The arbiter broke the AXI rules or its own contract."""


ADDRESS_FIELDS = ("addr", "id", "len", "size", "burst", "cache", "prot", "lock", "qos")


class ArbiterChecker:
    """Checks one arbiter every cycle (see the module doc). ``side`` is "rd" or "wr".

    Statistics: ``grants[i]`` (address handshakes of manager i), ``max_wait[i]`` (most grants
    to others while manager i waited), ``max_granted`` (most bursts granted and unfinished),
    ``max_port_outstanding`` (most bursts between the port's address handshake and their
    RLAST / B), ``beats`` (data beats on the port), ``errors_routed[i]`` (error responses that
    reached manager i), ``busy_cycles`` (cycles from the first to the last port data beat).
    """

    def __init__(self, dut, clock, side: str, managers: int = MANAGERS, max_outstanding: int = MAX_OUTSTANDING):
        self.side, self.clock, self.n, self.limit = side, clock, managers, max_outstanding
        self.a = "ar" if side == "rd" else "aw"
        a = self.a

        def port(name):
            return getattr(dut, f"{side}_axi__{name}")

        def mgr(i, name):
            return getattr(dut, f"{side}_mgr__{i}__{name}")

        self.port_avalid, self.port_aready = port(f"{a}valid"), port(f"{a}ready")
        self.port_apayload = [port(a + f) for f in ADDRESS_FIELDS]
        self.mgr_avalid = [mgr(i, f"{a}valid") for i in range(managers)]
        self.mgr_aready = [mgr(i, f"{a}ready") for i in range(managers)]
        self.mgr_apayload = [[mgr(i, a + f) for f in ADDRESS_FIELDS] for i in range(managers)]
        if side == "rd":
            resp = ("valid", "ready", ("data", "id", "resp", "last"))
            self.resp_prefix = "r"
        else:
            resp = ("valid", "ready", ("id", "resp"))
            self.resp_prefix = "b"
            self.port_w = {n: port(f"w{n}") for n in ("valid", "ready", "data", "strb", "last")}
            self.mgr_w = [{n: mgr(i, f"w{n}") for n in ("valid", "ready", "data", "strb", "last")}
                          for i in range(managers)]
        x = self.resp_prefix
        self.port_xvalid, self.port_xready = port(f"{x}{resp[0]}"), port(f"{x}{resp[1]}")
        self.port_xpayload = [port(x + f) for f in resp[2]]
        self.mgr_xvalid = [mgr(i, f"{x}{resp[0]}") for i in range(managers)]
        self.mgr_xready = [mgr(i, f"{x}{resp[1]}") for i in range(managers)]
        self.mgr_xpayload = [[mgr(i, x + f) for f in resp[2]] for i in range(managers)]

        self.grants = [0] * managers
        self.max_wait = [0] * managers
        self.max_granted = 0
        self.max_port_outstanding = 0
        self.beats = 0
        self.errors_routed = [0] * managers
        self.first_beat = self.last_beat = None
        self.errors: list[str] = []
        self._task = cocotb.start_soon(self._run())

    @property
    def busy_cycles(self) -> int:
        return 0 if self.first_beat is None else self.last_beat - self.first_beat + 1

    def _fail(self, cycle: int, message: str) -> None:
        message = f"{self.side} arbiter, cycle {cycle}: {message}"
        self.errors.append(message)
        raise ArbiterRuleError(message)

    def stop(self) -> None:
        self._task.cancel()

    async def _run(self) -> None:
        n, edge = self.n, RisingEdge(self.clock)
        waits = [0] * n
        granted = collections.deque()       # (manager, payload): granted, address not yet on the port
        unfinished = 0                      # granted bursts whose R (RLAST) / B has not moved
        port_outstanding = 0
        resp_order = collections.deque()    # managers of the bursts on the port awaiting R / B
        w_order = collections.deque()       # (manager, beats) of granted bursts owing W beats
        w_beat = 0
        held_a = held_w = None
        cycle = -1
        while True:
            await edge
            cycle += 1
            # -- manager address handshakes
            valid = [bool(v.value) for v in self.mgr_avalid]
            moved = [i for i in range(n) if valid[i] and self.mgr_aready[i].value]
            if len(moved) > 1:
                self._fail(cycle, f"managers {moved} granted in the same cycle")
            for i in range(n):
                if valid[i] and i not in moved:
                    waits[i] += len(moved)
                    self.max_wait[i] = max(self.max_wait[i], waits[i])
                    if waits[i] > n - 1:
                        self._fail(cycle, f"manager {i} waited through {waits[i]} grants to others "
                                          f"(round robin allows {n - 1})")
            for i in moved:
                waits[i] = 0
                self.grants[i] += 1
                payload = [int(s.value) for s in self.mgr_apayload[i]]
                granted.append((i, payload))
                unfinished += 1
                if self.side == "wr":
                    w_order.append((i, payload[2] + 1))
            self.max_granted = max(self.max_granted, unfinished)
            if unfinished > self.limit:
                self._fail(cycle, f"{unfinished} bursts granted and unfinished, max_outstanding is {self.limit}")

            # -- the port's address channel
            avalid = bool(self.port_avalid.value)
            payload = [int(s.value) for s in self.port_apayload] if avalid else None
            if held_a is not None:
                if not avalid:
                    self._fail(cycle, f"{self.a.upper()}VALID dropped before {self.a.upper()}READY")
                if payload != held_a:
                    self._fail(cycle, f"{self.a.upper()} payload changed before READY: {held_a} -> {payload}")
            if avalid and self.port_aready.value:
                # the oldest grant not yet on the port (one made in this cycle is behind it)
                if not granted:
                    self._fail(cycle, "address on the port without a grant")
                owner, want = granted.popleft()
                if payload != want:
                    self._fail(cycle, f"address of manager {owner} changed on the way: "
                                      f"{dict(zip(ADDRESS_FIELDS, want))} -> {dict(zip(ADDRESS_FIELDS, payload))}")
                resp_order.append(owner)
                port_outstanding += 1
                self.max_port_outstanding = max(self.max_port_outstanding, port_outstanding)
                held_a = None
            else:
                held_a = payload

            # -- W (write arbiter): the head burst's manager only
            if self.side == "wr":
                pw, w = self.port_w, self.mgr_w
                wvalid = bool(pw["valid"].value)
                wpayload = (int(pw["data"].value), int(pw["strb"].value), int(pw["last"].value)) if wvalid else None
                if held_w is not None and wpayload != held_w:
                    self._fail(cycle, f"W beat changed or dropped before WREADY: {held_w} -> {wpayload}")
                wready = bool(pw["ready"].value)
                for i in range(n):
                    if w[i]["ready"].value and w[i]["valid"].value:
                        if not (wvalid and wready) or not w_order or w_order[0][0] != i:
                            self._fail(cycle, f"W beat of manager {i} taken, but the head burst is "
                                              f"{w_order[0] if w_order else 'none'}")
                if wvalid:
                    if not w_order:
                        self._fail(cycle, "W beat on the port before any grant")
                    head, beats = w_order[0]
                    want = (int(w[head]["data"].value), int(w[head]["strb"].value), int(w[head]["last"].value))
                    if not w[head]["valid"].value or want != wpayload:
                        self._fail(cycle, f"W on the port {wpayload} is not manager {head}'s {want}")
                    if wpayload[2] != (w_beat == beats - 1):
                        self._fail(cycle, f"WLAST={wpayload[2]} on beat {w_beat} of a {beats}-beat burst")
                    if wready:
                        if not w[head]["ready"].value:
                            self._fail(cycle, f"W beat moved on the port but not at manager {head}")
                        w_beat += 1
                        self.beats += 1
                        self.first_beat = cycle if self.first_beat is None else self.first_beat
                        self.last_beat = cycle
                        if wpayload[2]:
                            w_order.popleft()
                            w_beat = 0
                held_w = wpayload if wvalid and not wready else None

            # -- R / B: to the manager of the oldest burst on the port
            xvalid = bool(self.port_xvalid.value)
            mgr_valid = [i for i in range(n) if self.mgr_xvalid[i].value]
            if not xvalid:
                if mgr_valid:
                    self._fail(cycle, f"{self.resp_prefix.upper()}VALID at managers {mgr_valid} "
                                      f"without one on the port")
                continue
            if not resp_order:
                self._fail(cycle, f"{self.resp_prefix.upper()} beat on the port without a burst in flight")
            head = resp_order[0]
            if mgr_valid != [head]:
                self._fail(cycle, f"{self.resp_prefix.upper()} beat for manager {head} offered to "
                                  f"managers {mgr_valid}")
            xpayload = [int(s.value) for s in self.port_xpayload]
            got = [int(s.value) for s in self.mgr_xpayload[head]]
            if got != xpayload:
                self._fail(cycle, f"manager {head} sees {got}, the port carries {xpayload}")
            xready = bool(self.port_xready.value)
            if xready != bool(self.mgr_xready[head].value):
                self._fail(cycle, f"port READY {int(xready)} is not manager {head}'s")
            if xready:
                resp = xpayload[2] if self.side == "rd" else xpayload[1]
                self.errors_routed[head] += resp != OKAY
                if self.side == "rd":
                    self.beats += 1
                    self.first_beat = cycle if self.first_beat is None else self.first_beat
                    self.last_beat = cycle
                if self.side == "wr" or xpayload[3]:
                    resp_order.popleft()
                    port_outstanding -= 1
                    unfinished -= 1

    def check_done(self) -> None:
        if self.errors:
            raise ArbiterRuleError("; ".join(self.errors))


# -- set-up ---------------------------------------------------------------------------------------

class Bench:
    """Clock, reset, the cocotbext-axi managers (``readers[i]``, ``writers[i]``) on every manager
    port, the RAM on the shared ports (memory ``mem``, filled with random bytes, and its
    reference copy ``ref``), and a checker per arbiter. ``manager_pause`` / ``ram_pause``: stall
    probability of every channel of the managers / of the RAM (seeds from ``rng``);
    ``ram_pauses`` overrides per RAM channel ("ar", "r", "aw", "w", "b")."""

    def __init__(self, dut, rng: random.Random, *, manager_pause=0.0, ram_pause=0.0, ram_pauses=None,
                 watchdog_cycles=400_000):
        self.dut, self.rng = dut, rng
        self.clock = start_clock(dut)
        self.watchdog = start_watchdog(self.clock, watchdog_cycles, "arbiter test")

        def pause(p):
            return random_pause(p, rng.randrange(1 << 30))

        self.wram = _quiet(ErrorRamWrite(AxiWriteBus.from_prefix(dut, "wr_axi_"), self.clock, dut.rst, size=MEM_SIZE))
        self.rram = _quiet(ErrorRamRead(AxiReadBus.from_prefix(dut, "rd_axi_"), self.clock, dut.rst,
                                        size=MEM_SIZE, mem=self.wram.mem))
        # The RAM takes every address it is offered, so only the arbiters bound the bursts in flight.
        for channel in (self.rram.ar_channel, self.wram.aw_channel):
            channel.queue_occupancy_limit = 4 * MAX_OUTSTANDING + 8
        ram_pauses = {**{c: ram_pause for c in ("ar", "r", "aw", "w", "b")}, **(ram_pauses or {})}
        for c, model in (("ar", self.rram), ("r", self.rram), ("aw", self.wram), ("w", self.wram), ("b", self.wram)):
            if ram_pauses[c]:
                getattr(model, f"{c}_channel").set_pause_generator(pause(ram_pauses[c]))
        self.readers = [_quiet(AxiMasterRead(AxiReadBus.from_prefix(dut, f"rd_mgr__{i}_"), self.clock, dut.rst))
                        for i in range(MANAGERS)]
        self.writers = [_quiet(AxiMasterWrite(AxiWriteBus.from_prefix(dut, f"wr_mgr__{i}_"), self.clock, dut.rst))
                        for i in range(MANAGERS)]
        if manager_pause:
            for reader in self.readers:
                for c in ("ar", "r"):
                    getattr(reader, f"{c}_channel").set_pause_generator(pause(manager_pause))
            for writer in self.writers:
                for c in ("aw", "w", "b"):
                    getattr(writer, f"{c}_channel").set_pause_generator(pause(manager_pause))
        image = rng.randbytes(MEM_SIZE)
        self.wram.write(0, image)
        self.ref = bytearray(image)
        self.rd_check = self.wr_check = None

    async def reset(self):
        """Reset the design (and the models), then start the checkers."""
        await reset_dut(self.dut, self.clock)
        self.rd_check = ArbiterChecker(self.dut, self.clock, "rd")
        self.wr_check = ArbiterChecker(self.dut, self.clock, "wr")

    def finish(self):
        self.watchdog.cancel()
        for check in (self.rd_check, self.wr_check):
            check.stop()
            check.check_done()

    # -- transfers

    def _transfer_task(self, transfer: str, start, resp: str, expected_resp: int, check=None):
        """Start ``start(cache=, prot=, qos=)`` (one read or write of a manager, with random
        attributes drawn now) as a task that checks its response code ``resp`` (``BRESP`` or
        ``RRESP``) is ``expected_resp``, then ``check(result)`` if given; ``transfer`` names it
        in the messages."""
        rng = self.rng
        attrs = dict(cache=rng.randrange(16), prot=rng.randrange(8), qos=rng.randrange(16))

        async def run():
            result = await start(**attrs)
            if int(result.resp) != expected_resp:
                raise AssertionError(f"{transfer}: {resp} {int(result.resp)}, expected {expected_resp}")
            if check is not None:
                check(result)
        return cocotb.start_soon(run())

    def write_task(self, i: int, addr: int, data: bytes, what: str):
        """Start a write of manager ``i``; its reference effect applies now (a manager's writes
        are disjoint, other managers write elsewhere). The task checks the response code."""
        expected = resp_for(addr, len(data))
        if not expected:
            self.ref[addr:addr + len(data)] = data
        return self._transfer_task(f"{what}: manager {i} write {addr:#x}+{len(data)}",
                                   lambda **attrs: self.writers[i].write(addr, data, awid=0, **attrs),
                                   "BRESP", expected)

    def read_task(self, i: int, addr: int, length: int, what: str):
        """Start a read of manager ``i``, checked against the reference as it is now (error
        pages read as zeros) and for its response code."""
        transfer = f"{what}: manager {i} read {addr:#x}+{length}"
        want = bytearray(self.ref[addr:addr + length])
        for lo, hi, _ in ERRORS:
            a, b = max(lo, addr), min(hi, addr + length)
            if a < b:
                want[a - addr:b - addr] = bytes(b - a)

        def check_data(result):
            if result.data != want:
                k = next(k for k in range(length) if result.data[k] != want[k])
                raise AssertionError(f"{transfer}: first wrong byte at {addr + k:#x}: {result.data[k]:#04x}, "
                                     f"expected {want[k]:#04x}")
        return self._transfer_task(transfer, lambda **attrs: self.readers[i].read(addr, length, arid=0, **attrs),
                                   "RRESP", resp_for(addr, length), check_data)


async def wait_all(bench: Bench, tasks, cycles: int, what: str):
    for task in tasks:
        await with_timeout(task, bench.clock, cycles, what)


def random_length(rng: random.Random, max_beats: int = 256) -> int:
    """Beats of a transfer: mostly short, some up to ``max_beats``."""
    kind = rng.random()
    if kind < 0.4:
        return rng.randint(1, min(8, max_beats))
    if kind < 0.8 or max_beats <= 64:
        return rng.randint(min(9, max_beats), min(64, max_beats))
    return rng.randint(65, max_beats)


def random_transfer(rng: random.Random, lo: int, hi: int, taken=None):
    """(addr, length) inside [lo, hi): 1..256 beats; mostly beat-aligned inside one 4 KiB page
    (one burst), some at any byte address and length (partial strobes, split bursts). With
    ``taken`` (a list of ranges) the transfer overlaps none of them, and is added."""
    for _ in range(10_000):
        length = random_length(rng) * BEAT
        if rng.random() < 0.7:
            length = min(length, PAGE)
            page = lo + rng.randrange((hi - lo) // PAGE) * PAGE
            addr = page + rng.randrange((PAGE - length) // BEAT + 1) * BEAT
        else:
            length = max(1, length - rng.randrange(BEAT))
            if length > hi - lo:
                continue
            addr = lo + rng.randrange(hi - lo - length + 1)
        if taken is not None:
            if any(addr < e and s < addr + length for s, e in taken):
                continue
            taken.append((addr, addr + length))
        return addr, length
    raise RuntimeError("no room for another transfer")


def error_transfer(rng: random.Random, write: bool):
    """(addr, length) overlapping the SLVERR or the DECERR page (a write stays inside it, a read
    may start or end in the guard pages around it)."""
    page = rng.choice([SLVERR_PAGE, DECERR_PAGE])
    length = random_length(rng, 64) * BEAT
    if write:
        return page + rng.randrange((PAGE - length) // BEAT + 1) * BEAT, length
    return rng.randrange(page - length + BEAT, page + PAGE - BEAT), length


def log_config(dut, what):
    dut._log.info("%s: managers=%d data_width=%d max_outstanding=%d seed=%d", what, MANAGERS, DATA_WIDTH,
                  MAX_OUTSTANDING, SEED)


def record(key, value):
    record_result(CFG.get("results"), key, value)


# -- tests ----------------------------------------------------------------------------------------

@cocotb.test()
async def write_then_read(dut):
    """All managers write at once (random bursts, each into its own region, some into the error
    pages), random pauses on every channel; then all read at once (anywhere, some error pages):
    every read byte-exact against the reference, every response code right, the memory equal
    to the reference at the end."""
    log_config(dut, "write_then_read")
    rng = random.Random(SEED)
    bench = Bench(dut, rng, manager_pause=0.3, ram_pause=0.3)
    await bench.reset()

    tasks = []
    for i in range(MANAGERS):
        taken = []
        for k in range(TRANSFERS):
            if rng.random() < 0.15:
                addr, length = error_transfer(rng, write=True)
            else:
                addr, length = random_transfer(rng, i * REGION, (i + 1) * REGION, taken)
            tasks.append(bench.write_task(i, addr, rng.randbytes(length), f"write {k}"))
    await wait_all(bench, tasks, 200_000, "writes")
    assert bytes(bench.wram.mem[0:MEM_SIZE]) == bytes(bench.ref), "memory differs from the reference after the writes"

    tasks = []
    for i in range(MANAGERS):
        for k in range(TRANSFERS):
            if rng.random() < 0.15:
                addr, length = error_transfer(rng, write=False)
            else:
                addr, length = random_transfer(rng, 0, ERR_BASE)
            tasks.append(bench.read_task(i, addr, length, f"read {k}"))
    await wait_all(bench, tasks, 200_000, "reads")
    bench.finish()
    for check in (bench.wr_check, bench.rd_check):
        dut._log.info("%s: grants %s, max wait %s, max granted %d, error responses routed %s", check.side,
                      check.grants, check.max_wait, check.max_granted, check.errors_routed)
    record("write_then_read", {c.side: {"grants": c.grants, "max_wait": c.max_wait, "max_granted": c.max_granted,
                                        "errors_routed": c.errors_routed, "beats": c.beats}
                               for c in (bench.rd_check, bench.wr_check)})
    assert sum(bench.rd_check.errors_routed) and sum(bench.wr_check.errors_routed), "no error response was injected"


@cocotb.test()
async def fairness(dut):
    """Constant contention: every manager queues many short bursts at once, nothing stalls.
    Round robin: a waiting manager waits through exactly ``managers - 1`` grants (no more:
    checked every cycle; no fewer: the contention is real), grants are shared equally while all
    compete, and every manager completes. Records R/W beats per cycle on the shared port."""
    log_config(dut, "fairness")
    rng = random.Random(SEED + 1)
    bench = Bench(dut, rng)
    await bench.reset()
    bursts = 6 * MAX_OUTSTANDING + 12
    for side, start in (("write", bench.write_task), ("read", bench.read_task)):
        tasks = []
        for i in range(MANAGERS):
            base = i * REGION
            for k in range(bursts):
                beats = rng.choice([1, 2, 4, 16])
                addr = base + k * 16 * BEAT          # disjoint, never across 4 KiB
                if side == "write":
                    tasks.append(start(i, addr, rng.randbytes(beats * BEAT), f"{side} {k}"))
                else:
                    tasks.append(start(i, addr, beats * BEAT, f"{side} {k}"))
        await wait_all(bench, tasks, 100_000, f"{side}s")
    bench.finish()
    for check in (bench.wr_check, bench.rd_check):
        dut._log.info("%s: grants %s, max wait %s, %d beats in %d cycles", check.side, check.grants,
                      check.max_wait, check.beats, check.busy_cycles)
        assert check.grants == [bursts] * MANAGERS, check.grants
        if MANAGERS > 1:
            assert max(check.max_wait) == MANAGERS - 1, f"{check.side}: no real contention: {check.max_wait}"
    record("fairness", {c.side: {"grants": c.grants, "max_wait": c.max_wait, "beats": c.beats,
                                 "cycles": c.busy_cycles} for c in (bench.rd_check, bench.wr_check)})


@cocotb.test()
async def outstanding_limit(dut):
    """Slow responses (R and B stall most cycles) while every manager has bursts queued: the
    bursts in flight on the shared port reach ``max_outstanding`` and never exceed it."""
    log_config(dut, "outstanding_limit")
    rng = random.Random(SEED + 2)
    bench = Bench(dut, rng, ram_pauses={"r": 0.8, "b": 0.8})
    await bench.reset()
    tasks = []
    for i in range(MANAGERS):
        for k in range(min(2 * MAX_OUTSTANDING + 2, REGION // PAGE)):
            addr = i * REGION + k * PAGE
            beats = rng.randint(1, 4)
            tasks.append(bench.write_task(i, addr, rng.randbytes(beats * BEAT), f"write {k}"))
            tasks.append(bench.read_task(i, addr + PAGE // 2, beats * BEAT, f"read {k}"))
    await wait_all(bench, tasks, 100_000, "transfers")
    bench.finish()
    for check in (bench.rd_check, bench.wr_check):
        dut._log.info("%s: max granted %d, max on the port %d (limit %d)", check.side, check.max_granted,
                      check.max_port_outstanding, MAX_OUTSTANDING)
        assert check.max_granted == MAX_OUTSTANDING, f"{check.side}: limit never reached: {check.max_granted}"
        assert check.max_port_outstanding <= MAX_OUTSTANDING
    record("outstanding_limit", {c.side: {"max_granted": c.max_granted, "max_on_port": c.max_port_outstanding}
                                 for c in (bench.rd_check, bench.wr_check)})
