"""Formal properties of the stream stages, the lane converters, the AXI masters and the register
file, proven with YoWASP Yosys's SAT solver (issue #16; docs/architecture.md section 12).

Each unit sits in a *harness*: an Amaranth module that drives the unit's inputs from free
values (``AnySeq``, anything in every cycle), constrains them with ``Assume`` to what the unit's
environment promises (a stream source holds valid and payload until ready, an AXI subordinate
answers only the bursts it was asked for, ...) and states the unit's promises with ``Assert``.
:func:`prove` converts the harness to RTLIL and runs Yosys ``sat`` on it from the reset state:

* ``induction``: ``sat -tempinduct``, k-induction up to ``depth`` steps: the properties hold in
  every reachable state, for ever;
* ``bounded``: ``sat -tempinduct -tempinduct-baseonly``: no input sequence of ``depth`` cycles
  from reset violates a property (used where the property relates the unit's state to the
  harness's counters, which induction cannot see through).

The property families, each with its assertion names' prefix:

* ``held``: a valid output (stream valid, AXI VALID) stays high, with its payload unchanged,
  until it is taken;
* ``order``: no beat dropped, duplicated or reordered, ``last`` where it belongs (the standard
  trick: an ``AnyConst`` index picks one beat, or part of a beat, of the input; its value is
  recorded when offered and must be what leaves at that index; the index being arbitrary, every
  beat is checked);
* ``burst``: AXI bursts are INCR, of at most ``max_burst`` beats, never across a 4 KiB
  boundary; ``split``: a command's bursts are contiguous and their beats sum to its beats;
* ``live``: every started transaction completes: under fairness assumptions (the other side
  answers within ``fair`` cycles), progress is made at least every ``progress`` cycles while
  anything is owed, and the unit is drained or idle when it says so;
* ``reserved``: reserved register bits and unmapped addresses read 0; every access gets its
  OKAY response the cycle after it is taken.

A failing proof raises :class:`FormalError` naming the failed assertions and the counterexample
waveform, written to ``<build root>/formal/<name>.vcd``. A proof that imported no assertion, or
fewer than the harness states, fails too, and so does one with an assertion whose condition no
input sequence reaches (a cover run after each proof): a property that silently disappeared or
never checks cannot pass. ``tests/test_formal.py`` runs :data:`PROOFS` and the deliberately
broken variants of :data:`BROKEN`, which must fail.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

from amaranth.asserts import AnyConst, AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume, Cat, Elaboratable, Fragment, Module, Mux, ResetSignal, Signal, Value
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract.layouts import PAGE
from ..contract.regmap import REGISTER_MAP, Register, RegisterMap
from ..gen.estimate import YosysError, yosys_command
from ..hw import axi_bursts
from ..hw.axi import BURST_INCR, RESP_OKAY, axi_read_signature
from ..hw.axi_bursts import BEAT_COUNT, IncrBursts, command_layout
from ..hw.axi_read import AxiReadMaster
from ..hw.axi_write import AxiWriteMaster
from ..hw.credit_fifo import CreditFifo
from ..hw.pipeline import f32_vec
from ..hw.regfile import RegisterFile
from ..hw.stream_buffer import StreamBuffer
from ..hw.vec_width import RowNarrow, VecNarrow, VecWiden
from .toolchain import build_root

__all__ = ["FormalError", "Proof", "Harness", "StreamHarness", "CreditFifoHarness", "AddressChannelHarness",
           "IncrBurstsHarness", "AxiMasterHarness", "AxiReadHarness", "AxiWriteHarness", "RegisterFileHarness",
           "without_field", "free", "past", "run_length", "counter", "prove", "failed_assertions", "formal_dir",
           "PROOFS", "BROKEN", "broken"]


class FormalError(AssertionError):
    """A property does not hold (or the proof proved nothing); ``failed`` names the assertions
    false in the counterexample, ``vcd`` is its waveform."""

    def __init__(self, message: str, *, failed=(), vcd: Path | None = None, log: str = ""):
        super().__init__(message)
        self.failed, self.vcd, self.log = list(failed), vcd, log


@dataclass
class Proof:
    """A finished proof: what was proven, how, and how long it took."""
    name: str
    method: str
    depth: int
    asserts: list[str]
    seconds: float
    log: str = field(repr=False, default="")


def formal_dir() -> Path:
    """Where counterexample waveforms go: ``<build root>/formal``."""
    return build_root() / "formal"


# -- harness building blocks ------------------------------------------------------------------

def free(m: Module, *targets) -> None:
    """Drive ``targets`` (inputs of the unit) with any value in every cycle."""
    for target in targets:
        value = Value.cast(target)
        m.d.comb += value.eq(AnySeq(len(value)))


def past(m: Module, value, name: str) -> Signal:
    """``value`` one cycle ago (0 in the first cycle)."""
    value = Value.cast(value)
    reg = Signal(len(value), name=name)
    m.d.sync += reg.eq(value)
    return reg


def run_length(m: Module, cond, limit: int, name: str) -> Signal:
    """How many cycles in a row ``cond`` held just before this one (saturating at ``limit``)."""
    run = Signal(range(limit + 1), name=name)
    m.d.sync += run.eq(Mux(cond, Mux(run == limit, limit, run + 1), 0))
    return run


def counter(m: Module, width: int, name: str, step) -> Signal:
    """A register counting up by ``step`` (a value, 0 where nothing counts) every cycle."""
    count = Signal(width, name=name)
    m.d.sync += count.eq(count + step)
    return count


class Harness(Elaboratable):
    """A unit in an environment of assumptions, with assertions on what it does. Subclasses
    implement :meth:`build`. ``method`` (``"induction"`` or ``"bounded"``) and ``depth`` say how
    :func:`prove` proves it; ``fault`` selects a deliberately broken variant (see :data:`BROKEN`).
    After elaboration, ``asserts`` names every assertion and ``assumes`` counts the assumptions
    (:func:`prove` checks that Yosys imported all of them)."""

    def __init__(self, name: str, *, method: str, depth: int, fault: str | None = None):
        if method not in ("induction", "bounded"):
            raise ValueError(f"method must be 'induction' or 'bounded', not {method!r}")
        self.name, self.method, self.depth, self.fault = name, method, depth, fault
        self.asserts: list[str] = []
        self.conditional: list[str] = []     # the asserts that check only when something happens
        self.assumes = 0

    def elaborate(self, platform):
        self.asserts, self.assumes, self.conditional, self._reached = [], 0, [], []
        m = Module()
        # From the reset state (the flip-flops' initial values), without a reset after it.
        self.assume(m, ~ResetSignal())
        self.build(m)
        # Every conditional assertion's condition has held by now (the cover run, :func:`prove`).
        everything = Signal(name=REACHED_ALL, attrs={"keep": 1})
        m.d.comb += everything.eq(Cat(*self._reached).all() if self._reached else 1)
        return m

    def build(self, m: Module) -> None:
        raise NotImplementedError

    def check(self, m: Module, name: str, cond, *, when=None) -> None:
        """Assert ``cond`` (in the cycles where ``when`` holds); the waveform shows it as
        ``assert_<name>``."""
        if name in self.asserts:
            raise ValueError(f"two assertions named {name}")
        ok = Signal(name=f"assert_{name}")
        m.d.comb += [ok.eq(cond if when is None else ~when | cond), Assert(ok)]
        self.asserts.append(name)
        if when is not None:
            # ``when`` has held in this cycle or an earlier one
            fired, reached = Signal(name=f"fired_{name}"), Signal(name=f"reached_{name}", attrs={"keep": 1})
            m.d.comb += reached.eq(fired | when)
            m.d.sync += fired.eq(reached)
            self._reached.append(reached)
            self.conditional.append(name)

    def assume(self, m: Module, cond, *, when=None) -> None:
        m.d.comb += Assume(cond if when is None else ~when | cond)
        self.assumes += 1

    def held(self, m: Module, name: str, valid, ready, payload, *, assume: bool = False) -> None:
        """Once ``valid`` is high and not taken (``ready`` low), it stays high next cycle with
        ``payload`` (a list of values) unchanged: asserted for the unit's outputs, assumed for
        its environment's."""
        payload = Cat(*payload)
        stalled = past(m, valid & ~ready, f"{name}_stalled")
        before = past(m, payload, f"{name}_before")
        if assume:
            self.assume(m, valid & (payload == before), when=stalled)
        else:
            self.check(m, name, valid & (payload == before), when=stalled)

    def within(self, m: Module, name: str, waiting, bound: int, *, assume: bool = False) -> None:
        """``waiting`` never holds for more than ``bound`` cycles in a row."""
        if bound == 0 and not assume:
            self.check(m, name, ~waiting)
            return
        run = run_length(m, waiting, bound, f"{name}_run")
        if assume:
            self.assume(m, run < bound, when=waiting)
        else:
            self.check(m, name, run < bound, when=waiting)


