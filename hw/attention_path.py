"""The ATTENTION step's datapath: q/k/v scratch rows from DDR -> RoPE (q, k) -> absmax int8 per
head -> load assembly -> prefill attention (KV append, history from DDR) -> ``attn`` columns."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Shape, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .act_mover import ROW_STRIDE_WIDTH, ScratchReader, ScratchWriter
from .attention import POSITION, check_attn_format
from .attn_load import AttentionLoad
from .attn_prefill import PrefillAttention
from .attn_tiled import TiledAttention
from .credit_fifo import CreditFifo
from .compose import axi_ports, issue_once
from .norm_quant import NormQuant
from .pipeline import f32_vec
from .rope import Rope
from .stream_switch import StreamDemux, StreamMux

__all__ = ["AttentionPath", "attention_command_layout"]


def attention_command_layout(addr_width: int, chunk: int) -> data.StructLayout:
    """One pass over one kv head for ``tokens`` tokens at positions ``pos0..``: the addresses of
    token 0's first column of the pass's query heads in ``q`` and of the kv head in ``k`` and
    ``v`` (row ``t`` at ``+ t * row_stride``, the same stride for ``attn``), the RoPE table bases
    (row ``p`` at ``+ p * 2 head_dim``), the kv head's cache arrays (``k_base``, ``v_base``,
    ``s_base``), whether the pass appends the chunk's k/v to the cache (``write_kv``) and the
    address of token 0's first column of the pass in ``attn``. All byte addresses, absolute."""
    return data.StructLayout({
        "q": unsigned(addr_width), "k": unsigned(addr_width), "v": unsigned(addr_width),
        "row_stride": unsigned(ROW_STRIDE_WIDTH), "tokens": unsigned(chunk.bit_length()), "pos0": POSITION,
        "rope_cos": unsigned(addr_width), "rope_sin": unsigned(addr_width),
        "k_base": unsigned(addr_width), "v_base": unsigned(addr_width), "s_base": unsigned(addr_width),
        "write_kv": unsigned(1), "attn": unsigned(addr_width),
    })


