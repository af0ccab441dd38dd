"""URAM weight buffer: ping-pong tile banks between DDR and the TLMM lanes (architecture doc 4)."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .ping_pong import PingPong

__all__ = ["WeightBuffer", "tile_layout", "PASSES"]

#: Shape of a pass count, the replays of one tile: 1 in decode, C/T in prefill (at most 255).
PASSES = unsigned(8)


def tile_layout(depth: int) -> data.StructLayout:
    """One tile: ``entries`` lane words, replayed ``passes`` times (1 in decode, C/T in prefill)."""
    return data.StructLayout({"entries": unsigned(depth.bit_length()), "passes": PASSES})


class WeightBuffer(wiring.Component):
    """Two banks of ``depth`` lane words: while the lanes read one tile, the next one fills.

    For every ``tile`` descriptor, ``entries`` words are taken from ``fill`` into the free bank
    (addresses 0, 1, ...; the (block, row) order of the tile). Once complete, the bank is
    replayed ``passes`` times in the same order on ``o`` and then released. Weights are
    read from DDR once per tile however many passes use them.

    ``waiting`` is high in cycles when the read side has no complete tile to offer (the
    lanes would be waiting on weights if they wanted one): the source of the STALL counter.

    Ports: ``tile`` (In stream, tile_layout(depth)), ``fill`` (In stream, ``shape``), ``o``
    (Out stream, ``shape``), ``waiting`` (Out 1).

    Latency: ``o`` has one register stage (the memory's registered read), so a bank's first
    word appears one cycle after the bank is complete.

    Throughput: one word per cycle on each side, both sides at once (ping-pong banks).

    Cost: two memories of ``depth`` words of ``shape`` (``ram_style``: ``"ultra"`` for URAM on
    UltraScale+, ``"block"`` elsewhere; the KV260 sizes are ``contract.layouts.BufferGeometry``),
    two tile descriptors, address and pass counters and the :class:`PingPong` state.
    """

    def __init__(self, *, shape, depth: int, ram_style: str = "ultra"):
        if not isinstance(depth, int) or depth < 2:
            raise ValueError(f"depth must be an integer >= 2, got {depth!r}")
        if ram_style not in ("ultra", "block", "distributed"):
            raise ValueError(f"ram_style must be ultra, block or distributed, got {ram_style!r}")
        self.shape, self.depth, self.ram_style = shape, depth, ram_style
        super().__init__({
            "tile": In(stream.Signature(tile_layout(depth))),
            "fill": In(stream.Signature(shape)),
            "o": Out(stream.Signature(shape)),
            "waiting": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        banks = []
        for b in range(2):
            mem = memory.Memory(shape=self.shape, depth=self.depth, init=[],
                                attrs={"ram_style": self.ram_style})
            m.submodules[f"bank{b}"] = mem
            banks.append((mem.write_port(), mem.read_port(domain="sync")))

        m.submodules.ping_pong = ping_pong = PingPong()
        desc = [Signal(tile_layout(self.depth), name=f"desc{b}") for b in range(2)]

        # -- write side
        wbank = ping_pong.wbank
        filling = Signal()
        wdesc = Signal(tile_layout(self.depth))
        waddr = Signal(range(self.depth + 1))
        m.d.comb += self.tile.ready.eq(~filling & ping_pong.wfree)
        with m.If(self.tile.valid & self.tile.ready & (self.tile.payload.entries != 0)
                  & (self.tile.payload.passes != 0)):
            m.d.sync += [filling.eq(1), wdesc.eq(self.tile.payload), waddr.eq(0)]
        m.d.comb += self.fill.ready.eq(filling)
        write = self.fill.valid & self.fill.ready
        for b, (wp, _) in enumerate(banks):
            m.d.comb += [wp.addr.eq(waddr), wp.data.eq(self.fill.payload), wp.en.eq(write & (wbank == b))]
        with m.If(write):
            m.d.sync += waddr.eq(waddr + 1)
            with m.If(waddr == wdesc.entries - 1):
                m.d.sync += filling.eq(0)
                m.d.comb += ping_pong.filled.eq(1)
                for b in range(2):
                    with m.If(wbank == b):
                        m.d.sync += desc[b].eq(wdesc)

        # -- read side: the read port's data register is the output register
        rbank = Signal()
        raddr = Signal(range(self.depth + 1))
        rpass = Signal(PASSES)
        rdesc = Signal(tile_layout(self.depth))
        m.d.comb += rdesc.eq(Mux(rbank, desc[1], desc[0]))
        available = ping_pong.full.bit_select(rbank, 1)
        advance = ~self.o.valid | self.o.ready
        issue = available & advance
        for b, (_, rp) in enumerate(banks):
            m.d.comb += [rp.addr.eq(raddr), rp.en.eq(advance & (rbank == b))]
        out_bank = Signal()
        m.d.comb += self.o.payload.eq(Mux(out_bank, banks[1][1].data, banks[0][1].data))
        with m.If(advance):
            m.d.sync += self.o.valid.eq(issue)
            with m.If(issue):
                m.d.sync += out_bank.eq(rbank)
        with m.If(issue):
            with m.If(raddr == rdesc.entries - 1):
                m.d.sync += raddr.eq(0)
                with m.If(rpass == rdesc.passes - 1):
                    # Last word of the last pass has been read into the output register.
                    m.d.sync += [rpass.eq(0), rbank.eq(~rbank)]
                    m.d.comb += ping_pong.release.eq(Mux(rbank, 0b10, 0b01))
                with m.Else():
                    m.d.sync += rpass.eq(rpass + 1)
            with m.Else():
                m.d.sync += raddr.eq(raddr + 1)
        m.d.comb += self.waiting.eq(~available)
        return m
