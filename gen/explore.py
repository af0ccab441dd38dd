"""Design-space exploration (``tellme explore``, docs/architecture.md section 10).

Two models side by side, neither a synthesis nor a simulation:

- **resources** (:class:`ResourceModel`): the top level as a sum of its units (TLMM, attention,
  NormQuant, RoPE, Gating, Dequant, residual adder, transpose, LM head, scratch readers and
  writers, weight buffer, activation buffer, result buffer and the glue), each a small linear
  formula in the hardware parameters the generator builds it with (e.g. the TLMM's LUTs in
  P x T x table LUT sites, P x T x entry bits, P and a constant). The coefficients are fitted
  by least squares (kept non-negative) on Yosys points recorded by the benchmarks
  (:func:`calibration_points`): units synthesised alone (``bench/results/explore_units.json``,
  ``tlmm.json``, ``elementwise.json``, ``attention.json``) and the units of the whole kv260 top
  (``kv260_fit.json``). Every fitted point's error and a leave-one-out error are reported, and
  the sum is held against the whole-top synthesis. The figures are an *analytic estimate
  calibrated on Yosys (synth_xilinx -family xcup) points*, not Yosys's or Vivado's;
- **speed**: the cycle model (:mod:`tellme.gen.cycles`, validated against the RTL) for decode
  tokens/s at context 128 and the time to first token of a 128-token prompt.

:func:`explore` sweeps a grid of hardware configurations (:class:`Grid`) on a board: each point
is validated as the generator would (``HardwareConfig``, the board, the datapath and the
weight-buffer tiling; the invalid ones are counted by reason), its resources estimated and held
against the board (``gen.estimate.fits``; the ones that do not fit are counted by the
resources they exceed), and the ones that fit are timed by the cycle model, across processes.
The result has the Pareto front on (decode tok/s max, TTFT min, LUT min) and a chosen point.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import ConfigError, HardwareConfig, ModelConfig, model_preset
from ..contract.formats import ATTN_SCORE_LANES, code_bits, table_entries
from ..contract.layouts import BufferGeometry, ImageFormat, LmHeadStream
from .tiling import MatmulRates, kv_history_ports, tile_projection

__all__ = ["RESOURCE_KEYS", "LABEL", "CalibrationPoint", "ResourceModel", "calibration_points", "fit_model",
           "instances", "Grid", "QUICK_GRID", "DEFAULT_GRID", "FULL_GRID", "explore", "pareto_front", "pick",
           "ProgressBar", "PICKS"]

#: The resources the model estimates; ``lut`` is LUT sites (Yosys ``lut_equiv``: logic LUTs, INV,
#: LUTRAM and SRL sites), what a board's LUT count budgets.
RESOURCE_KEYS = ("lut", "ff", "dsp", "bram36", "uram")
#: How every resource figure of this module is labelled in outputs.
LABEL = "analytic estimate calibrated on Yosys (synth_xilinx -family xcup) points"
#: Where a source checkout keeps the benchmarks' results.
RESULTS_DIR = Path(__file__).resolve().parent.parent / "bench" / "results"
#: A URAM288 holds as many bits as 8 BRAM36: on a board without URAM the memories Yosys puts in
#: URAM go to block RAM.
BRAM_PER_URAM = 8
URAM_BYTES = 4096 * 72 // 8
#: Scratch readers and writers of the top level (fp32 attention, int8 LM head): embed ids and
#: rows, attention q/k/v, cos, sin, the residual reader, the norm's rows and gains, the
#: sequencer's scalar reader; the attention, embedding, LM-head and MATMUL writers.
READERS, WRITERS = 9, 4
PICKS = ("balanced", "fastest", "smallest")


# -- the units and their formulas -----------------------------------------------------------------

def lutram_sites(group: int) -> int:
    """LUT sites of one lane's table for one token: two banks of ``table_entries(G)`` entries of
    ``entry_bits(G)`` bits in distributed RAM, as Yosys maps them (RAM32M16 up to 32 entries: 14
    bits in 8 sites; RAM64X1S up to 64: a site per bit; RAM128X1S up to 128: two per bit)."""
    entries, bits = table_entries(group), _entry_bits(group)
    if entries <= 32:
        per_bank = 8 * -(-bits // 14)
    elif entries <= 64:
        per_bank = bits
    else:
        per_bank = 2 * bits * -(-entries // 128)
    return 2 * per_bank


def _entry_bits(group: int) -> int:
    from ..hw.tlmm import entry_bits
    return entry_bits(group)


def _f(name: str, fn: Callable[[Mapping], float]):
    return (name, fn)


_ONE = _f("1", lambda p: 1.0)

#: unit -> resource -> [(feature name, feature of the unit's parameters)]. A resource a unit
#: does not use is absent. Memories are structural features (their bits in block RAM or URAM
#: units), logic is linear in the lanes the unit is built with.
FORMULAS: dict[str, dict[str, list]] = {
    # LUTs: the tables' LUTRAM (P x T tables of table_sites(G)), the lookups and adder trees
    # (per lane and token, growing with the code's bits: G 2-3 and 4 differ there), the per-lane
    # decode and table build, the per-token accumulation; FFs: the trees' pipeline registers
    # (entry bits wide), the codes' pipeline per lane, the per-token state
    "tlmm": {
        "lut": [_f("P*T*table_sites(G)", lambda p: p["lanes"] * p["tokens"] * lutram_sites(p["group"])),
                _f("P*T*code_bits(G)", lambda p: p["lanes"] * p["tokens"] * code_bits(p["group"])),
                _f("P", lambda p: p["lanes"]), _f("T", lambda p: p["tokens"]), _ONE],
        "ff": [_f("P*T*entry_bits(G)", lambda p: p["lanes"] * p["tokens"] * _entry_bits(p["group"])),
               _f("P*code_bits(G)", lambda p: p["lanes"] * code_bits(p["group"])),
               _f("T", lambda p: p["tokens"]), _ONE],
        "bram36": [_f("T*max_rows/1024", lambda p: p["tokens"] * p["max_rows"] / 1024), _ONE],
    },
    # 16 dot-product and P.V lanes whatever the configuration: logic grows with the query tile;
    # each K/V history read manager beyond the first adds an AXI read master, a word gatherer
    # and a pending word (units synthesised alone have one: points recorded before have none)
    "attention": {
        "lut": [_f("tile*heads", lambda p: p["tile"] * p["heads"]),
                _f("history_ports-1", lambda p: p.get("history_ports", 1) - 1), _ONE],
        "ff": [_f("tile*heads", lambda p: p["tile"] * p["heads"]),
               _f("history_ports-1", lambda p: p.get("history_ports", 1) - 1), _ONE],
        "dsp": [_ONE],
        # q, k and v of the chunk in float32 (BRAM36 = 1,152 floats); the score banks and the rest
        "bram36": [_f("chunk*(H+2)*hd/1152", lambda p: p["chunk"] * (p["heads"] + 2) * p["head_dim"] / 1152), _ONE],
    },
    "norm_quant": {
        "lut": [_f("L", lambda p: p["lanes"]), _ONE],
        "ff": [_f("L", lambda p: p["lanes"]), _ONE],
        "dsp": [_f("L", lambda p: p["lanes"]), _ONE],
        "bram36": [_f("L", lambda p: p["lanes"]), _ONE],
    },
    "rope": {
        "lut": [_f("rotate_lanes", lambda p: p["rotate_lanes"]), _f("L", lambda p: p["lanes"]), _ONE],
        "ff": [_f("rotate_lanes", lambda p: p["rotate_lanes"]), _f("L", lambda p: p["lanes"]), _ONE],
        "dsp": [_f("rotate_lanes", lambda p: p["rotate_lanes"])],
    },
    "gating": {                     # SiLU
        "lut": [_f("act_lanes", lambda p: p["act_lanes"]), _f("L", lambda p: p["lanes"]), _ONE],
        "ff": [_f("act_lanes", lambda p: p["act_lanes"]), _f("L", lambda p: p["lanes"]), _ONE],
        "dsp": [_f("act_lanes", lambda p: p["act_lanes"])],
    },
    "gating_relu2": {               # one point: proportional to the activation lanes
        "lut": [_f("act_lanes", lambda p: p["act_lanes"])],
        "ff": [_f("act_lanes", lambda p: p["act_lanes"])],
        "dsp": [_f("act_lanes", lambda p: p["act_lanes"])],
    },
    "dequant": {
        "lut": [_f("lanes", lambda p: p["lanes"]), _ONE],
        "ff": [_f("lanes", lambda p: p["lanes"]), _f("T", lambda p: p["tokens"]), _ONE],
        "dsp": [_f("lanes", lambda p: p["lanes"])],
    },
    "res_add": {
        "lut": [_f("add_lanes", lambda p: p["add_lanes"]), _ONE],
        "ff": [_f("add_lanes", lambda p: p["add_lanes"]), _ONE],
    },
    "transpose": {
        "lut": [_f("T*block", lambda p: p["tokens"] * p["block"]), _f("L", lambda p: p["lanes"]), _ONE],
        "ff": [_f("T*block", lambda p: p["tokens"] * p["block"]), _f("L", lambda p: p["lanes"]), _ONE],
    },
    # int8: 16 x ports multipliers (the logical beat) and their tree; at one port the rows are
    # realigned and the x buffer's 16-byte words are in block RAM
    "lm_head": {
        "lut": [_f("ports", lambda p: p["ports"]), _f("L", lambda p: p["lanes"]), _ONE],
        "ff": [_f("ports", lambda p: p["ports"]), _f("L", lambda p: p["lanes"]), _ONE],
        "dsp": [_f("ports", lambda p: p["ports"]), _ONE],
        "bram36": [_f("ports == 1", lambda p: float(p["ports"] == 1))],
    },
    "reader": {
        "lut": [_f("L", lambda p: p["lanes"]), _ONE],
        "ff": [_f("L", lambda p: p["lanes"]), _ONE],
    },
    # a lane beat wider than the 128-bit bus (4 floats) is cut into bus beats
    "writer": {
        "lut": [_f("L > 4", lambda p: float(p["lanes"] > 4)), _ONE],
        "ff": [_f("L > 4", lambda p: float(p["lanes"] > 4)), _ONE],
    },
    "weight_buffer": {              # one point (the kv260 top): logic fixed, memories structural
        "lut": [_ONE], "ff": [_ONE], "dsp": [_ONE],
        "bram36": [_f("hp_ports", lambda p: p["hp_ports"])],
        "uram": [_f("2*urams_per_bank", lambda p: 2 * p["urams_per_bank"])],
    },
    "act_buffer": {
        "lut": [_ONE], "ff": [_ONE],
        "uram": [_f("ceil(chunk*max_dim/URAM bytes)", lambda p: -(-p["chunk"] * p["max_dim"] // URAM_BYTES))],
    },
    "result_buffer": {
        "lut": [_ONE], "ff": [_ONE],
        "bram36": [_f("T*max_rows/1024", lambda p: p["tokens"] * p["max_rows"] / 1024)],
    },
    # The rest of the kv260 top's instances (one point): lane-wide FIFOs and muxes scale with
    # ew_lanes, the AXI arbiters and quiesce blocks with hp_ports, the sequencer's ROM with the
    # program's words, the rest is fixed.
    "glue": {
        "lut": [_f("lane part * L/8", lambda p: p["lane_part_lut"] * p["lanes"] / 8),
                _f("port part * ports/4", lambda p: p["port_part_lut"] * p["ports"] / 4), _ONE],
        "ff": [_f("lane part * L/8", lambda p: p["lane_part_ff"] * p["lanes"] / 8),
               _f("port part * ports/4", lambda p: p["port_part_ff"] * p["ports"] / 4), _ONE],
        "dsp": [_ONE],
        "bram36": [_f("program words/1024", lambda p: p["words"] / 1024)],
    },
}


def instances(model: ModelConfig, hw: HardwareConfig) -> list[tuple[str, dict, int]]:
    """The units of the top level of (``model``, ``hw``) as ``(unit, parameters, count)``, with
    the parameters the generator builds them with (``gen/top.py``: TopShape, MatmulRates, the
    weight buffer's tiling). Raises :class:`ConfigError` where the tiling does."""
    G, P, T, L, C = hw.tlmm_group, hw.tlmm_lanes, hw.tlmm_tokens, hw.ew_lanes, hw.prefill_chunk
    geometry = BufferGeometry.of(hw)
    row_unit = max(L, hw.axi_data_width // 32)
    max_rows = max(tile_projection(name, n, k, geometry, row_unit).tile_rows
                   for name, (n, k) in model.projections().items())
    max_dim = max(model.hidden_size, model.intermediate_size, model.q_size)
    rates = MatmulRates.of(model, G, P, T, L)
    head_ports = LmHeadStream.of(model, ImageFormat.of(hw)).ports
    H = hw.attn_heads_parallel
    gating = "gating" if model.hidden_act == "silu" else "gating_relu2"
    words = program_words(model, hw)
    return [
        ("tlmm", {"group": G, "lanes": P, "tokens": T, "max_rows": max_rows}, 1),
        ("attention", {"tile": hw.attn_tile, "chunk": C, "lanes": L, "heads": H, "head_dim": model.head_dim,
                       "history_ports": kv_history_ports(hw)}, 1),
        ("norm_quant", {"lanes": L, "max_dim": max_dim}, 1),
        ("rope", {"lanes": L, "rotate_lanes": hw.rope_lanes}, 1),
        (gating, {"lanes": L, "act_lanes": hw.gating_lanes}, 1),
        ("dequant", {"tokens": T, "lanes": rates.dequant_lanes}, 1),
        ("res_add", {"lanes": L, "add_lanes": rates.add_lanes}, 1),
        ("transpose", {"tokens": T, "lanes": L, "block": max(2 * L, 8)}, 1),
        ("lm_head", {"lanes": L, "ports": head_ports}, 1),
        ("reader", {"lanes": L}, READERS),
        ("writer", {"lanes": L}, WRITERS),
        ("weight_buffer", {"hp_ports": hw.hp_ports, "urams_per_bank": hw.urams_per_bank}, 1),
        ("act_buffer", {"chunk": C, "max_dim": max_dim}, 1),
        ("result_buffer", {"tokens": T, "max_rows": max_rows}, 1 if rates.dequant_lanes < T else 0),
        ("glue", {"lanes": L, "ports": hw.hp_ports, "words": words}, 1),
    ]


def program_words(model: ModelConfig, hw: HardwareConfig) -> int:
    """Words of the sequencer's program ROM (``gen.top.encode_program``): EMBED, per layer 4
    NORM_QUANT and 7 MATMUL words and one ATTENTION word per pass of ``attn_heads_parallel``
    query heads, and the LM head's two."""
    return 1 + model.num_layers * (11 + model.num_heads // hw.attn_heads_parallel) + 2


# -- calibration points ------------------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationPoint:
    """One recorded Yosys figure of one unit (or of the whole top, unit ``"top"``): ``role``
    ``"fit"`` (the coefficients are fitted on it) or ``"check"`` (shown with the model's error,
    not fitted: recorded at an older commit or of a variant the top does not build)."""
    unit: str
    params: dict
    resources: dict
    source: str
    role: str = "fit"
    note: str = ""


def _res(d: Mapping, lut_key: str = "lut_equiv") -> dict:
    return {"lut": float(d[lut_key]), "ff": float(d["ff"]), "dsp": float(d.get("dsp", 0)),
            "bram36": float(d.get("bram36", 0)), "uram": float(d.get("uram", 0))}


def _load(results_dir: Path, name: str) -> dict | None:
    path = results_dir / name
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


#: kv260_fit.json instance paths of the units the model names (the rest is glue).
_TOP_UNITS = {
    "datapath.matmul.tlmm": "tlmm", "datapath.attention.attention": "attention",
    "datapath.norm_quant.norm_quant": "norm_quant", "datapath.matmul.gating": "gating",
    "datapath.attention.rope": "rope", "datapath.lm_head.head": "lm_head", "datapath.matmul.dequant": "dequant",
    "datapath.matmul.res_add": "res_add", "datapath.matmul.transpose": "transpose",
    "datapath.matmul.streamer": "weight_buffer", "datapath.matmul.act": "act_buffer",
    "datapath.matmul.results": "result_buffer",
}
_READER_RE = re.compile(r"(reader|\.cos|\.sin|\.qkv|\.gains|\.rows|\.scalar)$")
_WRITER_RE = re.compile(r"\.writer$")
_LANE_GLUE_RE = re.compile(r"(fifo|\.ftz|\.mux|\.demux|dq_buffer)$")
_PORT_GLUE_RE = re.compile(r"(quiesce|read_arbiter)")


#: Units a recorded whole top built with other parameters than today's generator builds for the
#: same hardware file (by the commit it was measured at): kv260_fit.json at 2968e36 predates the
#: LM head over all four HP ports (d2e3eb9) and the K/V history over all four (d3aa05b), so its
#: head and its history read one port each.
AS_BUILT = {"2968e36": {"lm_head": {"ports": 1}, "attention": {"history_ports": 1}}}


def top_instances(model: ModelConfig, hw: HardwareConfig, commit: str | None = None) -> dict[str, dict]:
    """The parameters of each unit of a top measured at ``commit`` (:data:`AS_BUILT`)."""
    params = {unit: p for unit, p, _ in instances(model, hw)}
    for unit, changes in AS_BUILT.get(commit, {}).items():
        params[unit] = {**params[unit], **changes}
    return params


def _top_points(fit: dict, model: ModelConfig) -> tuple[list[CalibrationPoint], dict]:
    """The units of the whole kv260 top (``kv260_fit.json``) as calibration points, and the glue:
    everything else, split into its lane-wide, port and fixed parts."""
    hw = HardwareConfig.from_dict(fit["hardware"])
    params = top_instances(model, hw, fit.get("commit"))
    source = f"bench/results/kv260_fit.json (whole {fit.get('preset')} top on {fit.get('board')}, " \
             f"units with the hierarchy kept, commit {fit.get('commit', '?')})"
    points = []
    readers, writers = [], []
    glue = {"lut": 0.0, "ff": 0.0, "dsp": 0.0, "bram36": 0.0, "uram": 0.0,
            "lane_lut": 0.0, "lane_ff": 0.0, "port_lut": 0.0, "port_ff": 0.0}
    for path, r in fit["resources_per_unit"].items():
        res = _res(r, "lut")
        name = path.replace(" (own)", "")
        if name in _TOP_UNITS:
            unit = _TOP_UNITS[name]
            points.append(CalibrationPoint(unit, params[unit], res, source, note=path))
        elif _WRITER_RE.search(name):
            writers.append(res)
        elif _READER_RE.search(name):
            readers.append(res)
        else:
            for k in RESOURCE_KEYS:
                glue[k] += res[k]
            if _LANE_GLUE_RE.search(name):
                glue["lane_lut"] += res["lut"]
                glue["lane_ff"] += res["ff"]
            elif _PORT_GLUE_RE.search(name):
                glue["port_lut"] += res["lut"]
                glue["port_ff"] += res["ff"]
    for unit, group in (("reader", readers), ("writer", writers)):
        if group:
            mean = {k: sum(g[k] for g in group) / len(group) for k in RESOURCE_KEYS}
            points.append(CalibrationPoint(unit, params[unit], mean, source,
                                           note=f"mean of the top's {len(group)} {unit}s"))
    return points, {**glue, "words": params["glue"]["words"], "lanes": hw.ew_lanes, "ports": hw.hp_ports}


_TOP_SOURCE = "bench/results/kv260_fit.json (whole"


def calibration_points(results_dir: Path | None = None) -> tuple[list[CalibrationPoint], dict | None, list[str]]:
    """The recorded Yosys points the resource model is fitted on and checked against, from the
    benchmarks' results in ``results_dir`` (``bench/results``); the whole top's glue (see
    :func:`_top_points`) or None; and notes on what was missing."""
    results_dir = RESULTS_DIR if results_dir is None else Path(results_dir)
    large = model_preset("bitnet-b1.58-large")
    points: list[CalibrationPoint] = []
    missing: list[str] = []
    glue = None

    units = _load(results_dir, "explore_units.json")
    if units:
        for name, p in units.get("points", {}).items():
            params = dict(p["params"])
            unit = p["unit"]
            if unit == "tlmm":
                params["max_rows"] = 2048
            elif unit == "attention":
                params.update(heads=1, head_dim=96)
            elif unit == "norm_quant":
                params["max_dim"] = 4096
            points.append(CalibrationPoint(unit, params, _res(p["resources"]),
                                           f"bench/results/explore_units.json (unit alone, commit {p.get('commit', '?')})",
                                           note=name))
    else:
        missing.append("bench/results/explore_units.json (python -m bench.explore_units)")

    fit = _load(results_dir, "kv260_fit.json")
    if fit and fit.get("preset") == large.name and "resources_per_unit" in fit:
        top_points, glue = _top_points(fit, large)
        points += top_points
        hw = HardwareConfig.from_dict(fit["hardware"])
        total = {k: float(fit["resources"][k]["used"]) for k in RESOURCE_KEYS}
        points.append(CalibrationPoint("top", {"board": fit.get("board"), "hardware": hw.to_dict(),
                                               "model": large.name, "commit": fit.get("commit")}, total,
                                       f"bench/results/kv260_fit.json (whole top, commit {fit.get('commit', '?')})",
                                       role="check", note="whole top: the sum of the unit formulas"))
        before = fit.get("before", {})
        per_unit = before.get("per_unit", {})
        commit = before.get("commit", "?").split(" ")[0]
        # the full-rate Dequant and residual adder (8 lanes) before they were narrowed
        for path, unit, params in (("datapath.matmul.res_add", "res_add", {"lanes": 8, "add_lanes": 8}),
                                   ("datapath.matmul.dequant", "dequant", {"tokens": 8, "lanes": 8})):
            if path in per_unit:
                points.append(CalibrationPoint(unit, params, _res(per_unit[path], "lut"),
                                               f"bench/results/kv260_fit.json 'before' (commit {commit})",
                                               note=f"{path} at full rate (older commit: the only point there)"))
    else:
        missing.append("bench/results/kv260_fit.json (python -m bench.kv260_fit)")

    tlmm = _load(results_dir, "tlmm.json")
    if tlmm:
        for g, v in tlmm.get("resources", {}).get("per_group", {}).items():
            c = v["config"]
            points.append(CalibrationPoint("tlmm", {"group": c["group"], "lanes": c["lanes"], "tokens": c["tokens"],
                                                    "max_rows": c["max_rows"]}, _res(v["resources"]),
                                           "bench/results/tlmm.json (unit alone, older commit)", role="check",
                                           note=f"G={g}: the TLMM has changed since (result buffer, tables)"))
    ew = _load(results_dir, "elementwise.json")
    if ew:
        pipes = ew.get("pipelines", {})
        src = "bench/results/elementwise.json (unit alone, older commit)"
        table = [("norm_quant", "norm_quant", {"lanes": 8, "max_dim": 4096}, "check", ""),
                 ("dequant", "dequant", {"tokens": 8, "lanes": 8}, "check", "with the residual input, "
                  "which the top's Dequant does not have"),
                 ("gating_silu", "gating", {"lanes": 8, "act_lanes": 8}, "fit", "the only point at 8 SiLU lanes"),
                 ("gating_silu_a2", "gating", {"lanes": 8, "act_lanes": 2}, "check", ""),
                 ("gating_relu2", "gating_relu2", {"lanes": 8, "act_lanes": 8}, "fit", "the only ReLU^2 point"),
                 ("rope", "rope", {"lanes": 8, "rotate_lanes": 8}, "fit", "the only point at 8 rotating lanes")]
        for key, unit, params, role, note in table:
            r = pipes.get(key, {}).get("resources")
            if r and "lut_equiv" in r:
                points.append(CalibrationPoint(unit, params, _res(r), src, role=role, note=note))
    attn = _load(results_dir, "attention.json")
    if attn:
        r = attn.get("resources", {}).get("tiled", {}).get("resources")
        if r and "lut_equiv" in r:
            points.append(CalibrationPoint("attention", {"tile": 32, "chunk": 128, "lanes": 8, "heads": 1,
                                                         "head_dim": 96}, _res(r),
                                           "bench/results/attention.json (TiledAttention alone)", role="check",
                                           note="same parameters as the kv260 top's attention"))
    return points, glue, missing


# -- fitting ------------------------------------------------------------------------------------

def _nonneg_lstsq(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with non-negative coefficients (Lawson-Hanson active set)."""
    n = X.shape[1]
    passive = np.zeros(n, dtype=bool)
    coef = np.zeros(n)
    for _ in range(3 * n + 3):
        w = X.T @ (y - X @ coef)
        candidates = np.where(~passive & (w > 1e-9 * (1 + np.abs(w).max())))[0]
        if not len(candidates):
            break
        passive[candidates[np.argmax(w[candidates])]] = True
        while True:
            s = np.zeros(n)
            s[passive] = np.linalg.lstsq(X[:, passive], y, rcond=None)[0]
            if (s[passive] > 0).all():
                coef = s
                break
            neg = passive & (s <= 0)
            alpha = np.min(coef[neg] / (coef[neg] - s[neg] + 1e-300))
            coef = coef + alpha * (s - coef)
            passive &= coef > 1e-12
            coef[~passive] = 0.0
    return coef


@dataclass
class UnitFit:
    unit: str
    resource: str
    features: list[str]
    coef: list[float]
    points: int
    rank: int


@dataclass
class ResourceModel:
    """The fitted formulas (``fits[unit][resource]``), the glue and the points with their errors."""
    fits: dict[str, dict[str, UnitFit]]
    glue: dict
    points: list[CalibrationPoint] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    #: the whole top's relative error with the units fitted apart from it (see fit_model), and
    #: the units that were
    top_apart: dict = field(default_factory=dict)
    top_apart_units: list = field(default_factory=list)

    def unit(self, unit: str, params: Mapping) -> dict[str, float]:
        """One instance of ``unit`` at ``params``."""
        out = dict.fromkeys(RESOURCE_KEYS, 0.0)
        if unit == "glue":
            params = {**params, "lane_part_lut": self.glue["lane_lut"], "port_part_lut": self.glue["port_lut"],
                      "lane_part_ff": self.glue["lane_ff"], "port_part_ff": self.glue["port_ff"]}
        for resource, f in self.fits.get(unit, {}).items():
            feats = FORMULAS[unit][resource]
            out[resource] = float(sum(c * fn(params) for c, (_, fn) in zip(f.coef, feats)))
        return out

    def estimate(self, model: ModelConfig, hw: HardwareConfig, *, has_uram: bool = True,
                 per_unit: bool = False, as_built: str | None = None) -> dict:
        """The whole top's resources as ``{lut_equiv, ff, dsp, bram36, uram}`` (and, with
        ``per_unit``, ``units``: each unit's share). Without URAM on the board, every URAM the
        model counts is 8 BRAM36. ``as_built``: the commit a recorded top was measured at
        (:data:`AS_BUILT`), to price its units as they were then."""
        total = dict.fromkeys(RESOURCE_KEYS, 0.0)
        units = {}
        changes = AS_BUILT.get(as_built, {})
        for unit, params, count in instances(model, hw):
            if not count:
                continue
            params = {**params, **changes.get(unit, {})}
            r = self.unit(unit, params)
            units[unit] = {k: v * count for k, v in r.items()}
            for k in RESOURCE_KEYS:
                total[k] += r[k] * count
        if not has_uram:
            total["bram36"] += BRAM_PER_URAM * total["uram"]
            total["uram"] = 0.0
        out = {"lut_equiv": round(total["lut"]), "ff": round(total["ff"]), "dsp": round(total["dsp"]),
               "bram36": math.ceil(total["bram36"] * 2) / 2, "uram": math.ceil(total["uram"] - 1e-6)}
        if per_unit:
            out["units"] = {u: {k: round(v, 1) for k, v in r.items()} for u, r in units.items()}
        return out

    # -- reporting ------------------------------------------------------------------------------
    def summary(self) -> dict:
        """Per resource: the worst and RMS relative error over the fitted points, the worst
        leave-one-out error, and the whole top's error (``check`` points apart)."""
        out = {}
        for k in RESOURCE_KEYS:
            fit = [e["error"][k] for e in self.errors if e["role"] == "fit" and e["error"].get(k) is not None]
            loo = [e["loo_error"][k] for e in self.errors if e["role"] == "fit" and e["loo_error"].get(k) is not None]
            top = [e["error"][k] for e in self.errors if e["unit"] == "top" and e["error"].get(k) is not None]
            out[k] = {"fit_points": len(fit),
                      "fit_max_abs": max(map(abs, fit)) if fit else None,
                      "fit_rms": float(np.sqrt(np.mean(np.square(fit)))) if fit else None,
                      "loo_points": len(loo),
                      "loo_max_abs": max(map(abs, loo)) if loo else None,
                      "loo_rms": float(np.sqrt(np.mean(np.square(loo)))) if loo else None,
                      "whole_top": top[0] if top else None,
                      "whole_top_units_apart": self.top_apart.get(k)}
        return out

    def coefficients(self) -> dict:
        return {u: {r: dict(zip(f.features, [round(c, 4) for c in f.coef])) for r, f in fits.items()}
                for u, fits in self.fits.items()}

    def table(self) -> str:
        """The calibration error table (LUT sites per point, relative errors)."""
        lines = [f"resource model: {LABEL}",
                 f"  {'unit':14} {'point':34} {'Yosys LUT':>9} {'model':>8} {'error':>7} {'left out':>8}  source"]
        for e in self.errors:
            lut = e["yosys"]["lut"]
            err = e["error"].get("lut")
            loo = e["loo_error"].get("lut")
            label = e["point"] if e["role"] == "fit" else f"{e['point']} [check]"
            lines.append(f"  {e['unit']:14} {label[:34]:34} {lut:9,.0f} {e['model']['lut']:8,.0f} "
                         f"{_pct(err):>7} {_pct(loo):>8}  {e['source'].split(' (')[0]}")
        s = self.summary()
        lines.append("  error over the fitted points |max| / RMS; left out |max| / RMS; whole kv260 top; the same top with "
                     "its units fitted without their points from it:")
        for k in RESOURCE_KEYS:
            v = s[k]
            lines.append(f"    {k:6} {_pct(v['fit_max_abs'])} / {_pct(v['fit_rms'])}; "
                         f"{_pct(v['loo_max_abs'])} / {_pct(v['loo_rms'])} ({v['loo_points']} points); "
                         f"{_pct(v['whole_top'])}; {_pct(v['whole_top_units_apart'])}")
        lines.append("    (the whole top is not independent of the fit: most of its units' own points are fitted, "
                     "its glue is its remainder; fitted apart from it: " + ", ".join(self.top_apart_units) + ")")
        return "\n".join(lines)

    def assumptions(self) -> list[str]:
        notes = [
            f"resources are an {LABEL}, not Yosys's or Vivado's figures: per unit a linear formula in the "
            "parameters the generator builds it with (FORMULAS in gen/explore.py), coefficients fitted by "
            "non-negative least squares on the recorded points; lut = LUT sites (lut_equiv: logic, INV, LUTRAM, SRL)",
            "the calibration points come from different commits: bench/results/explore_units.json (units alone, "
            "each point's commit recorded), kv260_fit.json (the whole kv260 top per unit, measured at 2968e36: before "
            "the LM head over four HP ports, d2e3eb9, whose one-port head is priced as built there, and before the "
            "operand FIFO, 9e1ecf5), and tlmm.json, elementwise.json, attention.json and kv260_fit.json's 'before' "
            "recorded at older commits (checks, or fitted only where they are the only point of a parameter range: "
            "noted per point)",
            "bench/results/boards.json's whole tops are not used: they were measured with the int8 attention and "
            "before the element-wise units were narrowed (another design than today's)",
            "units synthesised alone (-flatten) cost a few per cent less than inside the top with its hierarchy "
            "kept (kv260_fit.json): both are fitted together",
            "the glue (sequencer, register file, AXI arbiters and quiesce, FIFOs, embedding path) is the rest of "
            "the one whole-top point: its lane-wide part (FIFOs, muxes) scaled by ew_lanes/8, its port part by "
            "hp_ports/4, the sequencer ROM by the program's words; no left-out error is possible for it, nor for the "
            "weight, activation and result buffers and the residual adder (one or two points each)",
            "the whole-top error is not independent of the fit (its units' own points are fitted, its glue is its "
            "remainder); the same top with every unit that has enough other points fitted without its point from "
            "the top is the fairer figure; the left-out errors are per unit, and the feature sets were chosen "
            "by structure with one choice (the TLMM's code bits) made on these points, so they flatter the model "
            "somewhat",
            "memories: the weight buffer (2 x urams_per_bank URAM) and the activation buffer (chunk x max_dim bytes) "
            "in URAM where the board has it, else 8 BRAM36 per URAM; the attention's q/k/v (chunk x (heads + 2) x "
            "head_dim float32) and the TLMM's accumulators and result buffer (T x max_rows) in BRAM36",
            "the formulas hold within the fitted range (TLMM 16-64 lanes x 2-8 tokens, G 2-5; element-wise 4-8 "
            "lanes for NormQuant, 4-16 for the transpose, readers and writers, 1-8 SiLU lanes, 2-8 RoPE lanes; "
            "attention tile 16-64, chunk 64-256; LM head at 1 or 4 ports): beyond it (e.g. 128 TLMM lanes, 16 "
            "tokens or 16 element-wise lanes in NormQuant) they extrapolate linearly",
            "the attention's LUTs do not depend on head_dim (its 16 dot-product and P.V lanes are fixed), its block "
            "RAM does; ReLU^2 gating is one point scaled by its activation lanes",
            "fitting is judged at 100 % of each resource (gen.estimate.fits); Vivado rarely routes a design above "
            "about 85 % of the LUTs at 300 MHz, so a front point near the board's LUTs is a candidate for tellme "
            "build's Yosys estimate, not a promise",
        ]
        return notes + [f"missing: {m}" for m in self.missing]


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} %"


def _design(unit: str, resource: str, points: list[CalibrationPoint]) -> np.ndarray:
    feats = FORMULAS[unit][resource]
    return np.array([[fn(p.params) for _, fn in feats] for p in points], dtype=float)


def _fit_unit(unit: str, resource: str, points: list[CalibrationPoint]) -> UnitFit:
    X = _design(unit, resource, points)
    y = np.array([p.resources[resource] for p in points])
    coef = _nonneg_lstsq(X, y) if len(points) else np.zeros(X.shape[1])
    rank = int(np.linalg.matrix_rank(X)) if len(points) else 0
    return UnitFit(unit, resource, [n for n, _ in FORMULAS[unit][resource]], [float(c) for c in coef],
                   len(points), rank)


def _fit_glue(glue: dict) -> dict[str, UnitFit]:
    """The glue's formulas at its one point: the lane and port parts as recorded (coefficient 1),
    the fixed part the remainder; the ROM's BRAM per program word."""
    fits = {}
    fixed_lut = glue["lut"] - glue["lane_lut"] - glue["port_lut"]
    fixed_ff = glue["ff"] - glue["lane_ff"] - glue["port_ff"]
    names = lambda r: [n for n, _ in FORMULAS["glue"][r]]      # noqa: E731
    fits["lut"] = UnitFit("glue", "lut", names("lut"), [1.0, 1.0, fixed_lut], 1, 1)
    fits["ff"] = UnitFit("glue", "ff", names("ff"), [1.0, 1.0, fixed_ff], 1, 1)
    fits["dsp"] = UnitFit("glue", "dsp", names("dsp"), [glue["dsp"]], 1, 1)
    fits["bram36"] = UnitFit("glue", "bram36", names("bram36"), [glue["bram36"] / (glue["words"] / 1024)], 1, 1)
    return fits


def fit_model(results_dir: Path | None = None) -> ResourceModel:
    """Fit every unit's formulas on the recorded points and compute each point's error (fitted
    and left out)."""
    points, glue, missing = calibration_points(results_dir)
    if glue is None:
        raise ConfigError("explore: the resource model needs bench/results/kv260_fit.json (the whole kv260 top "
                          "per unit) for its glue; run python -m bench.kv260_fit")
    fits: dict[str, dict[str, UnitFit]] = {}
    by_unit: dict[str, list[CalibrationPoint]] = {}
    for p in points:
        if p.role == "fit" and p.unit in FORMULAS:
            by_unit.setdefault(p.unit, []).append(p)
    for unit, formulas in FORMULAS.items():
        if unit == "glue":
            continue
        fits[unit] = {r: _fit_unit(unit, r, by_unit.get(unit, [])) for r in formulas}
    fits["glue"] = _fit_glue(glue)
    model = ResourceModel(fits, glue, points, missing=missing)
    # errors: every point, fitted and left out
    errors = []
    for p in points:
        if p.unit == "top":
            hw = HardwareConfig.from_dict(p.params["hardware"])
            est = model.estimate(model_preset(p.params["model"]), hw, as_built=p.params.get("commit"))
            pred = {"lut": est["lut_equiv"], **{k: est[k] for k in RESOURCE_KEYS if k != "lut"}}
            loo = {}
        else:
            pred = model.unit(p.unit, p.params)
            loo = {}
            if p.role == "fit":
                others = [q for q in by_unit[p.unit] if q is not p]
                for r, feats in FORMULAS[p.unit].items():
                    n = len(feats)
                    X = _design(p.unit, r, others) if others else np.zeros((0, n))
                    # a left-out error needs the rest to determine every coefficient
                    if len(others) >= n and np.linalg.matrix_rank(X) == n:
                        f = _fit_unit(p.unit, r, others)
                        est_r = sum(c * fn(p.params) for c, (_, fn) in zip(f.coef, feats))
                        loo[r] = _rel(est_r, p.resources[r])
        errors.append({"unit": p.unit, "point": _point_label(p), "role": p.role, "source": p.source,
                       "note": p.note, "params": p.params if p.unit != "top" else p.params["hardware"],
                       "yosys": p.resources, "model": {k: round(v, 1) for k, v in pred.items()},
                       "error": {k: _rel(pred[k], p.resources[k]) for k in RESOURCE_KEYS
                                 if k in FORMULAS.get(p.unit, {}) or p.unit == "top"},
                       "loo_error": {k: v for k, v in loo.items() if v is not None}})
    model.errors = errors
    # The whole top again, with each unit fitted without its own point from that top where its
    # other points determine the formula: how far units priced apart are from the top.
    top = next((p for p in points if p.unit == "top"), None)
    if top is not None:
        apart = {}
        for unit, formulas in FORMULAS.items():
            if unit == "glue":
                continue
            own = by_unit.get(unit, [])
            rest = [q for q in own if not q.source.startswith(_TOP_SOURCE)]
            apart[unit] = {}
            for r, feats in formulas.items():
                X = _design(unit, r, rest) if rest else np.zeros((0, len(feats)))
                usable = len(rest) >= len(feats) and np.linalg.matrix_rank(X) == len(feats)
                apart[unit][r] = _fit_unit(unit, r, rest if usable else own)
        apart["glue"] = fits["glue"]
        est = ResourceModel(apart, glue).estimate(model_preset(top.params["model"]),
                                                  HardwareConfig.from_dict(top.params["hardware"]),
                                                  as_built=top.params.get("commit"))
        model.top_apart = {k: _rel(est["lut_equiv" if k == "lut" else k], top.resources[k]) for k in RESOURCE_KEYS}
        model.top_apart_units = sorted(u for u in FORMULAS if u != "glue" and all(
            not f.points or f.points < len(by_unit.get(u, [])) for f in apart[u].values()))
    return model


def _point_label(p: CalibrationPoint) -> str:
    if p.unit == "top":
        return f"{p.params['model']} on {p.params['board']}"
    short = {"group": "G", "lanes": "L", "tokens": "T", "rotate_lanes": "rot", "act_lanes": "act",
             "add_lanes": "add", "tile": "tile", "chunk": "C", "ports": "ports", "block": "blk"}
    if p.unit == "tlmm":
        return f"G{p.params['group']} P{p.params['lanes']} T{p.params['tokens']}"
    keys = [k for k in short if k in p.params]
    text = " ".join(f"{short[k]}{p.params[k]}" for k in keys)
    return text or p.note


def _rel(model: float, yosys: float) -> float | None:
    """The relative error; None where Yosys counted none of the resource."""
    return None if yosys == 0 else (model - yosys) / yosys


# -- the sweep ----------------------------------------------------------------------------------

#: The fields :class:`Grid` sweeps, in the order of its tuples. ``urams_per_bank`` values are
#: targets: each is rounded up to a whole number of the URAMs one lane word of P codes spans
#: (``BufferGeometry.urams_wide``), so a small P gets the same bank capacity as a large one.
SWEPT = ("tlmm_group", "tlmm_lanes", "tlmm_tokens", "ew_lanes", "gating_lanes", "rope_lanes", "attn_tile",
         "attn_heads_parallel", "prefill_chunk", "hp_ports", "urams_per_bank")


@dataclass(frozen=True)
class Grid:
    """Values of each swept hardware field; every combination is a point (the invalid ones are
    dropped with their reason). Fields not swept keep the board's hardware file's values."""
    tlmm_group: tuple[int, ...] = (2, 3, 4, 5)
    tlmm_lanes: tuple[int, ...] = (16, 32, 64, 128)
    tlmm_tokens: tuple[int, ...] = (2, 4, 8, 16)
    ew_lanes: tuple[int, ...] = (4, 8, 16)
    gating_lanes: tuple[int, ...] = (1, 2, 4)
    rope_lanes: tuple[int, ...] = (2, 4, 8)
    attn_tile: tuple[int, ...] = (16, 32, 64)
    attn_heads_parallel: tuple[int, ...] = (1, 2, 4)
    prefill_chunk: tuple[int, ...] = (64, 128, 256)
    hp_ports: tuple[int, ...] = (2, 4)
    urams_per_bank: tuple[int, ...] = (4, 8, 16)

    def size(self) -> int:
        return math.prod(len(getattr(self, f)) for f in SWEPT)

    def to_dict(self) -> dict:
        return {f: list(getattr(self, f)) for f in SWEPT}


#: Every value (``--full``: tens of minutes on two cores for bitnet-b1.58-large on the KV260).
FULL_GRID = Grid()
#: The default sweep: about two minutes for bitnet-b1.58-large on the KV260 on two cores.
DEFAULT_GRID = Grid(attn_tile=(16, 32), prefill_chunk=(128,), hp_ports=(4,), urams_per_bank=(8, 16))
#: A sweep of seconds (``--quick``, the tests).
QUICK_GRID = Grid(tlmm_group=(4, 5), tlmm_lanes=(32, 64), tlmm_tokens=(4, 8), ew_lanes=(8,), gating_lanes=(1, 2),
                  rope_lanes=(2, 4), attn_tile=(32,), attn_heads_parallel=(1,), prefill_chunk=(128,), hp_ports=(4,),
                  urams_per_bank=(16,))


def _config(base: HardwareConfig, point: Mapping) -> HardwareConfig:
    """The hardware configuration of a grid point (``urams_per_bank`` rounded up to whole lane words)."""
    hw = base.replace(**point)
    wide = BufferGeometry.of(hw).urams_wide
    return hw.replace(urams_per_bank=-(-point["urams_per_bank"] // wide) * wide)


def _reason(error: Exception) -> str:
    text = str(error)
    head = text.split(":", 1)[0].strip()
    return head if re.fullmatch(r"[A-Za-z_ ]+", head) and len(head) < 40 else "other"


def validate(model: ModelConfig, hw: HardwareConfig, board) -> None:
    """Raise :class:`ConfigError` when the generator would refuse ``hw`` for ``model`` on
    ``board`` (the checks of ``HardwareConfig``, ``board.check_hardware``, ``TellmeTop``'s heads
    per pass, the datapath's row units and the weight buffer's tiling)."""
    from .program import check_datapath
    hw.check_model(model)
    if board is not None:
        board.check_hardware(hw)
    if model.group_size % hw.attn_heads_parallel:
        raise ConfigError(f"attn_heads_parallel: {hw.attn_heads_parallel} does not divide the {model.group_size} "
                          f"query heads of a kv head")
    if hw.attn_format != "fp32":
        raise ConfigError("attn_format: the cycle model covers the fp32 attention only")
    L = hw.ew_lanes
    # TiledAttention loads beats of L floats into its 16 dot-product lanes; RoPE rotates halves
    if ATTN_SCORE_LANES % L or model.head_dim % (2 * L) or model.head_dim % ATTN_SCORE_LANES:
        raise ConfigError(f"ew_lanes: {L} lanes must divide the attention's {ATTN_SCORE_LANES} dot-product lanes and "
                          f"half of head_dim ({model.head_dim})")
    check_datapath(model, hw)
    geometry = BufferGeometry.of(hw)
    geometry.entries_per_bank
    row_unit = max(hw.ew_lanes, hw.axi_data_width // 32)
    for name, (n, k) in model.projections().items():
        tile_projection(name, n, k, geometry, row_unit)


def rope_extra_cycles(model: ModelConfig, hw: HardwareConfig, tokens: int) -> float:
    """Cycles a call of ``tokens`` tokens gains (or loses) from RoPE's rotating lanes against
    the cycle model, whose attention constants were fitted on configurations with rope_lanes =
    ew_lanes / 2: the query and key beats of each attention pass's load go at min(r, L) / L of
    a beat per cycle, so n (H + 1) hd (1 / min(r, L) - 2 / L) cycles per pass (docs 1: 4 of 8
    lanes cost about 3 K cycles per head pass of 128 tokens)."""
    r, L, H = hw.rope_lanes, hw.ew_lanes, hw.attn_heads_parallel
    passes = model.num_layers * (model.num_heads // H)
    return passes * tokens * (H + 1) * model.head_dim * (1 / min(r, L) - 2 / L)


def _key(hw: HardwareConfig, *without: str) -> tuple:
    return tuple(v for k, v in hw.to_dict().items() if k not in without)


def speed(model: ModelConfig, hw: HardwareConfig, board, *, efficiency: float = 0.85,
          contexts: Iterable[int] = (128,), prompts: Iterable[int] = (128,), cycles: dict | None = None) -> dict:
    """Decode tokens/s at each context and time to first token for each prompt length by the
    cycle model (:class:`~tellme.gen.cycles.CycleModel` on the board's DDR at ``efficiency``),
    with :func:`rope_extra_cycles`. Contexts are cut to max_context - 1, prompts to max_context.
    ``cycles`` (a dict) caches the cycle model's calls across configurations: those that differ
    only in rope_lanes share every call, those that differ only in prefill_chunk their decode
    steps (a decode step does not depend on the chunk)."""
    from .cycles import CycleModel, DdrTiming
    clock = hw.clock_mhz * 1e6
    contexts = sorted({min(c, hw.max_context - 1) for c in contexts})
    prompts = sorted({min(n, hw.max_context) for n in prompts})
    cycles = {} if cycles is None else cycles
    cm = None

    def model_of():
        nonlocal cm
        if cm is None:
            cm = CycleModel(model, hw, DdrTiming.of_board(board, hw.clock_mhz, efficiency=efficiency))
        return cm
    decode, ttft = {}, {}
    dkey, pkey = _key(hw, "rope_lanes", "prefill_chunk"), _key(hw, "rope_lanes")
    for c in contexts:
        if ("d", dkey, c) not in cycles:
            cycles["d", dkey, c] = model_of().decode(c).cycles
        decode[str(c)] = clock / (cycles["d", dkey, c] + rope_extra_cycles(model, hw, 1))
    for n in prompts:
        if ("p", pkey, n) not in cycles:
            cycles["p", pkey, n] = [(call.tokens, call.cycles) for call in model_of().prefill(n)]
        ttft[str(n)] = sum(cyc + rope_extra_cycles(model, hw, t) for t, cyc in cycles["p", pkey, n]) / clock
    return {"decode_tok_s": decode, "ttft_s": ttft}


def _swept(hw: HardwareConfig, point: Mapping | None = None) -> dict:
    return {k: getattr(hw, k) for k in SWEPT}


def _run_task(task: dict) -> dict:
    """One process's share of the sweep: the grid points of one (G, P, T, L), validated, estimated,
    held against the board and (the ones that fit) timed."""
    from ..boards import get_board
    from .estimate import fits
    model, base, rmodel = task["model"], HardwareConfig.from_dict(task["base"]), task["resources"]
    board = get_board(task["board"])
    capacity = board.pl_resources
    grid = task["grid"]
    rest = [getattr(grid, f) for f in SWEPT[len(task["head"]):]]
    invalid: dict[str, dict] = {}
    nofit: dict[str, dict] = {}
    points = []
    cycles: dict = {}
    seen: set = set()
    swept = duplicates = 0
    for values in itertools.product(*rest):
        point = dict(zip(SWEPT, (*task["head"], *values)))
        swept += 1
        try:
            hw = _config(base, point)
            if hw in seen:
                duplicates += 1
                continue
            seen.add(hw)
            validate(model, hw, board)
            res = rmodel.estimate(model, hw, has_uram=board.has_uram)
        except ConfigError as error:
            entry = invalid.setdefault(_reason(error), {"count": 0, "example": str(error)})
            entry["count"] += 1
            continue
        problems = fits(res, capacity)
        if problems:
            key = "+".join(p.split(":", 1)[0] for p in problems)
            entry = nofit.setdefault(key, {"count": 0, "example": {"hardware": _swept(hw, point),
                                                                  "problems": problems}})
            entry["count"] += 1
            continue
        try:
            s = speed(model, hw, board, efficiency=task["efficiency"], cycles=cycles)
        except (ConfigError, ValueError) as error:
            entry = invalid.setdefault(_reason(error), {"count": 0, "example": str(error)})
            entry["count"] += 1
            continue
        points.append({"hardware": _swept(hw, point), "resources": res,
                       "decode_tok_s": s["decode_tok_s"]["128" if "128" in s["decode_tok_s"] else
                                                         next(iter(s["decode_tok_s"]))],
                       "ttft_s": s["ttft_s"]["128" if "128" in s["ttft_s"] else next(iter(s["ttft_s"]))]})
    return {"swept": swept, "duplicates": duplicates, "invalid": invalid, "nofit": nofit, "points": points}


class ProgressBar:
    """A one-line progress bar on ``stream`` (stderr), redrawn with ``\\r`` on a terminal; elsewhere
    a line at each quarter."""

    def __init__(self, total: int, label: str, stream=None, width: int = 30):
        self.total, self.label, self.width = max(total, 1), label, width
        self.stream = sys.stderr if stream is None else stream
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = 0
        self.start = time.monotonic()
        self._quarter = 0
        self._draw()

    def update(self, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self._draw()

    def _draw(self) -> None:
        frac = self.done / self.total
        elapsed = time.monotonic() - self.start
        if self.tty:
            filled = int(self.width * frac)
            bar = "#" * filled + "-" * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {100 * frac:5.1f} % ({self.done:,}/{self.total:,}) "
                              f"{elapsed:5.0f} s")
            self.stream.flush()
        elif int(4 * frac) > self._quarter or (self.done == 0 and self._quarter == 0 and elapsed == 0):
            self._quarter = int(4 * frac)
            self.stream.write(f"{self.label}: {100 * frac:.0f} % ({self.done:,}/{self.total:,}), {elapsed:.0f} s\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _dominates(a: Mapping, b: Mapping) -> bool:
    better_or_equal = (a["decode_tok_s"] >= b["decode_tok_s"] and a["ttft_s"] <= b["ttft_s"]
                       and a["lut"] <= b["lut"])
    strictly = (a["decode_tok_s"] > b["decode_tok_s"] or a["ttft_s"] < b["ttft_s"] or a["lut"] < b["lut"])
    return better_or_equal and strictly


def objectives(point: Mapping) -> dict:
    """The three objectives of a point, rounded to what the models resolve (0.01 tok/s, 0.1 ms,
    one LUT) so that model noise does not make a point dominate."""
    return {"decode_tok_s": round(point["decode_tok_s"], 2), "ttft_s": round(point["ttft_s"], 4),
            "lut": int(point["resources"]["lut_equiv"])}


def pareto_front(points: list[dict]) -> list[dict]:
    """The points no other point dominates on (decode tok/s max, TTFT min, LUT min), one per
    distinct objective triple (the one with the least other resources), by decreasing decode
    rate."""
    def rest(p):
        r = p["resources"]
        return (r["bram36"] + BRAM_PER_URAM * r["uram"], r["dsp"], r["ff"])
    order = sorted(points, key=lambda p: (objectives(p)["lut"], -objectives(p)["decode_tok_s"],
                                          objectives(p)["ttft_s"], rest(p)))
    front: list[dict] = []
    seen = set()
    for p in order:
        o = objectives(p)
        triple = (o["decode_tok_s"], o["ttft_s"], o["lut"])
        if triple in seen:
            continue
        # sorted by LUT: only a point already on the front can dominate this one
        if any(_dominates(objectives(q), o) for q in front):
            continue
        seen.add(triple)
        front.append(p)
    return sorted(front, key=lambda p: (-p["decode_tok_s"], p["ttft_s"], p["resources"]["lut_equiv"]))


def pick(front: list[dict], how: str = "balanced") -> dict:
    """The point of ``front`` to write: ``fastest`` (highest decode rate, then lowest TTFT and
    LUTs), ``smallest`` (fewest LUTs, then the fastest decode) or ``balanced`` (closest to the
    front's ideal corner with each objective scaled to [0, 1] over the front)."""
    if not front:
        raise ConfigError("explore: no configuration fits the board (see the reasons above)")
    if how == "fastest":
        return min(front, key=lambda p: (-p["decode_tok_s"], p["ttft_s"], p["resources"]["lut_equiv"]))
    if how == "smallest":
        return min(front, key=lambda p: (p["resources"]["lut_equiv"], -p["decode_tok_s"], p["ttft_s"]))
    if how != "balanced":
        raise ConfigError(f"pick: must be one of {', '.join(PICKS)}, got {how!r}")
    cols = {k: [objectives(p)[k] for p in front] for k in ("decode_tok_s", "ttft_s", "lut")}

    def scaled(k, v, best_high):
        lo, hi = min(cols[k]), max(cols[k])
        if hi == lo:
            return 0.0
        return (hi - v) / (hi - lo) if best_high else (v - lo) / (hi - lo)

    def distance(p):
        o = objectives(p)
        return math.sqrt(scaled("decode_tok_s", o["decode_tok_s"], True) ** 2
                         + scaled("ttft_s", o["ttft_s"], False) ** 2 + scaled("lut", o["lut"], False) ** 2)
    return min(front, key=lambda p: (distance(p), -p["decode_tok_s"]))


def explore(model: ModelConfig, board_name: str, *, grid: Grid = DEFAULT_GRID, jobs: int | None = None,
            efficiency: float = 0.85, how: str = "balanced", results_dir: Path | None = None,
            progress: bool = True, keep_points: bool = False, resource_model: ResourceModel | None = None) -> dict:
    """Sweep ``grid`` for ``model`` on board ``board_name`` (see the module documentation) with
    ``jobs`` processes (default: the CPUs); returns a JSON-able dict: the calibration, the counts
    (swept, invalid and not fitting, by reason), the Pareto front (each point with its whole
    hardware configuration, resources, utilisation, decode rates at 128 and 1024 and TTFT for 64
    and 128 tokens), the chosen point (``how``) and every assumption. ``keep_points`` adds every
    evaluated point's (LUT, decode tok/s, TTFT)."""
    from ..boards import get_board
    from .estimate import fits, utilisation
    if how not in PICKS:
        raise ConfigError(f"pick: must be one of {', '.join(PICKS)}, got {how!r}")
    jobs = (os.cpu_count() or 1) if jobs is None else jobs
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs: must be a positive integer, got {jobs!r}")
    if not 0 < efficiency <= 1:
        raise ConfigError(f"ddr_efficiency: must be in (0, 1], got {efficiency!r}")
    board = get_board(board_name)
    base = board.default_hardware().capped_to(model)
    start = time.monotonic()
    rmodel = resource_model or fit_model(results_dir)
    worker_model = ResourceModel(rmodel.fits, rmodel.glue)
    # a task per (G, P, T, L): the configurations that share the cycle model's calls (differing
    # in rope_lanes, or in prefill_chunk for decode) stay in one process
    heads = list(itertools.product(grid.tlmm_group, grid.tlmm_lanes, grid.tlmm_tokens, grid.ew_lanes))
    per_task = grid.size() // max(len(heads), 1)
    tasks = [{"model": model, "board": board_name, "base": base.to_dict(), "resources": worker_model,
              "grid": grid, "head": head, "efficiency": efficiency} for head in heads]
    # the slow tasks first (few lanes and tokens: many tiles and passes for the cycle model; the
    # big TLMMs mostly do not fit and finish fast), so the processes end together
    tasks.sort(key=lambda t: (t["head"][1] * t["head"][2], t["head"][0]))
    bar = ProgressBar(grid.size(), f"tellme explore: {model.name} on {board_name}") if progress else None
    results = []
    if jobs == 1:
        for task in tasks:
            results.append(_run_task(task))
            if bar:
                bar.update(per_task)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_run_task, task) for task in tasks]
            for future in as_completed(futures):
                results.append(future.result())
                if bar:
                    bar.update(per_task)
    if bar:
        bar.close()
    invalid: dict[str, dict] = {}
    nofit: dict[str, dict] = {}
    points = []
    for r in results:
        for target, source in ((invalid, r["invalid"]), (nofit, r["nofit"])):
            for key, entry in source.items():
                if key in target:
                    target[key]["count"] += entry["count"]
                else:
                    target[key] = dict(entry)
        points += r["points"]
    swept = sum(r["swept"] for r in results)
    front = pareto_front(points)
    capacity = board.pl_resources
    cycles: dict = {}
    for p in front:
        hw = base.replace(**p["hardware"])
        p["hardware_config"] = hw.to_dict()
        p["utilisation_percent"] = {k: round(v, 1) for k, v in utilisation(p["resources"], capacity).items()}
        s = speed(model, hw, board, efficiency=efficiency, contexts=(128, 1024), prompts=(64, 128), cycles=cycles)
        p["decode_tok_s_at"], p["ttft_s_for"] = s["decode_tok_s"], s["ttft_s"]
    chosen = pick(front, how) if front else None
    # the board's own hardware file, for reference (it may not fit: the KV260's does not)
    reference = {"hardware": _swept(base), "hardware_config": base.to_dict()}
    try:
        validate(model, base, board)
        reference["resources"] = rmodel.estimate(model, base, has_uram=board.has_uram)
        reference["problems"] = fits(reference["resources"], capacity)
        s = speed(model, base, board, efficiency=efficiency, contexts=(128, 1024), prompts=(64, 128), cycles=cycles)
        reference["decode_tok_s"] = s["decode_tok_s"][min(s["decode_tok_s"], key=lambda c: abs(int(c) - 128))]
        reference["ttft_s"] = s["ttft_s"][max(s["ttft_s"], key=int)]
        reference["decode_tok_s_at"], reference["ttft_s_for"] = s["decode_tok_s"], s["ttft_s"]
    except ConfigError as error:
        reference["invalid"] = str(error)
    result = {
        "model": model.name, "board": board_name, "ddr_efficiency": efficiency,
        "resources_label": LABEL, "grid": grid.to_dict(), "base_hardware": base.to_dict(),
        "counts": {"swept": swept, "duplicates": sum(r["duplicates"] for r in results), "invalid": sum(e["count"] for e in invalid.values()),
                   "do_not_fit": sum(e["count"] for e in nofit.values()), "evaluated": len(points),
                   "front": len(front), "invalid_by_reason": dict(sorted(invalid.items(), key=lambda kv: -kv[1]["count"])),
                   "do_not_fit_by_reason": dict(sorted(nofit.items(), key=lambda kv: -kv[1]["count"]))},
        "capacity": dict(capacity),
        "calibration": {"summary": rmodel.summary(), "points": rmodel.errors, "coefficients": rmodel.coefficients()},
        "front": front, "pick": how, "chosen": chosen, "board_hardware": reference,
        "assumptions": rmodel.assumptions() + speed_assumptions(efficiency) + [
            "objectives: decode tokens/s at context 128 (max), time to first token of a 128-token prompt (min), "
            "LUT sites (min); rounded to 0.01 tok/s, 0.1 ms and one LUT before comparing; of points with equal "
            "objectives the one with the least block RAM, DSP and FF is kept",
            f"fields not swept keep the {board_name} hardware file's values (max_context capped at the model's): "
            + ", ".join(f"{k}={v}" for k, v in base.to_dict().items() if k not in SWEPT and k != "urams_per_bank"),
            "urams_per_bank: each swept value rounded up to a multiple of the URAMs one lane word of P codes spans "
            "(BufferGeometry.urams_wide); two values rounding alike are one point (counted as duplicates)",
            "pick 'balanced': the front point nearest the ideal corner with each objective scaled to [0, 1] over "
            "the front"],
        "jobs": jobs, "seconds": round(time.monotonic() - start, 1),
    }
    if keep_points:
        result["points"] = [[p["resources"]["lut_equiv"], p["decode_tok_s"], p["ttft_s"]] for p in points]
    return result


def speed_assumptions(efficiency: float) -> list[str]:
    return [
        f"speed: the cycle model (gen/cycles.py) on the board's DDR at {100 * efficiency:.0f} % of its peak: "
        "validated against the RTL on five configurations (within 3.6 %, 1.4-12.3 % left out of its fit, docs 10); "
        "elsewhere in the grid it extrapolates (e.g. G 2-3, 128 lanes, 16 element-wise lanes were never simulated)",
        "RoPE: the cycle model's attention constants were fitted with rope_lanes = ew_lanes / 2; other ratios add "
        "n (H + 1) hd (1 / min(r, L) - 2 / L) cycles per attention pass (the query and key load, docs 1)",
        "decode at context 128 and TTFT of 128 tokens (cut to max_context - 1 and max_context on small models)",
    ]


def hardware_summary(hw: Mapping) -> str:
    """A grid point's hardware in one short line."""
    return (f"G{hw['tlmm_group']} P{hw['tlmm_lanes']} T{hw['tlmm_tokens']} L{hw['ew_lanes']} "
            f"gate{hw['gating_lanes']} rope{hw['rope_lanes']} tile{hw['attn_tile']} "
            f"H{hw['attn_heads_parallel']} C{hw['prefill_chunk']} ports{hw['hp_ports']} "
            f"upb{hw['urams_per_bank']}")


def report(result: dict, *, rows: int = 15) -> str:
    """The text ``tellme explore`` prints (the calibration table apart)."""
    c = result["counts"]
    lines = [f"swept {c['swept']:,} configurations of {result['model']} on {result['board']} in "
             f"{result['seconds']:.0f} s ({result['jobs']} process{'es' if result['jobs'] > 1 else ''}): "
             + (f"{c['duplicates']:,} duplicates, " if c["duplicates"] else "") +
             f"{c['invalid']:,} invalid, {c['do_not_fit']:,} do not fit, {c['evaluated']:,} fit and were timed, "
             f"{c['front']} on the Pareto front"]
    if c["invalid_by_reason"]:
        lines.append("  invalid, by field:")
        for key, e in c["invalid_by_reason"].items():
            lines.append(f"    {key:22} {e['count']:8,}  e.g. {e['example'][:110]}")
    if c["do_not_fit_by_reason"]:
        lines.append(f"  do not fit {result['board']} (resources: {result['resources_label']}), by resource:")
        for key, e in c["do_not_fit_by_reason"].items():
            ex = e["example"]
            lines.append(f"    {key:22} {e['count']:8,}  e.g. {hardware_summary(ex['hardware'])}: "
                         + "; ".join(ex["problems"]))
    front = result["front"]
    lines.append(f"Pareto front (decode tok/s at context 128 max, TTFT for 128 tokens min, LUT min; "
                 f"resources: {result['resources_label']}):")
    lines.append(f"  {'decode':>7} {'TTFT':>9} {'LUT':>8} {'LUT %':>6} {'FF':>7} {'DSP':>5} {'BRAM36':>6} "
                 f"{'URAM':>4}  hardware")
    for p in front[:rows]:
        lines.append(_row(p, result["capacity"], mark="*" if p is result["chosen"] or p == result["chosen"] else " "))
    if len(front) > rows:
        lines.append(f"  ... {len(front) - rows} more on the front (--json has them all)")
    ref = result.get("board_hardware")
    if ref and "resources" in ref:
        lines.append(f"  the board's own hardware file: {_ms(ref['ttft_s'])} TTFT, {ref['decode_tok_s']:.1f} tok/s, "
                     f"{ref['resources']['lut_equiv']:,} LUT ({100 * ref['resources']['lut_equiv'] / result['capacity']['lut']:.0f} %)"
                     + (": does not fit (" + "; ".join(ref["problems"]) + ")" if ref["problems"] else ": fits")
                     + f"  [{hardware_summary(ref['hardware'])}]")
    ch = result["chosen"]
    if ch:
        lines.append(f"chosen ({result['pick']}): {hardware_summary(ch['hardware'])}: "
                     + ", ".join(f"{v:.1f} tok/s at context {k}" for k, v in ch["decode_tok_s_at"].items())
                     + "; TTFT " + ", ".join(f"{_ms(v)} for {k}" for k, v in ch["ttft_s_for"].items())
                     + "; " + ", ".join(f"{k} {v:g} %" for k, v in ch["utilisation_percent"].items()))
    return "\n".join(lines)


def _ms(seconds: float) -> str:
    ms = 1e3 * seconds
    return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.2f} ms"


def _row(p: dict, capacity: Mapping, mark: str = " ") -> str:
    r = p["resources"]
    return (f"{mark} {p['decode_tok_s']:7.1f} {_ms(p['ttft_s']):>9} {r['lut_equiv']:8,} "
            f"{100 * r['lut_equiv'] / capacity['lut']:5.1f}% {r['ff']:7,} {r['dsp']:5} {r['bram36']:6g} "
            f"{r['uram']:4}  {hardware_summary(p['hardware'])}")
