"""Online softmax and P.V accumulation of a query tile, one key tile at a time
(docs/architecture.md 3.8 and 8, ``golden.attention_query``)."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .attention import NEG_INF
from .attn_prefill import prefill_out_layout
from .fp32 import Exp, FAdd, FMul, Recip, add_unit
from .pipeline import delay

__all__ = ["SoftmaxAccumulator", "score_entry_layout", "key_tile_layout", "BANKS"]

#: Item kinds between the exp side and the accumulate side.
RESCALE, PAIR, END = 0, 1, 2

#: Score buffer banks: the score side runs up to two key tiles ahead of the exp side, so a
#: short diagonal tile followed by a full one does not leave the accumulate side waiting.
BANKS = 3


def score_entry_layout(queries: int, rows: int) -> data.StructLayout:
    """One score of a key tile, in the order the score side computed it: the score, the query
    (index in the query tile) and the on-chip row of its key (where its value row is)."""
    return data.StructLayout({"s": unsigned(32), "i": range(queries), "row": range(rows)})


def key_tile_layout(tile: int, queries: int, chunk: int) -> data.StructLayout:
    """One key tile of a query tile: its ``pairs`` scores, the query tile's ``qn`` queries
    (``tokens`` chunk tokens from ``t_lo``, ``heads`` each), whether it is the query tile's
    first (its diagonal tile) and last (tile 0) key tile, and whether its keys use a history
    slot (``hist``)."""
    return data.StructLayout({"pairs": range(tile * queries + 1), "qn": range(queries + 1), "first": 1, "last": 1,
                              "hist": 1, "t_lo": range(max(chunk, 2)), "tokens": range(tile + 1)})


class SoftmaxAccumulator(wiring.Component):
    """For each key tile described on ``tile`` (after the score side has written its scores to
    bank b of the score buffer, b = 0, 1, 2, 0, ..., and each query's m' to entry b Q + i of
    the maxima it reads through ``m_addr``/``m_data``): per
    query i of the query tile a = exp(m_i - m'_i) (m_i = -inf on the query tile's first key
    tile), l_i = l_i * a, o_i = o_i * a (from l = 0, o = 0 on the first), m_i = m'_i; then in
    score order, for each score s of query i and key row r: p = exp(s - m'_i), l_i = l_i + p,
    o_i = o_i + p * v_r. After the query tile's last key tile: o_i * recip(l_i) leaves on ``o``
    for tokens descending, heads ascending (``golden.attention_query``'s operations, each
    query's in its own order; queries interleave, which hides the adders' loop).

    Two sides joined by a FIFO: the exp side reads the scores and issues one exp per cycle
    (FAdd subtract + Exp, 67 cycles deep); the accumulate side takes an item every
    head_dim/lanes cycles (``lanes`` FMul + FAdd on o, one FMul and one FAdd on l), waiting
    only where an o entry would be read before its previous update is written (the same
    (query, lane group) within 5 cycles: queries x groups < 6) or where a rescale and a
    product would meet in the multipliers. Throughput: one (query, key) pair per
    max(1, head_dim/lanes) cycles; per key tile about 10 cycles of drain; per query tile
    about 40 + queries cycles (recip) + queries x head_dim/lanes (output) cycles.

    Memories: o (queries x head_dim float32, ``lanes`` wide: block RAM), l, m and 1/l (one
    float32 per query: distributed RAM).

    Parameters (keyword-only): ``head_dim``, ``tile``, ``heads`` (queries per token),
    ``chunk``, ``rows`` (on-chip key rows), ``lanes`` (P.V lanes), ``out_lanes`` (dividing
    lanes).

    Ports: ``tile`` (In stream, key_tile_layout: taken when its scores are read), ``m_addr``
    (Out) / ``m_data`` (In: m' of query i in bank b at b Q + i, combinational), ``s_addr`` (Out) /
    ``s_data`` (In: the score buffer, data the cycle after the address), ``v_addr`` / ``v_data``
    (the value rows, the same), ``o`` (Out stream, ``prefill_out_layout(out_lanes, heads, chunk)``), ``slot_freed``
    (Out: a key tile that used a history slot has read its values), ``idle`` (Out).
    """

    def __init__(self, *, head_dim: int, tile: int, heads: int, chunk: int, rows: int, lanes: int, out_lanes: int):
        for name, value in (("head_dim", head_dim), ("tile", tile), ("heads", heads), ("chunk", chunk),
                            ("rows", rows), ("lanes", lanes), ("out_lanes", out_lanes)):
            check_positive_int(name, value)
        if head_dim % lanes:
            raise ValueError(f"lanes ({lanes}) must divide head_dim ({head_dim})")
        if lanes % out_lanes:
            raise ValueError(f"out_lanes ({out_lanes}) must divide lanes ({lanes})")
        self.head_dim, self.tile_size, self.heads, self.chunk, self.rows = head_dim, tile, heads, chunk, rows
        self.lanes, self.out_lanes = lanes, out_lanes
        self.groups = head_dim // lanes
        self.queries = Q = tile * heads
        super().__init__({
            "tile": In(stream.Signature(key_tile_layout(tile, Q, chunk))),
            "m_addr": Out(range(BANKS * Q)), "m_data": In(32),
            "s_addr": Out(range(BANKS * tile * Q)), "s_data": In(score_entry_layout(Q, rows)),
            "v_addr": Out(range(rows * self.groups)), "v_data": In(data.ArrayLayout(unsigned(32), lanes)),
            "o": Out(stream.Signature(prefill_out_layout(out_lanes, heads, chunk))),
            "slot_freed": Out(1), "idle": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        Q, T, H, G, L = self.queries, self.tile_size, self.heads, self.groups, self.lanes
        chunk_idx = range(max(self.chunk, 2))
        item = data.StructLayout({"kind": 2, "i": range(Q), "row": range(self.rows), "first": 1, "last": 1,
                                  "hist": 1, "t_lo": chunk_idx, "tokens": range(T + 1)})

        # ---- m per query (m' comes from the score side's banks: m_addr / m_data)
        m_old = memory.Memory(shape=32, depth=Q, init=[])
        m.submodules.m_old = m_old
        m_old_w, m_old_r = m_old.write_port(), m_old.read_port(domain="comb")

        # ---- exp side: per key tile a RESCALE item per query, a PAIR item per score; END
        # after a query tile's last key tile. An item is requested in one cycle (``issue``;
        # a PAIR's score is read then) and its operands meet the subtractor in the next (``req``).
        desc = self.tile.payload
        bank = Signal(range(BANKS))
        x_count = Signal(range(T * Q + 1))           # next query (RESCALE) or score (PAIR)
        req = Signal(item)
        req_valid = Signal()
        req_pair = Signal()
        end_desc = Signal(item)                      # the query tile of the END item to come
        exp_latency = FAdd.latency + Exp.latency
        fifo_depth = max(16, -(-(exp_latency + 8) // G) + 4)
        items = fifo.SyncFIFOBuffered(width=32 + item.size, depth=fifo_depth)
        m.submodules.items = items
        reserved = Signal(range(fifo_depth + 1))     # items requested and not yet taken
        issue = Signal()
        pop = Signal()
        room = Signal()
        m.d.comb += [room.eq(reserved < fifo_depth), self.s_addr.eq(bank * (T * Q) + x_count)]
        m.d.sync += [req_valid.eq(issue), reserved.eq(reserved + issue - pop)]
        op_i = Signal(range(Q))
        m.d.comb += [op_i.eq(Mux(req_pair, self.s_data.i, req.i)), m_old_r.addr.eq(op_i)]
        m.d.comb += self.m_addr.eq(bank * Q + op_i)
        new_sel = self.m_data
        sub = add_unit(m, "sub", FAdd(subtract=True),
                       a=Mux(req_pair, self.s_data.s, Mux(req.first, NEG_INF, m_old_r.data)), b=new_sel)
        expo = add_unit(m, "exp", Exp(), a=sub.o)
        tag = Signal(item)
        m.d.comb += [tag.eq(req), tag.i.eq(op_i)]
        with m.If(req_pair):
            m.d.comb += tag.row.eq(self.s_data.row)
        tag_out = delay(m, tag, exp_latency, "exp_tag")
        valid_out = Signal(exp_latency)
        m.d.sync += valid_out.eq(Cat(req_valid, valid_out[:-1]))
        m.d.comb += [items.w_en.eq(valid_out[-1]), items.w_data.eq(Cat(expo.o, tag_out))]
        with m.If(req_valid & (req.kind == RESCALE)):
            m.d.comb += [m_old_w.en.eq(1), m_old_w.addr.eq(req.i), m_old_w.data.eq(new_sel)]
        m.d.sync += req_pair.eq(0)
        with m.FSM(name="exp_side") as exp_fsm:
            with m.State("IDLE"):
                with m.If(self.tile.valid):
                    m.d.sync += x_count.eq(0)
                    m.next = "RESCALE"
            with m.State("RESCALE"):
                with m.If(room):
                    m.d.comb += issue.eq(1)
                    m.d.sync += [req.kind.eq(RESCALE), req.i.eq(x_count), req.first.eq(desc.first),
                                 x_count.eq(x_count + 1)]
                    with m.If(x_count == desc.qn - 1):
                        m.d.sync += x_count.eq(0)
                        m.next = "PAIR"
            with m.State("PAIR"):
                with m.If(room):
                    m.d.comb += issue.eq(1)
                    m.d.sync += [req.kind.eq(PAIR), req_pair.eq(1), req.first.eq(0), req.hist.eq(desc.hist),
                                 req.last.eq(x_count == desc.pairs - 1), x_count.eq(x_count + 1)]
                    with m.If(x_count == desc.pairs - 1):
                        m.next = "TILE_END"
            with m.State("TILE_END"):
                # the tile's scores are read (the last one this cycle): the bank goes back
                m.d.comb += self.tile.ready.eq(1)
                m.d.sync += [bank.eq(Mux(bank == BANKS - 1, 0, bank + 1)), end_desc.t_lo.eq(desc.t_lo), end_desc.tokens.eq(desc.tokens)]
                with m.If(desc.last):
                    m.next = "END"
                with m.Else():
                    m.next = "IDLE"
            with m.State("END"):
                with m.If(room):
                    m.d.comb += issue.eq(1)
                    m.d.sync += [req.eq(end_desc), req.kind.eq(END)]
                    m.next = "IDLE"

        # ---- accumulate side. An issue in cycle c: a PAIR reads its value row (c), multiplies
        # it by p (c+1 .. c+4); every kind reads its o entry at c+4 (data at c+5); c+5 .. c+8:
        # o + p v (PAIR), o * a (RESCALE) or o * (1/l) (END: output); c+9: o written (or the
        # output pushed). st[k] holds the issue of c-1-k.
        head_val = Signal(32)
        head = Signal(item)
        m.d.comb += [head_val.eq(items.r_data[:32]), head.eq(items.r_data[32:])]
        g = Signal(range(max(G, 2)))              # (never zero bits wide: lint-clean Verilog)
        issue_layout = data.StructLayout({"kind": 2, "addr": range(Q * G), "i": range(Q), "first": 1, "last": 1,
                                          "head": range(max(H, 2)), "token": chunk_idx})
        slot = data.StructLayout({"valid": 1, **issue_layout.members})
        STAGES = 9
        iss = Signal(issue_layout)                   # the issue, and apart its valid bit (which
        iss_valid = Signal()                         # depends on the hazard check of iss)
        iss_val = Signal(32)
        st = [Signal(slot, name=f"acc_st{k}") for k in range(STAGES)]
        val = [Signal(32, name=f"acc_val{k}", reset_less=True) for k in range(5)]
        m.d.sync += [st[0].eq(Cat(iss_valid, iss)), val[0].eq(iss_val)]
        m.d.sync += [st[k].eq(st[k - 1]) for k in range(1, STAGES)]
        m.d.sync += [val[k].eq(val[k - 1]) for k in range(1, len(val))]

        o_mem = memory.Memory(shape=data.ArrayLayout(unsigned(32), L), depth=Q * G, init=[])
        l_mem = memory.Memory(shape=32, depth=Q, init=[])
        inv_mem = memory.Memory(shape=32, depth=Q, init=[])
        m.submodules.o_mem, m.submodules.l_mem, m.submodules.inv_mem = o_mem, l_mem, inv_mem
        o_w, o_r = o_mem.write_port(), o_mem.read_port()
        l_w, l_r = l_mem.write_port(), l_mem.read_port(domain="comb")
        inv_w, inv_r = inv_mem.write_port(), inv_mem.read_port(domain="comb")
        m.d.comb += [o_r.addr.eq(st[3].addr), o_r.en.eq(1), inv_r.addr.eq(st[4].i)]
        late = st[4].valid & (st[4].kind != PAIR)    # o * a or o * (1/l) in the multipliers now
        b_late = Mux(st[4].kind == RESCALE, val[4], inv_r.data)
        muls, adds = [], []
        for k in range(L):
            old = o_r.data[k]
            a_late = Mux(st[4].first, 0, old)
            mul = add_unit(m, f"pv_mul{k}", FMul(), a=Mux(late, a_late, self.v_data[k]), b=Mux(late, b_late, val[0]))
            muls.append(mul)
            adds.append(add_unit(m, f"o_add{k}", FAdd(), a=old, b=mul.o))
        done = st[STAGES - 1]
        with m.If(done.valid & (done.kind != END)):
            m.d.comb += [o_w.en.eq(1), o_w.addr.eq(done.addr)]
            m.d.comb += [o_w.data[k].eq(Mux(done.kind == PAIR, adds[k].o, muls[k].o)) for k in range(L)]

        # l: l * a (RESCALE) or l + p (PAIR) at an item's first group, written 4 cycles later
        l_issue = iss_valid & (iss.kind != END) & (g == 0)
        m.d.comb += l_r.addr.eq(iss.i)
        l_mul = add_unit(m, "l_mul", FMul(), a=Mux(iss.first, 0, l_r.data), b=iss_val)
        l_add = add_unit(m, "l_add", FAdd(), a=l_r.data, b=iss_val)
        assert FMul.latency == FAdd.latency
        l_late = delay(m, Cat(iss.i, iss.kind == PAIR, l_issue), FMul.latency, "l_tag", valid=True)
        with m.If(l_late[-1]):
            m.d.comb += [l_w.en.eq(1), l_w.addr.eq(l_late[:-2]), l_w.data.eq(Mux(l_late[-2], l_add.o, l_mul.o))]

        # hazards: an o entry issued in the last 5 cycles is not written yet; a PAIR's product
        # would meet (c+1) the multiplication of an item issued 4 cycles before it (c+5)
        same = Cat(*[st[k].valid & (st[k].addr == iss.addr) for k in range(5)]).any()
        clash = st[3].valid & (st[3].kind != PAIR) & (iss.kind == PAIR)
        can = Signal()
        m.d.comb += can.eq(~same & ~clash)

        # ---- output: 1/l per query, then o * (1/l) through the multipliers into a FIFO
        rcp_issue = Signal()
        rcp = add_unit(m, "recip", Recip(), a=l_r.data)
        rcp_late = delay(m, Cat(iss.i, rcp_issue), Recip.latency, "rcp_tag", valid=True)
        with m.If(rcp_late[-1]):
            m.d.comb += [inv_w.en.eq(1), inv_w.addr.eq(rcp_late[:-1]), inv_w.data.eq(rcp.o)]
        out_beat = prefill_out_layout(L, H, self.chunk)
        out_depth = 16
        outq = fifo.SyncFIFOBuffered(width=out_beat.size, depth=out_depth)
        m.submodules.outq = outq
        out_reserved = Signal(range(out_depth + 1))  # output issues not yet popped
        out_issue, out_pop = Signal(), Signal()
        m.d.sync += out_reserved.eq(out_reserved + out_issue - out_pop)
        push = Signal(out_beat)
        m.d.comb += [push.last.eq(done.last), push.head.eq(done.head), push.token.eq(done.token)]
        m.d.comb += [push.data[k].eq(muls[k].o) for k in range(L)]
        m.d.comb += [outq.w_en.eq(done.valid & (done.kind == END)), outq.w_data.eq(push)]
        # lanes -> out_lanes
        parts = L // self.out_lanes
        part = Signal(range(max(parts, 2)))
        beat = Signal(out_beat)
        final = Signal()
        m.d.comb += [beat.eq(outq.r_data), final.eq(part == parts - 1), self.o.valid.eq(outq.r_rdy),
                     self.o.payload.data.as_value().eq(beat.data.as_value().word_select(part, 32 * self.out_lanes)),
                     self.o.payload.last.eq(beat.last & final), self.o.payload.head.eq(beat.head),
                     self.o.payload.token.eq(beat.token)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += part.eq(Mux(final, 0, part + 1))
            m.d.comb += [out_pop.eq(final), outq.r_en.eq(final)]

        # ---- accumulate side control
        cur = Signal(item)                           # the query tile whose outputs run
        q_idx = Signal(range(Q + 1))
        t_idx = Signal(range(T + 1))
        h_idx = Signal(range(max(H, 2)))
        wait = Signal(range(64))
        m.d.comb += [iss_val.eq(head_val), iss.i.eq(head.i), iss.first.eq(head.first), iss.last.eq(head.last),
                     iss.kind.eq(head.kind), iss.addr.eq(head.i * G + g), self.v_addr.eq(head.row * G + g)]
        with m.FSM(name="acc_side") as acc_fsm:
            with m.State("ITEM"):
                with m.If(items.r_rdy & (head.kind == END)):
                    m.d.comb += [items.r_en.eq(1), pop.eq(1)]
                    m.d.sync += [cur.eq(head), wait.eq(0), q_idx.eq(0)]
                    m.next = "DRAIN"
                with m.Elif(items.r_rdy & can):
                    m.d.comb += iss_valid.eq(1)
                    m.d.sync += g.eq(g + 1)
                    with m.If(g == G - 1):
                        m.d.sync += g.eq(0)
                        m.d.comb += [items.r_en.eq(1), pop.eq(1),
                                     self.slot_freed.eq((head.kind == PAIR) & head.last & head.hist)]
            with m.State("DRAIN"):
                # every o and l update of the query tile written
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == STAGES + 1):
                    m.next = "RECIP"
            with m.State("RECIP"):
                m.d.comb += [rcp_issue.eq(1), iss.i.eq(q_idx)]
                m.d.sync += q_idx.eq(q_idx + 1)
                with m.If(q_idx == cur.tokens * H - 1):
                    m.d.sync += [wait.eq(0), t_idx.eq(cur.tokens - 1), h_idx.eq(0), g.eq(0)]
                    m.next = "RECIP_DRAIN"
            with m.State("RECIP_DRAIN"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == Recip.latency + 1):
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                # tokens descending, heads ascending, lane groups ascending
                q_out = Signal(range(Q))
                m.d.comb += [q_out.eq(t_idx * H + h_idx), iss.kind.eq(END), iss.i.eq(q_out),
                             iss.addr.eq(q_out * G + g), iss.first.eq(0), iss.last.eq(g == G - 1),
                             iss.head.eq(h_idx), iss.token.eq(cur.t_lo + t_idx)]
                with m.If(out_reserved < out_depth):
                    m.d.comb += [iss_valid.eq(1), out_issue.eq(1)]
                    m.d.sync += g.eq(g + 1)
                    with m.If(g == G - 1):
                        m.d.sync += [g.eq(0), h_idx.eq(h_idx + 1)]
                        with m.If(h_idx == H - 1):
                            m.d.sync += [h_idx.eq(0), t_idx.eq(t_idx - 1)]
                            with m.If(t_idx == 0):
                                m.next = "ITEM"
        stages_busy = Cat(*[s.valid for s in st]).any()
        m.d.comb += self.idle.eq(exp_fsm.ongoing("IDLE") & ~self.tile.valid & (reserved == 0) & acc_fsm.ongoing("ITEM")
                                 & ~stages_busy & (out_reserved == 0))
        return m
