"""AXI4 read masters in lockstep over several HP ports: one wide stream from a striped image
region (docs/architecture.md 5 and 9, "LM head")."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .axi import axi_read_signature
from .axi_bursts import command_layout
from .axi_read import AxiReadMaster, read_data_layout

__all__ = ["StripedReadMaster"]


class StripedReadMaster(wiring.Component):
    """P = ``ports`` :class:`~tellme.hw.axi_read.AxiReadMaster` in lockstep: a byte stream laid
    out as :func:`~tellme.contract.layouts.stripe` has it (P stripes, stripe k at ``stripe_base + k * stripe_bytes``) read
    as one stream of P AXI beats per ``rdata`` beat.

    A command ``{addr, beats}`` names a range of the *logical* stream: ``beats`` words of P x B
    bytes (B = ``data_width / 8``) from logical byte ``addr`` (a multiple of P x B). Master k
    reads ``beats`` beats at ``stripe_base + k * stripe_bytes + addr / P`` on its own port
    ``axi[k]`` (its own bursts, cut at 4 KiB of its stripe), and ``rdata`` beat i is the
    concatenation of the i-th beats of masters 0 .. P-1 (master k's in bits [k dw, (k+1) dw)):
    the logical stream's words in order. ``last`` on a command's final beat.

    ``stripe_base`` and ``stripe_bytes`` (In) are read while a command is taken and one cycle
    before (each port's base is registered): hold them stable from a cycle before the first
    command of a call until ``busy`` falls. The command goes to all P masters; ``cmd`` is taken
    once every master has taken it (each master may take it in a different cycle). An
    ``rdata`` beat is offered once every master has its beat (a port whose data come early
    waits with RREADY low, which AXI allows); the masters' RREADY follows ``rdata.ready`` and
    that condition.

    Ports: ``cmd`` (In stream, :func:`~tellme.hw.axi_bursts.command_layout`), ``rdata`` (Out
    stream, :func:`~tellme.hw.axi_read.read_data_layout` of P x ``data_width`` bits),
    ``axi[k]`` (Out, ``axi_read_signature``, one per port), ``stripe_base``, ``stripe_bytes``
    (In, ``addr_width``), ``error`` (Out 1, sticky: any master's), ``clear_error`` (In 1),
    ``busy`` (Out 1: a command is not yet taken by every master, or a master is busy).

    Latency: a master's (its first AR two cycles after it takes the command), then the slowest
    port's data; ``rdata`` without a register. Throughput: one logical word (P AXI beats) per
    cycle while every port keeps up, i.e. P times one port's bandwidth. Cost: P read masters, P
    base registers and adders, the all-valid gate.

    Parameters (keyword only): ``ports`` (P, a power of two, 1..16), and the masters'
    ``data_width``, ``addr_width``, ``max_burst``, ``max_outstanding``.
    """

    def __init__(self, *, ports: int, data_width: int = 128, addr_width: int = 40, max_burst: int = 256,
                 max_outstanding: int = 4):
        if not isinstance(ports, int) or isinstance(ports, bool) or not 1 <= ports <= 16 or ports & (ports - 1):
            raise ValueError(f"ports must be a power of two 1..16, got {ports!r}")
        # The masters check the rest now, not at elaboration.
        self.masters = [AxiReadMaster(data_width=data_width, addr_width=addr_width, max_burst=max_burst,
                                      max_outstanding=max_outstanding) for _ in range(ports)]
        self.ports, self.data_width, self.addr_width = ports, data_width, addr_width
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.beat_bytes = data_width // 8
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_width))),
            "rdata": Out(stream.Signature(read_data_layout(ports * data_width))),
            "axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)).array(ports),
            "stripe_base": In(addr_width), "stripe_bytes": In(addr_width),
            "error": Out(1), "clear_error": In(1), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        P = self.ports
        shift = P.bit_length() - 1
        taken = Signal(P)                    # master k has taken the current command
        done = []                            # master k has it or takes it now
        for k, master in enumerate(self.masters):
            m.submodules[f"master{k}"] = master
            wiring.connect(m, master.axi, wiring.flipped(self.axi[k]))
            base = Signal(self.addr_width, name=f"base{k}")
            m.d.sync += base.eq(self.stripe_base + self.stripe_bytes * k)
            m.d.comb += [
                master.cmd.valid.eq(self.cmd.valid & ~taken[k]),
                master.cmd.payload.addr.eq(base + (self.cmd.payload.addr >> shift)),
                master.cmd.payload.beats.eq(self.cmd.payload.beats),
                master.clear_error.eq(self.clear_error),
            ]
            done.append(taken[k] | master.cmd.ready)
        m.d.comb += self.cmd.ready.eq(Cat(*done).all())
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += taken.eq(0)
        with m.Else():
            m.d.sync += taken.eq(taken | Cat(*[mst.cmd.valid & mst.cmd.ready for mst in self.masters]))

        # -- data: a logical word once every port has its beat
        every = Signal()
        m.d.comb += [
            every.eq(Cat(*[mst.rdata.valid for mst in self.masters]).all()),
            self.rdata.valid.eq(every),
            self.rdata.payload.data.eq(Cat(*[mst.rdata.payload.data for mst in self.masters])),
            self.rdata.payload.last.eq(self.masters[0].rdata.payload.last),
            self.error.eq(Cat(*[mst.error for mst in self.masters]).any()),
            self.busy.eq((taken != 0) | Cat(*[mst.busy for mst in self.masters]).any()),
        ]
        for mst in self.masters:
            m.d.comb += mst.rdata.ready.eq(self.rdata.ready & every)
        return m
