"""The cycle model (:mod:`tellme.gen.cycles`) held against the RTL: a generation simulated under
Verilator on the DDR model, every call's ``CYCLES`` and every step's cycles compared with the
model's (issue #15; ``tests/test_cycle_model.py``, ``bench/cycle_model.py``).

:data:`CONFIGURATIONS` are the validation points: model sizes, TLMM group, lanes and tokens per
pass, prefill lengths over one or several chunks, contexts and DDR settings, among them one
decoder layer of bitnet-b1.58-large at the kv260 hardware settings (a 128-token prefill and
decode steps at context 128, on the DDR at 85 % of the KV260's peak).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from ..config import HardwareConfig, ModelConfig, hardware_preset, model_preset
from ..gen.cycles import Calibration, CycleModel, DdrTiming

__all__ = ["Configuration", "CONFIGURATIONS", "configuration", "check_cycles", "compare_run", "TOLERANCE"]

#: The largest relative error of a call the model may make (the issue's +-5 %).
TOLERANCE = 0.05


@dataclass(frozen=True)
class Configuration:
    """One validation point: the model and hardware, the prompt, the new tokens and the DDR
    model's settings (``DdrModel``'s ``bytes_per_cycle`` and ``latency``)."""
    name: str
    model: ModelConfig
    hw: HardwareConfig
    prompt: int
    new_tokens: int
    ddr_bytes_per_cycle: float = 64.0
    ddr_latency: int = 40
    slow: bool = False
    note: str = ""

    @property
    def ddr(self) -> DdrTiming:
        return DdrTiming(self.ddr_bytes_per_cycle, self.ddr_latency)

    def describe(self) -> dict:
        return {"name": self.name, "model": self.model.to_dict(), "hardware": self.hw.to_dict(),
                "prompt_tokens": self.prompt, "new_tokens": self.new_tokens,
                "ddr": {"bytes_per_cycle": self.ddr_bytes_per_cycle, "latency": self.ddr_latency},
                "note": self.note}


def _mid() -> ModelConfig:
    return dataclasses.replace(model_preset("tiny"), name="mid-relu2", hidden_size=256, intermediate_size=688,
                               num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64, vocab_size=1000)


def _large_layer() -> ModelConfig:
    return dataclasses.replace(model_preset("bitnet-b1.58-large"), name="bitnet-b1.58-large-1layer",
                               num_layers=1, vocab_size=2048)


#: KV260: 19.2 GB/s at 300 MHz is 64 B/cycle; 85 % of it.
KV260_85 = 54.4

CONFIGURATIONS: tuple[Configuration, ...] = (
    Configuration("tiny/sim-small", model_preset("tiny"), hardware_preset("sim-small"), prompt=40, new_tokens=3,
                  note="three chunks (16, 16, 8): the later ones read the KV history from DDR"),
    Configuration("tiny-silu/kv260", model_preset("tiny-silu"), hardware_preset("kv260").replace(max_context=256),
                  prompt=20, new_tokens=3, ddr_bytes_per_cycle=KV260_85,
                  note="SiLU gating, kv260 lanes (64 x 8 tokens), DDR at 85 % of the KV260's peak"),
    Configuration("mid-relu2/sim-small", _mid(), hardware_preset("sim-small").replace(prefill_chunk=64),
                  prompt=24, new_tokens=2,
                  note="hidden 256, FFN 688, head_dim 64, 4 layers: weight waits in decode"),
    Configuration("tiny-silu/G4-P8-T4", model_preset("tiny-silu"),
                  hardware_preset("sim-small").replace(tlmm_group=4, tlmm_lanes=8, tlmm_tokens=4, prefill_chunk=32),
                  prompt=24, new_tokens=3, ddr_bytes_per_cycle=32, ddr_latency=60,
                  note="G 4, 8 lanes, 4 tokens per pass; a slower DDR (32 B/cycle, latency 60)"),
    Configuration("large-layer/kv260", _large_layer(), hardware_preset("kv260").replace(max_context=256),
                  prompt=128, new_tokens=2, ddr_bytes_per_cycle=KV260_85, slow=True,
                  note="one decoder layer of bitnet-b1.58-large (vocabulary cut to 2048 so that the "
                       "embedding and LM head fit a simulation) at the kv260 settings: a 128-token prefill "
                       "and the decode step at context 128"),
)


def configuration(name: str) -> Configuration:
    for c in CONFIGURATIONS:
        if c.name == name:
            return c
    raise KeyError(f"no cycle-model configuration {name!r}; have {[c.name for c in CONFIGURATIONS]}")


def _model_calls(model: CycleModel, calls: list[dict]):
    """The model's call for each RTL call, in order (prefill chunks from position 0, then one
    decode per generated token)."""
    out, pos = [], 0
    for c in calls:
        if c["kind"] == "prefill":
            out.append(model.call(c["tokens"], pos))
        else:
            out.append(model.call(1, pos, kind="decode"))
        pos += c["tokens"]
    return out


def compare_run(config: Configuration, calls: list[dict], step_cycles: list[list[int]],
                calibration: Calibration | None = None) -> dict:
    """Per call: the RTL's and the model's cycles, the relative error, the stall cycles, and
    per op (and per step) both counts. ``calls``: ``RtlRun.calls``; ``step_cycles``:
    ``RtlRun.step_cycles``."""
    model = CycleModel(config.model, config.hw, config.ddr, calibration)
    predicted = _model_calls(model, calls)
    rows = []
    for call, pred, steps in zip(calls, predicted, step_cycles, strict=True):
        rtl_ops: dict[str, int] = {}
        for s, cycles in zip(pred.steps, steps, strict=True):
            rtl_ops[s.op] = rtl_ops.get(s.op, 0) + cycles
        rows.append({
            "kind": call["kind"], "tokens": call["tokens"], "pos": pred.pos,
            "rtl_cycles": call["cycles"], "model_cycles": pred.cycles,
            "error": (pred.cycles - call["cycles"]) / call["cycles"],
            "rtl_stall_cycles": call["stall_cycles"], "model_stall_cycles": pred.stall_cycles,
            "per_op": {op: {"rtl": rtl_ops[op], "model": m} for op, m in pred.per_op().items()},
            "steps": [{"op": s.op, "layer": s.layer, "what": s.what, "rtl": r, "model": s.cycles}
                      for s, r in zip(pred.steps, steps)],
        })
    return {**config.describe(), "calls": rows,
            "max_abs_error": max(abs(r["error"]) for r in rows)}


def check_cycles(config: Configuration, *, seed: int = 3, progress: bool = False) -> dict:
    """Simulate ``config``'s generation on the RTL (random weights of ``seed``, a random prompt)
    and compare every call with the model (:func:`compare_run`); also the build and simulation
    seconds."""
    from ..weights import random_weights
    from .top_harness import rtl_generate
    weights = random_weights(config.model, seed=seed)
    prompt = [int(i) for i in np.random.default_rng(seed).integers(0, config.model.vocab_size, size=config.prompt)]
    start = time.monotonic()
    _, _, run = rtl_generate(weights, config.hw, prompt, config.new_tokens, progress=progress, timeout=None,
                             ddr_options={"bytes_per_cycle": config.ddr_bytes_per_cycle,
                                          "latency": config.ddr_latency})
    result = compare_run(config, run.calls, run.step_cycles)
    # per call, the longest stretch without an HP handshake (the watchdog's measure)
    result["longest_quiet_cycles"] = list(run.longest_quiet)
    result.update({"build_seconds": round(run.build_seconds, 1), "sim_seconds": round(run.sim_seconds, 1),
                   "wall_seconds": round(time.monotonic() - start, 1)})
    return result


# -- calibration ------------------------------------------------------------------------------------
#: The Calibration fields the coordinate descent fits (cycles and per cents); the attention's
#: coefficients are fitted by least squares instead, and the sequencer's word costs are exact.
FITTED = ("w_mult", "nq_first", "nq_period", "tlmm_first", "matmul_tail", "tail_ddr", "tail_unit", "column",
          "column_second", "column_latency", "column_token", "column_ddr", "embed_fixed", "embed_row", "load_share",
          "embed_load_share", "lm_fixed")
#: Where the fit starts (hand estimates from the units' documented timing), for the constants
#: committed in :class:`Calibration` and for every leave-one-out fit alike.
START = dict(w_mult=8, nq_first=120, nq_period=90, tlmm_first=10, matmul_tail=30, tail_ddr=0, tail_unit=100,
             column=12, column_second=4, column_latency=100, column_token=6, column_ddr=0, embed_fixed=40,
             embed_row=9, load_share=70, embed_load_share=100, lm_fixed=60)
ATTENTION_TERMS = ("load", "stream", "key_tiles", "query_tiles", "outputs", "history_tiles")


@dataclass
class RecordedRun:
    """A configuration's RTL calls and per-step cycles (``RtlRun.calls``, ``RtlRun.step_cycles``)."""
    config: Configuration
    calls: list[dict]
    step_cycles: list[list[int]]

    def compare(self, calibration: Calibration | None = None) -> dict:
        """:func:`compare_run` of this run (with ``calibration``, default the committed one)."""
        return compare_run(self.config, self.calls, self.step_cycles, calibration)


