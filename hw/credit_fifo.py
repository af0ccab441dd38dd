"""A FIFO behind a ScratchReader that never makes the reader's R channel wait."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, Signal
from amaranth.lib import fifo

from .act_mover import ScratchReader
from .pipeline import f32_vec

__all__ = ["CreditFifo"]


class CreditFifo:
    """A FIFO behind a ScratchReader whose commands are issued only when the FIFO has room for
    all of their beats (``reserved`` counts beats asked for and not yet popped), so the reader's
    R data never wait: a manager sharing an HP port with others (one ID, data in AR order
    through :mod:`~tellme.hw.axi_arbiter`) must not hold the R channel while its consumer waits
    for another manager's data.

    Built into the caller's module ``m`` as submodule ``name`` (``depth`` beats of
    ``f32_vec(reader.lanes)``, block or distributed RAM). The caller issues a reader command only
    while :meth:`room` of its beats, drives ``issued`` with the beats of a command taken in that
    cycle, and takes the beats through :meth:`output`."""

    def __init__(self, m: Module, name: str, reader: ScratchReader, depth: int):
        self.depth = depth
        self.fifo = fifo.SyncFIFOBuffered(width=Shape.cast(f32_vec(reader.lanes)).width, depth=depth)
        m.submodules[name] = self.fifo
        m.d.comb += [self.fifo.w_data.eq(reader.o.payload), self.fifo.w_en.eq(reader.o.valid),
                     reader.o.ready.eq(self.fifo.w_rdy)]
        self.reserved = Signal(range(depth + 1), name=f"{name}_reserved")
        self.issued = Signal(range(depth + 1), name=f"{name}_issued")    # beats of a command taken now
        self.pop = Signal(name=f"{name}_pop")
        m.d.sync += self.reserved.eq(self.reserved + self.issued - self.pop)

    def room(self, beats) -> Signal:
        return self.reserved + beats <= self.depth

    def output(self, m: Module, out) -> None:
        """Drive stream ``out`` (an f32_vec stream: ``valid``, ``payload``; ``ready`` read)."""
        m.d.comb += [out.valid.eq(self.fifo.r_rdy), out.payload.eq(self.fifo.r_data),
                     self.fifo.r_en.eq(out.ready), self.pop.eq(self.fifo.r_rdy & out.ready)]
