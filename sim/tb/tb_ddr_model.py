"""cocotb tests of :class:`tellme.hw.ddr_model.DdrModel` (and the read benchmark of ``bench/axi.py``).

Two designs are driven from here (``tests/test_ddr_model.py`` picks the tests with ``testcase``):

- ``model_*`` tests: the model alone as the top level (``configurable=True``), driven by
  :class:`ReadStreamer`/:class:`WriteStreamer` below (cycle-exact Python AXI managers that also
  check the subordinate side of the protocol: RVALID/BVALID never drop and their payload never
  changes before READY) and by cocotbext-axi's AxiMasterRead/AxiMasterWrite (random unaligned
  traffic with byte strobes and pauses on every channel);
- ``system_*`` and ``bench_*`` tests: :class:`tellme.hw.ddr_model.DdrSystem`, i.e. the project's
  AxiReadMasters and AxiWriteMaster on the model.

Configuration (``tb_config()``): ``size``, ``base``, ``ports``, ``data_width``, ``image`` (path
of a DDR image for ``system_image``), ``results`` (JSON file the measurements are written to),
``scenarios`` (for ``bench_read``).
"""

from __future__ import annotations

import random
import time

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from ...hw.axi_read import read_command_layout, read_data_layout
from ...hw.ddr_model import MIN_LATENCY, rate_fixed
from .axi import axi_master_read, axi_master_write, random_pauses
from .ddr import load_ddr_image, read_ddr
from .streams import DoneCounter, StreamSink, StreamSource, cycle_now, random_pause, struct_fields, with_timeout
from .testbench import Testbench

FAST = 4096          # a rate (B/cycle) above any port peak here


class DdrTB(Testbench):
    """The model (``model_*`` tests) or a DdrSystem (``system_*``, ``bench_*``) with its clock
    and a watchdog of ``watchdog_cycles``; configuration ``size``, ``base``, ``ports``,
    ``data_width`` (``beat`` bytes per beat) and the tests' own keys."""

    def __init__(self, dut, watchdog_cycles: int, what: str):
        super().__init__(dut)
        cfg = self.cfg
        self.size = int(cfg.get("size", 1 << 20))
        self.base = int(cfg.get("base", 0))
        self.ports = int(cfg.get("ports", 2))
        self.data_width = int(cfg.get("data_width", 128))
        self.beat = self.data_width // 8
        self.cmd_fields = struct_fields(read_command_layout(40))
        self.data_fields = struct_fields(read_data_layout(self.data_width))
        self.watchdog(watchdog_cycles, what)

    def set_ddr(self, *, latency: int, rate) -> None:
        """Drive the model's ``cfg_latency`` and ``cfg_rate`` (``rate`` in bytes per cycle)."""
        self.dut.cfg_latency.value = latency
        self.dut.cfg_rate.value = rate_fixed(rate)

    async def configure(self, *, latency: int, rate) -> None:
        self.set_ddr(latency=latency, rate=rate)
        await ClockCycles(self.clock, 2)

    async def model_setup(self) -> None:
        """The model alone: its manager inputs idle, latency 40 and 64 B/cycle where it has the
        cfg ports, reset."""
        self.hold_low(*(f"rd{i}__{name}" for i in range(self.ports) for name in ("arvalid", "rready")))
        self.hold_low("wr__awvalid", "wr__wvalid", "wr__bready")
        if hasattr(self.dut, "cfg_latency"):
            self.set_ddr(latency=40, rate=64)
        await self.reset()

    def reader(self, prefix: str, bursts, **kwargs) -> "ReadStreamer":
        return ReadStreamer(self.dut, prefix, self.clock, bursts, beat=self.beat, **kwargs)

    def writer(self, prefix: str, bursts, **kwargs) -> "WriteStreamer":
        return WriteStreamer(self.dut, prefix, self.clock, bursts, beat=self.beat, **kwargs)


class ProtocolError(AssertionError):
    """The model broke an AXI rule on a channel it drives."""


# -- cycle-exact Python managers (model tests) ----------------------------------------------------

