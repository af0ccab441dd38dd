"""The generated top level under Verilator with the host driver: ``tellme run --backend rtl``,
``tellme trace`` and the end-to-end tests run through here.

:class:`TopOnDdr` puts a :class:`tellme.gen.top.TellmeTop` on a :class:`tellme.hw.ddr_model.DdrModel`
(HP port p's read channels on DDR read port p, HP0's write channels on the write port, each
channel through a stall gate, :mod:`tellme.sim.axi_stall`);
:func:`run_calls` simulates it under cocotb (:mod:`tellme.sim.tb.tb_top`), where
:class:`tellme.runtime.Accelerator` drives it through :class:`tellme.sim.tb.host.RtlTransport`
exactly as it drives the board, and returns what every call gave.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Signal
from amaranth.lib import wiring

from ..config import HardwareConfig, ModelConfig
from ..contract.layouts import PAGE, page_up
from ..gen.top import TellmeTop
from ..hw.ddr_model import DdrModel
from ..hw.sequencer import OPS
from .axi_stall import STALL_CHANNELS, connect_stalled
from .rtl import run_cocotb

__all__ = ["TopOnDdr", "RtlRun", "run_calls", "rtl_generate", "ddr_bytes", "call_timeout", "MEMORY_BASE"]

#: Width of each of the testbench's per-op cycle counters (``TopOnDdr.op_cycles``).
OP_COUNTER_BITS = 32
#: Bits of a step word holding its op (the low bits, ``tellme.hw.sequencer.step_layout``).
OP_BITS = (len(OPS) - 1).bit_length()

#: Where the simulated DDR starts (the driver's buffers are allocated from here).
MEMORY_BASE = 0x4000_0000


def ddr_bytes(program) -> int:
    """Size of the simulated DDR for ``program``: the driver's four buffers (image, KV cache,
    scratch, I/O), each page aligned with a guard page after it, and a spare page. The DDR
    answers [MEMORY_BASE, MEMORY_BASE + ddr_bytes); an access beyond gets DECERR."""
    sizes = (program.image_bytes, program.kv_bytes, program.scratch_bytes, program.io.size)
    return page_up(sum(page_up(s) + PAGE for s in sizes) + PAGE)


class TopOnDdr(wiring.Component):
    """:class:`TellmeTop` and the DDR model its HP ports reach. ``ddr_options`` go to
    :class:`DdrModel` (``latency``, ``bytes_per_cycle``, ...)."""

    def __init__(self, top: TellmeTop, *, ddr_options: dict | None = None):
        self.top = top
        self.memory_bytes = ddr_bytes(top.program)
        self.ddr = DdrModel(size_bytes=self.memory_bytes, base=MEMORY_BASE, ports=top.hw.hp_ports,
                            data_width=top.hw.axi_data_width, **(ddr_options or {}))
        # ``step``: the sequencer's step index, for the testbench only (not a port of the top).
        # ``fault_step``: see TellmeTop(fault_port=True); the testbench sets it (past the last
        # step: no fault).
        # ``probe``: the valid and ready of every stream port of the step datapaths and their
        # units (``probe_names``), so a call that never finishes shows where its beats stopped.
        # ``stall``: the stall gate of HP port p is bits [5p, 5p + 5) (STALL_CHANNELS' order).
        # ``op_cycles``: per op of OPS (op k at bits [32k, 32k + 32)), the cycles the sequencer
        # has spent on steps of that op since the last START (dispatch included); ``call_done``:
        # the sequencer's end-of-call pulse, when the testbench reads them. ``step_end``: a
        # one-cycle pulse after each step of a call ends, with ``step_end_index`` (the step) and
        # ``step_end_cycles`` (its cycles from the ROM read to its completion, both included).
        # ``longest_quiet``: the longest run of busy cycles since the last START in which no
        # channel of any HP port completed a handshake (what the watchdog counts), read at
        # ``call_done``: the measured margin of WATCHDOG.CYCLES.
        self.probe_signals = list(_stream_handshakes(top))
        for p in range(top.hw.hp_ports):
            port = getattr(top, f"m_axi_hp{p}")
            for channel in ("ar", "r", "aw", "w", "b"):
                self.probe_signals += [(f"hp{p}.{channel}.valid", getattr(port, f"{channel}valid")),
                                       (f"hp{p}.{channel}.ready", getattr(port, f"{channel}ready"))]
        self.probe_names = [name for name, _ in self.probe_signals]
        super().__init__({"s_axil": top.signature.members["s_axil"], "irq": top.signature.members["irq"],
                          "step": wiring.Out(range(len(top.words))),
                          "fault_step": wiring.In(range(len(top.words) + 1)),
                          "probe": wiring.Out(max(1, len(self.probe_signals))),
                          "stall": wiring.In(len(STALL_CHANNELS) * top.hw.hp_ports),
                          "op_cycles": wiring.Out(OP_COUNTER_BITS * len(OPS)), "call_done": wiring.Out(1),
                          "step_end": wiring.Out(1), "step_end_index": wiring.Out(range(len(top.words))),
                          "step_end_cycles": wiring.Out(OP_COUNTER_BITS),
                          "longest_quiet": wiring.Out(OP_COUNTER_BITS)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.top, m.submodules.ddr = self.top, self.ddr
        wiring.connect(m, wiring.flipped(self.s_axil), self.top.s_axil)
        m.d.comb += [self.irq.eq(self.top.irq), self.step.eq(self.top.sequencer.step),
                     self.top.fault_step.eq(self.fault_step)]
        for i, (_, signal) in enumerate(self.probe_signals):
            m.d.comb += self.probe[i].eq(signal)
        sequencer = self.top.sequencer
        m.d.comb += self.call_done.eq(sequencer.done)
        step_op = Array(Const(word & ((1 << OP_BITS) - 1), OP_BITS) for word in self.top.words)[sequencer.step]
        for k in range(len(OPS)):
            counter = self.op_cycles[OP_COUNTER_BITS * k:OP_COUNTER_BITS * (k + 1)]
            with m.If(sequencer.start):
                m.d.sync += counter.eq(0)
            with m.Elif(sequencer.busy & (step_op == k)):
                m.d.sync += counter.eq(counter + 1)
        # Per step: busy cycles since the step's ROM read; the step ends in the cycle before the
        # next one's first (the step index moves) or in the call's ``done`` cycle.
        count, previous = Signal(OP_COUNTER_BITS), Signal.like(sequencer.step)
        m.d.sync += [previous.eq(sequencer.step), self.step_end.eq(0)]
        with m.If(sequencer.busy & (sequencer.step != previous)):
            m.d.sync += [self.step_end.eq(1), self.step_end_index.eq(previous), self.step_end_cycles.eq(count),
                         count.eq(1)]
        with m.Elif(sequencer.busy & sequencer.done):
            m.d.sync += [self.step_end.eq(1), self.step_end_index.eq(sequencer.step),
                         self.step_end_cycles.eq(count + 1), count.eq(0)]
        with m.Elif(sequencer.busy):
            m.d.sync += count.eq(count + 1)
        with m.If(sequencer.start & ~sequencer.busy):        # a call starts at step 0
            m.d.sync += [previous.eq(0), count.eq(0)]
        # The longest stretch of the call without an HP handshake (the watchdog's measure).
        ports = [getattr(self.top, f"m_axi_hp{p}") for p in range(self.top.hw.hp_ports)]
        handshake = Cat(*(getattr(port, f"{ch}valid") & getattr(port, f"{ch}ready")
                          for port in ports for ch in ("ar", "r", "aw", "w", "b"))).any()
        quiet = Signal(OP_COUNTER_BITS)
        with m.If(sequencer.start & ~sequencer.busy):
            m.d.sync += [quiet.eq(0), self.longest_quiet.eq(0)]
        with m.Elif(sequencer.busy & handshake):
            m.d.sync += quiet.eq(0)
        with m.Elif(sequencer.busy):
            m.d.sync += quiet.eq(quiet + 1)
            with m.If(quiet + 1 > self.longest_quiet):
                m.d.sync += self.longest_quiet.eq(quiet + 1)
        n = len(STALL_CHANNELS)
        for p in range(self.top.hw.hp_ports):
            connect_stalled(m, getattr(self.top, f"m_axi_hp{p}"), getattr(self.ddr, f"rd{p}"),
                            self.stall[n * p:n * (p + 1)])
        connect_stalled(m, self.top.m_axi_hp0, self.ddr.wr, self.stall[:n])
        return m


def _stream_handshakes(top: TellmeTop):
    """(name, signal) of the valid and ready of each stream port of the step datapaths and of
    the components they hold (one level down), for :class:`TopOnDdr`'s ``probe``."""
    from amaranth.lib import stream
    for op, path in [("sequencer", top.sequencer), *top.paths.items()]:
        units = [(op.lower(), path)]
        for name, unit in vars(path).items():
            if isinstance(unit, wiring.Component):
                units.append((f"{op.lower()}.{name}", unit))
                units += [(f"{op.lower()}.{name}.{sub}", u) for sub, u in vars(unit).items()
                          if isinstance(u, wiring.Component)]
        for unit_name, unit in units:
            for name, member in unit.signature.members.items():
                if member.is_signature and isinstance(member.signature, stream.Signature) and not member.is_port:
                    port = getattr(unit, name)
                    ports = [(f"{name}[{i}]", p) for i, p in enumerate(port)] if isinstance(port, list) \
                        else [(name, port)]
                    for label, p in ports:
                        yield f"{unit_name}.{label}.valid", p.valid
                        yield f"{unit_name}.{label}.ready", p.ready


