"""cocotb tests of :class:`tellme.hw.act_buffer.ActBuffer` feeding a
:class:`tellme.hw.tlmm.TlmmEngine`, bit for bit against the golden model.

The design under test is the harness of ``tests/test_act_buffer.py``: the act buffer's ``act``
wired to the engine's ``act``, every other port of both outside (``wr_cmd``, ``q``, ``scale``,
``rd_cmd``, ``scales``, ``written`` of the buffer; ``cmd``, ``codes``, ``o`` of the engine) and
a copy of the internal ``act`` handshake (``mon_act_valid``, ``mon_act_ready``,
``mon_act_payload``) for the monitor.

A test runs a *program* of steps, as the sequencer would, each command issued once the previous
one has been taken:

* a write ``{inputs K, tokens n}``: its tokens' int8 x_q go to ``q`` (ceil(K/L) beats each, the
  lanes of a partial final beat past K filled with random values, which must be ignored) and
  their d_x (random binary32 patterns) to ``scale``; both are queued at the start of the test, so
  they wait for their command;
* a read of the last write's data over a list of tiles (row counts) of one projection: random
  ternary weights (N, B P G) whose inputs past K are random non-zero trits too (they meet the
  zero activations the buffer must supply there, so a wrong padding changes the result),
  encoded with ``formats.tlmm_encode`` and ordered with ``formats.tlmm_weight_stream``.

For each (tile, pass) of a read the testbench takes the ``scales`` beat, checks it (the pass's
d_x, 0 past n; token count; ``last``), joins its d_x with the tile's ``rows`` and a random
``w_mult`` into the engine's command and queues the tile's codes. Every result row is checked
as it arrives: ``acc`` of the pass's tokens equals ``golden.tlmm(codes, x_q, G)`` of the tile's
rows (and an integer matmul over the first K inputs), ``d_x`` is the ``scales`` beat's,
``w_mult`` the command's, ``last`` on the tile's final row. Every ``act`` beat is also compared
with the expected group sequence (group bP+p of each token, zero groups past ceil(K/G), ``last``
on each block's final group). At the end nothing is left over and ``written`` is the last
write's n.

Configuration (``run_cocotb(parameters=...)``):

``group``, ``lanes``, ``tlmm_lanes``, ``tokens``, ``max_tokens``, ``max_inputs``, ``max_tiles``
    The act buffer's parameters (G, L, P, T, C, K max).
``max_rows``
    The engine's row limit (tiles have at most this many rows).
``fields``
    :data:`~tellme.sim.tb.streams.Field` lists of ``wr_cmd``, ``rd_cmd``, ``scales``, ``cmd``,
    ``o`` and ``act``.
``stalls``
    List of stall settings ``{stream: probability}`` (streams ``wr_cmd``, ``q``, ``scale``,
    ``rd_cmd``, ``cmd``, ``codes``, ``scales``, ``o``; missing ones do not stall); ``test_program``
    runs the whole program once per setting.
``check_act``
    Compare the ``act`` beats (default true).
``results``
    Path of a JSON file where ``test_throughput`` records its measurements (optional).
``corrupt``
    Negative check of the harness: one activation sent on ``q`` is changed (the expected values
    stay those of the true one), so the scoreboard must fail.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from ...contract import formats
from ...contract.formats import code_bits, table_entries
from .. import golden
from .streams import (CycleTimeout, HandshakeMonitor, StreamSink, StreamSource, cycle_now,
                      random_pause, to_signed, with_timeout)
from .testbench import Testbench

STREAMS = ["wr_cmd", "q", "scale", "rd_cmd", "cmd", "codes", "scales", "o"]
DEFAULT_STALLS = [{}, {s: 0.3 for s in STREAMS}, {"q": 0.8, "scale": 0.5, "o": 0.3},
                  {"scales": 0.7, "cmd": 0.5, "codes": 0.4, "o": 0.6},
                  {s: 0.75 for s in STREAMS}]


# -- the program ----------------------------------------------------------------------------------

@dataclass
class Write:
    k: int
    x: np.ndarray              # (n, K) int8
    d: list                    # n raw binary32 patterns

    @property
    def n(self) -> int:
        return self.x.shape[0]


@dataclass
class Tile:
    trits: np.ndarray          # (rows, B P G) int8, non-zero past K
    stream: np.ndarray         # (B, rows, P) codes
    codes: np.ndarray          # (rows, B P) codes
    w_mult: int


@dataclass
class Read:
    write: Write
    blocks: int
    tokens: int
    tiles: list = field(default_factory=list)
    name: str = ""


def make_write(rng, k: int, n: int, acts: str = "random") -> Write:
    if acts == "random":
        x = rng.integers(-128, 128, size=(n, k))
    elif acts == "extreme":
        x = rng.choice(np.array([-128, 127]), size=(n, k))
    elif acts == "min":
        x = np.full((n, k), -128)
    elif acts == "max":
        x = np.full((n, k), 127)
    else:
        raise ValueError(acts)
    d = [int(v) for v in rng.integers(1, 1 << 32, size=n, dtype=np.uint64)]
    return Write(k, x.astype(np.int8), d)


def make_read(rng, cfg, write: Write, rows: list, *, weights: str = "random", tokens=None,
              name: str = "") -> Read:
    g, p_count = cfg["group"], cfg["tlmm_lanes"]
    kg = formats.tlmm_groups(write.k, g)
    blocks = -(-kg // p_count)
    width = blocks * p_count * g
    read = Read(write, blocks, write.n if tokens is None else tokens, name=name)
    for r in rows:
        if weights == "random":
            zero = rng.choice([0.0, 0.3, 0.6])
            trits = rng.choice(np.array([-1, 0, 1]), size=(r, width),
                               p=[(1 - zero) / 2, zero, (1 - zero) / 2])
        elif weights in ("match", "antimatch"):
            sign = np.where(write.x[0] < 0, -1, 1)
            trits = np.zeros((r, width), dtype=np.int64)
            trits[:, :write.k] = sign if weights == "match" else -sign
        else:
            raise ValueError(weights)
        # Inputs past K meet zero activations: give them non-zero weights, so that the
        # buffer's zero padding is what makes them vanish.
        trits[:, write.k:] = rng.choice(np.array([-1, 1]), size=(r, width - write.k))
        trits = trits.astype(np.int8)
        codes = formats.tlmm_encode(trits, g)
        stream = formats.tlmm_weight_stream(codes, p_count)
        assert stream.shape[0] == blocks
        read.tiles.append(Tile(trits, stream, codes, int(rng.integers(0, 1 << 32, dtype=np.uint64))))
    return read


def passes(cfg, read: Read):
    t_count = cfg["tokens"]
    return [list(range(pt, min(pt + t_count, read.tokens))) for pt in range(0, read.tokens, t_count)]


def estimate_cycles(cfg, read: Read) -> int:
    """A generous stall-free bound: per (tile, pass, block) the rows plus every table built
    serially, plus the pass's groups."""
    build = max(cfg["tlmm_lanes"], table_entries(cfg["group"]) + 1) + 4
    total = 64
    for tile in read.tiles:
        rows = tile.stream.shape[1]
        for toks in passes(cfg, read):
            total += read.blocks * (rows + len(toks) * (build + cfg["tlmm_lanes"]) + 16)
    return total


