"""Dequantisation (+ residual) of TLMM results (docs/architecture.md 3.4)."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .fp32 import FAdd, FMul, FromInt, Stages
from .pipeline import StreamPipe, f32_vec
from .tlmm import result_layout
from .vec_width import RowNarrow, VecNarrow, wire_narrowed

__all__ = ["Dequant"]


class Dequant(wiring.Component):
    """y[t] = from_int(acc[t]) * (d_x[t] * w_mult) for the T tokens of one TLMM result row;
    with ``residual=True`` the output is h[t] + y[t], h arriving on ``res`` beat for beat.

    Ports: ``acc`` (In stream, ``tlmm.result_layout(T)``), ``res`` (In stream,
    ``f32_vec(T)``; only with residual), ``o`` (Out stream, ``f32_vec(T)``, ``last`` copied from
    the result row). Latency 8 (12 with the residual); one row per cycle.

    ``lanes`` (default ``tokens``, dividing it) sets how many tokens are dequantised per cycle:
    with fewer, each row is split into tokens/lanes parts (:class:`RowNarrow`, and
    :class:`VecNarrow` for ``res``) and the results joined again (:class:`VecWiden`); a row then
    takes tokens/lanes cycles and the latency grows by 1. Without the residual a row takes only
    ceil(used / lanes) cycles, ``used`` its ``tokens`` field (0: all T): the output lanes of the
    tokens beyond hold stale values. The TLMM gives a row at most once per
    B cycles (B blocks of its lane word), so the composition needs only ceil(T / B) lanes
    (``gen.tiling.MatmulRates``).

    Cost: per lane a FromInt, two FMul (and an FAdd with the residual); at T = 8 with the
    residual 9.1 K LUT-eq, 5.3 K FF, 32 DSP (``bench/results/elementwise.json``).
    """

    def __init__(self, *, tokens: int, residual: bool, lanes: int | None = None):
        check_positive_int("tokens", tokens)
        lanes = tokens if lanes is None else lanes
        check_positive_int("lanes", lanes)
        if tokens % lanes:
            raise ValueError(f"lanes must divide tokens ({tokens}), got {lanes!r}")
        self.tokens, self.residual, self.lanes = tokens, bool(residual), lanes
        members = {"acc": In(stream.Signature(result_layout(tokens))),
                   "o": Out(stream.Signature(f32_vec(tokens)))}
        if self.residual:
            members["res"] = In(stream.Signature(f32_vec(tokens)))
        super().__init__(members)

    @property
    def latency(self) -> int:
        core = FromInt.latency + 1 + FMul.latency + (FAdd.latency if self.residual else 0)
        return core if self.lanes == self.tokens else core + 1

    def elaborate(self, platform):
        if self.lanes < self.tokens:
            return self._split()
        m = Module()
        inputs = [self.acc] + ([self.res] if self.residual else [])
        pipe = StreamPipe(m, inputs, self.o, self.latency)
        st = Stages(m, pipe.advance)
        last = self.acc.payload.last
        res = self.res.payload.data if self.residual else None
        for t in range(self.tokens):
            conv = FromInt()
            comb = FMul()
            scale = FMul()
            m.submodules[f"from_int{t}"], m.submodules[f"comb{t}"], m.submodules[f"scale{t}"] = conv, comb, scale
            m.d.comb += [
                conv.en.eq(pipe.advance), comb.en.eq(pipe.advance), scale.en.eq(pipe.advance),
                conv.a.eq(self.acc.payload.acc[t]),
                comb.a.eq(self.acc.payload.d_x[t]), comb.b.eq(self.acc.payload.w_mult),
                # from_int takes 3 cycles and the multiplier product 4: one stage evens them out.
                scale.a.eq(st.reg(conv.o)), scale.b.eq(comb.o),
            ]
            y = scale.o
            if self.residual:
                add = FAdd()
                m.submodules[f"residual{t}"] = add
                h = res[t]
                for _ in range(FromInt.latency + 1 + FMul.latency):
                    h = st.reg(h)
                m.d.comb += [add.en.eq(pipe.advance), add.a.eq(h), add.b.eq(y)]
                y = add.o
            m.d.comb += self.o.payload.data[t].eq(y)
        for _ in range(self.latency):
            last = st.reg(last)
        m.d.comb += self.o.payload.last.eq(last)
        return m

    def _split(self):
        """lanes < tokens: narrow the rows (and residual beats), dequantise lanes tokens at a
        time, widen."""
        m = Module()
        T, k = self.tokens, self.lanes
        core = Dequant(tokens=k, residual=self.residual)
        # Without a residual a row gives only the parts that hold its used tokens (a decode
        # step's one token: one part, not T/lanes); the parts in flight (the core's pipeline,
        # the join's register) each have their count queued.
        used = None if self.residual else "tokens"
        narrow = RowNarrow(layout=result_layout, count=T, out_count=k, used=used, parts_depth=core.latency + 3)
        inputs = {"acc": (self.acc, narrow, core.acc)}
        if self.residual:
            inputs["res"] = (self.res, VecNarrow(lanes=T, out_lanes=k), core.res)
        wire_narrowed(m, core, inputs=inputs, out=self.o, lanes=T, narrow=k)
        return m