class ReadStreamer:
    """Issues ``bursts`` (addr, beats) on read port ``prefix`` back to back (ARVALID held until
    ARREADY), takes R beats (RREADY from ``rready_pause``), records the cycle of each AR
    handshake (:attr:`ar_cycles`) and each beat (:attr:`beats`: (cycle, data, last, resp)),
    and checks that R holds its VALID and payload until RREADY."""

    def __init__(self, dut, prefix, clock, bursts, *, beat: int, rready_pause=None, ident=0):
        get = lambda s: getattr(dut, f"{prefix}__{s}")  # noqa: E731
        self.arvalid, self.arready = get("arvalid"), get("arready")
        self.araddr, self.arlen = get("araddr"), get("arlen")
        self.arsize, self.arburst, self.arid = get("arsize"), get("arburst"), get("arid")
        self.rvalid, self.rready, self.rdata = get("rvalid"), get("rready"), get("rdata")
        self.rlast, self.rresp, self.rid = get("rlast"), get("rresp"), get("rid")
        self.clock, self.bursts, self.pause, self.ident = clock, list(bursts), rready_pause, ident
        self.total = sum(b for _, b in self.bursts)
        self.ar_cycles: list[int] = []
        self.beats: list[tuple[int, int, int, int]] = []
        self.finished = cocotb.triggers.Event()
        self.arsize.value = beat.bit_length() - 1
        self.arburst.value = 1
        self.arid.value = ident
        self.arvalid.value = 0
        self.rready.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        edge = RisingEdge(self.clock)
        issued = 0
        arvalid = rready = False
        held = None
        if not self.total:
            self.finished.set()
        while True:
            await edge
            cycle = cycle_now() - 1
            if arvalid and self.arready.value:
                self.ar_cycles.append(cycle)
                issued += 1
            rvalid = bool(self.rvalid.value)
            payload = (int(self.rdata.value), int(self.rlast.value), int(self.rresp.value),
                       int(self.rid.value)) if rvalid else None
            if held is not None and payload != held:
                raise ProtocolError(f"R, cycle {cycle}: {'RVALID dropped' if payload is None else 'payload changed'} "
                                    f"before RREADY ({held} -> {payload})")
            if rvalid and rready:
                if payload[3] != self.ident:
                    raise ProtocolError(f"R, cycle {cycle}: RID {payload[3]}, expected {self.ident}")
                self.beats.append((cycle, *payload[:3]))
                held = None
                if len(self.beats) == self.total:
                    self.finished.set()
            else:
                held = payload
            arvalid = issued < len(self.bursts)
            if arvalid:
                addr, beats = self.bursts[issued]
                self.araddr.value = addr
                self.arlen.value = beats - 1
            self.arvalid.value = int(arvalid)
            rready = not (self.pause is not None and next(self.pause, False))
            self.rready.value = int(rready)


