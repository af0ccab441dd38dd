"""Transpose of TLMM/Dequant results into token rows, and the residual add after it
(docs/architecture.md section 9, "Transpose" and "Residual").

The TLMM engine and :class:`~tellme.hw.dequant.Dequant` emit one beat per output feature (a
*row*): ``f32_vec(T)``, the feature's value for each of the T tokens of the pass. The scratch
arrays are token-major (docs section 6), so the ScratchWriter wants, per token, the values of
consecutive features. :class:`Transpose` turns blocks of R rows x T tokens into token rows of
``L`` lanes per beat, written with one column-block command per block (``rows`` = tokens,
``row_bytes`` = 4 x the block's rows rounded up to whole beats, ``row_stride`` = the array's row
bytes, ``base`` = array + 4 x (first row of the range + ``row0``)). :class:`ResidualAdd` adds the
residual rows (read back by a ScratchReader) to the transposed rows, lane by lane.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .fp32 import FAdd, Stages
from .pipeline import StreamPipe, f32_vec
from .vec_width import VecNarrow, narrowed_latency, wire_narrowed

__all__ = ["Transpose", "ResidualAdd", "transpose_command_layout", "transpose_block_layout",
           "ROW0_WIDTH"]

#: Width of the ``row0`` field of a ``blocks`` beat (row indices within a range wrap beyond it).
ROW0_WIDTH = 16


def transpose_command_layout(tokens: int) -> data.StructLayout:
    """One row range: ``tokens`` = n, the number of valid tokens (1..T) of its rows."""
    return data.StructLayout({"tokens": unsigned(tokens.bit_length())})


def transpose_block_layout(block: int) -> data.StructLayout:
    """One block of a range: ``row0`` its first row's index within the range, ``rows`` its row
    count (the block size R, or fewer for a range's final block)."""
    return data.StructLayout({"row0": unsigned(ROW0_WIDTH), "rows": unsigned(block.bit_length())})


class Transpose(wiring.Component):
    """Turns rows of T token values into token rows of ``lanes`` values, block by block.

    A *range* is a command ``{tokens: n}`` on ``cmd`` and the rows that follow on ``i`` up to
    and including the one marked ``last``. Its rows are cut into blocks of R = ``block`` rows
    (the final block may be shorter). For each block, in order, the unit emits one ``blocks``
    beat ``{row0, rows}`` and then, token after token t = 0 .. n-1, ceil(rows / L) beats on
    ``o``: lane j of beat k is token t's value of the block's row k L + j (row order), lanes
    beyond the block's rows are +0, and ``last`` is set on each token's final beat of the block.
    Values move bit for bit (NaNs, infinities, -0 and subnormals unchanged). Token values t >= n
    of a row are never emitted. A block's ``blocks`` beat moves before or in the same cycle as
    its first ``o`` beat (the first ``o`` beat is not read from the banks until then), so a
    consumer can take ``blocks``, issue the ScratchWriter's column-block command and then let
    the writer take the block's ``o`` beats.

    ``n`` must be 1..T; it is not checked: 0 behaves as 1 and values above T as T. A range
    longer than 2^16 rows has its ``row0`` wrap.

    Organisation: two banks (ping-pong), so the next block fills while the previous one drains.
    Each bank is L memories (memory j holds the block rows r with r mod L = j) of R/L words of T
    float32 (one row per word), so the L rows of one output beat are one read of every memory;
    the two banks share the memories (bank b at addresses b R/L ..). Each memory is simple dual
    port (one write port, one synchronous read port); a bank is written only while it is empty
    and read only once full, so reads and writes never meet.

    Timing:

    * latency: when the final row of a block moves on ``i`` at a clock edge, the block's
      ``blocks`` beat is offered in the next cycle and its first ``o`` beat three cycles after
      that edge (if ``blocks`` is taken at once and the other bank is not draining);
    * throughput: one beat per cycle on each side when not stalled. A block of ``rows`` rows
      and n tokens fills in ``rows`` cycles and drains in d = n ceil(rows/L) cycles, and block
      b+1 fills while block b drains, so the pair takes max(rows(b+1), d(b)) cycles: ``o`` runs
      without a gap while rows(b+1) <= d(b) (e.g. whole blocks with n >= L), ``i`` while
      rows(b+1) >= d(b) (e.g. n = 1 and blocks of at least R/L rows). ``cmd`` is taken with or
      before the range's first row (the next range's command in the cycle its predecessor's
      ``last`` row moves), so ranges follow each other without a gap: block boundaries inside
      a range and between ranges cost the same.

    Stream rules: a beat moves when valid and ready are both high; ``o.valid``, ``o.payload``,
    ``blocks.valid`` and ``blocks.payload`` come from registers (valid never depends on ready)
    and hold until the beat moves. ``i.ready`` depends on ``cmd.valid`` (a row is taken only
    once its range's command is there, possibly in the same cycle) and ``cmd.ready`` on
    ``i.valid``/``i.payload.last`` (the next command is taken as the current range ends).

    Cost: 2 R T float32 of memory (L memories of 2R/L x 32T bits: LUTRAM when shallow), L x
    (T:1) 32-bit multiplexers and an L x 32-bit output register, counters, and per bank the
    block's row0, row count and n.

    Parameters (keyword only)
    -------------------------
    tokens : int
        T, tokens per row (the TLMM pass).
    lanes : int
        L, float32 lanes per ``o`` beat.
    block : int
        R, rows per block: a multiple of L, below 2^16.

    Attributes
    ----------
    cmd : ``In(stream.Signature(transpose_command_layout(T)))``
        ``{tokens}`` per range.
    i : ``In(stream.Signature(f32_vec(T)))``
        Rows, ``last`` on each range's final row.
    o : ``Out(stream.Signature(f32_vec(L)))``
        Token rows of each block, ``last`` on each token's final beat of the block.
    blocks : ``Out(stream.Signature(transpose_block_layout(R)))``
        ``{row0, rows}`` per block.
    """

    def __init__(self, *, tokens: int, lanes: int, block: int):
        try:
            check_positive_int("tokens", tokens)
            check_positive_int("lanes", lanes)
            check_positive_int("block", block)
            if block % lanes:
                raise ValueError(f"block ({block}) must be a multiple of lanes ({lanes})")
            if block >= 1 << ROW0_WIDTH:
                raise ValueError(f"block must be below 2^{ROW0_WIDTH}, got {block}")
        except ValueError:
            # The object exists already; keep Amaranth from also warning that it was never elaborated.
            self._MustUse__silence = True
            raise
        self.tokens, self.lanes, self.block = tokens, lanes, block
        super().__init__({
            "cmd": In(stream.Signature(transpose_command_layout(tokens))),
            "i": In(stream.Signature(f32_vec(tokens))),
            "o": Out(stream.Signature(f32_vec(lanes))),
            "blocks": Out(stream.Signature(transpose_block_layout(block))),
        })

    #: Cycles from the edge where a block's final row moves to its first ``o`` beat being
    #: offered (no stalls, the other bank idle).
    latency = 3

    def elaborate(self, platform):
        m = Module()
        T, L, R = self.tokens, self.lanes, self.block
        D = R // L                                    # words per memory and bank
        word = data.ArrayLayout(unsigned(32), T)
        write_ports, read_ports = [], []
        for j in range(L):
            mem = memory.Memory(shape=word, depth=2 * D, init=[])
            m.submodules[f"mem{j}"] = mem
            write_ports.append(mem.write_port())
            read_ports.append(mem.read_port(transparent_for=()))

        # -- per-bank state: full (filled, not yet drained), told (its blocks beat has moved),
        # and what the drain and the blocks beat need.
        full = [Signal(name=f"full{b}") for b in range(2)]
        told = [Signal(name=f"told{b}") for b in range(2)]
        n_width = T.bit_length()
        b_row0 = [Signal(ROW0_WIDTH, name=f"row0_{b}") for b in range(2)]
        b_rows = [Signal(range(R + 1), name=f"rows{b}") for b in range(2)]
        b_beats = [Signal(range(D + 1), name=f"beats{b}") for b in range(2)]
        b_tail = [Signal(range(L + 1), name=f"tail{b}") for b in range(2)]
        b_n = [Signal(n_width, name=f"n{b}") for b in range(2)]

        def pick(bank, signals):
            return Mux(bank, signals[1], signals[0])

        # -- fill: rows into the bank `fil`, row w_word L + w_lane of the block
        have_cmd = Signal()
        n_cmd = Signal(n_width)
        fil = Signal()
        w_lane = Signal(range(L))
        w_word = Signal(range(D))
        row0 = Signal(ROW0_WIDTH)
        take_row, range_end, block_end, take_cmd = Signal(), Signal(), Signal(), Signal()
        n_eff = Mux(have_cmd, n_cmd, self.cmd.payload.tokens)
        m.d.comb += [
            self.i.ready.eq((have_cmd | self.cmd.valid) & ~pick(fil, full)),
            take_row.eq(self.i.valid & self.i.ready),
            range_end.eq(take_row & self.i.payload.last),
            block_end.eq(take_row & (self.i.payload.last | ((w_lane == L - 1) & (w_word == D - 1)))),
            self.cmd.ready.eq(~have_cmd | range_end),
            take_cmd.eq(self.cmd.valid & self.cmd.ready),
        ]
        with m.If(take_cmd):
            m.d.sync += n_cmd.eq(self.cmd.payload.tokens)
        with m.If(range_end):
            # A command taken in this cycle belongs to the next range only if one was held.
            m.d.sync += have_cmd.eq(have_cmd & self.cmd.valid)
        with m.Elif(take_cmd):
            m.d.sync += have_cmd.eq(1)
        for j, port in enumerate(write_ports):
            m.d.comb += [port.addr.eq(Mux(fil, D + w_word, w_word)), port.data.eq(self.i.payload.data),
                         port.en.eq(take_row & (w_lane == j))]
        with m.If(take_row):
            with m.If(block_end):
                m.d.sync += [w_lane.eq(0), w_word.eq(0), fil.eq(~fil),
                             row0.eq(Mux(self.i.payload.last, 0, row0 + R))]
            with m.Elif(w_lane == L - 1):
                m.d.sync += [w_lane.eq(0), w_word.eq(w_word + 1)]
            with m.Else():
                m.d.sync += w_lane.eq(w_lane + 1)
        for b in range(2):
            with m.If(block_end & (fil == b)):
                m.d.sync += [full[b].eq(1), b_row0[b].eq(row0), b_rows[b].eq(w_word * L + w_lane + 1),
                             b_beats[b].eq(w_word + 1), b_tail[b].eq(w_lane + 1), b_n[b].eq(n_eff)]

        # -- blocks beats, in fill order
        ann = Signal()
        announce = Signal()
        m.d.comb += [
            self.blocks.valid.eq(pick(ann, full) & ~pick(ann, told)),
            self.blocks.payload.row0.eq(pick(ann, b_row0)),
            self.blocks.payload.rows.eq(pick(ann, b_rows)),
            announce.eq(self.blocks.valid & self.blocks.ready),
        ]
        with m.If(announce):
            m.d.sync += ann.eq(~ann)

        # -- drain: issue reads of bank `drn` (token t, word k), one stage of memory read, one
        # output register; every stage moves when the output register is free or being read.
        drn = Signal()
        t = Signal(range(T))
        k = Signal(range(D))
        advance, issue = Signal(), Signal()
        beats, tail, n_d = pick(drn, b_beats), pick(drn, b_tail), pick(drn, b_n)
        last_beat = k == beats - 1
        last_token = (t + 1 >= n_d) | (t == T - 1)
        drainable = pick(drn, full) & (pick(drn, told) | (announce & (ann == drn)))
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), issue.eq(drainable & advance)]
        for port in read_ports:
            m.d.comb += [port.addr.eq(Mux(drn, D + k, k)), port.en.eq(advance)]
        with m.If(issue):
            with m.If(~last_beat):
                m.d.sync += k.eq(k + 1)
            with m.Else():
                m.d.sync += k.eq(0)
                with m.If(~last_token):
                    m.d.sync += t.eq(t + 1)
                with m.Else():
                    m.d.sync += [t.eq(0), drn.eq(~drn)]
        for b in range(2):
            with m.If(announce & (ann == b)):
                m.d.sync += told[b].eq(1)
            with m.If(issue & last_beat & last_token & (drn == b)):
                m.d.sync += [full[b].eq(0), told[b].eq(0)]

        valid1 = Signal()
        t1 = Signal(range(T))
        last1 = Signal()
        keep1 = Signal(L)                             # lanes holding a row of the block
        out_valid = Signal()
        out = Signal(f32_vec(L), reset_less=True)
        with m.If(advance):
            m.d.sync += [valid1.eq(issue), t1.eq(t), last1.eq(last_beat), out_valid.eq(valid1),
                         keep1.eq(Cat(~last_beat | (j < tail) for j in range(L))),
                         out.last.eq(last1)]
            for j, port in enumerate(read_ports):
                m.d.sync += out.data[j].eq(Mux(keep1[j], port.data[t1], 0))
        m.d.comb += [self.o.valid.eq(out_valid), self.o.payload.eq(out)]
        return m


