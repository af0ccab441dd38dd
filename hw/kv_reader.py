"""KV reader: streams one query's keys and values from the KV cache in DDR, in visiting order."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.layouts import KV_RECORD_BYTES, kv_row_bytes
from .attention import POSITION, check_attn_format, key_layout, kv_element_shape
from .axi import axi_read_signature
from .axi_read import AxiReadMaster

__all__ = ["KvReader", "kv_command_layout", "kv_row_beats"]


def kv_row_beats(head_dim: int, data_width: int, attn_format: str = "int8") -> int:
    """AXI beats per K or V row of ``head_dim`` int8 or float32 values (``attn_format``), after
    checking the geometry the KV cache movers (:class:`KvReader`,
    :class:`~tellme.hw.attn_decode.KvWriter`) rely on: rows of whole beats, and one scale record
    (``KV_RECORD_BYTES``) per beat, i.e. a 128-bit bus (the records of 64- or 256-bit buses
    would need split or masked beats, not built)."""
    check_positive_int("head_dim", head_dim)
    row_bits = 8 * kv_row_bytes(head_dim, check_attn_format(attn_format))
    if data_width != 8 * KV_RECORD_BYTES:
        raise ValueError(f"data_width must be {8 * KV_RECORD_BYTES} bits: a scale record "
                         f"({KV_RECORD_BYTES} bytes) moves as one AXI beat, got {data_width!r}")
    if row_bits % data_width:
        raise ValueError(f"head_dim ({head_dim!r}) rows must be whole {data_width}-bit beats")
    return row_bits // data_width


def kv_command_layout(addr_width: int) -> data.StructLayout:
    """One query: the (layer, kv head) arrays' base addresses and the query's position."""
    return data.StructLayout({"k_base": unsigned(addr_width), "v_base": unsigned(addr_width),
                              "s_base": unsigned(addr_width), "pos": POSITION})


class KvReader(wiring.Component):
    """Reads the keys/values a query at position ``pos`` attends to (docs/architecture.md 6):
    tiles of ``tile`` positions from the tile holding ``pos`` down to tile 0 (cut at pos),
    each as three bursts — K rows (hd bytes each), V rows, scale records (one beat each) — in
    the int8 format, or two (float32 K and V rows of 4 hd bytes) in the fp32 format (``attn_format``),
    into tile buffers, then emits one ``keys`` beat per position (``tile_last``/``last``
    marked), the input of :class:`~tellme.hw.attention.AttentionCore`.

    Latency: a tile's first ``keys`` beat follows its three (two) reads, DDR round trips one
    after another.

    Throughput: every cached byte of positions 0..pos is read once per query; reading and
    emitting of a tile do not overlap yet: about 2*n*row_bytes/beat_bytes + n + latency cycles
    per tile of n positions (row_bytes hd, or 4 hd in fp32), one ``keys`` beat per cycle while
    emitting.

    Cost: three tile buffers (K and V rows, tile x hd bytes each, 4 hd in fp32; scales, tile x 64 bits), a
    row gather register and an :class:`~tellme.hw.axi_read.AxiReadMaster`.

    Ports: ``cmd`` (In stream, kv_command_layout), ``keys`` (Out stream, attention key_layout),
    ``axi`` (Out, AXI4 read manager), ``error`` (Out 1).
    """

    def __init__(self, *, head_dim: int, tile: int, addr_width: int = 40, data_width: int = 128,
                 attn_format: str = "int8"):
        self.row_beats = kv_row_beats(head_dim, data_width, attn_format)
        check_positive_int("tile", tile)
        self.head_dim, self.tile, self.addr_width, self.data_width = head_dim, tile, addr_width, data_width
        self.attn_format = attn_format
        super().__init__({
            "cmd": In(stream.Signature(kv_command_layout(addr_width))),
            "keys": Out(stream.Signature(key_layout(head_dim, attn_format))),
            "axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        hd, tile, rb, dw = self.head_dim, self.tile, self.row_beats, self.data_width
        m.submodules.master = master = AxiReadMaster(data_width=dw, addr_width=self.addr_width)
        wiring.connect(m, master.axi, wiring.flipped(self.axi))
        m.d.comb += self.error.eq(master.error)

        scaled = self.attn_format == "int8"            # the fp32 format has no scale records
        row = data.ArrayLayout(kv_element_shape(self.attn_format), hd)
        row_bytes = kv_row_bytes(hd, self.attn_format)
        kmem = memory.Memory(shape=row, depth=tile, init=[])
        vmem = memory.Memory(shape=row, depth=tile, init=[])
        record_bits = 64 if scaled else 1             # {k_scale, v_scale}; unused in fp32
        smem = memory.Memory(shape=record_bits, depth=tile, init=[])
        m.submodules.kmem, m.submodules.vmem, m.submodules.smem = kmem, vmem, smem
        kw, vw, sw = kmem.write_port(), vmem.write_port(), smem.write_port()
        kr, vr, sr = (mem.read_port(domain="comb") for mem in (kmem, vmem, smem))
        last_array = 2 if scaled else 1               # which: 0 K rows, 1 V rows, 2 scale records

        cmd = Signal(kv_command_layout(self.addr_width))
        lo = Signal(POSITION)
        hi = Signal(POSITION)
        n = Signal(range(tile + 1))
        m.d.comb += n.eq(hi - lo)
        which = Signal(2)                             # 0: K rows, 1: V rows, 2: scales
        gather = Signal(8 * row_bytes)
        beat_in_row = Signal(range(rb + 1))
        index = Signal(range(tile + 1))               # row being gathered / emitted

        data_beat = master.rdata.payload.data
        m.d.comb += [kw.addr.eq(index), vw.addr.eq(index), sw.addr.eq(index),
                     kr.addr.eq(index), vr.addr.eq(index), sr.addr.eq(index)]
        row_value = Cat(gather[dw:], data_beat) if rb > 1 else data_beat
        m.d.comb += [kw.data.eq(row_value), vw.data.eq(row_value), sw.data.eq(data_beat[:record_bits])]

        with m.FSM(name="kv"):
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    top = self.cmd.payload.pos // tile * tile
                    m.d.sync += [cmd.eq(self.cmd.payload), lo.eq(top), hi.eq(self.cmd.payload.pos + 1)]
                    m.next = "REQUEST"
            with m.State("REQUEST"):
                base = Mux(which == 0, cmd.k_base, Mux(which == 1, cmd.v_base, cmd.s_base))
                size = Mux(which == 2, KV_RECORD_BYTES, row_bytes)
                m.d.comb += [master.cmd.valid.eq(1), master.cmd.payload.addr.eq(base + lo * size),
                             master.cmd.payload.beats.eq(Mux(which == 2, n, n * rb))]
                with m.If(master.cmd.ready):
                    m.d.sync += [index.eq(0), beat_in_row.eq(0)]
                    m.next = "RECEIVE"
            with m.State("RECEIVE"):
                m.d.comb += master.rdata.ready.eq(1)
                with m.If(master.rdata.valid):
                    with m.If((which == 2) | (beat_in_row == rb - 1)):
                        m.d.comb += [kw.en.eq(which == 0), vw.en.eq(which == 1), sw.en.eq(which == 2)]
                        m.d.sync += [beat_in_row.eq(0), index.eq(index + 1)]
                    with m.Else():
                        m.d.sync += [beat_in_row.eq(beat_in_row + 1), gather.eq(row_value)]
                    with m.If(master.rdata.payload.last):
                        with m.If(which == last_array):
                            m.d.sync += [which.eq(0), index.eq(0)]
                            m.next = "EMIT"
                        with m.Else():
                            m.d.sync += which.eq(which + 1)
                            m.next = "REQUEST"
            with m.State("EMIT"):
                final = lo == 0
                m.d.comb += [self.keys.valid.eq(1), self.keys.payload.k.eq(kr.data), self.keys.payload.v.eq(vr.data)]
                if scaled:
                    m.d.comb += [self.keys.payload.k_scale.eq(sr.data[:32]), self.keys.payload.v_scale.eq(sr.data[32:64])]
                m.d.comb += [self.keys.payload.tile_last.eq(index == n - 1),
                             self.keys.payload.last.eq(final & (index == n - 1))]
                with m.If(self.keys.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == n - 1):
                        with m.If(final):
                            m.next = "IDLE"
                        with m.Else():
                            m.d.sync += [hi.eq(lo), lo.eq(lo - tile)]
                            m.next = "REQUEST"
        return m
