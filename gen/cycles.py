"""Cycle model of the generated accelerator: the cycles of a prefill call or a decode step, per
sequencer step and per unit, without simulating the RTL (docs/architecture.md section 10).

The model walks the generator's own program (:func:`tellme.gen.program.build_program`, expanded
into the sequencer's ROM words as :func:`tellme.gen.top.encode_program` does: the LM head is a
NORM_QUANT word and an LM_HEAD word) on a time line, with the weight streamer beside it:

- **Sequencer**: one word at a time, each :attr:`Calibration.dispatch` cycles of ROM read, load,
  dispatch and issue, a MATMUL also its w_mult read (a DDR round trip). A NORM_QUANT into the
  act buffer ends once the buffer has its command; the MATMUL after it waits for each token pass
  until the quantiser has stored its tokens.
- **Weights** (:class:`WeightTimeline`): the MATMUL tiles (``gen.tiling``) load in program order
  from the call's start into two banks, each once the tile two before it is used, at the DDR rate;
  the TLMM starts a tile once it is loaded (the wait is the ``STALL`` register's count). Steps
  whose readers share the HP ports (EMBED, ATTENTION) lose a share of the load time they overlap.
- **TLMM** (per tile and token pass of n_p tokens, B blocks of R rows): block b's tables build
  while block b-1 is looked up, ``ceil(n_p / K) max(K P, E)`` cycles (:class:`TlmmTables`), so a
  block takes ``max(R, build)``. The results leave during the last block, one row per lookup,
  and the units behind take them at their own rate: Dequant ``ceil(n_p / dequant_lanes)`` cycles per row,
  and per transposed column block of ``block`` rows the writer, which takes one column block at a
  time; with a residual or gate operand the operand's read, the adder's or gating unit's pipeline
  and the writes of every column block follow each other (:meth:`CycleModel._column_cost`).
- **ATTENTION**: a linear model in the work of :class:`~tellme.hw.attn_tiled.TiledAttention` and
  its load path (:meth:`CycleModel._attention`).
- **NORM_QUANT**, **EMBED**, **LM_HEAD**: DDR round trips and beats at one AXI beat per cycle.

Every constant that is not a documented latency of a unit is in :class:`Calibration`, fitted to
the per-step cycles of Verilator runs of the top level (``tellme.sim.cycle_check``,
``bench/cycle_model.py``) and held against them by ``tests/test_cycle_model.py``;
:meth:`CycleModel.assumptions` puts them in every output.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError, HardwareConfig, ModelConfig
from ..contract.formats import ATTN_SCORE_LANES, table_entries
from ..contract.layouts import BufferGeometry, ImageFormat, LmHeadStream
from .program import Attention, LmHead, MatMul, Program, build_program
from .tiling import MatmulRates, kv_history_ports

__all__ = ["DdrTiming", "Calibration", "CycleModel", "StepCycles", "CallCycles"]

@dataclass(frozen=True)
class DdrTiming:
    """The DDR as the model sees it: ``bytes_per_cycle`` shared by every port (the sustained
    rate: peak x efficiency at the fabric clock), ``latency`` from a read address to its first
    data beat, ``beat_bytes`` per port per cycle at most."""
    bytes_per_cycle: float = 64.0
    latency: int = 40
    beat_bytes: int = 16

    @classmethod
    def of_board(cls, board, clock_mhz: float, *, efficiency: float = 0.85, latency: int = 40) -> "DdrTiming":
        """The board's PS DDR at ``efficiency`` of its peak, in bytes per fabric cycle."""
        if not 0 < efficiency <= 1:
            raise ValueError(f"efficiency must be in (0, 1], got {efficiency!r}")
        return cls(board.ddr_peak_bytes_per_s * efficiency / (clock_mhz * 1e6), latency)

    def describe(self) -> str:
        return (f"DDR {self.bytes_per_cycle:.2f} B/cycle shared by all ports (at most {self.beat_bytes} B/cycle "
                f"per port), {self.latency} cycles from read address to first data")


