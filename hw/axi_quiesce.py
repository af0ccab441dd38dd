"""Bringing an AXI4 manager port to rest before its managers are reset (soft reset, abort)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .axi import LEN_WIDTH, axi_signature

__all__ = ["AxiQuiesce"]


class AxiQuiesce(wiring.Component):
    """Passes an AXI4 manager port ``i`` through to ``o`` and counts what is in flight, so the
    managers behind it can be reset without leaving the subordinate waiting.

    It counts read bursts granted and not finished (AR handshakes minus R beats with RLAST),
    write bursts without their B response, and the W beats each accepted AW still owes (a FIFO
    of burst lengths). While ``drain`` is high the managers are cut off: no new AR or AW leaves
    (ARVALID/AWVALID low on ``o``), every R beat and B response is taken (RREADY/BREADY high)
    and dropped, and the W beats still owed are sent with WSTRB 0 (they write nothing), WLAST
    on each burst's last. ``idle`` is high when nothing is in flight: the moment the managers
    may leave reset. Outside ``drain`` the port is a wire (no added latency).

    A manager reset with a request pending on AR or AW drops its VALID without a handshake; the
    subordinate here (the PS HP ports, the DDR model) only acts on handshakes.

    Ports: ``i`` (In: the managers' side), ``o`` (Out: the subordinate's side), ``drain`` (In),
    ``idle`` (Out).

    Cost: four counters, a FIFO of ``max_outstanding`` burst lengths (9 bits each) and the
    multiplexers of the valid/ready signals.

    Parameters (keyword-only): ``data_width``, ``addr_width``, ``max_outstanding`` (write bursts
    in flight the port may have; AW is held back, never dropped, beyond that).
    """

    def __init__(self, *, data_width: int = 128, addr_width: int = 40, max_outstanding: int = 16):
        try:
            check_positive_int("max_outstanding", max_outstanding)
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused object
            raise
        self.max_outstanding = max_outstanding
        signature = axi_signature(addr_width=addr_width, data_width=data_width)
        super().__init__({"i": In(signature), "o": Out(signature), "drain": In(1), "idle": Out(1)})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        for name, member in o.signature.members.items():
            if member.flow == Out:
                m.d.comb += getattr(o, name).eq(getattr(i, name))
            else:
                m.d.comb += getattr(i, name).eq(getattr(o, name))

        depth = self.max_outstanding
        # Burst lengths of the AWs accepted, in order; a burst leaves the FIFO once its W beats
        # are all sent (WLAST). A W beat may be accepted before the FIFO shows its AW (the
        # subordinate's AW queue can be as fast as this one, and some accept W before AW), so
        # finished bursts that could not be popped yet are counted in `finished`.
        m.submodules.owed = owed = fifo.SyncFIFO(width=LEN_WIDTH + 1, depth=depth)
        reads = Signal(16)                    # read bursts in flight
        writes = Signal(16)                   # write bursts without B
        sent = Signal(LEN_WIDTH + 1)          # W beats of the current burst already sent
        finished = Signal(range(depth + 1))   # bursts whose WLAST went out, still in the FIFO

        # Hold AW back while the FIFO of lengths is full (never reached with the arbiters' own
        # bounds; it keeps the count exact).
        with m.If(~owed.w_rdy):
            m.d.comb += [o.awvalid.eq(0), i.awready.eq(0)]
        with m.If(self.drain):
            m.d.comb += [o.arvalid.eq(0), i.arready.eq(0), o.awvalid.eq(0), i.awready.eq(0),
                         o.rready.eq(1), i.rvalid.eq(0), o.bready.eq(1), i.bvalid.eq(0),
                         o.wvalid.eq(owed.r_rdy & (finished == 0)), o.wstrb.eq(0), o.wdata.eq(0),
                         o.wlast.eq(sent + 1 == owed.r_data), i.wready.eq(0)]

        ar = o.arvalid & o.arready
        r_end = o.rvalid & o.rready & o.rlast
        aw = o.awvalid & o.awready
        w = o.wvalid & o.wready
        w_end = w & o.wlast
        b = o.bvalid & o.bready
        m.d.sync += [reads.eq(reads + ar - r_end), writes.eq(writes + aw - b)]
        m.d.comb += [owed.w_data.eq(o.awlen + 1), owed.w_en.eq(aw)]
        pop = Signal()
        m.d.comb += [pop.eq(owed.r_rdy & ((finished != 0) | w_end)), owed.r_en.eq(pop)]
        m.d.sync += finished.eq(finished + w_end - pop)
        with m.If(w):
            m.d.sync += sent.eq(Mux(o.wlast, 0, sent + 1))
        m.d.comb += self.idle.eq((reads == 0) & (writes == 0) & ~owed.r_rdy & (finished == 0))
        return m