class AttentionPath(wiring.Component):
    """One ATTENTION step of the sequencer program (``StepMachine._attention``): for ``tokens``
    n tokens at positions pos0.. and the ``heads`` H consecutive query heads of one kv head,
    bit for bit ``golden.rope`` (q and k), ``golden.quantize`` per (token, vector), the cache
    append of k/v (``golden.KVCache.write``, with ``write_kv``) and
    ``golden.attention_query`` per (token, head), written to the pass's ``attn`` columns.

    A ``cmd`` beat (:func:`attention_command_layout`) runs one pass:

    - per token t, the ``qkv`` ScratchReader reads the H query vectors (one row of H hd floats
      at ``q + t row_stride``), the key and the value (hd floats at ``k``/``v + t row_stride``);
      the ``cos`` and ``sin`` readers read the table row of position pos0+t H+1 times (stride
      0), zipped into :class:`~tellme.hw.rope.Rope`'s ``cs``;
    - a :class:`~tellme.hw.stream_switch.StreamDemux` sends each token's first (H+1) hd/L beats
      (q heads, k) through Rope and the value's hd/L beats around it; a
      :class:`~tellme.hw.stream_switch.StreamMux` takes them back in the same order (beats
      counted per token on both sides), into :class:`~tellme.hw.norm_quant.NormQuant`
      (quantise only, one command per vector);
    - in int8, :class:`~tellme.hw.attn_load.AttentionLoad` assembles each token's H+2 int8
      vectors and scales into a load beat of :class:`~tellme.hw.attn_prefill.PrefillAttention`;
      in fp32 the float32 beats go as they are into
      :class:`~tellme.hw.attn_tiled.TiledAttention`; the unit appends k/v to the cache
      (``write_kv``) and computes the causal attention (history positions < pos0 from the
      cache in DDR);
    - its outputs (token descending, head ascending) collect in a FIFO of one token row; once a
      row is complete a :class:`~tellme.hw.act_mover.ScratchWriter` command (rows 1, H hd x 4
      bytes at ``attn + t row_stride``) writes it.

    ``done`` pulses when the attention unit is idle again (its cache appends acknowledged) and
    every ``attn`` row write is acknowledged; the next ``cmd`` is taken after that.

    No manager waits on another: each reader's commands are issued only when the FIFO behind it
    has room for all their beats (so its R data always drain, whatever shares its HP port), and
    an ``attn`` row's write command only when the whole row is buffered (its W beats never wait).

    Ports: ``cmd`` (In stream, :func:`attention_command_layout`), ``done`` (Out 1), ``qkv_axi``,
    ``cos_axi``, ``sin_axi``, ``kv_read_axi`` (AXI4 read managers: the q/k/v rows, the RoPE
    tables, the KV history), ``kv_write_axi``, ``wr_axi`` (AXI4 write managers: the cache
    append, the ``attn`` rows), ``error`` (Out 1, sticky: an AXI error response on any of them).

    Constraints (the program's, ``gen.program.check_datapath``): ``q``, ``k``, ``v``, ``attn``,
    ``row_stride`` and the table bases aligned to the AXI beat; hd x 4 and 2 hd bytes whole
    beats of L lanes and of the bus.

    Latency: a token's vectors reach the attention unit after the reads, RoPE (8 cycles) and
    the quantiser (about 3 hd/L + 120 cycles per vector); the attention itself starts after
    the last token's load (``hw/attn_tiled.py``, ``hw/attn_prefill.py``). Throughput: the
    quantiser's, about (H + 2) (3 hd/L + 120) cycles per token, while the tokens load; then the
    attention unit's. Cost: the units it holds (Rope, NormQuant with max_dim hd and
    AttentionLoad in int8, the attention unit, three scratch readers, a writer) and three FIFOs
    of f32_vec(L) beats: (H+2) hd/L (q/k/v), twice (H+1) hd/2L (cos, sin), H hd/L (output row).

    Parameters (keyword-only): ``head_dim`` hd (a multiple of 2 L), ``heads`` H (query heads
    per pass, ``attn_heads_parallel``), ``lanes`` L (element-wise lanes, a power of two, also
    the attention output lanes), ``tile`` (``attn_tile``), ``chunk`` (most tokens per pass),
    ``data_width``, ``addr_width``, ``dot_lanes``, ``pv_lanes`` (the attention cores'),
    ``attn_format`` (``"int8"``; ``"fp32"``: no quantiser and no load assembler, RoPE's float32
    q and k and the float32 v go as beats into TiledAttention and the cache,
    ``golden.FloatKVCache``; L must then be whole AXI beats, L >= 4 at 128 bits),
    ``rope_lanes`` (RoPE's rotating lanes, default L: ``Rope``'s ``rotate_lanes``),
    ``history_ports`` (fp32: TiledAttention's history read managers; ``kv_read_axi`` is then an
    array of that many, one per HP port; int8: 1), ``history_slots`` (fp32: TiledAttention's
    history tile slots, 2 or 3; int8: 2).
    """

    def __init__(self, *, head_dim: int, heads: int, lanes: int, tile: int, chunk: int, data_width: int = 128,
                 addr_width: int = 40, dot_lanes: int = 16, pv_lanes: int = 16, attn_format: str = "int8",
                 rope_lanes: int | None = None, history_ports: int = 1, history_slots: int = 2):
        for name, value in (("head_dim", head_dim), ("heads", heads), ("lanes", lanes), ("tile", tile),
                            ("chunk", chunk)):
            check_positive_int(name, value)
        if head_dim % (2 * lanes):
            raise ValueError(f"head_dim ({head_dim}) must be a multiple of 2 x lanes ({2 * lanes})")
        self.head_dim, self.heads, self.lanes, self.tile, self.chunk = head_dim, heads, lanes, tile, chunk
        self.data_width, self.addr_width = data_width, addr_width
        movers = dict(lanes=lanes, data_width=data_width, addr_width=addr_width)
        self.qkv, self.cos, self.sin = ScratchReader(**movers), ScratchReader(**movers), ScratchReader(**movers)
        self.writer = ScratchWriter(**movers)
        self.attn_format = check_attn_format(attn_format)
        self.rope = Rope(lanes=lanes, head_dim=head_dim, rotate_lanes=rope_lanes)
        # the int8 format quantises q, k and v per vector; fp32 takes them as they are
        self.quant = NormQuant(lanes=lanes, max_dim=head_dim) if attn_format == "int8" else None
        # fp32: query tiles (each key tile read once per query tile), loaded with the vectors'
        # beats as they come; int8: a core per head, loaded with whole tokens (AttentionLoad)
        units = dict(head_dim=head_dim, tile=tile, chunk=chunk, heads=heads, addr_width=addr_width,
                     data_width=data_width, dot_lanes=dot_lanes, pv_lanes=pv_lanes, out_lanes=lanes)
        if attn_format == "fp32":
            self.load = None
            self.attention = TiledAttention(**units, load_lanes=lanes, history_ports=history_ports,
                                            history_slots=history_slots)
        else:
            if history_ports != 1:
                raise ValueError(f"history_ports: the int8 format's PrefillAttention reads its history "
                                 f"through one port, got {history_ports}")
            if history_slots != 2:
                raise ValueError(f"history_slots: the int8 format's PrefillAttention has two history "
                                 f"slots, got {history_slots}")
            self.load = AttentionLoad(head_dim=head_dim, heads=heads, lanes=lanes, attn_format=attn_format)
            self.attention = PrefillAttention(**units, attn_format=attn_format)
        self.demux = StreamDemux(shape=f32_vec(lanes), count=2)
        self.mux = StreamMux(shape=f32_vec(lanes), count=2)
        super().__init__({
            "cmd": In(stream.Signature(attention_command_layout(addr_width, chunk))),
            "done": Out(1),
            **axi_ports(reads=("qkv_axi", "cos_axi", "sin_axi"), addr_width=addr_width, data_width=data_width),
            "kv_read_axi": self.attention.signature.members["axi_read"],
            **axi_ports(writes=("kv_write_axi", "wr_axi"), addr_width=addr_width, data_width=data_width),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        hd, H, L = self.head_dim, self.heads, self.lanes
        vec_beats = hd // L                      # stream beats of one head vector
        rotated_beats = (H + 1) * vec_beats      # per token through RoPE (q heads, k)
        token_beats = (H + 2) * vec_beats        # per token from the q/k/v reader
        cs_beats = (H + 1) * hd // (2 * L)       # per token from each table reader
        qkv, cos, sin, wr = self.qkv, self.cos, self.sin, self.writer
        rope, nq, load, pa = self.rope, self.quant, self.load, self.attention
        for name, unit in (("qkv", qkv), ("cos", cos), ("sin", sin), ("writer", wr), ("rope", rope),
                           ("quant", nq), ("load", load), ("attention", pa), ("demux", self.demux),
                           ("mux", self.mux)):
            if unit is not None:
                m.submodules[name] = unit
        for unit, port in ((qkv, self.qkv_axi), (cos, self.cos_axi), (sin, self.sin_axi), (wr, self.wr_axi)):
            wiring.connect(m, unit.axi, wiring.flipped(port))
        if isinstance(pa.axi_read, list):               # one history manager per HP port
            for j, port in enumerate(pa.axi_read):
                wiring.connect(m, port, wiring.flipped(self.kv_read_axi[j]))
        else:
            wiring.connect(m, pa.axi_read, wiring.flipped(self.kv_read_axi))
        wiring.connect(m, pa.axi_write, wiring.flipped(self.kv_write_axi))
        m.d.comb += self.error.eq(qkv.error | cos.error | sin.error | wr.error | pa.error)

        # The current command, held for the whole pass.
        cmd = Signal.like(self.cmd.payload)
        busy = Signal()
        m.d.comb += self.cmd.ready.eq(~busy)
        accept = self.cmd.valid & self.cmd.ready

        # ---- reads: q heads, k, v per token (one reader), the table rows (two readers)
        qkv_buf = CreditFifo(m, "qkv_fifo", qkv, token_beats)
        cos_buf = CreditFifo(m, "cos_fifo", cos, cs_beats)
        sin_buf = CreditFifo(m, "sin_fifo", sin, cs_beats)

        rd_token = Signal(range(self.chunk + 1))
        part = Signal(range(3))                  # 0: q heads, 1: k, 2: v
        part_beats = Signal(range(token_beats + 1))
        m.d.comb += part_beats.eq(vec_beats)
        with m.If(part == 0):
            m.d.comb += part_beats.eq(H * vec_beats)
        row = rd_token * cmd.row_stride
        rc = qkv.cmd.payload
        m.d.comb += qkv.cmd.valid.eq(busy & (rd_token < cmd.tokens) & qkv_buf.room(part_beats))
        # Every field in every case: a field driven only by a constant, apart from the others of
        # its payload, comes out of the Verilog backend as an `always @*` block that some
        # simulators (Verilator) never evaluate.
        with m.Switch(part):
            for index, (base, nbytes) in enumerate(((cmd.q, H * hd * 4), (cmd.k, hd * 4), (cmd.v, hd * 4))):
                with m.Case(index) if index < 2 else m.Default():
                    m.d.comb += [rc.base.eq(base + row), rc.rows.eq(1), rc.row_bytes.eq(nbytes),
                                 rc.row_stride.eq(0)]
        with m.If(qkv.cmd.valid & qkv.cmd.ready):
            m.d.comb += qkv_buf.issued.eq(part_beats)
            with m.If(part == 2):
                m.d.sync += [part.eq(0), rd_token.eq(rd_token + 1)]
            with m.Else():
                m.d.sync += part.eq(part + 1)

        table_tokens = []
        for reader, buf, base, name in ((cos, cos_buf, cmd.rope_cos, "cos"), (sin, sin_buf, cmd.rope_sin, "sin")):
            t = Signal(range(self.chunk + 1), name=f"{name}_token")
            table_tokens.append(t)
            c = reader.cmd.payload
            m.d.comb += [c.base.eq(base + (cmd.pos0 + t) * (2 * hd)), c.rows.eq(H + 1), c.row_bytes.eq(2 * hd),
                         c.row_stride.eq(0),
                         reader.cmd.valid.eq(busy & (t < cmd.tokens) & buf.room(cs_beats))]
            with m.If(reader.cmd.valid & reader.cmd.ready):
                m.d.comb += buf.issued.eq(cs_beats)
                m.d.sync += t.eq(t + 1)

        # cos and sin rows zipped into Rope's cs beats
        cs = rope.cs
        both = cos_buf.fifo.r_rdy & sin_buf.fifo.r_rdy
        cos_word = data.View(f32_vec(L), cos_buf.fifo.r_data)
        sin_word = data.View(f32_vec(L), sin_buf.fifo.r_data)
        take_cs = both & cs.ready
        m.d.comb += [cs.valid.eq(both), cs.payload.cos.eq(cos_word.data), cs.payload.sin.eq(sin_word.data),
                     cos_buf.fifo.r_en.eq(take_cs), sin_buf.fifo.r_en.eq(take_cs),
                     cos_buf.pop.eq(take_cs), sin_buf.pop.eq(take_cs)]

        # ---- RoPE for the q heads and k, around it for v: beats counted per token on both sides
        demux, mux = self.demux, self.mux
        qkv_buf.output(m, demux.i)
        in_beat = Signal(range(token_beats))
        out_beat = Signal(range(token_beats))
        m.d.comb += [demux.sel.eq(in_beat >= rotated_beats), mux.sel.eq(out_beat >= rotated_beats)]
        with m.If(demux.i.valid & demux.i.ready):
            m.d.sync += in_beat.eq(Mux(in_beat == token_beats - 1, 0, in_beat + 1))
        with m.If(mux.o.valid & mux.o.ready):
            m.d.sync += out_beat.eq(Mux(out_beat == token_beats - 1, 0, out_beat + 1))
        wiring.connect(m, demux.o[0], rope.x)
        wiring.connect(m, rope.o, mux.i[0])
        wiring.connect(m, demux.o[1], mux.i[1])
        # ---- int8: the quantiser, one command per vector (quantise only), into the load
        # assembler; fp32: the float vectors straight into it
        if nq is not None:
            wiring.connect(m, mux.o, nq.x)
        vectors = Signal(range(self.chunk * (H + 2) + 1))
        if nq is not None:
            m.d.comb += [nq.cmd.payload.norm.eq(0), nq.cmd.valid.eq(busy & (vectors != 0))]
            with m.If(nq.cmd.valid & nq.cmd.ready):
                m.d.sync += vectors.eq(vectors - 1)
            wiring.connect(m, nq.q, load.q)
            wiring.connect(m, nq.scale, load.scale)
            wiring.connect(m, load.o, pa.load)
        else:
            wiring.connect(m, mux.o, pa.load)

        # ---- the attention pass
        pa_sent = Signal()
        pc = pa.cmd.payload
        m.d.comb += [pc.k_base.eq(cmd.k_base), pc.v_base.eq(cmd.v_base), pc.s_base.eq(cmd.s_base),
                     pc.pos0.eq(cmd.pos0), pc.count.eq(cmd.tokens), pc.write_kv.eq(cmd.write_kv)]
        issue_once(m, pa.cmd, offer=busy, sent=pa_sent)

        # ---- outputs: one token row (H heads) buffered, then written with one writer command
        row_beats = H * vec_beats
        m.submodules.out_fifo = out_fifo = fifo.SyncFIFOBuffered(width=Shape.cast(f32_vec(L)).width, depth=row_beats)
        out_word = Signal(f32_vec(L))
        m.d.comb += [out_word.data.eq(pa.o.payload.data), out_word.last.eq(pa.o.payload.last),
                     out_fifo.w_data.eq(out_word), out_fifo.w_en.eq(pa.o.valid), pa.o.ready.eq(out_fifo.w_rdy)]
        m.d.comb += [wr.i.valid.eq(out_fifo.r_rdy), wr.i.payload.eq(out_fifo.r_data), out_fifo.r_en.eq(wr.i.ready)]
        # The FIFO holds one row, so a row completes only after the previous row's command was
        # taken and its beats drained (and the completion would win over a clear anyway).
        row_ready = Signal()
        row_token = Signal(range(max(self.chunk, 2)))
        wc = wr.cmd.payload
        m.d.comb += [wc.base.eq(cmd.attn + row_token * cmd.row_stride), wc.rows.eq(1), wc.row_bytes.eq(H * hd * 4),
                     wc.row_stride.eq(0), wr.cmd.valid.eq(row_ready)]
        with m.If(wr.cmd.valid & wr.cmd.ready):
            m.d.sync += row_ready.eq(0)
        with m.If(pa.o.valid & pa.o.ready & pa.o.payload.last & (pa.o.payload.head == H - 1)):
            m.d.sync += [row_ready.eq(1), row_token.eq(pa.o.payload.token)]
        written = Signal(range(self.chunk + 1))  # rows acknowledged
        with m.If(wr.done):
            m.d.sync += written.eq(written + 1)

        # ---- command intake and completion
        with m.If(accept):
            m.d.sync += [cmd.eq(self.cmd.payload), busy.eq(1), rd_token.eq(0), part.eq(0), pa_sent.eq(0),
                         vectors.eq(self.cmd.payload.tokens * (H + 2)), written.eq(0)]
            m.d.sync += [t.eq(0) for t in table_tokens]
        with m.If(busy & pa_sent & ~pa.busy & (written == cmd.tokens)):
            m.d.comb += self.done.eq(1)
            m.d.sync += busy.eq(0)
        return m
