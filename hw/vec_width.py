"""Lane-count converters for ``f32_vec`` streams (and other beats of per-lane arrays): split a wide beat into
narrower ones and join them back, so that a costly unit can run fewer lanes than the stream
around it."""

from amaranth.hdl import Module, Mux, Shape, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .pipeline import f32_vec

__all__ = ["VecNarrow", "VecWiden", "RowNarrow", "wire_narrowed", "narrowed_latency"]


class _LaneConverter(wiring.Component):
    """``i``: ``f32_vec(lanes)`` in, ``o``: ``f32_vec(out_lanes)`` out; ``parts`` = the ratio."""

    def __init__(self, *, lanes: int, out_lanes: int, extra: dict | None = None):
        for name, value in (("lanes", lanes), ("out_lanes", out_lanes)):
            check_positive_int(name, value)
        wide, narrow = max(lanes, out_lanes), min(lanes, out_lanes)
        if wide % narrow:
            raise ValueError(f"the narrow lane count ({narrow}) must divide the wide one ({wide})")
        self.parts = wide // narrow
        self.lanes, self.out_lanes = lanes, out_lanes
        super().__init__({"i": In(stream.Signature(f32_vec(lanes))),
                          "o": Out(stream.Signature(f32_vec(out_lanes))), **(extra or {})})


