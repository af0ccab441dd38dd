"""Decode attention: one query per head against the KV cache in DDR, plus the cache append."""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract.layouts import KV_RECORD_BYTES, kv_row_bytes
from .attention import POSITION, AttentionCore, kv_element_shape, query_layout
from .axi import axi_read_signature, axi_write_signature
from .axi_write import AxiWriteMaster
from .kv_reader import KvReader, kv_command_layout, kv_row_beats
from .pipeline import f32_vec

__all__ = ["DecodeAttention", "KvWriter", "kv_append_layout"]


def kv_append_layout(head_dim: int, addr_width: int, attn_format: str = "int8") -> data.StructLayout:
    """The new token's key and value of one kv head, where they go, and (int8 format) their
    scales; float32 rows and no scales in the fp32 format."""
    fields = {
        "k_base": unsigned(addr_width), "v_base": unsigned(addr_width), "s_base": unsigned(addr_width),
        "pos": POSITION,
        "k": data.ArrayLayout(kv_element_shape(attn_format), head_dim),
        "v": data.ArrayLayout(kv_element_shape(attn_format), head_dim),
    }
    if attn_format == "int8":
        fields.update(k_scale=unsigned(32), v_scale=unsigned(32))
    return data.StructLayout(fields)


class KvWriter(wiring.Component):
    """Appends one position of one kv head to the KV cache: the K row, the V row and the scale
    record {k_scale, v_scale, 0, 0} (docs/architecture.md 6), as three AXI writes; in the fp32
    format (``attn_format``) the float32 K and V rows, two writes. ``done`` pulses when all are
    acknowledged.

    Ports: ``append`` (In stream, kv_append_layout), ``axi`` (Out, AXI4 write manager),
    ``done`` (Out 1), ``error`` (Out 1, the master's sticky error).

    Latency: ``done`` follows the three writes' responses; the next ``append`` is taken after it.

    Throughput: one append at a time: 2 * row_bytes/beat_bytes (+ 1) W beats and three (two)
    write commands.

    Cost: the append register (two rows and two scales) and an
    :class:`~tellme.hw.axi_write.AxiWriteMaster`.
    """

    def __init__(self, *, head_dim: int, addr_width: int = 40, data_width: int = 128, attn_format: str = "int8"):
        self.row_beats = kv_row_beats(head_dim, data_width, attn_format)
        self.head_dim, self.addr_width, self.data_width = head_dim, addr_width, data_width
        self.attn_format = attn_format
        super().__init__({
            "append": In(stream.Signature(kv_append_layout(head_dim, addr_width, attn_format))),
            "axi": Out(axi_write_signature(addr_width=addr_width, data_width=data_width)),
            "done": Out(1), "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        hd, rb, dw = self.head_dim, self.row_beats, self.data_width
        m.submodules.master = master = AxiWriteMaster(data_width=dw, addr_width=self.addr_width)
        wiring.connect(m, master.axi, wiring.flipped(self.axi))
        m.d.comb += self.error.eq(master.error)
        job = Signal(kv_append_layout(hd, self.addr_width, self.attn_format))
        scaled = self.attn_format == "int8"            # the fp32 format has no scale record
        writes = 3 if scaled else 2
        row_bytes = kv_row_bytes(hd, self.attn_format)
        which = Signal(2)
        beat = Signal(range(rb + 1))
        acks = Signal(3)
        with m.FSM(name="kvw"):
            with m.State("IDLE"):
                m.d.comb += self.append.ready.eq(1)
                with m.If(self.append.valid):
                    m.d.sync += [job.eq(self.append.payload), which.eq(0), acks.eq(0)]
                    m.next = "COMMAND"
            with m.State("COMMAND"):
                base = [job.k_base + job.pos * row_bytes, job.v_base + job.pos * row_bytes,
                        job.s_base + job.pos * KV_RECORD_BYTES]
                m.d.comb += master.cmd.valid.eq(1)
                with m.Switch(which):
                    for i in range(writes):
                        with m.Case(i):
                            m.d.comb += [master.cmd.payload.addr.eq(base[i]),
                                         master.cmd.payload.beats.eq(1 if i == 2 else rb)]
                with m.If(master.cmd.ready):
                    m.d.sync += beat.eq(0)
                    m.next = "DATA"
            with m.State("DATA"):
                k_bits, v_bits = job.k.as_value(), job.v.as_value()
                with m.Switch(which):
                    with m.Case(0):
                        m.d.comb += master.wdata.payload.eq(k_bits.word_select(beat, dw))
                    with m.Case(1):
                        m.d.comb += master.wdata.payload.eq(v_bits.word_select(beat, dw))
                    if scaled:
                        with m.Case(2):
                            m.d.comb += master.wdata.payload.eq(Cat(job.k_scale, job.v_scale))
                m.d.comb += master.wdata.valid.eq(1)
                with m.If(master.wdata.ready):
                    with m.If((which == 2) | (beat == rb - 1)):
                        with m.If(which == writes - 1):
                            m.next = "WAIT"
                        with m.Else():
                            m.d.sync += which.eq(which + 1)
                            m.next = "COMMAND"
                    with m.Else():
                        m.d.sync += beat.eq(beat + 1)
            with m.State("WAIT"):
                with m.If(acks == writes):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        # Write responses may arrive while later writes are still being sent: count them all.
        with m.If(master.done):
            m.d.sync += acks.eq(acks + 1)
        with m.If(self.append.valid & self.append.ready):
            m.d.sync += acks.eq(0)
        return m


class DecodeAttention(wiring.Component):
    """One query (per ``query`` beat, with its ``kv`` command: cache addresses and position)
    against the cached keys/values of positions 0..pos, read from DDR by a :class:`KvReader`
    and reduced by an :class:`AttentionCore` (``golden.attention_query``). Resource-lean: one
    score per hd/dot_lanes cycles. GQA: the query heads of a kv head issue the same ``kv``
    command with their own queries.

    ``attn_format`` (``"int8"`` or ``"fp32"``) sets the cache's and the query's format.

    Ports: ``query`` (In, attention query_layout), ``kv`` (In, kv_command_layout), ``o``
    (Out, f32_vec(out_lanes)), ``axi`` (Out, AXI4 read manager), ``error`` (Out 1).

    Latency and throughput: those of the :class:`KvReader` and the :class:`AttentionCore`
    in series (measured in ``bench/results/attention.json``, ``decode``/``decode_ddr``). The
    fp32 cache is four times the bytes, and the reader's reads do not overlap the core: at hd 96,
    tile 32 a context of 1024 takes about 78 K cycles from the command to the last output in
    fp32, against 28 K in int8 (``tests/test_attention.py``, AxiRamRead with random pauses).

    Cost: a :class:`KvReader` and an :class:`AttentionCore` (the core: 35.4 K LUT-eq, 27.2 K
    FF, 128 DSP at hd 96, tile 32, 16/16/8 lanes; ``bench/results/attention.json``).
    """

    def __init__(self, *, head_dim: int, tile: int, addr_width: int = 40, data_width: int = 128,
                 dot_lanes: int = 16, pv_lanes: int = 16, out_lanes: int = 8, attn_format: str = "int8"):
        self.reader = KvReader(head_dim=head_dim, tile=tile, addr_width=addr_width, data_width=data_width,
                               attn_format=attn_format)
        self.core = AttentionCore(head_dim=head_dim, tile=tile, dot_lanes=dot_lanes, pv_lanes=pv_lanes,
                                  out_lanes=out_lanes, attn_format=attn_format)
        self.attn_format = attn_format
        super().__init__({
            "query": In(stream.Signature(query_layout(head_dim, attn_format))),
            "kv": In(stream.Signature(kv_command_layout(addr_width))),
            "o": Out(stream.Signature(f32_vec(out_lanes))),
            "axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.reader, m.submodules.core = self.reader, self.core
        wiring.connect(m, wiring.flipped(self.kv), self.reader.cmd)
        wiring.connect(m, wiring.flipped(self.query), self.core.query)
        wiring.connect(m, self.reader.keys, self.core.keys)
        wiring.connect(m, self.core.o, wiring.flipped(self.o))
        wiring.connect(m, self.reader.axi, wiring.flipped(self.axi))
        m.d.comb += self.error.eq(self.reader.error)
        return m
