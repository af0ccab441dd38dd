"""AXI4 write master: byte-range commands and data beats in, INCR bursts out."""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, RESP_OKAY, axi_write_signature
from .axi_bursts import IncrBursts, check_master_parameters
from .axi_read import read_command_layout

__all__ = ["AxiWriteMaster", "write_command_layout"]


def write_command_layout(addr_width: int) -> data.StructLayout:
    """Write ``beats`` beats starting at ``addr`` (aligned to the beat size)."""
    return read_command_layout(addr_width)


class AxiWriteMaster(wiring.Component):
    """Writes the beats of ``wdata`` to the byte ranges of ``cmd`` as AXI4 INCR bursts.

    Bursts are cut like the read master's (at most ``max_burst`` beats, never across 4 KiB);
    the AW of a burst goes out as soon as its command is known, its W beats follow from
    ``wdata`` (all byte strobes set) with WLAST on the burst's final beat. Up to
    ``max_outstanding`` bursts may await their B response. ``done`` pulses once per command
    when its last response has arrived; an error response sets the sticky ``error``.

    Ports: ``cmd`` (In stream, write_command_layout), ``wdata`` (In stream, ``unsigned(data_width)``),
    ``axi`` (Out, axi_write_signature), ``done`` (Out 1), ``error`` (Out 1), ``clear_error``
    (In 1), ``busy`` (Out 1).
    """

    def __init__(self, *, data_width: int = 128, addr_width: int = 40, id_width: int = 4,
                 max_burst: int = 256, max_outstanding: int = 4):
        check_master_parameters(data_width, max_burst, max_outstanding)
        self.data_width, self.addr_width, self.id_width = data_width, addr_width, id_width
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.beat_bytes = data_width // 8
        super().__init__({
            "cmd": In(stream.Signature(write_command_layout(addr_width))),
            "wdata": In(stream.Signature(data_width)),
            "axi": Out(axi_write_signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "done": Out(1),
            "error": Out(1),
            "clear_error": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi, bb = self.axi, self.beat_bytes

        # Burst lengths for the W channel, and "ends its command" flags for the B channel.
        burst_layout = data.StructLayout({"length": range(self.max_burst + 1), "final": 1})
        m.submodules.w_bursts = w_bursts = fifo.SyncFIFO(width=burst_layout.size, depth=self.max_outstanding)
        m.submodules.b_bursts = b_bursts = fifo.SyncFIFO(width=1, depth=self.max_outstanding)
        bursts = IncrBursts(m, self.cmd, addr_width=self.addr_width, beat_bytes=bb, max_burst=self.max_burst,
                            room=w_bursts.w_rdy & b_bursts.w_rdy, ready=axi.awready, valid_name="awvalid")
        m.d.comb += [
            axi.awvalid.eq(bursts.valid), axi.awaddr.eq(bursts.addr), axi.awlen.eq(bursts.length - 1),
            axi.awsize.eq(bursts.shift), axi.awburst.eq(BURST_INCR),
            axi.awid.eq(0), axi.awcache.eq(0b0011), axi.awprot.eq(0), axi.awlock.eq(0), axi.awqos.eq(0),
        ]
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
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        with m.If(axi.bvalid & axi.bready & (axi.bresp != RESP_OKAY)):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.busy.eq(bursts.active | b_bursts.r_rdy)
        return m
