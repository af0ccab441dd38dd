"""cocotb tests of :class:`tellme.hw.act_mover.ScratchReader` and
:class:`tellme.hw.act_mover.ScratchWriter`.

The design under test (``tests/test_act_mover.py`` ``ScratchMovers``) holds readers ``r0, r1,
...`` and writers ``w0, w1, ...`` side by side, each with its own ``lanes`` and one AXI data
width; their ports carry the prefixes ``r<i>_`` / ``w<i>_`` (``r0_cmd__valid``,
``r0_axi__arvalid``, ``w1_done``, ...). Configuration (``tb_config()``): ``data_width``,
``readers`` / ``writers`` (lists of lanes), ``seed``, ``commands`` (per random test).

Subordinates are cocotbext-axi ``AxiRamRead`` / ``AxiRamWrite`` with a random pause generator on
every channel (AR, R / AW, W, B) and random valid/ready stalls on the streams
(:mod:`tellme.sim.tb.streams`), except in ``full_rate`` (no pauses anywhere). Every test runs
under a watchdog and bounds every wait.

- ``reader_random``: random commands (random bases, rows crossing 4 KiB boundaries, strides
  larger than, equal to, smaller than the row and zero, empty commands) against a random memory:
  every output beat equals the memory, ``last`` exactly on each row's final beat, and the AR
  bursts tile the rows exactly, in order (every byte read once, nothing else read).
- ``writer_random``: random disjoint commands (incl. 4 KiB-crossing rows, empty commands, and
  the attention pattern: every head's hd columns of a C x N buffer written by one strided
  command per head) into a memory starting random: afterwards the memory equals the background
  with exactly the rows' bytes replaced; the AW bursts tile the rows; ``done`` pulses once per
  command, when all of its B responses (and no later command's) have arrived; ``busy`` is low
  between commands.
- ``round_trip``: each writer writes random rows into a memory shared with a reader of other
  lanes, which reads them back: the floats come back unchanged.
- ``full_rate``: no pauses: cycles per AXI beat of a long read and a long write, and the cycles
  of 32 one-beat commands on each writer (one at a time or back to back; recorded).
"""

from __future__ import annotations

import math
import random

import cocotb
from cocotb.triggers import ClockCycles

from ...contract.layouts import PAGE
from ...hw.act_mover import scratch_command_layout
from ...hw.pipeline import f32_vec
from .axi import ADDRESS_FIELDS, axi_channel, axi_ram_read, axi_ram_write, random_pauses
from .streams import DoneCounter, HandshakeMonitor, StreamSink, StreamSource, random_pause, struct_fields, with_timeout
from .testbench import Testbench

MEM_SIZE = 1 << 16


def rows_of(command) -> list[tuple[int, int]]:
    base, rows, row_bytes, stride = command
    if not rows or not row_bytes:
        return []
    return [(base + t * stride, row_bytes) for t in range(rows)]


def expected_beats(memory, commands, lanes: int) -> list[tuple[list[int], int]]:
    vb = lanes * 4
    beats = []
    for command in commands:
        for start, nbytes in rows_of(command):
            for off in range(0, nbytes, vb):
                chunk = memory[start + off:start + off + vb]
                words = [int.from_bytes(chunk[4 * j:4 * j + 4], "little") for j in range(lanes)]
                beats.append((words, int(off + vb == nbytes)))
    return beats


def words_of(raw: int, lanes: int) -> list[int]:
    return [(raw >> (32 * j)) & 0xFFFF_FFFF for j in range(lanes)]


def pack_words(words: list[int]) -> int:
    return sum(w << (32 * j) for j, w in enumerate(words))


def command_dict(command) -> dict:
    base, rows, row_bytes, stride = command
    return {"base": base, "rows": rows, "row_bytes": row_bytes, "row_stride": stride}


