"""Fidelity benchmark: the error budget of the golden model against Hugging Face's BitNet (issue #13).

Run with ``python -m bench.fidelity`` (about 20 minutes on one core). For each model and prompt
it runs :func:`tellme.sim.budget.error_budget`: the float reference
(:class:`tellme.sim.reference.ReferenceModel`, transformers' BitNet in float32 numpy) generates
12 greedy tokens; then the golden model with every hardware approximation (``hardware``), with
each approximation made exact alone (``fix K``), with all made exact but one (``keep K``), with
all exact, and with candidate format changes (float32 or binary16 K/V cache, query, LM head) is
fed the prompt and the reference's tokens (teacher forcing, so every configuration sees the same
inputs) and measured against the reference: logits cosine and argmax agreement at each step,
hidden-state cosine per layer over the prompt. It writes ``bench/results/fidelity.json``
(numbers, assumptions and the conclusion) and prints the summary tables.

Assumptions (also in the JSON):

- hardware: the ``sim-small`` preset with ``attn_format`` int8 (its K/V cache and query are the
  knobs kv_int8 and q_int8; the default fp32 format is "fix kv_int8+q_int8" bit for bit;
  ew_lanes 4, attn_tile 8, prefill_chunk 16, int8 LM head,
  max_context 256). Of its parameters only ew_lanes (the reduction order), attn_tile (the
  online softmax's tiles) and lm_head_format touch the numbers;
- models: the presets ``tiny`` (ReLU^2, GQA 2:1, tied head) and ``tiny-silu`` (SiLU, MHA,
  untied) with ``tellme.weights.random_weights`` (seed 0), and two checkpoints made by
  transformers itself (:func:`tellme.sim.hf_random.write_hf_random_checkpoint`: a randomly
  initialised ``BitNetForCausalLM``, its projections quantised by transformers' ``WeightQuant``
  rule and packed by its ``pack_weights``, written by ``save_pretrained``; transformers'
  defaults otherwise: init std 0.02, RMSNorm gains 1, rope_theta 500000), read back by
  ``load_checkpoint`` as any downloaded checkpoint: (a) ``hf-relu2-gqa3``: ReLU^2, 6 query / 2
  kv heads, 3 layers, hidden 192, FFN 512, vocabulary 1024, tied head; (b) ``hf-silu-gqa4``:
  SiLU, 8 / 2 heads, 8 layers, hidden 256, FFN 688, vocabulary 1024, untied head. Head dim 32;
- prompts: 3 per model, 16 token ids drawn uniformly from the vocabulary (numpy seeds 1, 2, 3);
  12 generated steps (step 0 is the prompt's last token's logits);
- random weights are not trained weights: their logits are flat (standard deviation about 0.3,
  the top-2 margin often below 0.01), so a greedy choice can hang on a near-tie; the JSON
  records the reference's top-1 - top-2 margin of every step next to where the argmax parts;
- the transformers noise floor (models a, b): transformers' own float32 against float64
  logits on the same teacher-forced sequence (one forward pass, eager attention), and the float
  reference against both;
- cosines are of float64 copies of the float32 logits; "loss" is 1 - cosine.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tellme.config import hardware_preset, model_preset
from tellme.contract.layouts import kv_bytes_per_token
from tellme.sim.backends import cosine
from tellme.sim.budget import FORMAT_KNOBS, KNOBS, VARIANTS, budget_table, error_budget
from tellme.weights import random_weights

from . import argument_parser, log, log_table, results_file

NAME = "fidelity"
STEPS = 12
PROMPT_TOKENS = 16
PROMPT_SEEDS = (1, 2, 3)
BAR = 0.999
#: Checkpoints made by transformers (write_hf_random_checkpoint arguments).
HF_MODELS = {
    "hf-relu2-gqa3": dict(vocab_size=1024, hidden_size=192, intermediate_size=512, num_layers=3, num_heads=6,
                          num_kv_heads=2, hidden_act="relu2", tie_word_embeddings=True, seed=0),
    "hf-silu-gqa4": dict(vocab_size=1024, hidden_size=256, intermediate_size=688, num_layers=8, num_heads=8,
                         num_kv_heads=2, hidden_act="silu", tie_word_embeddings=False, seed=0),
}
PRESETS = ("tiny", "tiny-silu")
ASSUMPTIONS = [
    "hardware: the sim-small preset with the int8 attention format (ew_lanes 4, attn_tile 8, prefill_chunk 16, int8 LM "
    "head, max_context 256; attn_format int8, whose K/V cache and query are the kv_int8 and q_int8 knobs: the fp32 "
    "format, the default, is 'fix kv_int8+q_int8' bit for bit); "
    "only ew_lanes (reduction order), attn_tile (online-softmax tiles) and lm_head_format touch the numbers",
    "models: presets tiny and tiny-silu with tellme.weights.random_weights(seed 0); hf-relu2-gqa3 and "
    "hf-silu-gqa4 made by transformers (tellme.sim.hf_random.write_hf_random_checkpoint: random "
    "BitNetForCausalLM init with transformers' defaults - std 0.02, RMSNorm gains 1, rope_theta 500000 - "
    "projections quantised by WeightQuant's rule, packed by pack_weights, saved by save_pretrained as "
    "bitlinear/offline) and read back by tellme.gen.checkpoint.load_checkpoint",
    f"prompts: {len(PROMPT_SEEDS)} per model, {PROMPT_TOKENS} token ids uniform over the vocabulary "
    f"(numpy seeds {', '.join(map(str, PROMPT_SEEDS))}); {STEPS} greedy steps of the float reference, step 0 "
    "being the prompt's last logits",
    "teacher forcing: every configuration is fed the prompt and the reference's greedy tokens; 'first "
    "argmax difference' is the first step whose argmax differs from the reference's (free-running greedy "
    "generation parts there)",
    "reference: tellme.sim.reference.ReferenceModel (transformers' BitNet in float32 numpy); on models "
    "hf-* it is checked here against transformers in float32 and float64 (the 'transformers' entries)",
    "random weights are untrained: flat logits (std ~0.3) with top-2 margins often below 0.01, so greedy "
    "choices hang on near-ties; reference_margins records the reference's top-1 minus top-2 logit per step",
    "exact knobs compute in float64 rounded once to float32 where the hardware has an approximation or a "
    "fixed order; binary16 variants round the float32 value to nearest even",
    "cosines of float64 copies of float32 logits; a loss is 1 - cosine",
]
#: Format changes measured beside the budget: float32 (exact knobs) and binary16 (variants).
FORMAT_SETS = (
    ("kv_int8", "q_int8"), ("kv_int8", "lm_head_int8"), ("q_int8", "lm_head_int8"),
    ("kv_int8", "q_int8", "lm_head_int8"),
    ("head_fp16",), ("kv_fp16",), ("kv_fp16", "q_fp16"), ("kv_fp16", "q_fp16", "head_fp16"),
    ("kv_int8", "q_fp16"), ("kv_int8", "q_int8", "head_fp16"),
    ("kv_int16",), ("kv_int16", "q_int16"), ("kv_int8", "q_int16"), ("k_channel_int8",), ("k_channel_int8", "q_fp16"),
)


def _loss(c: float) -> float:
    return float(f"{1.0 - c:.3g}")


def compact(report: dict) -> dict:
    """An error-budget report with the per-step and per-layer cosines as losses (3 digits)."""
    out = {k: report[k] for k in ("prompt_ids", "reference_tokens")}
    out["reference_margins"] = [round(m, 5) for m in report["reference_margins"]]
    out["reference_logits_std"] = [round(s, 4) for s in report["reference_logits_std"]]
    out["configurations"] = {}
    for c in report["configurations"]:
        row = {"min_logits_cosine": c["min_logits_cosine"],
               "first_argmax_difference": c["first_argmax_difference"],
               "step_logits_loss": [_loss(x) for x in c["step_logits_cosine"]],
               "max_logits_error": round(c["max_logits_error"], 5),
               "layer_hidden_loss": [_loss(l["hidden"]) for l in c["layers"]]}
        if c["kind"] in ("hardware", "all_exact"):
            row["layers"] = [{k: _loss(v) if k != "layer" else v for k, v in l.items()} for l in c["layers"]]
        out["configurations"][c["name"]] = row
    return out


def summarise(prompts: list[dict]) -> dict:
    """Per configuration over the prompts: min logits cosine, prompts whose 12 argmaxes all
    agree, the first differing steps and the reference's margin there."""
    out = {}
    for name in prompts[0]["configurations"]:
        rows = [p["configurations"][name] for p in prompts]
        firsts = [r["first_argmax_difference"] for r in rows]
        out[name] = {"min_logits_cosine": min(r["min_logits_cosine"] for r in rows),
                     "mean_min_logits_loss": float(f"{np.mean([1 - r['min_logits_cosine'] for r in rows]):.3g}"),
                     "prompts_tokens_agree": sum(f is None for f in firsts),
                     "first_argmax_difference": firsts,
                     "reference_margin_there": [None if f is None else p["reference_margins"][f]
                                                for f, p in zip(firsts, prompts)],
                     "max_last_layer_hidden_loss": max(r["layer_hidden_loss"][-1] for r in rows)}
    return out


