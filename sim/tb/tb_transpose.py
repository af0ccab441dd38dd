"""cocotb tests of :class:`tellme.hw.transpose.Transpose` and :class:`tellme.hw.transpose.ResidualAdd`.

Transpose (configuration ``unit = "transpose"``; run the tests ``test_transpose_*``):

``test_transpose_ranges``
    Per entry of ``stalls`` (random valid/ready stall probabilities for ``cmd``, ``i``, ``o``,
    ``blocks``), ``repeat`` times the range lengths ``lengths`` (shuffled), queued back to back,
    each with its own token count n (every n = 1..T occurs); row values are random binary32 bit
    patterns with subnormals, NaNs (signalling and quiet, both signs), infinities and -0, which
    must come out unchanged. Expected ``o`` beats: per block of R rows, the numpy transpose of
    the block's first n token columns, padded with +0 to whole beats, ``last`` on each token's
    final beat; expected ``blocks`` beats ``{row0, rows}``. Every beat is compared as it moves,
    each block's ``blocks`` beat must move no later than its first ``o`` beat, and nothing may
    follow the last expected beat.
``test_transpose_throughput``
    No stalls. Drain-bound (n >= L, ranges of whole blocks): the ``o`` beats of all ranges move
    in consecutive cycles, and the first ``o`` beat moves ``latency`` cycles after the first
    block's final row. Fill-bound (n = 1, every block at least R/L rows, partial blocks
    included): the ``i`` beats of all ranges move in consecutive cycles.

ResidualAdd (``unit = "residual"``; ``test_residual_*``):

``test_residual_values``
    Per entry of ``stalls`` (``y``, ``h``, ``o``), ``beats`` beats of random and extreme operand
    pairs (random bit patterns, specials x specials, cancellation to zero and to the subnormal
    range, rounding ties, overflow); each output lane must equal ``golden.residual_add(h, y)``
    bit for bit (uint32 views), ``last`` that of ``y`` (``h``'s ``last`` is set differently).
``test_residual_limits``
    The largest residual values (issue #16): the pairs of :data:`RESIDUAL_LIMITS` at the top of
    the binary32 range (sums that overflow to infinity, round on a tie at FLT_MAX, cancel to +0),
    in both operand orders and both signs, without stalls and under the last ``stalls`` entry;
    the golden model must give each pair's hand-derived sum before the unit is held to it.
``test_residual_throughput``
    No stalls: ``o`` beats in consecutive cycles, the first ``latency`` cycles after the first
    input pair moved.

Configuration (``run_cocotb(parameters=...)``): ``unit``, ``fields`` (``{stream: Field list}``),
``tokens``, ``lanes``, ``block`` (transpose) or ``lanes`` (residual), ``latency``, ``stalls``,
``lengths``, ``repeat``, ``beats``, ``seed`` (numpy stimulus seed; stall patterns follow
cocotb's seed).
"""

from __future__ import annotations

import random

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from .. import golden
from .streams import HandshakeMonitor, StreamSink, StreamSource, expect_beats, random_pause
from .testbench import Testbench

U32 = np.dtype("<u4")
#: Binary32 patterns every stimulus mixes in: zeros, subnormals, the smallest normals, the
#: largest finite values, infinities, NaNs (quiet and signalling, both signs), one and its
#: neighbour, small powers of two.
SPECIALS = np.array([
    0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF, 0x00400000,
    0x00800000, 0x80800000, 0x00800001, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFBFFFFF, 0x7FFFFFFF, 0x3F800000, 0xBF800000,
    0x3F800001, 0x33800000, 0x34000000, 0x4B000000, 0xCB800000,
], dtype=U32)
RESET_CYCLES = 8