class WriteStreamer:
    """Issues ``bursts`` (addr, [words]) on the write port back to back and offers their W beats
    as early as possible (even before the burst's AW, which the model must wait for); BREADY
    always high. Records W beat cycles (:attr:`w_cycles`) and B responses (:attr:`responses`:
    (cycle, resp)); checks that B holds its VALID and payload until BREADY."""

    def __init__(self, dut, prefix, clock, bursts, *, beat: int, ident=0):
        get = lambda s: getattr(dut, f"{prefix}__{s}")  # noqa: E731
        self.awvalid, self.awready = get("awvalid"), get("awready")
        self.awaddr, self.awlen = get("awaddr"), get("awlen")
        self.awsize, self.awburst, self.awid = get("awsize"), get("awburst"), get("awid")
        self.wvalid, self.wready, self.wdata, self.wstrb, self.wlast = (
            get("wvalid"), get("wready"), get("wdata"), get("wstrb"), get("wlast"))
        self.bvalid, self.bready, self.bresp, self.bid = get("bvalid"), get("bready"), get("bresp"), get("bid")
        self.clock, self.bursts, self.ident = clock, list(bursts), ident
        self.w_cycles: list[int] = []
        self.responses: list[tuple[int, int]] = []
        self.finished = cocotb.triggers.Event()
        self.awsize.value = beat.bit_length() - 1
        self.awburst.value = 1
        self.awid.value = ident
        self.wstrb.value = (1 << beat) - 1
        for sig in (self.awvalid, self.wvalid, self.bready):
            sig.value = 0
        self._task = cocotb.start_soon(self._run())

    async def _run(self):
        edge = RisingEdge(self.clock)
        beats = [(w, i == len(words) - 1) for _, words in self.bursts for i, w in enumerate(words)]
        issued = sent = 0
        awvalid = wvalid = False
        held = None
        if not self.bursts:
            self.finished.set()
        self.bready.value = 1
        while True:
            await edge
            cycle = cycle_now() - 1
            if awvalid and self.awready.value:
                issued += 1
            if wvalid and self.wready.value:
                self.w_cycles.append(cycle)
                sent += 1
            bvalid = bool(self.bvalid.value)
            payload = (int(self.bresp.value), int(self.bid.value)) if bvalid else None
            if held is not None and payload != held:
                raise ProtocolError(f"B, cycle {cycle}: BVALID/payload changed before BREADY ({held} -> {payload})")
            if bvalid:                                   # BREADY is always high
                self.responses.append((cycle, payload[0]))
                if len(self.responses) == len(self.bursts):
                    self.finished.set()
            held = None
            awvalid = issued < len(self.bursts)
            if awvalid:
                addr, words = self.bursts[issued]
                self.awaddr.value = addr
                self.awlen.value = len(words) - 1
            self.awvalid.value = int(awvalid)
            wvalid = sent < len(beats)
            if wvalid:
                self.wdata.value, self.wlast.value = beats[sent][0], int(beats[sent][1])
            self.wvalid.value = int(wvalid)


def words_of(data: bytes, beat: int) -> list[int]:
    return [int.from_bytes(data[i:i + beat], "little") for i in range(0, len(data), beat)]


async def wait_all(clock, streamers, cycles, what):
    for s in streamers:
        await with_timeout(s.finished.wait(), clock, cycles, what)


# -- model tests ----------------------------------------------------------------------------------

@cocotb.test()
async def model_latency(dut):
    """The first beat of a burst comes exactly ``latency`` cycles after its AR handshake, the
    rest back to back; queued bursts start at max(own AR + latency, end of the previous + 1)."""
    tb = DdrTB(dut, 200_000, "DDR model test")
    await tb.model_setup()
    clock = tb.clock
    rng = random.Random(7)
    image = rng.randbytes(64 * 1024)
    load_ddr_image(dut.mem, image, 0)
    measured = {}
    for latency in (MIN_LATENCY, 4, 17, 40):
        await tb.configure(latency=latency, rate=FAST)
        # one burst per port, both ports at once
        streamers = [tb.reader(f"rd{p}", [(tb.base + 0x100 * (p + 1), 8)]) for p in range(tb.ports)]
        await wait_all(clock, streamers, 1000, f"latency {latency}")
        for p, s in enumerate(streamers):
            ar = s.ar_cycles[0]
            cycles = [c for c, *_ in s.beats]
            assert cycles[0] - ar == latency, \
                f"port {p}: first beat {cycles[0] - ar} cycles after AR, latency {latency}"
            assert cycles == list(range(cycles[0], cycles[0] + 8)), f"port {p}: beats not back to back: {cycles}"
            assert [last for *_, last, _ in s.beats] == [0] * 7 + [1]
            want = words_of(image[0x100 * (p + 1):0x100 * (p + 1) + 8 * tb.beat], tb.beat)
            assert [d for _, d, _, _ in s.beats] == want, f"port {p}: data differ"
            s._task.cancel()
        # four bursts queued back to back on port 0, lengths 1, 16, 3, 40
        lengths = [1, 16, 3, 40]
        addrs = [tb.base + 0x1000 * (i + 1) for i in range(4)]
        s = tb.reader("rd0", list(zip(addrs, lengths)))
        await wait_all(clock, [s], 2000, f"queued bursts, latency {latency}")
        k, end = 0, -1
        for i, n in enumerate(lengths):
            first = s.beats[k][0]
            want_first = max(s.ar_cycles[i] + latency, end + 1)
            assert first == want_first, (f"latency {latency}, burst {i}: first beat in cycle {first}, expected "
                                         f"{want_first} (AR in {s.ar_cycles[i]}, previous burst ended {end})")
            end = s.beats[k + n - 1][0]
            assert end - first == n - 1, f"burst {i} not back to back"
            k += n
        s._task.cancel()
        measured[latency] = streamers[0].beats[0][0] - streamers[0].ar_cycles[0]
        dut._log.info("LATENCY %d: first beat %d cycles after AR; queued bursts start at max(AR + latency, "
                      "previous end + 1)", latency, measured[latency])
    # a burst straddling the end of the memory: OKAY inside, DECERR (and zero data) outside
    load_ddr_image(dut.mem, b"\x5a" * (2 * tb.beat), tb.size - 2 * tb.beat)
    s = tb.reader("rd0", [(tb.base + tb.size - 2 * tb.beat, 4)])
    await wait_all(clock, [s], 1000, "straddling burst")
    inside_word = int.from_bytes(b"\x5a" * tb.beat, "little")
    assert [(resp, d) for _, d, _, resp in s.beats] == [(0, inside_word)] * 2 + [(3, 0)] * 2
    s._task.cancel()
    tb.record("latency", measured)


