"""``tellme trace``: the generated top level under Verilator held against the step machine step by
step, naming the first unit whose output differs.

The simulation-only monitor of :mod:`tellme.sim.tb.tb_top` copies the KV, scratch and I/O
regions each time the sequencer finishes a step; :class:`tellme.sim.machine.StepMachine` runs
the same calls (the prompt's chunks, then each token the RTL chose) on the same image and copies
the same regions after each of its steps. For every (call, step) the step's outputs are
compared bit for bit: EMBED and MATMUL their destination rows, ATTENTION the pass's
``attn`` columns and the KV-cache rows it appended, LM_HEAD the logits. NORM_QUANT writes only
the on-chip act buffer, so its result is checked through the MATMUL after it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import HardwareConfig
from ..contract.layouts import KV_RECORD_BYTES, kv_row_bytes
from ..gen.image import write_image
from ..gen.program import Attention, Embed, LmHead, MatMul, build_program
from .machine import StepMachine
from .top_harness import run_calls

__all__ = ["Mismatch", "TraceReport", "trace_generation"]


@dataclass(frozen=True)
class Mismatch:
    call: int
    kind: str
    layer: int | None
    unit: str
    token: int
    element: int
    rtl: str
    golden: str

    def __str__(self) -> str:
        layer = "-" if self.layer is None else self.layer
        return (f"first mismatch: call {self.call} ({self.kind}), layer {layer}, unit {self.unit}, token {self.token}, "
                f"element {self.element}: RTL {self.rtl}, golden {self.golden}")


@dataclass
class TraceReport:
    generated: list[int]
    steps_compared: int
    values_compared: int
    calls: int
    mismatch: Mismatch | None

    def __str__(self) -> str:
        if self.mismatch is not None:
            return str(self.mismatch)
        return (f"bit-exact: {self.values_compared:,} values in {self.steps_compared} step outputs over "
                f"{self.calls} calls")


def _unit(step) -> str:
    if isinstance(step, MatMul):
        return f"MATMUL {step.proj}"
    if isinstance(step, Attention):
        return f"ATTENTION kv head {step.kv_head} (heads {', '.join(map(str, step.heads))})"
    return step.op


def _outputs(program, step, snap: dict, n: int, pos: int) -> list[tuple[str, np.ndarray]]:
    """The values ``step`` produced, from one snapshot of the regions: (what, array of tokens x
    elements, uint32 or uint8)."""
    model = program.model

    def rows(name: str, cols: slice | None = None) -> np.ndarray:
        a = program.scratch[name]
        block = snap["scratch"][a.offset:a.offset + n * a.row_bytes].view(np.uint32).reshape(n, a.row_bytes // 4)
        return block[:, :a.width] if cols is None else block[:, cols]

    if isinstance(step, Embed):
        return [(step.dst, rows(step.dst))]
    if isinstance(step, MatMul):
        return [(step.dst, rows(step.dst))]
    if isinstance(step, Attention):
        hd = model.head_dim
        out = [("attn", rows("attn", slice(step.heads[0] * hd, (step.heads[-1] + 1) * hd)))]
        if step.write_kv:
            c = step.cache
            kv = snap["kv"]
            fp32 = program.hardware.attn_format == "fp32"     # float32 rows (shown as floats), no records
            row = kv_row_bytes(hd, program.hardware.attn_format)
            out += [(name, kv[base + pos * row:base + (pos + n) * row].view(np.uint32 if fp32 else np.uint8)
                     .reshape(n, hd)) for name, base in (("K rows", c.k_base), ("V rows", c.v_base))]
            if not fp32:
                out.append(("scale records", kv[c.s_base + pos * KV_RECORD_BYTES:c.s_base + (pos + n) * KV_RECORD_BYTES]
                            .reshape(n, KV_RECORD_BYTES)))
        return out
    if isinstance(step, LmHead):
        io = program.io
        return [("logits", snap["io"][io.logits_offset:io.logits_offset + 4 * model.vocab_size].view(np.uint32)[None])]
    return []          # NORM_QUANT: the act buffer is on chip


def _show(value, what: str) -> str:
    if value.dtype == np.uint32:
        return f"{int(value):#010x} ({float(np.array(value, np.uint32).view(np.float32)):.9g})"
    return f"{int(value):#04x}"


def trace_generation(weights, hw: HardwareConfig, prompt: list[int], new_tokens: int, *,
                     fault_step: int | None = None, progress: bool = False, **options) -> TraceReport:
    """Greedy generation of ``new_tokens`` after ``prompt`` on the RTL with the trace monitor,
    compared step by step with the step machine. ``fault_step`` builds the top with that
    program step broken (tests)."""
    model = weights.config
    program = build_program(model, hw)
    with tempfile.TemporaryDirectory(prefix="tellme-trace-") as tmp:
        image = Path(tmp) / "model.img"
        write_image(weights, hw, image)
        trace_file = Path(tmp) / "trace.npz"
        run = run_calls(model, hw, image, [{"op": "generate", "ids": list(map(int, prompt)),
                                            "max_new_tokens": new_tokens}],
                        trace=trace_file, fault_step=fault_step, progress=progress, **options)
        recorded = np.load(trace_file)
        rtl_steps = recorded["steps"]
        rtl = [{name: recorded[f"{name}_{i}"] for name in ("kv", "scratch", "io")} for i in range(len(rtl_steps))]
        image_bytes = np.fromfile(image, dtype=np.uint8)

    # The calls the RTL made: the prompt in chunks, then each token it chose.
    chunk = hw.prefill_chunk
    calls = [(prompt[lo:lo + chunk], lo, "prefill") for lo in range(0, len(prompt), chunk)]
    for i, c in enumerate(run.calls[len(calls) - 1:-1]):
        calls.append(([c["token"]], len(prompt) + i, "decode"))
    chunks = len(calls)
    generated = [c["token"] for c in run.calls[chunks - 1:]]
    golden: list[dict] = []
    machine = StepMachine(program, image_bytes,
                          on_step=lambda k, step, mach: golden.append(
                              {"step": k, "kv": mach.kv.copy(), "scratch": mach.scratch.copy(), "io": mach.io.copy()}))
    last = len(program.steps) - 1
    # RTL snapshots per call: ROM words 0 .. last (the LM head has two words: the last row's
    # NORM_QUANT, whose snapshot is word `last`, then the head itself, which ends the call).
    per_call = last + 1
    steps_compared = values = 0
    for ci, (ids, pos, kind) in enumerate(calls):
        golden.clear()
        machine.call(ids, pos)
        n = len(ids)
        rtl_call = rtl[ci * per_call:(ci + 1) * per_call]
        rtl_ks = list(rtl_steps[ci * per_call:(ci + 1) * per_call])
        if rtl_ks != list(range(per_call)):
            raise RuntimeError(f"trace: call {ci} recorded steps {rtl_ks[:5]}... (expected 0..{per_call - 1}); "
                               f"did the call finish?")
        # The LM head's output: the logits the driver read back after the call.
        logits = np.asarray(run.calls[ci]["logits"], dtype=np.uint32)
        io_end = {"io": np.zeros_like(golden[last]["io"])}
        io_end["io"][program.io.logits_offset:program.io.logits_offset + 4 * logits.size] = logits.view(np.uint8)
        for k, step in enumerate(program.steps):
            snap = rtl_call[k] if k < last else io_end
            got = _outputs(program, step, snap, n, pos)
            want = _outputs(program, step, golden[k], n, pos)
            for (what, a), (_, b) in zip(got, want):
                values += a.size
                diff = np.argwhere(a != b)
                if diff.size:
                    t, e = (int(x) for x in diff[0])
                    return TraceReport(generated, steps_compared, values, ci + 1,
                                       Mismatch(ci, kind, getattr(step, "layer", None), f"{_unit(step)} ({what})",
                                                t, e, _show(a[t, e], what), _show(b[t, e], what)))
            steps_compared += bool(got)
    return TraceReport(generated, steps_compared, values, len(calls), None)