@dataclass(frozen=True)
class Calibration:
    """The model's constants that are not a documented unit latency, fitted to the per-step
    cycles of RTL runs (``tellme.sim.cycle_check.fit_calibration``; ``python -m
    bench.cycle_model --fit`` refits them and reports each configuration's error when it is left
    out of the fit). Cycles unless named per cent; a fitted 0 means the structure already
    accounts for that cost."""
    dispatch: int = 4              # any step: ROM read, word load, dispatch, issue (exact)
    nq_word: int = 6               # a NORM_QUANT word into the act buffer, to the buffer's command (exact)
    head_nq_word: int = 5          # the NORM_QUANT word routed to the LM head (exact)
    w_mult: int = 145              # MATMUL: the w_mult read beyond one DDR latency
    nq_first: int = 59            # NORM_QUANT: first token, beyond one DDR latency and 3 beats per lane group
    nq_period: int = 112           # NORM_QUANT: per token, beyond 2 cycles per beat
    tlmm_first: int = 0            # TLMM: a step's first table build beyond its build time
    matmul_tail: int = 0           # MATMUL: drain (with tail_ddr and two column blocks)
    tail_ddr: int = 11              # ... per cent of the DDR latency in the drain
    tail_unit: int = 35             # ... with a second operand: per cent of its unit's latency
    column: int = 18                # a column block without second operand, beyond its write beats
    column_second: int = 0         # a column block with a second operand (residual, gate), fixed
    column_latency: int = 22       # ... per cent of the adder's or gating unit's latency
    column_token: int = 1          # ... per token beyond its row's read and write beats
    column_ddr: int = 29           # ... per cent of the DDR latency
    embed_fixed: int = 39          # EMBED beyond two DDR latencies and its rows' beats
    embed_row: int = 1             # ... per row
    attn_fixed: float = 323.695    # ATTENTION: a linear model of its work (CycleModel._attention), least squares
    attn_load: float = 0.787       # ... per load cycle (tokens x (DDR latency + beats))
    attn_stream: float = 1.061     # ... per cycle of max(the pairs' score cycles, the K/V history at its read rate)
    attn_key_tile: float = -30.934  # ... per key tile visited
    attn_query_tile: float = 62.284  # ... per query tile (with attn_fixed: the first ~360, later ones less)
    attn_output: float = 20.499    # ... per output cycle (hd / 16 per query)
    attn_history_tile: float = 56.686  # ... per history tile read
    load_share: int = 45           # per cent of the weight loads overlapping an ATTENTION step it loses
    embed_load_share: int = 105    # the same for EMBED (its row reads queue behind the tiles' bursts)
    lm_fixed: int = 105              # LM_HEAD beyond two DDR latencies, a NORM_QUANT and its rows' beats

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class StepCycles:
    """One ROM word of a call: its index, op, layer, a short description, its cycles and the
    parts they were made of (``stall``: the TLMM waiting for weights)."""
    index: int
    op: str
    layer: int | None
    what: str
    cycles: int
    parts: dict = field(default_factory=dict)

    @property
    def stall(self) -> int:
        return self.parts.get("stall", 0)


@dataclass
class CallCycles:
    """A call: ``kind`` (prefill or decode), its ``tokens`` at ``pos``, every step, the total."""
    kind: str
    tokens: int
    pos: int
    steps: list[StepCycles]

    @property
    def cycles(self) -> int:
        return sum(s.cycles for s in self.steps)

    @property
    def stall_cycles(self) -> int:
        return sum(s.stall for s in self.steps)

    def per_op(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps:
            out[s.op] = out.get(s.op, 0) + s.cycles
        return out

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tokens": self.tokens, "pos": self.pos, "cycles": self.cycles,
                "stall_cycles": self.stall_cycles, "per_op": self.per_op(),
                "steps": [dataclasses.asdict(s) for s in self.steps]}