def _objective(runs: list[RecordedRun], models: list[CycleModel], cal: Calibration) -> float:
    """Squared relative call errors (weighted 3) plus squared step errors relative to their call."""
    total = 0.0
    for run, model in zip(runs, models):
        model.cal = cal
        for call, pred, steps in zip(run.calls, _model_calls(model, run.calls), run.step_cycles):
            total += 3 * ((pred.cycles - call["cycles"]) / call["cycles"]) ** 2
            for s, r in zip(pred.steps, steps):
                total += ((s.cycles - r) / call["cycles"]) ** 2 + 0.02 * ((s.cycles - r) / (r + 300)) ** 2
    return total


def fit_attention(runs: list[RecordedRun], cal: Calibration) -> Calibration:
    """The ``attn_*`` coefficients by least squares over every ATTENTION step that no weight
    load overlapped (each step weighted by 1 / max(its cycles, 300))."""
    rows, targets = [], []
    for run in runs:
        model = CycleModel(run.config.model, run.config.hw, run.config.ddr, cal)
        for pred, steps in zip(_model_calls(model, run.calls), run.step_cycles):
            for s, r in zip(pred.steps, steps):
                if s.op != "ATTENTION" or s.parts.get("weight_loads", 0):
                    continue
                work = dict(s.parts)
                rows.append([1.0] + [float(work[k]) for k in ATTENTION_TERMS])
                targets.append(float(r))
    x, y = np.array(rows), np.array(targets)
    weight = 1 / np.maximum(y, 300)
    coef, *_ = np.linalg.lstsq(x * weight[:, None], y * weight, rcond=None)
    names = ("attn_fixed", "attn_load", "attn_stream", "attn_key_tile", "attn_query_tile", "attn_output",
             "attn_history_tile")
    return dataclasses.replace(cal, **{n: round(float(c), 3) for n, c in zip(names, coef)})


