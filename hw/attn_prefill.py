"""Prefill attention: a prompt chunk's causal attention, queries in reverse order, the chunk's
keys/values on chip, earlier chunks' from the KV cache in DDR (docs/architecture.md 8)."""

from amaranth.hdl import Cat, Module, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .attention import POSITION, AttentionCore, check_attn_format, key_layout, kv_element_shape, query_layout
from .attn_decode import KvWriter
from .axi import axi_read_signature, axi_write_signature
from .kv_reader import KvReader

__all__ = ["PrefillAttention", "prefill_ports", "prefill_command_layout", "prefill_load_layout", "prefill_out_layout",
           "kv_entry_layout", "kv_fields"]


def prefill_command_layout(chunk: int, addr_width: int) -> data.StructLayout:
    """One chunk of one kv head: the cache arrays of that (layer, kv head), the chunk's first
    position, its token count, and whether this pass appends the chunk's k/v to the cache (only
    the first pass over a kv head does, when its query heads take several passes)."""
    return data.StructLayout({
        "k_base": unsigned(addr_width), "v_base": unsigned(addr_width), "s_base": unsigned(addr_width),
        "pos0": POSITION, "count": range(chunk + 1), "write_kv": unsigned(1),
    })


def kv_fields(attn_format: str) -> tuple[str, ...]:
    """The fields of one cached position in ``attn_format``: rows and (int8) their scales."""
    return ("k", "v", "k_scale", "v_scale") if check_attn_format(attn_format) == "int8" else ("k", "v")


def kv_entry_layout(head_dim: int, attn_format: str = "int8") -> data.StructLayout:
    """One cached position of one kv head: the K and V rows (int8 with their scales, or
    float32), k after RoPE."""
    row = data.ArrayLayout(kv_element_shape(attn_format), head_dim)
    return data.StructLayout({name: row if name in ("k", "v") else unsigned(32) for name in kv_fields(attn_format)})


def prefill_load_layout(head_dim: int, heads: int, attn_format: str = "int8") -> data.StructLayout:
    """One token of the chunk: the query of each of the ``heads`` query heads (int8 with d_q,
    or float32: ``attn_format``) and the kv head's key and value (:func:`kv_entry_layout`)."""
    entry = kv_entry_layout(head_dim, attn_format).members
    order = ("k", "k_scale", "v", "v_scale")
    return data.StructLayout({"q": data.ArrayLayout(query_layout(head_dim, attn_format), heads),
                              **{name: entry[name] for name in order if name in entry}})