@cocotb.test()
async def model_data_and_errors(dut):
    """Random unaligned reads and writes (byte strobes) through cocotbext-axi managers with
    pauses on every channel, on all ports at once, against a Python mirror; DECERR outside the
    memory (reads return zeros, writes change nothing)."""
    tb = DdrTB(dut, 2_000_000, "DDR model test")
    await tb.model_setup()
    clock = tb.clock
    await tb.configure(latency=9, rate=40)
    rng = random.Random(11)
    window = 128 * 1024                       # the part of the memory the test uses
    mirror = bytearray(rng.randbytes(window))
    load_ddr_image(dut.mem, mirror, 0)
    readers = [axi_master_read(dut, f"rd{p}", clock) for p in range(tb.ports)]
    writer = axi_master_write(dut, "wr", clock)
    random_pauses(readers + [writer], 0.3, rng)
    monitors = [cocotb.start_soon(_subordinate_monitor(dut, f"rd{p}", clock, "r")) for p in range(tb.ports)]
    monitors.append(cocotb.start_soon(_subordinate_monitor(dut, "wr", clock, "b")))

    # writes and reads on disjoint halves run concurrently; each half then checks the other's
    half = window // 2

    async def write_some(count):
        for _ in range(count):
            length = rng.choice([1, 2, 3, tb.beat - 1, tb.beat, tb.beat + 1, rng.randint(1, 700)])
            offset = rng.randrange(half, window - length)
            data = rng.randbytes(length)
            result = await writer.write(tb.base + offset, data)
            assert int(result.resp) == 0, f"write at {offset:#x}: resp {result.resp}"
            mirror[offset:offset + length] = data

    async def read_some(master, count):
        for _ in range(count):
            length = rng.choice([1, tb.beat, tb.beat + 3, rng.randint(1, 2000)])
            offset = rng.randrange(0, half - length)
            result = await master.read(tb.base + offset, length)
            assert int(result.resp) == 0, f"read at {offset:#x}: resp {result.resp}"
            assert bytes(result.data) == bytes(mirror[offset:offset + length]), \
                f"read {length} bytes at {offset:#x} differ"

    tasks = [cocotb.start_soon(write_some(60))] + [cocotb.start_soon(read_some(m, 40)) for m in readers]
    for task in tasks:
        await with_timeout(task, clock, 1_500_000, "random traffic")
    # everything written is readable through every port, and the memory array agrees
    for p, master in enumerate(readers):
        result = await master.read(tb.base + half, half)
        assert bytes(result.data) == bytes(mirror[half:]), f"port {p}: written half differs"
    assert read_ddr(dut.mem, 0, window) == bytes(mirror), "memory array differs from the mirror"

    # DECERR outside [tb.base, tb.base + tb.size)
    outside = [tb.base + tb.size, tb.base + tb.size + 0x10000] + ([tb.base - 0x1000] if tb.base >= 0x1000 else [])
    for addr in outside:
        result = await readers[0].read(addr, 2 * tb.beat)
        assert int(result.resp) == 3, f"read at {addr:#x}: resp {result.resp}, expected DECERR"
        assert bytes(result.data) == bytes(2 * tb.beat)
        result = await writer.write(addr, b"\xff" * (2 * tb.beat))
        assert int(result.resp) == 3, f"write at {addr:#x}: resp {result.resp}, expected DECERR"
    assert read_ddr(dut.mem, 0, window) == bytes(mirror), "a DECERR write changed the memory"
    for task in monitors:
        task.cancel()


