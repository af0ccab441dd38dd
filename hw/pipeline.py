"""Shared pieces of the element-wise pipelines: payload layouts and stream-pipeline control."""

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data

__all__ = ["f32_vec", "q8_vec", "StreamPipe", "f32_tree", "delay"]


def f32_vec(lanes: int) -> data.StructLayout:
    """L binary32 values (raw bits) and ``last``, set on the final beat of a vector."""
    return data.StructLayout({"data": data.ArrayLayout(unsigned(32), lanes), "last": unsigned(1)})


def q8_vec(lanes: int) -> data.StructLayout:
    """L int8 values and ``last``."""
    return data.StructLayout({"q": data.ArrayLayout(signed(8), lanes), "last": unsigned(1)})


class StreamPipe:
    """Control of a fixed-latency stream pipeline: joins input streams, holds every stage while
    the output register is full and not read (``advance``), and tracks which stages hold a beat.

    ``take`` is high in a cycle where one beat of every input moves into the pipeline; the
    output stream's valid is the last stage's valid bit. Units inside use ``en = advance``.
    """

    def __init__(self, m: Module, inputs, output, latency: int):
        self.advance = Signal(name="advance")
        self.take = Signal(name="take")
        m.d.comb += self.advance.eq(~output.valid | output.ready)
        all_valid = Cat(*[i.valid for i in inputs]).all() if inputs else 1
        for i in inputs:
            others = Cat(*[o.valid for o in inputs if o is not i])
            m.d.comb += i.ready.eq(self.advance & (others.all() if len(inputs) > 1 else 1))
        m.d.comb += self.take.eq(all_valid & self.advance)
        self.valid = Signal(latency, name="pipe_valid")
        with m.If(self.advance):
            m.d.sync += self.valid.eq(Cat(self.take, self.valid[:-1]))
        m.d.comb += output.valid.eq(self.valid[-1])


def f32_tree(m: Module, values, add_unit, en, name: str):
    """Pairwise tree of binary32 additions (or any binary unit) over a power-of-two list:
    ((v0+v1)+(v2+v3))+... ; returns (result, latency)."""
    level, latency, count = list(values), 0, 0
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            unit = add_unit()
            m.submodules[f"{name}{count}"] = unit
            count += 1
            m.d.comb += [unit.a.eq(level[i]), unit.b.eq(level[i + 1]), unit.en.eq(en)]
            nxt.append(unit.o)
        latency += unit.latency
        level = nxt
    return level[0], latency


def delay(m: Module, value, cycles: int, name: str, *, valid: bool = False):
    """``value`` ``cycles`` cycles later, through a chain of registers named ``name0``, ...
    Data registers are reset-less (validity travels separately, and long chains map to
    shift-register LUTs); ``valid=True`` for validity bits, which reset."""
    for k in range(cycles):
        r = Signal.like(value, name=f"{name}{k}", reset_less=not valid)
        m.d.sync += r.eq(value)
        value = r
    return value
