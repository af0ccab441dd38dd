"""cocotb tests of the EMBED and LM_HEAD step datapaths (:mod:`tellme.hw.embed_path`,
:mod:`tellme.hw.lm_head_path`) in the harness of ``tests/test_step_paths.py``: three paths
(``embed``; ``head``, ``head2``) on one
configurable DDR model whose bandwidth the testbench throttles at random every cycle. Each test
writes its inputs into DDR, queues several commands at once (random pauses on ``cmd``), counts
the ``done`` pulses and compares the DDR contents with the golden functions bit for bit; bytes
the path must not write hold a sentinel that is checked too.

Every ``done`` pulse is also checked in its own cycle: the command's last written bytes are in
DDR and every write burst the path issued has been acknowledged.

- ``test_embed``: ids in the I/O region (unused lanes of the last beat hold junk) -> rows of the
  image's ``embed`` table (some rows rewritten with subnormals, NaN payloads, infinities) into
  scratch arrays: ``fp32.ftz(table[ids])``; a last batch holds ids not below the vocabulary
  (high bits set): ``bad_id`` pulses once for each (and never for a good id), the row read is
  of the id's low bits.
- ``test_lm_head``: x_q, d_x of ``golden.rmsnorm_quantize`` (image's ``final_norm``) on ``x`` and
  ``scale`` (random pauses) -> logits in the I/O region (``golden.lm_head``, +0 padding) and the
  argmax on ``token`` at ``done``; a head with a tied maximum (copied row) and fewer rows than
  the vocab; then the same on ``head2``, a path of half the lanes (its logits beats are half an
  AXI beat, so it pads whole AXI beats).

Configuration: ``model`` (the tiny model's dict), ``hardware``, ``image`` (its image file),
``memory_base``, ``layout`` (absolute bases of ``image``, ``scratch``, ``io``), ``fields``
(command fields per path).
"""

from __future__ import annotations

import collections
import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from ...config import HardwareConfig, ModelConfig
from ...contract import fp32
from ...contract.layouts import ImageFormat, IoLayout, LmHeadStream, align_up, image_sections, scratch_layout
from ...hw.ddr_model import rate_fixed
from .. import golden
from .ddr import load_ddr_image, read_ddr
from .streams import DoneCounter, StreamSource, random_pause
from .testbench import Testbench

SENTINEL = np.uint32(0x5A5A_A5A5)
#: Binary32 patterns of the extreme scratch values: zeros, infinities, NaNs (quiet, signalling,
#: negative with payload), subnormals, the smallest normal, the largest finite, values whose
#: square or product overflows, SiLU's exp overflow / underflow edges, ones.
SPECIALS = np.array([
    0x0000_0000, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x7F80_0001, 0xFFC0_1234,
    0x0000_0001, 0x807F_FFFF, 0x0040_0000, 0x0080_0000, 0x8080_0000, 0x7F7F_FFFF, 0xFF7F_FFFF,
], dtype=np.uint32).view(np.float32)
LARGE = np.array([1e19, -1e19, 2e19, 1e30, -1e30, 88.72, -88.72, -87.4, 87.4, 100.0, -100.0, 1.0, -1.0, 1e-20,
                  -1e-20, 3e-20], dtype=np.float32)


