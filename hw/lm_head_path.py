"""The LM_HEAD step's datapath: the final token's x_q and d_x (int8 head) or its normalised
float32 x (fp16 head), from the shared NORM_QUANT path (final_norm) -> LmHead -> logits to the
I/O region, argmax held for RESULT_TOKEN."""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .act_mover import ScratchWriter
from .compose import axi_ports, issue_once
from .lm_head import LmHead, lm_head_command_layout
from .pipeline import f32_vec, q8_vec

__all__ = ["LmHeadPath", "lm_head_path_command_layout"]


def lm_head_path_command_layout(*, addr_width: int, max_rows: int, max_cols: int) -> data.StructLayout:
    """:func:`~tellme.hw.lm_head.lm_head_command_layout` (``stripe_base``, ``stripe_bytes``,
    ``rows_base``, ``scales_base``, ``rows`` = vocab, ``cols`` = hidden) and ``logits``, the
    absolute byte address the logits go to."""
    head = lm_head_command_layout(addr_width=addr_width, max_rows=max_rows, max_cols=max_cols)
    return data.StructLayout({**{name: field.shape for name, field in head}, "logits": unsigned(addr_width)})


class LmHeadPath(wiring.Component):
    """logits = ``golden.lm_head(x_q, d_x, head_q, head_scale)`` (int8 head) or
    ``golden.lm_head_fp16(x, head_f16, lanes)`` (fp16 head) of one token written to DDR, and
    their argmax (the first index of the maximum): the LM_HEAD step of the sequencer program
    (the final RMSNorm and quantiser are the NORM_QUANT path's, whose ``q`` and ``scale``
    streams the top level routes to ``x`` and ``scale`` here; for the fp16 head its float
    ``y`` beside ``q`` goes to ``x`` and there is no ``scale``).

    A ``cmd`` beat starts one :class:`~tellme.hw.lm_head.LmHead` call ``{stripe_base,
    stripe_bytes, rows_base, scales_base, rows, cols}`` and one ScratchWriter command writing its logits to ``logits``: ``rows``
    float32, followed by +0 up to whole AXI beats and ``lanes``-float beats (LmHead pads the final
    beat of ``lanes`` logits with +0; this path adds +0 beats when an AXI beat holds several of
    them). The I/O region's logits area is page-sized, so the padding fits. ``token`` takes the
    argmax when LmHead offers it. ``done`` pulses once every logits write is acknowledged (and
    the token is known); ``token`` then holds the argmax until the next ``cmd`` is taken (which
    happens after ``done``).

    Ports: ``cmd`` (In stream, :func:`lm_head_path_command_layout`; ``scales_base`` unused by the
    fp16 head), ``x`` (In stream, ``q8_vec(lanes)``, or ``f32_vec(lanes)`` for fp16,
    ceil(cols / lanes) beats, ``last`` on the final one), ``scale`` (int8 only: In stream,
    ``unsigned(32)``, d_x as binary32 bits), ``done`` (Out 1, one-cycle pulse), ``token`` (Out
    32), ``head_axi`` (AXI4 read manager: LmHead's; an array of ``ports``, one per HP port, when
    ``ports`` > 1), ``wr_axi`` (AXI4 write manager), ``error``
    (Out 1, sticky: an AXI error response on either).

    Constraints (:meth:`tellme.hw.lm_head.LmHead.command`): ``rows_base`` and ``scales_base``
    aligned to LmHead's logical beat, ``stripe_base`` and ``logits`` to the AXI beat, 1 <= ``rows`` <= ``max_rows``, 1 <= ``cols`` <=
    ``max_cols``.

    Latency and throughput: LmHead's (one AXI beat of head bytes per port and cycle), then the logits'
    write-response latency; the logits are written as they are formed.

    Cost: LmHead, a ScratchWriter, a 32-bit token register, the padding counter.

    Parameters (keyword-only): ``lanes`` L, ``max_rows`` (largest vocab), ``max_cols`` (widest
    hidden), ``weight_format`` ("int8" or "fp16"), ``scale_beats``, ``ports`` and
    ``aligned_rows`` (LmHead's), ``data_width``, ``addr_width``.
    """

    def __init__(self, *, lanes: int, max_rows: int, max_cols: int, weight_format: str = "int8",
                 scale_beats: int = 16, data_width: int = 128, addr_width: int = 40, ports: int = 1,
                 aligned_rows: bool = False):
        try:
            for name, value in (("lanes", lanes), ("max_rows", max_rows), ("max_cols", max_cols)):
                check_positive_int(name, value)
            self.head = LmHead(weight_format=weight_format, lanes=lanes, data_width=data_width, addr_width=addr_width, max_cols=max_cols,
                               max_rows=max_rows, scale_beats=scale_beats, ports=ports, aligned_rows=aligned_rows)
            self.writer = ScratchWriter(lanes=lanes, data_width=data_width, addr_width=addr_width)
        except ValueError:
            # no "never elaborated" warnings for a refused object and the units it made
            for unit in (self, *vars(self).values()):
                if isinstance(unit, Elaboratable):
                    unit._MustUse__silence = True
            raise
        self.lanes, self.max_rows, self.max_cols = lanes, max_rows, max_cols
        self.data_width, self.addr_width = data_width, addr_width
        #: Stream beats of logits per AXI beat (1 when a stream beat is at least an AXI beat).
        self.pad_unit = max(1, data_width // (32 * lanes))
        super().__init__({
            "cmd": In(stream.Signature(lm_head_path_command_layout(addr_width=addr_width, max_rows=max_rows,
                                                                   max_cols=max_cols))),
            "x": In(stream.Signature(f32_vec(lanes) if self.head.fp16 else q8_vec(lanes))),
            **({} if self.head.fp16 else {"scale": In(stream.Signature(unsigned(32)))}),
            "done": Out(1),
            "token": Out(32),
            "head_axi": self.head.signature.members["axi"],
            **axi_ports(writes=("wr_axi",), addr_width=addr_width, data_width=data_width),
            "error": Out(1),
        })

    def logits_bytes(self, rows: int) -> int:
        """Bytes the path writes for ``rows`` logits (+0 padded to whole beats)."""
        beats = -(-rows // self.lanes)
        return -(-beats // self.pad_unit) * self.pad_unit * 4 * self.lanes

    def elaborate(self, platform):
        m = Module()
        L, k = self.lanes, self.pad_unit
        head, wr = self.head, self.writer
        m.submodules.head, m.submodules.writer = head, wr
        if head.ports == 1:
            wiring.connect(m, head.axi, wiring.flipped(self.head_axi))
        else:
            for port in range(head.ports):
                wiring.connect(m, head.axi[port], wiring.flipped(self.head_axi[port]))
        wiring.connect(m, wr.axi, wiring.flipped(self.wr_axi))
        wiring.connect(m, wiring.flipped(self.x), head.x)
        if not head.fp16:
            wiring.connect(m, wiring.flipped(self.scale), head.scale)
        m.d.comb += self.error.eq(head.error | wr.error)

        cmd = Signal.like(self.cmd.payload)
        busy, head_sent, wr_sent, written, known = Signal(), Signal(), Signal(), Signal(), Signal()
        beats = Signal(range(-(-self.max_rows // L) + k))      # logits beats to write, padded
        m.d.comb += self.cmd.ready.eq(~busy)
        with m.If(self.cmd.valid & self.cmd.ready):
            p = self.cmd.payload
            # LmHead's ceil(rows / L) beats, rounded up to whole AXI beats (k a power of two)
            lm_beats = (p.rows + (L - 1)) // L if L & (L - 1) else (p.rows + (L - 1)) >> (L.bit_length() - 1)
            shift = k.bit_length() - 1
            m.d.sync += [cmd.eq(p), busy.eq(1), head_sent.eq(0), wr_sent.eq(0), written.eq(0), known.eq(0),
                         beats.eq(((lm_beats + (k - 1)) >> shift) << shift)]
        hc = head.cmd.payload
        m.d.comb += [hc.stripe_base.eq(cmd.stripe_base), hc.stripe_bytes.eq(cmd.stripe_bytes),
                     hc.rows_base.eq(cmd.rows_base), hc.scales_base.eq(cmd.scales_base), hc.rows.eq(cmd.rows),
                     hc.cols.eq(cmd.cols)]
        issue_once(m, head.cmd, offer=busy, sent=head_sent)
        m.d.comb += [wr.cmd.payload.base.eq(cmd.logits), wr.cmd.payload.rows.eq(1),
                     wr.cmd.payload.row_bytes.eq(beats * (4 * L)), wr.cmd.payload.row_stride.eq(0)]
        # the writer command follows the one-cycle computation of `beats`
        issue_once(m, wr.cmd, offer=busy, sent=wr_sent)
        with m.If(wr.done):
            m.d.sync += written.eq(1)

        # -- logits to the writer, then +0 beats up to a whole AXI beat
        if k == 1:
            wiring.connect(m, head.logits, wr.i)
        else:
            part = Signal(range(k))                     # stream beats of the current AXI beat written
            padding = Signal()                          # LmHead's final beat is written
            with m.If(padding):
                m.d.comb += [wr.i.valid.eq(part != 0), wr.i.payload.data.eq(0)]
            with m.Else():
                wiring.connect(m, head.logits, wr.i)
            with m.If(wr.i.valid & wr.i.ready):
                m.d.sync += part.eq(part + 1)               # k is a power of two: wraps to 0
                with m.If(~padding & head.logits.payload.last):
                    m.d.sync += padding.eq(1)
            with m.If(self.done):
                m.d.sync += [padding.eq(0), part.eq(0)]

        # -- the argmax
        m.d.comb += head.token.ready.eq(busy & ~known)
        with m.If(head.token.valid & head.token.ready):
            m.d.sync += [self.token.eq(head.token.payload), known.eq(1)]

        with m.If(busy & head_sent & wr_sent & (written | wr.done) & known):
            m.d.comb += self.done.eq(1)
            m.d.sync += busy.eq(0)
        return m
