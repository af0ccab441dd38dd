"""The NORM_QUANT step's datapath: scratch rows (and a gain row) from DDR -> NormQuant -> int8
vectors and their scales, for the act buffer (or the LM head)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .act_buffer import write_command_layout
from .act_mover import ROW_BYTES_WIDTH, ROW_STRIDE_WIDTH, ScratchReader
from .axi import axi_read_signature
from .norm_quant import NormQuant
from .pipeline import q8_vec

__all__ = ["NormQuantPath", "norm_quant_command_layout"]


def norm_quant_command_layout(addr_width: int, max_tokens: int) -> data.StructLayout:
    """``tokens`` rows of ``row_bytes`` bytes at ``src + t * row_stride`` (``width`` elements
    each; the rest of a row is +0 padding); with ``norm``, RMSNorm by the gain row at ``gain``
    (``inv_dim`` = fp32(1/width) and ``eps`` as binary32 bits) before the quantiser."""
    return data.StructLayout({
        "src": unsigned(addr_width), "tokens": unsigned(max_tokens.bit_length()),
        "row_bytes": unsigned(ROW_BYTES_WIDTH), "row_stride": unsigned(ROW_STRIDE_WIDTH),
        "width": unsigned(ROW_BYTES_WIDTH), "norm": unsigned(1), "gain": unsigned(addr_width),
        "inv_dim": unsigned(32), "eps": unsigned(32),
    })


class NormQuantPath(wiring.Component):
    """x_q, d_x = ``golden.rmsnorm_quantize(rows, gain, eps, L)`` (or ``golden.quantize(rows)``
    without ``norm``) for ``tokens`` scratch rows, bit for bit: the NORM_QUANT step of the
    sequencer program.

    A ``cmd`` beat issues a ScratchReader command for the rows, one for the gain row repeated
    per token (stride 0, only with ``norm``), one NormQuant command per token, and the act
    buffer's write command ``{inputs: width, tokens}`` on ``act_cmd``; the quantised vectors
    leave on ``q`` (``q8_vec(lanes)``, ``row_bytes / 4L`` beats per token) and their scales on
    ``scale``. The next ``cmd`` is taken once all of them are issued (the units' streams keep
    the order, so consecutive steps pipeline). Completion is the consumer's: the act buffer's
    ``written`` count.

    Ports: ``cmd`` (In stream, :func:`norm_quant_command_layout`), ``act_cmd`` (Out stream,
    :func:`~tellme.hw.act_buffer.write_command_layout`), ``q``, ``scale`` (Out streams), ``rows_axi``, ``gain_axi`` (AXI4
    read managers), ``error`` (sticky AXI error of either reader).

    Throughput: NormQuant's (about 3 n + 120 cycles per n-beat vector, ``hw/norm_quant.py``).
    Cost: NormQuant and two scratch readers.

    With ``float_out``, NormQuant's ``y`` (the float32 values behind each ``q`` beat, valid with
    it) comes out on ``y``, for the fp16 LM head.

    Parameters (keyword-only): ``lanes`` L, ``max_dim`` (widest row), ``max_tokens``,
    ``data_width``, ``addr_width``, ``float_out``.
    """

    def __init__(self, *, lanes: int, max_dim: int, max_tokens: int, data_width: int = 128, addr_width: int = 40,
                 float_out: bool = False):
        for name, value in (("lanes", lanes), ("max_dim", max_dim), ("max_tokens", max_tokens)):
            check_positive_int(name, value)
        self.lanes, self.max_dim, self.max_tokens, self.addr_width = lanes, max_dim, max_tokens, addr_width
        self.norm_quant = NormQuant(lanes=lanes, max_dim=max_dim, float_out=float_out)
        self.rows = ScratchReader(lanes=lanes, data_width=data_width, addr_width=addr_width)
        self.gains = ScratchReader(lanes=lanes, data_width=data_width, addr_width=addr_width)
        super().__init__({
            "cmd": In(stream.Signature(norm_quant_command_layout(addr_width, max_tokens))),
            "act_cmd": Out(stream.Signature(write_command_layout(max_dim, max_tokens))),
            "q": Out(stream.Signature(q8_vec(lanes))),
            "scale": Out(stream.Signature(unsigned(32))),
            "rows_axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)),
            "gain_axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)),
            "error": Out(1),
            **({"y": self.norm_quant.signature.members["y"]} if float_out else {}),
        })

    def elaborate(self, platform):
        m = Module()
        nq, rows, gains = self.norm_quant, self.rows, self.gains
        m.submodules.norm_quant, m.submodules.rows, m.submodules.gains = nq, rows, gains
        wiring.connect(m, rows.axi, wiring.flipped(self.rows_axi))
        wiring.connect(m, gains.axi, wiring.flipped(self.gain_axi))
        wiring.connect(m, rows.o, nq.x)
        m.d.comb += [nq.gain.payload.eq(gains.o.payload.data), nq.gain.valid.eq(gains.o.valid),
                     gains.o.ready.eq(nq.gain.ready)]
        wiring.connect(m, nq.q, wiring.flipped(self.q))
        wiring.connect(m, nq.scale, wiring.flipped(self.scale))
        if self.norm_quant.float_out:
            m.d.comb += self.y.eq(nq.y)
        m.d.comb += self.error.eq(rows.error | gains.error)

        cmd = Signal.like(self.cmd.payload)
        busy = Signal()
        rows_sent, gain_sent, act_sent = Signal(), Signal(), Signal()
        token_cmds = Signal(range(self.max_tokens + 1))   # NormQuant commands still to send
        m.d.comb += [
            rows.cmd.payload.base.eq(cmd.src), rows.cmd.payload.rows.eq(cmd.tokens),
            rows.cmd.payload.row_bytes.eq(cmd.row_bytes), rows.cmd.payload.row_stride.eq(cmd.row_stride),
            rows.cmd.valid.eq(busy & ~rows_sent),
            gains.cmd.payload.base.eq(cmd.gain), gains.cmd.payload.rows.eq(cmd.tokens),
            gains.cmd.payload.row_bytes.eq(cmd.row_bytes), gains.cmd.payload.row_stride.eq(0),
            gains.cmd.valid.eq(busy & cmd.norm & ~gain_sent),
            self.act_cmd.payload.inputs.eq(cmd.width), self.act_cmd.payload.tokens.eq(cmd.tokens),
            self.act_cmd.valid.eq(busy & ~act_sent),
            nq.cmd.payload.norm.eq(cmd.norm), nq.cmd.payload.inv_dim.eq(cmd.inv_dim),
            nq.cmd.payload.eps.eq(cmd.eps), nq.cmd.valid.eq(busy & (token_cmds != 0)),
        ]
        with m.If(rows.cmd.valid & rows.cmd.ready):
            m.d.sync += rows_sent.eq(1)
        with m.If(gains.cmd.valid & gains.cmd.ready):
            m.d.sync += gain_sent.eq(1)
        with m.If(self.act_cmd.valid & self.act_cmd.ready):
            m.d.sync += act_sent.eq(1)
        with m.If(nq.cmd.valid & nq.cmd.ready):
            m.d.sync += token_cmds.eq(token_cmds - 1)

        finished = rows_sent & (gain_sent | ~cmd.norm) & act_sent & (token_cmds == 0)
        with m.If(busy & finished):
            m.d.sync += busy.eq(0)
        m.d.comb += self.cmd.ready.eq(~busy)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cmd.eq(self.cmd.payload), busy.eq(1), rows_sent.eq(0), gain_sent.eq(0), act_sent.eq(0),
                         token_cmds.eq(self.cmd.payload.tokens)]
        return m
