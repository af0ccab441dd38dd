"""Gated FFN activation: act(gate) * up (docs/architecture.md 3.5)."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .fp32 import FMul, Relu2, Silu, Stages
from .pipeline import StreamPipe, f32_vec
from .vec_width import VecNarrow, narrowed_latency, wire_narrowed

__all__ = ["Gating"]

ACTIVATIONS = {"relu2": Relu2, "silu": Silu}


class Gating(wiring.Component):
    """o = act(gate) * up, element-wise over ``lanes`` elements per beat, with act = ReLU^2
    (2B4T) or SiLU (large) fixed at elaboration.

    ``act_lanes`` (default ``lanes``, dividing it) sets how many activation + multiplier units
    there are: with fewer, each beat is split into lanes/act_lanes parts (:class:`VecNarrow`)
    and the results joined again (:class:`VecWiden`). SiLU costs ~7 K LUT per lane, so the
    composition gives it just the lanes the TLMM's output rate needs (docs/architecture.md 2).

    Ports: ``gate``, ``up`` (In streams, ``f32_vec(L)``, beat for beat), ``o`` (Out stream,
    ``f32_vec(L)``, ``last`` from ``gate``). Latency (``latency``) 8 (ReLU^2) or 101 (SiLU),
    plus R + 1 with R = lanes/act_lanes > 1; throughput act_lanes elements per cycle.

    Cost: ``act_lanes`` activation units and multipliers (and the lane converters): at 8 lanes
    ReLU^2 2.7 K LUT-eq, 32 DSP; SiLU 61.2 K LUT-eq, 208 DSP, or 15.6 K LUT-eq, 52 DSP with
    act_lanes 2 (``bench/results/elementwise.json``).
    """

    def __init__(self, *, lanes: int, act: str, act_lanes: int | None = None):
        check_positive_int("lanes", lanes)
        if act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {act!r}")
        act_lanes = lanes if act_lanes is None else act_lanes
        check_positive_int("act_lanes", act_lanes)
        if lanes % act_lanes:
            raise ValueError(f"act_lanes must divide lanes ({lanes}), got {act_lanes!r}")
        self.lanes, self.act, self.act_lanes = lanes, act, act_lanes
        super().__init__({
            "gate": In(stream.Signature(f32_vec(lanes))),
            "up": In(stream.Signature(f32_vec(lanes))),
            "o": Out(stream.Signature(f32_vec(lanes))),
        })

    @property
    def parts(self) -> int:
        return self.lanes // self.act_lanes

    @property
    def latency(self) -> int:
        core = ACTIVATIONS[self.act].latency + FMul.latency
        return core + narrowed_latency(self.lanes, self.act_lanes)

    def elaborate(self, platform):
        if self.parts > 1:
            return self._split(platform)
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

    def _split(self, platform):
        """act_lanes < lanes: narrow both inputs, run an act_lanes-wide Gating, widen."""
        m = Module()
        lanes, narrow = self.lanes, self.act_lanes
        core = Gating(lanes=narrow, act=self.act)
        wire_narrowed(m, core, inputs={"gate": (self.gate, VecNarrow(lanes=lanes, out_lanes=narrow), core.gate),
                                       "up": (self.up, VecNarrow(lanes=lanes, out_lanes=narrow), core.up)},
                      out=self.o, lanes=lanes, narrow=narrow)
        return m