def prefill_out_layout(out_lanes: int, heads: int, chunk: int) -> data.StructLayout:
    """``out_lanes`` float32 output elements of query head ``head`` (of the pass) and chunk
    token ``token``; ``last`` on the final beat of that (token, head)."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(32), out_lanes), "last": unsigned(1),
                              "head": range(max(heads, 2)), "token": range(max(chunk, 2))})


def prefill_ports(*, head_dim: int, heads: int, chunk: int, out_lanes: int, addr_width: int, data_width: int,
                  attn_format: str, load=None, read_ports: int = 1) -> dict:
    """The signature members of a prefill attention unit (:class:`PrefillAttention`,
    :class:`~tellme.hw.attn_tiled.TiledAttention`): ``cmd``, ``load`` (a token per beat,
    :func:`prefill_load_layout`, unless ``load`` gives another layout), ``o``, the AXI read
    (history; an array of ``read_ports`` when more than one) and write (cache append) managers,
    ``error`` and ``busy``."""
    read = Out(axi_read_signature(addr_width=addr_width, data_width=data_width))
    return {
        "cmd": In(stream.Signature(prefill_command_layout(chunk, addr_width))),
        "load": In(stream.Signature(prefill_load_layout(head_dim, heads, attn_format) if load is None else load)),
        "o": Out(stream.Signature(prefill_out_layout(out_lanes, heads, chunk))),
        "axi_read": read.array(read_ports) if read_ports > 1 else read,
        "axi_write": Out(axi_write_signature(addr_width=addr_width, data_width=data_width)),
        "error": Out(1), "busy": Out(1),
    }


class PrefillAttention(wiring.Component):
    """Causal attention of a chunk of ``count`` <= ``chunk`` tokens at positions pos0.. for
    ``heads`` query heads that share one kv head, bit-exact with ``golden.attention_query``.

    A pass: a ``cmd`` beat, then ``count`` ``load`` beats in token order. The chunk's keys and
    values go to an on-chip buffer (and, with ``write_kv``, to the KV cache in DDR through a
    :class:`KvWriter`: K row, V row and scale record per position); the queries to a query
    buffer. Then the queries run in reverse order, t = count-1 down to 0, each against the keys
    of ``golden.key_tile_order(pos0 + t)``: tiles from the diagonal one down to tile 0,
    positions >= pos0 from the on-chip buffer, positions < pos0 (earlier chunks) from DDR by a
    :class:`KvReader`, the two merged inside the tile that straddles pos0. ``heads``
    :class:`AttentionCore` s take the same key beats (GQA: the query heads of one kv head), so
    the key stream is produced once per token for all of them.

    Outputs leave on ``o`` per token (descending) and head (ascending), hd/out_lanes beats
    each, tagged with ``token`` (index in the chunk) and ``head`` (index in the pass).

    Latency and throughput: the cores set the pace (``AttentionCore``: about hd/dot_lanes +
    max(5, hd/pv_lanes) + 1 cycles per key and ~110 cycles per tile); fully masked tiles are
    never visited (simulated: ``bench/results/attention.json``, ``prefill``). Earlier
    chunks' keys are read from DDR once per query (``pos0 * (2 * hd + KV_RECORD_BYTES)`` bytes per token in int8, ``pos0 * 8 * hd`` in fp32), so
    prompts longer than one chunk pay that traffic; the chunk's own keys never leave the chip
    until the cache append.

    Cost: ``heads`` AttentionCores, the chunk's K/V and query buffers (block RAM), a KvReader
    and a KvWriter (synthesised: ``bench/results/attention.json``).

    Parameters (keyword-only): ``head_dim``, ``tile`` (``attn_tile``), ``chunk`` (most tokens
    per pass, ``prefill_chunk``), ``heads`` (parallel query heads sharing a kv head),
    ``attn_format`` (``"int8"``: int8 K/V rows with scales and int8 queries; ``"fp32"``: float32
    rows and queries, the buffers 4x wider and no scale records),
    ``addr_width``, ``data_width`` (AXI), ``dot_lanes``, ``pv_lanes``, ``out_lanes`` (cores).

    Ports: ``cmd`` (In, prefill_command_layout), ``load`` (In, prefill_load_layout), ``o``
    (Out, prefill_out_layout), ``axi_read`` (KV history), ``axi_write`` (cache append),
    ``error`` (Out 1: an AXI error response on either port), ``busy`` (Out 1: a pass is in progress).
    """

    def __init__(self, *, head_dim: int, tile: int, chunk: int, heads: int = 1, addr_width: int = 40,
                 data_width: int = 128, dot_lanes: int = 16, pv_lanes: int = 16, out_lanes: int = 8,
                 attn_format: str = "int8"):
        for name, value in (("chunk", chunk), ("heads", heads)):
            check_positive_int(name, value)
        self.attn_format = check_attn_format(attn_format)
        if chunk >= 1 << POSITION.width:
            raise ValueError(f"chunk ({chunk}) must be below {1 << POSITION.width} "
                             f"({POSITION.width}-bit positions)")
        self.cores = [AttentionCore(head_dim=head_dim, tile=tile, dot_lanes=dot_lanes, pv_lanes=pv_lanes,
                                    out_lanes=out_lanes, attn_format=attn_format) for _ in range(heads)]
        self.reader = KvReader(head_dim=head_dim, tile=tile, addr_width=addr_width, data_width=data_width,
                               attn_format=attn_format)
        self.writer = KvWriter(head_dim=head_dim, addr_width=addr_width, data_width=data_width,
                               attn_format=attn_format)
        self.head_dim, self.tile, self.chunk, self.heads = head_dim, tile, chunk, heads
        self.addr_width, self.out_lanes = addr_width, out_lanes
        super().__init__(prefill_ports(head_dim=head_dim, heads=heads, chunk=chunk, out_lanes=out_lanes,
                                       addr_width=addr_width, data_width=data_width, attn_format=attn_format))

    def elaborate(self, platform):
        m = Module()
        hd, tile, chunk, heads = self.head_dim, self.tile, self.chunk, self.heads
        m.submodules.reader, m.submodules.writer = reader, writer = self.reader, self.writer
        for i, core in enumerate(self.cores):
            m.submodules[f"core{i}"] = core
        wiring.connect(m, reader.axi, wiring.flipped(self.axi_read))
        wiring.connect(m, writer.axi, wiring.flipped(self.axi_write))
        m.d.comb += self.error.eq(reader.error | writer.error)

        # ---- on-chip buffers: the chunk's keys/values (+ scales) and queries, by token
        fmt, fields = self.attn_format, kv_fields(self.attn_format)
        kv_mem = memory.Memory(shape=kv_entry_layout(hd, fmt), depth=chunk, init=[])
        q_mem = memory.Memory(shape=data.ArrayLayout(query_layout(hd, fmt), heads), depth=chunk, init=[])
        m.submodules.kv_mem, m.submodules.q_mem = kv_mem, q_mem
        kv_wp, q_wp = kv_mem.write_port(), q_mem.write_port()
        kv_rp, q_rp = kv_mem.read_port(), q_mem.read_port()

        cmd = Signal(prefill_command_layout(chunk, self.addr_width))
        index = Signal(range(chunk + 1))          # load: next token; run: current query token
        pos = Signal(POSITION)                    # position of the current query
        m.d.comb += pos.eq(cmd.pos0 + index)

        # ---- load: buffer each token, and append its k/v to the cache
        load = self.load.payload
        # (loops, not generator expressions: a local a closure captures becomes a cell, which
        # Amaranth's name tracer does not follow, and the memory ports would lose their names)
        m.d.comb += kv_wp.addr.eq(index)
        for name in fields:
            m.d.comb += getattr(kv_wp.data, name).eq(getattr(load, name))
        m.d.comb += [q_wp.addr.eq(index), q_wp.data.eq(load.q)]
        append = writer.append.payload
        m.d.comb += [append.k_base.eq(cmd.k_base), append.v_base.eq(cmd.v_base), append.s_base.eq(cmd.s_base),
                     append.pos.eq(pos)]
        for name in fields:
            m.d.comb += getattr(append, name).eq(getattr(load, name))
        appends_pending = Signal(range(chunk + 2))  # appends handed to the writer, not yet acknowledged

        # ---- the key beat offered to every core (one register, taken by all before it moves on)
        kbeat = Signal(key_layout(hd, fmt))
        kbeat_valid = Signal()
        taken = Signal(heads)                     # cores that took the current kbeat
        core_take = Cat(core.keys.valid & core.keys.ready for core in self.cores)
        for i, core in enumerate(self.cores):
            m.d.comb += [core.keys.payload.eq(kbeat), core.keys.valid.eq(kbeat_valid & ~taken[i])]
        all_taken = Signal()
        m.d.comb += all_taken.eq((taken | core_take).all())
        kbeat_free = Signal()                     # kbeat can be (re)loaded this cycle
        m.d.comb += kbeat_free.eq(~kbeat_valid | all_taken)
        with m.If(kbeat_valid & all_taken):
            m.d.sync += [kbeat_valid.eq(0), taken.eq(0)]
        with m.Elif(kbeat_valid):
            m.d.sync += taken.eq(taken | core_take)

        # ---- query register, offered to every core at the start of a token
        qbeat_valid = Signal(heads)
        for i, core in enumerate(self.cores):
            m.d.comb += [core.query.payload.eq(q_rp.data[i]), core.query.valid.eq(qbeat_valid[i])]
            with m.If(core.query.valid & core.query.ready):
                m.d.sync += qbeat_valid[i].eq(0)

        # ---- key sequencing of one query (positions in golden.key_tile_order(pos))
        lo = Signal(POSITION)                     # current tile's first position
        hi = Signal(POSITION)                     # one past its last visited position
        key_pos = Signal(POSITION)                # next on-chip position to emit
        fetch_pending = Signal()                  # kv_rp.data holds key_pos-1's row this cycle
        fetch_tile_last = Signal()
        fetch_last = Signal()
        m.d.comb += kv_rp.addr.eq(key_pos - cmd.pos0)
        hist = reader.keys
        with m.If(fetch_pending):
            for name in fields:
                m.d.sync += getattr(kbeat, name).eq(getattr(kv_rp.data, name))
            m.d.sync += [kbeat.tile_last.eq(fetch_tile_last), kbeat.last.eq(fetch_last),
                         kbeat_valid.eq(1), taken.eq(0), fetch_pending.eq(0)]

        # ---- outputs: drain the cores in head order
        out_head = Signal(range(max(heads, 2)))
        for i, core in enumerate(self.cores):
            with m.If(out_head == i):
                m.d.comb += [self.o.valid.eq(core.o.valid), core.o.ready.eq(self.o.ready),
                             self.o.payload.data.eq(core.o.payload.data),
                             self.o.payload.last.eq(core.o.payload.last)]
        m.d.comb += [self.o.payload.head.eq(out_head), self.o.payload.token.eq(index)]
        token_done = Signal()                     # the last head's last beat of the token leaves
        m.d.comb += token_done.eq(self.o.valid & self.o.ready & self.o.payload.last & (out_head == heads - 1))
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += out_head.eq(0 if heads == 1 else (out_head + 1) % heads)

        with m.FSM(name="prefill") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), index.eq(0), out_head.eq(0)]
                    with m.If(self.cmd.payload.count != 0):
                        m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += [writer.append.valid.eq(self.load.valid & cmd.write_kv),
                             self.load.ready.eq(writer.append.ready | ~cmd.write_kv)]
                with m.If(self.load.valid & self.load.ready):
                    m.d.comb += [kv_wp.en.eq(1), q_wp.en.eq(1)]
                    with m.If(index == cmd.count - 1):
                        m.next = "QUERY"               # index stays at count-1: the last token first
                    with m.Else():
                        m.d.sync += index.eq(index + 1)
            with m.State("QUERY"):
                # q_rp.addr = index was set a cycle ago: its data is valid now.
                m.d.sync += [qbeat_valid.eq(2 ** heads - 1), lo.eq(pos // tile * tile), hi.eq(pos + 1),
                             key_pos.eq(pos // tile * tile)]
                with m.If(pos // tile * tile < cmd.pos0):
                    m.d.sync += key_pos.eq(cmd.pos0)
                m.next = "HIST_CMD"
            with m.State("HIST_CMD"):
                # Earlier chunks: one KvReader command per query covers positions 0..pos0-1.
                with m.If(cmd.pos0 == 0):
                    m.next = "TILE"
                with m.Else():
                    m.d.comb += [reader.cmd.valid.eq(1), reader.cmd.payload.k_base.eq(cmd.k_base),
                                 reader.cmd.payload.v_base.eq(cmd.v_base), reader.cmd.payload.s_base.eq(cmd.s_base),
                                 reader.cmd.payload.pos.eq(cmd.pos0 - 1)]
                    with m.If(reader.cmd.ready):
                        m.next = "TILE"
            with m.State("TILE"):
                # A tile [lo, hi): the part below pos0 from DDR, then the on-chip part, ascending.
                with m.If(lo < cmd.pos0):
                    m.next = "HIST_KEYS"
                with m.Else():
                    m.next = "CHUNK_KEYS"
            with m.State("HIST_KEYS"):
                # Pass the reader's beats through; inside the straddling tile its tile_last/last
                # are cleared, since the on-chip keys of the same tile follow.
                m.d.comb += hist.ready.eq(kbeat_free)
                straddle = hi > cmd.pos0
                with m.If(hist.valid & kbeat_free):
                    m.d.sync += [kbeat.eq(hist.payload), kbeat_valid.eq(1), taken.eq(0)]
                    with m.If(straddle):
                        m.d.sync += [kbeat.tile_last.eq(0), kbeat.last.eq(0)]
                        with m.If(hist.payload.tile_last):
                            m.next = "CHUNK_KEYS"
                    with m.Elif(hist.payload.last):
                        m.next = "WAIT_CORES"
            with m.State("CHUNK_KEYS"):
                # On-chip keys key_pos..hi-1: one read per free kbeat slot (a read lands a cycle
                # later, so a key takes two cycles; the cores need more than that per key).
                with m.If(kbeat_free & ~fetch_pending):
                    m.d.sync += [fetch_pending.eq(1), fetch_tile_last.eq(key_pos == hi - 1),
                                 fetch_last.eq((key_pos == hi - 1) & (lo == 0)), key_pos.eq(key_pos + 1)]
                    with m.If(key_pos == hi - 1):
                        with m.If(lo == 0):
                            m.next = "WAIT_CORES"
                        with m.Else():
                            m.d.sync += [hi.eq(lo), lo.eq(lo - tile), key_pos.eq(lo - tile)]
                            with m.If(lo - tile < cmd.pos0):
                                m.d.sync += key_pos.eq(cmd.pos0)
                            m.next = "TILE"
            with m.State("WAIT_CORES"):
                # The last key beat is out; the outputs of this token drain through `out`.
                with m.If(token_done):
                    with m.If(index == 0):
                        m.next = "FINISH"
                    with m.Else():
                        m.d.sync += index.eq(index - 1)
                        m.next = "QUERY_READ"
            with m.State("QUERY_READ"):
                # q_rp.addr follows the new index; its data arrive in the next cycle (QUERY).
                m.next = "QUERY"
            with m.State("FINISH"):
                # The pass ends when the cache appends are acknowledged.
                with m.If(appends_pending == 0):
                    m.next = "IDLE"
        m.d.comb += [q_rp.addr.eq(index), self.busy.eq(~fsm.ongoing("IDLE"))]
        m.d.sync += appends_pending.eq(appends_pending + (writer.append.valid & writer.append.ready) - writer.done)
        return m
