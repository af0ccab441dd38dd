"""Rotate-half RoPE on head vectors (docs/architecture.md 3.6)."""

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .fp32 import FAdd, FMul, Stages
from .pipeline import f32_vec
from .vec_width import RowNarrow, VecNarrow, narrowed_latency, wire_narrowed

__all__ = ["Rope", "cos_sin_layout"]


def cos_sin_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"cos": data.ArrayLayout(unsigned(32), lanes),
                              "sin": data.ArrayLayout(unsigned(32), lanes)})


class Rope(wiring.Component):
    """Rotates one head vector (``head_dim`` elements, ``lanes`` per beat) by its position's
    table row: with halves x1, x2 and table values c, s,
    ``out1 = x1*c - x2*s``, ``out2 = x2*c + x1*s``.

    Ports: ``x`` (In stream, ``f32_vec(L)``, one head vector = head_dim/L beats, ``last`` on
    its final beat); ``cs`` (In stream, ``cos_sin_layout(L)``, head_dim/(2L) beats per head
    vector: the cos/sin of elements i of the half, consumed with the second half of x);
    ``o`` (Out stream, ``f32_vec(L)``, the rotated head vector in natural order, ``last`` on its
    final beat).

    The first half is buffered; each beat of the second half is rotated with the matching beat
    of the first (latency 8) into one of two output banks, which drain while the next head
    arrives. Throughput: a head's second half waits for the bank of the head two back to drain,
    so about n/(n+1) beats per cycle for n beats per head (0.93 at hd 96, 8 lanes; about 0.6
    for 4-beat heads); a third bank would reach 1. ``head_dim`` must be a multiple of 2 x lanes.

    ``rotate_lanes`` (default ``lanes``, dividing it) sets how many lanes rotate: with fewer,
    each x beat is split into lanes/rotate_lanes parts (:class:`~tellme.hw.vec_width.VecNarrow`,
    and each cs beat by :class:`~tellme.hw.vec_width.RowNarrow`), rotated by a rotate_lanes-wide
    Rope and joined again (:class:`~tellme.hw.vec_width.VecWiden`): throughput rotate_lanes/lanes
    of the above, 1 + lanes/rotate_lanes cycles more latency.

    Cost: per rotating lane four FMul and two FAdd, the first-half buffer and two output banks: at 8
    lanes and hd 96 13.7 K LUT-eq, 64 DSP (``bench/results/elementwise.json``).
    """

    def __init__(self, *, lanes: int, head_dim: int, rotate_lanes: int | None = None):
        check_positive_int("lanes", lanes)
        if not isinstance(head_dim, int) or head_dim < 2 or head_dim % (2 * lanes):
            raise ValueError(f"head_dim must be a positive multiple of 2 x lanes ({2 * lanes}), got {head_dim!r}")
        rotate_lanes = lanes if rotate_lanes is None else rotate_lanes
        check_positive_int("rotate_lanes", rotate_lanes)
        if lanes % rotate_lanes:
            raise ValueError(f"rotate_lanes must divide lanes ({lanes}), got {rotate_lanes!r}")
        self.lanes, self.head_dim, self.rotate_lanes = lanes, head_dim, rotate_lanes
        self.half_beats = head_dim // (2 * lanes)
        super().__init__({
            "x": In(stream.Signature(f32_vec(lanes))),
            "cs": In(stream.Signature(cos_sin_layout(lanes))),
            "o": Out(stream.Signature(f32_vec(lanes))),
        })

    @property
    def latency(self) -> int:
        """The rotation pipeline's (FMul then FAdd), plus the lane converters' when narrowed."""
        return FMul.latency + FAdd.latency + narrowed_latency(self.lanes, self.rotate_lanes)

    def elaborate(self, platform):
        if self.rotate_lanes < self.lanes:
            return self._split()
        m = Module()
        lanes, hb = self.lanes, self.half_beats
        word = data.ArrayLayout(unsigned(32), lanes)

        first = memory.Memory(shape=word, depth=hb, init=[])
        m.submodules.first = first
        first_w = first.write_port()
        first_r = first.read_port(domain="comb")
        # Two output banks, each as two halves so both results of a beat are written at once.
        banks = []
        for b in range(2):
            halves = []
            for half in ("lo", "hi"):
                mem = memory.Memory(shape=word, depth=hb, init=[])
                m.submodules[f"out{b}_{half}"] = mem
                halves.append((mem.write_port(), mem.read_port(domain="comb")))
            banks.append(halves)

        # -- input side: beat counter over the head vector
        in_beat = Signal(range(2 * hb))
        second_half = in_beat >= hb
        in_bank = Signal()
        bank_full = Signal(2)          # set when a bank holds a complete rotated head
        bank_busy = Signal(2)          # rotated beats of the head in flight to this bank
        # A head's second half may start only into a bank that is neither draining nor still
        # receiving an earlier head; its later beats follow into the same bank.
        in_bank_free = (in_beat != hb) | ~(bank_full.bit_select(in_bank, 1) | bank_busy.bit_select(in_bank, 1))

        # First half: store. Second half: needs its cos/sin beat and a free output bank.
        with m.If(~second_half):
            m.d.comb += self.x.ready.eq(1)
        with m.Else():
            m.d.comb += [self.x.ready.eq(self.cs.valid & in_bank_free),
                         self.cs.ready.eq(self.x.valid & in_bank_free)]
        take = self.x.valid & self.x.ready
        issue = take & second_half
        m.d.comb += [first_w.addr.eq(in_beat), first_w.data.eq(self.x.payload.data),
                     first_w.en.eq(take & ~second_half), first_r.addr.eq(in_beat - hb)]
        with m.If(take):
            with m.If(in_beat == 2 * hb - 1):
                m.d.sync += [in_beat.eq(0), in_bank.eq(~in_bank)]
            with m.Else():
                m.d.sync += in_beat.eq(in_beat + 1)

        # -- rotation pipeline (free running; validity travels beside it)
        st = Stages(m, 1)
        out1, out2 = [], []
        for lane in range(lanes):
            x1, x2 = first_r.data[lane], self.x.payload.data[lane]
            c, s = self.cs.payload.cos[lane], self.cs.payload.sin[lane]
            units = {name: FMul() for name in ("x1c", "x2s", "x2c", "x1s")}
            for name, unit in units.items():
                m.submodules[f"{name}{lane}"] = unit
                m.d.comb += unit.en.eq(1)
            m.d.comb += [units["x1c"].a.eq(x1), units["x1c"].b.eq(c), units["x2s"].a.eq(x2), units["x2s"].b.eq(s),
                         units["x2c"].a.eq(x2), units["x2c"].b.eq(c), units["x1s"].a.eq(x1), units["x1s"].b.eq(s)]
            sub, add = FAdd(subtract=True), FAdd()
            m.submodules[f"sub{lane}"], m.submodules[f"add{lane}"] = sub, add
            m.d.comb += [sub.en.eq(1), add.en.eq(1),
                         sub.a.eq(units["x1c"].o), sub.b.eq(units["x2s"].o),
                         add.a.eq(units["x2c"].o), add.b.eq(units["x1s"].o)]
            out1.append(sub.o)
            out2.append(add.o)
        half_index = Signal(range(hb))
        m.d.comb += half_index.eq(in_beat - hb)
        tag = Cat(in_bank, half_index, in_beat == 2 * hb - 1)
        done_valid = issue
        for _ in range(self.latency):
            tag, done_valid = st.reg(tag), st.reg(done_valid, valid=True)
        done_bank, done_index, done_last = tag[0], tag[1:-1], tag[-1]
        for b, halves in enumerate(banks):
            for (wp, _), result in zip(halves, (out1, out2)):
                m.d.comb += [wp.addr.eq(done_index), wp.data.eq(Cat(*result)),
                             wp.en.eq(done_valid & (done_bank == b))]
        set_full = Signal(2)
        with m.If(done_valid & done_last):
            m.d.comb += set_full.eq(Mux1(done_bank))

        # -- output side: drain full banks in order
        out_bank = Signal()
        out_beat = Signal(range(2 * hb))
        out_full = bank_full.bit_select(out_bank, 1)
        release = Signal(2)
        out_free = ~self.o.valid | self.o.ready
        upper = out_beat >= hb
        out_index = Signal(range(hb))
        m.d.comb += out_index.eq(Mux(upper, out_beat - hb, out_beat))
        words = []
        for halves in banks:
            for _, rp in halves:
                m.d.comb += rp.addr.eq(out_index)
            words.append(Mux(upper, halves[1][1].data, halves[0][1].data))
        with m.If(out_full & out_free):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.last.eq(out_beat == 2 * hb - 1),
                         self.o.payload.data.eq(Mux(out_bank, words[1], words[0]))]
            with m.If(out_beat == 2 * hb - 1):
                m.d.sync += [out_beat.eq(0), out_bank.eq(~out_bank)]
                m.d.comb += release.eq(Mux1(out_bank))
            with m.Else():
                m.d.sync += out_beat.eq(out_beat + 1)
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        busy_set = Mux(issue, Mux1(in_bank), 0)
        m.d.sync += [bank_full.eq((bank_full | set_full) & ~release),
                     bank_busy.eq((bank_busy | busy_set) & ~set_full)]
        return m

    def _split(self):
        """rotate_lanes < lanes: narrow x and cs, rotate rotate_lanes at a time, widen."""
        m = Module()
        wide, narrow = self.lanes, self.rotate_lanes
        core = Rope(lanes=narrow, head_dim=self.head_dim)
        wire_narrowed(m, core, inputs={
            "x": (self.x, VecNarrow(lanes=wide, out_lanes=narrow), core.x),
            "cs": (self.cs, RowNarrow(layout=cos_sin_layout, count=wide, out_count=narrow), core.cs)},
            out=self.o, lanes=wide, narrow=narrow)
        return m


def Mux1(bit):
    """One-hot of a 1-bit bank index: 0b01 or 0b10."""
    return Cat(~bit, bit)

