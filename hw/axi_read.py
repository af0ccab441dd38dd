"""AXI4 read master: byte-range commands in, data beats out, as INCR bursts."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import BURST_INCR, RESP_OKAY, axi_read_signature

__all__ = ["AxiReadMaster", "read_command_layout", "read_data_layout"]

PAGE = 4096


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
    in order). R beats pass straight to ``data`` (``rready`` follows ``data.ready``), so with a
    subordinate that never stalls the port streams one beat per cycle. An error response
    (SLVERR/DECERR) sets the sticky ``error`` output (cleared by ``clear_error``); its data are
    still delivered so the stream stays aligned.

    Ports: ``cmd`` (In stream, read_command_layout), ``data`` (Out stream, read_data_layout),
    ``axi`` (Out, axi_read_signature), ``error`` (Out 1), ``clear_error`` (In 1), ``busy`` (Out 1).
    """

    def __init__(self, *, data_width: int = 128, addr_width: int = 40, id_width: int = 4,
                 max_burst: int = 256, max_outstanding: int = 4):
        if data_width not in (32, 64, 128, 256, 512):
            raise ValueError(f"data_width must be 32..512 bits (power of two), got {data_width!r}")
        if not isinstance(max_burst, int) or not 1 <= max_burst <= 256:
            raise ValueError(f"max_burst must be 1..256 beats, got {max_burst!r}")
        if max_burst * data_width // 8 > PAGE:
            raise ValueError(f"a burst of {max_burst} x {data_width // 8} bytes exceeds 4 KiB")
        if not isinstance(max_outstanding, int) or not 1 <= max_outstanding <= 64:
            raise ValueError(f"max_outstanding must be 1..64, got {max_outstanding!r}")
        self.data_width, self.addr_width, self.id_width = data_width, addr_width, id_width
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.beat_bytes = data_width // 8
        super().__init__({
            "cmd": In(stream.Signature(read_command_layout(addr_width))),
            "data": Out(stream.Signature(read_data_layout(data_width))),
            "axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "error": Out(1),
            "clear_error": In(1),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        axi, bb = self.axi, self.beat_bytes
        shift = bb.bit_length() - 1
        page_beats = PAGE // bb

        # -- burst generator
        active = Signal()
        addr = Signal(self.addr_width)
        remaining = Signal(24)
        m.d.comb += self.cmd.ready.eq(~active)
        with m.If(self.cmd.valid & self.cmd.ready & (self.cmd.payload.beats != 0)):
            m.d.sync += [active.eq(1), addr.eq(self.cmd.payload.addr), remaining.eq(self.cmd.payload.beats)]

        # Beats to the next 4 KiB boundary, then the burst length.
        to_page = Signal(range(page_beats + 1))
        m.d.comb += to_page.eq(page_beats - addr[shift:12])
        length = Signal(range(self.max_burst + 1))
        limit = Mux(to_page < self.max_burst, to_page, self.max_burst)
        m.d.comb += length.eq(Mux(remaining < limit, remaining, limit))

        # Bursts in flight: each entry says whether the burst ends its command.
        m.submodules.inflight = inflight = fifo.SyncFIFO(width=1, depth=self.max_outstanding)
        issue = Signal()
        m.d.comb += [
            axi.araddr.eq(addr), axi.arlen.eq(length - 1), axi.arsize.eq(shift), axi.arburst.eq(BURST_INCR),
            axi.arid.eq(0), axi.arcache.eq(0b0011), axi.arprot.eq(0), axi.arlock.eq(0), axi.arqos.eq(0),
        ]
        # ARVALID comes from a register (held until ARREADY), never from ARREADY itself.
        arvalid = Signal()
        m.d.comb += axi.arvalid.eq(arvalid)
        with m.If(~arvalid):
            with m.If(active & inflight.w_rdy):
                m.d.sync += arvalid.eq(1)
        with m.Elif(axi.arready):
            m.d.comb += issue.eq(1)
            m.d.sync += [arvalid.eq(0), addr.eq(addr + (length << shift)), remaining.eq(remaining - length)]
            with m.If(remaining == length):
                m.d.sync += active.eq(0)
        m.d.comb += [inflight.w_en.eq(issue), inflight.w_data.eq(remaining == length)]
        # The burst parameters must not change while ARVALID is up: addr/remaining only move at
        # the handshake above, and a new command is accepted only while inactive.

        # -- data path: R straight to the output
        m.d.comb += [
            self.data.valid.eq(axi.rvalid),
            axi.rready.eq(self.data.ready),
            self.data.payload.data.eq(axi.rdata),
            self.data.payload.last.eq(axi.rlast & inflight.r_data[0]),
            inflight.r_en.eq(axi.rvalid & axi.rready & axi.rlast),
        ]
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        with m.If(axi.rvalid & axi.rready & (axi.rresp != RESP_OKAY)):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.busy.eq(active | inflight.r_rdy)
        return m
