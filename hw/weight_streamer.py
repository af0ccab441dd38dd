"""Weight streamer: projection commands in, TLMM lane words out, over all AXI read ports."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.layouts import BufferGeometry
from .axi import axi_read_signature
from .axi_read import AxiReadMaster
from .tlmm_decode import TlmmWeightDecode, codes_layout
from .weight_buffer import PASSES, WeightBuffer, tile_layout

__all__ = ["WeightStreamer", "projection_layout", "BLOCKS", "ROWS"]

#: Shape of a projection's lane-block count B (K / (P G): at most 255 blocks).
BLOCKS = unsigned(8)
#: Shape of a projection's row count N, of a tile's row count N_t and of row indices (at most
#: 65,535 rows).
ROWS = unsigned(16)


def projection_layout(ports: int, addr_width: int) -> data.StructLayout:
    """One projection: its per-port sub-stream base addresses and shape, and the replay count."""
    return data.StructLayout({
        "base": data.ArrayLayout(unsigned(addr_width), ports),
        "blocks": BLOCKS,            # B
        "rows": ROWS,                # N
        "tile_rows": ROWS,           # N_t (from gen.tiling)
        "passes": PASSES,            # 1 in decode, C/T in prefill
    })


class WeightStreamer(wiring.Component):
    """Streams projections' weights from DDR into the TLMM, tile by tile.

    For each ``proj`` command the streamer walks the tiles of ``gen.tiling`` (rows r0..r0+N_t
    across all B blocks): it hands the weight buffer a tile descriptor and, on every port, the
    reads of each block's N_t sub-words at ``base[port] + (b*N + r0) * subword_bytes``, in
    chunks of at most ``read_chunk`` beats; each port's beats enter a FIFO of
    ``port_fifo_depth`` beats, the ports' FIFOs are joined into lane words (TlmmWeightDecode)
    and stored in the free bank,
    from which the TLMM reads each tile ``passes`` times (``codes``). Loading of the next tile
    overlaps the lanes' use of the current one; each weight byte crosses AXI once per command.
    The tile descriptor waits in a one-entry register for the buffer, and the walker issues a
    tile's reads only once the buffer has taken it (a bank is free and its fill has started):
    every weight beat then has room the moment it arrives. And a port issues a chunk only when
    its FIFO has room for all the beats it has asked for (a credit count), so its R channel is
    always ready: no weight beat ever waits on an R channel, where it would hold the beats of
    every other reader sharing that HP port. (A tile's reads issued before its bank was free
    held the next tiles' beats on the HP ports, the MATMUL path's residual reader among their
    sharers: a projection of three or more tiles with a residual deadlocked. And without the
    FIFOs, the decode, which takes a lane word's beats from all ports together, held a port's
    beats while another port's were late, behind some other reader's beats there: with weight
    loading running ahead of the MATMUL steps, a norm's row and gain readers on two ports
    deadlocked against it.) The next tile's reads start while the current one fills, so the
    fill stays busy as long as the lanes use a tile no faster than it loads.

    Ports: ``proj`` (In stream, projection_layout), ``codes`` (Out stream, lane words),
    ``axi[i]`` (Out, AXI4 read manager per port), ``waiting`` (Out 1: no tile ready for the
    lanes), ``error`` (Out 1: an AXI read error on any port).

    Latency: a tile is offered on ``codes`` once all of it is in the buffer (its reads' DDR
    round trip and transfer, the decode's cycle, then the buffer's read register); later tiles
    load while the lanes use the previous one.

    Throughput: one lane word per cycle on ``codes`` while a tile is ready; the fill runs at
    the ports' AXI rate (``bench/results/weight_buffer.json``: the lanes wait 0 % in prefill and
    about 1 % per layer in decode at the KV260 settings).

    Cost: one :class:`~tellme.hw.axi_read.AxiReadMaster` and one FIFO of ``port_fifo_depth``
    beats (block RAM) per port, a :class:`~tellme.hw.tlmm_decode.TlmmWeightDecode`, a
    :class:`~tellme.hw.weight_buffer.WeightBuffer` (its URAM banks dominate), the tile walker's
    counters, the credit counters and the descriptor register.

    Parameters (keyword-only): ``geometry``, ``addr_width``, ``max_outstanding`` (per read
    master), ``ram_style``, ``depth`` (bank entries, default the geometry's), ``port_fifo_depth``
    (beats; at least ``read_chunk``), ``read_chunk`` (beats per read, at most 256; the FIFO
    should hold a few chunks so that the reads in flight cover the DDR latency).
    """

    def __init__(self, *, geometry: BufferGeometry, addr_width: int = 40, max_outstanding: int = 4,
                 ram_style: str = "ultra", depth: int | None = None, port_fifo_depth: int = 256,
                 read_chunk: int = 64):
        check_positive_int("port_fifo_depth", port_fifo_depth)
        check_positive_int("read_chunk", read_chunk)
        if read_chunk > min(256, port_fifo_depth):
            raise ValueError(f"read_chunk ({read_chunk}) must be at most 256 beats (one AXI burst) and at most "
                             f"port_fifo_depth ({port_fifo_depth})")
        self.port_fifo_depth, self.read_chunk = port_fifo_depth, read_chunk
        self.geometry = geometry
        self.addr_width = addr_width
        self.depth = depth or geometry.entries_per_bank
        self.max_outstanding = max_outstanding
        self.ram_style = ram_style
        data_width = geometry.beat_bytes * 8
        super().__init__({
            "proj": In(stream.Signature(projection_layout(geometry.ports, addr_width))),
            "codes": Out(stream.Signature(codes_layout(geometry.group, geometry.lanes))),
            "axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)).array(geometry.ports),
            "waiting": Out(1),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        g = self.geometry
        ports = g.ports
        beats_per_subword = g.subword_bytes // g.beat_bytes

        m.submodules.decode = decode = TlmmWeightDecode(group=g.group, lanes=g.lanes, ports=ports,
                                                        beat_bits=g.beat_bytes * 8)
        m.submodules.buffer = buffer = WeightBuffer(shape=codes_layout(g.group, g.lanes), depth=self.depth,
                                                    ram_style=self.ram_style)
        wiring.connect(m, decode.codes, buffer.fill)
        wiring.connect(m, buffer.o, wiring.flipped(self.codes))
        m.d.comb += self.waiting.eq(buffer.waiting)

        masters = []
        errors = 0
        for p in range(ports):
            master = AxiReadMaster(data_width=g.beat_bytes * 8, addr_width=self.addr_width,
                                   max_outstanding=self.max_outstanding)
            m.submodules[f"port{p}"] = master
            wiring.connect(m, master.axi, wiring.flipped(self.axi[p]))
            beats = fifo.SyncFIFOBuffered(width=g.beat_bytes * 8, depth=self.port_fifo_depth)
            m.submodules[f"port{p}_beats"] = beats
            m.d.comb += [beats.w_data.eq(master.rdata.payload.data), beats.w_en.eq(master.rdata.valid),
                         master.rdata.ready.eq(beats.w_rdy),
                         decode.beats[p].valid.eq(beats.r_rdy), decode.beats[p].payload.eq(beats.r_data),
                         beats.r_en.eq(decode.beats[p].ready)]
            masters.append((master, beats))
            errors = errors | master.error
        m.d.comb += self.error.eq(errors)

        # -- tile walker
        cmd = Signal(projection_layout(ports, self.addr_width))
        active = Signal()
        row0 = Signal(ROWS)
        block = Signal(BLOCKS)
        tile_sent = Signal()         # this tile's descriptor went to the descriptor register
        port_done = Signal(ports)    # this block's read went to each port
        m.d.comb += self.proj.ready.eq(~active)
        with m.If(self.proj.valid & self.proj.ready & (self.proj.payload.rows != 0) & (self.proj.payload.blocks != 0)):
            m.d.sync += [cmd.eq(self.proj.payload), active.eq(1), row0.eq(0), block.eq(0), tile_sent.eq(0),
                         port_done.eq(0)]

        rows_left = cmd.rows - row0
        tile_rows = Signal(ROWS)
        m.d.comb += tile_rows.eq(Mux(rows_left < cmd.tile_rows, rows_left, cmd.tile_rows))
        # One-entry descriptor register in front of the buffer: this tile's reads start once the
        # buffer has taken it (its bank is the one filling), never earlier (see the docstring).
        desc_valid = Signal()
        desc = Signal(tile_layout(self.depth))
        m.d.comb += [buffer.tile.valid.eq(desc_valid), buffer.tile.payload.eq(desc)]
        with m.If(buffer.tile.valid & buffer.tile.ready):
            m.d.sync += desc_valid.eq(0)
        with m.If(active & ~tile_sent & (~desc_valid | buffer.tile.ready)):
            m.d.sync += [desc_valid.eq(1), desc.entries.eq(tile_rows * cmd.blocks), desc.passes.eq(cmd.passes),
                         tile_sent.eq(1)]

        # Per port and block: rows r0.. of block b of the port's sub-stream, read in chunks of at
        # most read_chunk beats, each issued once the port's FIFO has room for it (credits).
        offset = Signal(self.addr_width)
        m.d.comb += offset.eq((block * cmd.rows + row0) * g.subword_bytes)
        block_beats = Signal(range((1 << ROWS.width) * beats_per_subword + 1))
        m.d.comb += block_beats.eq(tile_rows * beats_per_subword)
        chunk0 = Signal.like(block_beats)           # beats of this block's reads issued
        left = Signal.like(block_beats)
        chunk = Signal(range(self.read_chunk + 1))
        m.d.comb += [left.eq(block_beats - chunk0), chunk.eq(Mux(left < self.read_chunk, left, self.read_chunk))]
        sent_now = Signal(ports)
        for p, (master, beats) in enumerate(masters):
            space = Signal(range(self.port_fifo_depth + 1), init=self.port_fifo_depth, name=f"port{p}_space")
            m.d.sync += space.eq(space - Mux(sent_now[p], chunk, 0) + (beats.r_en & beats.r_rdy))
            m.d.comb += [master.cmd.valid.eq(active & tile_sent & ~desc_valid & ~port_done[p] & (space >= chunk)),
                         master.cmd.payload.addr.eq(cmd.base[p] + offset + chunk0 * g.beat_bytes),
                         master.cmd.payload.beats.eq(chunk),
                         sent_now[p].eq(master.cmd.valid & master.cmd.ready)]
        all_sent = (port_done | sent_now).all()
        with m.If(active & tile_sent):
            with m.If(all_sent & (chunk0 + chunk < block_beats)):
                m.d.sync += [port_done.eq(0), chunk0.eq(chunk0 + chunk)]
            with m.Elif(all_sent):
                m.d.sync += [port_done.eq(0), chunk0.eq(0)]
                with m.If(block == cmd.blocks - 1):
                    m.d.sync += [block.eq(0), row0.eq(row0 + tile_rows), tile_sent.eq(0)]
                    with m.If(row0 + tile_rows >= cmd.rows):
                        m.d.sync += active.eq(0)
                with m.Else():
                    m.d.sync += block.eq(block + 1)
            with m.Else():
                m.d.sync += port_done.eq(port_done | sent_now)
        return m