def transformers_floor(path: Path, weights, hw, report: dict) -> dict:
    """transformers float32 vs float64, and the reference vs both, teacher-forced on the
    reference's tokens."""
    from tellme.sim.hf_random import hf_logits
    from tellme.sim.reference import ReferenceModel
    prompt, tokens = report["prompt_ids"], report["reference_tokens"]
    seq = prompt + tokens[:-1]
    at = slice(len(prompt) - 1, len(seq))
    l32, l64 = hf_logits(path, seq, "float32")[at], hf_logits(path, seq, "float64")[at]
    ref = ReferenceModel(weights, max_context=hw.max_context).forward(seq, all_logits=True)[at]
    return {"hf32_vs_hf64_min_cosine": min(cosine(a, b) for a, b in zip(l32, l64)),
            "reference_vs_hf32_min_cosine": min(cosine(a, b) for a, b in zip(ref, l32)),
            "reference_vs_hf64_min_cosine": min(cosine(a, b) for a, b in zip(ref, l64)),
            "hf32_argmax_equal_reference": [int(np.argmax(l)) for l in l32] == tokens,
            "hf64_argmax_equal_reference": [int(np.argmax(l)) for l in l64] == tokens}


def measure_model(name: str, weights, hw, source: str, hf_path: Path | None) -> dict:
    prompts = []
    for seed in PROMPT_SEEDS:
        prompt = [int(i) for i in np.random.default_rng(seed).integers(0, weights.config.vocab_size, PROMPT_TOKENS)]
        log(f"fidelity: {name}, prompt seed {seed} ...")
        start = time.monotonic()
        report = error_budget(weights, hw, prompt, STEPS, extra=FORMAT_SETS)
        log("\n".join("  " + line for line in budget_table(report)))
        entry = {"prompt_seed": seed, **compact(report), "seconds": round(time.monotonic() - start, 1)}
        if hf_path is not None:
            entry["transformers"] = transformers_floor(hf_path, weights, hw, report)
            log(f"  transformers: {entry['transformers']}")
        prompts.append(entry)
    kinds = {c["name"]: {k: c[k] for k in ("kind", "exact", "variants")} for c in report["configurations"]}
    return {"name": name, "source": source, "config": weights.config.to_dict(), "knobs": list(report["knobs"]),
            "configurations": kinds, "prompts": prompts, "summary": summarise(prompts)}


