"""Top-level benchmark: the generated accelerator under Verilator, end to end through the host
driver, for the tiny models and a mid-size one on sim-small hardware (docs/architecture.md 9).

Run with ``python -m bench.top``. For each model (random weights) it generates the top level
(``gen/top.py``) with ``prefill_chunk`` 64, runs greedy generation with a 16-token and a 64-token
prompt (``tellme.sim.top_harness.rtl_generate``: the driver of ``tellme/runtime.py`` through the
register map, the DDR model behind the HP ports), checks every token and every step's logits
against the golden model bit for bit, and records:

- the Verilator build time and the simulation speed (simulated cycles per wall-clock second);
- ``CYCLES`` of each call (prefill of 16 and of 64 tokens, each decode step) and ``STALL`` (the
  cycles the TLMM waited for weights), read from the registers, and tokens/s at 300 MHz;
- the split of each call's cycles per unit, from the harness's per-op counters (the cycles the
  sequencer spent on steps of each op, dispatch included): TLMM busy (MATMUL steps less the
  weight wait; the gated FFN activation streams inside up_proj's MATMUL), TLMM waiting on
  weights (``STALL``), attention, element-wise (EMBED, NORM_QUANT), LM head, and the sequencer's own cycles between steps (``CYCLES`` less the steps);
- beside TLMM busy, the hand model of docs section 1: ceil(n / T) passes x the sum over the
  MATMUL steps of blocks x rows (one lane-block entry per cycle), the cycles the TLMM would take
  if it never waited and nothing around it cost a cycle.

The kv260 hardware settings (64 TLMM lanes, 8 tokens per pass, 4 HP ports, chunks of 128) are
measured on the tiny model with one 16-token prompt (``max_context`` 256): its Verilator build
and simulation speed are what a user of the kv260 top level waits for; bitnet-b1.58-large itself
is far beyond a simulation of minutes (issue #15 validates a cycle model on one of its layers).

Assumptions written into the JSON: the DDR model's latency and bandwidth (its defaults), the
clock, one step at a time with weight loading running ahead (the sequencer's walker). Not
measured here:
a cycle model of the other units (issue #15).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np

from tellme.config import hardware_preset, model_preset
from tellme.gen.program import build_program
from tellme.sim.backends import generate, make_backend
from tellme.sim.top_harness import rtl_generate
from tellme.weights import random_weights

from . import CLOCK_MHZ, argument_parser, log, log_table, results_file

NAME = "top"
PROMPTS = (16, 64)
NEW_TOKENS = 4
#: The mid-size model of tests/test_top.py::test_mid_size_model_equals_golden: 4 layers, hidden
#: 256, head_dim 64, GQA 2:1, FFN 688, vocabulary 1000.
MID_RELU2 = dataclasses.replace(model_preset("tiny"), name="mid-relu2", hidden_size=256, intermediate_size=688,
                                num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64, vocab_size=1000)
MODELS = (model_preset("tiny"), model_preset("tiny-silu"), MID_RELU2)


def unit_split(call: dict, op_cycles: dict) -> dict:
    """One call's cycles per unit, from its ``CYCLES``/``STALL`` and the per-op counters."""
    steps = sum(op_cycles.values())
    return {"tlmm_busy": op_cycles["MATMUL"] - call["stall_cycles"], "tlmm_weight_wait": call["stall_cycles"],
            "attention": op_cycles["ATTENTION"],
            "elementwise": op_cycles["EMBED"] + op_cycles["NORM_QUANT"],
            "lm_head": op_cycles["LM_HEAD"], "sequencer_between_steps": call["cycles"] - steps}