class ResidualAdd(wiring.Component):
    """o = h + y lane by lane: the binary32 add of :class:`~tellme.hw.fp32.FAdd` (round to
    nearest even, subnormal inputs and results flushed to zero, NaN results 0x7FC00000),
    ``golden.residual_add`` bit for bit; ``last`` copied from ``y``.

    Timing: latency ``FAdd.latency`` (4): a beat pair taken at an edge is offered on ``o`` four
    cycles later; throughput one beat per cycle. ``y`` and ``h`` are joined beat for beat (a pair
    moves when both are valid and the pipeline advances); a stalled ``o`` holds every stage.

    Stream rules: ``o.valid`` comes from the pipeline's valid register and ``o.payload`` from
    the adders' output registers (valid never depends on ready); each input's ready depends on
    the other input's valid.

    ``add_lanes`` (default L, dividing it) sets how many adders there are: with fewer, each
    beat pair is split into L/add_lanes parts (:class:`~tellme.hw.vec_width.VecNarrow`) and the
    sums joined again (:class:`~tellme.hw.vec_width.VecWiden`): throughput add_lanes elements
    per cycle, latency ``latency``. The MATMUL path's rows come at most T elements per B
    cycles, so it gives the adder just that rate (``gen.tiling.MatmulRates``).

    Cost: add_lanes ``FAdd`` units, a delay line for ``last`` (and the lane converters).

    Parameters (keyword only): ``lanes`` (L), ``add_lanes``. Attributes: ``y``, ``h`` (In
    streams, ``f32_vec(L)``), ``o`` (Out stream, ``f32_vec(L)``).
    """

    def __init__(self, *, lanes: int, add_lanes: int | None = None):
        try:
            check_positive_int("lanes", lanes)
            add_lanes = lanes if add_lanes is None else add_lanes
            check_positive_int("add_lanes", add_lanes)
            if lanes % add_lanes:
                raise ValueError(f"add_lanes must divide lanes ({lanes}), got {add_lanes!r}")
        except ValueError:
            self._MustUse__silence = True
            raise
        self.lanes, self.add_lanes = lanes, add_lanes
        super().__init__({
            "y": In(stream.Signature(f32_vec(lanes))),
            "h": In(stream.Signature(f32_vec(lanes))),
            "o": Out(stream.Signature(f32_vec(lanes))),
        })

    @property
    def latency(self) -> int:
        return FAdd.latency + narrowed_latency(self.lanes, self.add_lanes)

    def elaborate(self, platform):
        if self.add_lanes < self.lanes:
            return self._split()
        m = Module()
        pipe = StreamPipe(m, [self.y, self.h], self.o, self.latency)
        st = Stages(m, pipe.advance)
        for lane in range(self.lanes):
            add = FAdd()
            m.submodules[f"add{lane}"] = add
            m.d.comb += [add.en.eq(pipe.advance), add.a.eq(self.h.payload.data[lane]),
                         add.b.eq(self.y.payload.data[lane]), self.o.payload.data[lane].eq(add.o)]
        last = self.y.payload.last
        for _ in range(self.latency):
            last = st.reg(last)
        m.d.comb += self.o.payload.last.eq(last)
        return m

    def _split(self):
        """add_lanes < lanes: narrow both inputs, add add_lanes at a time, widen."""
        m = Module()
        wide, narrow = self.lanes, self.add_lanes
        core = ResidualAdd(lanes=narrow)
        wire_narrowed(m, core, inputs={"y": (self.y, VecNarrow(lanes=wide, out_lanes=narrow), core.y),
                                       "h": (self.h, VecNarrow(lanes=wide, out_lanes=narrow), core.h)},
                      out=self.o, lanes=wide, narrow=narrow)
        return m
