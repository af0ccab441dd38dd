"""AXI4 read master: byte-range commands in, data beats out, as INCR bursts."""

from amaranth.hdl import Module, unsigned
from amaranth.lib import data, fifo, stream
from amaranth.lib.wiring import Out

from .axi import axi_read_signature
from .axi_bursts import AxiMaster, IncrBursts, command_layout

__all__ = ["AxiReadMaster", "read_command_layout", "read_data_layout"]


def read_command_layout(addr_width: int) -> data.StructLayout:
    """Read ``beats`` beats starting at ``addr`` (aligned to the beat size)."""
    return command_layout(addr_width)


def read_data_layout(data_width: int) -> data.StructLayout:
    """One beat; ``last`` on the final beat of a command."""
    return data.StructLayout({"data": unsigned(data_width), "last": unsigned(1)})


class AxiReadMaster(AxiMaster):
    """Turns read commands into AXI4 INCR bursts and returns the data in order.

    Each command is split into bursts of at most ``max_burst`` beats that never cross a 4 KiB
    boundary; up to ``max_outstanding`` bursts are in flight (one ARID, so responses come back
    in order). R beats pass straight to ``rdata`` (``rready`` follows ``rdata.ready``), so with a
    subordinate that never stalls the port streams one beat per cycle. An error response
    (SLVERR/DECERR) sets the sticky ``error`` output (cleared by ``clear_error``); its data are
    still delivered so the stream stays aligned.

    Ports: ``cmd`` (In stream, read_command_layout), ``rdata`` (Out stream, read_data_layout),
    ``axi`` (Out, axi_read_signature), ``error`` (Out 1), ``clear_error`` (In 1), ``busy`` (Out 1).

    Latency: the first AR of a command taken in cycle c is valid in cycle c + 2; R beats reach
    ``rdata`` without a register.

    Throughput: one beat per cycle while the subordinate and the consumer keep up (a burst's AR
    is issued while earlier bursts' data still arrive).

    Cost: the burst generator (address, 24-bit beat count, burst length), a
    ``max_outstanding``-deep FIFO of one bit per burst and the error flag.
    """

    _axi_signature = staticmethod(axi_read_signature)

    @staticmethod
    def _own_members(data_width):
        return {"rdata": Out(stream.Signature(read_data_layout(data_width)))}

    def elaborate(self, platform):
        m = Module()
        axi = self.axi

        # -- burst generator; bursts in flight: each entry says whether the burst ends its command.
        m.submodules.inflight = inflight = fifo.SyncFIFO(width=1, depth=self.max_outstanding)
        bursts = IncrBursts(m, self.cmd, axi, "ar", addr_width=self.addr_width, beat_bytes=self.beat_bytes,
                            max_burst=self.max_burst, room=inflight.w_rdy)
        m.d.comb += [inflight.w_en.eq(bursts.issue), inflight.w_data.eq(bursts.final)]

        # -- data path: R straight to the output
        m.d.comb += [
            self.rdata.valid.eq(axi.rvalid),
            axi.rready.eq(self.rdata.ready),
            self.rdata.payload.data.eq(axi.rdata),
            self.rdata.payload.last.eq(axi.rlast & inflight.r_data[0]),
            inflight.r_en.eq(axi.rvalid & axi.rready & axi.rlast),
        ]
        self._track_errors(m, axi.rvalid & axi.rready, axi.rresp)
        m.d.comb += self.busy.eq(bursts.active | inflight.r_rdy)
        return m
