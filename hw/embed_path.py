"""The EMBED step's datapath: token ids from the I/O region -> rows of the embedding table, flushed
to zero -> the residual array ``h0``."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .act_mover import ROW_BYTES_WIDTH, ROW_STRIDE_WIDTH, ScratchReader, ScratchWriter
from .axi import check_data_width
from .compose import axi_ports, issue_once, silence_refused
from .stream_switch import Ftz

__all__ = ["EmbedPath", "embed_command_layout"]


def embed_command_layout(addr_width: int, max_tokens: int) -> data.StructLayout:
    """``tokens`` token ids (uint32 little-endian, one per token) at ``ids``; the embedding table
    at ``table`` (row ``r`` at ``table + r * row_bytes``, the image section ``embed``); the
    destination rows at ``dst + t * row_stride`` (absolute byte addresses)."""
    return data.StructLayout({
        "ids": unsigned(addr_width), "tokens": unsigned(max_tokens.bit_length()), "table": unsigned(addr_width),
        "dst": unsigned(addr_width), "row_stride": unsigned(ROW_STRIDE_WIDTH),
    })


class EmbedPath(wiring.Component):
    """h0[t] = ``fp32.ftz(embed[ids[t]])`` for ``tokens`` tokens, bit for bit: the EMBED step of
    the sequencer program.

    A ``cmd`` beat reads the ids (through ``ids_axi``, as one row of whole beats: the I/O region's
    ids area is a page, so reading up to the next beat boundary stays inside it) into a FIFO that
    holds every id of a call; then, per id, one ScratchReader command reads row ``id`` of the
    table (``row_bytes`` bytes at ``table + id * row_bytes``, through ``rows_axi``); the rows pass
    through :class:`~tellme.hw.stream_switch.Ftz` (subnormals to signed zero, NaN to the quiet
    NaN) into one ScratchWriter command writing ``dst + t * row_stride`` (``wr_axi``). ``done``
    pulses when every write is acknowledged; the next ``cmd`` is taken after that.

    Ids are taken modulo the next power of two of ``vocab`` (their low bits address the table);
    an id not below ``vocab`` pulses ``bad_id`` as its row read is issued (the top ends the call
    with ``ERR_CODE.BAD_TOKEN_ID``; the host's driver refuses such ids before START). ``id * row_bytes`` is a sum of shifted ids, one
    per set bit of ``row_bytes`` (a constant of the design: 10240 bytes for hidden 2560 is two
terms, one adder).

    Shared ports: the ids FIFO holds a call's ids, so the ids read never waits for the row reads
    and both readers may share one AXI port (:class:`~tellme.hw.axi_arbiter.AxiReadArbiter`).

    Ports: ``cmd`` (In stream, :func:`embed_command_layout`), ``done`` (Out 1, one-cycle pulse),
    ``ids_axi``, ``rows_axi`` (AXI4 read managers), ``wr_axi`` (AXI4 write manager), ``error``
    (Out 1, sticky: an AXI error response on any of them), ``bad_id`` (Out 1, a one-cycle pulse
    per row read of an id >= ``vocab``).

    Constraints: ``ids``, ``table``, ``dst``, ``row_stride`` aligned to the AXI beat; ``row_bytes``
    a multiple of the AXI beat and of ``4 lanes`` (:func:`tellme.gen.program.check_datapath`).

    Latency: the ids' read latency, then each row's. Throughput: one row command per id (about
    3 cycles of AR issue each, up to 4 rows in flight), the rows streaming at one beat per cycle
    on the narrower side; the writer streams behind them.

    Cost: two ScratchReaders, a ScratchWriter, an ids FIFO of ``max_tokens`` ids (rounded up to
    whole beats), the lane counter and the address adder tree, ``lanes`` Ftz lanes.

    Parameters (keyword-only): ``lanes`` L, ``row_bytes`` (bytes of an embedding row, 4 x
    hidden), ``vocab`` (rows of the table), ``max_tokens``, ``data_width``, ``addr_width``.
    """

    def __init__(self, *, lanes: int, row_bytes: int, vocab: int, max_tokens: int, data_width: int = 128,
                 addr_width: int = 40):
        try:
            for name, value in (("lanes", lanes), ("row_bytes", row_bytes), ("vocab", vocab),
                                ("max_tokens", max_tokens)):
                check_positive_int(name, value)
            check_data_width(data_width)
            movers = dict(lanes=lanes, data_width=data_width, addr_width=addr_width)
            self.ids_reader = ScratchReader(**movers)
            self.rows_reader = ScratchReader(**movers)
            self.writer = ScratchWriter(**movers)
            self.row_unit = self.writer.row_unit
            if row_bytes % self.row_unit or row_bytes >> ROW_BYTES_WIDTH:
                raise ValueError(f"row_bytes must be a multiple of {self.row_unit} bytes (whole AXI beats and "
                                 f"stream beats) below 2^{ROW_BYTES_WIDTH}, got {row_bytes}")
        except ValueError:
            silence_refused(self)
            raise
        self.lanes, self.row_bytes, self.vocab, self.max_tokens = lanes, row_bytes, vocab, max_tokens
        self.data_width, self.addr_width = data_width, addr_width
        self.ftz = Ftz(lanes=lanes)
        super().__init__({
            "cmd": In(stream.Signature(embed_command_layout(addr_width, max_tokens))),
            "done": Out(1),
            **axi_ports(reads=("ids_axi", "rows_axi"), writes=("wr_axi",), addr_width=addr_width,
                        data_width=data_width),
            "error": Out(1), "bad_id": Out(1),
        })

    @property
    def ids_beats(self) -> int:
        """Stream beats of the ids read of ``max_tokens`` tokens (whole AXI and stream beats)."""
        unit = self.row_unit
        return -(-4 * self.max_tokens // unit) * unit // (4 * self.lanes)

    def elaborate(self, platform):
        m = Module()
        L, unit = self.lanes, self.row_unit
        ids_rd, rows_rd, wr, ftz = self.ids_reader, self.rows_reader, self.writer, self.ftz
        for name, sub in (("ids_reader", ids_rd), ("rows_reader", rows_rd), ("writer", wr), ("ftz", ftz)):
            m.submodules[name] = sub
        wiring.connect(m, ids_rd.axi, wiring.flipped(self.ids_axi))
        wiring.connect(m, rows_rd.axi, wiring.flipped(self.rows_axi))
        wiring.connect(m, wr.axi, wiring.flipped(self.wr_axi))
        wiring.connect(m, rows_rd.o, ftz.i)
        wiring.connect(m, ftz.o, wr.i)
        m.d.comb += self.error.eq(ids_rd.error | rows_rd.error | wr.error)

        # -- ids: one row of whole beats into a FIFO deep enough for a call
        ids = fifo.SyncFIFOBuffered(width=32 * L, depth=self.ids_beats)
        m.submodules.ids = ids
        m.d.comb += [ids.w_data.eq(ids_rd.o.payload.data), ids.w_en.eq(ids_rd.o.valid),
                     ids_rd.o.ready.eq(ids.w_rdy)]

        cmd = Signal.like(self.cmd.payload)
        t = Signal(range(self.max_tokens + 1))          # ids issued as row reads
        busy, ids_sent, wr_sent, written = Signal(), Signal(), Signal(), Signal()
        m.d.comb += self.cmd.ready.eq(~busy)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cmd.eq(self.cmd.payload), busy.eq(1), ids_sent.eq(0), wr_sent.eq(0), written.eq(0), t.eq(0)]
        ids_bytes = Signal(ROW_BYTES_WIDTH)                 # 4 tokens rounded up to whole beats
        if unit & (unit - 1):
            m.d.comb += ids_bytes.eq((cmd.tokens * 4 + (unit - 1)) // unit * unit)
        else:
            shift = unit.bit_length() - 1
            m.d.comb += ids_bytes.eq(((cmd.tokens * 4 + (unit - 1)) >> shift) << shift)
        m.d.comb += [ids_rd.cmd.payload.base.eq(cmd.ids), ids_rd.cmd.payload.rows.eq(1),
                     ids_rd.cmd.payload.row_bytes.eq(ids_bytes), ids_rd.cmd.payload.row_stride.eq(0)]
        issue_once(m, ids_rd.cmd, offer=busy, sent=ids_sent)
        m.d.comb += [wr.cmd.payload.base.eq(cmd.dst), wr.cmd.payload.rows.eq(cmd.tokens),
                     wr.cmd.payload.row_bytes.eq(self.row_bytes), wr.cmd.payload.row_stride.eq(cmd.row_stride)]
        issue_once(m, wr.cmd, offer=busy, sent=wr_sent)
        with m.If(wr.done):
            m.d.sync += written.eq(1)

        # -- per id: a row command; a beat of ids leaves the FIFO after its last id (or unused)
        lane = Signal(range(L))
        id_bits = max(1, (self.vocab - 1).bit_length())
        full_id = ids.r_data.word_select(lane, 32)
        token_id = full_id[:id_bits]
        offset = sum(token_id << b for b in range(self.row_bytes.bit_length()) if self.row_bytes >> b & 1)
        more = Signal()
        m.d.comb += [
            more.eq(busy & (t != cmd.tokens)),
            rows_rd.cmd.payload.base.eq(cmd.table + offset), rows_rd.cmd.payload.rows.eq(1),
            rows_rd.cmd.payload.row_bytes.eq(self.row_bytes), rows_rd.cmd.payload.row_stride.eq(0),
            rows_rd.cmd.valid.eq(more & ids.r_rdy),
        ]
        issue = Signal()
        m.d.comb += issue.eq(rows_rd.cmd.valid & rows_rd.cmd.ready)
        m.d.comb += self.bad_id.eq(issue & (full_id >= self.vocab))
        with m.If(issue):
            m.d.sync += [t.eq(t + 1), lane.eq(lane + 1)]
            if L & (L - 1):
                with m.If(lane == L - 1):
                    m.d.sync += lane.eq(0)
        # the beat is done after its last lane, after the call's last id, or when it holds no id
        m.d.comb += ids.r_en.eq((issue & ((lane == L - 1) | (t == cmd.tokens - 1))) | (busy & ~more))
        with m.If(ids.r_en & ids.r_rdy):
            m.d.sync += lane.eq(0)

        # -- completion: every row written, every id beat read and consumed
        with m.If(busy & ~more & wr_sent & (written | wr.done) & ids_sent & ~ids_rd.busy & ~ids.r_rdy):
            m.d.comb += self.done.eq(1)
            m.d.sync += busy.eq(0)
        return m
