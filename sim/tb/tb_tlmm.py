"""cocotb tests of :class:`tellme.hw.tlmm.TlmmEngine` against the golden model, bit for bit.

Every problem is built with numpy and :mod:`tellme.sim.golden`: ternary weights (N, K) are
encoded with ``tlmm_encode``, ordered with ``tlmm_weight_stream`` into lane words (block, row),
activations (tokens, K) int8 are cut into the act stream (block, token, lane), and the expected
result of every row is ``golden.tlmm`` (checked against a plain integer matmul as well). The
scoreboard compares each output row as it arrives: ``acc`` of the supplied tokens, ``d_x`` (all
T entries) and ``w_mult`` echoed from the command, ``last`` exactly on row N-1.

Configuration (``run_cocotb(parameters=...)``, read with :func:`tellme.sim.tb.tb_config`):

``group``, ``lanes``, ``tokens``, ``max_rows``, ``max_blocks``
    The engine's parameters (G, P, T and the command limits).
``latency``
    ``TlmmEngine.latency``: edges from a lane word moving on ``codes`` to its result moving on
    ``out`` (checked in ``test_throughput``).
``fields``
    ``{"cmd": ..., "act": ..., "out": ...}``: :data:`~tellme.sim.tb.streams.Field` lists of the
    three struct payloads (``struct_fields`` of command_layout / act_layout / result_layout).
``stalls``
    List of ``[cmd, act, codes, out]`` stall probabilities; ``test_random`` and
    ``test_back_to_back`` run one pass per entry, ``test_corners`` uses the first and last.
``random_problems``
    Problems per stall setting in ``test_random`` (default 6).
``real_tiles``
    ``test_real_tiles``: list of ``{"name", "rows", "k", ["tiles"], ["weights"], ["acts"],
    ["tokens"]}``: one command of ``rows`` rows over the full K, or with ``tiles`` a list of row
    counts (the real N_t tiling: the commands run back to back, the activations are resent for
    every tile); ``weights`` and ``acts`` as :func:`make_problem` takes them (default random),
    ``tokens`` default T.
``real_stalls``
    Stall settings for ``test_real_tiles`` (default ``[[0, 0, 0, 0]]``; the first should be
    stall-free, it is where rows/cycle is measured).
``results``
    A JSON file: ``test_random`` records there every problem it drew (``problems``: name, with
    the shape, and a digest of its weights, activations and scales), so a replay with the same
    seed can be shown to draw the same ones.
``corrupt``
    Negative check of the harness: feed one lane word with a code whose sign is flipped (the
    expected values stay those of the true code), so the scoreboard must fail.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ...contract import formats
from ...contract.formats import code_bits, table_entries
from .. import golden
from .streams import (CycleTimeout, HandshakeMonitor, StreamSink, StreamSource, random_pause, start_watchdog,
                      to_signed, with_timeout)
from .testbench import Testbench

RESET_CYCLES = 2
DEFAULT_STALLS = [[0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3], [0.0, 0.5, 0.0, 0.7],
                  [0.6, 0.1, 0.6, 0.1], [0.9, 0.9, 0.9, 0.9]]
# Extra edges allowed on top of B*N + latency in the full-throughput check.
THROUGHPUT_SLACK = 2


# -- problems -------------------------------------------------------------------------------------

@dataclass
class Problem:
    """One TLMM command and everything needed to drive and check it."""
    name: str
    rows: int
    k: int
    tokens: int
    blocks: int
    trits: np.ndarray          # (rows, k) int8
    x: np.ndarray              # (tokens, k) int8
    stream: np.ndarray         # (blocks, rows, lanes) codes
    expected: np.ndarray       # (tokens, rows) int32
    d_x: list                  # T raw binary32 patterns
    w_mult: int


def make_problem(rng: np.random.Generator, cfg: dict, *, rows: int, k: int, tokens: int,
                 weights: str = "random", acts: str = "random", name: str = "") -> Problem:
    """Build a problem. ``weights``: random | zero | plus | minus | match (w = sign(x) of token
    0, the largest positive acc) | antimatch (w = -sign(x): the most negative);
    ``acts``: random | sparse | min (all -128) | max (all 127) | extreme (random -128/127)."""
    g, p_count, t_count = cfg["group"], cfg["lanes"], cfg["tokens"]
    assert 1 <= tokens <= t_count, tokens
    if acts == "random":
        x = rng.integers(-128, 128, size=(tokens, k))
    elif acts == "sparse":
        x = rng.integers(-128, 128, size=(tokens, k)) * (rng.random((tokens, k)) < 0.2)
    elif acts == "min":
        x = np.full((tokens, k), -128)
    elif acts == "max":
        x = np.full((tokens, k), 127)
    elif acts == "extreme":
        x = rng.choice(np.array([-128, 127]), size=(tokens, k))
    else:
        raise ValueError(acts)
    x = x.astype(np.int8)
    if weights == "random":
        zero = rng.choice([0.0, 0.3, 0.5, 0.9])
        trits = rng.choice(np.array([-1, 0, 1]), size=(rows, k),
                           p=[(1 - zero) / 2, zero, (1 - zero) / 2])
    elif weights == "zero":
        trits = np.zeros((rows, k))
    elif weights == "plus":
        trits = np.ones((rows, k))
    elif weights == "minus":
        trits = -np.ones((rows, k))
    elif weights in ("match", "antimatch"):
        sign = np.where(x[0] < 0, -1, 1)
        trits = np.tile(sign if weights == "match" else -sign, (rows, 1))
    else:
        raise ValueError(weights)
    trits = trits.astype(np.int8)
    codes = formats.tlmm_encode(trits, g)
    stream = formats.tlmm_weight_stream(codes, p_count)
    expected = golden.tlmm(codes, x, g)
    # The golden model against the definition: an exact integer matmul.
    direct = x.astype(np.int64) @ trits.astype(np.int64).T
    assert np.array_equal(expected.astype(np.int64), direct), "golden.tlmm disagrees with x @ W^T"
    blocks = stream.shape[0]
    assert blocks <= cfg["max_blocks"] and rows <= cfg["max_rows"], (blocks, rows)
    d_x = [int(v) for v in rng.integers(0, 1 << 32, size=t_count, dtype=np.uint64)]
    w_mult = int(rng.integers(0, 1 << 32, dtype=np.uint64))
    label = name or f"{weights}/{acts}"
    return Problem(f"{label} N={rows} K={k} B={blocks} tok={tokens}", rows, k, tokens, blocks,
                   trits, x, stream, expected, d_x, w_mult)


def problem_digest(problem: Problem) -> str:
    """A short digest of everything a problem feeds the engine (weights, activations, scales)."""
    digest = hashlib.sha256()
    for part in (problem.trits, problem.x, np.array(problem.d_x, np.uint64), np.array([problem.w_mult], np.uint64)):
        digest.update(np.ascontiguousarray(part).tobytes())
    return digest.hexdigest()[:16]


def random_problem(rng, cfg, *, max_rows=None) -> Problem:
    g, p_count = cfg["group"], cfg["lanes"]
    max_k = cfg["max_blocks"] * p_count * g
    rows = int(rng.integers(1, min(cfg["max_rows"], max_rows or 40) + 1))
    k = int(rng.integers(1, max_k + 1))
    tokens = int(rng.integers(1, cfg["tokens"] + 1))
    return make_problem(rng, cfg, rows=rows, k=k, tokens=tokens,
                        acts=str(rng.choice(["random", "random", "sparse", "extreme"])))


def estimate_cycles(cfg: dict, problem: Problem) -> int:
    """A generous stall-free cycle bound: lookups, plus every table built serially."""
    build = max(cfg["lanes"], table_entries(cfg["group"]) + 1) + 4
    return problem.blocks * (problem.rows + problem.tokens * build + cfg["lanes"] + 8) + 64


# -- the bench ------------------------------------------------------------------------------------

class TlmmBench(Testbench):
    """The engine with a source per input stream (``cmd``, ``act``, ``codes``), a sink on the
    results, a monitor of every stream and the rows expected, in order."""

    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg
        self.g, self.p, self.t = cfg["group"], cfg["lanes"], cfg["tokens"]
        self.bits = code_bits(self.g)
        self.latency = int(cfg["latency"])
        fields = cfg["fields"]
        self.cmd = StreamSource(dut, "cmd", self.clock, fields=fields["cmd"])
        self.act = StreamSource(dut, "act", self.clock, fields=fields["act"])
        self.codes = StreamSource(dut, "codes", self.clock)
        self.out = StreamSink(dut, "o", self.clock, fields=fields["out"])
        assert self.codes.width == self.p * self.bits, (self.codes.width, self.p, self.bits)
        self.monitor = HandshakeMonitor(dut, self.clock, ["cmd", "act", "codes", "o"])
        self.expected = collections.deque()
        self.corrupt = bool(cfg.get("corrupt"))

    async def reset(self):
        await super().reset(RESET_CYCLES)

    def set_stalls(self, stalls, rng: np.random.Generator):
        p_cmd, p_act, p_codes, p_out = stalls
        seeds = [int(s) for s in rng.integers(0, 1 << 31, size=4)]
        self.cmd.set_pause_generator(random_pause(p_cmd, seeds[0]) if p_cmd else None)
        self.act.set_pause_generator(random_pause(p_act, seeds[1]) if p_act else None)
        self.codes.set_pause_generator(random_pause(p_codes, seeds[2]) if p_codes else None)
        self.out.set_pause_generator(random_pause(p_out, seeds[3]) if p_out else None)

    # - driving

    def send_command(self, problem: Problem, *, blocks=None, rows=None):
        d_x = 0
        for t, v in enumerate(problem.d_x):
            d_x |= v << (32 * t)
        self.cmd.send_nowait({"blocks": problem.blocks if blocks is None else blocks,
                              "rows": problem.rows if rows is None else rows,
                              "w_mult": problem.w_mult, "d_x": d_x, "tokens": problem.tokens})

    def send_acts(self, problem: Problem):
        g, p_count = self.g, self.p
        width = problem.blocks * p_count * g
        xp = np.zeros((problem.tokens, width), dtype=np.int64)
        xp[:, :problem.k] = problem.x
        xp &= 0xFF
        shifts = 8 * np.arange(g, dtype=np.int64)
        groups = (xp.reshape(problem.tokens, problem.blocks * p_count, g) << shifts).sum(axis=2)
        for b in range(problem.blocks):
            for t in range(problem.tokens):
                for p in range(p_count):
                    last = int(t == problem.tokens - 1 and p == p_count - 1)
                    self.act.send_nowait({"x": int(groups[t, b * p_count + p]), "last": last})

    def corruption(self, problem: Problem):
        """(block, row, lane) of a code whose sign flip changes token 0's result: its table
        entry for token 0 is non-zero."""
        tables = golden.tlmm_tables(problem.x, self.g)             # (tokens, Kg, E)
        mag_mask = (1 << (self.bits - 1)) - 1
        for b in range(problem.blocks):
            for r in range(problem.rows):
                for p in range(self.p):
                    grp = b * self.p + p
                    if grp >= tables.shape[1]:
                        continue
                    mag = int(problem.stream[b, r, p]) & mag_mask
                    if mag and tables[0, grp, mag] != 0:
                        return b, r, p
        return None

    def send_codes(self, problem: Problem):
        stream = problem.stream.astype(object)
        if self.corrupt:
            where = self.corruption(problem)
            if where is not None:
                b, r, p = where
                stream[b, r, p] = int(stream[b, r, p]) ^ (1 << (self.bits - 1))
                self.log.info("corrupting the code of block %d row %d lane %d (%s)", b, r, p,
                              problem.name)
                self.corrupt = False
        shifts = [self.bits * p for p in range(self.p)]
        for b in range(problem.blocks):
            for r in range(problem.rows):
                word = 0
                for p, code in enumerate(stream[b, r]):
                    word |= int(code) << shifts[p]
                self.codes.send_nowait(word)

    def queue(self, problem: Problem, *, codes: bool = True):
        """Queue the command, its activations and (unless ``codes`` is false: see
        :meth:`queue_codes`) its codes, and expect its rows."""
        self.send_command(problem)
        self.send_acts(problem)
        if codes:
            self.queue_codes(problem)

    def queue_codes(self, problem: Problem):
        self.send_codes(problem)
        for r in range(problem.rows):
            self.expected.append((problem, r))

    def fill_cycles(self, tokens: int) -> int:
        """Generous cycles to build both table banks (two blocks) of ``tokens`` tokens."""
        build = max(self.p, table_entries(self.g) + 1) + 4
        return 2 * (tokens * build + self.p + 8) + 32

    # - checking

    def check_row(self, problem: Problem, r: int, beat: dict, what: str):
        acc_raw = beat["acc"]
        acc = [to_signed(acc_raw >> (32 * t), 32) for t in range(self.t)]
        want = [int(v) for v in problem.expected[:, r]]
        where = f"{what}: {problem.name}, row {r}"
        if acc[:problem.tokens] != want:
            bad = [t for t in range(problem.tokens) if acc[t] != want[t]]
            raise AssertionError(f"{where}: acc {acc[:problem.tokens]} != expected {want} "
                                 f"(wrong tokens {bad})")
        d_x = [(beat["d_x"] >> (32 * t)) & 0xFFFFFFFF for t in range(self.t)]
        assert d_x == problem.d_x, f"{where}: d_x {d_x} != command's {problem.d_x}"
        assert beat["w_mult"] == problem.w_mult, \
            f"{where}: w_mult {beat['w_mult']:#x} != command's {problem.w_mult:#x}"
        assert beat["tokens"] == problem.tokens, f"{where}: tokens {beat['tokens']} != command's {problem.tokens}"
        want_last = int(r == problem.rows - 1)
        assert beat["last"] == want_last, f"{where}: last = {beat['last']}, expected {want_last}"

    async def drain(self, what: str, bound: int):
        """Check every expected row (in order) within ``bound`` cycles, then that nothing more
        comes out and every input beat was consumed."""
        total = len(self.expected)
        done = 0

        async def scoreboard():
            nonlocal done
            while self.expected:
                problem, r = self.expected[0]
                beat = await self.out.recv()
                self.check_row(problem, r, beat, what)
                self.expected.popleft()
                done += 1

        try:
            await with_timeout(scoreboard(), self.clock, bound, what)
        except CycleTimeout:
            problem, r = self.expected[0]
            raise CycleTimeout(
                f"{what}: only {done} of {total} rows arrived within {bound} cycles; waiting for "
                f"{problem.name} row {r}; inputs left: cmd {self.cmd.count()}, act "
                f"{self.act.count()}, codes {self.codes.count()}") from None
        await ClockCycles(self.clock, 8)
        assert self.out.count() == 0, f"{what}: {self.out.count()} extra output row(s)"
        assert self.cmd.idle() and self.act.idle() and self.codes.idle(), (
            f"{what}: inputs left over: cmd {self.cmd.count()}, act {self.act.count()}, "
            f"codes {self.codes.count()}")
        assert not self.out.protocol_errors, self.out.protocol_errors

    async def run(self, problems, stalls, rng, what: str, *, together: bool = True):
        """Run ``problems`` under ``stalls``: queued all at once (``together``) or one after the
        other, each checked before the next is sent. Returns the edges the run took."""
        self.set_stalls(stalls, rng)
        worst = max(stalls)
        slow = 1.0 / max((1.0 - worst) ** 2, 0.005)
        start = self.monitor.cycle
        batches = [problems] if together else [[p] for p in problems]
        for batch in batches:
            for problem in batch:
                self.queue(problem)
            bound = int(4 * slow * sum(estimate_cycles(self.cfg, p) for p in batch)) + 200
            await self.drain(f"{what} stalls={stalls}", bound)
        cycles = self.monitor.cycle - start
        words = sum(p.blocks * p.rows for p in problems)
        self.log.info("%s stalls=%s: %d command(s), %d lane words, %d rows: %d cycles "
                      "(%.3f lane words/cycle)", what, stalls, len(problems), words,
                      sum(p.rows for p in problems), cycles, words / max(cycles, 1))
        return cycles


def _rng(offset: int) -> np.random.Generator:
    return np.random.default_rng([cocotb.RANDOM_SEED, offset])


# -- tests ----------------------------------------------------------------------------------------

@cocotb.test(timeout_time=2000, timeout_unit="ms")
async def test_random(dut):
    """Random shapes, weights and activations, one command at a time, under every stall setting
    of the configuration."""
    bench = TlmmBench(dut)
    cfg = bench.cfg
    rng = _rng(1)
    stalls = cfg.get("stalls", DEFAULT_STALLS)
    count = int(cfg.get("random_problems", 6))
    batches = [[random_problem(rng, cfg) for _ in range(count)] for _ in stalls]
    if bench.corrupt:
        # A dense problem first, so that a code whose flip changes the result surely exists.
        max_k = cfg["max_blocks"] * cfg["lanes"] * cfg["group"]
        batches[0].insert(0, make_problem(rng, cfg, rows=4, k=max_k, tokens=cfg["tokens"],
                                          name="dense (corrupted)"))
    bench.record("problems", [{"name": p.name, "digest": problem_digest(p)} for batch in batches for p in batch])
    budget = sum(int(4 * sum(estimate_cycles(cfg, p) for p in batch) / max((1 - max(s)) ** 2, 0.005))
                 + 400 * len(batch) for batch, s in zip(batches, stalls))
    start_watchdog(bench.clock, budget, "test_random")
    await bench.reset()
    for s, batch in zip(stalls, batches):
        await bench.run(batch, s, rng, "random", together=False)
    assert not bench.corrupt, "corrupt was asked for but no code could be corrupted"


def corner_problems(rng, cfg) -> list[Problem]:
    g, p_count, t_count = cfg["group"], cfg["lanes"], cfg["tokens"]
    max_k = cfg["max_blocks"] * p_count * g
    rows = min(cfg["max_rows"], 12)
    def mk(**kw):
        return make_problem(rng, cfg, **kw)
    problems = [
        mk(rows=rows, k=max_k, tokens=t_count, weights="zero", name="all-zero weights"),
        mk(rows=rows, k=max_k, tokens=t_count, weights="plus", name="all +1 weights"),
        mk(rows=rows, k=max_k, tokens=t_count, weights="minus", name="all -1 weights"),
        # Largest |acc| the full K allows, both signs, from the int8 extremes.
        mk(rows=rows, k=max_k, tokens=t_count, weights="minus", acts="min", name="x=-128, w=-1 (max +acc)"),
        mk(rows=rows, k=max_k, tokens=t_count, weights="plus", acts="min", name="x=-128, w=+1 (max -acc)"),
        mk(rows=rows, k=max_k, tokens=t_count, weights="plus", acts="max", name="x=127, w=+1"),
        mk(rows=rows, k=max_k, tokens=t_count, weights="minus", acts="max", name="x=127, w=-1"),
        mk(rows=rows, k=max_k, tokens=t_count, weights="match", acts="extreme",
           name="x=+-extremes, w=sign(x)"),
        mk(rows=rows, k=max_k, tokens=t_count, weights="antimatch", acts="extreme",
           name="x=+-extremes, w=-sign(x)"),
        # K not a multiple of G (padding inside the last group), and past the last group.
        mk(rows=rows, k=max(1, max_k - 1), tokens=t_count, name="K = max-1"),
        mk(rows=rows, k=g + 1, tokens=t_count, name="K = G+1"),
        mk(rows=rows, k=1, tokens=t_count, name="K = 1"),
        mk(rows=rows, k=(p_count + 1) * g - 1 if cfg["max_blocks"] > 1 else g - 1 or 1,
           tokens=t_count, name="K just over one block"),
        # Fewer tokens than T (1 = decode).
        mk(rows=rows, k=max_k, tokens=1, name="decode, 1 token"),
        # rows == 1 (accumulator read transparent to its own write), blocks == 1, both.
        mk(rows=1, k=max_k, tokens=t_count, name="rows = 1"),
        mk(rows=1, k=max_k, tokens=1, acts="extreme", weights="match", name="rows = 1, extremes"),
        mk(rows=rows, k=p_count * g, tokens=t_count, name="blocks = 1 (full block)"),
        mk(rows=1, k=min(3, p_count * g), tokens=1, name="rows = 1, blocks = 1"),
        mk(rows=2, k=max_k, tokens=t_count, name="rows = 2"),
        # The command limits.
        mk(rows=cfg["max_rows"], k=max_k, tokens=t_count, name="rows = max_rows"),
    ]
    if t_count > 2:
        problems.append(mk(rows=rows, k=max_k, tokens=t_count - 1, name="T-1 tokens"))
    return problems


@cocotb.test(timeout_time=2000, timeout_unit="ms")
async def test_corners(dut):
    """Extreme weights and activations, K not a multiple of G, few tokens, rows/blocks == 1,
    the command limits: one at a time without stalls, then all queued under the heaviest
    stall setting."""
    bench = TlmmBench(dut)
    cfg = bench.cfg
    rng = _rng(2)
    stalls = cfg.get("stalls", DEFAULT_STALLS)
    problems = corner_problems(rng, cfg)
    single = sum(estimate_cycles(cfg, p) for p in problems)
    slow = 4 / max((1 - max(stalls[-1])) ** 2, 0.005)
    start_watchdog(bench.clock, int(single * (8 + slow)) + 4000, "test_corners")
    await bench.reset()
    await bench.run(problems, [0.0] * 4, rng, "corners", together=False)
    await bench.run(problems, stalls[-1], rng, "corners queued", together=True)


@cocotb.test(timeout_time=2000, timeout_unit="ms")
async def test_back_to_back(dut):
    """Several commands of different shapes queued back to back (the next command's act and
    codes follow immediately), including commands with no rows or no blocks, which the engine
    drops whole, under every stall setting."""
    bench = TlmmBench(dut)
    cfg = bench.cfg
    rng = _rng(3)
    stalls = cfg.get("stalls", DEFAULT_STALLS)
    g, p_count, t_count = cfg["group"], cfg["lanes"], cfg["tokens"]
    max_k = cfg["max_blocks"] * p_count * g
    batches = []
    for _ in stalls:
        batch = [make_problem(rng, cfg, rows=1, k=1, tokens=1, name="tiny"),
                 make_problem(rng, cfg, rows=3, k=max_k, tokens=t_count, name="wide")]
        batch += [random_problem(rng, cfg, max_rows=24) for _ in range(5)]
        batch.append(make_problem(rng, cfg, rows=1, k=max_k, tokens=t_count, name="rows=1"))
        batch.append(make_problem(rng, cfg, rows=5, k=p_count * g, tokens=1, name="one block"))
        batches.append(batch)
    budget = sum(int(4 * sum(estimate_cycles(cfg, p) for p in batch) / max((1 - max(s)) ** 2, 0.005))
                 + 400 for batch, s in zip(batches, stalls))
    start_watchdog(bench.clock, budget + 1000, "test_back_to_back")
    await bench.reset()
    for s, batch in zip(stalls, batches):
        await bench.run(batch, s, rng, "back-to-back")
    # Commands with zero rows or zero blocks produce nothing and consume nothing, even between
    # real ones.
    zero = make_problem(rng, cfg, rows=1, k=1, tokens=1, name="zero")
    real = [make_problem(rng, cfg, rows=4, k=max_k, tokens=t_count, name="after zero"),
            make_problem(rng, cfg, rows=2, k=p_count * g + 1 if cfg["max_blocks"] > 1 else 1,
                         tokens=1, name="after zero 2")]
    bench.set_stalls(stalls[-1], rng)
    bench.send_command(zero, rows=0)
    bench.queue(real[0])
    bench.send_command(zero, blocks=0)
    bench.send_command(zero, rows=0, blocks=0)
    bench.queue(real[1])
    bound = int(4 * sum(estimate_cycles(cfg, p) for p in real) / max((1 - max(stalls[-1])) ** 2, 0.005)) + 200
    await bench.drain(f"zero-size commands stalls={stalls[-1]}", bound)
    assert bench.cmd.sent == bench.monitor.mark()["cmd"]


@cocotb.test(timeout_time=2000, timeout_unit="ms")
async def test_late_codes(dut):
    """Codes arriving after the tables are ready (weights slower than precompute). Then the
    lane words of consecutive blocks can follow each other on consecutive cycles even with
    rows == 1, so a row's partial sum is read in the very cycle it is written (the
    accumulator's read-write transparency) and a block's bank is released right as the next
    one starts. Phase 1: each command's codes are sent only after both table banks have had
    time to fill. Phase 2: commands queued together, codes in bursts separated by stalls
    longer than a table build."""
    bench = TlmmBench(dut)
    cfg = bench.cfg
    rng = _rng(6)
    g, p_count, t_count = cfg["group"], cfg["lanes"], cfg["tokens"]
    max_k = cfg["max_blocks"] * p_count * g
    def mk(rows, k, tokens, name):
        return make_problem(rng, cfg, rows=rows, k=k, tokens=tokens, name=name)
    two_blocks = min(max_k, p_count * g + 1)
    problems = [mk(1, two_blocks, t_count, "rows=1, 2 blocks"),
                mk(1, max_k, t_count, "rows=1, all blocks"),
                mk(1, max_k, 1, "rows=1, 1 token"),
                mk(2, max_k, t_count, "rows=2"),
                mk(3, two_blocks, 1, "rows=3, 2 blocks"),
                mk(1, 1, t_count, "rows=1, K=1")]
    burst = [mk(int(rng.integers(1, 4)), int(rng.integers(1, max_k + 1)),
                int(rng.integers(1, t_count + 1)), "burst") for _ in range(6)]
    fill = bench.fill_cycles(t_count)
    work = sum(estimate_cycles(cfg, p) for p in problems + burst)
    burst_words = sum(p.blocks * p.rows for p in burst)
    start_watchdog(bench.clock, 8 * work + (fill + 50) * (len(problems) + burst_words) + 2000,
                   "test_late_codes")
    await bench.reset()
    mon = bench.monitor
    for problem in problems:
        before = mon.mark()
        bench.queue(problem, codes=False)
        await ClockCycles(bench.clock, fill)
        bench.queue_codes(problem)
        await bench.drain("late codes", 4 * estimate_cycles(cfg, problem) + 200)
        takes = mon.moves["codes"][before["codes"]:]
        if problem.blocks >= 2:
            # Both banks were full: the first two blocks' lane words run without a gap.
            gap = takes[problem.rows] - takes[problem.rows - 1]
            assert gap == 1, f"{problem.name}: {gap} edges between block 0 and block 1"
    bench.log.info("late codes: %d commands ok", len(problems))
    bench.codes.set_pause_generator(itertools.cycle([False] * 4 + [True] * fill))
    for problem in burst:
        bench.queue(problem)
    words = sum(p.blocks * p.rows for p in burst)
    await bench.drain("burst codes", 2 * sum(estimate_cycles(cfg, p) for p in burst)
                      + (words // 4 + 2) * (fill + 8) + 200)
    bench.log.info("burst codes: %d commands, %d lane words ok", len(burst), words)


@cocotb.test(timeout_time=2000, timeout_unit="ms")
async def test_throughput(dut):
    """No stalls and rows enough to hide the table precompute: one lane word is taken every
    cycle from the first to the last (B*N consecutive edges on ``codes``), the last block's N
    rows leave on N consecutive edges, each ``latency`` edges after its lane word, and the whole
    command takes at most B*N + latency + a small constant from its first lane word. Cycle counts
    for back-to-back commands and for the table-bound case are logged."""
    bench = TlmmBench(dut)
    cfg = bench.cfg
    rng = _rng(4)
    g, p_count, t_count = cfg["group"], cfg["lanes"], cfg["tokens"]
    entries = table_entries(g)
    blocks = min(cfg["max_blocks"], 4)
    k = blocks * p_count * g
    # Per block the tables take about tokens * (max(P, E) + 1) cycles; ask for more rows.
    def hidden_rows(tok):
        return tok * (max(p_count, entries + 1) + 2) + p_count + 16
    cases = []
    for tok in sorted({1, t_count}):
        if hidden_rows(tok) <= cfg["max_rows"]:
            cases.append(make_problem(rng, cfg, rows=hidden_rows(tok), k=k, tokens=tok,
                                      name="full rate"))
    assert cases, f"max_rows {cfg['max_rows']} too small to hide the tables ({hidden_rows(1)} rows needed)"
    small = make_problem(rng, cfg, rows=min(8, cfg["max_rows"]), k=k, tokens=t_count, name="table-bound")
    pair = [make_problem(rng, cfg, rows=cases[0].rows, k=k, tokens=cases[0].tokens, name="pair a"),
            make_problem(rng, cfg, rows=cases[0].rows, k=k, tokens=cases[0].tokens, name="pair b")]
    work = sum(estimate_cycles(cfg, p) for p in cases + [small] + pair)
    start_watchdog(bench.clock, 8 * work + 2000, "test_throughput")
    await bench.reset()
    zero = [0.0] * 4
    mon = bench.monitor
    for problem in cases:
        before = mon.mark()
        await bench.run([problem], zero, rng, "throughput")
        takes = mon.moves["codes"][before["codes"]:]
        outs = mon.moves["o"][before["o"]:]
        words = problem.blocks * problem.rows
        assert len(takes) == words and len(outs) == problem.rows
        code_span = takes[-1] - takes[0] + 1
        out_span = outs[-1] - outs[0] + 1
        total = outs[-1] - takes[0] + 1
        first_act = mon.moves["act"][before["act"]]
        bench.log.info(
            "throughput %s: B=%d N=%d: lane words on %d edges (B*N = %d), last block's rows on "
            "%d edges, first lane word -> last row %d edges (B*N + %d), first act -> first lane "
            "word %d edges (table fill), first act -> last row %d edges",
            problem.name, problem.blocks, problem.rows, code_span,
            words, out_span, total, total - words, takes[0] - first_act, outs[-1] - first_act)
        assert code_span == words, (
            f"{words} lane words were taken over {code_span} edges (expected one per cycle: "
            f"tables hidden behind {problem.rows} rows)")
        assert out_span == problem.rows, f"{problem.rows} rows left over {out_span} edges"
        # Latency: the first row of the last block leaves `latency` edges after its lane word.
        last_block_first = takes[(problem.blocks - 1) * problem.rows]
        measured = outs[0] - last_block_first
        assert measured == bench.latency, \
            f"lane word -> result latency {measured} edges, the engine documents {bench.latency}"
        assert total <= words + bench.latency + THROUGHPUT_SLACK, (
            f"command took {total} edges from its first lane word, expected at most "
            f"B*N + latency + {THROUGHPUT_SLACK} = {words + bench.latency + THROUGHPUT_SLACK}")
    # Two commands back to back: the second follows with at most a bubble or two.
    before = mon.mark()
    await bench.run(pair, zero, rng, "throughput pair")
    takes = mon.moves["codes"][before["codes"]:]
    words = sum(p.blocks * p.rows for p in pair)
    span = takes[-1] - takes[0] + 1
    bench.log.info("throughput pair: %d lane words of two commands on %d edges (%d bubble(s) "
                   "between commands)", words, span, span - words)
    assert span <= words + 2 * len(pair), f"{words} lane words of back-to-back commands took {span} edges"
    # Table-bound: few rows per block, so precompute sets the pace (logged, not asserted).
    before = mon.mark()
    cycles = await bench.run([small], zero, rng, "table-bound")
    takes = mon.moves["codes"][before["codes"]:]
    span = takes[-1] - takes[0] + 1
    bench.log.info("table-bound %s: %d lane words over %d edges, %d cycles in all: about %.1f "
                   "edges per block of table precompute for %d token(s) of E=%d entries, P=%d",
                   small.name, len(takes), span, cycles,
                   (span - small.rows) / max(small.blocks - 1, 1), small.tokens, entries, p_count)


@cocotb.test(timeout_time=5000, timeout_unit="ms")
async def test_real_tiles(dut):
    """Output tiles of the real bitnet-b1.58-large projection shapes (full K, so every block
    runs), with random ternary weights and int8 activations; the stall-free pass measures
    lane words (and rows) per cycle."""
    bench = TlmmBench(dut)
    cfg = bench.cfg
    rng = _rng(5)
    tiles = cfg.get("real_tiles", [])
    stalls = cfg.get("real_stalls", [[0.0] * 4])
    t_count = cfg["tokens"]
    plans = []
    for s in stalls:
        for tile in tiles:
            rows_list = tile.get("tiles", [tile["rows"]])
            plans.append((s, tile["name"], [
                make_problem(rng, cfg, rows=r, k=tile["k"], tokens=tile.get("tokens", t_count),
                             weights=tile.get("weights", "random"), acts=tile.get("acts", "random"),
                             name=f"{tile['name']} tile {i} ({r}x{tile['k']})")
                for i, r in enumerate(rows_list)]))
    budget = sum(int(4 * sum(estimate_cycles(cfg, p) for p in probs) / max((1 - max(s)) ** 2, 0.005))
                 for s, _, probs in plans)
    start_watchdog(bench.clock, budget + 4000, "test_real_tiles")
    await bench.reset()
    mon = bench.monitor
    for s, name, probs in plans:
        before = mon.mark()
        cycles = await bench.run(probs, s, rng, f"real {name}")
        takes = mon.moves["codes"][before["codes"]:]
        outs = mon.moves["o"][before["o"]:]
        words = sum(p.blocks * p.rows for p in probs)
        rows = sum(p.rows for p in probs)
        span = takes[-1] - takes[0] + 1
        bench.log.info(
            "real %s stalls=%s: %d command(s), B=%d, %d rows, %d lane words; codes span %d edges "
            "(%.3f lane words/cycle), first lane word -> last row %d edges, whole run %d edges: "
            "%.4f rows/cycle (%.3f lane words/cycle) incl. the first table fill", name, s,
            len(probs), probs[0].blocks, rows, words, span, words / span, outs[-1] - takes[0] + 1,
            cycles, rows / cycles, words / cycles)