def _latency(unit) -> int:
    unit._MustUse__silence = True
    return unit.latency


class WeightTimeline:
    """The weight streamer: tiles in program order, each loaded into a free bank of two (the
    bank of the tile two before, once the TLMM is done with it) at the DDR rate."""

    def __init__(self, tiles: list[int], ddr: DdrTiming, ports: int):
        self.bytes = tiles
        self.rate = min(ddr.bytes_per_cycle, ports * ddr.beat_bytes)
        self.latency = ddr.latency
        self.loaded: list[float] = []
        self.used: list[float] = []
        self.spans: list[tuple[float, float]] = []     # (begin, end) of each tile's transfer
        self.start = 0.0

    def _load_next(self) -> None:
        k = len(self.loaded)
        free = self.used[k - 2] if k >= 2 else self.start
        begin = max(free + self.latency, self.loaded[-1] if self.loaded else self.start + self.latency)
        self.loaded.append(begin + self.bytes[k] / self.rate)
        self.spans.append((begin, self.loaded[-1]))

    def ready(self, j: int) -> float:
        """When tile ``j`` is in its bank (tiles before it must have been ``use``\\ d)."""
        while len(self.loaded) <= j:
            self._load_next()
        return self.loaded[j]

    def busy(self, begin: float, end: float) -> float:
        """Cycles within [begin, end) during which tiles load (every load whose bank is known
        to be free by now is scheduled first)."""
        while len(self.loaded) < len(self.bytes) and len(self.loaded) - 2 < len(self.used):
            self._load_next()
        return sum(max(0.0, min(end, b) - max(begin, a)) for a, b in self.spans)

    def use(self, j: int, end: float) -> None:
        assert len(self.used) == j
        self.used.append(end)