def _knob_costs(model: dict) -> dict:
    """Per knob, the mean over prompts of what making it exact alone gains (hardware loss - fix
    loss) and of what it costs alone in the exact model (keep loss - all-exact loss)."""
    out = {}
    for k in model["knobs"]:
        fix, keep = [], []
        for p in model["prompts"]:
            c = p["configurations"]
            hw_loss, exact_loss = 1 - c["hardware"]["min_logits_cosine"], 1 - c["all exact"]["min_logits_cosine"]
            fix.append(hw_loss - (1 - c[f"fix {k}"]["min_logits_cosine"]))
            keep.append((1 - c[f"keep {k}"]["min_logits_cosine"]) - exact_loss)
        out[k] = {"fix_one_gain": float(f"{np.mean(fix):.3g}"), "keep_one_cost": float(f"{np.mean(keep):.3g}")}
    return out


def conclude(models: list[dict]) -> dict:
    """The conclusion, from the numbers: what the hardware loses, which knobs account for it
    and which format changes reach the bar on every model and prompt."""
    costs = {m["name"]: _knob_costs(m) for m in models}
    hardware = {m["name"]: {"min_logits_cosine": round(m["summary"]["hardware"]["min_logits_cosine"], 6),
                            "prompts_tokens_agree": f"{m['summary']['hardware']['prompts_tokens_agree']}/"
                                                    f"{len(m['prompts'])}"} for m in models}
    formats = sorted({n for m in models for n, s in m["summary"].items()
                      if m["configurations"][n]["kind"] in ("formats", "fix_set")
                      or n in (f"fix {k}" for k in FORMAT_KNOBS) or n in ("hardware", "all exact")})
    table = {}
    for n in formats:
        per = {m["name"]: m["summary"][n] for m in models if n in m["summary"]}
        table[n] = {"min_logits_cosine": {k: round(v["min_logits_cosine"], 6) for k, v in per.items()},
                    "prompts_tokens_agree": {k: f"{v['prompts_tokens_agree']}/{len(PROMPT_SEEDS)}"
                                             for k, v in per.items()},
                    "meets_cosine_bar_everywhere": all(v["min_logits_cosine"] >= BAR for v in per.values())}
    passing = [n for n, t in table.items() if t["meets_cosine_bar_everywhere"]]
    ranking = {name: sorted(c, key=lambda k: -max(c[k]["fix_one_gain"], c[k]["keep_one_cost"]))[:4]
               for name, c in costs.items()}
    floor = {m["name"]: {k: min(p["transformers"][k] for p in m["prompts"])
                         for k in ("hf32_vs_hf64_min_cosine", "reference_vs_hf32_min_cosine",
                                   "reference_vs_hf64_min_cosine")}
             for m in models if all("transformers" in p for p in m["prompts"])}
    return {"bar": f"logits cosine >= {BAR} at every step and the reference's greedy tokens",
            "summary": narrative(models, costs, table), "transformers_noise_floor": floor,
            "hardware": hardware, "knob_costs": costs, "largest_knobs": ranking,
            "format_changes": table, "format_changes_meeting_cosine_bar": passing}


