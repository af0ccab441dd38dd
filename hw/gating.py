"""Gated FFN activation: act(gate) * up (docs/architecture.md 3.5)."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .fp32 import FMul, Relu2, Silu, Stages
from .pipeline import StreamPipe, f32_vec

__all__ = ["Gating"]

ACTIVATIONS = {"relu2": Relu2, "silu": Silu}


class Gating(wiring.Component):
    """o = act(gate) * up, element-wise over ``lanes`` elements per beat, with act = ReLU^2
    (2B4T) or SiLU (large) fixed at elaboration.

    Ports: ``gate``, ``up`` (In streams, ``f32_vec(L)``, beat for beat), ``o`` (Out stream,
    ``f32_vec(L)``, ``last`` from ``gate``). Latency 8 (ReLU^2) or 101 (SiLU); one beat per cycle.
    """

    def __init__(self, *, lanes: int, act: str):
        if not isinstance(lanes, int) or isinstance(lanes, bool) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, got {lanes!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        self.lanes, self.act = lanes, act
        super().__init__({
            "gate": In(stream.Signature(f32_vec(lanes))),
            "up": In(stream.Signature(f32_vec(lanes))),
            "o": Out(stream.Signature(f32_vec(lanes))),
        })

    @property
    def latency(self) -> int:
        return ACTIVATIONS[self.act].latency + FMul.latency

    def elaborate(self, platform):
        m = Module()
        pipe = StreamPipe(m, [self.gate, self.up], self.o, self.latency)
        st = Stages(m, pipe.advance)
        act_latency = ACTIVATIONS[self.act].latency
        for lane in range(self.lanes):
            act = ACTIVATIONS[self.act]()
            mul = FMul()
            m.submodules[f"act{lane}"], m.submodules[f"mul{lane}"] = act, mul
            up = self.up.payload.data[lane]
            for _ in range(act_latency):
                up = st.reg(up)
            m.d.comb += [act.en.eq(pipe.advance), mul.en.eq(pipe.advance),
                         act.a.eq(self.gate.payload.data[lane]), mul.a.eq(act.o), mul.b.eq(up),
                         self.o.payload.data[lane].eq(mul.o)]
        last = self.gate.payload.last
        for _ in range(self.latency):
            last = st.reg(last)
        m.d.comb += self.o.payload.last.eq(last)
        return m