def measure(config, hw, label, prompts=PROMPTS) -> dict:
    weights = random_weights(config, seed=3)
    program = build_program(config, hw)
    rng = np.random.default_rng(11)
    out = {"model": config.name, "hardware_label": label, "config": config.to_dict(), "hardware": hw.to_dict(),
           "runs": []}
    for length in prompts:
        prompt = [int(i) for i in rng.integers(0, weights.config.vocab_size, size=length)]
        want_ids, want_logits = generate(make_backend("golden", weights, hw), prompt, NEW_TOKENS)
        start = time.monotonic()
        ids, logits, run = rtl_generate(weights, hw, prompt, NEW_TOKENS, timeout=7200)
        exact = ids == want_ids and all(np.array_equal(np.asarray(a, np.float32).view(np.uint32),
                                                       np.asarray(b, np.float32).view(np.uint32))
                                        for a, b in zip(logits, want_logits))
        if not exact:
            raise AssertionError(f"{config.name}, {length}-token prompt: the RTL differs from the golden model")
        cycles = sum(c["cycles"] for c in run.calls)
        out["runs"].append({
            "prompt_tokens": length, "bit_exact": exact, "wall_seconds": round(time.monotonic() - start, 1),
            "build_seconds": round(run.build_seconds, 1), "sim_seconds": round(run.sim_seconds, 1),
            "simulated_cycles_per_second": round(cycles / run.sim_seconds, 1) if run.sim_seconds else None,
            "calls": [{"kind": c["kind"], "tokens": c["tokens"], "cycles": c["cycles"],
                       "stall_cycles": c["stall_cycles"], "split": unit_split(c, ops),
                       "hand_tlmm_cycles": program.tlmm_cycles(c["tokens"])}
                      for c, ops in zip(run.calls, run.op_cycles, strict=True)],
        })
    decode = [c["cycles"] for r in out["runs"] for c in r["calls"] if c["kind"] == "decode"]
    out["decode_cycles_mean"] = float(np.mean(decode))
    out["decode_tokens_per_s_at_300mhz"] = round(CLOCK_MHZ * 1e6 / np.mean(decode), 1)
    return out


def main(argv=None) -> int:
    args = argument_parser(NAME, __doc__).parse_args(argv)
    path, _ = results_file(args.out, NAME)
    hw = hardware_preset("sim-small").replace(prefill_chunk=64)
    results = {"clock_mhz": CLOCK_MHZ, "assumptions": {
        "ddr": "tellme.hw.ddr_model.DdrModel defaults (fixed latency, shared token-bucket bandwidth)",
        "schedule": "one program step at a time, except that a NORM_QUANT into the act buffer ends once the "
                    "buffer has its command (the MATMUL after it replays each token once stored, so the "
                    "norm's time mostly counts as MATMUL) and the gated activation streams inside "
                    "up_proj's MATMUL; weight loading runs ahead of the steps (the sequencer's weight "
                    "walker), as far as the two weight-buffer banks allow",
        "split": "per-op cycles count every cycle the sequencer is busy on a step of that op "
                 "(its dispatch and w_mult fetch included); tlmm_busy = MATMUL - STALL",
        "hand_tlmm_cycles": "docs section 1: ceil(n/T) x sum over MATMUL steps of blocks x rows",
        "kv260": "the tiny model on the kv260 hardware preset with max_context 256, one 16-token prompt"},
        "models": []}
    for config in MODELS:
        log(f"top: {config.name} on sim-small (chunk 64) ...")
        results["models"].append(measure(config, hw, "sim-small"))
    log("top: tiny on the kv260 settings ...")
    results["models"].append(measure(model_preset("tiny"), hardware_preset("kv260").replace(max_context=256),
                                     "kv260", prompts=(16,)))
    path.write_text(json.dumps(results, indent=2) + "\n")
    rows = []
    for m in results["models"]:
        for r in m["runs"]:
            pre = [c["cycles"] for c in r["calls"] if c["kind"] == "prefill"]
            rows.append(f"{m['model']:<10} {m['hardware_label']:<10} {r['prompt_tokens']:>6} {pre[0]:>12,} "
                        f"{m['decode_cycles_mean']:>12,.0f} {r['simulated_cycles_per_second']:>10,.0f} {r['build_seconds']:>8.0f}")
    log_table(f"wrote {path}", f"{'model':<10} {'hardware':<10} {'prompt':>6} {'prefill cyc':>12} {'decode cyc':>12} "
              f"{'cyc/s':>10} {'build s':>8}", rows)
    units = ("tlmm_busy", "tlmm_weight_wait", "attention", "elementwise", "lm_head", "sequencer_between_steps")
    split_rows = []
    for m in results["models"]:
        for r in m["runs"]:
            for call in (r["calls"][0], r["calls"][-1]):
                shares = [f"{100 * call['split'][u] / call['cycles']:>9.1f}%" for u in units]
                hand = 100 * call["hand_tlmm_cycles"] / call["cycles"]
                label = f"{m['model']}/{m['hardware_label']}"
                split_rows.append(f"{label:<16} {r['prompt_tokens']:>6} {call['kind']:<8} {' '.join(shares)} "
                                  f"{hand:>9.1f}%")
    log_table("cycles per unit (share of the call's CYCLES; hand: docs section 1's TLMM figure)",
              f"{'model/hardware':<16} {'prompt':>6} {'call':<8} " + " ".join(f"{u[:10]:>10}" for u in units)
              + f" {'hand tlmm':>10}", split_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