class StepPathsTB(Testbench):
    #: The bound of every test, in cycles (:meth:`start`).
    WATCHDOG_CYCLES = 2_000_000

    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg
        self.hw = HardwareConfig.from_dict(cfg["hardware"])
        self.model = ModelConfig.from_dict(cfg["model"])
        self.layout = cfg["layout"]
        self.memory = dut.ddr.mem
        model = self.model
        self.sections = image_sections(model, ImageFormat.of(self.hw))
        self.io = IoLayout.of(model, self.hw)
        self.image = np.fromfile(cfg["image"], dtype=np.uint8)
        dut.ddr_cfg_latency.value = 20
        dut.ddr_cfg_rate.value = rate_fixed(64)

    async def start(self, what: str):
        """Reset, then bound the test ``what`` to :attr:`WATCHDOG_CYCLES`; returns the watchdog
        task (cancel it at the end)."""
        await self.reset()
        return self.watchdog(self.WATCHDOG_CYCLES, what)

    # -- memory
    def offset(self, address: int) -> int:
        return address - self.cfg["memory_base"]

    def write(self, address: int, array: np.ndarray) -> None:
        load_ddr_image(self.memory, np.ascontiguousarray(array).tobytes(), self.offset(address))

    def read(self, address: int, shape, dtype=np.uint32) -> np.ndarray:
        count = int(np.prod(shape))
        raw = read_ddr(self.memory, self.offset(address), count * np.dtype(dtype).itemsize)
        return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()

    def load_image(self) -> None:
        load_ddr_image(self.memory, self.image.tobytes(), self.offset(self.layout["image"]), skip_zero=True)

    def section(self, name: str) -> np.ndarray:
        s = self.sections[name]
        return self.image[s.offset:s.offset + s.size].view(np.dtype(s.dtype)).reshape(s.shape).copy()

    # -- stimulus helpers
    def throttle(self, *, latency: int, rate: float, stall: float, seed: int):
        """DDR latency ``latency``; every cycle the bandwidth is ``rate`` bytes per cycle, or 0
        with probability ``stall`` (every port then stalls). Returns the driving task."""
        self.dut.ddr_cfg_latency.value = latency
        rng = random.Random(seed)
        full = rate_fixed(rate)

        async def drive():
            while True:
                await RisingEdge(self.clock)
                self.dut.ddr_cfg_rate.value = 0 if rng.random() < stall else full
        return cocotb.start_soon(drive())

    def source(self, name: str, *, pause: float, seed: int, fields=None) -> StreamSource:
        return StreamSource(self.dut, name, self.clock, fields=fields, pause=random_pause(pause, seed))

    def done_counter(self, key: str) -> DoneCounter:
        return DoneCounter(self.clock, getattr(self.dut, f"{key}_done"), error=getattr(self.dut, f"{key}_error"),
                           what=f"{key} path")


class DoneProbe:
    """Checks each ``done`` pulse of a path in its very cycle: the n-th pulse calls the n-th
    function given to :meth:`expect` (a read of the command's last written bytes) and keeps what
    it returns in ``captured``, and records the write bursts issued (AW) and acknowledged (B)
    so far in ``bursts``: a ``done`` before the writes land or are acknowledged is seen."""

    def __init__(self, tb: StepPathsTB, key: str):
        self.pending: collections.deque = collections.deque()
        self.captured: list = []
        self.bursts: list[tuple[int, int]] = []
        dut = tb.dut
        done, aw, b = (getattr(dut, f"{key}_{name}") for name in ("done", "aw", "b"))

        async def watch():
            issued = acknowledged = 0
            while True:
                await RisingEdge(tb.clock)
                issued += int(aw.value)
                acknowledged += int(b.value)
                if int(done.value):
                    self.captured.append(self.pending.popleft()() if self.pending else None)
                    self.bursts.append((issued, acknowledged))
        self.task = cocotb.start_soon(watch())

    def expect(self, read) -> None:
        self.pending.append(read)


def scratch_values(rng: np.random.Generator, shape, kind: str) -> np.ndarray:
    """float32 scratch values of ``kind``: normal (scaled per row), extreme (SPECIALS and LARGE),
    zeros (signed), tiny (subnormal inputs and products that underflow), mixed (all of them)."""
    if kind == "normal":
        scale = rng.choice(np.array([1e-3, 1.0, 30.0], dtype=np.float32), size=shape[:-1] + (1,))
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    if kind == "extreme":
        return rng.choice(np.concatenate([SPECIALS, LARGE]), size=shape)
    if kind == "zeros":
        return rng.choice(np.array([0.0, -0.0], dtype=np.float32), size=shape)
    if kind == "tiny":
        return (rng.choice([-1, 1], size=shape) * 2.0 ** rng.uniform(-149, -60, size=shape)).astype(np.float32)
    if kind == "mixed":
        kinds = rng.choice(["normal", "extreme", "zeros", "tiny"], size=shape)
        out = np.empty(shape, dtype=np.float32)
        for k in ("normal", "extreme", "zeros", "tiny"):
            out[kinds == k] = scratch_values(rng, shape, k)[kinds == k]
        return out
    raise ValueError(kind)


def _first_difference(got: np.ndarray, want: np.ndarray, what: str) -> str | None:
    bad = np.argwhere(got != want)
    if not bad.size:
        return None
    at = tuple(int(i) for i in bad[0])
    return (f"{what}: {len(bad)} words differ, first at {at}: got {int(got[at]):#010x}, "
            f"expected {int(want[at]):#010x}")


def _check_probes(probe: DoneProbe, checks: list) -> None:
    """The DDR words read at each done pulse equal the command's final results."""
    assert len(probe.captured) == len(checks), f"{len(probe.captured)} done pulses probed, {len(checks)} commands"
    for (what, _), (issued, acknowledged) in zip(checks, probe.bursts):
        assert issued and issued == acknowledged, (f"{what}: {issued} write bursts issued, {acknowledged} "
                                                   f"acknowledged at the done pulse")
    for got, (what, want) in zip(probe.captured, checks):
        problem = _first_difference(got, want, what)
        assert problem is None, problem
    probe.task.cancel()


