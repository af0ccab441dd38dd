"""The fused RMSNorm + absmax int8 quantiser (docs/architecture.md 3.1, 3.3)."""

import functools

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract import fp32 as golden
from .fp32 import FAbs, FAdd, FMax, FMul, Recip, Rsqrt, Stages, ToInt8, _bits, add_unit
from .pipeline import f32_tree, f32_vec, q8_vec

__all__ = ["NormQuant", "norm_command_layout"]

INTERLEAVE = golden.ACC_INTERLEAVE


def norm_command_layout() -> data.StructLayout:
    """Per vector: ``norm`` (1: RMSNorm then quantise; 0: quantise only), fp32(1/d) and eps."""
    return data.StructLayout({"norm": unsigned(1), "inv_dim": unsigned(32), "eps": unsigned(32)})


class _Counter:
    """A free-running delay: ``start`` pulses, ``done`` pulses ``cycles`` later."""

    def __init__(self, m, start, cycles, name):
        self.done = Signal(name=f"{name}_done")
        shift = Signal(cycles, name=f"{name}_shift")
        m.d.sync += shift.eq(Cat(start, shift[:-1]))
        m.d.comb += self.done.eq(shift[-1])


class NormQuant(wiring.Component):
    """Quantises vectors to int8 with a per-vector scale, optionally after RMSNorm.

    For each vector (one ``cmd`` beat, then its elements on ``x``, ``lanes`` per beat, ``last``
    on the final beat; pad a partial final beat with +0):

    - pass 1 (while it arrives): the vector is stored in one of two buffers; the sum of squares
      is formed in ``fp32.vector_sum`` order (pairwise tree per beat, four interleaved
      partials, pairwise tree of partials) and max|x| alongside;
    - norm: r = rsqrt(ss * inv_dim + eps); pass 2 reads the buffer, y = (x * r) * gain (gains
      on ``gain``, one beat per beat of x) into a second buffer, max|y| alongside;
    - d = max(max|v|, 1e-5) * fp32(1/127) goes out on ``scale``; s = recip(d);
    - pass 3 reads v (y, or x when not normalising): ``q`` = to_int8(v * s), ``last`` on the
      vector's final beat.

    This is ``golden.rmsnorm_quantize`` (norm) or ``golden.quantize`` bit for bit. Pass 1 of
    the next vector overlaps passes 2-3 of the current one (two input buffers); per vector the
    unit needs about n + 30 cycles in front and 2n + 90 behind (n = beats), so a 1536-element
    vector at 8 lanes takes about 470 cycles.

    Ports: ``cmd`` (In stream, norm_command_layout), ``x`` (In stream, ``f32_vec(lanes)``),
    ``gain`` (In stream, lanes words), ``q`` (Out stream, ``q8_vec(lanes)``), ``scale`` (Out
    stream, the float32 d); with ``float_out`` also ``y`` (Out, lanes binary32 words): the
    values v behind the ``q`` beat on offer (the normalised vector, or x when quantising
    only), valid with ``q``; a consumer of the float vector takes ``q`` and reads ``y`` beside
    it (the fp16 LM head of docs 3.9), at the cost of 6 x 32 x lanes more registers.

    Cost: at 8 lanes and max_dim 4096 18.2 K LUT-eq, 12.4 K FF, 88 DSP, 12 BRAM36 (the two x
    buffers and the y buffer; ``bench/results/elementwise.json``).

    Parameters (keyword-only): ``lanes`` (power of two), ``max_dim`` (largest vector),
    ``float_out`` (add the ``y`` port).
    """

    def __init__(self, *, lanes: int, max_dim: int, float_out: bool = False):
        if not isinstance(lanes, int) or lanes < 1 or lanes & (lanes - 1):
            raise ValueError(f"lanes must be a power of two, got {lanes!r}")
        if not isinstance(max_dim, int) or max_dim < lanes:
            raise ValueError(f"max_dim must be an integer >= lanes ({lanes}), got {max_dim!r}")
        if not isinstance(float_out, bool):
            raise ValueError(f"float_out must be True or False, got {float_out!r}")
        self.lanes, self.max_dim, self.float_out = lanes, max_dim, float_out
        self.max_beats = -(-max_dim // lanes)
        super().__init__({
            "cmd": In(stream.Signature(norm_command_layout())),
            "x": In(stream.Signature(f32_vec(lanes))),
            "gain": In(stream.Signature(data.ArrayLayout(unsigned(32), lanes))),
            "q": Out(stream.Signature(q8_vec(lanes))),
            "scale": Out(stream.Signature(unsigned(32))),
            **({"y": Out(data.ArrayLayout(unsigned(32), lanes))} if float_out else {}),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, nb = self.lanes, self.max_beats
        word = data.ArrayLayout(unsigned(32), lanes)
        zero32 = Const(0, 32)

        unit = functools.partial(add_unit, m)

        # ---- buffers: two for x (front writes, back reads), one for y (pass 2 -> pass 3)
        xbufs = []
        for b in range(2):
            mem = memory.Memory(shape=word, depth=nb, init=[])
            m.submodules[f"xbuf{b}"] = mem
            xbufs.append((mem.write_port(), mem.read_port(domain="sync")))
        ybuf = memory.Memory(shape=word, depth=nb, init=[])
        m.submodules.ybuf = ybuf
        y_wp, y_rp = ybuf.write_port(), ybuf.read_port(domain="sync")

        full = Signal(2)                      # x buffer holds a vector for the back end
        set_full, release = Signal(2), Signal(2)
        m.d.sync += full.eq((full | set_full) & ~release)
        desc = [Signal(data.StructLayout({"norm": 1, "inv_dim": 32, "eps": 32, "beats": range(nb + 1),
                                          "ss": 32, "mx": 32}), name=f"desc{b}") for b in range(2)]

        # ================================ front: pass 1 ================================
        fbank = Signal()
        loading = Signal()
        fcmd = Signal(norm_command_layout())
        fbeat = Signal(range(nb + 1))
        bank_free = ~full.bit_select(fbank, 1)
        front_wait = Signal()          # waiting for the sums of the loaded vector
        m.d.comb += self.cmd.ready.eq(~loading & ~front_wait & bank_free)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [loading.eq(1), fcmd.eq(self.cmd.payload), fbeat.eq(0)]
        m.d.comb += self.x.ready.eq(loading & (fbeat < nb))
        take = self.x.valid & self.x.ready
        for b, (wp, _) in enumerate(xbufs):
            m.d.comb += [wp.addr.eq(fbeat), wp.data.eq(self.x.payload.data), wp.en.eq(take & (fbank == b))]
        with m.If(take):
            m.d.sync += fbeat.eq(fbeat + 1)
            with m.If(self.x.payload.last):
                m.d.sync += [loading.eq(0), front_wait.eq(1)]

        # squares -> per-beat tree (free running, validity beside it)
        st = Stages(m, 1)
        squares = [unit(f"sq{l}", FMul(), a=self.x.payload.data[l], b=self.x.payload.data[l]).o for l in range(lanes)]
        beat_sum, tree_lat = f32_tree(m, squares, FAdd, 1, "sqtree")
        sum_valid = take
        for _ in range(FMul.latency + tree_lat):
            sum_valid = st.reg(sum_valid, valid=True)
        absx = [unit(f"abs{l}", FAbs(), a=self.x.payload.data[l]).o for l in range(lanes)]
        beat_max, max_lat = f32_tree(m, absx, FMax, 1, "maxtree")
        max_valid = take
        for _ in range(FAbs.latency + max_lat):
            max_valid = st.reg(max_valid, valid=True)

        # max accumulator (latency-1 feedback)
        first_max = Signal(init=1)
        facc_max = unit("front_max", FMax(), en=max_valid)
        m.d.comb += [facc_max.a.eq(Mux(first_max, zero32, facc_max.o)), facc_max.b.eq(beat_max)]
        with m.If(max_valid):
            m.d.sync += first_max.eq(0)

        # sum accumulator: four partials in flight in the adder's pipeline
        added = Signal(range(nb + INTERLEAVE + 1))     # enables of the accumulator this vector
        draining = Signal()
        drain_step = Signal(range(INTERLEAVE + 1))
        acc_en = sum_valid | draining
        acc = unit("front_acc", FAdd(), en=acc_en)
        m.d.comb += [acc.a.eq(Mux(draining, zero32, beat_sum)),
                     acc.b.eq(Mux(added < INTERLEAVE, zero32, acc.o))]
        with m.If(acc_en):
            m.d.sync += added.eq(added + 1)
        partials = [Signal(32, name=f"partial{i}") for i in range(INTERLEAVE)]
        # All beats taken and every beat sum entered: drain the four partials out of the adder.
        with m.If(front_wait & ~draining & (drain_step == 0) & (added == fbeat) & ~sum_valid & (fbeat != 0)):
            m.d.sync += draining.eq(1)
        with m.If(draining):
            # Before drain step j the adder shows the sum entered four enables ago: phase (n+j) % 4.
            phase = added[:2]
            for i in range(INTERLEAVE):
                with m.If(phase == i):
                    m.d.sync += partials[i].eq(Mux(added >= INTERLEAVE, acc.o, zero32))
            m.d.sync += drain_step.eq(drain_step + 1)
            with m.If(drain_step == INTERLEAVE - 1):
                m.d.sync += draining.eq(0)
        final_start = Signal()
        m.d.comb += final_start.eq(draining & (drain_step == INTERLEAVE - 1))
        final_sum, final_lat = f32_tree(m, partials, FAdd, 1, "ptree")
        final_done = _Counter(m, final_start, final_lat + 1, "final").done
        with m.If(final_done):
            for b in range(2):
                with m.If(fbank == b):
                    m.d.sync += [desc[b].norm.eq(fcmd.norm), desc[b].inv_dim.eq(fcmd.inv_dim),
                                 desc[b].eps.eq(fcmd.eps), desc[b].beats.eq(fbeat), desc[b].ss.eq(final_sum),
                                 desc[b].mx.eq(facc_max.o)]
            m.d.comb += set_full.eq(Mux(fbank, 0b10, 0b01))
            m.d.sync += [fbank.eq(~fbank), front_wait.eq(0), added.eq(0), drain_step.eq(0), first_max.eq(1)]

        # ================================ back: passes 2 and 3 ================================
        bbank = Signal()
        # The back end works from its own copy of the descriptor: in norm mode the x buffer (and
        # its descriptor) is handed back to the front before pass 3 is over.
        bdesc = Signal.like(desc[0])
        current_desc = Signal.like(desc[0])
        m.d.comb += current_desc.eq(Mux(bbank, desc[1], desc[0]))
        ready_vec = full.bit_select(bbank, 1)
        r = Signal(32)          # rsqrt result
        mx = Signal(32)         # max |v| of the values to quantise
        s = Signal(32)          # quantisation multiplier
        d = Signal(32)          # dequantisation scale

        # scalar chain 1: r = rsqrt(ss * inv_dim + eps)
        start_r = Signal()
        mean = unit("mean", FMul(), a=bdesc.ss, b=bdesc.inv_dim)
        plus = unit("plus_eps", FAdd(), a=mean.o, b=bdesc.eps)
        rs = unit("rsqrt", Rsqrt(), a=plus.o)
        r_done = _Counter(m, start_r, FMul.latency + FAdd.latency + Rsqrt.latency, "r").done
        # scalar chain 2: d = max(mx, 1e-5) * (1/127); s = recip(d)
        start_s = Signal()
        clamp = unit("clamp", FMax(), a=mx, b=Const(_bits(1e-5), 32))
        dmul = unit("dscale", FMul(), a=clamp.o, b=Const(_bits(golden.from_bits(golden.bits(1.0 / 127.0))), 32))
        rcp = unit("recip", Recip(), a=dmul.o)
        d_done = _Counter(m, start_s, FMax.latency + FMul.latency, "d").done
        s_done = _Counter(m, start_s, FMax.latency + FMul.latency + Recip.latency, "s").done

        # pass 2 pipeline: y = (x * r) * g  (free running; writes the y buffer)
        p2_issue = Signal()
        p2_beat = Signal(range(nb + 1))
        # (Mux of two views is a plain value: give it the word layout back to index lanes.)
        xr_data = Signal(word)
        m.d.comb += xr_data.eq(Mux(bbank, xbufs[1][1].data, xbufs[0][1].data))
        gain_reg = Signal(word, reset_less=True)
        m.d.sync += gain_reg.eq(self.gain.payload)
        ys = []
        for l in range(lanes):
            xr = unit(f"xr{l}", FMul(), a=xr_data[l], b=r)
            g = gain_reg[l]
            for _ in range(FMul.latency):
                g = st.reg(g)
            ys.append(unit(f"xrg{l}", FMul(), a=xr.o, b=g).o)
        p2_valid, p2_addr = p2_issue, p2_beat
        for _ in range(1 + 2 * FMul.latency):
            p2_valid, p2_addr = st.reg(p2_valid, valid=True), st.reg(p2_addr)
        m.d.comb += [y_wp.addr.eq(p2_addr), y_wp.data.eq(Cat(*ys)), y_wp.en.eq(p2_valid)]
        absy = [unit(f"absy{l}", FAbs(), a=ys[l]).o for l in range(lanes)]
        beat_ymax, ymax_lat = f32_tree(m, absy, FMax, 1, "ymaxtree")
        ymax_valid = p2_valid
        for _ in range(FAbs.latency + ymax_lat):
            ymax_valid = st.reg(ymax_valid, valid=True)
        first_ymax = Signal(init=1)
        yacc = unit("back_max", FMax(), en=ymax_valid)
        m.d.comb += [yacc.a.eq(Mux(first_ymax, zero32, yacc.o)), yacc.b.eq(beat_ymax)]
        with m.If(ymax_valid):
            m.d.sync += first_ymax.eq(0)
        p2_flush = 1 + 2 * FMul.latency + FAbs.latency + ymax_lat + 1

        # pass 3 pipeline: q = to_int8(v * s), stalled by the output
        advance = Signal()
        m.d.comb += advance.eq(~self.q.valid | self.q.ready)
        p3_issue = Signal()
        p3_beat = Signal(range(nb + 1))
        p3_norm = Signal()
        v_data = Signal(word)
        m.d.comb += v_data.eq(Mux(p3_norm, y_rp.data, xr_data))
        qs = []
        for l in range(lanes):
            mul = unit(f"vs{l}", FMul(), en=advance, a=v_data[l], b=s)
            qs.append(unit(f"q{l}", ToInt8(), en=advance, a=mul.o).o)
        p3_last = p3_issue & (p3_beat == bdesc.beats - 1)
        p3_valid = Signal(1 + FMul.latency + ToInt8.latency)
        p3_lasts = Signal(1 + FMul.latency + ToInt8.latency)
        with m.If(advance):
            m.d.sync += [p3_valid.eq(Cat(p3_issue, p3_valid[:-1])), p3_lasts.eq(Cat(p3_last, p3_lasts[:-1]))]
        m.d.comb += [self.q.valid.eq(p3_valid[-1]), self.q.payload.last.eq(p3_lasts[-1])]
        for l in range(lanes):
            m.d.comb += self.q.payload.q[l].eq(qs[l])
        if self.float_out:
            # v beside its q: the read port's data are stage 1 of the p3_valid line
            y = Stages(m, advance)
            v_out = v_data
            for _ in range(FMul.latency + ToInt8.latency):
                v_out = y.reg(v_out, name="y_delay")
            m.d.comb += self.y.eq(v_out)

        # read ports: pass 2 reads x (free running), pass 3 reads x or y (stalled with the output)
        state_p3 = Signal()
        for b, (_, rp) in enumerate(xbufs):
            m.d.comb += [rp.addr.eq(Mux(state_p3, p3_beat, p2_beat)), rp.en.eq(Mux(state_p3, advance, 1))]
        m.d.comb += [y_rp.addr.eq(p3_beat), y_rp.en.eq(advance)]

        # back-end sequencer
        wait = Signal(range(p2_flush + 1))
        # The scale register empties when taken; EMIT_SCALE below may refill it in the same cycle.
        with m.If(self.scale.ready):
            m.d.sync += self.scale.valid.eq(0)

        with m.FSM(name="back"):
            with m.State("IDLE"):
                with m.If(ready_vec):
                    m.d.sync += bdesc.eq(current_desc)
                    m.next = "START"
            with m.State("START"):
                with m.If(bdesc.norm):
                    m.d.comb += start_r.eq(1)
                    m.next = "RSQRT"
                with m.Else():
                    m.d.sync += mx.eq(bdesc.mx)
                    m.next = "MAX_READY"
            with m.State("RSQRT"):
                with m.If(r_done):
                    m.d.sync += [r.eq(rs.o), p2_beat.eq(0)]
                    m.next = "PASS2"
            with m.State("PASS2"):
                m.d.comb += [self.gain.ready.eq(1), p2_issue.eq(self.gain.valid)]
                with m.If(self.gain.valid):
                    m.d.sync += p2_beat.eq(p2_beat + 1)
                    with m.If(p2_beat == bdesc.beats - 1):
                        m.d.sync += wait.eq(0)
                        m.next = "PASS2_FLUSH"
            with m.State("PASS2_FLUSH"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == p2_flush):
                    m.d.sync += [mx.eq(yacc.o), first_ymax.eq(1)]
                    # x is no longer needed: the front may refill this buffer.
                    m.d.comb += release.eq(Mux(bbank, 0b10, 0b01))
                    m.next = "MAX_READY"
            with m.State("MAX_READY"):
                m.d.comb += start_s.eq(1)
                m.next = "SCALE"
            with m.State("SCALE"):
                with m.If(d_done):
                    m.d.sync += d.eq(dmul.o)
                with m.If(s_done):
                    m.d.sync += [s.eq(rcp.o), p3_beat.eq(0), p3_norm.eq(bdesc.norm)]
                    m.next = "EMIT_SCALE"
            with m.State("EMIT_SCALE"):
                with m.If(~self.scale.valid | self.scale.ready):
                    m.d.sync += [self.scale.valid.eq(1), self.scale.payload.eq(d)]
                    m.next = "PASS3"
            with m.State("PASS3"):
                m.d.comb += [state_p3.eq(1), p3_issue.eq(advance)]
                with m.If(advance):
                    m.d.sync += p3_beat.eq(p3_beat + 1)
                    with m.If(p3_beat == bdesc.beats - 1):
                        m.next = "PASS3_DONE"
            with m.State("PASS3_DONE"):
                # Wait until the vector's last beat has left the pipeline: the beats still in
                # it (the output may stall them) use s, which the next vector would overwrite.
                # Then the buffer (x when quantising only) is free and the bank may move on.
                # The read ports stay with pass 3 meanwhile: a stalled beat sits in their
                # data registers.
                m.d.comb += state_p3.eq(1)
                with m.If(p3_valid == 0):
                    with m.If(~bdesc.norm):
                        m.d.comb += release.eq(Mux(bbank, 0b10, 0b01))
                    m.d.sync += bbank.eq(~bbank)
                    m.next = "IDLE"
        return m