# -- stream stages and lane converters ----------------------------------------------------------

def _beat_fields(payload, part_width: int, parts: int):
    """The data parts and ``last`` of a beat whose layout is ``data`` (parts x part_width bits)
    then ``last`` (as :func:`~tellme.hw.pipeline.f32_vec`)."""
    value = Value.cast(payload)
    data_width = part_width * parts
    if len(value) != data_width + 1:
        raise ValueError(f"payload of {len(value)} bits is not {parts} x {part_width} data bits and last")
    return [value[p * part_width:(p + 1) * part_width] for p in range(parts)], value[data_width]


class StreamHarness(Harness):
    """A stream unit ``make_unit()`` from ``i`` to ``o`` that passes its data through in order,
    ``in_parts`` parts per input beat and ``out_parts`` per output beat (one of them 1: a lane
    converter splits or joins beats; both 1: a stage passes beats). Payloads are ``data``
    (parts x ``part_width`` bits) then ``last``; ``last`` ends up on the output part of the
    input part that had it (an input beat's ``last`` belongs to its final part; a joined
    output beat's ``last`` is that of its final part).

    Environment: ``i`` obeys the stream rules (valid and payload held until ready), its data
    and ``o.ready`` are free.

    Properties: ``held_o``; ``order_data`` and ``order_last`` (the parts leave in the order
    they came, none lost or added, ``last`` in place); ``live_drain``: after ``drain`` cycles of
    ``o.ready`` high with no input offered, every part that entered has left (but for a
    joined beat not yet complete); ``live_accept``: while ``o.ready`` is high an offered input
    beat waits at most ``accept`` cycles. ``families`` selects which of held/order/live are
    stated (the induction run states only ``held``)."""

    FAULTS = ("flip", "drop", "dup")

    def __init__(self, name, make_unit, *, part_width: int, in_parts: int = 1, out_parts: int = 1,
                 drain: int, accept: int, families=("held", "order", "live"), **kwargs):
        super().__init__(name, **kwargs)
        if self.fault not in (None, *self.FAULTS):
            raise ValueError(f"unknown fault {self.fault!r}")
        self.make_unit, self.part_width = make_unit, part_width
        self.in_parts, self.out_parts = in_parts, out_parts
        self.drain, self.accept, self.families = drain, accept, set(families)

    def environment(self, m: Module, unit) -> None:
        """Further assumptions and checks of a particular unit (none here)."""

    def observe(self, m: Module, o) -> SimpleNamespace:
        """The output stream as the checks see it: ``o`` itself, or ``o`` through a broken
        stage (``fault``): ``flip`` changes payload bit 0 while a beat waits, ``drop`` takes
        the second beat from ``o`` without showing it, ``dup`` shows the second beat twice."""
        width = len(Value.cast(o.payload))
        seen = SimpleNamespace(valid=Signal(name="seen_valid"), ready=Signal(name="seen_ready"),
                               payload=Signal(width, name="seen_payload"))
        free(m, seen.ready)
        payload = Value.cast(o.payload)
        beats = Signal(range(3), name="unit_beats")      # beats taken from o, saturating at 2
        if self.fault in ("drop", "dup"):
            with m.If(o.valid & o.ready & (beats != 2)):
                m.d.sync += beats.eq(beats + 1)
        if self.fault == "flip":
            stalled = past(m, seen.valid & ~seen.ready, "fault_stalled")
            m.d.comb += [seen.valid.eq(o.valid), seen.payload.eq(payload ^ stalled), o.ready.eq(seen.ready)]
        elif self.fault == "drop":
            skip = (beats == 1)
            m.d.comb += [seen.valid.eq(o.valid & ~skip), seen.payload.eq(payload), o.ready.eq(seen.ready | skip)]
        elif self.fault == "dup":
            shown = Signal(name="fault_shown")
            first = (beats == 1) & ~shown
            m.d.comb += [seen.valid.eq(o.valid), seen.payload.eq(payload), o.ready.eq(seen.ready & ~first)]
            with m.If(seen.valid & seen.ready & first):
                m.d.sync += shown.eq(1)
        else:
            m.d.comb += [seen.valid.eq(o.valid), seen.payload.eq(payload), o.ready.eq(seen.ready)]
        return seen

    def build(self, m):
        m.submodules.unit = unit = self.make_unit()
        i = unit.i
        free(m, i.valid, i.payload)
        self.held(m, "i", i.valid, i.ready, [i.payload], assume=True)
        self.environment(m, unit)
        o = self.observe(m, unit.o)
        if "held" in self.families:
            self.held(m, "held_o", o.valid, o.ready, [o.payload])
        if self.families & {"order", "live"}:
            self._order_and_live(m, i, o)

    def _order_and_live(self, m, i, o):
        pw, n_in, n_out = self.part_width, self.in_parts, self.out_parts
        width = (self.depth * max(n_in, n_out)).bit_length() + 1
        i_parts, i_last = _beat_fields(i.payload, pw, n_in)
        o_parts, o_last = _beat_fields(o.payload, pw, n_out)
        took, gave = i.valid & i.ready, o.valid & o.ready
        parts_in = counter(m, width, "parts_in", Mux(took, n_in, 0))
        parts_out = counter(m, width, "parts_out", Mux(gave, n_out, 0))
        if "order" in self.families:
            # The tagged part: recorded while offered (the source holds it until taken).
            tag = AnyConst(width)
            tag_data, tag_last, tag_seen = (Signal(pw, name="tag_data"), Signal(name="tag_last"),
                                            Signal(name="tag_seen"))
            data, last, seen = tag_data, tag_last, tag_seen
            for p in range(n_in):
                hit = i.valid & (parts_in + p == tag)
                data = Mux(hit, i_parts[p], data)
                last = Mux(hit, i_last if p == n_in - 1 else 0, last)
                seen = seen | hit
            m.d.sync += [tag_data.eq(data), tag_last.eq(last), tag_seen.eq(seen)]
            here = [gave & (parts_out + p == tag) for p in range(n_out)]
            self.check(m, "order_data", seen & Cat(*[~here[p] | (o_parts[p] == data) for p in range(n_out)]).all(),
                       when=Cat(*here).any())
            self.check(m, "order_last", o_last == last, when=here[-1])
        if "live" in self.families:
            if n_out > 1:
                # parts of output beats that can be complete: whole groups of n_out
                phase = Signal(range(n_out), name="join_phase")
                whole = Signal(width, name="parts_whole")
                with m.If(took):
                    m.d.sync += phase.eq(Mux(phase == n_out - 1, 0, phase + 1))
                    with m.If(phase == n_out - 1):
                        m.d.sync += whole.eq(whole + n_out)
            else:
                whole = parts_in
            quiet = run_length(m, o.ready & ~i.valid, self.drain, "quiet_run")
            self.check(m, "live_drain", parts_out == whole, when=quiet == self.drain)
            self.within(m, "live_accept", i.valid & ~i.ready & o.ready, self.accept)