def crossing_rows(commands) -> int:
    """Rows of ``commands`` that cross a 4 KiB boundary."""
    return sum(1 for c in commands for s, n in rows_of(c) if s // PAGE != (s + n - 1) // PAGE)


class MoverTB(Testbench):
    """The harness of readers and writers (see the module doc) with its clock, a watchdog of
    ``watchdog_cycles`` and every input idle; configuration ``data_width`` (``beat`` bytes per AXI
    beat), ``readers``, ``writers``, ``seed``, ``commands``, ``addr_width``."""

    def __init__(self, dut, watchdog_cycles: int, what: str):
        super().__init__(dut)
        cfg = self.cfg
        self.data_width = int(cfg.get("data_width", 128))
        self.beat = self.data_width // 8
        self.readers = [int(x) for x in cfg.get("readers", [2])]
        self.writers = [int(x) for x in cfg.get("writers", [2])]
        # max_commands of each writer (> 1: commands back to back, done in order)
        self.writer_commands = [int(x) for x in cfg.get("writer_commands", [1] * len(self.writers))]
        self.seed = int(cfg.get("seed", 1))
        self.commands = int(cfg.get("commands", 12))
        self.cmd_fields = struct_fields(scratch_command_layout(int(cfg.get("addr_width", 40))))
        self.watchdog(watchdog_cycles, what)
        for i in range(len(self.readers)):
            self.hold_low(*(f"r{i}_{name}" for name in ("cmd__valid", "o__ready", "clear_error", "axi__arready",
                                                        "axi__rvalid")))
        for i in range(len(self.writers)):
            self.hold_low(*(f"w{i}_{name}" for name in ("cmd__valid", "i__valid", "clear_error", "axi__awready",
                                                        "axi__wready", "axi__bvalid")))

    def row_unit(self, lanes: int) -> int:
        return max(self.beat, lanes * 4)

    def address_monitor(self, prefix: str, kind: str) -> HandshakeMonitor:
        """The AR (``kind`` "read") or AW and B ("write") handshakes of the mover ``prefix``."""
        port = f"{prefix}axi"
        channels = {"ar" if kind == "read" else "aw": axi_channel(self.dut, port, "ar" if kind == "read" else "aw",
                                                                  ADDRESS_FIELDS)}
        if kind == "write":
            channels["b"] = axi_channel(self.dut, port, "b")
        return HandshakeMonitor(self.dut, self.clock, channels)

    def check_tiling(self, bursts: list[dict], commands, what: str) -> list[int]:
        """The bursts (in issue order) must tile the rows of the commands exactly, in order: each
        row by consecutive INCR full-width bursts within 4 KiB pages. Returns the number of bursts
        per command."""
        beat = self.beat
        index = 0
        per_command = []
        for c, command in enumerate(commands):
            count = 0
            for start, nbytes in rows_of(command):
                at = start
                while at < start + nbytes:
                    if index >= len(bursts):
                        raise AssertionError(f"{what}: command {c}: no burst for the row bytes at {at:#x}")
                    b = bursts[index]
                    blen = (b["len"] + 1) * beat
                    if b["addr"] != at or b["burst"] != 1 or (1 << b["size"]) != beat:
                        raise AssertionError(f"{what}: command {c}: burst {index} at {b['addr']:#x} (burst type "
                                             f"{b['burst']}, size {1 << b['size']}), expected INCR at {at:#x}")
                    if at + blen > start + nbytes:
                        raise AssertionError(f"{what}: burst {index} [{at:#x}, {at + blen:#x}) runs past its row "
                                             f"[{start:#x}, {start + nbytes:#x})")
                    if at // PAGE != (at + blen - 1) // PAGE:
                        raise AssertionError(f"{what}: burst {index} [{at:#x}, {at + blen:#x}) crosses 4 KiB")
                    at += blen
                    index += 1
                    count += 1
            per_command.append(count)
        if index != len(bursts):
            raise AssertionError(f"{what}: {len(bursts) - index} bursts beyond the commands' rows, first at "
                                 f"{bursts[index]['addr']:#x}")
        return per_command

    def page_crossing_base(self, rng: random.Random, row_bytes: int, lo: int, hi: int) -> int:
        """A beat-aligned base in [lo, hi) whose first row crosses a 4 KiB boundary."""
        beat = self.beat
        page = rng.randrange(max(1, lo // PAGE + 1), hi // PAGE)
        back = beat * rng.randrange(1, max(2, row_bytes // beat))
        return page * PAGE - min(back, row_bytes - beat if row_bytes > beat else beat)

    def random_read_commands(self, rng: random.Random, unit: int, count: int):
        beat = self.beat
        commands = []
        for c in range(count):
            row_bytes = unit * rng.randrange(1, max(2, 1024 // unit + 1))
            rows = rng.randrange(1, 6)
            kind = rng.choice(["gap", "gap", "equal", "smaller", "zero"])
            if kind == "gap":
                stride = row_bytes + beat * rng.randrange(0, 64)
            elif kind == "equal":
                stride = row_bytes
            elif kind == "smaller":
                stride = beat * rng.randrange(1, max(2, row_bytes // beat))
            else:
                stride = 0
            extent = (rows - 1) * stride + row_bytes
            if c % 3 == 0:
                base = self.page_crossing_base(rng, row_bytes, 0, MEM_SIZE - extent - PAGE)
            else:
                base = beat * rng.randrange(0, (MEM_SIZE - extent) // beat)
            commands.append((base, rows, row_bytes, stride))
        commands.insert(count // 2, (beat * 5, 0, unit, unit))          # no rows
        commands.insert(count // 3, (beat * 7, 3, 0, unit))             # empty rows
        return commands

    def random_write_commands(self, rng: random.Random, unit: int, count: int):
        """Disjoint commands (each command's extent allocated after the previous one), incl. rows
        across 4 KiB boundaries and one buffer written head by head with strided commands."""
        beat = self.beat
        commands = []
        cursor = beat * rng.randrange(0, 16)
        # the attention pattern: C rows of N floats, H heads of hd floats each, one command per head
        hd_bytes = unit * rng.randrange(1, 4)
        heads, rows = rng.randrange(2, 4), rng.randrange(2, 5)
        n_bytes = heads * hd_bytes
        order = list(range(heads))
        rng.shuffle(order)
        for h in order:
            commands.append((cursor + h * hd_bytes, rows, hd_bytes, n_bytes))
        cursor += rows * n_bytes
        for c in range(count):
            row_bytes = unit * rng.randrange(1, max(2, 1024 // unit + 1))
            rows = rng.randrange(1, 5)
            stride = row_bytes + beat * rng.choice([0, 0, rng.randrange(1, 48)])
            extent = (rows - 1) * stride + row_bytes
            if c % 3 == 0:
                nxt = (cursor // PAGE + 1) * PAGE
                base = nxt - beat * rng.randrange(1, max(2, row_bytes // beat))
                base = max(base, cursor)
            else:
                base = cursor + beat * rng.randrange(0, 32)
            if base + extent > MEM_SIZE:
                break
            commands.append((base, rows, row_bytes, stride))
            cursor = base + extent
        commands.insert(len(commands) // 2, (beat * 3, 0, unit, unit))
        commands.insert(len(commands) // 3, (beat * 9, 2, 0, unit))
        return commands

    async def read_and_check(self, index: int, ram, commands, *, rng, pauses: bool, what: str):
        """Send ``commands`` to reader ``index`` and check its output beats and AR bursts."""
        dut, clock = self.dut, self.clock
        lanes = self.readers[index]
        p = f"r{index}_"
        fields = struct_fields(f32_vec(lanes))
        mon = self.address_monitor(p, "read")
        cmd = StreamSource(dut, p + "cmd", clock, fields=self.cmd_fields,
                           pause=random_pause(0.4, rng.randrange(1 << 30)) if pauses else None)
        sink = StreamSink(dut, p + "o", clock, fields=fields,
                          pause=random_pause(0.3, rng.randrange(1 << 30)) if pauses else None)
        expected = expected_beats(ram.mem, commands, lanes)
        for command in commands:
            cmd.send_nowait(command_dict(command))
        bound = 200 + 20 * len(expected)
        for n, (words, last) in enumerate(expected):
            got = await with_timeout(sink.recv(), clock, bound, f"{what}: beat {n} of {len(expected)}")
            if words_of(got["data"], lanes) != words or got["last"] != last:
                raise AssertionError(f"{what}: beat {n}: got {[hex(w) for w in words_of(got['data'], lanes)]} "
                                     f"last={got['last']}, expected {[hex(w) for w in words]} last={last}")
        await ClockCycles(clock, 30)
        assert sink.empty(), f"{what}: {sink.count()} beats beyond the expected {len(expected)}"
        assert not int(getattr(dut, p + "error").value), f"{what}: error raised"
        assert not int(getattr(dut, p + "busy").value), f"{what}: busy still high"
        mon.stop()
        bursts = mon.values["ar"]
        self.check_tiling(bursts, commands, what)
        cmd.set_pause_generator(None)
        sink.set_pause_generator(None)
        return len(expected), len(bursts)

    async def write_and_check(self, index: int, ram, background: bytes, commands, *, rng, pauses: bool, what: str):
        dut, clock = self.dut, self.clock
        lanes = self.writers[index]
        p = f"w{index}_"
        fields = struct_fields(f32_vec(lanes))
        mon = self.address_monitor(p, "write")
        done = DoneCounter(clock, getattr(dut, p + "done"),
                           count=(getattr(dut, p + "axi__bvalid"), getattr(dut, p + "axi__bready")))
        cmd = StreamSource(dut, p + "cmd", clock, fields=self.cmd_fields,
                           pause=random_pause(0.4, rng.randrange(1 << 30)) if pauses else None)
        src = StreamSource(dut, p + "i", clock, fields=fields,
                           pause=random_pause(0.3, rng.randrange(1 << 30)) if pauses else None)
        expected = bytearray(background)
        vb = lanes * 4
        beats = 0
        for command in commands:
            cmd.send_nowait(command_dict(command))
            for start, nbytes in rows_of(command):
                for off in range(0, nbytes, vb):
                    words = [rng.getrandbits(32) for _ in range(lanes)]
                    src.send_nowait({"data": pack_words(words), "last": int(off + vb == nbytes)})
                    expected[start + off:start + off + vb] = b"".join(w.to_bytes(4, "little") for w in words)
                    beats += 1
        await done.wait(len(commands), 400 + 30 * beats + 100 * len(commands), f"{what}: done pulses")
        await ClockCycles(clock, 30)
        mon.stop()
        done.stop()
        assert len(done.cycles) == len(commands), f"{what}: {len(done.cycles)} done pulses for {len(commands)} commands"
        assert src.idle(), f"{what}: {src.count()} data beats not taken"
        assert not int(getattr(dut, p + "error").value), f"{what}: error raised"
        assert not int(getattr(dut, p + "busy").value), f"{what}: busy still high after the last done"
        bursts = mon.values["aw"]
        per_command = self.check_tiling(bursts, commands, what)
        assert len(mon.moves["b"]) == len(bursts), f"{what}: {len(mon.moves['b'])} B responses for {len(bursts)} bursts"
        cumulative = 0
        pipelined = self.writer_commands[index] > 1
        for c, (cycle, b_count, n) in enumerate(zip(done.cycles, done.counts, per_command)):
            cumulative += n
            # one command at a time: done exactly at its last response; back to back: once all
            # its responses are in (a later command's may come in the same cycles), in order
            if b_count < cumulative or (b_count != cumulative and not pipelined):
                raise AssertionError(f"{what}: done of command {c} at cycle {cycle} after {b_count} B responses, "
                                     f"expected {'at least' if pipelined else 'exactly'} {cumulative}")
        got = ram.read(0, MEM_SIZE)
        if got != bytes(expected):
            diff = [a for a in range(MEM_SIZE) if got[a] != expected[a]]
            raise AssertionError(f"{what}: memory differs at {len(diff)} bytes, first at {[hex(a) for a in diff[:8]]}")
        cmd.set_pause_generator(None)
        src.set_pause_generator(None)
        return beats, len(bursts)


async def random_traffic(dut, kind: str, seed: int):
    """Each reader (``kind`` "reader") or writer ("writer") in turn on its own memory (random, and
    pauses on every AXI channel): random commands, checked beat for beat and burst for burst."""
    tb = MoverTB(dut, 400_000, f"{kind}_random")
    reading = kind == "reader"
    rng = random.Random(tb.seed * 1000 + seed)
    units = tb.readers if reading else tb.writers
    memories = []
    for i in range(len(units)):
        image = rng.randbytes(MEM_SIZE)
        ram = (axi_ram_read if reading else axi_ram_write)(dut, f"{kind[0]}{i}_axi", tb.clock, MEM_SIZE, image=image)
        random_pauses([ram], 0.3, rng)
        memories.append((ram, image))
    await tb.reset()
    for i, lanes in enumerate(units):
        (ram, image), what = memories[i], f"{kind} {kind[0]}{i} (lanes {lanes})"
        if reading:
            commands = tb.random_read_commands(rng, tb.row_unit(lanes), tb.commands)
            beats, bursts = await tb.read_and_check(i, ram, commands, rng=rng, pauses=True, what=what)
        else:
            commands = tb.random_write_commands(rng, tb.row_unit(lanes), tb.commands)
            beats, bursts = await tb.write_and_check(i, ram, image, commands, rng=rng, pauses=True, what=what)
        tb.log.info("%s: %d commands, %d rows (%d across 4 KiB), %d beats, %d bursts exact", what, len(commands),
                    sum(len(rows_of(c)) for c in commands), crossing_rows(commands), beats, bursts)


@cocotb.test()
async def reader_random(dut):
    await random_traffic(dut, "reader", 1)


@cocotb.test()
async def writer_random(dut):
    await random_traffic(dut, "writer", 2)


@cocotb.test()
async def round_trip(dut):
    """Writers' rows read back by the readers from the same memory: one writer per reader (the
    first writer and the last ones when there are more writers), writer k of them to reader
    (k + 1) mod readers."""
    tb = MoverTB(dut, 400_000, "round_trip")
    rng = random.Random(tb.seed * 1000 + 3)
    count = min(len(tb.readers), len(tb.writers))
    chosen = [0] + list(range(len(tb.writers) - count + 1, len(tb.writers)))
    pairs = [(w, (k + 1) % len(tb.readers)) for k, w in enumerate(chosen)]
    rams = {}
    for w, r in pairs:
        wram = axi_ram_write(dut, f"w{w}_axi", tb.clock, MEM_SIZE)
        rram = axi_ram_read(dut, f"r{r}_axi", tb.clock, MEM_SIZE, mem=wram.mem)
        random_pauses([wram, rram], 0.3, rng)
        rams[w, r] = (wram, rram)
    await tb.reset()
    for (w, r), (wram, rram) in rams.items():
        background = rng.randbytes(MEM_SIZE)
        wram.write(0, background)
        unit = math.lcm(tb.row_unit(tb.writers[w]), tb.row_unit(tb.readers[r]))
        commands = [c for c in tb.random_write_commands(rng, unit, max(3, tb.commands // 2))]
        await tb.write_and_check(w, wram, background, commands, rng=rng, pauses=True,
                                 what=f"round trip: writer w{w}")
        # rram shares wram's memory; the reader's expected beats come from it (checked against
        # the written data by write_and_check above)
        beats, _ = await tb.read_and_check(r, rram, commands, rng=rng, pauses=True,
                                           what=f"round trip: reader r{r}")
        tb.log.info("round trip w%d (lanes %d) -> r%d (lanes %d): %d commands, %d beats back exact",
                    w, tb.writers[w], r, tb.readers[r], len(commands), beats)


@cocotb.test()
async def full_rate(dut):
    """No pauses: cycles per AXI beat of one long read (reader r0) and write (writer w0)."""
    tb = MoverTB(dut, 200_000, "full_rate")
    clock, beat = tb.clock, tb.beat
    rng = random.Random(tb.seed * 1000 + 4)
    axi_ram_read(dut, "r0_axi", clock, MEM_SIZE, image=rng.randbytes(MEM_SIZE))
    axi_ram_write(dut, "w0_axi", clock, MEM_SIZE)
    await tb.reset()
    results = {}
    # 8 rows of 2 KiB (16 KiB, a 4 KiB crossing in every other row)
    unit = math.lcm(tb.row_unit(tb.readers[0]), tb.row_unit(tb.writers[0]))
    row_bytes = (2048 // unit) * unit
    command = (PAGE - 1024, 8, row_bytes, row_bytes + 1024)
    lanes = tb.readers[0]
    sink = StreamSink(dut, "r0_o", clock, fields=struct_fields(f32_vec(lanes)))
    cmd = StreamSource(dut, "r0_cmd", clock, fields=tb.cmd_fields)
    cmd.send_nowait(command_dict(command))
    total = 8 * row_bytes // (lanes * 4)
    start = tb.cycle()
    for _ in range(total):
        await with_timeout(sink.recv(), clock, 5000, "full_rate read")
    cycles = sink.beat_cycles[-1] - sink.beat_cycles[0] + 1
    results["read"] = {"lanes": lanes, "axi_beats": 8 * row_bytes // beat, "stream_beats": sink.received,
                       "cycles_first_to_last": cycles,
                       "cycles_cmd_to_last": tb.cycle() - start}
    lanes = tb.writers[0]
    done = DoneCounter(clock, dut.w0_done)
    mon = tb.address_monitor("w0_", "write")
    src = StreamSource(dut, "w0_i", clock, fields=struct_fields(f32_vec(lanes)))
    wcmd = StreamSource(dut, "w0_cmd", clock, fields=tb.cmd_fields)
    start = tb.cycle()
    wcmd.send_nowait(command_dict(command))
    for _ in range(8 * row_bytes // (lanes * 4)):
        src.send_nowait({"data": rng.getrandbits(32 * lanes), "last": 0})
    await done.wait(1, 20_000, "full_rate write done")
    mon.stop()
    # done.cycles holds the cycle in which done was high: the one before the edge it is seen at
    results["write"] = {"lanes": lanes, "axi_beats": 8 * row_bytes // beat,
                        "stream_beats": 8 * row_bytes // (lanes * 4),
                        "cycles_cmd_to_done": done.cycles[0] + 1 - start}
    # many one-beat commands (a column block's rows): each writer alone, the same commands
    unit = max(tb.row_unit(lanes) for lanes in tb.writers)
    short = [(2 * PAGE + 2 * k * unit, 1, unit, 0) for k in range(32)]
    results["short_commands"] = {}
    for w, lanes in enumerate(tb.writers):
        if w:                                       # w0's memory is the long write's
            axi_ram_write(dut, f"w{w}_axi", clock, MEM_SIZE)
        done = DoneCounter(clock, getattr(dut, f"w{w}_done"))
        src = StreamSource(dut, f"w{w}_i", clock, fields=struct_fields(f32_vec(lanes)))
        wcmd = StreamSource(dut, f"w{w}_cmd", clock, fields=tb.cmd_fields)
        start = tb.cycle()
        for command in short:
            wcmd.send_nowait(command_dict(command))
            for _ in range(command[2] // (lanes * 4)):
                src.send_nowait({"data": rng.getrandbits(32 * lanes), "last": 0})
        await done.wait(len(short), 20_000, f"short commands, writer w{w}")
        results["short_commands"][f"w{w}"] = {"lanes": lanes, "max_commands": tb.writer_commands[w],
                                              "commands": len(short), "cycles": done.cycles[-1] + 1 - start}
    for key, r in results.items():
        tb.log.info("full_rate %s: %s", key, r)
    tb.record("full_rate", results)