ARITHMETIC = ("online_softmax", "exp", "recip", "rsqrt", "silu", "reduction_order", "ftz", "act_scale", "dequant",
              "norm_mean")


def _cos(model: dict, name: str) -> str:
    s = model["summary"].get(name)
    return "n/a" if s is None else f"{s['min_logits_cosine']:.6f}"


def kv_cache_bytes(preset: str = "bitnet-b1.58-large", context: int = 128) -> dict:
    """K/V bytes one decode step reads at ``context`` (docs section 1's decode model): the int8
    format's rows + 16-byte scale records and the fp32 format's rows (docs sections 3.8, 6,
    ``layouts.kv_bytes_per_token``), and binary16 rows (half the fp32 ones)."""
    c = model_preset(preset)
    per_token = {fmt: kv_bytes_per_token(c.num_layers, c.num_kv_heads, c.head_dim, fmt) * context
                 for fmt in ("int8", "fp32")}
    return {"model": preset, "context": context, "int8_with_scales": per_token["int8"],
            "binary16": per_token["fp32"] // 2, "float32": per_token["fp32"]}


def narrative(models: list[dict], costs: dict, table: dict) -> list[str]:
    """The conclusion in sentences, every number taken from the results."""
    by = {m["name"]: m for m in models}
    hf = [m for m in models if m["name"].startswith("hf-")] or models
    deep = max(hf, key=lambda m: m["config"]["num_layers"])
    n = len(PROMPT_SEEDS)
    out = []
    out.append("The golden model (every approximation in hardware form): min logits cosine over "
               f"{n} prompts x {STEPS} steps " + ", ".join(
                   f"{m['name']} {_cos(m, 'hardware')} (greedy tokens agree on "
                   f"{m['summary']['hardware']['prompts_tokens_agree']}/{n} prompts)" for m in models)
               + f"; the bar is {BAR}.")
    arith = [(abs(costs[m['name']][k]["keep_one_cost"]), k, m["name"]) for m in models for k in ARITHMETIC
             if k in costs[m["name"]]]
    worst = max(arith)
    out.append("The loss is the attention's two int8 formats. Alone in the otherwise exact model (keep one, mean "
               "over prompts, as 1 - cosine) the int8 K/V cache costs " + ", ".join(
                   f"{costs[m['name']]['kv_int8']['keep_one_cost']:.1e} ({m['name']})" for m in hf)
               + ", the int8 query " + ", ".join(
                   f"{costs[m['name']]['q_int8']['keep_one_cost']:.1e}" for m in hf)
               + ", the int8 LM head " + ", ".join(
                   f"{costs[m['name']]['lm_head_int8']['keep_one_cost']:.1e}" for m in hf)
               + f"; every arithmetic approximation ({', '.join(ARITHMETIC)}) costs at most {worst[0]:.1e} alone "
               f"({worst[1]} on {worst[2]}).")
    dc = costs[deep["name"]]
    layer_loss = deep["prompts"][0]["configurations"]["hardware"]["layer_hidden_loss"]
    floors = [p["transformers"]["hf32_vs_hf64_min_cosine"] for m in hf for p in m["prompts"] if "transformers" in p]
    floor_text = (f"transformers shows the same effect on itself: its float32 and float64 logits differ by up to "
                  f"{1 - min(floors):.1e} (min cosine {min(floors):.6f}) on prompts where one rounding flips, "
                  f"and by {1 - max(floors):.0e} where none does. ") if floors else ""
    hw_loss = np.mean([1 - p["configurations"]["hardware"]["min_logits_cosine"] for p in deep["prompts"]])
    out.append("The losses do not add up, and fixing one format in the hardware model gains little or loses (on "
               f"{deep['name']}, of a mean loss of {hw_loss:.1e}, a float32 K/V cache alone gains "
               f"{dc['kv_int8']['fix_one_gain']:.1e}, a float32 query alone {dc['q_int8']['fix_one_gain']:.1e}): BitNet's per-token absmax int8 activation "
               "quantiser in front of every projection turns a difference of a fraction of an int8 step into a "
               "flipped rounding, which moves about 2/3 of the next projection's outputs by one step and flips "
               "more roundings in the next layer, so any perturbation above a few ulp grows layer by layer "
               f"(hidden-state loss of the hardware model per layer on {deep['name']}, first prompt: "
               + ", ".join(f"{x:.1e}" for x in layer_loss) + "). " + floor_text
               + "With float formats the remaining arithmetic approximations together cost "
               + ", ".join(f"{1 - by[m['name']]['summary']['fix kv_int8+q_int8+lm_head_int8']['min_logits_cosine']:.1e} "
                           f"({m['name']})" for m in hf) + ": chance flips, not a systematic error.")

    def cos_list(name):
        return ", ".join(f"{_cos(m, name)}" for m in hf)
    names = " / ".join(m["name"] for m in hf)
    out.append(f"Format changes, min logits cosine on {names}: float32 K/V cache + float32 query in the score "
               f"(fix kv_int8+q_int8) {cos_list('fix kv_int8+q_int8')}; float32 K/V + binary16 query "
               f"{cos_list('fix kv_int8 use q_fp16')}; both plus a float32 LM head "
               f"{cos_list('fix kv_int8+q_int8+lm_head_int8')}. Not enough: float32 K/V alone "
               f"{cos_list('fix kv_int8')}, binary16 K/V {cos_list('use kv_fp16')}, binary16 K/V + query "
               f"{cos_list('use kv_fp16+q_fp16')}, a binary16 LM head {cos_list('use head_fp16')}. So the bar "
               "needs a float32 K/V cache and a float (float32, or binary16 with less margin) query in the "
               "score; the int8 LM head can stay (binary16 rows gain nothing). Changes meeting the cosine bar "
               f"on every model and prompt: {', '.join(n for n, t in table.items() if t['meets_cosine_bar_everywhere'])}.")
    if "use kv_int16" in table and "use k_channel_int8" in table:
        out.append("Narrower storage that keeps more bits than int8 does not reach the bar either: int16 K/V with "
                   f"the per-(token, head) absmax scale {cos_list('use kv_int16')}, int16 K/V and int16 query "
                   f"{cos_list('use kv_int16+q_int16')}; per-channel key scales fixed by the prompt's keys (int8 "
                   f"keys, a best case of KIVI-style key quantisation) {cos_list('use k_channel_int8')}, with a "
                   f"binary16 query {cos_list('use q_fp16+k_channel_int8')}. (A float32 K/V cache with an int16 "
                   f"query, {cos_list('fix kv_int8 use q_int16')}, meets it, but its cache is float32's.) So no "
                   "8-bit scheme, and no 16-bit one, keeps the logits within 0.999 on the deeper model: the "
                   "default attention format is fp32 (attn_format 'fp32': float32 K/V rows, float32 query, the "
                   "score in fp32.vector_sum order over 16 lanes), which is 'fix kv_int8+q_int8' bit for bit; "
                   "int8 stays as the format that saves DDR traffic.")
    kv = kv_cache_bytes()
    out.append(f"Cost: a float32 K/V cache is 4x the int8 rows: on {kv['model']} at context {kv['context']} a decode "
               f"step reads {kv['float32'] / 1e6:.1f} MB of K/V instead of {kv['int8_with_scales'] / 1e6:.1f} MB "
               f"(binary16: {kv['binary16'] / 1e6:.1f} MB), against the ~200 MB/token decode traffic of docs "
               "section 1, growing with the context; a float query costs no DDR traffic but makes the score a "
               "float32 dot product in the attention unit.")
    def partings(keep):
        return [(p["reference_margins"][f], p["reference_logits_std"][f], m["name"], c_name, p["prompt_seed"], f)
                for m in models for p in m["prompts"] for c_name, c in p["configurations"].items()
                for f in [c["first_argmax_difference"]] if f is not None and keep(c_name, c)]
    good = partings(lambda name, c: c["min_logits_cosine"] >= BAR)
    hard = partings(lambda name, c: name == "hardware")
    if good and hard:
        top = max(good)
        exact_ok = all(m["summary"]["all exact"]["prompts_tokens_agree"] == n for m in models)
        fp = by[deep["name"]]["summary"]["fix kv_int8+q_int8"]
        rel = [p["reference_margins"][i] / p["reference_logits_std"][i] for m in models for p in m["prompts"]
               for i in range(STEPS)]
        hf_floor = all(p["transformers"]["hf32_argmax_equal_reference"] and p["transformers"]["hf64_argmax_equal_reference"]
                       for m in hf for p in m["prompts"] if "transformers" in p)
        out.append("Greedy tokens: the hardware model parts from the reference only at steps whose reference "
                   f"top-2 logit margin is at most {max(hard)[0]:.4f} ({100 * max(hard)[0] / max(hard)[1]:.1f} % "
                   "of that step's logit standard deviation); a configuration just above the cosine bar can part "
                   f"at margins up to {top[0]:.4f} ({100 * top[0] / top[1]:.1f} %; {top[3]} on {top[2]}, prompt "
                   f"seed {top[4]}, step {top[5]}): a cosine of 0.999 allows logit errors of ~4.5 % of the logits' "
                   f"norm. Untrained weights have many such near-ties: {sum(r < 0.02 for r in rel)} of the "
                   f"reference's {len(rel)} steps have a margin below 2 % of the standard deviation, "
                   f"{sum(r < 0.1 for r in rel)} below 10 %. With float32 K/V and query the tokens still part on "
                   f"{n - fp['prompts_tokens_agree']}/{n} prompts of {deep['name']} (steps "
                   f"{[f for f in fp['first_argmax_difference'] if f is not None]}, margins "
                   f"{[x for x in fp['reference_margin_there'] if x is not None]}); "
                   + ("the all-exact model keeps every token" if exact_ok else "even the all-exact model parts")
                   + (", as transformers in float32 and float64 do. " if hf_floor else ". ")
                   + "Same greedy tokens at such ties needs agreement far beyond the cosine bar, close to the "
                   "reference's own arithmetic: a format change can promise the cosine, not the ties.")
    return out


def dump(results: dict) -> str:
    """JSON with one key per line but every list of numbers or strings on one line."""
    text = json.dumps(results, indent=1)
    return re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text) + "\n"


