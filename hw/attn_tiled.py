"""Prefill attention by query tiles: each key tile is read once for a whole query tile and its
scores computed back to back, the online softmax of all the tile's queries interleaved
(docs/architecture.md 8, ``golden.attention_query``)."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, wiring

from ..config import check_positive_int
from .attention import NEG_INF, POSITION, check_attn_format
from .attn_prefill import prefill_command_layout, prefill_ports
from .attn_score import DotScore
from .attn_softmax import BANKS, SoftmaxAccumulator, key_tile_layout, score_entry_layout
from .fp32 import FMax, add_unit
from .axi_read import AxiReadMaster
from .axi_write import AxiWriteMaster
from ..contract.layouts import kv_row_bytes
from .pipeline import delay, f32_vec

__all__ = ["TiledAttention"]


class TiledAttention(wiring.Component):
    """Causal attention of a chunk of ``count`` <= ``chunk`` tokens at positions pos0.. for
    ``heads`` query heads sharing one kv head, float32 (``attn_format`` "fp32"), bit-exact with
    ``golden.attention_query``; the ports and the pass protocol of
    :class:`~tellme.hw.attn_prefill.PrefillAttention` except ``load``, which carries beats of
    ``load_lanes`` float32 instead of whole tokens.

    A pass: a ``cmd`` beat, then per token (in token order) the ``f32_vec(load_lanes)`` beats of
    its ``heads`` query vectors, its key and its value (hd/load_lanes beats each: the element-wise
    stream as it leaves RoPE, no row assembly): they are gathered into on-chip memories
    ``dot_lanes`` (k, q) or ``pv_lanes`` (v) float32 wide and deep (block RAM), and with
    ``write_kv`` the key and value beats also go to the KV cache (a K burst and a V burst per
    token). The chunk's tokens fall in query
    tiles (the tokens of one aligned tile of ``tile`` positions, ``heads`` queries each), run
    from the last to the first. For a query tile, the key tiles of ``golden.key_tile_order``
    (from its diagonal tile down to tile 0) each run once for all its queries:

    - score side: for each key (ascending) and each query that sees it (the causal mask inside
      the diagonal tile), the :class:`~tellme.hw.attn_score.DotScore` of the pair, hd/dot_lanes
      cycles, pairs back to back; the scores go to a score buffer bank, each query's running
      max m' to the same bank of a distributed RAM of maxima (continuing from the previous
      bank at the query's first score in a tile), which the accumulate side reads;
    - accumulate side (:class:`~tellme.hw.attn_softmax.SoftmaxAccumulator`): rescale, exp and
      P.V of an earlier key tile while the score side runs this one (three score banks: the
      score side may run two tiles ahead).

    Keys below pos0 (earlier chunks) come from DDR once per query tile (not per query), into
    ``history_slots`` (2 or 3) history tile slots beside the chunk's rows (the next tile
    requested as soon as its slot is free), filled while older tiles compute. With two slots a
    tile's request waits for the accumulate side to finish the tile two before, about 65 cycles
    after the previous tile's data at hd 96 (the score and P.V of a tile outlast its read): the
    DDR idles that long per tile; a third slot (tile x hd x 8 bytes more block RAM) lets the
    requests run a tile further ahead. With ``history_ports`` P = 1 a tile is a K burst
    and a V burst through one :class:`~tellme.hw.axi_read.AxiReadMaster`; with P = 2, 4, ...
    the K rows are cut into P/2 pieces of consecutive positions on masters 0..P/2-1 and the V
    rows likewise on the others, all in flight at once (``axi_read`` is then an array of P
    managers, one per HP port): a decode step's history streams at P beats per cycle, as fast
    as the DDR gives, instead of one. Each master's beats are gathered into memory words that
    take the K or V memory's write port in turn.

    Latency and throughput: one (query, key) pair per max(hd/dot_lanes, hd/pv_lanes) cycles
    when both sides are busy; per query tile about 100 + queries x (1 + hd/pv_lanes) cycles of
    recip and output. Per key tile the score side pays its pipeline only at a query tile's end.

    Cost at hd 96, tile 32, chunk 128, lanes 16/16/8 (Yosys ``synth_xilinx -family xcup``,
    ``bench/results/attention.json``): 35.2 K LUT-eq, 18.6 K FF, 99 DSP, 69 BRAM36; of the LUTs
    about 18 K are the 37 FAdds of the score tree and the P.V lanes (the fp32 contract's floor
    at 16 lanes), the block RAM mostly the chunk's q, k and v in float32.

    Parameters (keyword-only): as PrefillAttention, and ``load_lanes`` (float32 per load beat,
    whole AXI beats, dividing dot_lanes and pv_lanes), ``history_ports`` (1 or twice a power of
    two), ``history_slots`` (2 or 3); ``attn_format`` must be "fp32",
    ``out_lanes`` divides ``pv_lanes``. With head_dim = dot_lanes a pair takes two cycles
    (the running max's update takes two).
    """

    def __init__(self, *, head_dim: int, tile: int, chunk: int, heads: int = 1, addr_width: int = 40,
                 data_width: int = 128, dot_lanes: int = 16, pv_lanes: int = 16, out_lanes: int = 8,
                 load_lanes: int = 8, attn_format: str = "fp32", history_ports: int = 1, history_slots: int = 2):
        for name, value in (("head_dim", head_dim), ("tile", tile), ("chunk", chunk), ("heads", heads),
                            ("dot_lanes", dot_lanes), ("pv_lanes", pv_lanes), ("out_lanes", out_lanes),
                            ("load_lanes", load_lanes), ("history_ports", history_ports)):
            check_positive_int(name, value)
        if history_ports != 1 and (history_ports % 2 or (history_ports // 2) & (history_ports // 2 - 1)):
            raise ValueError(f"history_ports must be 1 or twice a power of two (K and V rows in equal "
                             f"pieces), got {history_ports}")
        if history_slots not in (2, 3):
            raise ValueError(f"history_slots must be 2 or 3, got {history_slots!r}")
        if check_attn_format(attn_format) != "fp32":
            raise ValueError(f"TiledAttention computes the fp32 format; attn_format {attn_format!r} is "
                             f"PrefillAttention's")
        if chunk >= 1 << POSITION.width:
            raise ValueError(f"chunk ({chunk}) must be below {1 << POSITION.width} ({POSITION.width}-bit positions)")
        for name, value in (("dot_lanes", dot_lanes), ("pv_lanes", pv_lanes)):
            if head_dim % value:
                raise ValueError(f"{name} ({value}) must divide head_dim ({head_dim})")
        self.head_dim, self.tile, self.chunk, self.heads = head_dim, tile, chunk, heads
        self.addr_width, self.attn_format = addr_width, attn_format
        self.dot_lanes, self.pv_lanes, self.out_lanes, self.load_lanes = dot_lanes, pv_lanes, out_lanes, load_lanes
        self.steps, self.groups = head_dim // dot_lanes, head_dim // pv_lanes
        self.queries = tile * heads
        self.history_slots = history_slots
        self.rows = chunk + history_slots * tile   # the chunk's rows, then the history slots
        for name, value in (("dot_lanes", dot_lanes), ("pv_lanes", pv_lanes), ("load_lanes", load_lanes)):
            if value * 32 % data_width:
                raise ValueError(f"{name} ({value}) float32 must be whole {data_width}-bit AXI beats")
        for name, value in (("dot_lanes", dot_lanes), ("pv_lanes", pv_lanes)):
            if value % load_lanes:
                raise ValueError(f"load_lanes ({load_lanes}) must divide {name} ({value})")
        self.score = DotScore(head_dim=head_dim, lanes=dot_lanes)
        self.softmax = SoftmaxAccumulator(head_dim=head_dim, tile=tile, heads=heads, chunk=chunk, rows=self.rows,
                                          lanes=pv_lanes, out_lanes=out_lanes)
        self.history = [AxiReadMaster(data_width=data_width, addr_width=addr_width) for _ in range(history_ports)]
        self.data_width = data_width
        self.cache_writer = AxiWriteMaster(data_width=data_width, addr_width=addr_width)
        super().__init__(prefill_ports(head_dim=head_dim, heads=heads, chunk=chunk, out_lanes=out_lanes,
                                       addr_width=addr_width, data_width=data_width, attn_format=attn_format,
                                       load=f32_vec(load_lanes), read_ports=history_ports))

    def elaborate(self, platform):
        m = Module()
        hd, T, C, H = self.head_dim, self.tile, self.chunk, self.heads
        S, G, Q, R = self.steps, self.groups, self.queries, self.rows
        dl, pl = self.dot_lanes, self.pv_lanes
        m.submodules.score, m.submodules.softmax = score, sm = self.score, self.softmax
        hists = self.history
        for j, master in enumerate(hists):
            m.submodules[f"history{j}" if len(hists) > 1 else "history"] = master
            wiring.connect(m, master.axi, wiring.flipped(self.axi_read[j] if len(hists) > 1 else self.axi_read))
        m.submodules.cache_writer = writer = self.cache_writer
        wiring.connect(m, writer.axi, wiring.flipped(self.axi_write))
        m.d.comb += self.error.eq(Cat(*(master.error for master in hists), writer.error).any())
        wiring.connect(m, sm.o, wiring.flipped(self.o))

        # ---- memories: queries and keys dot_lanes wide, values pv_lanes wide, by row and beat
        k_beat = data.ArrayLayout(unsigned(32), dl)
        v_beat = data.ArrayLayout(unsigned(32), pl)
        q_mem = memory.Memory(shape=k_beat, depth=C * H * S, init=[])
        k_mem = memory.Memory(shape=k_beat, depth=R * S, init=[])
        v_mem = memory.Memory(shape=v_beat, depth=R * G, init=[])
        s_mem = memory.Memory(shape=score_entry_layout(Q, R), depth=BANKS * T * Q, init=[])
        m.submodules.q_mem, m.submodules.k_mem, m.submodules.v_mem = q_mem, k_mem, v_mem
        m.submodules.s_mem = s_mem
        q_wp, q_rp = q_mem.write_port(), q_mem.read_port()
        k_wp, k_rp = k_mem.write_port(), k_mem.read_port()
        v_wp, v_rp = v_mem.write_port(), v_mem.read_port()
        s_wp, s_rp = s_mem.write_port(), s_mem.read_port()
        m.d.comb += [s_rp.addr.eq(sm.s_addr), sm.s_data.eq(s_rp.data), v_rp.addr.eq(sm.v_addr),
                     sm.v_data.eq(v_rp.data)]

        cmd = Signal(prefill_command_layout(C, self.addr_width))

        def gatherer(beat, name):
            """Beats of ``beat``'s width gathered towards the top of a word register: returns the
            register and the word with ``beat`` shifted in (its top dl or pl float32 are a
            memory word once enough beats arrived; the caller registers it on a beat)."""
            reg = Signal(32 * max(dl, pl), name=f"{name}_gather")
            value = Signal.like(reg, name=f"{name}_word")
            m.d.comb += value.eq(Cat(reg[len(beat):], beat) if len(reg) > len(beat) else beat)
            return reg, value

        # ---- load: per token the beats of its H query vectors, its key and its value, each
        # hd/load_lanes beats, gathered into memory words; with write_kv the key and value beats
        # also go to the cache (docs 6: the K row at k_base + pos 4 hd, the V row at v_base + ...),
        # a K burst and a V burst per token, commanded ahead of their data
        LL = self.load_lanes
        dw = self.data_width
        row_bytes = kv_row_bytes(hd, "fp32")
        row_beats = row_bytes * 8 // dw
        vec_beats = hd // LL
        split = LL * 32 // dw                      # AXI beats per load beat
        load = self.load
        index = Signal(range(C + 1))               # token being loaded
        vec = Signal(range(H + 2))                 # 0 .. H-1: query heads, H: key, H + 1: value
        beat_in_vec = Signal(range(max(vec_beats, 2)))
        sub = Signal(range(max(split, 2)))         # (never zero bits wide: lint-clean Verilog)
        gather, word = gatherer(load.payload.data.as_value(), "load")
        lw = len(word)
        is_k, is_v = vec == H, vec == H + 1
        to_cache = cmd.write_kv & (is_k | is_v)
        loading = Signal()
        m.d.comb += [load.ready.eq(loading & (~to_cache | (writer.wdata.ready & (sub == split - 1)))),
                     writer.wdata.valid.eq(loading & load.valid & to_cache),
                     writer.wdata.payload.eq(load.payload.data.as_value().word_select(sub, dw))]
        with m.If(writer.wdata.valid & writer.wdata.ready):
            m.d.sync += sub.eq(Mux(sub == split - 1, 0, sub + 1))
        take = Signal()
        m.d.comb += take.eq(load.valid & load.ready)
        k_per, v_per = dl // LL, pl // LL          # load beats per k/q word and per v word
        k_word_end = (beat_in_vec % k_per) == k_per - 1
        v_word_end = (beat_in_vec % v_per) == v_per - 1
        with m.If(take):
            m.d.sync += [gather.eq(word), beat_in_vec.eq(beat_in_vec + 1)]
            with m.If(beat_in_vec == vec_beats - 1):
                m.d.sync += [beat_in_vec.eq(0), vec.eq(vec + 1)]
                with m.If(is_v):
                    m.d.sync += [vec.eq(0), index.eq(index + 1)]
            with m.If(is_v):
                m.d.comb += [v_wp.en.eq(v_word_end), v_wp.addr.eq(index * G + beat_in_vec // v_per),
                             v_wp.data.eq(word[lw - 32 * pl:])]
            with m.Elif(is_k):
                m.d.comb += [k_wp.en.eq(k_word_end), k_wp.addr.eq(index * S + beat_in_vec // k_per),
                             k_wp.data.eq(word[lw - 32 * dl:])]
            with m.Else():
                m.d.comb += [q_wp.en.eq(k_word_end), q_wp.addr.eq((index * H + vec) * S + beat_in_vec // k_per),
                             q_wp.data.eq(word[lw - 32 * dl:])]
        # the cache commands, K row then V row per token, ahead of the data (the write master
        # takes W beats for the commands it has)
        ap_token = Signal(range(C + 1))
        ap_v = Signal()
        ap_active = Signal()
        writes_pending = Signal(range(2 * C + 3))  # commands whose responses are still to come
        m.d.sync += writes_pending.eq(writes_pending + (writer.cmd.valid & writer.cmd.ready) - writer.done)
        m.d.comb += [writer.cmd.valid.eq(ap_active & (ap_token != cmd.count)),
                     writer.cmd.payload.addr.eq(Mux(ap_v, cmd.v_base, cmd.k_base) + (cmd.pos0 + ap_token) * row_bytes),
                     writer.cmd.payload.beats.eq(row_beats)]
        with m.If(writer.cmd.valid & writer.cmd.ready):
            m.d.sync += ap_v.eq(~ap_v)
            with m.If(ap_v):
                m.d.sync += ap_token.eq(ap_token + 1)

        # ---- history filler: per query tile the tiles of positions 0..pos0-1 from the one
        # holding pos0-1 down to tile 0 (golden.key_tile_order's), each into slot requested % 2
        # once the accumulate side freed it (``freed``). A tile's K rows and V rows are
        # ``parts``, each a burst on its own read master with a descriptor (where its rows go)
        # queued beside it: one master, a K part then a V part; P masters, the K rows in P/2
        # pieces on masters 0..P/2-1 and the V rows on the others, all in flight at once. A
        # master's data side gathers its beats into memory words, which take the k_mem / v_mem
        # write port in turn (lowest master first); the tile is ``filled`` once every master
        # has written its last word of it.
        fill_left = Signal(range(C + 1))           # query tiles whose history is still to request
        requested, filled, freed, used = Signal(2), Signal(2), Signal(2), Signal(2)   # tiles, mod 4
        with m.If(sm.slot_freed):
            m.d.sync += freed.eq(freed + 1)
        slots = self.history_slots
        # the slot of the next tile to request and of the next to use: with two slots the low bit
        # of the tile counts, with three a counter of their own
        req_slot, use_slot = requested[0], used[0]
        if slots != 2:
            req_slot, use_slot = Signal(range(slots), name="req_slot"), Signal(range(slots), name="use_slot")
        fill_active = Signal()
        top_tile = Signal(POSITION)                # the tile holding pos0-1
        f_lo, f_hi = Signal(POSITION), Signal(POSITION)
        P = len(hists)
        pieces = max(P // 2, 1)
        # (master, is_v, piece) per part, in request order; a master's last part of a tile ends it
        parts = ([(0, 0, 0), (0, 1, 0)] if P == 1 else
                 [(j, 0, j) for j in range(pieces)] + [(pieces + j, 1, j) for j in range(pieces)])
        desc_layout = data.StructLayout({"row": range(R), "rows": range(T + 1), "is_v": 1, "tile_end": 1})
        descs = []
        for j in range(P):
            q = fifo.SyncFIFOBuffered(width=desc_layout.size, depth=4)
            m.submodules[f"history_desc{j}"] = q
            descs.append(q)
        n_rows = Signal(range(T + 1))
        piece_rows = Signal(range(T + 1))          # rows of a full piece: ceil(n / pieces)
        shift = (pieces - 1).bit_length()
        m.d.comb += [n_rows.eq(f_hi - f_lo), piece_rows.eq((n_rows + (pieces - 1)) >> shift)]
        with m.FSM(name="fill_requests"):
            with m.State("IDLE"):
                with m.If(fill_active & (fill_left != 0)):
                    m.d.sync += [f_lo.eq(top_tile), f_hi.eq(cmd.pos0)]
                    m.next = "SLOT"
            with m.State("SLOT"):
                with m.If((requested - freed)[:2] < slots):
                    m.next = "PART0"
            for k, (j, part_v, piece) in enumerate(parts):
                with m.State(f"PART{k}"):
                    first = Signal(range(T + 1), name=f"part{k}_first")
                    rows = Signal(range(T + 1), name=f"part{k}_rows")
                    m.d.comb += first.eq(piece * piece_rows)
                    m.d.comb += rows.eq(Mux(first >= n_rows, 0, Mux(n_rows - first < piece_rows,
                                                                     n_rows - first, piece_rows)))
                    q, master = descs[j], hists[j]
                    desc = Signal(desc_layout, name=f"part{k}_desc")
                    m.d.comb += [desc.row.eq(C + req_slot * T + first), desc.rows.eq(rows), desc.is_v.eq(part_v),
                                 desc.tile_end.eq(k == len(parts) - 1 or parts[k + 1][0] != j),
                                 q.w_data.eq(desc),
                                 master.cmd.payload.addr.eq((cmd.v_base if part_v else cmd.k_base)
                                                            + (f_lo + first) * row_bytes),
                                 master.cmd.payload.beats.eq(rows * row_beats)]
                    # the descriptor and the burst go together (an empty piece: the descriptor alone)
                    m.d.comb += master.cmd.valid.eq(q.w_rdy & (rows != 0))
                    with m.If(q.w_rdy & ((rows == 0) | master.cmd.ready)):
                        m.d.comb += q.w_en.eq(1)
                        m.next = f"PART{k + 1}" if k + 1 < len(parts) else "NEXT"
            with m.State("NEXT"):
                m.d.sync += [requested.eq(requested + 1), f_hi.eq(f_lo), f_lo.eq(f_lo - T)]
                if slots != 2:
                    m.d.sync += req_slot.eq(Mux(req_slot == slots - 1, 0, req_slot + 1))
                with m.If(f_lo == 0):
                    m.d.sync += fill_left.eq(fill_left - 1)
                    m.next = "IDLE"
                with m.Else():
                    m.next = "SLOT"
        # data side, per master: beat -> word (dl or pl float32) -> a pending word that takes
        # the k_mem / v_mem write port when granted (the master's R waits only when a word
        # completes while the previous one still waits for the port)
        k_beats, v_beats = dl * 32 // dw, pl * 32 // dw
        done_tiles = []
        pendings = []
        for j, (master, q) in enumerate(zip(hists, descs)):
            desc = Signal(desc_layout, name=f"hist{j}_desc")
            m.d.comb += desc.eq(q.r_data)
            d_row = Signal(range(T + 1), name=f"hist{j}_row")
            d_word = Signal(range(max(S, G, 2)), name=f"hist{j}_word")
            d_beat = Signal(range(max(k_beats, v_beats, 2)), name=f"hist{j}_beat")
            h_gather, h_word = gatherer(master.rdata.payload.data, f"hist{j}")
            pend = Signal(name=f"hist{j}_pending")
            pend_v = Signal(name=f"hist{j}_pending_v")
            pend_end = Signal(name=f"hist{j}_pending_tile_end")
            pend_addr = Signal(range(R * max(S, G)), name=f"hist{j}_pending_addr")
            pend_data = Signal(32 * max(dl, pl), name=f"hist{j}_pending_data")
            grant = Signal(name=f"hist{j}_grant")
            done = Signal(2, name=f"hist{j}_tiles")
            done_tiles.append(done)
            pendings.append((pend, pend_v, pend_addr, pend_data, grant))
            word_end = d_beat == Mux(desc.is_v, v_beats - 1, k_beats - 1)
            row_end = d_word == Mux(desc.is_v, G - 1, S - 1)
            last_beat = word_end & row_end & (d_row == desc.rows - 1)
            m.d.comb += master.rdata.ready.eq(q.r_rdy & (desc.rows != 0) & ~(pend & ~grant & word_end))
            with m.If(grant):
                m.d.sync += pend.eq(0)
                with m.If(pend_end):
                    m.d.sync += done.eq(done + 1)
            with m.If(master.rdata.valid & master.rdata.ready):
                m.d.sync += [h_gather.eq(h_word), d_beat.eq(d_beat + 1)]
                with m.If(word_end):
                    m.d.sync += [pend.eq(1), pend_v.eq(desc.is_v), pend_end.eq(last_beat & desc.tile_end),
                                 pend_addr.eq(Mux(desc.is_v, (desc.row + d_row) * G, (desc.row + d_row) * S) + d_word),
                                 pend_data.eq(h_word), d_beat.eq(0), d_word.eq(d_word + 1)]
                    with m.If(row_end):
                        m.d.sync += [d_word.eq(0), d_row.eq(d_row + 1)]
                        with m.If(last_beat):
                            m.d.sync += d_row.eq(0)
                            m.d.comb += q.r_en.eq(1)
            # an empty piece ends at once (once no word of the master waits: one tile at a time)
            with m.If(q.r_rdy & (desc.rows == 0) & ~pend):
                m.d.comb += q.r_en.eq(1)
                with m.If(desc.tile_end):
                    m.d.sync += done.eq(done + 1)
        # the write ports: the lowest pending master of each memory
        for want_v, wp, width in ((0, k_wp, dl), (1, v_wp, pl)):
            for k, (pend, pend_v, pend_addr, pend_data, grant) in enumerate(pendings):
                with (m.If if k == 0 else m.Elif)(pend & (pend_v == want_v)):
                    m.d.comb += [grant.eq(1), wp.en.eq(1), wp.addr.eq(pend_addr),
                                 wp.data.eq(pend_data[len(pend_data) - 32 * width:])]
        with m.If(Cat(*((done - filled)[:2] != 0 for done in done_tiles)).all()):
            m.d.sync += filled.eq(filled + 1)

        # ---- score side
        t_hi = Signal(range(C + 1))                # the query tile: chunk tokens [t_lo, t_hi)
        t_lo = Signal(range(C + 1))
        qn = Signal(range(Q + 1))
        qpos0 = Signal(POSITION)                   # position of the query tile's first token
        lo, hi = Signal(POSITION), Signal(POSITION)   # the key tile [lo, hi)
        first_tile = Signal()
        p = Signal(POSITION)                       # key position
        i = Signal(range(Q + 1))
        step = Signal(range(max(S, 2)))
        q_addr = Signal(range(C * H * S + 1))
        row = Signal(range(R))
        pairs = Signal(range(T * Q + 1))
        started, taken = Signal(2), Signal(2)      # key tiles the score side started / the softmax took
        issued_tiles, landed_tiles = Signal(2), Signal(2)
        hist_tile = Signal()                       # the key tile has positions below pos0
        hslot = Signal(range(slots))

        def key_setup(pos):
            """Registers for key position ``pos`` of the current tile: its row, the first query
            that sees it, the query address."""
            first_q = Signal(range(Q + 1), name="first_q")
            m.d.comb += first_q.eq(Mux(pos > qpos0, (pos - qpos0) * H, 0))
            m.d.sync += [p.eq(pos), i.eq(first_q), q_addr.eq(t_lo * (H * S) + first_q * S), step.eq(0),
                         row.eq(Mux(pos >= cmd.pos0, pos - cmd.pos0, C + hslot * T + (pos - lo)))]

        # issue: the beat read now meets DotScore next cycle with its tags
        iss_valid = Signal()
        m.d.comb += [q_rp.addr.eq(q_addr), k_rp.addr.eq(row * S + step)]
        pair_tag = data.StructLayout({"i": range(Q), "row": range(R), "tile_last": 1, "qtile_first": 1})
        iss_tag = Signal(pair_tag)
        s_valid, s_step = Signal(), Signal(range(max(S, 2)))
        s_tag = Signal(pair_tag)
        m.d.sync += [s_valid.eq(iss_valid), s_step.eq(step), s_tag.eq(iss_tag)]
        m.d.comb += [score.valid.eq(s_valid), score.step.eq(s_step), score.q.eq(q_rp.data), score.k.eq(k_rp.data)]
        tag = delay(m, s_tag, score.latency, "score_tag")
        # landing: the score buffer, and each query's running max m' (FMax: one cycle) in the
        # bank of the tile, from the previous tile's bank at the query's first score in a tile
        # (from -inf in the query tile's first key tile)
        land_n = Signal(range(T * Q + 1))
        land_bank = Signal(range(BANKS))
        m.d.comb += [s_wp.addr.eq(land_bank * (T * Q) + land_n), s_wp.data.s.eq(score.o), s_wp.data.i.eq(tag.i),
                     s_wp.data.row.eq(tag.row), s_wp.en.eq(score.o_valid)]
        max_mem = memory.Memory(shape=32, depth=BANKS * Q, init=[])
        m.submodules.max_mem = max_mem
        max_wp, max_rp, sm_rp = max_mem.write_port(), max_mem.read_port(domain="comb"), max_mem.read_port(domain="comb")
        m.d.comb += [sm_rp.addr.eq(sm.m_addr), sm.m_data.eq(sm_rp.data)]
        seen = Signal(Q)                           # queries with a score landed in this tile
        first_score = ~seen.bit_select(tag.i, 1)
        prev_bank = Mux(land_bank == 0, BANKS - 1, land_bank - 1)
        m.d.comb += max_rp.addr.eq(Mux(first_score, prev_bank, land_bank) * Q + tag.i)
        fmax = add_unit(m, "run_max", FMax(), a=Mux(first_score & tag.qtile_first, NEG_INF, max_rp.data), b=score.o)
        max_valid = Signal()
        max_addr = Signal(range(BANKS * Q))
        max_last = Signal()
        m.d.sync += [max_valid.eq(score.o_valid), max_addr.eq(land_bank * Q + tag.i), max_last.eq(0)]
        m.d.comb += [max_wp.en.eq(max_valid), max_wp.addr.eq(max_addr), max_wp.data.eq(fmax.o)]
        with m.If(score.o_valid):
            m.d.sync += [land_n.eq(land_n + 1), seen.eq(seen | (1 << tag.i))]
            with m.If(tag.tile_last):
                m.d.sync += [land_n.eq(0), seen.eq(0), max_last.eq(1),
                             land_bank.eq(Mux(land_bank == BANKS - 1, 0, land_bank + 1))]
        with m.If(max_last):                       # the tile's last m' is written
            m.d.sync += [landed_tiles.eq(landed_tiles + 1)]

        # descriptors: pushed when a tile's last pair issues, offered once its scores landed
        dfifo = fifo.SyncFIFOBuffered(width=key_tile_layout(T, Q, C).size, depth=BANKS + 1)
        m.submodules.dfifo = dfifo
        desc = Signal(key_tile_layout(T, Q, C))
        m.d.comb += [dfifo.w_data.eq(desc), sm.tile.payload.eq(dfifo.r_data),
                     sm.tile.valid.eq(dfifo.r_rdy & (taken != landed_tiles)), dfifo.r_en.eq(sm.tile.ready)]
        with m.If(sm.tile.valid & sm.tile.ready):
            m.d.sync += taken.eq(taken + 1)
        m.d.comb += [desc.pairs.eq(pairs + 1), desc.qn.eq(qn), desc.first.eq(first_tile), desc.last.eq(lo == 0),
                     desc.hist.eq(hist_tile), desc.t_lo.eq(t_lo), desc.tokens.eq(t_hi - t_lo)]

        with m.FSM(name="prefill") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [cmd.eq(self.cmd.payload), index.eq(0), vec.eq(0), beat_in_vec.eq(0), sub.eq(0),
                                 ap_token.eq(0), ap_v.eq(0), ap_active.eq(self.cmd.payload.write_kv)]
                    with m.If(self.cmd.payload.count != 0):
                        m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += loading.eq(1)
                with m.If(take & is_v & (beat_in_vec == vec_beats - 1) & (index == cmd.count - 1)):
                    m.next = "LOAD_END"
            with m.State("LOAD_END"):
                # every token in the memories (its append's responses may still come); query tiles
                # from the last
                last = cmd.pos0 + cmd.count - 1
                tiles = Signal(range(C + 1))           # query tiles of the pass
                m.d.comb += tiles.eq(last // T - cmd.pos0 // T + 1)
                m.d.sync += [t_hi.eq(cmd.count), fill_left.eq(Mux(cmd.pos0 != 0, tiles, 0)),
                             fill_active.eq(1), top_tile.eq((cmd.pos0 - 1) // T * T)]
                m.next = "QTILE"
            with m.State("QTILE"):
                top = cmd.pos0 + t_hi - 1
                tile_lo = top // T * T
                m.d.sync += [t_lo.eq(Mux(tile_lo > cmd.pos0, tile_lo - cmd.pos0, 0)), first_tile.eq(1),
                             lo.eq(tile_lo), hi.eq(top + 1)]
                m.next = "QTILE_SET"
            with m.State("QTILE_SET"):
                m.d.sync += [qn.eq((t_hi - t_lo) * H), qpos0.eq(cmd.pos0 + t_lo)]
                m.next = "TILE_WAIT"
            with m.State("TILE_WAIT"):
                # a score bank is free once the softmax took the tile BANKS before; a tile
                # below pos0 waits for its history slot
                bank_free = (started - taken)[:2] < BANKS
                slot_ready = ~(lo < cmd.pos0) | ((filled - used)[:2] != 0)
                with m.If(bank_free & slot_ready):
                    m.d.sync += [started.eq(started + 1), hist_tile.eq(lo < cmd.pos0), hslot.eq(use_slot), pairs.eq(0)]
                    with m.If(lo < cmd.pos0):
                        m.d.sync += used.eq(used + 1)
                        if slots != 2:
                            m.d.sync += use_slot.eq(Mux(use_slot == slots - 1, 0, use_slot + 1))
                    m.next = "KEY"
            with m.State("KEY"):
                key_setup(lo)
                m.next = "ISSUE"
            with m.State("ISSUE"):
                # one beat per cycle; with one beat per pair, a free cycle after each pair (the
                # running max of a query takes two cycles to update)
                gap = Signal()
                if S == 1:
                    m.d.sync += gap.eq(~gap)
                with m.If(~gap):
                    m.d.comb += [iss_valid.eq(1), iss_tag.i.eq(i), iss_tag.row.eq(row), iss_tag.qtile_first.eq(first_tile)]
                    m.d.sync += [step.eq(step + 1), q_addr.eq(q_addr + 1)]
                    with m.If(step == S - 1):
                        m.d.sync += [step.eq(0), i.eq(i + 1), pairs.eq(pairs + 1)]
                        with m.If(i == qn - 1):
                            with m.If(p == hi - 1):
                                m.d.comb += [iss_tag.tile_last.eq(1), dfifo.w_en.eq(1)]
                                m.d.sync += [issued_tiles.eq(issued_tiles + 1), first_tile.eq(0)]
                                with m.If(lo == 0):
                                    m.d.sync += t_hi.eq(t_lo)
                                    with m.If(t_lo == 0):
                                        m.next = "FINISH"
                                    with m.Else():
                                        m.next = "QTILE"
                                with m.Else():
                                    m.d.sync += [hi.eq(lo), lo.eq(lo - T)]
                                    m.next = "TILE_WAIT"
                            with m.Else():
                                key_setup(p + 1)
            with m.State("FINISH"):
                # outputs out, cache appends acknowledged, history read
                with m.If(sm.idle & (issued_tiles == landed_tiles) & (taken == landed_tiles) & ~dfifo.r_rdy
                          & (writes_pending == 0) & (fill_left == 0)):
                    m.d.sync += [fill_active.eq(0), ap_active.eq(0)]
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