def random_bits(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` binary32 patterns: a third uniform random bits, a third specials, a third
    ordinary values of moderate magnitude."""
    kind = rng.integers(0, 3, count)
    out = rng.integers(0, 1 << 32, count, dtype=np.uint64).astype(U32)
    out[kind == 1] = rng.choice(SPECIALS, int((kind == 1).sum()))
    normal = (rng.standard_normal(count) * np.exp2(rng.integers(-20, 20, count))).astype(np.float32)
    out[kind == 2] = normal.view(U32)[kind == 2]
    return out


def pack_lanes(values) -> int:
    """uint32 lanes as one integer, lane 0 in the least significant bits."""
    return int.from_bytes(np.asarray(values, dtype=U32).tobytes(), "little")


def unpack_lanes(raw: int, count: int) -> np.ndarray:
    return np.frombuffer(int(raw).to_bytes(4 * count, "little"), dtype=U32).copy()


class UnitTB(Testbench):
    """What the Transpose and ResidualAdd testbenches share: the configuration (checked to be of
    ``unit``), the numpy stimulus generator ``rng`` (``seed`` and cocotb's seed), the generator
    of the stall patterns ``rnd`` (cocotb's seed) and the cycle of every beat on the stream
    ``ports`` (``monitor``, a :class:`~.streams.HandshakeMonitor`)."""

    def __init__(self, dut, unit: str, ports):
        super().__init__(dut)
        assert self.cfg.get("unit") == unit, self.cfg.get("unit")
        self.rng = np.random.default_rng([int(self.cfg.get("seed", 1)), cocotb.RANDOM_SEED])
        self.rnd = random.Random(cocotb.RANDOM_SEED)
        self.monitor = HandshakeMonitor(dut, self.clock, ports)

    async def start(self, cycles: int, what: str) -> None:
        """Bound the test ``what`` to ``cycles`` cycles, then reset the design."""
        self.watchdog(cycles, what)
        await self.reset(RESET_CYCLES)

    def stall(self, ports, probabilities) -> None:
        """Stall each of ``ports`` (sources and sinks) at random with its probability (0: never)."""
        for port, p in zip(ports, probabilities, strict=True):
            port.set_pause_generator(random_pause(p, self.rnd.getrandbits(32)) if p else None)


def _gaps(cycles, step: int = 1) -> list[int]:
    """Positions where consecutive beats did not move ``step`` cycles apart."""
    return [k for k in range(1, len(cycles)) if cycles[k] != cycles[k - 1] + step]


async def _no_more(sinks, clock, cycles=40):
    """Nothing may arrive after the expected beats (sinks ready, ``cycles`` cycles)."""
    for sink in sinks:
        sink.clear_pause_generator()
    await ClockCycles(clock, cycles)
    for sink in sinks:
        assert sink.empty(), f"{sink.name}: unexpected extra beat {sink.recv_nowait()!r}"


# -- Transpose ------------------------------------------------------------------------------------

class TransposeTB(UnitTB):
    def __init__(self, dut):
        super().__init__(dut, "transpose", ["cmd", "i", "o", "blocks"])
        self.T, self.L, self.R = (int(self.cfg[k]) for k in ("tokens", "lanes", "block"))
        self.fields = self.cfg["fields"]
        self.cmd = StreamSource(dut, "cmd", self.clock, fields=self.fields["cmd"])
        self.i = StreamSource(dut, "i", self.clock, fields=self.fields["i"])
        self.o = StreamSink(dut, "o", self.clock, fields=self.fields["o"])
        self.blocks = StreamSink(dut, "blocks", self.clock, fields=self.fields["blocks"])

    def queue(self, ranges):
        """Queue ``ranges`` (list of (n, rows x T uint32 array)); return the expected o beats,
        blocks beats, a description per o beat and the index of each block's first o beat."""
        L, R = self.L, self.R
        o_beats, block_beats, notes, first_o = [], [], [], []
        for index, (n, rows) in enumerate(ranges):
            self.cmd.send_nowait({"tokens": n})
            for r, row in enumerate(rows):
                self.i.send_nowait({"data": pack_lanes(row), "last": int(r == len(rows) - 1)})
            for row0 in range(0, len(rows), R):
                block = rows[row0:row0 + R, :n]
                count = len(block)
                block_beats.append({"row0": row0, "rows": count})
                first_o.append(len(o_beats))
                beats = -(-count // L)
                padded = np.zeros((beats * L, n), dtype=U32)
                padded[:count] = block
                for t in range(n):
                    for k in range(beats):
                        o_beats.append({"data": pack_lanes(padded[k * L:(k + 1) * L, t]),
                                        "last": int(k == beats - 1)})
                        notes.append(f"range {index} (n={n}, {len(rows)} rows), block row0={row0} "
                                     f"rows={count}, token {t}, beat {k}")
        return o_beats, block_beats, notes, first_o

    def make_ranges(self, lengths, ns):
        return [(n, random_bits(self.rng, length * self.T).reshape(length, self.T))
                for length, n in zip(lengths, ns)]

    async def run(self, ranges, what, bound):
        o_beats, block_beats, notes, first_o = self.queue(ranges)
        self.monitor.clear()
        o_start, blocks_start = self.o.received, self.blocks.received
        o_board = cocotb.start_soon(expect_beats(self.o, o_beats, self.clock, bound, f"{what}: o",
                                                 describe=lambda k: notes[k]))
        blocks_board = cocotb.start_soon(expect_beats(self.blocks, block_beats, self.clock, bound, f"{what}: blocks",
                                                      describe=lambda k: f"block {k}"))
        await o_board
        await blocks_board
        # Each block's blocks beat moves before or with its first o beat.
        o_cycles, b_cycles = self.monitor.moves["o"], self.monitor.moves["blocks"]
        assert len(o_cycles) == len(o_beats) and len(b_cycles) == len(block_beats), \
            (what, len(o_cycles), len(o_beats), len(b_cycles), len(block_beats))
        for b, first in enumerate(first_o):
            assert b_cycles[b] <= o_cycles[first], \
                (f"{what}: block {b} ({block_beats[b]}) had its blocks beat in cycle {b_cycles[b]}, "
                 f"after its first o beat (cycle {o_cycles[first]}: {notes[first]})")
        assert self.o.received - o_start == len(o_beats)
        assert self.blocks.received - blocks_start == len(block_beats)
        return o_beats, first_o


@cocotb.test(timeout_time=200, timeout_unit="ms")
async def test_transpose_ranges(dut):
    tb = TransposeTB(dut)
    await tb.start(2_000_000, "test_transpose_ranges")
    lengths = [int(x) for x in tb.cfg["lengths"]]
    for stall in tb.cfg["stalls"]:
        tb.stall((tb.cmd, tb.i, tb.o, tb.blocks), stall)
        all_lengths = lengths * int(tb.cfg.get("repeat", 1))
        tb.rnd.shuffle(all_lengths)
        ns = [1 + k % tb.T for k in range(len(all_lengths))]
        tb.rnd.shuffle(ns)
        ranges = tb.make_ranges(all_lengths, ns)
        beats = sum(n * -(-len(rows) // tb.L) * 1 for n, rows in ranges) + sum(len(r) for _, r in ranges)
        rate = min(1 - p for p in stall) if max(stall) < 1 else 0.01
        await tb.run(ranges, f"stalls {stall}", int(4 * beats / max(rate, 0.01) ** 2) + 500)
        await _no_more([tb.o, tb.blocks], tb.clock)


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def test_transpose_throughput(dut):
    tb = TransposeTB(dut)
    await tb.start(200_000, "test_transpose_throughput")
    T, L, R = tb.T, tb.L, tb.R

    # Drain-bound: n >= L on every range (when T allows), whole blocks.
    if T >= L:
        lengths = [R, 3 * R, 2 * R, R, 4 * R]
        ns = [tb.rnd.randint(L, T) for _ in lengths]
        ranges = tb.make_ranges(lengths, ns)
        # Rows go in the cycle the driver can offer them, so the first block's last row moves
        # R - 1 cycles after the first row.
        await tb.run(ranges, "drain-bound", 20 * sum(lengths) * T)
        o_cycles, i_cycles = tb.monitor.moves["o"], tb.monitor.moves["i"]
        gaps = _gaps(o_cycles)
        assert not gaps, f"drain-bound: o beats not back to back at beats {gaps[:10]} (cycles {o_cycles[:40]})"
        latency = o_cycles[0] - i_cycles[R - 1]
        assert latency == int(tb.cfg["latency"]), \
            f"first o beat {latency} cycles after the first block's final row, expected {tb.cfg['latency']}"
        dut._log.info("drain-bound: %d o beats in %d cycles, latency %d", len(o_cycles),
                      o_cycles[-1] - o_cycles[0] + 1, latency)
        await _no_more([tb.o, tb.blocks], tb.clock, 10)

    # Fill-bound: n = 1 and every block at least R/L rows (the drain of a whole block), so
    # each block fills no faster than its predecessor drains: the rows move back to back.
    p = max(R // L, 1)
    lengths = [R, R + p, 2 * R + max(p, 3), max(p, L - 1), 3 * R, p]
    ranges = tb.make_ranges(lengths, [1] * len(lengths))
    await tb.run(ranges, "fill-bound", 20 * sum(lengths) + 200)
    i_cycles = tb.monitor.moves["i"]
    gaps = _gaps(i_cycles)
    assert len(i_cycles) == sum(lengths)
    assert not gaps, f"fill-bound: i beats not back to back at rows {gaps[:10]} (cycles {i_cycles[:40]})"
    dut._log.info("fill-bound: %d rows in %d cycles", len(i_cycles), i_cycles[-1] - i_cycles[0] + 1)
    await _no_more([tb.o, tb.blocks], tb.clock, 10)


# -- ResidualAdd ----------------------------------------------------------------------------------

#: (h, y, h + y) binary32 patterns at the top of the range, the sums derived by hand (round to
#: nearest even; FLT_MAX = 0x7F7FFFFF = 2^128 - 2^104, its ulp 2^104, half an ulp 2^103 =
#: 0x73000000). ``test_residual_limits`` also runs each with the operands swapped and with both
#: signs flipped (the sum's sign flips with them; +0 stays +0).
RESIDUAL_LIMITS = [
    (0x7F7FFFFF, 0x7F7FFFFF, 0x7F800000),   # FLT_MAX + FLT_MAX: overflow to +inf
    (0x7F7FFFFF, 0xFF7FFFFF, 0x00000000),   # FLT_MAX - FLT_MAX: +0
    (0x7F7FFFFF, 0x73000000, 0x7F800000),   # + half an ulp: a tie, FLT_MAX's mantissa is odd: up, +inf
    (0x7F7FFFFF, 0x72FFFFFF, 0x7F7FFFFF),   # + just under half an ulp: FLT_MAX
    (0x7F7FFFFF, 0x73800000, 0x7F800000),   # + one ulp: 2^128, +inf
    (0x7F7FFFFF, 0xF3800000, 0x7F7FFFFE),   # - one ulp: the next value down
    (0x7F7FFFFF, 0xF3000000, 0x7F7FFFFE),   # - half an ulp: a tie, to the even 0x7F7FFFFE
    (0x7F7FFFFE, 0x73000000, 0x7F7FFFFE),   # FLT_MAX - ulp + half an ulp: a tie, stays (even)
    (0x7F7FFFFE, 0x73000001, 0x7F7FFFFF),   # ... just over half an ulp: up to FLT_MAX
    (0x7F000000, 0x7F000000, 0x7F800000),   # 2^127 + 2^127 = 2^128: +inf
    (0x7F000000, 0x7EFFFFFF, 0x7F800000),   # 2^127 + (2^127 - 2^103) = 2^128 - 2^103: a tie, +inf
    (0x7F7FFFFF, 0x3F800000, 0x7F7FFFFF),   # FLT_MAX + 1: FLT_MAX
    (0x7F7FFFFF, 0x00800000, 0x7F7FFFFF),   # + the smallest normal
    (0x7F7FFFFF, 0x00000001, 0x7F7FFFFF),   # + a subnormal (flushed to 0)
    (0x7F7FFFFF, 0x7F800000, 0x7F800000),   # + inf
    (0x7F7FFFFF, 0xFF800000, 0xFF800000),   # - inf
]


def residual_limit_operands() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of :data:`RESIDUAL_LIMITS`, each also swapped, negated, and swapped and negated:
    (h, y, expected sum) as uint32 arrays."""
    sign = np.uint32(0x80000000)
    h, y, want = (np.array(column, dtype=U32) for column in zip(*RESIDUAL_LIMITS))
    # -(+0) is -0, but x + (-x) is +0 in either sign: the negated sums keep +0
    neg_want = np.where(want == 0, want, want ^ sign).astype(U32)
    return (np.concatenate([h, y, h ^ sign, y ^ sign]), np.concatenate([y, h, y ^ sign, h ^ sign]),
            np.concatenate([want, want, neg_want, neg_want]))

def residual_operands(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` operand pairs (h, y) as uint32 bit patterns: random bits, specials x specials,
    and pairs that cancel (x + -x, to the subnormal range), round on ties or overflow."""
    h = random_bits(rng, count)
    y = random_bits(rng, count)
    kind = rng.integers(0, 8, count)
    hf = h.view(np.float32)
    # specials x specials
    sel = kind == 1
    h[sel] = rng.choice(SPECIALS, int(sel.sum()))
    y[sel] = rng.choice(SPECIALS, int(sel.sum()))
    # exact cancellation: y = -h (x - x = +0, -0 + -0 = -0 when h = -0)
    sel = kind == 2
    y[sel] = h[sel] ^ np.uint32(0x80000000)
    # near cancellation: y = -(h moved by a few ulps): results far below h, some subnormal
    sel = kind == 3
    y[sel] = (h[sel] + rng.integers(-3, 4, int(sel.sum())).astype(U32)) ^ np.uint32(0x80000000)
    # ties and near-ties: y = h * 2^-24 or 2^-25 (+- an ulp)
    sel = kind == 4
    scale = np.exp2(-rng.integers(23, 26, int(sel.sum()))).astype(np.float32)
    with np.errstate(all="ignore"):
        y[sel] = (hf[sel] * scale).view(U32) + rng.integers(0, 2, int(sel.sum())).astype(U32)
    # sums straddling 2^-126: small normals of opposite signs
    sel = kind == 5
    small = (np.float32(2.0 ** -126) * (1 + rng.random(int(sel.sum())))).astype(np.float32)
    other = (np.float32(2.0 ** -126) * (1 + rng.random(int(sel.sum())))).astype(np.float32)
    h[sel] = small.view(U32)
    y[sel] = (-other).view(U32)
    # overflow: both near the largest finite value
    sel = kind == 6
    big = (np.float32(3.0e38) + rng.random(int(sel.sum())).astype(np.float32) * np.float32(4e37)).astype(np.float32)
    h[sel] = big.view(U32) | (rng.integers(0, 2, int(sel.sum())).astype(U32) << 31)
    y[sel] = big.view(U32) | (h[sel] & np.uint32(0x80000000))
    return h, y


class ResidualTB(UnitTB):
    def __init__(self, dut):
        super().__init__(dut, "residual", ["y", "h", "o"])
        self.L = int(self.cfg["lanes"])
        fields = self.cfg["fields"]
        self.y = StreamSource(dut, "y", self.clock, fields=fields["y"])
        self.h = StreamSource(dut, "h", self.clock, fields=fields["h"])
        self.o = StreamSink(dut, "o", self.clock, fields=fields["o"])

    def queue(self, beats: int):
        return self.queue_pairs(*residual_operands(self.rng, beats * self.L))

    def queue_pairs(self, h: np.ndarray, y: np.ndarray):
        """Queue the operand pairs (uint32 patterns, padded with +0 to whole beats) and expect
        ``golden.residual_add`` of each; returns (h, y, sums) by beat and the expected beats."""
        L = self.L
        beats = -(-len(h) // L)
        h, y = (np.concatenate([a, np.zeros(beats * L - len(a), U32)]) for a in (h, y))
        want = golden.residual_add(h.view(np.float32), y.view(np.float32)).view(U32)
        h, y, want = (a.reshape(beats, L) for a in (h, y, want))
        lasts = self.rng.integers(0, 2, beats)
        expected = []
        for k in range(beats):
            self.y.send_nowait({"data": pack_lanes(y[k]), "last": int(lasts[k])})
            self.h.send_nowait({"data": pack_lanes(h[k]), "last": int(1 - lasts[k])})
            expected.append({"data": pack_lanes(want[k]), "last": int(lasts[k])})
        return h, y, want, expected

    async def check(self, h, y, want, expected, what, bound):
        L = self.L

        def describe(k):
            return "; ".join(f"lane {j}: h {h[k, j]:#010x} + y {y[k, j]:#010x} = {want[k, j]:#010x}"
                             for j in range(L))

        def mismatch(k, got, beat):
            lanes = unpack_lanes(got["data"], L)
            bad = [j for j in range(L) if lanes[j] != want[k, j]]
            if not bad:
                return f"{what}: beat {k}: last {got['last']}, expected {beat['last']}"
            return (f"{what}: beat {k} lane {bad[0]}: got {lanes[bad[0]]:#010x}, expected "
                    f"{want[k, bad[0]]:#010x} (h {h[k, bad[0]]:#010x} + y {y[k, bad[0]]:#010x}, "
                    f"{float(h[k, bad[0]:bad[0] + 1].view(np.float32)[0])!r} + "
                    f"{float(y[k, bad[0]:bad[0] + 1].view(np.float32)[0])!r})")

        await expect_beats(self.o, expected, self.clock, bound, what, mismatch=mismatch, describe=describe)


@cocotb.test(timeout_time=100, timeout_unit="ms")
async def test_residual_values(dut):
    tb = ResidualTB(dut)
    await tb.start(1_000_000, "test_residual_values")
    beats = int(tb.cfg.get("beats", 400))
    for stall in tb.cfg["stalls"]:
        tb.stall((tb.y, tb.h, tb.o), stall)
        h, y, want, expected = tb.queue(beats)
        rate = min(1 - p for p in stall)
        await tb.check(h, y, want, expected, f"stalls {stall}", int(4 * beats / max(rate, 0.01) ** 3) + 200)
        await _no_more([tb.o], tb.clock, 20)


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def test_residual_limits(dut):
    tb = ResidualTB(dut)
    await tb.start(200_000, "test_residual_limits")
    h, y, sums = residual_limit_operands()
    got = golden.residual_add(h.view(np.float32), y.view(np.float32)).view(U32)
    assert np.array_equal(got, sums), (
        "golden.residual_add disagrees with the hand-derived sums at " +
        ", ".join(f"{a:#010x} + {b:#010x} = {g:#010x} (not {w:#010x})"
                  for a, b, g, w in zip(h, y, got, sums) if g != w))
    for stall in ([0.0, 0.0, 0.0], tb.cfg["stalls"][-1]):
        tb.stall((tb.y, tb.h, tb.o), stall)
        bh, by, want, expected = tb.queue_pairs(h, y)
        await tb.check(bh, by, want, expected, f"limits, stalls {stall}", 100 * len(expected) + 200)
        await _no_more([tb.o], tb.clock, 20)


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def test_residual_throughput(dut):
    tb = ResidualTB(dut)
    await tb.start(100_000, "test_residual_throughput")
    beats = 200
    h, y, want, expected = tb.queue(beats)
    tb.monitor.clear()
    await tb.check(h, y, want, expected, "no stalls", 4 * beats + 100)
    o_cycles, y_cycles, h_cycles = (tb.monitor.moves[n] for n in ("o", "y", "h"))
    assert y_cycles == h_cycles, "y and h must move together"
    # With add_lanes < lanes a beat takes `parts` cycles through the adders.
    parts = int(tb.cfg.get("parts", 1))
    assert not _gaps(o_cycles, parts), f"o beats not {parts} cycle(s) apart at {_gaps(o_cycles, parts)[:10]}"
    latency = o_cycles[0] - y_cycles[0]
    assert latency == int(tb.cfg["latency"]), f"latency {latency}, expected {tb.cfg['latency']}"
    dut._log.info("residual: %d beats in %d cycles, latency %d", beats, o_cycles[-1] - o_cycles[0] + 1, latency)