@dataclass
class RtlRun:
    """What :func:`run_calls` returns: per call the kind, token count, result token, logits and
    cycle counters; what the ``expect_error``/``soft_reset_during`` steps saw; every register
    write of the driver, in order; per completed call the cycles per op; the build and
    simulation wall-clock seconds."""
    calls: list[dict] = field(default_factory=list)
    errors: list = field(default_factory=list)
    register_writes: list[tuple[int, int]] = field(default_factory=list)
    #: Per completed call (each end-of-call pulse, in order), the cycles spent per op of OPS.
    op_cycles: list[dict[str, int]] = field(default_factory=list)
    #: Per end-of-call pulse, the longest stretch of the call's busy cycles without a handshake
    #: on any HP port (the watchdog's measure).
    longest_quiet: list[int] = field(default_factory=list)
    #: Per completed call, the cycles of each step of the program, in step order (from the
    #: step's ROM read to its completion; they add up to the call's ``CYCLES`` less the
    #: register file's own cycles before and after).
    step_cycles: list[list[int]] = field(default_factory=list)
    build_seconds: float = 0.0
    sim_seconds: float = 0.0

    def logits(self) -> list[np.ndarray]:
        return [np.asarray(c["logits"], dtype=np.uint32).view(np.float32) for c in self.calls]


