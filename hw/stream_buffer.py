"""Registered stream buffer (skid buffer) for cutting timing paths between units."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, ShapeCastable, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamBuffer"]


class StreamBuffer(wiring.Component):
    """Registered two-entry skid buffer between two :mod:`amaranth.lib.stream` ports.

    Passes every beat from :attr:`i` to :attr:`o` unchanged and in order, and registers every
    signal on the way in both directions: ``o.valid`` and ``o.payload`` come from flip-flops, and
    so does ``i.ready``, which does not depend combinationally on ``o.ready``. Put one between
    two units to break the valid/payload path *and* the ready path that would otherwise chain
    through them.

    Timing:

    * latency: 1 cycle (a beat taken at one clock edge is offered on ``o`` in the next cycle);
    * throughput: 1 beat per cycle while ``o.ready`` stays high. When ``o`` stalls, the beat
      that was already accepted lands in the skid register and ``i.ready`` drops in the next
      cycle; after the stall ``o`` carries on without a bubble, and ``i.ready`` returns one cycle
      after the skid register empties (so ``i`` loses one cycle per stall, ``o`` none).

    Both ports obey the stream rules: a beat moves when valid and ready are both high; once
    valid is raised, valid and payload hold until the beat moves; valid never depends on ready
    (here nothing on ``o`` is combinational at all); ready does not even depend on valid.

    Cost: two payload registers (without reset, since a payload is meaningless while its valid
    is low), two valid flip-flops and one payload-wide 2:1 multiplexer.

    Parameters
    ----------
    shape : shape-castable
        Payload shape of both ports: a width (``int``), ``signed(n)``/``unsigned(n)``, or a
        :class:`~amaranth.lib.data.Layout` such as a ``StructLayout``. Must be at least 1 bit
        wide.

    Attributes
    ----------
    i : ``In(stream.Signature(shape))``
        Input stream.
    o : ``Out(stream.Signature(shape))``
        Output stream.
    """

    def __init__(self, *, shape):
        try:
            self._check_shape(shape)
        except ValueError:
            # The object exists already; keep Amaranth from also warning that it was never
            # elaborated.
            self._MustUse__silence = True
            raise
        self._shape = shape
        super().__init__({
            "i": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
        })

    @staticmethod
    def _check_shape(shape):
        # bool is an int subclass, and Shape.cast(True) would quietly mean a 1-bit payload.
        if isinstance(shape, bool):
            raise ValueError(f"StreamBuffer shape must be a shape-castable object, not {shape!r}")
        try:
            width = Shape.cast(shape).width
        except TypeError as error:
            raise ValueError(f"StreamBuffer shape must be a shape-castable object (a width, "
                             f"signed(n), or a data.Layout), not {shape!r}: {error}") from None
        if width == 0:
            # A 0-bit payload has no Verilog port and no data to buffer; such a token stream
            # only needs a valid/ready register pair, which this unit does not specialise for.
            raise ValueError(f"StreamBuffer shape must be at least 1 bit wide, not {shape!r}")

    @property
    def shape(self) -> Shape | ShapeCastable:
        """Payload shape of :attr:`i` and :attr:`o`, as given."""
        return self._shape

    def elaborate(self, platform):
        m = Module()

        # The output register and the skid register. While the output register holds a beat
        # that `o` is not taking, the beat accepted in the same cycle (i.ready was already high,
        # committed by a register) goes into the skid register instead of being lost.
        out_payload = Signal(self._shape, reset_less=True)
        skid_payload = Signal(self._shape, reset_less=True)
        skid_valid = Signal()

        m.d.comb += [
            self.o.payload.eq(out_payload),
            # Registered ready: accept whenever the skid register is free, whatever `o` does.
            self.i.ready.eq(~skid_valid),
        ]

        with m.If(~self.o.valid | self.o.ready):
            # The output register is empty or its beat moves at this edge: refill it, oldest
            # beat first. i.ready is low while the skid register is full, so at most one beat
            # arrives here at a time.
            with m.If(skid_valid):
                m.d.sync += [
                    out_payload.eq(skid_payload),
                    self.o.valid.eq(1),
                    skid_valid.eq(0),
                ]
            with m.Else():
                m.d.sync += self.o.valid.eq(self.i.valid)
                with m.If(self.i.valid):
                    m.d.sync += out_payload.eq(self.i.payload)
        with m.Elif(self.i.valid & self.i.ready):
            # `o` is stalled and holds its beat; park the newly accepted one.
            m.d.sync += [
                skid_payload.eq(self.i.payload),
                skid_valid.eq(1),
            ]

        return m