async def _subordinate_monitor(dut, prefix, clock, channel):
    """VALID and payload of R (or B) hold until READY."""
    names = ("rvalid", "rready", ("rdata", "rlast", "rresp", "rid")) if channel == "r" else \
        ("bvalid", "bready", ("bresp", "bid"))
    valid, ready = getattr(dut, f"{prefix}__{names[0]}"), getattr(dut, f"{prefix}__{names[1]}")
    payload = [getattr(dut, f"{prefix}__{n}") for n in names[2]]
    edge = RisingEdge(clock)
    held = None
    while True:
        await edge
        v = bool(valid.value)
        now = tuple(int(s.value) for s in payload) if v else None
        if held is not None and now != held:
            raise ProtocolError(f"{prefix} {channel.upper()}, cycle {cycle_now() - 1}: VALID/payload changed "
                                f"before READY ({held} -> {now})")
        held = None if (not v or ready.value) else now


@cocotb.test()
async def model_bandwidth(dut):
    """Shared token bucket: with every port streaming, the total moves at bytes_per_cycle (or at
    the ports' peak when the limit is above it), shared fairly between the ports."""
    tb = DdrTB(dut, 3_000_000, "DDR model test")
    await tb.model_setup()
    clock = tb.clock
    peak = (tb.ports + 1) * tb.beat
    results = {}
    for rate in (5, 20, 40, 51.2, 100):
        await tb.configure(latency=10, rate=rate)
        n_bursts, length = 24, 64
        readers = [tb.reader(f"rd{p}", [(tb.base + (p * n_bursts + i) * length * tb.beat % tb.size, length)
                                                       for i in range(n_bursts)]) for p in range(tb.ports)]
        writer = tb.writer("wr", [(tb.base + 0x80000 + i * length * tb.beat, [i] * length)
                                                  for i in range(n_bursts)])
        await wait_all(clock, readers + [writer], 400_000, f"bandwidth at {rate} B/cycle")
        streams = [[c for c, *_ in r.beats] for r in readers] + [writer.w_cycles]
        start = max(s[0] for s in streams)            # every port streaming ...
        stop = min(s[-1] for s in streams)            # ... until the first one is done
        counts = [sum(start <= c <= stop for c in s) for s in streams]
        cycles = stop - start + 1
        total = sum(counts) * tb.beat / cycles
        expect = min(rate, peak)
        shares = [c / sum(counts) for c in counts]
        results[str(rate)] = {"measured_bytes_per_cycle": round(total, 3), "expected": expect,
                              "window_cycles": cycles, "port_shares": [round(x, 3) for x in shares]}
        dut._log.info("BANDWIDTH limit %s B/cycle, %d ports (peak %d): measured %.3f B/cycle over %d cycles, "
                      "shares %s", rate, tb.ports + 1, peak, total, cycles, [f"{x:.3f}" for x in shares])
        assert abs(total - expect) <= 0.02 * expect + tb.beat / cycles * len(streams), \
            f"limit {rate}: measured {total:.3f} B/cycle, expected {expect}"
        assert max(shares) - min(shares) <= 0.05, f"limit {rate}: unfair shares {shares}"
        for s in readers + [writer]:
            s._task.cancel()
        await ClockCycles(clock, 5)
    tb.record("bandwidth", results)