class CycleModel:
    """Cycles of the accelerator of (``model``, ``hw``) on a DDR of ``ddr`` timing.

    ``call(tokens, pos)``: one call (a prefill chunk, or a decode step with tokens 1);
    ``prefill(n)``: the calls of an n-token prompt (chunks of ``prefill_chunk``);
    ``decode(context)``: the decode step whose token sits at position ``context``."""

    def __init__(self, model: ModelConfig, hw: HardwareConfig, ddr: DdrTiming | None = None,
                 calibration: Calibration | None = None):
        from .top import TopShape
        if hw.attn_format != "fp32":
            raise ConfigError(f"attn_format: the cycle model covers the fp32 attention datapath "
                              f"(TiledAttention), not {hw.attn_format!r}")
        self.model, self.hw = model, hw
        self.ddr = ddr or DdrTiming()
        self.cal = calibration or Calibration()
        self.program: Program = build_program(model, hw)
        self.shape = TopShape.of(self.program)
        self.geometry = BufferGeometry.of(hw)
        self.rates = MatmulRates.of(model, hw.tlmm_group, hw.tlmm_lanes, hw.tlmm_tokens, hw.ew_lanes)
        self.entries = table_entries(hw.tlmm_group)
        self.build_tokens = min(2, hw.tlmm_tokens)
        self.words = self._words()
        #: DDR bytes of every MATMUL tile, in program order (the weight streamer's queue)
        self.tile_bytes = [b for s in self.program.steps if isinstance(s, MatMul) for _, b in self._tiles(s)]
        #: DDR bytes of the LM head's rows, and the HP ports it reads them over in lockstep
        self.head_bytes = model.vocab_size * model.hidden_size * (1 if hw.lm_head_format == "int8" else 2)
        self.head_ports = LmHeadStream.of(model, ImageFormat.of(hw)).ports
        from ..hw.gating import Gating
        from ..hw.transpose import ResidualAdd
        # the units' documented latencies (built only to ask them: never elaborated)
        self._gating_latency = _latency(Gating(lanes=hw.ew_lanes, act=model.hidden_act, act_lanes=hw.gating_lanes))
        self._add_latency = _latency(ResidualAdd(lanes=hw.ew_lanes, add_lanes=self.rates.add_lanes))

    # -- the program as ROM words ------------------------------------------------------------------
    def _words(self) -> list[tuple[str, object]]:
        words = []
        for step in self.program.steps:
            if isinstance(step, LmHead):
                words += [("HEAD_NORM", step), ("LM_HEAD", step)]
            else:
                words.append((step.op, step))
        return words

    def _tiles(self, step: MatMul) -> list[tuple[int, int]]:
        """(rows, DDR bytes) of each tile of a MATMUL step."""
        g = self.geometry
        rows = [min(step.tile_rows, step.rows - r0) for r0 in range(0, step.rows, step.tile_rows)]
        return [(r, g.ports * step.blocks * r * g.subword_bytes) for r in rows]

    # -- units ---------------------------------------------------------------------------------------
    def _beats(self, floats: int) -> int:
        """Cycles to move ``floats`` float32 through a reader: one AXI beat or one L-lane
        stream beat per cycle, whichever is narrower."""
        per = min(self.ddr.beat_bytes // 4, self.hw.ew_lanes)
        return -(-floats // per)

    def _build(self, n: int) -> int:
        """Cycles to build one block's tables for ``n`` tokens (TlmmTables)."""
        k, p = self.build_tokens, self.hw.tlmm_lanes
        return -(-n // k) * max(k * p, self.entries)

    def _nq_period(self, width: int) -> float:
        return 2 * (width / self.hw.ew_lanes) + self.cal.nq_period

    def _nq_first(self, width: int) -> float:
        return self.ddr.latency + 3 * (width / self.hw.ew_lanes) + self.cal.nq_first

    def _column_cost(self, n: int, step: MatMul) -> float:
        """Cycles per transposed column block of ``block`` rows and ``n`` tokens in the back end
        (the writer takes column blocks back to back, up to ``WRITER_COMMANDS`` awaiting their
        responses): its rows' write beats; with a second operand (residual, gate) the operand's
        rows are read up to ``OPERAND_COLUMNS`` column blocks ahead and pass the adder or the
        gating unit at its narrowed rate, and the fitted terms say how much of the unit's and
        the DDR's latency is still paid per column block."""
        hw, cal = self.hw, self.cal
        row = n * -(-self.shape.block * 4 // self.ddr.beat_bytes)
        if not (step.residual or step.gate):
            return cal.column + row
        beats = n * -(-self.shape.block // hw.ew_lanes)
        latency, lanes = ((self._gating_latency, hw.gating_lanes) if step.gate
                          else (self._add_latency, self.rates.add_lanes))
        return (cal.column_second + cal.column_latency / 100 * latency + cal.column_ddr / 100 * self.ddr.latency
                + n * cal.column_token + max(2 * row, beats * hw.ew_lanes / lanes))

    def _matmul(self, step: MatMul, start: float, n: int, act_ready, weights: WeightTimeline, tile0: int):
        """(end time, parts) of a MATMUL step whose TLMM may start at ``start``; token t's
        activations are in at ``act_ready(t)``.

        A pass's rows leave the TLMM in its last block; the units behind it (Dequant, transpose,
        adder or gating, writer: the back end) take ``back`` cycles for them. With a narrowed
        Dequant the MATMUL path buffers a tile's rows (:class:`~tellme.hw.result_buffer.ResultBuffer`),
        so the back end works on pass k while the TLMM runs pass k+1, which ends no earlier than
        the back end frees the buffer of pass k; without the buffer the last block itself runs
        at the back end's rate (the transpose's two banks aside). A row of a pass of n_p tokens
        takes ceil(n_p / dequant_lanes) cycles in Dequant (one in a decode step)."""
        hw = self.hw
        T, lanes = hw.tlmm_tokens, self.rates.dequant_lanes
        buffered = lanes < T
        t = back_end = start
        stall = lookups = 0.0
        first = True
        column = 0.0
        for j, (rows, _) in enumerate(self._tiles(step)):
            ready = weights.ready(tile0 + j)
            columns = -(-rows // self.shape.block)
            for p0 in range(0, n, T):
                n_p = min(T, n - p0)
                row_cycles = -(-n_p // lanes)      # Dequant converts only the parts of the pass's tokens
                build = self._build(n_p)
                go = max(t, act_ready(p0 + n_p - 1))
                if ready > go:
                    stall += ready - go
                    go = ready
                if first or go > t:
                    go += build + (self.cal.tlmm_first if first else 0)
                    lookups += build
                first = False
                column = self._column_cost(n_p, step)
                block = max(rows, build)
                lookups += step.blocks * block
                back = max(rows * row_cycles, columns * column)
                if buffered:
                    t = max(go + step.blocks * block, back_end)
                    back_end = max(back_end, t - block) + back
                else:
                    # the transpose's two banks let the last two column blocks drain later
                    t = go + (step.blocks - 1) * block + max(block, rows * row_cycles, (columns - 2) * column)
                    back_end = t
            weights.use(tile0 + j, t)
        tail = self.cal.matmul_tail + self.cal.tail_ddr / 100 * self.ddr.latency + 2 * column
        if step.residual or step.gate:
            tail += self.cal.tail_unit / 100 * (self._gating_latency if step.gate else self._add_latency)
        # tlmm: the TLMM's own cycles (table builds and lookups) if nothing behind it held it
        return max(t, back_end) + tail, {"stall": round(stall), "tlmm": round(lookups)}

    def _attention(self, step: Attention, n: int, pos: int) -> tuple[float, dict]:
        """Cycles of an ATTENTION step: a linear model in the work the unit does, its
        coefficients fitted (:class:`Calibration`, ``attn_*``): the load of the chunk's q/k/v
        (the reader's credit FIFO holds one token, so each token pays the DDR latency and its
        beats), one stream term: the longer of the causal (query, key) pairs at max(hd / 16, 2)
        cycles and the history's reads (K and V rows below pos0 read once per query tile, one AXI
        beat per cycle on each of the history's read ports,
        :func:`~tellme.gen.tiling.kv_history_ports`, but no faster than the DDR), since the score
        side works while the history streams in; the key tiles and query tiles visited, the
        outputs (hd / 16 cycles per query) and the history tile reads."""
        m, hw, cal = self.model, self.hw, self.cal
        hd, tile, H = m.head_dim, hw.attn_tile, len(step.heads)
        history_rate = min(self.ddr.bytes_per_cycle, kv_history_ports(hw) * self.ddr.beat_bytes)
        row_cycles = 4 * hd / history_rate
        work = {"load": n * (self.ddr.latency + self._beats((H + 2) * hd)),
                "pairs": 0, "key_tiles": 0, "query_tiles": 0, "outputs": n * H * hd / ATTN_SCORE_LANES,
                "history_cycles": 0, "history_tiles": 0}
        for qt in range(pos // tile, (pos + n - 1) // tile + 1):
            q_lo, q_hi = max(qt * tile, pos), min(qt * tile + tile, pos + n)
            work["query_tiles"] += 1
            work["key_tiles"] += qt + 1
            work["pairs"] += H * sum(q + 1 for q in range(q_lo, q_hi))     # query q sees keys 0..q
            work["history_cycles"] += 2 * pos * row_cycles
            work["history_tiles"] += -(-pos // tile)
        # the score side and the history's reads overlap: the longer of the two streams counts
        work["stream"] = max(work["pairs"] * max(hd // ATTN_SCORE_LANES, 2), work["history_cycles"])
        cost = {"load": cal.attn_load, "stream": cal.attn_stream,
                "key_tiles": cal.attn_key_tile, "query_tiles": cal.attn_query_tile, "outputs": cal.attn_output,
                "history_tiles": cal.attn_history_tile}
        total = cal.attn_fixed + sum(work[k] * cost[k] for k in cost)
        return max(total, 0.0), {k: round(v) for k, v in work.items()}

    # -- a call --------------------------------------------------------------------------------------
    def call(self, tokens: int, pos: int = 0, *, kind: str = "prefill") -> CallCycles:
        hw, m, cal, lat = self.hw, self.model, self.cal, self.ddr.latency
        if not 1 <= tokens <= hw.prefill_chunk:
            raise ValueError(f"tokens must be 1..{hw.prefill_chunk} (prefill_chunk), got {tokens}")
        if pos + tokens > hw.max_context:
            raise ValueError(f"pos + tokens ({pos + tokens}) exceed max_context {hw.max_context}")
        weights = WeightTimeline(self.tile_bytes, self.ddr, hw.hp_ports)
        now, tile_index = 0.0, 0
        act_ready = lambda t: 0.0      # noqa: E731  (no NORM_QUANT before the first MATMUL)
        out = []
        for index, (op, step) in enumerate(self.words):
            begin = now
            now += cal.dispatch
            parts: dict = {}
            if op == "EMBED":
                cycles = cal.embed_fixed + 2 * lat + tokens * (self._beats(m.hidden_size) + cal.embed_row)
                parts["weight_loads"] = round(weights.busy(now, now + cycles))
                now += cycles + parts["weight_loads"] * cal.embed_load_share / 100
            elif op == "NORM_QUANT":
                issue = now
                period, first = self._nq_period(step.width), self._nq_first(step.width)
                act_ready = lambda t, issue=issue, period=period, first=first: issue + first + t * period  # noqa: E731
                now += cal.nq_word - cal.dispatch
            elif op == "MATMUL":
                now += lat + cal.w_mult
                now, parts = self._matmul(step, now, tokens, act_ready, weights, tile_index)
                tile_index += step.tiles
                act_ready = lambda t: 0.0      # noqa: E731
            elif op == "ATTENTION":
                cycles, parts = self._attention(step, tokens, pos)
                # weight tiles loading meanwhile hold the HP ports the step's readers share
                # (bursts come back in request order per port)
                parts["weight_loads"] = round(weights.busy(now, now + cycles))
                now += cycles + parts["weight_loads"] * cal.load_share / 100
            elif op == "HEAD_NORM":
                now += cal.head_nq_word - cal.dispatch
            elif op == "LM_HEAD":
                now += (cal.lm_fixed + 2 * lat + self._nq_first(m.hidden_size)
                        + self.head_bytes / min(self.ddr.bytes_per_cycle, self.head_ports * self.ddr.beat_bytes))
            layer = getattr(step, "layer", None)
            what = step.proj if isinstance(step, MatMul) else op.lower()
            out.append(StepCycles(index, "NORM_QUANT" if op == "HEAD_NORM" else op, layer, what,
                                  round(now) - round(begin), parts))
        return CallCycles(kind, tokens, pos, out)

    def prefill(self, n: int, pos: int = 0) -> list[CallCycles]:
        C = self.hw.prefill_chunk
        return [self.call(min(C, n - k), pos + k) for k in range(0, n, C)]

    def decode(self, context: int) -> CallCycles:
        return self.call(1, context, kind="decode")

    def elementwise_overhead(self, call: CallCycles, layer: int = 0) -> float:
        """What the element-wise work adds to ``layer``'s TLMM cycles in ``call``: the cycles of
        its MATMUL and NORM_QUANT steps beyond the TLMM's own (table builds and lookups) and its
        waits for weights, over the TLMM's own."""
        steps = [s for s in call.steps if s.layer == layer and s.op in ("MATMUL", "NORM_QUANT")]
        own = sum(s.parts.get("tlmm", 0) for s in steps)
        return (sum(s.cycles - s.parts.get("tlmm", 0) - s.stall for s in steps)) / own

    def decode_ddr_bytes(self, context: int) -> int:
        """DDR bytes of a decode step at ``context``: every weight tile once, the K/V history
        (float32 rows of every kv head, read once per query head pass) and the LM head's rows
        (the activation rows the steps read and write, a few KiB, are left out)."""
        history = sum(2 * 4 * self.model.head_dim * context for s in self.program.steps if isinstance(s, Attention))
        return sum(self.tile_bytes) + history + self.head_bytes

    def assumptions(self) -> dict:
        return {
            "ddr": self.ddr.describe(),
            "schedule": "one sequencer step at a time; weight tiles load ahead in program order into two banks; "
                        "a NORM_QUANT into the act buffer overlaps the MATMUL after it; EMBED and ATTENTION "
                        "lose a share of the weight loads they overlap (shared HP ports)",
            "tlmm": "per block max(rows, table build); the results leave in the last block and the units "
                    "behind the TLMM take them at their own rate (Dequant ceil(tokens/dequant_lanes) cycles per row, "
                    "through the result buffer when narrowed, so a pass's back end overlaps the next pass; "
                    "per column block the writer's beats and, with a residual or gate operand, a fitted "
                    "share of the unit's and the DDR's latency)",
            "attention": "a linear model in the work of the tiled fp32 attention and its load (load cycles, "
                         "the longer of the causal pairs' and the history's read cycles, key and query tiles, "
                         "outputs, history tile reads)",
            "calibration": "constants fitted to per-step cycles of Verilator runs (bench/cycle_model.py): "
                           + ", ".join(f"{k}={v}" for k, v in self.cal.to_dict().items()),
        }


def performance(cm: CycleModel, board, *, contexts=(128, 1024), prompts=(64, 128)) -> dict:
    """The figures ``tellme estimate`` reports for the model of ``cm`` on ``board``: decode
    tokens/s at each context, time to first token for each prompt length, the DDR bytes a decode
    step moves and the fraction of the board's DDR roofline reached, with the assumptions (the
    DDR efficiency is ``cm``'s DDR rate over the board's peak). Contexts and prompts beyond the
    hardware's ``max_context`` are left out."""
    model, hw = cm.model, cm.hw
    clock = hw.clock_mhz * 1e6
    efficiency = cm.ddr.bytes_per_cycle * clock / board.ddr_peak_bytes_per_s
    decode, ttft, ddr_bytes, roofline = {}, {}, {}, {}
    for ctx in contexts:
        if ctx >= hw.max_context:
            continue
        call = cm.decode(ctx)
        decode[str(ctx)] = clock / call.cycles
        moved = cm.decode_ddr_bytes(ctx)
        ddr_bytes[str(ctx)] = moved
        # the roofline: the step's bytes at the board's full peak
        roofline[str(ctx)] = (moved / board.ddr_peak_bytes_per_s) / (call.cycles / clock)
    for n in prompts:
        if n > hw.max_context:
            continue
        ttft[str(n)] = sum(c.cycles for c in cm.prefill(n)) / clock
    return {"model": model.name, "board": board.name, "clock_mhz": hw.clock_mhz, "decode_tok_s": decode,
            "ttft_s": ttft, "ddr_bytes_per_token": ddr_bytes, "ddr_roofline_frac": roofline,
            "assumptions": {**cm.assumptions(), "ddr_efficiency": efficiency,
                            "ddr_peak_bytes_per_s": board.ddr_peak_bytes_per_s,
                            "clock": f"{hw.clock_mhz:g} MHz (hardware config)"}}


#: Where a source checkout keeps the benchmarks' results (absent from an installed package).
RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"
RESOURCE_KEYS = {"lut": "lut_equiv", "ff": "ff", "dsp": "dsp", "bram36": "bram36", "uram": "uram"}


def recorded_resources(board, model: ModelConfig, hw: HardwareConfig, results_dir=None) -> dict | None:
    """The whole top's Yosys estimate for (``board``, ``model``, ``hw``) as a benchmark recorded
    it (``bench/results/kv260_fit.json``, then ``boards.json``), ``{lut, ff, dsp, bram36, uram:
    {"used", "capacity"}}`` with its ``source``; None when none matches this hardware config (a
    synthesis of the top takes up to an hour: ``tellme build`` runs one)."""
    results_dir = RESULTS_DIR if results_dir is None else results_dir
    capacity = dict(board.pl_resources)
    candidates = []
    fit = results_dir / "kv260_fit.json"
    if fit.exists():
        data = json.loads(fit.read_text())
        used = {k: data["resources"][k]["used"] for k in RESOURCE_KEYS}
        candidates.append((data.get("board"), data.get("preset"), data.get("hardware"), used,
                           f"bench/results/kv260_fit.json (commit {data.get('commit', '?')})"))
    boards = results_dir / "boards.json"
    if boards.exists():
        for row in json.loads(boards.read_text()).get("pairs", []):
            used = {k: row["resources"][v] for k, v in RESOURCE_KEYS.items()}
            candidates.append((row["board"], row["preset"], row["hardware"], used, "bench/results/boards.json"))
    for name, preset, hardware, used, source in candidates:
        if name == board.name and preset == model.name and hardware == hw.to_dict():
            return {**{k: {"used": used[k], "capacity": capacity[k]} for k in RESOURCE_KEYS},
                    "source": f"Yosys estimate (synth_xilinx -family xcup) recorded in {source}; the design may "
                              "have changed since"}
    return None


def plot_estimate(estimate: dict, out_dir) -> list:
    """``roofline.png`` (decode: the DDR bytes a step moves against the time it takes, beside the
    board's DDR peak and the efficiency assumed) and, with resources, ``resources.png`` (each
    resource's share of the board). Returns the paths written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    peak = estimate["assumptions"]["rates"]["ddr_peak_bytes_per_s"] / 1e9
    efficiency = estimate["assumptions"]["rates"]["ddr_efficiency"]
    for ctx, rate in estimate["decode_tok_s"].items():
        mb = estimate["ddr_bytes_per_token"][ctx] / 1e6
        ms = 1e3 / rate
        ax.scatter([ms], [mb], zorder=3)
        ax.annotate(f"context {ctx}: {rate:.1f} tok/s", (ms, mb), textcoords="offset points", xytext=(6, -4),
                    fontsize=8)
    top = max(estimate["ddr_bytes_per_token"].values()) / 1e6 * 1.3
    for gbs, label, style in ((peak, f"DDR peak {peak:.1f} GB/s", "-"),
                              (peak * efficiency, f"{100 * efficiency:.0f} % of peak", "--")):
        ax.plot([0, top / gbs], [0, top], style, color="grey", label=label)
    ax.set_xlim(0, 1.45 * max(1e3 / r for r in estimate["decode_tok_s"].values()))
    ax.set(xlabel="decode step (ms)", ylabel="DDR MB per step",
           title=f"{estimate['model']} on {estimate['board']}: decode against the DDR roofline")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "roofline.png", dpi=120)
    plt.close(fig)
    paths.append(out / "roofline.png")
    resources = estimate.get("resources")
    if resources:
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        keys = list(RESOURCE_KEYS)
        values = [100 * resources[k]["used"] / resources[k]["capacity"] if resources[k]["capacity"] else 0
                  for k in keys]
        ax.bar(keys, values, color=["tab:red" if v > 100 else "tab:blue" for v in values])
        ax.axhline(100, color="k", lw=1)
        for i, v in enumerate(values):
            ax.text(i, v + 2, f"{v:.0f} %", ha="center", fontsize=8)
        ax.set(ylabel="per cent of the board", title=f"Resources (Yosys estimate) on {estimate['board']}")
        fig.tight_layout()
        fig.savefig(out / "resources.png", dpi=120)
        plt.close(fig)
        paths.append(out / "resources.png")
    return paths
