"""Ping-pong bank bookkeeping: which of two banks hold data, and which one the write side fills."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PingPong"]


class PingPong(wiring.Component):
    """Full/free state of two banks (0 and 1) between a write side that fills them in turn and a
    read side that releases them, for double-buffered memories (the TLMM tables, the weight
    buffer).

    The write side fills bank :attr:`wbank`, only while :attr:`wfree`; a pulse on :attr:`filled`
    marks that bank full and moves :attr:`wbank` to the other bank. The read side uses a bank while
    its :attr:`full` bit is set and pulses that bit of :attr:`release` when done with it (the read
    side keeps its own bank pointer: when it moves on and when it releases may differ, as in the
    TLMM engine, whose pipeline still reads a bank after taking its last lane word).

    Timing:

    * latency: 1 cycle (a bank filled or released at one clock edge shows in :attr:`full` and
      :attr:`wfree` from the next cycle);
    * throughput: a bank may be filled and the other one released in the same cycle; a bank
      released in the cycle it is filled stays empty (release wins).

    Cost: three flip-flops and a few LUTs.

    Attributes
    ----------
    filled : ``In(1)``
        One-cycle pulse: the write side has completed bank :attr:`wbank`.
    release : ``In(2)``
        One-cycle pulse per bank: the read side is done with it.
    wbank : ``Out(1)``
        The bank the write side fills (registered; flips on :attr:`filled`).
    wfree : ``Out(1)``
        Bank :attr:`wbank` holds no data (combinational from the registers).
    full : ``Out(2)``
        Bit b: bank b holds data the read side has not released (registered).
    """

    def __init__(self):
        super().__init__({
            "filled": In(1),
            "release": In(2),
            "wbank": Out(1),
            "wfree": Out(1),
            "full": Out(2),
        })

    def elaborate(self, platform):
        m = Module()
        full, wbank = Signal(2), Signal()
        set_full = Signal(2)
        with m.If(self.filled):
            m.d.sync += wbank.eq(~wbank)
            m.d.comb += set_full.eq(Mux(wbank, 0b10, 0b01))
        m.d.sync += full.eq((full | set_full) & ~self.release)
        m.d.comb += [self.full.eq(full), self.wbank.eq(wbank), self.wfree.eq(~full.bit_select(wbank, 1))]
        return m
