"""AXI4 write master: byte-range commands and data beats in, INCR bursts out."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream
from amaranth.lib.wiring import In, Out

from .axi import axi_write_signature
from .axi_bursts import AxiMaster, IncrBursts, command_layout

__all__ = ["AxiWriteMaster", "write_command_layout"]


def write_command_layout(addr_width: int) -> data.StructLayout:
    """Write ``beats`` beats starting at ``addr`` (aligned to the beat size)."""
    return command_layout(addr_width)


class AxiWriteMaster(AxiMaster):
    """Writes the beats of ``wdata`` to the byte ranges of ``cmd`` as AXI4 INCR bursts.

    Bursts are cut like the read master's (at most ``max_burst`` beats, never across 4 KiB);
    the AW of a burst goes out as soon as its command is known, its W beats follow from
    ``wdata`` (all byte strobes set) with WLAST on the burst's final beat. Up to
    ``max_outstanding`` bursts may await their B response. ``done`` pulses once per command
    when its last response has arrived; an error response sets the sticky ``error``.

    Ports: ``cmd`` (In stream, write_command_layout), ``wdata`` (In stream, ``unsigned(data_width)``),
    ``axi`` (Out, axi_write_signature), ``done`` (Out 1), ``error`` (Out 1), ``clear_error``
    (In 1), ``busy`` (Out 1).

    Latency: the first AW of a command taken in cycle c is valid in cycle c + 2; W beats come
    from ``wdata`` without a register; ``done`` pulses the cycle after the final B handshake.

    Throughput: one W beat per cycle while the subordinate and the producer keep up and fewer
    than ``max_outstanding`` bursts await their response.

    Cost: the burst generator, two ``max_outstanding``-deep FIFOs (burst lengths, final flags),
    a beat counter and the error flag.
    """

    _axi_signature = staticmethod(axi_write_signature)

    @staticmethod
    def _own_members(data_width):
        return {"wdata": In(stream.Signature(data_width)), "done": Out(1)}

    def elaborate(self, platform):
        m = Module()
        axi, bb = self.axi, self.beat_bytes

        # Burst lengths for the W channel, and "ends its command" flags for the B channel.
        burst_layout = data.StructLayout({"length": range(self.max_burst + 1), "final": 1})
        m.submodules.w_bursts = w_bursts = fifo.SyncFIFO(width=burst_layout.size, depth=self.max_outstanding)
        m.submodules.b_bursts = b_bursts = fifo.SyncFIFO(width=1, depth=self.max_outstanding)
        bursts = IncrBursts(m, self.cmd, axi, "aw", addr_width=self.addr_width, beat_bytes=bb,
                            max_burst=self.max_burst, room=w_bursts.w_rdy & b_bursts.w_rdy)
        burst = Signal(burst_layout)
        m.d.comb += [burst.length.eq(bursts.length), burst.final.eq(bursts.final),
                     w_bursts.w_en.eq(bursts.issue), w_bursts.w_data.eq(burst),
                     b_bursts.w_en.eq(bursts.issue), b_bursts.w_data.eq(bursts.final)]

        # -- W: beats of the oldest burst whose data is still owed
        current = Signal(burst_layout)
        m.d.comb += current.eq(w_bursts.r_data)
        beat = Signal(range(self.max_burst + 1))
        wlast = beat == current.length - 1
        m.d.comb += [
            axi.wvalid.eq(self.wdata.valid & w_bursts.r_rdy),
            self.wdata.ready.eq(axi.wready & w_bursts.r_rdy),
            axi.wdata.eq(self.wdata.payload),
            axi.wstrb.eq((1 << bb) - 1),
            axi.wlast.eq(wlast),
        ]
        with m.If(axi.wvalid & axi.wready):
            with m.If(wlast):
                m.d.sync += beat.eq(0)
                m.d.comb += w_bursts.r_en.eq(1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # -- B: count responses; a command is done with its final burst's response
        m.d.comb += [axi.bready.eq(b_bursts.r_rdy), b_bursts.r_en.eq(axi.bvalid & axi.bready)]
        m.d.sync += self.done.eq(axi.bvalid & axi.bready & b_bursts.r_data[0])
        self._track_errors(m, axi.bvalid & axi.bready, axi.bresp)
        m.d.comb += self.busy.eq(bursts.active | b_bursts.r_rdy)
        return m
