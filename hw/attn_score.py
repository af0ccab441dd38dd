"""The fp32 attention score of one (query, key) pair from beats of their rows
(docs/architecture.md 3.8, ``golden.attention_scores``)."""

import numpy as np
from amaranth.hdl import Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.fp32 import ACC_INTERLEAVE
from .fp32 import FAdd, FMul, _bits, add_unit
from .pipeline import delay, f32_tree

__all__ = ["DotScore"]


class DotScore(wiring.Component):
    """s = vector_sum(k * q, lanes) * fp32(1/sqrt(head_dim)) of float32 rows q and k that arrive
    ``lanes`` elements per cycle: beat ``step`` (0 .. head_dim/lanes - 1) of a pair in the cycle
    ``valid`` is high, a pair's beats in consecutive cycles, pairs back to back or with gaps
    between them.

    The order is ``fp32.vector_sum``'s: each beat's products summed by a pairwise tree, beat b
    into partial b mod 4 from +0 (one accumulating FAdd whose four pipeline stages hold the
    partials, ``ACC_INTERLEAVE``), the four partials pairwise, then the FMul by the constant.

    Latency: ``o`` holds the score of the pair whose last beat entered ``latency`` cycles earlier
    (``o_valid`` high in that cycle). Throughput: one beat per cycle, head_dim/lanes cycles per
    pair. Cost: ``lanes`` FMul, lanes - 1 FAdd (the beat tree), the accumulating FAdd, 3 FAdd
    (the partials' tree) and one FMul.

    Parameters (keyword-only): ``head_dim``, ``lanes`` (a power of two dividing head_dim).
    Ports: ``valid``, ``step`` (In), ``q``, ``k`` (In, ``lanes`` float32 each), ``o`` (Out 32),
    ``o_valid`` (Out 1).
    """

    def __init__(self, *, head_dim: int, lanes: int):
        for name, value in (("head_dim", head_dim), ("lanes", lanes)):
            check_positive_int(name, value)
        if head_dim % lanes or lanes & (lanes - 1):
            raise ValueError(f"lanes ({lanes}) must be a power of two dividing head_dim ({head_dim})")
        self.head_dim, self.lanes = head_dim, lanes
        self.steps = head_dim // lanes
        beat = data.ArrayLayout(unsigned(32), lanes)
        tree = (lanes.bit_length() - 1) * FAdd.latency
        self.latency = FMul.latency + tree + FAdd.latency + 2 * FAdd.latency + FMul.latency
        # (step is never zero bits wide, for lint-clean Verilog; it is 0 with one beat per pair)
        super().__init__({"valid": In(1), "step": In(range(max(self.steps, 2))), "q": In(beat), "k": In(beat),
                          "o": Out(32), "o_valid": Out(1)})

    def elaborate(self, platform):
        m = Module()
        P = ACC_INTERLEAVE
        assert FAdd.latency == P, "the accumulator's partials are its pipeline stages"
        products = [add_unit(m, f"mul{i}", FMul(), a=self.k[i], b=self.q[i]).o for i in range(self.lanes)]
        beat_sum, tree_lat = f32_tree(m, products, FAdd, 1, "tree")
        # beat b of a pair adds to what beat b-P left the adder with (the beats run back to
        # back), the first P beats to +0
        first = delay(m, self.step < P, FMul.latency + tree_lat, "first", valid=True)
        accum = add_unit(m, "acc", FAdd(), b=beat_sum)
        m.d.comb += accum.a.eq(Mux(first, 0, accum.o))
        # when a pair's last beat leaves the adder, beat steps-1-d left it d cycles earlier:
        # partial i is the output of (steps-1-i) mod P cycles ago (+0 if no beat reaches it)
        history = [accum.o]
        for d in range(1, P):
            r = Signal(32, name=f"partial_d{d}")
            m.d.sync += r.eq(history[-1])
            history.append(r)
        finals = [history[(self.steps - 1 - i) % P] if i < self.steps else Const(0, 32) for i in range(P)]
        dot, _ = f32_tree(m, finals, FAdd, 1, "partials")
        scale = Const(_bits(np.float32(1.0 / np.sqrt(self.head_dim))), 32)
        m.d.comb += self.o.eq(add_unit(m, "scale", FMul(), a=dot, b=scale).o)
        m.d.comb += self.o_valid.eq(delay(m, self.valid & (self.step == self.steps - 1), self.latency, "valid",
                                          valid=True))
        return m