def _skip_layout(count: int) -> data.StructLayout:
    """Rows of ``count`` 32-bit elements of which ``used`` are used (0: all), and ``last``."""
    return data.StructLayout({"data": data.ArrayLayout(32, count), "used": 2, "last": 1})


class _SkipPartsUnit(wiring.Component):
    """A RowNarrow that skips unused parts (``used``) into a VecWiden that joins a variable
    number of them, two stream stages between (as a narrowed unit's pipeline; the join waits
    for each beat's count, which leaves the splitter's FIFO a cycle after the first part):
    rows of two elements in, ``f32_vec(2)`` out. ``fixed_join``: a join that always takes two
    parts (the broken variant)."""

    def __init__(self, *, parts_depth: int = 1, fixed_join: bool = False):
        self.parts_depth, self.fixed_join = parts_depth, fixed_join
        super().__init__({"i": In(stream.Signature(_skip_layout(2))), "o": Out(stream.Signature(f32_vec(2)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.split = split = RowNarrow(layout=_skip_layout, count=2, out_count=1, used="used",
                                               parts_depth=self.parts_depth)
        m.submodules.stage0 = stage0 = StreamBuffer(shape=f32_vec(1))
        m.submodules.stage1 = stage1 = StreamBuffer(shape=f32_vec(1))
        m.submodules.join = join = VecWiden(lanes=1, out_lanes=2, variable=not self.fixed_join)
        wiring.connect(m, wiring.flipped(self.i), split.i)
        m.d.comb += [stage0.i.valid.eq(split.o.valid), split.o.ready.eq(stage0.i.ready),
                     stage0.i.payload.data.eq(split.o.payload.data), stage0.i.payload.last.eq(split.o.payload.last)]
        wiring.connect(m, stage0.o, stage1.i)
        wiring.connect(m, stage1.o, join.i)
        if self.fixed_join:
            m.d.comb += split.beat_parts.ready.eq(1)
        else:
            wiring.connect(m, split.beat_parts, join.beat_parts)
        wiring.connect(m, join.o, wiring.flipped(self.o))
        return m


class SkipPartsHarness(Harness):
    """:class:`_SkipPartsUnit`: a row in, a row out, its used elements in place.

    Environment: ``i`` obeys the stream rules, its payload and ``o.ready`` are free.

    Properties: ``held_o``; ``order_data`` (the n-th row out has the n-th row in's used
    elements: element 0 always, element 1 when ``used`` is 0 or 2), ``order_last`` (its
    ``last``) and ``order_count`` (never more rows out than in); ``live_drain`` (after
    ``drain`` quiet cycles of ``o.ready`` every row that entered has left) and ``live_accept``
    (an offered row waits at most ``accept`` cycles while ``o.ready`` is high).
    ``fault="fixed_join"``: the join takes two parts whatever the row used."""

    FAULTS = ("fixed_join",)

    def __init__(self, name, *, drain: int, accept: int, parts_depth: int = 1,
                 families=("held", "order", "live"), **kwargs):
        super().__init__(name, **kwargs)
        if self.fault not in (None, *self.FAULTS):
            raise ValueError(f"unknown fault {self.fault!r}")
        self.drain, self.accept, self.parts_depth, self.families = drain, accept, parts_depth, set(families)

    def build(self, m):
        m.submodules.unit = unit = _SkipPartsUnit(parts_depth=self.parts_depth,
                                                  fixed_join=self.fault == "fixed_join")
        i, o = unit.i, unit.o
        free(m, i.valid, i.payload, o.ready)
        self.held(m, "i", i.valid, i.ready, [i.payload], assume=True)
        if "held" in self.families:
            self.held(m, "held_o", o.valid, o.ready, [o.payload])
        took, gave = i.valid & i.ready, o.valid & o.ready
        width = (self.depth + 1).bit_length() + 1
        rows_in, rows_out = counter(m, width, "rows_in", took), counter(m, width, "rows_out", gave)
        if "order" in self.families:
            tag = AnyConst(width)
            rec = Signal(_skip_layout(2), name="tag_row")
            seen = Signal(name="tag_seen")
            hit = took & (rows_in == tag)
            with m.If(hit):
                m.d.sync += [rec.eq(i.payload), seen.eq(1)]
            here = gave & (rows_out == tag)
            both = (rec.used == 0) | (rec.used >= 2)
            self.check(m, "order_data", seen & (o.payload.data[0] == rec.data[0])
                       & (~both | (o.payload.data[1] == rec.data[1])), when=here)
            self.check(m, "order_last", o.payload.last == rec.last, when=here)
            self.check(m, "order_count", rows_out + gave <= rows_in)
        if "live" in self.families:
            quiet = run_length(m, o.ready & ~i.valid, self.drain, "quiet_run")
            self.check(m, "live_drain", rows_out == rows_in, when=quiet == self.drain)
            self.within(m, "live_accept", i.valid & ~i.ready & o.ready, self.accept)


class _CreditFifoUnit(wiring.Component):
    """:class:`~tellme.hw.credit_fifo.CreditFifo` behind a stand-in reader whose output stream
    is ``i``; ``o`` is the FIFO's output; ``ask`` -> ``room``: may a command of ``ask`` beats
    be issued; ``issued``: the beats of a command issued in this cycle."""

    def __init__(self, depth: int):
        self.depth = depth
        super().__init__({"i": In(stream.Signature(f32_vec(1))), "o": Out(stream.Signature(f32_vec(1))),
                          "ask": In(range(depth + 1)), "room": Out(1), "issued": In(range(depth + 1))})

    def elaborate(self, platform):
        m = Module()
        credit = CreditFifo(m, "fifo", SimpleNamespace(lanes=1, o=self.i), self.depth)
        m.d.comb += [credit.issued.eq(self.issued), self.room.eq(credit.room(self.ask))]
        credit.output(m, self.o)
        return m


class CreditFifoHarness(StreamHarness):
    """The CreditFifo as a stream stage from the reader's output to its own, with the caller's
    side as environment: a command of ``ask`` beats is issued only when ``room`` says so, and
    the reader delivers only beats of issued commands. Adds ``order_never_waits``: the
    reader's beats are always taken at once (the point of the credits). ``fault="no_credit"``:
    a caller that ignores ``room``."""

    FAULTS = (*StreamHarness.FAULTS, "no_credit")

    def __init__(self, name, *, fifo_depth: int, **kwargs):
        super().__init__(name, lambda: _CreditFifoUnit(fifo_depth), part_width=32, **kwargs)
        self.fifo_depth = fifo_depth

    def environment(self, m, unit):
        free(m, unit.ask, unit.issued)
        # fault "no_credit": the caller issues commands whether there is room or not
        self.assume(m, (unit.issued == unit.ask) & (unit.room | (self.fault == "no_credit")),
                    when=unit.issued != 0)
        owed = Signal(range(self.fifo_depth + 2), name="reader_owed")
        m.d.sync += owed.eq(owed + unit.issued - (unit.i.valid & unit.i.ready))
        self.assume(m, owed != 0, when=unit.i.valid)
        if "order" in self.families:
            self.check(m, "order_never_waits", unit.i.ready, when=unit.i.valid)


# -- AXI masters --------------------------------------------------------------------------------

class _PatchedUnit(Elaboratable):
    """Elaborates ``unit`` inside the context ``patched()`` returns (a broken variant of a real
    unit: names of its modules replaced while it is built)."""

    def __init__(self, unit, patched):
        self.unit, self.patched = unit, patched

    def elaborate(self, platform):
        with self.patched():
            return Fragment.get(self.unit, platform)


class AddressChannelHarness(Harness):
    """An AXI address channel ``ax`` (``"ar"`` or ``"aw"``) fed by INCR-burst commands from a
    command stream: what the burst generator's and the masters' harnesses share.

    Environment: commands obey the stream rules, addresses aligned to the beat; AxREADY free
    (with ``live``: high within ``fair`` cycles of AxVALID).

    Properties, by family (``families``): ``held``: ``held_<ax>`` (AxVALID and every Ax field
    held until AxREADY); ``burst``: ``burst_4k`` (a burst's bytes never cross a 4 KiB
    boundary), ``burst_max`` (at most ``max_burst`` beats), ``burst_incr`` (INCR bursts of the
    beat size); ``split``: ``split_contiguous`` (each burst starts where the previous one of
    its command ended, the first at the command's address), ``split_within`` (a burst never
    exceeds what is left of its command), ``split_sum`` (a new command is taken only once the
    previous one's bursts have covered all its beats). ``fault="page8k"`` builds the burst
    generator with 8 KiB pages (bursts that cross 4 KiB)."""

    FAULTS = ("page8k",)

    def __init__(self, name, *, families, fair: int | None = None, progress: int | None = None, **kwargs):
        super().__init__(name, **kwargs)
        if self.fault not in (None, *self.FAULTS):
            raise ValueError(f"unknown fault {self.fault!r}")
        self.families = set(families)
        if "live" in self.families and (fair is None or progress is None):
            raise ValueError("the live family needs fair and progress")
        self.fair, self.progress = fair, progress

    def patched(self):
        """The context the burst generator is built in: 8 KiB pages for ``fault="page8k"``."""
        if self.fault == "page8k":
            return mock.patch.multiple(axi_bursts, PAGE=2 * PAGE, PAGE_BITS=axi_bursts.PAGE_BITS + 1)
        return contextlib.nullcontext()

    def address_channel(self, m, cmd, axi, ax: str, *, beat_bytes: int, max_burst: int) -> SimpleNamespace:
        """Drive ``cmd`` from the environment, check channel ``ax`` of ``axi``; return the
        handshakes, the beats ``left`` of the command being split by the harness's count,
        ``next_addr`` and ``final`` (the burst on offer ends its command)."""
        families = self.families
        shift = beat_bytes.bit_length() - 1
        free(m, cmd.valid, cmd.payload)
        self.held(m, "cmd", cmd.valid, cmd.ready, [cmd.payload], assume=True)
        if shift:
            self.assume(m, cmd.payload.addr[:shift] == 0)

        def a(name):
            return getattr(axi, ax + name)
        valid, ready, addr, length = a("valid"), a("ready"), a("addr"), a("len")
        free(m, ready)
        beats = length + 1
        if "held" in families:
            self.held(m, f"held_{ax}", valid, ready,
                      [a(n) for n in ("addr", "len", "size", "burst", "id", "cache", "prot", "lock", "qos")])
        if "burst" in families:
            page_offset = addr[:PAGE.bit_length() - 1]
            self.check(m, "burst_4k", page_offset + beats * beat_bytes <= PAGE, when=valid)
            self.check(m, "burst_max", beats <= max_burst, when=valid)
            self.check(m, "burst_incr", (a("size") == shift) & (a("burst") == BURST_INCR), when=valid)
        if "live" in families:
            self.within(m, f"fair_{ax}ready", valid & ~ready, self.fair, assume=True)
        issue, took = valid & ready, cmd.valid & cmd.ready
        left = Signal(BEAT_COUNT.width, name="beats_left")    # of the command being split
        next_addr = Signal(len(addr), name="next_addr")
        with m.If(issue):
            m.d.sync += [left.eq(left - beats), next_addr.eq(next_addr + (beats << shift))]
        with m.If(took):
            m.d.sync += [left.eq(cmd.payload.beats), next_addr.eq(cmd.payload.addr)]
        if "split" in families:
            self.check(m, "split_contiguous", addr == next_addr, when=valid)
            self.check(m, "split_within", beats <= left, when=valid)
            self.check(m, "split_sum", left == 0, when=cmd.ready)
        return SimpleNamespace(issue=issue, took=took, left=left, next_addr=next_addr, final=beats == left)


class IncrBurstsHarness(AddressChannelHarness):
    """:class:`~tellme.hw.axi_bursts.IncrBursts`, the burst generator of both masters, built
    directly (``room`` free) on an AR channel, so that induction can see its state: the
    address-channel properties hold for ever, proven with these invariants (``inv_*``): the
    burst address is beat-aligned in every cycle; AxVALID only while a command is split; while
    one is, the generator's address and beats left equal the harness's count and are not 0."""

    def __init__(self, name, *, addr_width: int, data_width: int, max_burst: int, **kwargs):
        super().__init__(name, families=("held", "burst", "split"), **kwargs)
        self.addr_width, self.data_width, self.max_burst = addr_width, data_width, max_burst

    def build(self, m):
        cmd = stream.Signature(command_layout(self.addr_width)).create()
        axi = axi_read_signature(addr_width=self.addr_width, data_width=self.data_width).create()
        room = Signal(name="room")
        free(m, room)
        beat_bytes = self.data_width // 8
        with self.patched():
            bursts = IncrBursts(m, cmd, axi, "ar", addr_width=self.addr_width, beat_bytes=beat_bytes,
                                max_burst=self.max_burst, room=room)
        ctx = self.address_channel(m, cmd, axi, "ar", beat_bytes=beat_bytes, max_burst=self.max_burst)
        self.check(m, "inv_aligned", bursts.addr[:bursts.shift] == 0)
        self.check(m, "inv_valid_active", bursts.active, when=bursts.valid)
        self.check(m, "inv_count", (ctx.left == bursts.remaining) & (ctx.next_addr == bursts.addr)
                   & (bursts.remaining != 0), when=bursts.active)


class AxiMasterHarness(AddressChannelHarness):
    """What the read and write masters' harnesses share: the unit (``make_unit()``), its
    command source and address channel (:class:`AddressChannelHarness`); the data channels'
    checks (``order``, ``live``) are the subclasses' :meth:`channel_checks`."""

    def __init__(self, name, make_unit, *, families=("held", "burst", "split", "order", "live"), **kwargs):
        super().__init__(name, families=families, **kwargs)
        self.make_unit = make_unit

    def build(self, m):
        unit = self.make_unit()
        m.submodules.unit = _PatchedUnit(unit, self.patched) if self.fault else unit
        free(m, unit.clear_error)
        ctx = self.address_channel(m, unit.cmd, unit.axi, self.channel, beat_bytes=unit.beat_bytes,
                                   max_burst=unit.max_burst)
        ctx.unit, ctx.axi = unit, unit.axi
        self.channel_checks(m, ctx)

    def channel_checks(self, m, ctx):
        raise NotImplementedError


class AxiReadHarness(AxiMasterHarness):
    """:class:`~tellme.hw.axi_read.AxiReadMaster` against a subordinate model that answers each
    burst in order (one ID) with its AxLEN + 1 beats, RLAST on the last; its R data and response
    are free, its RVALID held until RREADY; the consumer's ``rdata.ready`` is free.

    Properties (besides the address channel's): ``held``: ``held_rdata``; ``order``:
    ``order_pass`` (every R beat is one ``rdata`` beat with its data), ``order_last`` (``last``
    exactly on each command's final beat, by the harness's count of the command's beats),
    ``order_outstanding`` (at most ``max_outstanding`` bursts in flight); ``live``: under
    fairness (AR taken, R offered and ``rdata`` taken within ``fair`` cycles),
    ``live_progress`` (while beats are owed, one is delivered at least every ``progress``
    cycles) and ``live_idle`` (not ``busy`` means nothing is owed)."""

    channel = "ar"

    def channel_checks(self, m, ctx):
        unit, axi, families = ctx.unit, ctx.axi, self.families
        rdata = unit.rdata
        # the subordinate: the bursts asked for (length, and whether the harness's own count of
        # the command's beats says it is the command's final one), answered in order
        burst = data.StructLayout({"len": 8, "final": 1})
        m.submodules.bursts = bursts = fifo.SyncFIFO(width=burst.size, depth=unit.max_outstanding + 1)
        asked, front = Signal(burst, name="burst_asked"), Signal(burst, name="burst_front")
        m.d.comb += [asked.len.eq(axi.arlen), asked.final.eq(ctx.final), front.eq(bursts.r_data),
                     bursts.w_en.eq(ctx.issue), bursts.w_data.eq(asked)]
        beat = Signal(8, name="r_beat")
        free(m, axi.rvalid, axi.rdata, axi.rresp, rdata.ready)
        self.assume(m, bursts.r_rdy, when=axi.rvalid)
        self.held(m, "r", axi.rvalid, axi.rready, [axi.rdata, axi.rresp], assume=True)
        m.d.comb += [axi.rlast.eq(beat == front.len), axi.rid.eq(0)]
        r_beat = axi.rvalid & axi.rready
        with m.If(r_beat):
            m.d.sync += beat.eq(Mux(axi.rlast, 0, beat + 1))
        m.d.comb += bursts.r_en.eq(r_beat & axi.rlast)

        if "held" in families:
            self.held(m, "held_rdata", rdata.valid, rdata.ready, [rdata.payload])
        gave = rdata.valid & rdata.ready
        if "order" in families:
            self.check(m, "order_outstanding", bursts.level <= unit.max_outstanding)
            self.check(m, "order_pass", (rdata.valid == axi.rvalid) & (axi.rready == rdata.ready)
                       & (rdata.payload.data == axi.rdata))
            self.check(m, "order_last", rdata.payload.last == (axi.rlast & front.final), when=rdata.valid)
        if "live" in families:
            self.within(m, "fair_rvalid", bursts.r_rdy & ~axi.rvalid, self.fair, assume=True)
            self.within(m, "fair_consumer", rdata.valid & ~rdata.ready, self.fair, assume=True)
            owed = bursts.r_rdy | (ctx.left != 0)
            self.within(m, "live_progress", owed & ~gave & ~ctx.issue, self.progress)
            self.check(m, "live_idle", ~owed, when=~unit.busy)


class AxiWriteHarness(AxiMasterHarness):
    """:class:`~tellme.hw.axi_write.AxiWriteMaster` against a subordinate model that takes W
    beats (WREADY free), counts them against the bursts' AWLEN, and answers each burst whose
    data it has with one B response, in order (BVALID held until BREADY, BRESP free); the data
    source obeys the stream rules.

    Properties (besides the address channel's): ``held``: ``held_w`` (WVALID, WDATA, WSTRB,
    WLAST held until WREADY); ``order``: ``order_pass`` (every ``wdata`` beat is one W beat
    with its data, all strobes set), ``order_w_after_aw`` (W only for bursts whose AW went
    out), ``order_wlast`` (WLAST exactly on each burst's final beat), ``order_outstanding`` (at
    most ``max_outstanding`` bursts await their response), ``order_done`` (``done``
    pulses exactly in the cycles after the B response of a command's final burst, by the
    harness's count of the command's beats); ``live``: under fairness (AW and W taken, data
    offered while a burst waits for it, B answered within ``fair`` cycles) ``live_progress``
    (while a command is not done, an AW, W or B handshake happens at least every ``progress``
    cycles) and ``live_idle`` (not ``busy`` means every command is done)."""

    channel = "aw"

    def channel_checks(self, m, ctx):
        unit, axi, families = ctx.unit, ctx.axi, self.families
        wdata = unit.wdata
        free(m, wdata.valid, wdata.payload, axi.wready, axi.bvalid, axi.bresp)
        self.held(m, "wdata", wdata.valid, wdata.ready, [wdata.payload], assume=True)
        # the subordinate: W beats counted against the bursts' lengths; one B per burst whose
        # beats are in, in order (each burst's "ends its command" flag kept for the check)
        depth = unit.max_outstanding + 1
        m.submodules.w_bursts = w_bursts = fifo.SyncFIFO(width=8, depth=depth)
        m.submodules.b_bursts = b_bursts = fifo.SyncFIFO(width=1, depth=depth)
        m.d.comb += [w_bursts.w_en.eq(ctx.issue), w_bursts.w_data.eq(axi.awlen),
                     b_bursts.w_en.eq(ctx.issue), b_bursts.w_data.eq(ctx.final)]
        w_beat = axi.wvalid & axi.wready
        beat = Signal(8, name="w_beat_in_burst")
        with m.If(w_beat):
            m.d.sync += beat.eq(Mux(axi.wlast, 0, beat + 1))
        m.d.comb += w_bursts.r_en.eq(w_beat & axi.wlast)
        b_beat = axi.bvalid & axi.bready
        answerable = counter(m, depth.bit_length() + 1, "b_answerable", (w_beat & axi.wlast) - b_beat)
        self.assume(m, answerable != 0, when=axi.bvalid)
        self.held(m, "b", axi.bvalid, axi.bready, [axi.bresp], assume=True)
        m.d.comb += [axi.bid.eq(0), b_bursts.r_en.eq(b_beat)]

        if "held" in families:
            self.held(m, "held_w", axi.wvalid, axi.wready, [axi.wdata, axi.wstrb, axi.wlast])
        if "order" in families:
            self.check(m, "order_pass", (w_beat == (wdata.valid & wdata.ready)) & (axi.wdata == wdata.payload)
                       & (axi.wstrb == (1 << unit.beat_bytes) - 1), when=axi.wvalid | wdata.ready)
            self.check(m, "order_w_after_aw", w_bursts.r_rdy, when=axi.wvalid)
            self.check(m, "order_outstanding", b_bursts.level <= unit.max_outstanding)
            self.check(m, "order_wlast", axi.wlast == (beat == w_bursts.r_data), when=axi.wvalid)
            self.check(m, "order_done", unit.done == past(m, b_beat & b_bursts.r_data[0], "final_b"))
        if "live" in families:
            self.within(m, "fair_source", w_bursts.r_rdy & ~wdata.valid, self.fair, assume=True)
            self.within(m, "fair_wready", axi.wvalid & ~axi.wready, self.fair, assume=True)
            self.within(m, "fair_bvalid", (answerable != 0) & ~axi.bvalid, self.fair, assume=True)
            open_ = (ctx.left != 0) | b_bursts.r_rdy
            self.within(m, "live_progress", open_ & ~(ctx.issue | w_beat | b_beat), self.progress)
            self.check(m, "live_idle", ~open_, when=~unit.busy)


# -- register file ----------------------------------------------------------------------------

class RegisterFileHarness(Harness):
    """:class:`~tellme.hw.regfile.RegisterFile` of ``regmap`` behind a free AXI4-Lite manager
    that obeys the VALID rules (and with ``fair``: presents W within ``fair`` cycles of AW and
    the other way round, takes R and B within ``fair`` cycles); every core-side input free.

    Properties: ``held_r``, ``held_b``; ``reserved_read`` (the bits of a read word outside
    ``check_map``'s fields of the address read are 0: reserved bits and unmapped addresses);
    ``reserved_okay`` (every response OKAY); ``reserved_read_answer``/``reserved_write_answer``
    (R valid the cycle after AR is taken, B the cycle after AW and W are); with ``fair``:
    ``live_ar`` and ``live_w`` (a request waits at most ``wait`` cycles, default ``fair + 1``).
    ``check_map`` is the map the reserved bits are judged by (default ``regmap``; a map with
    a field missing is the broken variant)."""

    def __init__(self, name, *, regmap: RegisterMap = REGISTER_MAP, check_map: RegisterMap | None = None,
                 fair: int | None = None, wait: int | None = None, **kwargs):
        super().__init__(name, **kwargs)
        self.regmap, self.check_map, self.fair = regmap, check_map or regmap, fair
        self.wait = wait if wait is not None or fair is None else fair + 1

    def build(self, m):
        m.submodules.unit = unit = RegisterFile(self.regmap)
        bus = unit.bus
        inputs = [getattr(unit, name) for name, member in unit.signature.members.items()
                  if name != "bus" and member.flow == In]
        free(m, *inputs, bus.awvalid, bus.awaddr, bus.awprot, bus.wvalid, bus.wdata, bus.wstrb, bus.bready,
             bus.arvalid, bus.araddr, bus.arprot, bus.rready)
        self.held(m, "aw", bus.awvalid, bus.awready, [bus.awaddr, bus.awprot], assume=True)
        self.held(m, "w", bus.wvalid, bus.wready, [bus.wdata, bus.wstrb], assume=True)
        self.held(m, "ar", bus.arvalid, bus.arready, [bus.araddr, bus.arprot], assume=True)
        self.held(m, "held_r", bus.rvalid, bus.rready, [bus.rdata, bus.rresp])
        self.held(m, "held_b", bus.bvalid, bus.bready, [bus.bresp])

        read = bus.arvalid & bus.arready
        address = Signal.like(bus.araddr, name="read_address")
        with m.If(read):
            m.d.sync += address.eq(bus.araddr)
        defined = Signal(32, name="defined_bits")
        with m.Switch(address[2:]):
            for reg in self.check_map.registers:
                with m.Case(reg.offset // 4):
                    m.d.comb += defined.eq(reg.defined_mask)
        self.check(m, "reserved_read", (bus.rdata & ~defined) == 0, when=bus.rvalid)
        self.check(m, "reserved_okay", ((bus.rresp == RESP_OKAY) | ~bus.rvalid)
                   & ((bus.bresp == RESP_OKAY) | ~bus.bvalid))
        self.check(m, "reserved_read_answer", bus.rvalid, when=past(m, read, "read_taken"))
        write = bus.awvalid & bus.awready & bus.wvalid & bus.wready
        self.check(m, "reserved_write_answer", bus.bvalid, when=past(m, write, "write_taken"))
        if self.fair is not None:
            self.within(m, "fair_w", bus.awvalid & ~bus.wvalid, self.fair, assume=True)
            self.within(m, "fair_aw", bus.wvalid & ~bus.awvalid, self.fair, assume=True)
            self.within(m, "fair_r", bus.rvalid & ~bus.rready, self.fair, assume=True)
            self.within(m, "fair_b", bus.bvalid & ~bus.bready, self.fair, assume=True)
            self.within(m, "live_ar", bus.arvalid & ~bus.arready, self.wait)
            self.within(m, "live_w", bus.wvalid & ~bus.wready, self.wait)


def without_field(regmap: RegisterMap, register: str, field_name: str) -> RegisterMap:
    """``regmap`` with one field removed (its bits become reserved)."""
    regs = tuple(Register(r.name, r.offset, tuple(f for f in r.fields if f.name != field_name), r.doc)
                 if r.name == register else r for r in regmap.registers)
    return RegisterMap(regs, regmap.id_value, regmap.size)


# -- the prover ---------------------------------------------------------------------------------

#: Cycles from reset within which the cover run must reach every conditional assertion's
#: condition.
COVER_DEPTH = 12
#: The harness's signal that says every conditional assertion's condition has been reached.
REACHED_ALL = "reached_all"

_VERDICT = {
    "induction": "Induction step proven: SUCCESS!",
    "bounded": "proved base case for {depth} steps: SUCCESS!",
}
#: Read the harness, flatten it, memories to flip-flops, assertions and assumptions to the
#: cells ``sat`` reads.
_PREPARE = ["read_rtlil design.il", "prep -flatten -top top", "memory_map", "opt_clean", "async2sync",
            "chformal -lower", "dffunmap"]


def _cover(signal: str, depth: int) -> str:
    """A SAT run that looks for an input sequence (allowed by the assumptions) that sets
    ``signal`` in cycle ``depth``."""
    return f"sat -seq {depth} -set-assumes -set-at {depth} {signal} 1 -show {signal} top"


def _script(harness: Harness, cover: int) -> str:
    mode = "-tempinduct" if harness.method == "induction" else "-tempinduct -tempinduct-baseonly"
    return "\n".join([
        *_PREPARE,
        f"sat {mode} -maxsteps {harness.depth} -prove-asserts -set-assumes -verify -show-public "
        "-dump_vcd cex.vcd top",
        _cover(REACHED_ALL, cover),
        "",
    ])


def _yosys(work: Path, script: str, name: str, timeout: float) -> tuple[subprocess.CompletedProcess, str]:
    (work / "script.ys").write_text(script)
    try:
        done = subprocess.run([*yosys_command(), "-q", "-l", "yosys.log", "-s", "script.ys"], cwd=work,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise YosysError(f"formal proof {name} timed out after {timeout:g} s") from None
    log = (work / "yosys.log").read_text(errors="replace") if (work / "yosys.log").exists() else ""
    return done, log


def _imported(log: str) -> tuple[int, int]:
    """How many assertions and assumptions the SAT problem of one time step imported."""
    for block in log.split("Setting up time step")[1:]:
        if "Import proof for assert:" in block:
            return block.count("Import proof for assert:"), block.count("Import constraint from assume cell:")
    return 0, 0


def failed_assertions(vcd_text: str) -> list[tuple[str, int]]:
    """(assertion name, first time where it is false) for each failed ``assert_*`` signal of a
    Yosys ``sat`` waveform (its times are the SAT problem's time steps), first failure first."""
    ids = {}
    for match in re.finditer(r"\$var \w+ 1 (\S+) \\?(assert_\S+) \$end", vcd_text):
        ids[match.group(1)] = match.group(2)[len("assert_"):]
    step, first = 0, {}
    for line in vcd_text.split("$enddefinitions", 1)[-1].splitlines():
        line = line.strip()
        if line.startswith("#"):
            step = int(line[1:])
        elif line[:1] == "0" and line[1:] in ids:
            first.setdefault(ids[line[1:]], step)
    return sorted(first.items(), key=lambda item: (item[1], item[0]))


def prove(harness: Harness, *, timeout: float = 300) -> Proof:
    """Prove ``harness``'s assertions under its assumptions (its ``method`` and ``depth``), then
    check that the proof is not vacuous. Return the :class:`Proof`; raise :class:`FormalError`

    * if an assertion fails, naming it and the counterexample waveform (copied to
      ``formal_dir() / f"{harness.name}.vcd"``);
    * if the proof does not conclude (induction that does not converge in ``depth`` steps);
    * if Yosys imported fewer assertions or assumptions than the harness states (none at all
      included);
    * if, for some conditional assertion (one that checks only when something happens), no
      input sequence the assumptions allow reaches its condition within :data:`COVER_DEPTH`
      cycles (or ``depth`` if more) from reset: naming those. (One SAT run looks for a
      sequence that reaches all of them; where there is none, one run per assertion.)"""
    start = time.monotonic()
    design = rtlil.convert(harness, ports=[])
    if not harness.asserts:
        raise FormalError(f"{harness.name}: the harness states no assertion")
    vcd = formal_dir() / f"{harness.name}.vcd"
    vcd.unlink(missing_ok=True)
    cover = max(COVER_DEPTH, harness.depth)
    what = f"{harness.name} ({harness.method}, depth {harness.depth})"
    with tempfile.TemporaryDirectory(prefix="tellme-formal-") as tmp:
        work = Path(tmp)
        (work / "design.il").write_text(design)
        done, log = _yosys(work, _script(harness, cover), harness.name, timeout)
        base_failed = "model found for base case: FAIL!" in log
        unconverged = "Reached maximum number of time steps -> proof failed" in log
        if (work / "cex.vcd").exists() and (base_failed or unconverged):
            vcd.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(work / "cex.vcd", vcd)
        if base_failed:
            failed = failed_assertions(vcd.read_text(errors="replace")) if vcd.exists() else []
            names = ", ".join(f"{name} at step {step}" for name, step in failed) or "(unnamed)"
            raise FormalError(f"{what}: assertion failed: {names}; counterexample in {vcd}",
                              failed=[name for name, _ in failed], vcd=vcd, log=log)
        if unconverged:
            raise FormalError(f"{what}: not proven: induction did not converge in {harness.depth} steps; the "
                              f"induction step's counterexample (from a state that may be unreachable) is in {vcd}",
                              vcd=vcd, log=log)
        verdict = _VERDICT[harness.method].format(depth=harness.depth)
        if verdict not in log:
            tail = "\n".join((log or done.stdout + done.stderr).splitlines()[-15:])
            raise FormalError(f"{what}: no verdict from Yosys:\n{tail}", log=log)
        asserts, assumes = _imported(log)
        if asserts != len(harness.asserts) or assumes != harness.assumes:
            raise FormalError(f"{what}: Yosys imported {asserts} assertions and {assumes} assumptions, the harness "
                              f"states {len(harness.asserts)} and {harness.assumes}", log=log)
        if "SAT solving finished - model found" not in log.split(verdict, 1)[1]:
            # Not all in one run (some exclude each other, e.g. the tagged part's place in a
            # beat): one SAT run each.
            _, each = _yosys(work, "\n".join([*_PREPARE, *[_cover(f"reached_{name}", cover)
                                                           for name in harness.conditional], ""]),
                             harness.name, timeout)
            answers = re.findall(r"SAT solving finished - (model found|no model found)", each)
            unreached = [name for name, answer in zip(harness.conditional, answers) if answer != "model found"]
            if unreached or len(answers) != len(harness.conditional):
                raise FormalError(f"{what}: vacuous: within {cover} cycles from reset, no input sequence the "
                                  f"assumptions allow reaches the condition of {', '.join(unreached) or '(unknown)'}",
                                  failed=unreached, log=log + each)
    return Proof(harness.name, harness.method, harness.depth, list(harness.asserts), time.monotonic() - start, log)


# -- the proofs run by tests/test_formal.py -----------------------------------------------------

#: Payload of the StreamBuffer's proofs: 4 data bits, then ``last``.
SMALL_BEAT = data.StructLayout({"data": 4, "last": 1})
#: The masters' configuration in their bounded proofs: 32-bit beats (1,024 to a 4 KiB page),
#: 16-bit addresses, bursts of at most 4 beats, 2 in flight.
SMALL_AXI = dict(data_width=32, addr_width=16, id_width=1, max_burst=4, max_outstanding=2)
#: Depth of the bounded proofs (cycles from reset).
BOUNDED = 12
#: Cycles the environment may keep a unit waiting (AxREADY, RVALID, WREADY, BVALID, a data
#: source or consumer) in the liveness proofs.
FAIR = 2


def _proof(name: str, harness, **settings) -> dict:
    return {name: partial(harness, name=name, **settings)}


def _stream_proofs(name: str, harness=StreamHarness, *, held_by_induction: bool = True, **settings) -> dict:
    """A stream unit's proofs: ``<name>-held`` by induction (k = 1) and ``<name>`` (order, live)
    bounded; or, where induction does not converge, all three families bounded."""
    if not held_by_induction:
        return _proof(name, harness, method="bounded", depth=BOUNDED, **settings)
    return {**_proof(f"{name}-held", harness, families=("held",), method="induction", depth=1, **settings),
            **_proof(name, harness, families=("order", "live"), method="bounded", depth=BOUNDED, **settings)}


#: name -> factory of the harness (keyword arguments override its settings). The stream units'
#: ``held`` family is proven by induction (but VecWiden's, where induction does not converge),
#: their ``order`` and ``live`` families bounded; the burst generator and the register file by
#: induction; the masters' data channels bounded.
PROOFS = {
    **_stream_proofs("stream_buffer", make_unit=lambda: StreamBuffer(shape=SMALL_BEAT), part_width=4,
                     drain=2, accept=1),
    **_stream_proofs("credit_fifo", CreditFifoHarness, fifo_depth=3, drain=3, accept=0),
    **_stream_proofs("vec_narrow", make_unit=lambda: VecNarrow(lanes=3, out_lanes=1), part_width=32, in_parts=3,
                     drain=3, accept=2),
    **_stream_proofs("vec_widen", make_unit=lambda: VecWiden(lanes=1, out_lanes=3), part_width=32, out_parts=3,
                     drain=1, accept=0, held_by_induction=False),
    **_proof("skip_parts", SkipPartsHarness, drain=3, accept=3, method="bounded", depth=BOUNDED),
    **_stream_proofs("row_narrow", make_unit=lambda: RowNarrow(layout=f32_vec, count=2, out_count=1),
                     part_width=32, in_parts=2, drain=1, accept=1),
    **_proof("incr_bursts-w128", IncrBurstsHarness, addr_width=40, data_width=128, max_burst=256,
             method="induction", depth=1),
    **_proof("incr_bursts-w32", IncrBurstsHarness, addr_width=16, data_width=32, max_burst=4,
             method="induction", depth=1),
    **_proof("axi_read", AxiReadHarness, make_unit=lambda: AxiReadMaster(**SMALL_AXI),
             families=("held", "burst", "order", "live"), fair=FAIR, progress=4, method="bounded", depth=BOUNDED),
    **_proof("axi_write", AxiWriteHarness, make_unit=lambda: AxiWriteMaster(**SMALL_AXI),
             families=("held", "burst", "order", "live"), fair=FAIR, progress=4, method="bounded", depth=BOUNDED),
    **_proof("regfile", RegisterFileHarness, fair=FAIR, method="induction", depth=3),
}

#: Deliberately broken variants: name -> (the proof it breaks, its overrides, assertions of which
#: at least one must fail). Each shows that a property family can fail: without them a proof
#: that passes could be a proof of nothing.
BROKEN = {
    # held: a payload bit flips while a beat waits
    "stream_buffer-flip": ("stream_buffer", dict(fault="flip", families=("held",), depth=6), {"held_o"}),
    "vec_widen-flip": ("vec_widen", dict(fault="flip", families=("held",), depth=6), {"held_o"}),
    # order: a beat lost, a beat shown twice
    "stream_buffer-drop": ("stream_buffer", dict(fault="drop", families=("order",), depth=8),
                           {"order_data", "order_last"}),
    "skip_parts-fixed_join": ("skip_parts", dict(fault="fixed_join", families=("order",)),
                              {"order_data", "order_last", "order_count"}),
    "skip_parts-accept2": ("skip_parts", dict(accept=2, families=("live",)), {"live_accept"}),
    "vec_narrow-dup": ("vec_narrow", dict(fault="dup", families=("order",), depth=8), {"order_data", "order_last"}),
    "credit_fifo-no_credit": ("credit_fifo", dict(fault="no_credit", families=("order",), depth=8),
                              {"order_never_waits"}),
    # burst: the real burst generator built with 8 KiB pages crosses 4 KiB
    "incr_bursts-page8k": ("incr_bursts-w128", dict(fault="page8k", depth=4), {"burst_4k"}),
    "axi_write-page8k": ("axi_write", dict(fault="page8k", families=("burst",), depth=6), {"burst_4k"}),
    # live: each bound one cycle tighter than proven
    "stream_buffer-drain1": ("stream_buffer", dict(drain=1, families=("live",), depth=8), {"live_drain"}),
    "vec_narrow-accept1": ("vec_narrow", dict(accept=1, families=("live",), depth=8), {"live_accept"}),
    "axi_read-progress3": ("axi_read", dict(progress=3, families=("live",)), {"live_progress"}),
    "axi_write-progress3": ("axi_write", dict(progress=3, families=("live",)), {"live_progress"}),
    "regfile-wait2": ("regfile", dict(wait=FAIR, depth=6), {"live_ar", "live_w"}),
    # reserved: judged by a map without CONTROL.IRQ_ENABLE, that bit must read 0 but does not
    "regfile-reserved": ("regfile", dict(check_map=without_field(REGISTER_MAP, "CONTROL", "IRQ_ENABLE"), depth=6),
                         {"reserved_read"}),
}


def broken(name: str) -> Harness:
    """The harness of broken variant ``name`` (:data:`BROKEN`)."""
    base, overrides, _ = BROKEN[name]
    return PROOFS[base](**{**overrides, "name": name})
