"""AXI4 read master: byte-range commands in, data beats out, as INCR bursts."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, RESP_OKAY, axi_read_signature
from .axi_bursts import IncrBursts, check_master_parameters

__all__ = ["AxiReadMaster", "read_command_layout", "read_data_layout"]


def read_command_layout(addr_width: int) -> data.StructLayout:
    """Read ``beats`` beats starting at ``addr`` (aligned to the beat size)."""
    return data.StructLayout({"addr": unsigned(addr_width), "beats": unsigned(24)})


def read_data_layout(data_width: int) -> data.StructLayout:
    """One beat; ``last`` on the final beat of a command."""
    return data.StructLayout({"data": unsigned(data_width), "last": unsigned(1)})


class AxiReadMaster(wiring.Component):
    """Turns read commands into AXI4 INCR bursts and returns the data in order.

    Each command is split into bursts of at most ``max_burst`` beats that never cross a 4 KiB
    boundary; up to ``max_outstanding`` bursts are in flight (one ARID, so responses come back
    in order). R beats pass straight to ``rdata`` (``rready`` follows ``rdata.ready``), so with a
    subordinate that never stalls the port streams one beat per cycle. An error response
    (SLVERR/DECERR) sets the sticky ``error`` output (cleared by ``clear_error``); its data are
    still delivered so the stream stays aligned.

    Ports: ``cmd`` (In stream, read_command_layout), ``rdata`` (Out stream, read_data_layout),
    ``axi`` (Out, axi_read_signature), ``error`` (Out 1), ``clear_error`` (In 1), ``busy`` (Out 1).
    """

    def __init__(self, *, data_width: int = 128, addr_width: int = 40, id_width: int = 4,
                 max_burst: int = 256, max_outstanding: int = 4):
        check_master_parameters(data_width, max_burst, max_outstanding)
        self.data_width, self.addr_width, self.id_width = data_width, addr_width, id_width
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.beat_bytes = data_width // 8
        super().__init__({
            "cmd": In(stream.Signature(read_command_layout(addr_width))),
            "rdata": Out(stream.Signature(read_data_layout(data_width))),
            "axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "error": Out(1),
            "clear_error": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi = self.axi

        # -- burst generator; bursts in flight: each entry says whether the burst ends its command.
        m.submodules.inflight = inflight = fifo.SyncFIFO(width=1, depth=self.max_outstanding)
        bursts = IncrBursts(m, self.cmd, addr_width=self.addr_width, beat_bytes=self.beat_bytes,
                            max_burst=self.max_burst, room=inflight.w_rdy, ready=axi.arready, valid_name="arvalid")
        m.d.comb += [
            axi.arvalid.eq(bursts.valid), axi.araddr.eq(bursts.addr), axi.arlen.eq(bursts.length - 1),
            axi.arsize.eq(bursts.shift), axi.arburst.eq(BURST_INCR),
            axi.arid.eq(0), axi.arcache.eq(0b0011), axi.arprot.eq(0), axi.arlock.eq(0), axi.arqos.eq(0),
            inflight.w_en.eq(bursts.issue), inflight.w_data.eq(bursts.final),
        ]

        # -- data path: R straight to the output
        m.d.comb += [
            self.rdata.valid.eq(axi.rvalid),
            axi.rready.eq(self.rdata.ready),
            self.rdata.payload.data.eq(axi.rdata),
            self.rdata.payload.last.eq(axi.rlast & inflight.r_data[0]),
            inflight.r_en.eq(axi.rvalid & axi.rready & axi.rlast),
        ]
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        with m.If(axi.rvalid & axi.rready & (axi.rresp != RESP_OKAY)):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.busy.eq(bursts.active | inflight.r_rdy)
        return m