def fit_calibration(runs: list[RecordedRun], start: Calibration | None = None, *, rounds: int = 8,
                    progress=None) -> Calibration:
    """Calibration constants for ``runs``: the attention's by least squares, then each of
    :data:`FITTED` in turn by coordinate descent (steps 32, 8, 2, 1 while the objective falls),
    ``rounds`` times or until nothing moves, from ``start`` (default :data:`START`)."""
    cal = fit_attention(runs, start or dataclasses.replace(Calibration(), **START))
    models = [CycleModel(r.config.model, r.config.hw, r.config.ddr, cal) for r in runs]
    best = _objective(runs, models, cal)
    for index in range(rounds):
        moved = False
        for name in FITTED:
            for step in (32, 8, 2, 1):
                for sign in (1, -1):
                    while getattr(cal, name) + sign * step >= 0:
                        trial = dataclasses.replace(cal, **{name: getattr(cal, name) + sign * step})
                        value = _objective(runs, models, trial)
                        if value >= best - 1e-12:
                            break
                        cal, best, moved = trial, value, True
        if progress:
            progress(f"fit round {index + 1}: objective {best:.5f}")
        if not moved:
            break
    return cal


def recorded(result: dict) -> RecordedRun:
    """The :class:`RecordedRun` behind a :func:`compare_run` / :func:`check_cycles` result (the
    benchmark's JSON keeps them, so the calibration can be refitted without simulating)."""
    config = configuration(result["name"])
    calls = [{"kind": c["kind"], "tokens": c["tokens"], "cycles": c["rtl_cycles"],
              "stall_cycles": c["rtl_stall_cycles"]} for c in result["calls"]]
    return RecordedRun(config, calls, [[s["rtl"] for s in c["steps"]] for c in result["calls"]])
