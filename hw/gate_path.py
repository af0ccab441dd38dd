"""The GATE step's datapath: gate and up rows from DDR -> Gating (ReLU^2 or SiLU times up) -> the
result written back over the gate rows."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .act_mover import ROW_BYTES_WIDTH, ROW_STRIDE_WIDTH, ScratchReader, ScratchWriter
from .axi import check_data_width
from .compose import axi_ports, issue_once, silence_refused
from .gating import ACTIVATIONS, Gating
from .pipeline import f32_vec

__all__ = ["GatePath", "gate_command_layout"]


def gate_command_layout(addr_width: int, max_tokens: int) -> data.StructLayout:
    """``tokens`` rows of ``row_bytes`` bytes: gate row ``t`` at ``gate + t * row_stride``, up row
    ``t`` at ``up + t * row_stride`` (absolute byte addresses of token 0's rows); the result
    replaces the gate rows."""
    return data.StructLayout({
        "gate": unsigned(addr_width), "up": unsigned(addr_width), "tokens": unsigned(max_tokens.bit_length()),
        "row_bytes": unsigned(ROW_BYTES_WIDTH), "row_stride": unsigned(ROW_STRIDE_WIDTH),
    })


class GatePath(wiring.Component):
    """gate = ``golden.gated_activation(gate, up, act)`` for ``tokens`` scratch rows, bit for bit:
    the GATE step of the sequencer program (``act`` = ReLU^2 or SiLU, fixed at construction).

    A ``cmd`` beat reads the gate and up rows in chunks of at most ``chunk_beats`` stream beats
    (one ScratchReader command per chunk on each of ``gate_axi`` and ``up_axi``, the two readers
    always at the same chunk), passes them beat for beat through :class:`~tellme.hw.gating.Gating`
    and writes the result with one ScratchWriter command over the gate rows (same addresses; a
    row's bytes are read before its result is written). ``done`` pulses when every write is
    acknowledged; the next ``cmd`` is taken after that.

    Shared ports: each chunk is read only once both chunk FIFOs (``fifo_chunks`` chunks deep)
    have room reserved for it, so every R beat of either reader is taken as soon as it arrives,
    whatever the other reader does. The two readers (and any other manager) may therefore share
    one AXI port through :class:`~tellme.hw.axi_arbiter.AxiReadArbiter` without deadlock, although
    Gating needs their beats in pairs.

    Ports: ``cmd`` (In stream, :func:`gate_command_layout`), ``done`` (Out 1, one-cycle pulse),
    ``gate_axi``, ``up_axi`` (AXI4 read managers), ``wr_axi`` (AXI4 write manager), ``error``
    (Out 1, sticky: an AXI error response on any of them).

    Constraints (as the scratch movers'): ``gate``, ``up``, ``row_stride`` aligned to the AXI
    beat, ``row_bytes`` a multiple of both the AXI beat and ``4 lanes``.

    Latency: a command's first writes follow its first reads by Gating's latency (8 cycles for
    ReLU^2, 101 for SiLU, plus the lane split); ``done`` comes the write-response latency after
    the last write. Throughput: Gating's (``act_lanes`` elements per cycle) when the reads keep
    up: each chunk costs a few cycles of AR issue, and ``fifo_chunks`` chunks in flight per reader
    must cover the read latency (``chunk_beats * fifo_chunks`` beats per latency).

    Cost: Gating (``act_lanes`` activation units and multipliers), two ScratchReaders, a
    ScratchWriter, two FIFOs of ``chunk_beats * fifo_chunks`` beats of ``32 lanes + 1`` bits, the
    chunk walker (row and byte offset, two row addresses) and the credit counter.

    Parameters (keyword-only): ``lanes`` L, ``act`` ("relu2" or "silu"), ``act_lanes`` (Gating's,
    dividing L; default L), ``max_tokens``, ``chunk_beats`` (stream beats per read command,
    default 16; ``4 L chunk_beats`` must be whole AXI beats), ``fifo_chunks`` (default 2),
    ``data_width``, ``addr_width``.
    """

    def __init__(self, *, lanes: int, act: str, act_lanes: int | None = None, max_tokens: int,
                 chunk_beats: int = 16, fifo_chunks: int = 2, data_width: int = 128, addr_width: int = 40):
        try:
            for name, value in (("lanes", lanes), ("max_tokens", max_tokens), ("chunk_beats", chunk_beats),
                                ("fifo_chunks", fifo_chunks)):
                check_positive_int(name, value)
            check_data_width(data_width)
            if act not in ACTIVATIONS:
                raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
            if (4 * lanes * chunk_beats) % (data_width // 8):
                raise ValueError(f"chunk_beats {chunk_beats} x {lanes} lanes x 4 bytes must be whole "
                                 f"{data_width // 8}-byte AXI beats")
            self.lanes, self.act, self.max_tokens = lanes, act, max_tokens
            self.chunk_beats, self.fifo_chunks = chunk_beats, fifo_chunks
            self.data_width, self.addr_width = data_width, addr_width
            self.gating = Gating(lanes=lanes, act=act, act_lanes=act_lanes)
            self.act_lanes = self.gating.act_lanes
            movers = dict(lanes=lanes, data_width=data_width, addr_width=addr_width)
            self.gate_reader = ScratchReader(**movers)
            self.up_reader = ScratchReader(**movers)
            self.writer = ScratchWriter(**movers)
        except ValueError:
            silence_refused(self)
            raise
        super().__init__({
            "cmd": In(stream.Signature(gate_command_layout(addr_width, max_tokens))),
            "done": Out(1),
            **axi_ports(reads=("gate_axi", "up_axi"), writes=("wr_axi",), addr_width=addr_width,
                        data_width=data_width),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        vec_bytes = 4 * L
        chunk_bytes = self.chunk_beats * vec_bytes
        depth = self.chunk_beats * self.fifo_chunks
        gating, readers, wr = self.gating, (self.gate_reader, self.up_reader), self.writer
        m.submodules.gating, m.submodules.writer = gating, wr
        m.submodules.gate_reader, m.submodules.up_reader = readers
        wiring.connect(m, readers[0].axi, wiring.flipped(self.gate_axi))
        wiring.connect(m, readers[1].axi, wiring.flipped(self.up_axi))
        wiring.connect(m, wr.axi, wiring.flipped(self.wr_axi))
        wiring.connect(m, gating.o, wr.i)
        m.d.comb += self.error.eq(readers[0].error | readers[1].error | wr.error)

        # -- chunk FIFOs between the readers and Gating, with their free room in bytes (credit:
        # reserved when a chunk is issued, returned per beat Gating takes; with act_lanes < lanes
        # Gating may take a gate beat and its up beat in different cycles)
        width = f32_vec(L).size
        credits, reserve, size = [], Signal(), Signal(ROW_BYTES_WIDTH)
        for name, reader, port in (("gate", readers[0], gating.gate), ("up", readers[1], gating.up)):
            q = fifo.SyncFIFOBuffered(width=width, depth=depth)
            m.submodules[f"{name}_fifo"] = q
            m.d.comb += [q.w_data.eq(reader.o.payload), q.w_en.eq(reader.o.valid), reader.o.ready.eq(q.w_rdy),
                         port.payload.eq(q.r_data), port.valid.eq(q.r_rdy), q.r_en.eq(port.ready)]
            credit = Signal(range(depth * vec_bytes + 1), init=depth * vec_bytes, name=f"{name}_credit")
            m.d.sync += credit.eq(credit + Mux(port.valid & port.ready, vec_bytes, 0) - Mux(reserve, size, 0))
            credits.append(credit)

        # -- the command
        cmd = Signal.like(self.cmd.payload)
        busy, wr_sent, written = Signal(), Signal(), Signal()
        m.d.comb += [
            wr.cmd.payload.base.eq(cmd.gate), wr.cmd.payload.rows.eq(cmd.tokens),
            wr.cmd.payload.row_bytes.eq(cmd.row_bytes), wr.cmd.payload.row_stride.eq(cmd.row_stride),
        ]
        issue_once(m, wr.cmd, offer=busy, sent=wr_sent)
        with m.If(wr.done):
            m.d.sync += written.eq(1)

        # -- chunk walker: reserve room in both FIFOs, then one command per reader
        t = Signal(range(self.max_tokens + 1))
        offset = Signal(ROW_BYTES_WIDTH)                 # byte offset of the chunk in its row
        gate_row, up_row = Signal(self.addr_width), Signal(self.addr_width)
        rest = Signal(ROW_BYTES_WIDTH)
        # `size`: bytes of the chunk being issued
        m.d.comb += [rest.eq(cmd.row_bytes - offset), size.eq(Mux(rest < chunk_bytes, rest, chunk_bytes))]
        pending = Signal(2)                              # reader commands of the chunk still to send
        for k, (reader, row) in enumerate(zip(readers, (gate_row, up_row))):
            m.d.comb += [reader.cmd.payload.base.eq(row + offset), reader.cmd.payload.rows.eq(1),
                         reader.cmd.payload.row_bytes.eq(size), reader.cmd.payload.row_stride.eq(0),
                         reader.cmd.valid.eq(pending[k])]
        taken = [readers[k].cmd.valid & readers[k].cmd.ready for k in range(2)]

        m.d.comb += self.cmd.ready.eq(~busy)
        with m.FSM(name="walk"):
            with m.State("IDLE"):
                with m.If(self.cmd.valid):
                    p = self.cmd.payload
                    m.d.sync += [cmd.eq(p), busy.eq(1), wr_sent.eq(0), written.eq(0), t.eq(0), offset.eq(0),
                                 gate_row.eq(p.gate), up_row.eq(p.up)]
                    m.next = "RESERVE"
            with m.State("RESERVE"):
                with m.If((t == cmd.tokens) | (cmd.row_bytes == 0)):
                    m.next = "FINISH"
                with m.Elif((credits[0] >= size) & (credits[1] >= size)):
                    m.d.comb += reserve.eq(1)
                    m.d.sync += pending.eq(0b11)
                    m.next = "SEND"
            with m.State("SEND"):
                for k in range(2):
                    with m.If(taken[k]):
                        m.d.sync += pending[k].eq(0)
                all_sent = Signal()
                m.d.comb += all_sent.eq(((~pending[0]) | taken[0]) & ((~pending[1]) | taken[1]))
                with m.If(all_sent):
                    with m.If(size == rest):
                        m.d.sync += [offset.eq(0), t.eq(t + 1), gate_row.eq(gate_row + cmd.row_stride),
                                     up_row.eq(up_row + cmd.row_stride)]
                    with m.Else():
                        m.d.sync += offset.eq(offset + size)
                    m.next = "RESERVE"
            with m.State("FINISH"):
                with m.If(wr_sent & (written | wr.done)):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += busy.eq(0)
                    m.next = "IDLE"
        return m
