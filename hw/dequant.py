"""Dequantisation (+ residual) of TLMM results (docs/architecture.md 3.4)."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .fp32 import FAdd, FMul, FromInt, Stages
from .pipeline import StreamPipe, f32_vec
from .tlmm import result_layout

__all__ = ["Dequant"]


class Dequant(wiring.Component):
    """y[t] = from_int(acc[t]) * (d_x[t] * w_mult) for the T tokens of one TLMM result row;
    with ``residual=True`` the output is h[t] + y[t], h arriving on ``res`` beat for beat.

    Ports: ``acc`` (In stream, ``tlmm.result_layout(T)``), ``res`` (In stream,
    ``f32_vec(T)``; only with residual), ``o`` (Out stream, ``f32_vec(T)``, ``last`` copied from
    the result row). Latency 8 (12 with the residual); one row per cycle.

    Cost: per token a FromInt, two FMul (and an FAdd with the residual); at T = 8 with the
    residual 9.1 K LUT-eq, 5.3 K FF, 32 DSP (``bench/results/elementwise.json``).
    """

    def __init__(self, *, tokens: int, residual: bool):
        check_positive_int("tokens", tokens)
        self.tokens, self.residual = tokens, bool(residual)
        members = {"acc": In(stream.Signature(result_layout(tokens))),
                   "o": Out(stream.Signature(f32_vec(tokens)))}
        if self.residual:
            members["res"] = In(stream.Signature(f32_vec(tokens)))
        super().__init__(members)

    @property
    def latency(self) -> int:
        return FromInt.latency + 1 + FMul.latency + (FAdd.latency if self.residual else 0)

    def elaborate(self, platform):
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