def main(argv=None) -> int:
    parser = argument_parser(NAME, __doc__)
    parser.add_argument("--models", nargs="*", help="only these models (names as in the JSON)")
    parser.add_argument("--reconclude", action="store_true",
                        help="measure nothing: recompute the conclusion of the existing results file")
    args = parser.parse_args(argv)
    path, previous = results_file(args.out, NAME)
    if args.reconclude:
        if not previous:
            parser.error(f"{path} holds no results to conclude from")
        previous.update(knobs=KNOBS, variants=VARIANTS, assumptions=ASSUMPTIONS)
        previous["conclusion"] = conclude(previous["models"])
        path.write_text(dump(previous))
        log(json.dumps(previous["conclusion"]["summary"], indent=1))
        return 0
    # the int8 attention format: its two format sites are knobs (the fp32 format is their fix)
    hw = hardware_preset("sim-small").replace(attn_format="int8")
    start = time.monotonic()
    models = []
    wanted = set(args.models) if args.models else None
    for preset in PRESETS:
        if wanted is None or preset in wanted:
            models.append(measure_model(preset, random_weights(model_preset(preset), seed=0), hw,
                                        "tellme.weights.random_weights(seed 0)", None))
    missing = [m for m in ("torch", "transformers", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        log(f"fidelity: transformers-made models skipped ({', '.join(missing)} not installed)")
    else:
        from tellme.gen.checkpoint import load_checkpoint
        from tellme.sim.hf_random import write_hf_random_checkpoint
        with tempfile.TemporaryDirectory() as tmp:
            for name, spec in HF_MODELS.items():
                if wanted is not None and name not in wanted:
                    continue
                ckpt = write_hf_random_checkpoint(Path(tmp) / name, **spec)
                models.append(measure_model(name, load_checkpoint(ckpt), hw,
                                            f"transformers BitNetForCausalLM random init, {spec}", ckpt))
    results = {
        "assumptions": ASSUMPTIONS,
        "hardware": hw.to_dict(), "steps": STEPS, "prompt_tokens": PROMPT_TOKENS,
        "knobs": KNOBS, "variants": VARIANTS, "format_sets": [list(s) for s in FORMAT_SETS],
        "models": models, "conclusion": conclude(models),
        "wall_seconds": round(time.monotonic() - start, 1)}
    path.write_text(dump(results))
    rows = []
    names = list(models[0]["summary"])
    for n in names:
        cells = []
        for m in models:
            s = m["summary"].get(n)
            cells.append(f"{'':>18}" if s is None else
                         f"{s['min_logits_cosine']:11.6f} {s['prompts_tokens_agree']}/{len(PROMPT_SEEDS)}   ")
        rows.append(f"{n:<40} " + " ".join(cells))
    log_table(f"wrote {path}: min logits cosine over {len(PROMPT_SEEDS)} prompts x {STEPS} steps, prompts whose "
              "greedy tokens all agree", f"{'configuration':<40} " + " ".join(f"{m['name']:>18}" for m in models), rows)
    log(json.dumps(results["conclusion"]["hardware"]))
    log(f"format changes meeting the cosine bar on every model and prompt: "
        f"{results['conclusion']['format_changes_meeting_cosine_bar']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