class VecNarrow(_LaneConverter):
    """Splits each ``f32_vec(lanes)`` beat into lanes/out_lanes ``f32_vec(out_lanes)`` beats,
    lanes 0.. first; ``last`` goes on the final part of a beat that had it.

    Latency 1 (a part leaves the cycle after its beat arrives); throughput one output beat per
    cycle (a new input beat is taken in the cycle its predecessor's last part leaves).

    Cost: a register of one input beat, a part counter and an out_lanes-wide multiplexer.
    """

    def __init__(self, *, lanes: int, out_lanes: int):
        if out_lanes > lanes:
            raise ValueError(f"out_lanes ({out_lanes}) must not exceed lanes ({lanes})")
        super().__init__(lanes=lanes, out_lanes=out_lanes)

    def elaborate(self, platform):
        m = Module()
        n = self.parts
        beat = Signal(f32_vec(self.lanes))
        full = Signal()
        part = Signal(range(n))
        final = Signal()
        m.d.comb += [final.eq(part == n - 1), self.o.valid.eq(full),
                     self.o.payload.data.as_value().eq(beat.data.as_value().word_select(part, 32 * self.out_lanes)),
                     self.o.payload.last.eq(beat.last & final),
                     self.i.ready.eq(~full | (final & self.o.ready))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += part.eq(0 if n == 1 else part + 1)
            with m.If(final):
                m.d.sync += [full.eq(0), part.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [beat.eq(self.i.payload), full.eq(1), part.eq(0)]
        return m


class VecWiden(_LaneConverter):
    """Joins out_lanes/lanes consecutive ``f32_vec(lanes)`` beats into one
    ``f32_vec(out_lanes)`` beat (the first in lanes 0..); ``last`` from the final part.

    Latency 1 after the final part; throughput one input beat per cycle (the joined beat is
    read in the cycle the next one's first part arrives).

    With ``variable=True`` a beat may be made of fewer parts: an In stream ``beat_parts`` (1 ..
    out_lanes/lanes, e.g. :class:`RowNarrow`'s) says, per output beat, how many input beats make
    it (the lanes of the parts not given hold stale values); every part waits for it to be
    valid, and it is taken with the beat's final part. Fed by a RowNarrow's count, the parts
    must reach the join at least two cycles after the splitter gave them (a pipeline between,
    as in :func:`wire_narrowed`; ``sim/formal.py`` proves the pair with two stages between).

    Cost: a register of one output beat and a part counter.
    """

    def __init__(self, *, lanes: int, out_lanes: int, variable: bool = False):
        if out_lanes < lanes:
            raise ValueError(f"out_lanes ({out_lanes}) must not be below lanes ({lanes})")
        self.variable = bool(variable)
        extra = {"beat_parts": In(stream.Signature(range(out_lanes // lanes + 1)))} if self.variable else None
        super().__init__(lanes=lanes, out_lanes=out_lanes, extra=extra)

    def elaborate(self, platform):
        m = Module()
        n, width = self.parts, 32 * self.lanes
        beat = Signal(f32_vec(self.out_lanes))
        full = Signal()
        part = Signal(range(n))
        final = Signal()
        take = Signal()
        if self.variable:
            # a beat of fewer parts ends at its count; the count is read with the final part
            count = self.beat_parts
            m.d.comb += [final.eq((part == n - 1) | (part + 1 >= count.payload)),
                         take.eq((~full | self.o.ready | (part != 0)) & count.valid),
                         count.ready.eq(self.i.valid & take & final)]
        else:
            m.d.comb += [final.eq(part == n - 1), take.eq(~full | self.o.ready | (part != 0))]
        m.d.comb += [self.o.valid.eq(full), self.o.payload.eq(beat), self.i.ready.eq(take)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += full.eq(0)
        with m.If(self.i.valid & self.i.ready):
            with m.Switch(part):
                for k in range(n):
                    with m.Case(k):
                        m.d.sync += beat.data.as_value()[k * width:(k + 1) * width].eq(self.i.payload.data.as_value())
            with m.If(final):
                m.d.sync += [full.eq(1), part.eq(0), beat.last.eq(self.i.payload.last)]
            with m.Else():
                m.d.sync += part.eq(part + 1)
        return m


class RowNarrow(wiring.Component):
    """Splits each beat of a struct whose array members have ``count`` elements
    (``layout(count)``, e.g. a TLMM result row of T tokens, :func:`~tellme.hw.tlmm.result_layout`,
    or RoPE's cos/sin beat, :func:`~tellme.hw.rope.cos_sin_layout`) into count/out_count beats of
    ``layout(out_count)``, elements 0.. first; other members are copied to every part, except
    ``last``, which goes on the final part of a beat that had it.

    No registers but the part counter: ``o.valid`` is ``i.valid`` and ``o.payload`` the part of
    the beat on offer (stable while it waits, by the stream rules on ``i``); ``i.ready`` is
    ``o.ready`` on the final part. Latency 0; throughput one part per cycle.

    With ``used`` (the name of a member of the wide layout: how many of the ``count`` elements
    are used, 0 for all) a beat gives only the parts that hold used elements, and each beat's
    part count also goes out on the Out stream ``beat_parts`` (through a FIFO of
    ``parts_depth`` entries, written with the beat's first part, which waits for room), for a
    :class:`VecWiden` with ``variable=True`` that joins the parts again.

    Cost: a part counter and an out_count-element multiplexer per array member (and the FIFO).
    """

    def __init__(self, *, layout, count: int, out_count: int, used: str | None = None, parts_depth: int = 4):
        for name, value in (("count", count), ("out_count", out_count), ("parts_depth", parts_depth)):
            check_positive_int(name, value)
        if out_count > count or count % out_count:
            raise ValueError(f"out_count ({out_count}) must divide count ({count})")
        self.count, self.out_count, self.parts = count, out_count, count // out_count
        wide, narrow = layout(count), layout(out_count)
        self.arrays = [name for name, field in wide if isinstance(field.shape, data.ArrayLayout)
                       and field.shape.length == count]
        if used is not None and used not in {name for name, _ in wide}:
            raise ValueError(f"used must name a member of the layout, got {used!r}")
        self.used, self.parts_depth = used, parts_depth
        members = {"i": In(stream.Signature(wide)), "o": Out(stream.Signature(narrow))}
        if used is not None:
            members["beat_parts"] = Out(stream.Signature(range(self.parts + 1)))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        n, k = self.parts, self.out_count
        part = Signal(range(max(n, 2)))
        final = Signal()
        beat, out = self.i.payload, self.o.payload
        if self.used is None:
            m.d.comb += [final.eq(part == n - 1), self.o.valid.eq(self.i.valid),
                         self.i.ready.eq(self.o.ready & final)]
        else:
            used = beat[self.used]
            parts = Signal(range(n + 1))
            m.d.comb += parts.eq(Mux((used == 0) | (used >= n * k), n, (used + k - 1) // k))
            m.submodules.beat_parts = counts = fifo.SyncFIFOBuffered(width=len(parts), depth=self.parts_depth)
            room = (part != 0) | counts.w_rdy
            m.d.comb += [final.eq(part + 1 >= parts), self.o.valid.eq(self.i.valid & room),
                         self.i.ready.eq(self.o.ready & room & final),
                         counts.w_en.eq(self.o.valid & self.o.ready & (part == 0)), counts.w_data.eq(parts)]
            m.d.comb += [self.beat_parts.valid.eq(counts.r_rdy), self.beat_parts.payload.eq(counts.r_data),
                         counts.r_en.eq(self.beat_parts.ready)]
        for name, field in beat.shape():
            if name in self.arrays:
                width = Shape.cast(field.shape.elem_shape).width
                m.d.comb += out[name].as_value().eq(beat[name].as_value().word_select(part, width * k))
            elif name == "last":
                m.d.comb += out.last.eq(beat.last & final)
            else:
                m.d.comb += out[name].eq(beat[name])
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += part.eq(Mux(final, 0, part + 1))
        return m


def wire_narrowed(m: Module, core: wiring.Component, *, inputs: dict, out, lanes: int, narrow: int) -> None:
    """Runs ``core``, a unit of ``narrow`` lanes, inside streams of ``lanes``: each ``inputs``
    item ``name: (outer, splitter, inner)`` takes the outer In stream through ``splitter`` (a
    VecNarrow or RowNarrow, submodule ``<name>_parts``) into the core's In stream ``inner``; the
    core's ``o`` is joined by a :class:`VecWiden` (``join``) onto the outer Out stream ``out``.
    The narrowed Gating, Rope, ResidualAdd and Dequant are built this way. A RowNarrow with
    ``used`` (the only input then) gives each beat's part count to a variable join."""
    counted = [splitter for _, splitter, _ in inputs.values() if getattr(splitter, "used", None) is not None]
    if counted and len(inputs) != 1:
        raise ValueError("a RowNarrow that skips unused parts must be the only input")
    if counted and getattr(core, "latency", 0) < 2:
        # the join waits for a beat's count, which leaves the splitter's FIFO two cycles after
        # the beat's first part: a core of less latency would wait for it forever
        raise ValueError("a RowNarrow that skips unused parts needs a core of latency >= 2")
    for name, (outer, splitter, inner) in inputs.items():
        m.submodules[f"{name}_parts"] = splitter
        wiring.connect(m, wiring.flipped(outer), splitter.i)
        wiring.connect(m, splitter.o, inner)
    m.submodules.core = core
    m.submodules.join = join = VecWiden(lanes=narrow, out_lanes=lanes, variable=bool(counted))
    if counted:
        wiring.connect(m, counted[0].beat_parts, join.beat_parts)
    wiring.connect(m, core.o, join.i)
    wiring.connect(m, join.o, wiring.flipped(out))


def narrowed_latency(lanes: int, narrow: int) -> int:
    """Cycles :func:`wire_narrowed` with VecNarrow splitters adds to its core's latency: none at
    full width; else the splitter's register (1), the parts of a beat (lanes/narrow) before the
    last one enters the core, and VecWiden's register (1) after it leaves."""
    parts = lanes // narrow
    return 0 if parts == 1 else parts + 1
