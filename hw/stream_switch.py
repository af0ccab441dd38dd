"""Stream routing for the top level: a step selects which unit feeds which."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .pipeline import f32_vec

__all__ = ["StreamMux", "StreamDemux", "Ftz"]


class StreamMux(wiring.Component):
    """Connects input stream ``i[sel]`` to ``o``; the other inputs see ``ready`` low.

    Purely combinational: ``o.valid``/``o.payload`` are those of the selected input and its
    ``ready`` is ``o.ready``, so the stream rules hold end to end as long as ``sel`` changes
    only while no beat is offered or owed (the sequencer changes it between steps).

    Ports: ``sel`` (In, ``range(count)``), ``i[k]`` (In streams), ``o`` (Out stream).
    Latency 0; throughput one beat per cycle; cost: a ``count``-way multiplexer of the payload.

    Parameters (keyword-only): ``shape`` (the payload), ``count`` (inputs, >= 1).
    """

    def __init__(self, *, shape, count: int):
        check_positive_int("count", count)
        self.shape, self.count = shape, count
        super().__init__({"sel": In(range(count)), "i": In(stream.Signature(shape)).array(count),
                          "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        with m.Switch(self.sel):
            for k in range(self.count):
                with m.Case(k):
                    m.d.comb += [self.o.valid.eq(self.i[k].valid), self.o.payload.eq(self.i[k].payload),
                                 self.i[k].ready.eq(self.o.ready)]
        return m


class StreamDemux(wiring.Component):
    """Connects ``i`` to output stream ``o[sel]``; the other outputs see ``valid`` low.

    Ports: ``sel`` (In, ``range(count)``), ``i`` (In stream), ``o[k]`` (Out streams; every
    output carries the payload, only the selected one is valid). Latency 0; throughput one beat
    per cycle; cost: the ready multiplexer. ``sel`` changes only between steps (see
    :class:`StreamMux`).

    Parameters (keyword-only): ``shape`` (the payload), ``count`` (outputs, >= 1).
    """

    def __init__(self, *, shape, count: int):
        check_positive_int("count", count)
        self.shape, self.count = shape, count
        super().__init__({"sel": In(range(count)), "i": In(stream.Signature(shape)),
                          "o": Out(stream.Signature(shape)).array(count)})

    def elaborate(self, platform):
        m = Module()
        for k in range(self.count):
            m.d.comb += self.o[k].payload.eq(self.i.payload)
        with m.Switch(self.sel):
            for k in range(self.count):
                with m.Case(k):
                    m.d.comb += [self.o[k].valid.eq(self.i.valid), self.i.ready.eq(self.o[k].ready)]
        return m


class Ftz(wiring.Component):
    """``fp32.ftz`` lane by lane: ``o`` = ``i`` with every binary32 lane whose exponent field is
    zero replaced by a zero of the same sign and every NaN by the canonical quiet NaN
    ``0x7FC00000`` (the embedding rows enter the residual stream so); ``last`` passes through.

    Ports: ``i``, ``o`` (``f32_vec(lanes)`` streams). Combinational: latency 0, one beat per
    cycle; cost: per lane two exponent compares, a mantissa OR and a 32-bit 3:1 multiplexer.

    Parameters (keyword-only): ``lanes``.
    """

    def __init__(self, *, lanes: int):
        check_positive_int("lanes", lanes)
        self.lanes = lanes
        super().__init__({"i": In(stream.Signature(f32_vec(lanes))), "o": Out(stream.Signature(f32_vec(lanes)))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.o.valid.eq(self.i.valid), self.i.ready.eq(self.o.ready),
                     self.o.payload.last.eq(self.i.payload.last)]
        for k in range(self.lanes):
            x = self.i.payload.data[k]
            with m.If(x[23:31] == 0):
                m.d.comb += self.o.payload.data[k].eq(x & 0x8000_0000)
            with m.Elif((x[23:31] == 0xFF) & (x[:23] != 0)):
                m.d.comb += self.o.payload.data[k].eq(0x7FC0_0000)
            with m.Else():
                m.d.comb += self.o.payload.data[k].eq(x)
        return m