async def _no_more_pulses(tb: StepPathsTB, done: DoneCounter, pulses: int, what: str) -> None:
    """One ``done`` pulse per command: none more in the next cycles."""
    for _ in range(20):
        await RisingEdge(tb.clock)
    assert len(done.cycles) == pulses, f"{what}: {len(done.cycles)} done pulses, {pulses} expected"


# -- EMBED ----------------------------------------------------------------------------------------

@cocotb.test()
async def test_embed(dut):
    tb = StepPathsTB(dut)
    watchdog = await tb.start("embed path")
    tb.load_image()
    model = tb.model
    vocab, hidden = model.vocab_size, model.hidden_size
    rng = np.random.default_rng(5)
    table = tb.section("embed")
    # rows with values the flush changes (and the last row, and row 0)
    for row in (0, 7, vocab - 1, 100):
        table[row] = scratch_values(rng, (hidden,), "mixed")
    table[0, :len(SPECIALS)] = SPECIALS
    table_base = tb.layout["image"] + tb.sections["embed"].offset
    tb.write(table_base, table)
    arrays = scratch_layout(model, tb.hw)
    scratch = tb.layout["scratch"]
    io_ids = tb.layout["io"] + tb.io.ids_offset
    cmd = tb.source("embed_cmd", pause=0.4, seed=6, fields=tb.cfg["fields"]["embed"])
    done = tb.done_counter("embed")
    probe, checks = DoneProbe(tb, "embed"), []
    # batches of (ids offset in the ids page, destination array, ids)
    repeated = [0, vocab - 1, 7, 7, 0, 100, vocab - 1, 3, 3, 3, 42, 0, 200, 7, 100, vocab - 1]
    id_bits = (vocab - 1).bit_length()
    bad = [(1 << id_bits) | 5, 0xFFFF_0000 | (vocab - 1), (1 << 31) | 7]       # rows 5, vocab-1, 7 are read
    batches = [
        [(0, "h0", [vocab - 1]), (256, "h1", repeated), (512, "q", list(rng.integers(0, vocab, 5))),
         (768, "attn", [0])],
        [(0, "h0", list(rng.integers(0, vocab, 16))), (1024, "h1", [100, 100, 100])],
        [(0, "h0", [3, bad[0], 9, bad[1]]), (256, "h1", [bad[2]])],
    ]
    settings = [dict(latency=30, rate=16, stall=0.4, seed=2), dict(latency=5, rate=64, stall=0.1, seed=3),
                dict(latency=12, rate=32, stall=0.2, seed=4)]
    bad_id_pulses = []

    async def count_bad_ids():
        while True:
            await RisingEdge(tb.clock)
            if int(dut.embed_bad_id.value):
                bad_id_pulses.append(number)
    counter = cocotb.start_soon(count_bad_ids())
    pulses = 0
    for number, (batch, setting) in enumerate(zip(batches, settings)):
        stalls = tb.throttle(**setting)
        page = np.full(1024, 0xDEAD_BEEF, dtype=np.uint32)       # the ids page, junk past every call's ids
        for offset, _, ids in batch:
            page[offset // 4:offset // 4 + len(ids)] = ids
        tb.write(io_ids, page)
        before = {}
        for _, name, _ in batch:
            a = arrays[name]
            before[name] = np.full((a.rows, a.row_bytes // 4), SENTINEL, dtype=np.uint32)
            tb.write(scratch + a.offset, before[name])
        for offset, name, ids in batch:
            a = arrays[name]
            last = scratch + a.offset + (len(ids) - 1) * a.row_bytes
            probe.expect(lambda last=last, a=a: tb.read(last, (a.row_bytes // 4,)))
            want_last = before[name][len(ids) - 1].copy()
            want_last[:hidden] = fp32.ftz(table[ids[-1] & ((1 << id_bits) - 1)]).view(np.uint32)
            checks.append((f"embed batch {number}, {len(ids)} ids -> {name}: last row at done", want_last))
            cmd.send_nowait({"ids": io_ids + offset, "tokens": len(ids), "table": table_base,
                             "dst": scratch + a.offset, "row_stride": a.row_bytes})
        pulses += len(batch)
        await done.wait(pulses, 200_000, f"embed batch {number}: done")
        for offset, name, ids in batch:
            a = arrays[name]
            want = before[name].copy()
            want[:len(ids), :hidden] = fp32.ftz(table[np.array(ids, dtype=np.int64) & ((1 << id_bits) - 1)]).view(np.uint32)
            got = tb.read(scratch + a.offset, want.shape)
            problem = _first_difference(got, want, f"embed batch {number}, {len(ids)} ids -> {name} (row, word)")
            assert problem is None, problem
        await _no_more_pulses(tb, done, pulses, f"embed batch {number}")
        stalls.cancel()
        tb.log.info("embed batch %d: %d commands ok", number, len(batch))
    _check_probes(probe, checks)
    assert not int(dut.embed_error.value)
    counter.cancel()
    assert bad_id_pulses == [len(batches) - 1] * len(bad), f"bad_id pulses in batches {bad_id_pulses}, want one per bad id"
    done.stop()
    watchdog.cancel()


# -- LM_HEAD --------------------------------------------------------------------------------------

class HeadCalls:
    """Drives one LM head path (``key``, ``lanes`` logits per beat): x_q/d_x on ``x``/``scale``,
    commands on ``cmd`` (all random pauses), the argmax sampled at each ``done``."""

    def __init__(self, tb: StepPathsTB, key: str, lanes: int, seed: int):
        self.tb, self.key, self.lanes = tb, key, lanes
        fields = [("q", 8 * lanes, False), ("last", 1, False)]
        self.cmd = tb.source(f"{key}_cmd", pause=0.5, seed=seed, fields=tb.cfg["fields"][key])
        self.x = tb.source(f"{key}_x", pause=0.3, seed=seed + 1, fields=fields)
        self.scale = tb.source(f"{key}_scale", pause=0.6, seed=seed + 2)
        self.done = tb.done_counter(key)
        self.probe, self.checks = DoneProbe(tb, key), []
        self.tokens: list[int] = []
        self.pulses = 0
        done, token = getattr(tb.dut, f"{key}_done"), getattr(tb.dut, f"{key}_token")

        async def token_at_done():
            while True:
                await RisingEdge(tb.clock)
                if int(done.value):
                    self.tokens.append(int(token.value))
        self.monitor = cocotb.start_soon(token_at_done())

    async def batch(self, number: int, calls, head_q, head_scale, gain, eps, area_base: int, area: int,
                    slot: int) -> None:
        """Queue ``calls`` ((x row, head rows, description), logits of call i at ``area_base + 4 i
        slot``) at once; check the logits area (``area`` words, sentinel where nothing is
        written), the tokens and the done pulses."""
        tb, L, what = self.tb, self.lanes, f"{self.key} batch {number}"
        # the path writes whole beats of L logits and of the AXI bus, +0 padded
        unit = max(L, tb.hw.axi_data_width // 32)
        want = np.full(area, SENTINEL, dtype=np.uint32)
        tokens = []
        for index, (x, rows, _) in enumerate(calls):
            x_q, d_x = golden.rmsnorm_quantize(x, gain, eps, tb.hw.ew_lanes)
            logits = golden.lm_head(x_q, d_x, head_q[:rows], head_scale[:rows])[0]
            tokens.append(int(np.argmax(logits)))
            written = np.zeros(-(-rows // unit) * unit, dtype=np.uint32)
            written[:rows] = logits.astype(np.float32).view(np.uint32)
            want[index * slot:index * slot + len(written)] = written
            padded = np.zeros(-(-x.shape[1] // L) * L, dtype=np.int8)
            padded[:x.shape[1]] = x_q[0]
            beats = len(padded) // L
            for b in range(beats):
                lanes = padded[b * L:(b + 1) * L]
                self.x.send_nowait({"q": sum((int(v) & 0xFF) << (8 * j) for j, v in enumerate(lanes)),
                                    "last": int(b == beats - 1)})
            self.scale.send_nowait(int(np.float32(d_x[0]).view(np.uint32)))
            last_beat = area_base + 4 * (index * slot + len(written) - L)
            self.probe.expect(lambda at=last_beat: tb.read(at, (L,)))
            self.checks.append((f"{what} call {index}: last logits beat at done", written[-L:]))
        tb.write(area_base, np.full(area, SENTINEL, dtype=np.uint32))
        first = len(self.tokens)
        for index, (x, rows, _) in enumerate(calls):
            self.cmd.send_nowait({"stripe_base": 0, "stripe_bytes": 0, "rows_base": tb.head_base,
                                  "scales_base": tb.scale_base, "rows": rows,
                                  "cols": x.shape[1], "logits": area_base + 4 * index * slot})
        self.pulses += len(calls)
        await self.done.wait(self.pulses, 200_000, f"{what}: done")
        got = tb.read(area_base, want.shape)
        problem = _first_difference(got, want, f"{what}: logits area (word)")
        assert problem is None, problem
        await _no_more_pulses(tb, self.done, self.pulses, what)
        assert len(self.tokens) == self.pulses, f"{what}: {len(self.tokens)} tokens for {self.pulses} done pulses"
        for index, (_, rows, description) in enumerate(calls):
            got_token = self.tokens[first + index]
            assert got_token == tokens[index], (f"{what} call {index} ({description}): token {got_token}, "
                                                f"expected {tokens[index]}")
            tb.log.info("%s call %d (%s, %d rows): token %d ok", what, index, description, rows, got_token)

    def finish(self) -> None:
        _check_probes(self.probe, self.checks)
        assert not int(getattr(self.tb.dut, f"{self.key}_error").value)
        self.monitor.cancel()
        self.done.stop()


@cocotb.test()
async def test_lm_head(dut):
    tb = StepPathsTB(dut)
    watchdog = await tb.start("lm head path")
    tb.load_image()
    model, hw = tb.model, tb.hw
    L, vocab, hidden, eps = hw.ew_lanes, model.vocab_size, model.hidden_size, model.rms_norm_eps
    # the image's head (striped over the HP ports), rewritten in place as one port's stream (the
    # paths here read one port each; the striped read is the top level's and LmHead's own test)
    section = tb.sections["lm_head"]
    head_q, head_scale = LmHeadStream.of(model, ImageFormat.of(hw)).decode(
        tb.image[section.offset:section.offset + section.size].tobytes())
    gain = tb.section("final_norm")
    image = tb.layout["image"]
    tb.head_base = image + section.offset
    tb.scale_base = tb.head_base + align_up(head_q.nbytes, hw.axi_data_width // 8)
    logits_base = tb.layout["io"] + tb.io.logits_offset
    area = (tb.io.size - tb.io.logits_offset) // 4
    rng = np.random.default_rng(9)

    def row(kind: str) -> np.ndarray:
        x = scratch_values(rng, (1, hidden), kind)
        return fp32.ftz(np.nan_to_num(x, nan=1.0, posinf=1e30, neginf=-1e30).astype(np.float32))

    # the tie: copy the row and scale of the maximum to an earlier index (the copy must win)
    x_tie = row("normal")
    q_tie, d_tie = golden.rmsnorm_quantize(x_tie, gain, eps, L)
    best = max(1, int(np.argmax(golden.lm_head(q_tie, d_tie, head_q, head_scale)[0])))
    copy = int(rng.integers(0, best))
    head_q[copy], head_scale[copy] = head_q[best], head_scale[best]
    tb.write(tb.head_base, head_q)
    tb.write(tb.scale_base, head_scale)

    head = HeadCalls(tb, "head", L, seed=10)
    batches = [
        [(x_tie, vocab, "tie"), (row("normal"), vocab, "normal"), (row("extreme"), vocab - 3, "extreme")],
        [(row("zeros"), vocab, "zero row"), (row("mixed"), vocab - 1, "mixed"), (row("normal"), 1, "one row")],
    ]
    # a slow DDR first (the logits writes lag the head), then a fast one with a long latency
    settings = [dict(latency=20, rate=4, stall=0.4, seed=4), dict(latency=40, rate=64, stall=0.2, seed=5)]
    for number, (calls, setting) in enumerate(zip(batches, settings)):
        stalls = tb.throttle(**setting)
        await head.batch(number, calls, head_q, head_scale, gain, eps, logits_base, area, vocab)
        stalls.cancel()
    assert head.tokens[0] == copy, f"the tied maximum: token {head.tokens[0]}, expected the earlier copy {copy}"
    head.finish()

    # half the lanes: logits padded to whole AXI beats (rows 13: 14 logits beats, 16 floats written)
    head2 = HeadCalls(tb, "head2", L // 2, seed=20)
    stalls = tb.throttle(latency=10, rate=16, stall=0.3, seed=6)
    calls = [(row("normal"), 13, "normal"), (x_tie, 16, "the tie's x"), (row("mixed"), 1, "one row"),
             (row("normal"), 6, "normal"), (row("extreme"), 5, "extreme")]
    await head2.batch(0, calls, head_q, head_scale, gain, eps, logits_base, area, 16)
    stalls.cancel()
    head2.finish()
    watchdog.cancel()