def call_timeout(program) -> float:
    """Simulated seconds the driver waits for one call before it reports a hang: 5 ms plus ten
    times the hand TLMM figure of a full chunk (:meth:`Program.tlmm_cycles`; a call takes about
    twice that with its weight waits and the other units), so that a bigger model is not taken
    for a hung one."""
    hw = program.hardware
    return 5e-3 + 10 * program.tlmm_cycles(hw.prefill_chunk) / (hw.clock_mhz * 1e6)


def run_calls(model: ModelConfig, hw: HardwareConfig, image: str | Path, script: list[dict], *,
              ddr_options: dict | None = None, timeout: float | None = 3600.0,
              axi_pauses: bool = False, hp_pauses: float = 0.0, pause_seed: int | None = None, progress: bool = False,
              seed: int | None = None, trace: str | Path | None = None,
              fault_step: int | None = None) -> RtlRun:
    """Run ``script`` on the generated top of (``model``, ``hw``) under Verilator: a list of
    ``{"op": "prefill", "ids": [...]}``, ``{"op": "decode", "id": i}`` or ``{"op": "reset"}``
    steps, each through :class:`tellme.runtime.Accelerator` (prefill in chunks, as on the
    board). ``axi_pauses`` inserts random pauses on the AXI4-Lite port; ``hp_pauses`` is the
    probability that each AXI channel of each HP port is held in a cycle (0: the DDR model's
    latency and bandwidth limit alone pause them; the same build either way); ``pause_seed``
    seeds both kinds of pause (None: the same fixed patterns every run). ``progress`` reports
    each call on stderr.
    ``trace``: an .npz file for the DDR regions after every step (:mod:`tellme.sim.trace`);
    ``fault_step``: break that step's writes (tests of the trace; the same build either way)."""
    top = TellmeTop(model, hw, ram_style="block", fault_port=True)
    harness = TopOnDdr(top, ddr_options=ddr_options)
    with tempfile.TemporaryDirectory(prefix="tellme-rtl-") as tmp:
        results = Path(tmp) / "results.json"
        if progress:
            print(f"rtl: building the top level of {model.name} on {hw.board} hardware "
                  f"({len(top.words)} steps) ...", file=sys.stderr, flush=True)
        # Not public: the top runs several times faster; waveforms of a whole call would be
        # gigabytes, so a failure names the call instead (rerun a test with waves by hand).
        outcome = run_cocotb(harness, name="tellme_top", test_module="tellme.sim.tb.tb_top", timeout=timeout,
                             seed=seed, public=False, waves_on_failure=False, parameters={
                                 "image": str(Path(image).resolve()), "model": model.to_dict(),
                                 "hardware": hw.to_dict(), "memory_base": MEMORY_BASE,
                                 "memory_bytes": harness.memory_bytes, "clock_hz": hw.clock_mhz * 1e6,
                                 "script": script, "results": str(results), "axi_pauses": axi_pauses,
                                 "hp_pauses": hp_pauses, "pause_seed": pause_seed,
                                 "progress": progress, "trace": str(Path(trace).resolve()) if trace else None,
                                 "fault_step": len(top.words) if fault_step is None else fault_step,
                                 "call_timeout": call_timeout(top.program),
                                 "probe_names": harness.probe_names, "op_counter_bits": OP_COUNTER_BITS})
        recorded = json.loads(results.read_text())
    return RtlRun(recorded["calls"], recorded["errors"], [tuple(w) for w in recorded["register_writes"]],
                  [dict(zip(OPS, counts, strict=True)) for counts in recorded["op_cycles"]],
                  recorded["longest_quiet"], _completed_calls(recorded["step_ends"], len(top.words)),
                  outcome.build_seconds, outcome.sim_seconds)