# -- the bench ------------------------------------------------------------------------------------

class ActBufferBench(Testbench):
    """Sources and sinks on every outside stream, a monitor of every stream (``act`` with its
    payload), and the sequencer model: the program coroutine, the join of ``scales`` into TLMM
    commands, and the row scoreboard."""

    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg
        self.g, self.l, self.p, self.t = cfg["group"], cfg["lanes"], cfg["tlmm_lanes"], cfg["tokens"]
        self.bits = code_bits(self.g)
        fields = cfg["fields"]
        self.src = {
            "wr_cmd": StreamSource(dut, "wr_cmd", self.clock, fields=fields["wr_cmd"]),
            "q": StreamSource(dut, "q", self.clock),
            "scale": StreamSource(dut, "scale", self.clock),
            "rd_cmd": StreamSource(dut, "rd_cmd", self.clock, fields=fields["rd_cmd"]),
            "cmd": StreamSource(dut, "cmd", self.clock, fields=fields["cmd"]),
            "codes": StreamSource(dut, "codes", self.clock),
        }
        self.sink = {
            "scales": StreamSink(dut, "scales", self.clock, fields=fields["scales"]),
            "o": StreamSink(dut, "o", self.clock, fields=fields["o"]),
        }
        assert self.src["q"].width == 8 * self.l + 1, self.src["q"].width
        assert self.src["codes"].width == self.p * self.bits
        self.monitor = HandshakeMonitor(dut, self.clock, {
            **{name: None for name in STREAMS},
            "act": (dut.mon_act_valid, dut.mon_act_ready, dut.mon_act_payload)})
        self.act_fields = fields["act"]
        self.corrupt = bool(cfg.get("corrupt"))
        self.check_act = bool(cfg.get("check_act", True))

    async def reset(self):
        await super().reset(2)

    def set_stalls(self, stalls: dict, rng):
        for name in STREAMS:
            port = self.src.get(name) or self.sink[name]
            p = float(stalls.get(name, 0.0))
            port.set_pause_generator(random_pause(p, int(rng.integers(0, 1 << 31))) if p else None)

    # - stimulus

    def queue_write_data(self, write: Write, rng):
        l = self.l
        beats = -(-write.k // l)
        for t in range(write.n):
            self.src["scale"].send_nowait(write.d[t])
            for b in range(beats):
                lanes = []
                for j in range(l):
                    i = b * l + j
                    v = int(write.x[t, i]) if i < write.k else int(rng.integers(-128, 128))
                    if self.corrupt and i < write.k and t == write.n - 1 and b == beats - 1 and j == 0:
                        self.log.info("corrupting x[%d, %d] = %d on q", t, i, v)
                        v = v + 1 if v < 127 else v - 1
                        self.corrupt = False
                    lanes.append(v & 0xFF)
                word = sum(v << (8 * j) for j, v in enumerate(lanes)) | (int(b == beats - 1) << (8 * l))
                self.src["q"].send_nowait(word)

    def expected_act(self, read: Read) -> list:
        g, p_count = self.g, self.p
        width = read.blocks * p_count * g
        xp = np.zeros((read.write.n, width), dtype=np.int64)
        xp[:, :read.write.k] = read.write.x
        xp &= 0xFF
        groups = (xp.reshape(read.write.n, -1, g) << (8 * np.arange(g, dtype=np.int64))).sum(axis=2)
        beats = []
        for _ in read.tiles:
            for toks in passes(self.cfg, read):
                for b in range(read.blocks):
                    for t in toks:
                        for p in range(p_count):
                            last = int(t == toks[-1] and p == p_count - 1)
                            beats.append(int(groups[t, b * p_count + p]) | (last << (8 * g)))
        return beats

    def tile_word(self, tile: Tile, b: int, r: int) -> int:
        word = 0
        for p, code in enumerate(tile.stream[b, r]):
            word |= int(code) << (self.bits * p)
        return word

    # - the program and the checks

    async def run(self, program: list, stalls: dict, rng, what: str, bound: int):
        """Run ``program`` (Write and Read steps) under ``stalls``; check everything within
        ``bound`` cycles."""
        self.set_stalls(stalls, rng)
        what = f"{what} stalls={stalls}"
        mon = self.monitor
        before = mon.mark()
        reads = [s for s in program if isinstance(s, Read)]
        for step in program:
            if isinstance(step, Write):
                self.queue_write_data(step, rng)
        # (read, tile index, pass tokens) in order, and the rows each one's command yields
        plan = [(read, j, toks) for read in reads for j in range(len(read.tiles))
                for toks in passes(self.cfg, read)]
        rows_expected = collections.deque()
        progress = {"passes": 0, "rows": 0}

        async def sequencer():
            for step in program:
                if isinstance(step, Write):
                    self.src["wr_cmd"].send_nowait({"inputs": step.k, "tokens": step.n})
                    await self.src["wr_cmd"].wait()
                else:
                    self.src["rd_cmd"].send_nowait({"blocks": step.blocks, "tokens": step.tokens,
                                                    "tiles": len(step.tiles)})
                    await self.src["rd_cmd"].wait()

        async def join():
            for read, j, toks in plan:
                beat = await self.sink["scales"].recv()
                pt = toks[0]
                want = [read.write.d[t] if t < read.tokens else 0 for t in range(pt, pt + self.t)]
                got = [(beat["d_x"] >> (32 * i)) & 0xFFFFFFFF for i in range(self.t)]
                where = f"{what}: {read.name} tile {j} pass of tokens {toks}"
                assert got == want, f"{where}: scales d_x {got} != {want}"
                assert beat["tokens"] == len(toks), f"{where}: scales tokens {beat['tokens']}"
                final = int(j == len(read.tiles) - 1 and toks[-1] == read.tokens - 1)
                assert beat["last"] == final, f"{where}: scales last {beat['last']} != {final}"
                tile = read.tiles[j]
                rows = tile.stream.shape[1]
                self.src["cmd"].send_nowait({"blocks": read.blocks, "rows": rows,
                                             "w_mult": tile.w_mult, "d_x": beat["d_x"],
                                             "tokens": beat["tokens"]})
                for b in range(read.blocks):
                    for r in range(rows):
                        self.src["codes"].send_nowait(self.tile_word(tile, b, r))
                x_pass = np.zeros((len(toks), tile.trits.shape[1]), dtype=np.int8)
                x_pass[:, :read.write.k] = read.write.x[toks]
                expected = golden.tlmm(tile.codes, x_pass, self.g)
                direct = read.write.x[toks].astype(np.int64) @ tile.trits[:, :read.write.k].T.astype(np.int64)
                assert np.array_equal(expected.astype(np.int64), direct), "golden.tlmm != x @ W^T"
                for r in range(rows):
                    rows_expected.append((where, r, rows, expected[:, r], beat["d_x"], tile.w_mult))
                progress["passes"] += 1

        async def scoreboard():
            total = sum(read.tiles[j].stream.shape[1] for read, j, _ in plan)
            for _ in range(total):
                beat = await self.sink["o"].recv()
                while not rows_expected:
                    await RisingEdge(self.clock)
                where, r, rows, want, d_x, w_mult = rows_expected.popleft()
                acc = [to_signed(beat["acc"] >> (32 * t), 32) for t in range(self.t)]
                n_tok = len(want)
                assert acc[:n_tok] == [int(v) for v in want], (
                    f"{where}, row {r}: acc {acc[:n_tok]} != expected {[int(v) for v in want]}")
                assert beat["d_x"] == d_x, f"{where}, row {r}: d_x not passed through"
                assert beat["w_mult"] == w_mult, f"{where}, row {r}: w_mult {beat['w_mult']:#x}"
                assert beat["last"] == int(r == rows - 1), f"{where}, row {r}: last {beat['last']}"
                progress["rows"] += 1

        tasks = [cocotb.start_soon(sequencer()), cocotb.start_soon(join())]
        try:
            await with_timeout(scoreboard(), self.clock, bound, what)
        except CycleTimeout:
            left = {n: s.count() for n, s in self.src.items()}
            raise CycleTimeout(f"{what}: stuck after {progress['passes']} of {len(plan)} passes' "
                               f"scales and {progress['rows']} rows within {bound} cycles; beats "
                               f"left on the inputs: {left}") from None
        finally:
            for task in tasks:
                task.cancel()
        await ClockCycles(self.clock, 10)
        for name, sink in self.sink.items():
            assert sink.count() == 0, f"{what}: {sink.count()} extra beat(s) on {name}"
            assert not sink.protocol_errors, sink.protocol_errors
        left = {n: s.count() for n, s in self.src.items() if not s.idle()}
        assert not left, f"{what}: inputs left over: {left}"
        if self.check_act:
            got = mon.values["act"][before["act"]:]
            want = [beat for read in reads for beat in self.expected_act(read)]
            for i, (a, e) in enumerate(zip(got, want)):
                if a != e:
                    raise AssertionError(f"{what}: act beat {i} is {a:#x}, expected {e:#x}")
            assert len(got) == len(want), f"{what}: {len(got)} act beats, expected {len(want)}"
        writes = [s for s in program if isinstance(s, Write)]
        if writes:
            written = int(self.dut.written.value)
            assert written == writes[-1].n, f"{what}: written = {written}, expected {writes[-1].n}"
        self.log.info("%s: %d write(s), %d read(s), %d passes, %d rows ok", what, len(writes),
                      len(reads), len(plan), progress["rows"])


def _rng(offset: int) -> np.random.Generator:
    return np.random.default_rng([cocotb.RANDOM_SEED, offset])


def program_steps(rng, cfg) -> list:
    """Writes and reads covering the cases of the module docstring."""
    g, l, t_count = cfg["group"], cfg["lanes"], cfg["tokens"]
    c, k_max, r_max = cfg["max_tokens"], cfg["max_inputs"], cfg["max_rows"]
    # K neither a multiple of G nor of L (where L allows) and below the maximum.
    k_odd = next((k for k in range(k_max - 1, 0, -1) if k % g and (k % l or l == 1)), k_max)
    # n not a multiple of T (a partial last pass) where the chunk allows.
    n_odd = next((n for n in range(c, 0, -1) if n % t_count), c)
    k_small = max(1, min(k_max, g * cfg["tlmm_lanes"] + 1))
    steps = []
    w1 = make_write(rng, k_odd, n_odd)
    steps += [w1,
              make_read(rng, cfg, w1, [int(rng.integers(1, r_max + 1)) for _ in range(3)], name="3 tiles"),
              make_read(rng, cfg, w1, [r_max], name="1 tile, max rows")]
    w2 = make_write(rng, k_small, 1)
    steps += [w2, make_read(rng, cfg, w2, [3, 2], name="decode")]
    w3 = make_write(rng, k_max, c, acts="extreme")
    steps += [w3, make_read(rng, cfg, w3, [2, r_max], weights="match", name="extremes, w = sign(x)"),
              make_read(rng, cfg, w3, [1], weights="antimatch", name="extremes, w = -sign(x)")]
    w4 = make_write(rng, k_max, c, acts="min")
    steps += [w4, make_read(rng, cfg, w4, [2], name="all -128")]
    w5 = make_write(rng, max(1, k_odd // 3), min(c, t_count), acts="max")
    steps += [w5, make_read(rng, cfg, w5, [4, 1], name="all 127")]
    w6 = make_write(rng, 1, min(c, t_count + 1))
    steps += [w6, make_read(rng, cfg, w6, [2], name="K = 1")]
    return steps


# -- tests ----------------------------------------------------------------------------------------

@cocotb.test(timeout_time=4000, timeout_unit="ms")
async def test_program(dut):
    """The program of :func:`program_steps` (consecutive writes of different K and n, each
    followed at once by reads of several tiles) under every stall setting."""
    bench = ActBufferBench(dut)
    cfg = bench.cfg
    rng = _rng(1)
    await bench.reset()
    for i, stalls in enumerate(cfg.get("stalls", DEFAULT_STALLS)):
        program = program_steps(rng, cfg)
        work = sum(estimate_cycles(cfg, s) for s in program if isinstance(s, Read))
        work += sum(s.n * (s.k // min(cfg["lanes"], cfg["group"]) + 8) for s in program if isinstance(s, Write))
        worst = max(stalls.values(), default=0.0)
        bound = int(4 * work / max((1 - worst) ** 2, 0.005)) + 2000
        await bench.run(program, stalls, rng, f"program {i}", bound)


@cocotb.test(timeout_time=2000, timeout_unit="ms")
async def test_throughput(dut):
    """Without stalls: a token's q beats are taken one per cycle (L <= G) or at G/L beats per
    cycle (L > G); with the tokens stored, the first group leaves ``read_latency`` cycles after
    the read command, and after every group of a command but the last the next one is offered
    in the very next cycle (one group per cycle whenever the TLMM takes them)."""
    bench = ActBufferBench(dut)
    cfg = bench.cfg
    rng = _rng(2)
    g, l = cfg["group"], cfg["lanes"]
    await bench.reset()
    bench.set_stalls({}, rng)
    valid_cycles = set()

    async def watch_valid():
        while True:
            await RisingEdge(bench.clock)
            if int(dut.mon_act_valid.value):
                valid_cycles.add(cycle_now() - 1)

    watcher = cocotb.start_soon(watch_valid())
    mon = bench.monitor
    write = make_write(rng, cfg["max_inputs"], cfg["max_tokens"])
    read = make_read(rng, cfg, write, [cfg["max_rows"], 1], name="throughput")
    before = mon.mark()
    bench.queue_write_data(write, rng)
    bench.src["wr_cmd"].send_nowait({"inputs": write.k, "tokens": write.n})

    async def written():
        while int(dut.written.value) != write.n:
            await RisingEdge(bench.clock)

    await with_timeout(written(), bench.clock, write.n * (write.k + 20) + 100, "writes")
    # The q beats of each token: consecutive cycles, or G/L of a beat per cycle.
    beats = -(-write.k // l)
    q_moves = mon.moves["q"][before["q"]:]
    assert len(q_moves) == beats * write.n
    spans = []
    for t in range(write.n):
        moves = q_moves[t * beats:(t + 1) * beats]
        spans.append(moves[-1] - moves[0] + 1)
    allowed = max(beats, math.ceil(beats * l / g)) + 1
    bench.log.info("q: %d beats per token (K=%d, L=%d, G=%d) taken over %s cycles (at most %d "
                   "allowed); token-to-token gaps %s", beats, write.k, l, g, spans, allowed,
                   [q_moves[(t + 1) * beats] - q_moves[(t + 1) * beats - 1] for t in range(write.n - 1)])
    if l <= g:
        assert all(s == beats for s in spans), f"q beats not one per cycle: spans {spans}"
    assert max(spans) <= allowed, f"q beats too slow: spans {spans}, allowed {allowed}"
    # Read with every token stored.
    await bench.run([read], {}, rng, "throughput read",
                    4 * estimate_cycles(cfg, read) + 1000)
    watcher.cancel()
    rd_move = mon.moves["rd_cmd"][before["rd_cmd"]]
    act_moves = mon.moves["act"][before["act"]:]
    first_valid = min(c for c in valid_cycles if c > rd_move)
    assert first_valid - rd_move == 2, f"first group offered {first_valid - rd_move} cycles after rd_cmd"
    gaps = [c for c in act_moves[:-1] if c + 1 not in valid_cycles]
    assert not gaps, f"act not offered in the cycle after the groups moved at cycles {gaps[:8]}"
    bench.log.info("act: %d groups, first offered %d cycles after rd_cmd, no bubbles",
                   len(act_moves), first_valid - rd_move)
    bench.record("throughput", {"q_beats_per_token": beats, "q_token_spans": spans,
                                "act_groups": len(act_moves), "read_latency": first_valid - rd_move,
                                "act_span": act_moves[-1] - act_moves[0] + 1})
