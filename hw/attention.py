"""Attention core: one query against a stream of keys/values with an online softmax
(docs/architecture.md 3.8, ``golden.attention_query``)."""

import functools

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import ATTN_FORMATS, check_positive_int
from ..contract.fp32 import ACC_INTERLEAVE
from .fp32 import Exp, FAdd, FMax, FMul, FromInt, Recip, _bits, add_unit
from .pipeline import f32_tree, f32_vec

__all__ = ["AttentionCore", "query_layout", "key_layout", "kv_element_shape", "check_attn_format"]

NEG_INF = 0xFF800000

#: Shape of a token position (in the KV cache, in commands and in position counters): 16 bits,
#: contexts of up to 65,536 tokens (``HardwareConfig.max_context`` is 2048 on the KV260).
POSITION = unsigned(16)


def check_attn_format(attn_format) -> str:
    """``attn_format`` if it is one of ``ATTN_FORMATS``; else a ValueError naming them."""
    if attn_format not in ATTN_FORMATS:
        raise ValueError(f"attn_format must be one of {', '.join(ATTN_FORMATS)}, got {attn_format!r}")
    return attn_format


def kv_element_shape(attn_format: str):
    """One cached K/V (and query) element: signed(8) (``"int8"``) or float32 bits (``"fp32"``)."""
    return signed(8) if check_attn_format(attn_format) == "int8" else unsigned(32)


def query_layout(head_dim: int, attn_format: str = "int8") -> data.StructLayout:
    """One query: int8 values and their dequantisation scale d_q (``"int8"``), or float32
    values (``"fp32"``)."""
    if check_attn_format(attn_format) == "fp32":
        return data.StructLayout({"q": data.ArrayLayout(unsigned(32), head_dim)})
    return data.StructLayout({"q": data.ArrayLayout(signed(8), head_dim), "d_q": unsigned(32)})


def key_layout(head_dim: int, attn_format: str = "int8") -> data.StructLayout:
    """One key/value position in visiting order; ``tile_last`` ends a tile, ``last`` the query.
    int8 rows with their scales, or float32 rows (``"fp32"``)."""
    if check_attn_format(attn_format) == "fp32":
        return data.StructLayout({
            "k": data.ArrayLayout(unsigned(32), head_dim), "v": data.ArrayLayout(unsigned(32), head_dim),
            "tile_last": unsigned(1), "last": unsigned(1),
        })
    return data.StructLayout({
        "k": data.ArrayLayout(signed(8), head_dim), "k_scale": unsigned(32),
        "v": data.ArrayLayout(signed(8), head_dim), "v_scale": unsigned(32),
        "tile_last": unsigned(1), "last": unsigned(1),
    })