@cocotb.test()
async def model_image_load(dut):
    """load_ddr_image writes a 550 KB image through VPI (timed); it reads back identically
    through VPI and through AXI."""
    tb = DdrTB(dut, 500_000, "DDR model test")
    await tb.model_setup()
    clock = tb.clock
    await tb.configure(latency=MIN_LATENCY, rate=FAST)
    image = random.Random(3).randbytes(550_000)
    offset = 0x10000
    t0 = time.perf_counter()
    stats = load_ddr_image(dut.mem, image, offset)
    load_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = read_ddr(dut.mem, offset, len(image))
    read_seconds = time.perf_counter() - t0
    assert back == image
    # through AXI: the first and last 4 KiB, and a page in the middle
    pieces = [(0, 4096), (len(image) // 2 & ~4095, 4096), (len(image) - 4096 - len(image) % tb.beat, 4096)]
    s = tb.reader("rd0", [(tb.base + offset + a, n // tb.beat // 2) for a, n in pieces] +
                     [(tb.base + offset + a + n // 2, n // tb.beat // 2) for a, n in pieces])
    await wait_all(clock, [s], 20_000, "reading the image back")
    got = b"".join(d.to_bytes(tb.beat, "little") for _, d, _, _ in s.beats)
    want = b"".join(image[a:a + n // 2] for a, n in pieces) + b"".join(image[a + n // 2:a + n] for a, n in pieces)
    assert got == want
    # a partial last word keeps the bytes after the image
    load_ddr_image(dut.mem, b"\xaa" * (tb.beat + 3), offset)
    assert read_ddr(dut.mem, offset, 2 * tb.beat) == b"\xaa" * (tb.beat + 3) + image[tb.beat + 3:2 * tb.beat]
    dut._log.info("IMAGE LOAD: %d bytes (%d words) in %.3f s (%.1f us/word); read back in %.3f s",
                  len(image), stats["words"], load_seconds, load_seconds / stats["words"] * 1e6, read_seconds)
    tb.record("image_load", {"bytes": len(image), "words": stats["words"], "load_seconds": round(load_seconds, 3),
                          "read_seconds": round(read_seconds, 3)})


@cocotb.test()
async def model_fixed_settings(dut):
    """A model built with constant ``latency`` and ``bytes_per_cycle`` (no cfg ports): exact
    latency, and a lone port streaming at the limit when it is below the port peak."""
    tb = DdrTB(dut, 200_000, "DDR model test")
    latency, rate = int(tb.cfg["latency"]), float(tb.cfg["rate"])
    await tb.model_setup()
    clock = tb.clock
    s = tb.reader("rd0", [(tb.base, 4)])
    await wait_all(clock, [s], 1000, "one burst")
    assert s.beats[0][0] - s.ar_cycles[0] == latency, f"first beat {s.beats[0][0] - s.ar_cycles[0]} cycles after AR"
    s._task.cancel()
    s = tb.reader("rd0", [(tb.base + i * 64 * tb.beat, 64) for i in range(32)])
    await wait_all(clock, [s], 100_000, "stream")
    cycles = s.beats[-1][0] - s.beats[0][0] + 1
    measured = len(s.beats) * tb.beat / cycles
    dut._log.info("FIXED model: latency %d, limit %s B/cycle: one port streams %.3f B/cycle", latency, rate, measured)
    assert abs(measured - min(rate, tb.beat)) <= 0.02 * min(rate, tb.beat), measured
    s._task.cancel()


# -- system tests: the project's AXI masters on the model ----------------------------------------

class SystemPorts:
    """Command sources and data sinks of a DdrSystem."""

    def __init__(self, tb: DdrTB, *, cmd_pause=None, data_pause=None, rng=None):
        self.dut = dut = tb.dut
        self.clock = clock = tb.clock
        self.beat = tb.beat
        ports = tb.ports
        rng = rng or random.Random(0)
        pause = lambda p: None if p is None else random_pause(p, rng.randrange(1 << 30))  # noqa: E731
        self.cmds = [StreamSource(dut, f"rd{i}_cmd", clock, fields=tb.cmd_fields, pause=pause(cmd_pause))
                     for i in range(ports)]
        self.sinks = [StreamSink(dut, f"rd{i}_rdata", clock, fields=tb.data_fields, pause=pause(data_pause))
                      for i in range(ports)]
        self.wr_cmd = StreamSource(dut, "wr_cmd", clock, fields=tb.cmd_fields, pause=pause(cmd_pause))
        self.wr_data = StreamSource(dut, "wr_wdata", clock, pause=pause(cmd_pause))
        self.base_cycle = cycle_now()
        for i in range(ports):
            getattr(dut, f"rd{i}_clear_error").value = 0
        dut.wr_clear_error.value = 0

    def absolute(self, sink_cycle: int) -> int:
        return self.base_cycle + sink_cycle - 1

    def stop(self) -> None:
        """Stop every source and sink (their tasks)."""
        for s in self.cmds + self.sinks + [self.wr_cmd, self.wr_data]:
            s._task.cancel()

    async def read(self, port: int, addr: int, beats: int, what: str) -> bytes:
        """Read ``beats`` beats at ``addr`` through the master ``port``, ``last`` checked."""
        self.cmds[port].send_nowait({"addr": addr, "beats": beats})
        out = bytearray()
        for i in range(beats):
            beat = await with_timeout(self.sinks[port].recv(), self.clock, 100_000, f"{what}: beat {i}")
            assert beat["last"] == (i == beats - 1), f"{what}: last={beat['last']} on beat {i} of {beats}"
            out += beat["data"].to_bytes(self.beat, "little")
        return bytes(out)


@cocotb.test()
async def system_image(dut):
    """A DDR image loaded with load_ddr_image reads back through all four AxiReadMasters at once
    (random stalls on their streams, latency 40, 50 B/cycle); data written through the
    AxiWriteMaster meanwhile lands in the memory and reads back."""
    tb = DdrTB(dut, 2_000_000, "DDR system test")
    tb.set_ddr(latency=40, rate=50)
    clock = tb.clock
    rng = random.Random(5)
    ports = SystemPorts(tb, cmd_pause=0.2, data_pause=0.3, rng=rng)
    await tb.reset()
    image = open(tb.cfg["image"], "rb").read() if tb.cfg.get("image") else rng.randbytes(384 * 1024)
    stats = load_ddr_image(dut.ddr.mem, image, 0, skip_zero=True)
    dut._log.info("image: %d bytes, %d words, %d non-zero words written", len(image), stats["words"], stats["written"])
    padded = image + bytes(-len(image) % tb.beat)
    words = len(padded) // tb.beat
    chunk = -(-words // tb.ports)
    # meanwhile the writer fills a region above the image
    region = (len(padded) + 0xFFFF) & ~0xFFFF
    data = [rng.getrandbits(tb.data_width) for _ in range(2048)]
    ports.wr_cmd.send_nowait({"addr": tb.base + region, "beats": 1000})
    ports.wr_cmd.send_nowait({"addr": tb.base + region + 1000 * tb.beat + 0x40, "beats": 1048})
    for w in data:
        ports.wr_data.send_nowait(w)
    done = DoneCounter(clock, dut.wr_done)
    reads = [cocotb.start_soon(ports.read(p, tb.base + p * chunk * tb.beat, min(chunk, words - p * chunk),
                                          f"port {p}")) for p in range(tb.ports)]
    got = b""
    for task in reads:
        got += await task
    assert got == padded, "image read back through the masters differs"

    await done.wait(2, 200_000, "write commands done")
    expect = b"".join(w.to_bytes(tb.beat, "little") for w in data[:1000])
    expect2 = b"".join(w.to_bytes(tb.beat, "little") for w in data[1000:])
    assert read_ddr(dut.ddr.mem, region, 1000 * tb.beat) == expect
    assert read_ddr(dut.ddr.mem, region + 1000 * tb.beat + 0x40, 1048 * tb.beat) == expect2
    back = await ports.read(tb.ports - 1, tb.base + region + 1000 * tb.beat + 0x40, 1048, "write read-back")
    assert back == expect2
    assert not any(int(getattr(dut, f"rd{i}_error").value) for i in range(tb.ports)) and not int(dut.wr_error.value)


async def stream_reads(tb: DdrTB, *, ports_active, beats, latency, rate, with_write=False, offset=0):
    """All ``ports_active`` readers read ``beats`` beats each (and the writer writes as many if
    ``with_write``), nothing stalls; returns the measured figures."""
    clock = tb.clock
    tb.set_ddr(latency=latency, rate=rate)
    ports = SystemPorts(tb)
    await ClockCycles(clock, 4)
    start = cycle_now()
    for p in range(ports_active):
        ports.cmds[p].send_nowait({"addr": tb.base + offset + p * beats * tb.beat % tb.size, "beats": beats})
    if with_write:
        ports.wr_cmd.send_nowait({"addr": tb.base + tb.size // 2, "beats": beats})
        for i in range(beats):
            ports.wr_data.send_nowait(i)
    for p in range(ports_active):
        for i in range(beats):
            await with_timeout(ports.sinks[p].recv(), clock, 200_000, f"port {p} beat {i}")
    if with_write:
        while ports.wr_data.sent < beats:
            await RisingEdge(clock)
    cycles = [[ports.absolute(c) for c in ports.sinks[p].beat_cycles] for p in range(ports_active)]
    first = min(c[0] for c in cycles)
    last = max(c[-1] for c in cycles)
    moved = ports_active * beats + (beats if with_write else 0)
    window = last - first + 1
    result = {
        "ports": ports_active, "beats_per_port": beats, "latency": latency, "rate": rate,
        "with_write": with_write,
        "total_cycles": last - start + 1,             # from the commands to the last beat
        "window_cycles": window,                      # first beat to last beat
        "bytes_per_cycle": round(moved * tb.beat / window, 3),
        "bytes_per_cycle_total": round(moved * tb.beat / (last - start + 1), 3),
        "per_port_bytes_per_cycle": [round(beats * tb.beat / (c[-1] - c[0] + 1), 3) for c in cycles],
    }
    ports.stop()
    await ClockCycles(clock, 10)
    return result


@cocotb.test()
async def system_bandwidth(dut):
    """Four AxiReadMasters streaming through the model: the total is within a few % of
    bytes_per_cycle, or the ports' peak (4 x 16 B) when the limit is above it; with the writer
    streaming too, reads and writes share the limit."""
    tb = DdrTB(dut, 3_000_000, "DDR system test")
    tb.set_ddr(latency=40, rate=50)
    quiet = SystemPorts(tb)
    await tb.reset()
    quiet.stop()
    results = []
    peak = tb.ports * tb.beat
    for rate, with_write in ((50, False), (64, False), (100, False), (50, True)):
        r = await stream_reads(tb, ports_active=tb.ports, beats=4096, latency=40, rate=rate,
                               with_write=with_write)
        expect = min(rate, peak + (tb.beat if with_write else 0))
        dut._log.info("SYSTEM BANDWIDTH limit %s B/cycle%s: %.3f B/cycle (first to last beat, %d cycles), "
                      "%.3f B/cycle including the start; per port %s", rate, " + writer" if with_write else "",
                      r["bytes_per_cycle"], r["window_cycles"], r["bytes_per_cycle_total"],
                      r["per_port_bytes_per_cycle"])
        results.append(r)
        assert abs(r["bytes_per_cycle"] - expect) <= 0.03 * expect, \
            f"limit {rate}{' + writer' if with_write else ''}: {r['bytes_per_cycle']} B/cycle, expected ~{expect}"
    tb.record("system_bandwidth", results)


@cocotb.test()
async def bench_read(dut):
    """Read bandwidth scenarios for bench/axi.py (``scenarios``: list of dicts with ``name``,
    ``ports``, ``latency``, ``rate``, ``beats``); results go to the ``results`` file."""
    tb = DdrTB(dut, 20_000_000, "DDR system test")
    tb.set_ddr(latency=40, rate=50)
    quiet = SystemPorts(tb)
    await tb.reset()
    quiet.stop()
    out = {}
    for sc in tb.cfg["scenarios"]:
        r = await stream_reads(tb, ports_active=sc["ports"], beats=sc["beats"], latency=sc["latency"],
                               rate=sc["rate"])
        dut._log.info("BENCH %s: %s", sc["name"], r)
        out[sc["name"]] = r
    tb.record("scenarios", out)
