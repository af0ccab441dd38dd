"""The MATMUL step's datapath: act buffer -> TLMM (weights streamed from DDR) -> dequantisation ->
transpose -> (+ residual, or x act(gate)) -> scratch rows."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.layouts import BufferGeometry
from .act_buffer import ActBuffer
from .act_mover import ROW_STRIDE_WIDTH, ROWS_WIDTH, ScratchReader, ScratchWriter
from .axi import axi_read_signature, axi_write_signature
from .credit_fifo import CreditFifo
from .dequant import Dequant
from .gating import Gating
from .result_buffer import ResultBuffer
from .stream_buffer import StreamBuffer
from .tlmm import TlmmEngine
from .transpose import ResidualAdd, Transpose
from .weight_streamer import WeightStreamer

__all__ = ["MatmulPath", "matmul_command_layout", "weights_command_layout", "WEIGHT_FIELDS", "PROJECTION_ROWS"]

#: Column blocks the MATMUL path's writer holds awaiting their write responses.
WRITER_COMMANDS = 4
#: Column blocks of the second operand (residual or gate rows) read ahead of the transpose.
OPERAND_COLUMNS = 4
#: Width of a projection's row count (N <= 65535; tiles are at most ``max_rows``).
PROJECTION_ROWS = unsigned(16)


def matmul_command_layout(ports: int, addr_width: int, max_rows: int, max_blocks: int, max_tokens: int
                          ) -> data.StructLayout:
    """One projection over the act buffer's tokens: the per-port weight stream bases, its shape
    and tiling (``tiles`` tiles of ``tile_rows`` rows, the last one ``rows - (tiles-1) tile_rows``),
    ``w_mult`` (binary32), the tokens ``n``, the destination array (``dst`` base and row stride)
    and, with ``residual``, the residual array ``res`` (same row stride) added to the result, or
    with ``gate``, the gate array at ``res`` whose activation multiplies it."""
    return data.StructLayout({
        "base": data.ArrayLayout(unsigned(addr_width), ports),
        "blocks": unsigned(max_blocks.bit_length()), "rows": PROJECTION_ROWS,
        "tile_rows": unsigned(max_rows.bit_length()), "tiles": unsigned(8),
        "w_mult": unsigned(32), "tokens": unsigned(max_tokens.bit_length()),
        "dst": unsigned(addr_width), "row_stride": unsigned(ROW_STRIDE_WIDTH),
        "residual": unsigned(1), "res": unsigned(addr_width), "gate": unsigned(1),
    })


#: The fields of a MATMUL command that say which weights it streams: the weight command.
WEIGHT_FIELDS = ("base", "blocks", "rows", "tile_rows", "tokens")


def weights_command_layout(matmul: data.StructLayout) -> data.StructLayout:
    """The weight command of a projection: the :data:`WEIGHT_FIELDS` of its MATMUL command
    layout ``matmul`` (per-port bases, shape, tiling, and the tokens, which set the passes per
    tile)."""
    return data.StructLayout({name: matmul[name].shape for name in WEIGHT_FIELDS})


class MatmulPath(wiring.Component):
    """y = dequantize(tlmm(W, x_q), d_x, w_mult) [+ h | x act(g)] for the act buffer's n tokens,
    written to scratch rows: the MATMUL step of the sequencer program (``golden.tlmm``,
    ``dequantize``, ``residual_add``, ``gated_activation``), bit for bit.

    The act buffer is filled beforehand through ``act_wr_cmd``/``act_q``/``act_scale`` (the
    NORM_QUANT step; ``act_written`` counts the tokens stored). The weights come separately:
    each ``weights_cmd`` beat (:func:`weights_command_layout`) hands one projection to the
    weight streamer, which walks its tiles from DDR (``weights[port]``) into the two banks of the
    weight buffer as soon as a bank is free, so the sequencer sends the weight commands of a
    call's projections ahead of their ``cmd`` beats and loading runs ahead across steps and
    layers (the banks hold tiles in the order the weight commands came, which must be the order
    of the ``cmd`` beats). A ``cmd`` beat runs one projection (its ``base`` is not used here:
    the weight command carries it): the act buffer
    replays x_q per tile and pass of T tokens, the TLMM produces each (tile, pass) range's rows,
    Dequant scales them, Transpose turns each block of ``block`` rows into token rows, and the
    ScratchWriter writes them as column blocks of the destination array (reading the same
    column blocks of the residual array first when ``residual`` is set; with ``gate`` the same
    column blocks of the gate array g go through the :class:`~tellme.hw.gating.Gating` unit as
    act(g) * y, so up_proj applies the gated FFN activation while it streams). ``done`` pulses once
    every write of the command is acknowledged; the next command is taken after that.

    Ports: ``cmd`` (In stream, :func:`matmul_command_layout`), ``weights_cmd`` (In stream,
    :func:`weights_command_layout`), ``done`` (Out), ``act_wr_cmd``,
    ``act_q``, ``act_scale``, ``act_written`` (the act buffer's write side), ``weights[p]``
    (AXI4 read managers, one per HP port), ``res_axi`` (AXI4 read manager of the residual
    reader), ``wr_axi`` (AXI4 write manager of the scratch writer), ``error`` (sticky: an AXI
    error on any of them), ``weights_wait`` (the TLMM waits for a lane word from the weight
    buffer during a command: the weight-stall cycles).

    Constraints (the generator's): ``tile_rows`` a multiple of ``lanes`` and of the AXI beat in
    floats, ``dst``/``res``/``row_stride`` beat aligned. Throughput: the TLMM's (one lane word per
    cycle) while the units behind it keep up: results leave during a tile pass's last block,
    one row per lane word, and Dequant takes one per ceil(n_p / ``dequant_lanes``) cycles (n_p the
    pass's tokens: 1 in a decode step); the writer
    takes column blocks back to back (up to :data:`WRITER_COMMANDS` awaiting their responses,
    its AXI master T x :data:`WRITER_COMMANDS` bursts),
    and the residual or gate rows are read up to :data:`OPERAND_COLUMNS` column blocks ahead of
    the transpose into a credit FIFO (:class:`~tellme.hw.credit_fifo.CreditFifo`). Cost: the
    units it holds, that FIFO and, with a narrowed Dequant, a
    :class:`~tellme.hw.result_buffer.ResultBuffer` of a tile's rows.

    Parameters (keyword-only): ``geometry`` (the weight buffer), ``tokens`` T, ``lanes`` L
    (element-wise), ``block`` (transpose rows), ``max_tokens``, ``max_inputs``, ``max_rows``
    (largest tile), ``addr_width``, ``depth`` (weight buffer bank depth, default the geometry's),
    ``ram_style``, ``dequant_lanes`` (tokens the Dequant converts per cycle, default T) and
    ``add_lanes`` (residual adders, default L): the TLMM gives at most T elements per B
    cycles, so the generator narrows both to that rate (``gen.tiling.MatmulRates``); ``act``
    (``"relu2"``, ``"silu"`` or None: no gating unit, and a command with ``gate`` must not come)
    and ``act_lanes`` (the Gating unit's activation lanes, ``gating_lanes``).
    """

    def __init__(self, *, geometry: BufferGeometry, tokens: int, lanes: int, block: int, max_tokens: int,
                 max_inputs: int, max_rows: int, addr_width: int = 40, depth: int | None = None,
                 ram_style: str = "ultra", dequant_lanes: int | None = None, add_lanes: int | None = None,
                 act: str | None = None, act_lanes: int | None = None):
        for name, value in (("tokens", tokens), ("lanes", lanes), ("block", block), ("max_tokens", max_tokens),
                            ("max_inputs", max_inputs), ("max_rows", max_rows)):
            check_positive_int(name, value)
        self.geometry, self.tokens, self.lanes, self.block = geometry, tokens, lanes, block
        self.max_tokens, self.max_inputs, self.max_rows, self.addr_width = max_tokens, max_inputs, max_rows, addr_width
        self.max_blocks = -(-(-(-max_inputs // geometry.group)) // geometry.lanes)
        data_width = geometry.beat_bytes * 8
        self.act = ActBuffer(group=geometry.group, lanes=lanes, tlmm_lanes=geometry.lanes, tokens=tokens,
                             max_tokens=max_tokens, max_inputs=max_inputs)
        self.streamer = WeightStreamer(geometry=geometry, addr_width=addr_width, depth=depth, ram_style=ram_style)
        self.tlmm = TlmmEngine(group=geometry.group, lanes=geometry.lanes, tokens=tokens, max_rows=max_rows,
                               max_blocks=self.max_blocks)
        # A tile pass's rows leave the TLMM in its last block, one per lane word; the narrowed
        # Dequant takes one per ceil(n_p / dequant_lanes) cycles (n_p the pass's tokens: the TLMM
        # passes the count along, Dequant skips the parts beyond it). A tile's rows wait here instead of the
        # TLMM (only when Dequant is narrowed: at full rate it keeps up).
        self.results = None
        if dequant_lanes is not None and dequant_lanes < tokens:
            self.results = ResultBuffer(tokens=tokens, acc_bits=self.tlmm.acc_bits, depth=max_rows)
        self.dequant = Dequant(tokens=tokens, residual=False, lanes=dequant_lanes)
        self.transpose = Transpose(tokens=tokens, lanes=lanes, block=block)
        self.res_reader = ScratchReader(lanes=lanes, data_width=data_width, addr_width=addr_width)
        self.res_add = ResidualAdd(lanes=lanes, add_lanes=add_lanes)
        self.gating = None if act is None else Gating(lanes=lanes, act=act, act_lanes=act_lanes)
        # Column blocks are short (T rows of ``block`` floats): the writer takes them back to back
        # instead of waiting one write-response latency each (and, with a second operand, its
        # read and the adder's or gating unit's pipeline) before the next.
        # Its AXI master holds a whole queue of column blocks (T row bursts each): with the
        # default 4 bursts the next block's command waited for half of the current block's
        # write responses, so neighbouring blocks overlapped only partly (docs 10).
        self.writer = ScratchWriter(lanes=lanes, data_width=data_width, addr_width=addr_width,
                                    max_commands=WRITER_COMMANDS, max_outstanding=tokens * WRITER_COMMANDS)
        command = matmul_command_layout(geometry.ports, addr_width, max_rows, self.max_blocks, max_tokens)
        super().__init__({
            "cmd": In(stream.Signature(command)),
            "weights_cmd": In(stream.Signature(weights_command_layout(command))),
            "done": Out(1),
            "act_wr_cmd": In(self.act.wr_cmd.signature.flip()),
            "act_q": In(self.act.q.signature.flip()),
            "act_scale": In(self.act.scale.signature.flip()),
            "act_written": Out(range(max_tokens + 1)),
            "weights": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)).array(geometry.ports),
            "res_axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)),
            "wr_axi": Out(axi_write_signature(addr_width=addr_width, data_width=data_width)),
            "error": Out(1), "weights_wait": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        T, L = self.tokens, self.lanes
        g = self.geometry
        act, ws, tlmm, dq, tr = self.act, self.streamer, self.tlmm, self.dequant, self.transpose
        rd, radd, wr = self.res_reader, self.res_add, self.writer
        for name, unit in (("act", act), ("streamer", ws), ("tlmm", tlmm), ("results", self.results),
                           ("dequant", dq), ("transpose", tr),
                           ("res_reader", rd), ("res_add", radd), ("writer", wr), ("gating", self.gating)):
            if unit is not None:
                m.submodules[name] = unit

        # -- fixed wiring --------------------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.act_wr_cmd), act.wr_cmd)
        wiring.connect(m, wiring.flipped(self.act_q), act.q)
        wiring.connect(m, wiring.flipped(self.act_scale), act.scale)
        m.d.comb += self.act_written.eq(act.written)
        wiring.connect(m, act.act, tlmm.act)
        wiring.connect(m, ws.codes, tlmm.codes)
        if self.results is not None:
            wiring.connect(m, tlmm.o, self.results.i)
            wiring.connect(m, self.results.o, dq.acc)
        else:
            wiring.connect(m, tlmm.o, dq.acc)
        # A skid buffer between Dequant and Transpose: the transpose's ready (which waits on its
        # range command) would otherwise run through Dequant's lane converters and pipeline into
        # the TLMM's advance and its block counter in one cycle (12 LUT levels at the kv260
        # settings).
        m.submodules.dq_buffer = dq_buffer = StreamBuffer(shape=dq.o.payload.shape())
        wiring.connect(m, dq.o, dq_buffer.i)
        wiring.connect(m, dq_buffer.o, tr.i)
        for p in range(g.ports):
            wiring.connect(m, ws.axi[p], wiring.flipped(self.weights[p]))
        wiring.connect(m, rd.axi, wiring.flipped(self.res_axi))
        wiring.connect(m, wr.axi, wiring.flipped(self.wr_axi))
        m.d.comb += self.error.eq(ws.error | rd.error | wr.error)

        # The current command, held for the whole projection.
        cmd = Signal.like(self.cmd.payload)
        busy = Signal()

        # With a residual, the transposed rows meet the residual rows in the adder; with a gate,
        # the gate rows' activation multiplies them; else they go straight to the writer. The
        # choice holds for the whole command.
        gating = self.gating
        # The second operand's rows are read ahead of the transpose's blocks into a credit FIFO
        # of OPERAND_COLUMNS column blocks (the reader's R data never wait, see CreditFifo).
        operand = CreditFifo(m, "operand_fifo", rd, OPERAND_COLUMNS * T * -(-self.block // L))
        h = stream.Signature(rd.o.payload.shape()).create()
        operand.output(m, h)
        m.d.comb += [radd.y.payload.eq(tr.o.payload), radd.h.payload.eq(h.payload)]
        if gating is not None:
            m.d.comb += [gating.up.payload.eq(tr.o.payload), gating.gate.payload.eq(h.payload)]
        with m.If(cmd.residual):
            m.d.comb += [radd.y.valid.eq(tr.o.valid), tr.o.ready.eq(radd.y.ready),
                         radd.h.valid.eq(h.valid), h.ready.eq(radd.h.ready)]
            wiring.connect(m, radd.o, wr.i)
        if gating is not None:
            with m.Elif(cmd.gate):
                m.d.comb += [gating.up.valid.eq(tr.o.valid), tr.o.ready.eq(gating.up.ready),
                             gating.gate.valid.eq(h.valid), h.ready.eq(gating.gate.ready)]
                wiring.connect(m, gating.o, wr.i)
        with m.Else():
            wiring.connect(m, tr.o, wr.i)

        # -- weight commands: straight to the streamer, passes = ceil(tokens / T) -------------------
        w = self.weights_cmd.payload
        m.d.comb += [
            ws.proj.payload.base.eq(w.base), ws.proj.payload.blocks.eq(w.blocks), ws.proj.payload.rows.eq(w.rows),
            ws.proj.payload.tile_rows.eq(w.tile_rows), ws.proj.payload.passes.eq((w.tokens + T - 1) // T),
            ws.proj.valid.eq(self.weights_cmd.valid), self.weights_cmd.ready.eq(ws.proj.ready),
        ]

        # -- command issue -------------------------------------------------------------------------
        # One cmd starts two independent issues: the act buffer's replay, and (per act buffer
        # scales beat = per tile and pass) the TLMM and transpose commands. Each is sent once;
        # `*_sent` records it.
        rd_sent = Signal()
        passes = Signal(range(self.max_tokens + 1))
        m.d.comb += self.cmd.ready.eq(~busy)
        # The TLMM wants a lane word the weight buffer does not have yet (STALL_LO/HI).
        m.d.comb += self.weights_wait.eq(busy & tlmm.codes.ready & ~tlmm.codes.valid)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cmd.eq(self.cmd.payload), busy.eq(1), rd_sent.eq(0),
                         passes.eq((self.cmd.payload.tokens + T - 1) // T)]

        m.d.comb += [
            act.rd_cmd.payload.blocks.eq(cmd.blocks), act.rd_cmd.payload.tokens.eq(cmd.tokens),
            act.rd_cmd.payload.tiles.eq(cmd.tiles),
            act.rd_cmd.valid.eq(busy & ~rd_sent),
        ]
        with m.If(act.rd_cmd.valid & act.rd_cmd.ready):
            m.d.sync += rd_sent.eq(1)

        # Per scales beat: (tile, pass) counters give the range's rows and token offset.
        tile = Signal(8)
        pass_ = Signal(range(self.max_tokens + 1))
        tile_rows_now = Signal(unsigned(self.max_rows.bit_length()))
        m.d.comb += tile_rows_now.eq(cmd.tile_rows)
        with m.If(tile == cmd.tiles - 1):
            m.d.comb += tile_rows_now.eq(cmd.rows - (cmd.tiles - 1) * cmd.tile_rows)
        tl_sent, tr_sent = Signal(), Signal()
        scales = act.scales
        # Ranges handed to the transpose, waiting for their blocks: (row offset, token offset,
        # tokens, rows) in order.
        range_layout = data.StructLayout({"row0": unsigned(16), "token0": unsigned(ROWS_WIDTH),
                                          "tokens": unsigned(T.bit_length()), "rows": unsigned(16)})
        # Unbuffered, so a range written is visible (level) in the next cycle, when the tile counter
        # that says "all ranges issued" moves too.
        m.submodules.ranges = ranges = fifo.SyncFIFO(width=range_layout.size, depth=4)
        # the same ranges for the operand reader, which walks their column blocks ahead
        m.submodules.operand_ranges = operand_ranges = fifo.SyncFIFO(width=range_layout.size, depth=4)
        m.d.comb += [
            tlmm.cmd.payload.blocks.eq(cmd.blocks), tlmm.cmd.payload.rows.eq(tile_rows_now),
            tlmm.cmd.payload.w_mult.eq(cmd.w_mult), tlmm.cmd.payload.d_x.eq(scales.payload.d_x),
            tlmm.cmd.payload.tokens.eq(scales.payload.tokens),
            tlmm.cmd.valid.eq(scales.valid & ~tl_sent),
            tr.cmd.payload.tokens.eq(scales.payload.tokens),
            tr.cmd.valid.eq(scales.valid & ~tr_sent & ranges.w_rdy & operand_ranges.w_rdy),
        ]
        new_range = Signal(range_layout)
        m.d.comb += [new_range.row0.eq(tile * cmd.tile_rows), new_range.token0.eq(pass_ * T),
                     new_range.tokens.eq(scales.payload.tokens), new_range.rows.eq(tile_rows_now),
                     ranges.w_data.eq(new_range), ranges.w_en.eq(tr.cmd.valid & tr.cmd.ready),
                     operand_ranges.w_data.eq(new_range), operand_ranges.w_en.eq(tr.cmd.valid & tr.cmd.ready)]
        tl_done = tl_sent | (tlmm.cmd.valid & tlmm.cmd.ready)
        tr_done = tr_sent | (tr.cmd.valid & tr.cmd.ready)
        m.d.comb += scales.ready.eq(tl_done & tr_done)
        with m.If(scales.valid & scales.ready):
            m.d.sync += [tl_sent.eq(0), tr_sent.eq(0)]
            with m.If(pass_ == passes - 1):
                m.d.sync += [pass_.eq(0), tile.eq(tile + 1)]
            with m.Else():
                m.d.sync += pass_.eq(pass_ + 1)
        with m.Else():
            with m.If(tlmm.cmd.valid & tlmm.cmd.ready):
                m.d.sync += tl_sent.eq(1)
            with m.If(tr.cmd.valid & tr.cmd.ready):
                m.d.sync += tr_sent.eq(1)

        # -- per block: the writer's column-block commands ------------------------------------------
        second = cmd.residual | cmd.gate if gating is not None else cmd.residual    # a second operand
        current = Signal(range_layout)
        m.d.comb += current.eq(ranges.r_data)
        block_rows_seen = Signal(16)
        blk = tr.blocks

        def column_block(rng, row0, rows):
            """(byte offset, row bytes) of the column block of ``rows`` rows from row ``row0`` of
            range ``rng``: T token rows of whole L-lane beats, ``row_stride`` apart."""
            return (rng.row0 + row0) * 4 + rng.token0 * cmd.row_stride, ((rows + L - 1) // L) * (4 * L)

        wr_offset, wr_bytes = column_block(current, blk.payload.row0, blk.payload.rows)
        m.d.comb += [
            wr.cmd.payload.base.eq(cmd.dst + wr_offset), wr.cmd.payload.rows.eq(current.tokens),
            wr.cmd.payload.row_bytes.eq(wr_bytes), wr.cmd.payload.row_stride.eq(cmd.row_stride),
            wr.cmd.valid.eq(blk.valid & ranges.r_rdy),
            blk.ready.eq(ranges.r_rdy & wr.cmd.ready),
        ]
        issued = Signal(ROWS_WIDTH)          # column blocks handed to the writer
        acked = Signal(ROWS_WIDTH)           # and acknowledged (its done pulses)
        with m.If(blk.valid & blk.ready):
            m.d.sync += issued.eq(issued + 1)
            with m.If(block_rows_seen + blk.payload.rows == current.rows):
                m.d.comb += ranges.r_en.eq(1)
                m.d.sync += block_rows_seen.eq(0)
            with m.Else():
                m.d.sync += block_rows_seen.eq(block_rows_seen + blk.payload.rows)
        with m.If(wr.done):
            m.d.sync += acked.eq(acked + 1)

        # -- the operand reader: the same column blocks (``block`` rows of a range, the last one
        # shorter), read as soon as the credit FIFO has room for them --------------------------------
        ahead = Signal(range_layout)
        m.d.comb += ahead.eq(operand_ranges.r_data)
        col = Signal(16)                     # the range's rows before this column block
        col_rows = Signal(16)
        m.d.comb += col_rows.eq(ahead.rows - col)
        with m.If(ahead.rows - col > self.block):
            m.d.comb += col_rows.eq(self.block)
        col_beats = Signal(range(T * -(-self.block // L) + 1))
        m.d.comb += col_beats.eq(ahead.tokens * ((col_rows + L - 1) // L))
        col_last = col + col_rows == ahead.rows
        rd_offset, rd_bytes = column_block(ahead, col, col_rows)
        m.d.comb += [
            rd.cmd.payload.base.eq(cmd.res + rd_offset), rd.cmd.payload.rows.eq(ahead.tokens),
            rd.cmd.payload.row_bytes.eq(rd_bytes), rd.cmd.payload.row_stride.eq(cmd.row_stride),
            rd.cmd.valid.eq(operand_ranges.r_rdy & second & operand.room(col_beats)),
        ]
        with m.If(rd.cmd.valid & rd.cmd.ready):
            m.d.comb += operand.issued.eq(col_beats)
            m.d.sync += col.eq(Mux(col_last, 0, col + self.block))
            m.d.comb += operand_ranges.r_en.eq(col_last)
        with m.If(operand_ranges.r_rdy & ~second):     # no operand: the ranges are only passed over
            m.d.comb += operand_ranges.r_en.eq(1)

        # -- completion: every range issued and drained, every block written -----------------------
        with m.If(busy & (tile == cmd.tiles) & (ranges.level == 0) & (issued == acked) & ~wr.done):
            m.d.comb += self.done.eq(1)
            m.d.sync += [busy.eq(0), tile.eq(0), issued.eq(0), acked.eq(0)]
        return m