class AttentionCore(wiring.Component):
    """Computes one head's attention output for each query on ``query`` from the keys and values
    that follow on ``keys`` (visiting order of ``golden.key_tile_order``: tiles marked by
    ``tile_last``, the query's final key by ``last``), bit-exact with ``golden.attention_query``
    in the cache/query format ``attn_format``.

    Per tile: SCORE (one key per hd/dot_lanes + 2 cycles in int8, + 1 in fp32, and the running
    max), SOFTMAX (p_j = exp(s_j - m'), a = exp(m - m'), one key per cycle), RESCALE (l *= a,
    o *= a) and ACCUMULATE (for j ascending: l += p_j; o += w_j * v_j, ``pv_lanes`` elements per
    cycle and at least 5 cycles per key: the adder's latency and the write back). After the last
    tile: o * recip(l) leaves on ``o`` in beats of ``out_lanes``. The formats differ in SCORE and
    in the weights and values of ACCUMULATE (``golden.attention_scores``/``attention_values``):

    - ``"int8"``: the int8 dot product q_q . k_q (``dot_lanes`` MACs per cycle, exact), then
      s = (from_int(dot) * d_k) * (d_q * fp32(1/sqrt(hd))); w_j = p_j * d_v[j], v_j =
      from_int(v_q[j]);
    - ``"fp32"``: s = vector_sum(k * q, dot_lanes) * fp32(1/sqrt(hd)) on float32 rows and query:
      ``dot_lanes`` FMul per cycle, their pairwise FAdd tree, one accumulating FAdd holding
      ``ACC_INTERLEAVE`` (= its latency) interleaved partials (beat b into partial b mod 4, the
      key's first four beats from +0), the pairwise tree of the 4 partials, an FMul by the
      constant; w_j = p_j, v_j the float32 row (no FromInt, no d_v multiply). ``dot_lanes`` must
      be a power of two (the beat tree).

    The phases run one after another (no overlap between tiles yet): per tile about
    keys*(hd/dot_lanes + 3 + max(5, hd/pv_lanes)) + 120 cycles in int8 and
    keys*(hd/dot_lanes + 2 + max(5, hd/pv_lanes)) + 140 in fp32 (its score pipeline is 36
    cycles deep at 16 lanes, against 11), plus about 50 per query for the output. Measured at
    hd 96, tile 32, dot_lanes 16: 14 cycles per key and 139 per tile in fp32 (pv_lanes 16),
    14 and 121 in int8 (pv_lanes 32); e.g. 253 keys in 4703 cycles (fp32) and 4559 (int8)
    (``build/rtl/attention-cycles-core_*.json``).

    Ports: ``query`` (In stream, query_layout(hd, attn_format)), ``keys`` (In stream,
    key_layout(hd, attn_format)), ``o`` (Out stream, ``f32_vec(out_lanes)``).

    Latency and throughput: as above, per tile; a query is taken once the previous one's output
    has drained.

    Cost at hd 96, tile 32, 16/16/8 lanes (Yosys ``synth_xilinx -family xcup``, no block RAM):
    int8 35.4 K LUT-eq, 27.2 K FF, 128 DSP (``bench/results/attention.json``); fp32 49.5 K
    LUT-eq, 33.6 K FF, 138 DSP (1.8 K LUTs of it distributed RAM). In fp32 the int8 MACs, the
    int32 accumulator, FromInt and two FMuls of the score become dot_lanes FMul, dot_lanes + 3
    FAdd (the beat tree, the accumulator, the partial tree) and one FMul; the pv_lanes FromInt,
    the d_v FMul and the w/d_v buffers go; the key and query registers and the value buffer
    (tile x hd, distributed RAM) hold 32-bit instead of 8-bit elements.

    Parameters (keyword-only): ``head_dim``, ``tile`` (most keys per tile), ``dot_lanes``,
    ``pv_lanes``, ``out_lanes`` (each dividing head_dim), ``attn_format`` (``"int8"`` or
    ``"fp32"``).
    """

    def __init__(self, *, head_dim: int, tile: int, dot_lanes: int = 16, pv_lanes: int = 16, out_lanes: int = 8,
                 attn_format: str = "int8"):
        for name, value in (("head_dim", head_dim), ("tile", tile), ("dot_lanes", dot_lanes),
                            ("pv_lanes", pv_lanes), ("out_lanes", out_lanes)):
            check_positive_int(name, value)
        for name, value in (("dot_lanes", dot_lanes), ("pv_lanes", pv_lanes), ("out_lanes", out_lanes)):
            if head_dim % value:
                raise ValueError(f"{name} ({value}) must divide head_dim ({head_dim})")
        self.attn_format = check_attn_format(attn_format)
        if attn_format == "fp32" and dot_lanes & (dot_lanes - 1):
            raise ValueError(f"dot_lanes ({dot_lanes}) must be a power of two in the fp32 format "
                             f"(the pairwise tree of a beat's products)")
        self.head_dim, self.tile = head_dim, tile
        self.dot_lanes, self.pv_lanes, self.out_lanes = dot_lanes, pv_lanes, out_lanes
        super().__init__({
            "query": In(stream.Signature(query_layout(head_dim, attn_format))),
            "keys": In(stream.Signature(key_layout(head_dim, attn_format))),
            "o": Out(stream.Signature(f32_vec(out_lanes))),
        })

    def _fp32_score(self, m, unit, key, q, step):
        """The fp32 format's score pipeline: a beat of dot_lanes products of ``key.k`` and ``q.q``
        (elements step*dot_lanes..) issued per cycle, the beats of a key in consecutive cycles.
        Returns (score, latency): score is s of the key whose last beat was issued latency
        cycles before (``fp32.vector_sum`` order, times fp32(1/sqrt(hd)))."""
        hd, dl = self.head_dim, self.dot_lanes
        steps = hd // dl
        P = ACC_INTERLEAVE
        assert FAdd.latency == P, "the accumulator's partials are its pipeline stages"
        products = []
        for i in range(dl):
            kf = Array(key.k[s * dl + i] for s in range(steps))[step]
            qf = Array(q.q[s * dl + i] for s in range(steps))[step]
            products.append(unit(f"dot_mul{i}", FMul(), a=kf, b=qf).o)
        beat_sum, tree_lat = f32_tree(m, products, FAdd, 1, "dot_tree")
        # beat b of a key adds to what beat b-P left (leaving the adder in the same cycle, as the
        # beats run back to back), the first P from +0
        first = step < P
        for i in range(FMul.latency + tree_lat):
            r = Signal(name=f"dot_first{i}")
            m.d.sync += r.eq(first)
            first = r
        accum = unit("dot_acc", FAdd(), b=beat_sum)
        m.d.comb += accum.a.eq(Mux(first, 0, accum.o))
        # when the key's last beat leaves the adder, beat steps-1-d left it d cycles ago:
        # partial i is the output of d = (steps-1-i) mod P cycles ago (+0 if no beat reaches it)
        history = [accum.o]
        for d in range(1, P):
            r = Signal(32, name=f"dot_partial_d{d}")
            m.d.sync += r.eq(history[-1])
            history.append(r)
        finals = [history[(steps - 1 - i) % P] if i < steps else Const(0, 32) for i in range(P)]
        dot, final_lat = f32_tree(m, finals, FAdd, 1, "dot_partials")
        score = unit("score_scale", FMul(), a=dot, b=Const(_bits(np.float32(1.0 / np.sqrt(hd))), 32))
        return score, FMul.latency + tree_lat + FAdd.latency + final_lat + FMul.latency

    def elaborate(self, platform):
        m = Module()
        hd, tile = self.head_dim, self.tile
        dl, pl, ol = self.dot_lanes, self.pv_lanes, self.out_lanes
        fmt = self.attn_format
        fp32 = fmt == "fp32"
        elem = kv_element_shape(fmt)
        dot_steps = hd // dl
        groups = hd // pl
        # The o[g] and l chains: an add samples its accumulator FAdd.latency + 1 cycles after
        # the previous add to it was issued at the earliest (the adder and the register write).
        key_cycles = max(FAdd.latency + 1, groups)

        unit = functools.partial(add_unit, m)

        # ---- per-query state
        q = Signal(query_layout(hd, fmt))
        if not fp32:
            dq = Signal(32)
        m_run = Signal(32)                   # running max m
        l_run = Signal(32)
        o_regs = [[Signal(32, name=f"o{g}_{i}") for i in range(pl)] for g in range(groups)]

        # ---- tile buffers: scores, p, w and the values (int8: w_j = p_j * d_v and d_v)
        s_buf = Array(Signal(32, name=f"s{j}") for j in range(tile))
        p_buf = Array(Signal(32, name=f"p{j}") for j in range(tile))
        if not fp32:
            w_buf = Array(Signal(32, name=f"w{j}") for j in range(tile))
            vs_buf = Array(Signal(32, name=f"vs{j}") for j in range(tile))
        v_mem = memory.Memory(shape=data.ArrayLayout(elem, hd), depth=tile, init=[])
        m.submodules.v_mem = v_mem
        v_wp, v_rp = v_mem.write_port(), v_mem.read_port(domain="comb")
        count = Signal(range(tile + 1))      # keys in the current tile
        final_tile = Signal()

        # ---- SCORE datapath: dot product over dot_steps cycles, then the float chain
        key = Signal(key_layout(hd, fmt))
        step = Signal(range(dot_steps + 1))
        if fp32:
            dot_done = Signal()              # pulses with the issue of a key's last beat
            score, SCORE_LAT = self._fp32_score(m, unit, key, q, step)
        else:
            acc = Signal(signed(32))
            partial = 0
            for i in range(dl):
                idx = Signal(range(hd), name=f"dot_idx{i}")
                m.d.comb += idx.eq(step * dl + i)
                kq = Array(key.k[e] for e in range(hd))[idx]
                qq = Array(q.q[e] for e in range(hd))[idx]
                partial = partial + kq * qq
            dot_done = Signal()                  # pulses with the finished dot product in acc
            conv = unit("dot_float", FromInt(), a=acc)
            scale_k = unit("score_k", FMul(), a=conv.o, b=key.k_scale)
            k_scale_late = Signal(32)
            score = unit("score_q", FMul(), a=scale_k.o, b=dq)
            SCORE_LAT = FromInt.latency + 2 * FMul.latency
        score_valid = Signal(SCORE_LAT)
        score_index = [Signal(range(tile), name=f"score_index{i}") for i in range(SCORE_LAT)]
        m.d.sync += score_valid.eq(Cat(dot_done, score_valid[:-1]))
        m.d.sync += score_index[0].eq(count)
        for i in range(1, SCORE_LAT):
            m.d.sync += score_index[i].eq(score_index[i - 1])
        if not fp32:
            # FromInt's input is acc when dot_done; the key's scale must meet conv.o 3 cycles later.
            m.d.comb += scale_k.b.eq(k_scale_late)
            ks_pipe = [key.k_scale]
            for i in range(FromInt.latency):
                r = Signal(32, name=f"ks_pipe{i}")
                m.d.sync += r.eq(ks_pipe[-1])
                ks_pipe.append(r)
            m.d.comb += k_scale_late.eq(ks_pipe[-1])

        tile_max = unit("tile_max", FMax(), en=score_valid[-1], a=Signal(32, name="tmax_fb"), b=score.o)
        max_first = Signal()
        m.d.comb += tile_max.a.eq(Mux(max_first, m_run, tile_max.o))
        with m.If(score_valid[-1]):
            m.d.sync += [s_buf[score_index[-1]].eq(score.o), max_first.eq(0)]

        # ---- SOFTMAX datapath: exp(x - m') then (int8) * d_v
        sm_issue = Signal()
        sm_index = Signal(range(tile + 1))   # index tile means "a = exp(m - m')"
        m_new = Signal(32)
        sub_in = Signal(32)
        m.d.comb += sub_in.eq(Mux(sm_index == tile, m_run, s_buf[sm_index]))
        diff = unit("sm_sub", FAdd(subtract=True), a=sub_in, b=m_new)
        expo = unit("sm_exp", Exp(), a=diff.o)
        EXP_LAT = FAdd.latency + Exp.latency
        SM_LAT = EXP_LAT if fp32 else EXP_LAT + FMul.latency
        sm_valid = Signal(SM_LAT)
        sm_idx = [Signal(range(tile + 1), name=f"sm_idx{i}") for i in range(SM_LAT)]
        m.d.sync += [sm_valid.eq(Cat(sm_issue, sm_valid[:-1])), sm_idx[0].eq(sm_index)]
        for i in range(1, len(sm_idx)):
            m.d.sync += sm_idx[i].eq(sm_idx[i - 1])
        if not fp32:
            vs_late = Signal(32)
            m.d.comb += vs_late.eq(vs_buf[sm_idx[EXP_LAT - 1]])
            wmul = unit("sm_w", FMul(), a=expo.o, b=vs_late)
        a_factor = Signal(32)
        with m.If(sm_valid[EXP_LAT - 1]):
            with m.If(sm_idx[EXP_LAT - 1] == tile):
                m.d.sync += a_factor.eq(expo.o)
            with m.Else():
                m.d.sync += p_buf[sm_idx[EXP_LAT - 1]].eq(expo.o)
        if not fp32:
            with m.If(sm_valid[-1] & (sm_idx[-1] != tile)):
                m.d.sync += w_buf[sm_idx[-1]].eq(wmul.o)

        # ---- RESCALE / ACCUMULATE datapath: per lane an FMul feeding an FAdd into o[g]
        acc_issue = Signal()
        acc_rescale = Signal()               # this issue multiplies o[g] by a instead of adding
        acc_key = Signal(range(tile + 1))
        acc_group = Signal(range(groups + 1))
        v_row = Signal(data.ArrayLayout(elem, hd))
        m.d.comb += [v_rp.addr.eq(acc_key), v_row.eq(v_rp.data)]
        products = []
        if fp32:
            # w_j = p_j and the float32 value row as stored: one FMul per lane
            weight = Signal(32, name="pv_weight")
            m.d.comb += weight.eq(p_buf[acc_key])
            for i in range(pl):
                v_elem = Array(v_row[g * pl + i] for g in range(groups))[acc_group]
                products.append(unit(f"pv_mul{i}", FMul(), a=v_elem, b=weight).o)
            PROD_LAT = FMul.latency
        else:
            for i in range(pl):
                v_elem = Array(v_row[g * pl + i] for g in range(groups))[acc_group]
                vf = unit(f"pv_float{i}", FromInt(), a=v_elem)
                w_late = Signal(32, name=f"w_late{i}")
                # w_j must meet FromInt's output: delay it 3 cycles.
                w_pipe = [w_buf[acc_key]]
                for k in range(FromInt.latency):
                    r = Signal(32, name=f"w_pipe{i}_{k}")
                    m.d.sync += r.eq(w_pipe[-1])
                    w_pipe.append(r)
                m.d.comb += w_late.eq(w_pipe[-1])
                prod = unit(f"pv_mul{i}", FMul(), a=vf.o, b=w_late)
                products.append(prod.o)
            PROD_LAT = FromInt.latency + FMul.latency
        # The rescale path: o[g] * a, issued in RESCALE with the same latency as a product.
        tag_layout = data.StructLayout({"valid": 1, "rescale": 1, "group": range(groups + 1)})
        tags = [Signal(tag_layout, name=f"acc_tag{i}") for i in range(PROD_LAT + FAdd.latency)]
        m.d.sync += [tags[0].valid.eq(acc_issue), tags[0].rescale.eq(acc_rescale), tags[0].group.eq(acc_group)]
        for i in range(1, len(tags)):
            m.d.sync += tags[i].eq(tags[i - 1])
        at_add = tags[PROD_LAT - 1]          # product ready: issue the add (or the rescale mul)
        adders = []
        for i in range(pl):
            current = Array(o_regs[g][i] for g in range(groups))[at_add.group]
            rescale = unit(f"o_scale{i}", FMul(), a=current, b=a_factor)
            add = unit(f"o_add{i}", FAdd(), a=current, b=products[i])
            adders.append((rescale, add))
        done_tag = tags[-1]
        for i, (rescale, add) in enumerate(adders):
            result = Mux(done_tag.rescale, rescale.o, add.o)
            for g in range(groups):
                with m.If(done_tag.valid & (done_tag.group == g)):
                    m.d.sync += o_regs[g][i].eq(result)
        # l chain: l *= a at rescale, then l += p_j once per key
        l_scale = unit("l_scale", FMul(), a=l_run, b=a_factor)
        l_add = unit("l_add", FAdd(), a=l_run, b=p_buf[acc_key])
        l_issue = Signal()
        l_rescale_issue = Signal()
        l_done = Signal(FAdd.latency)
        l_kind = Signal(FAdd.latency)
        m.d.sync += [l_done.eq(Cat(l_issue, l_done[:-1])), l_kind.eq(Cat(l_rescale_issue, l_kind[:-1]))]
        with m.If(l_done[-1]):
            m.d.sync += l_run.eq(Mux(l_kind[-1], l_scale.o, l_add.o))

        # ---- OUTPUT: o * recip(l)
        rcp = unit("recip", Recip(), a=l_run)
        inv_l = Signal(32)
        out_groups = hd // ol
        out_beat = Signal(range(out_groups + 1))
        o_flat = Array(o_regs[g][i] for g in range(groups) for i in range(pl))
        out_muls = []
        for i in range(ol):
            idx = Signal(range(hd), name=f"out_idx{i}")
            m.d.comb += idx.eq(out_beat * ol + i)
            out_muls.append(unit(f"out_mul{i}", FMul(), a=o_flat[idx], b=inv_l))
        out_issue = Signal()
        out_valid = Signal(FMul.latency)
        out_last = Signal(FMul.latency)
        m.d.sync += [out_valid.eq(Cat(out_issue, out_valid[:-1])),
                     out_last.eq(Cat(out_issue & (out_beat == out_groups - 1), out_last[:-1]))]
        # Output skid: the multipliers run free, so results land in a small buffer.
        out_fifo_data = [Signal(f32_vec(ol), name=f"outq{i}") for i in range(FMul.latency + 1)]
        out_count = Signal(range(FMul.latency + 2))
        out_head = Signal(range(FMul.latency + 1))
        out_tail = Signal(range(FMul.latency + 1))
        result_beat = Signal(f32_vec(ol))
        m.d.comb += result_beat.last.eq(out_last[-1])
        for i in range(ol):
            m.d.comb += result_beat.data[i].eq(out_muls[i].o)
        push = out_valid[-1]
        pop = self.o.valid & self.o.ready
        depth = FMul.latency + 1
        with m.If(push):
            for k in range(depth):
                with m.If(out_tail == k):
                    m.d.sync += out_fifo_data[k].eq(result_beat)
            m.d.sync += out_tail.eq(Mux(out_tail == depth - 1, 0, out_tail + 1))
        with m.If(pop):
            m.d.sync += out_head.eq(Mux(out_head == depth - 1, 0, out_head + 1))
        m.d.sync += out_count.eq(out_count + push - pop)
        m.d.comb += [self.o.valid.eq(out_count != 0),
                     self.o.payload.eq(Array(out_fifo_data)[out_head])]

        # ---- control
        if not fp32:
            dq_mul = unit("dq_mul", FMul(), a=q.d_q, b=Const(_bits(np.float32(1.0 / np.sqrt(hd))), 32))
        wait = Signal(range(128))

        def waited(cycles):
            """Count ``wait`` up (in the current state); the condition that it is ``cycles``."""
            m.d.sync += wait.eq(wait + 1)
            return m.If(wait == cycles)

        def key_done():
            """The key's last step: count it, then the next key or the tile's score drain."""
            m.d.sync += count.eq(count + 1)
            with m.If(key.tile_last | key.last):
                m.d.sync += [final_tile.eq(key.last), wait.eq(0)]
                m.next = "SCORE_DRAIN"
            with m.Else():
                m.next = "KEY"
        with m.FSM(name="attn"):
            with m.State("IDLE"):
                m.d.comb += self.query.ready.eq(1)
                with m.If(self.query.valid):
                    m.d.sync += [q.eq(self.query.payload), m_run.eq(NEG_INF), l_run.eq(0), count.eq(0),
                                 final_tile.eq(0), wait.eq(0)]
                    for g in range(groups):
                        for i in range(pl):
                            m.d.sync += o_regs[g][i].eq(0)
                    if fp32:                 # no d_q: the scale 1/sqrt(hd) is a constant
                        m.d.sync += max_first.eq(1)
                        m.next = "KEY"
                    else:
                        m.next = "DQ"
            if not fp32:
                with m.State("DQ"):
                    # dq = d_q * fp32(1/sqrt(hd)): reuse the score multiplier path's timing
                    with waited(FMul.latency):
                        m.d.sync += [dq.eq(dq_mul.o), max_first.eq(1)]
                        m.next = "KEY"
            with m.State("KEY"):
                m.d.comb += self.keys.ready.eq(1)
                with m.If(self.keys.valid):
                    if fp32:
                        m.d.sync += [key.eq(self.keys.payload), step.eq(0)]
                        m.d.comb += [v_wp.addr.eq(count), v_wp.data.eq(self.keys.payload.v), v_wp.en.eq(1)]
                    else:
                        m.d.sync += [key.eq(self.keys.payload), step.eq(0), acc.eq(0)]
                        m.d.comb += [v_wp.addr.eq(count), v_wp.data.eq(self.keys.payload.v), v_wp.en.eq(1)]
                        m.d.sync += vs_buf[count].eq(self.keys.payload.v_scale)
                    m.next = "DOT"
            if fp32:
                with m.State("DOT"):
                    # one beat of products per cycle, the key's beats back to back
                    m.d.sync += step.eq(step + 1)
                    with m.If(step == dot_steps - 1):
                        m.d.comb += dot_done.eq(1)
                        key_done()
            else:
                with m.State("DOT"):
                    m.d.sync += [acc.eq(acc + partial), step.eq(step + 1)]
                    with m.If(step == dot_steps - 1):
                        m.next = "DOT_DONE"
                with m.State("DOT_DONE"):
                    m.d.comb += dot_done.eq(1)
                    key_done()
            with m.State("SCORE_DRAIN"):
                with waited(SCORE_LAT + FMax.latency + 1):
                    m.d.sync += [m_new.eq(tile_max.o), sm_index.eq(0)]
                    m.next = "SOFTMAX"
            with m.State("SOFTMAX"):
                m.d.comb += sm_issue.eq(1)
                with m.If(sm_index == count - 1):
                    m.d.sync += [sm_index.eq(tile), wait.eq(0)]
                    m.next = "SOFTMAX_A"
                with m.Else():
                    m.d.sync += sm_index.eq(sm_index + 1)
            with m.State("SOFTMAX_A"):
                m.d.comb += sm_issue.eq(1)
                m.next = "SOFTMAX_DRAIN"
            with m.State("SOFTMAX_DRAIN"):
                with waited(SM_LAT + 1):
                    m.d.sync += [acc_group.eq(0), wait.eq(0)]
                    m.next = "RESCALE"
            with m.State("RESCALE"):
                m.d.comb += [acc_issue.eq(1), acc_rescale.eq(1)]
                with m.If(acc_group == 0):
                    m.d.comb += [l_issue.eq(1), l_rescale_issue.eq(1)]
                with m.If(acc_group == groups - 1):
                    m.d.sync += [acc_group.eq(0), acc_key.eq(0), wait.eq(0)]
                    m.next = "RESCALE_DRAIN"
                with m.Else():
                    m.d.sync += acc_group.eq(acc_group + 1)
            with m.State("RESCALE_DRAIN"):
                with waited(PROD_LAT + FAdd.latency + 1):
                    m.d.sync += [wait.eq(0), acc_group.eq(0)]
                    m.next = "ACCUMULATE"
            with m.State("ACCUMULATE"):
                # key acc_key, cycle `wait` of key_cycles: groups 0..groups-1 then idle cycles
                with m.If(wait < groups):
                    m.d.comb += acc_issue.eq(1)
                    m.d.sync += acc_group.eq(acc_group + 1)
                with m.If(wait == 0):
                    m.d.comb += l_issue.eq(1)
                with m.If(wait == key_cycles - 1):
                    m.d.sync += [wait.eq(0), acc_group.eq(0)]
                    with m.If(acc_key == count - 1):
                        m.next = "ACC_DRAIN"
                    with m.Else():
                        m.d.sync += acc_key.eq(acc_key + 1)
                with m.Else():
                    m.d.sync += wait.eq(wait + 1)
            with m.State("ACC_DRAIN"):
                with waited(PROD_LAT + FAdd.latency + FAdd.latency + 1):
                    m.d.sync += [m_run.eq(m_new), count.eq(0), wait.eq(0), max_first.eq(1)]
                    with m.If(final_tile):
                        m.next = "RECIP"
                    with m.Else():
                        m.next = "KEY"
            with m.State("RECIP"):
                with waited(Recip.latency + 1):
                    m.d.sync += [inv_l.eq(rcp.o), out_beat.eq(0)]
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                # at most depth-1 beats in flight or queued: the skid buffer never overflows
                in_flight = out_count
                for i in range(FMul.latency):
                    in_flight = in_flight + out_valid[i]
                with m.If(in_flight < depth - 1):
                    m.d.comb += out_issue.eq(1)
                    m.d.sync += out_beat.eq(out_beat + 1)
                    with m.If(out_beat == out_groups - 1):
                        m.next = "OUTPUT_DRAIN"
            with m.State("OUTPUT_DRAIN"):
                with m.If((out_valid == 0) & (out_count == 0)):
                    m.next = "IDLE"

        return m
