"""Assembly of the attention unit's per-token load beat from quantised head vectors."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Shape, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .attention import check_attn_format, kv_element_shape
from .attn_prefill import prefill_load_layout
from .pipeline import f32_vec, q8_vec

__all__ = ["AttentionLoad"]


class AttentionLoad(wiring.Component):
    """Collects one token's quantised vectors into a :func:`~tellme.hw.attn_prefill.prefill_load_layout`
    beat for :class:`~tellme.hw.attn_prefill.PrefillAttention`'s ``load`` port.

    Per token, ``heads + 2`` vectors of ``head_dim`` values arrive on ``q`` (``lanes`` values
    per beat, ``head_dim / lanes`` beats each), in the order query head 0 .. heads-1, key, value.
    In the int8 format they are the quantiser's int8 output and their dequantisation scales
    arrive on ``scale``, one per vector in the same order (the two streams are independent: a
    scale may come before or after its vector's beats); the token's beat is ``{q[h] = {q, d_q},
    k, k_scale, v, v_scale}``. In the fp32 format (``attn_format``) they are float32 (RoPE's
    output, unquantised), there is no ``scale`` port and the beat is ``{q[h] = {q}, k, v}``.
    When all of them are in, the beat is offered on ``o``; the next token's vectors are taken
    once it has moved.

    Ports: ``q`` (In stream, ``q8_vec(lanes)`` or ``f32_vec(lanes)``; ``last`` is not needed and
    ignored), ``scale`` (In stream, ``unsigned(32)``; int8 only), ``o`` (Out stream,
    ``prefill_load_layout(head_dim, heads, attn_format)``).

    Latency: the token's beat is offered one cycle after its last vector beat and last scale
    have both been taken. Throughput: one ``q`` beat and one ``scale`` beat per cycle while a
    token is being collected; one idle cycle per token (the beat's hand-over). The quantiser
    upstream needs far longer per vector, so this never limits the attention step.

    Cost: one vector's shift register (``head_dim`` elements) and the output register
    ((heads + 2) x head_dim elements and, int8, heads + 2 words), no memories.

    Parameters (keyword-only): ``head_dim`` (a multiple of ``lanes``), ``heads`` (query heads
    per pass), ``lanes``, ``attn_format`` (``"int8"`` or ``"fp32"``).
    """

    def __init__(self, *, head_dim: int, heads: int, lanes: int, attn_format: str = "int8"):
        check_positive_int("head_dim", head_dim)
        check_positive_int("heads", heads)
        check_positive_int("lanes", lanes)
        if head_dim % lanes:
            raise ValueError(f"head_dim ({head_dim}) must be a multiple of lanes ({lanes})")
        self.head_dim, self.heads, self.lanes = head_dim, heads, lanes
        self.attn_format = check_attn_format(attn_format)
        scaled = attn_format == "int8"
        ports = {"q": In(stream.Signature(q8_vec(lanes) if scaled else f32_vec(lanes)))}
        if scaled:
            ports["scale"] = In(stream.Signature(unsigned(32)))
        ports["o"] = Out(stream.Signature(prefill_load_layout(head_dim, heads, attn_format)))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        hd, lanes, heads = self.head_dim, self.lanes, self.heads
        scaled = self.attn_format == "int8"
        width = Shape.cast(kv_element_shape(self.attn_format)).width   # bits per element
        vectors = heads + 2
        beats = hd // lanes

        load = Signal(prefill_load_layout(hd, heads, self.attn_format))
        shift = Signal(width * hd)                   # the vector being collected, beat 0 lowest
        vector = Signal(range(vectors + 1))          # vectors complete so far
        beat = Signal(range(beats))
        scales = Signal(range(vectors + 1))          # scales taken so far

        def slot(index):
            """(values, scale) fields of vector ``index`` of the load beat (scale None in fp32)."""
            if index < heads:
                return load.q[index].q, load.q[index].d_q if scaled else None
            if index == heads:
                return load.k, load.k_scale if scaled else None
            return load.v, load.v_scale if scaled else None

        m.d.comb += [
            self.o.payload.eq(load),
            self.q.ready.eq(~self.o.valid & (vector < vectors)),
        ]
        if scaled:
            m.d.comb += self.scale.ready.eq(~self.o.valid & (scales < vectors))

        with m.If(self.q.valid & self.q.ready):
            values = self.q.payload.q if scaled else self.q.payload.data
            incoming = Cat(shift[width * lanes:], values.as_value())
            m.d.sync += shift.eq(incoming)
            with m.If(beat == beats - 1):
                m.d.sync += [beat.eq(0), vector.eq(vector + 1)]
                with m.Switch(vector):
                    for index in range(vectors):
                        with m.Case(index):
                            m.d.sync += slot(index)[0].eq(incoming)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        if scaled:
            with m.If(self.scale.valid & self.scale.ready):
                m.d.sync += scales.eq(scales + 1)
                with m.Switch(scales):
                    for index in range(vectors):
                        with m.Case(index):
                            m.d.sync += slot(index)[1].eq(self.scale.payload)
            complete = (vector == vectors) & (scales == vectors)
        else:
            complete = vector == vectors

        with m.If(self.o.valid):
            with m.If(self.o.ready):
                m.d.sync += [self.o.valid.eq(0), vector.eq(0), scales.eq(0)]
        with m.Elif(complete):
            m.d.sync += self.o.valid.eq(1)
        return m