def _completed_calls(step_ends: list[list[int]], steps: int) -> list[list[int]]:
    """The (step, cycles) records of the testbench grouped into calls that ran every step
    (an aborted call's steps are dropped)."""
    calls, current = [], []
    for index, cycles in step_ends:
        if index == 0:
            current = []
        if index == len(current):
            current.append(cycles)
            if index == steps - 1:
                calls.append(current)
                current = []
        else:
            current = []
    return calls


def rtl_generate(weights, hw: HardwareConfig, prompt: list[int], max_new_tokens: int, *,
                 progress: bool = False, before: list[dict] = (), **options) -> tuple[list[int], list[np.ndarray], RtlRun]:
    """Greedy generation on the RTL: the image of ``weights`` written for ``hw``, then one
    ``generate`` script (prefill in chunks, decode of each token the hardware chose). Returns
    (generated ids, the logits each was chosen from, the run with every call's cycles).
    ``before``: script steps run first on the same design (their calls are not counted)."""
    from ..gen.image import write_image
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens must be >= 1")
    with tempfile.TemporaryDirectory(prefix="tellme-image-") as tmp:
        image = Path(tmp) / "model.img"
        write_image(weights, hw, image)
        run = run_calls(weights.config, hw, image,
                        [*before, {"op": "generate", "ids": list(map(int, prompt)), "max_new_tokens": max_new_tokens}],
                        progress=progress, **options)
    chunks = -(-len(prompt) // hw.prefill_chunk)
    logits = run.logits()
    # The prefill's last chunk gives the first token's logits; each decode the next one's.
    step_logits = logits[chunks - 1:]
    generated = [c["token"] for c in run.calls[chunks - 1:]]
    return generated, step_logits, run
