"""``tellme explore`` on the KV260 and the ZCU104 with bitnet-b1.58-large: the resource model's
calibration, the sweep's counts, the Pareto front and the chosen point of each board
(``python -m bench.explore [--jobs N] [--quick] [--table]``).

The resources are an analytic estimate calibrated on Yosys (synth_xilinx -family xcup) points
(``gen/explore.py``: its error against every point is in the JSON), not a synthesis of each
configuration; the speed is the cycle model's (``gen/cycles.py``). Writes
``bench/results/explore.json`` and ``explore.png`` (decode tokens/s against LUTs of every
configuration that fits, the front highlighted). ``--table`` prints the README's table of the
committed JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time

from tellme.config import model_preset
from tellme.gen.explore import DEFAULT_GRID, LABEL, QUICK_GRID, explore, fit_model, hardware_summary, report

from . import argument_parser, log, results_file, source_commit

BOARDS = ("kv260", "zcu104")
PRESET = "bitnet-b1.58-large"


def _compact(point: dict) -> dict:
    """A front point without its full hardware file and utilisation (the JSON keeps the swept
    fields; the rest are the board's hardware file's, in ``base_hardware``), rounded."""
    def rounded(v):
        if isinstance(v, float):
            return float(f"{v:.5g}")
        if isinstance(v, dict):
            return {k: rounded(x) for k, x in v.items()}
        return v
    return {k: rounded(v) for k, v in point.items() if k not in ("hardware_config", "utilisation_percent")}


def dumps(results: dict) -> str:
    """``results`` as indented JSON with each entry of a ``front`` or calibration ``points`` list
    on one line (the file stays readable and diffs stay small)."""
    rows: list[str] = []

    def mark(obj):
        if isinstance(obj, dict):
            return {k: ([_token(rows, x) for x in v] if k in ("front", "points") and isinstance(v, list) else mark(v))
                    for k, v in obj.items()}
        return obj
    text = json.dumps(mark(results), indent=1)
    for i, row in enumerate(rows):
        text = text.replace(f'"@@row{i}@@"', row, 1)
    return text + "\n"


def _token(rows: list[str], obj) -> str:
    rows.append(json.dumps(obj, separators=(", ", ": ")))
    return f"@@row{len(rows) - 1}@@"


def representatives(r: dict) -> list[tuple[str, dict]]:
    """The front points the README shows for a board: the fastest decode, the shortest time to
    first token, the chosen one and the smallest (each once)."""
    front = r["front"]
    rows = [("fastest decode", min(front, key=lambda p: (-p["decode_tok_s"], p["ttft_s"], p["resources"]["lut_equiv"]))),
            ("shortest TTFT", min(front, key=lambda p: (p["ttft_s"], -p["decode_tok_s"], p["resources"]["lut_equiv"]))),
            (f"chosen ({r['pick']})", next(p for p in front if p["hardware"] == r["chosen"]["hardware"])),
            ("fewest LUTs", min(front, key=lambda p: (p["resources"]["lut_equiv"], -p["decode_tok_s"])))]
    out, seen = [], []
    for label, p in rows:
        if p["hardware"] in seen:
            out[seen.index(p["hardware"])] = (out[seen.index(p["hardware"])][0] + ", " + label, p)
        else:
            seen.append(p["hardware"])
            out.append((label, p))
    return out


def markdown_table(results: dict) -> str:
    """The README's table: per board the front's fastest decode, shortest TTFT, chosen and
    smallest points."""
    lines = ["| board | point | decode tok/s, ctx 128 / 1024 | TTFT 128 tokens | LUT (analytic) | FF | DSP | BRAM36 | "
             "URAM | hardware |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for board, r in results["boards"].items():
        cap = r["capacity"]
        rows = representatives(r)
        ref = r.get("board_hardware")
        if ref and "resources" in ref:
            rows.append(("its hardware file" + (" (does not fit)" if ref["problems"] else ""), ref))
        for label, p in rows:
            res = p["resources"]
            lines.append(f"| {board} | {label} | {p['decode_tok_s_at']['128']:.1f} / {p['decode_tok_s_at']['1024']:.1f} | "
                         f"{1e3 * p['ttft_s']:.0f} ms | {res['lut_equiv']:,} ({100 * res['lut_equiv'] / cap['lut']:.0f} %) | "
                         f"{res['ff']:,} | {res['dsp']} | {res['bram36']:g} | {res['uram']} | "
                         f"{hardware_summary(p['hardware'])} |")
    return "\n".join(lines)


def plot(results: dict, points: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm
    fig, axes = plt.subplots(1, len(results["boards"]), figsize=(6.2 * len(results["boards"]), 4.8), squeeze=False)
    for ax, (board, r) in zip(axes[0], results["boards"].items()):
        pts = points.get(board, [])
        if pts:
            ax.scatter([p[0] / 1e3 for p in pts], [p[1] for p in pts], s=4, c="lightgrey", label="fits the board")
        front = r["front"]
        sc = ax.scatter([p["resources"]["lut_equiv"] / 1e3 for p in front], [p["decode_tok_s"] for p in front],
                        s=18, c=[1e3 * p["ttft_s"] for p in front], cmap="viridis_r", norm=LogNorm(),
                        edgecolors="k", linewidths=0.3,
                        label="Pareto front", zorder=3)
        fig.colorbar(sc, ax=ax, label="time to first token, 128 tokens (ms, log scale)")
        ch = r["chosen"]
        ax.scatter([ch["resources"]["lut_equiv"] / 1e3], [ch["decode_tok_s"]], marker="*", s=220, c="red",
                   edgecolors="k", zorder=4, label=f"chosen ({r['pick']})")
        ax.axvline(r["capacity"]["lut"] / 1e3, color="k", lw=1, ls="--", label="board's LUTs")
        ax.set(xlabel="LUT sites, thousands (analytic estimate calibrated on Yosys)",
               ylabel="decode tokens/s at context 128 (cycle model)",
               title=f"{results['preset']} on {board}: {r['counts']['evaluated']:,} fitting configurations")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("explore", __doc__)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--quick", action="store_true", help="the quick grid (a check of the bench, not its results)")
    parser.add_argument("--table", action="store_true", help="print the README's table of the committed JSON")
    args = parser.parse_args(argv)
    path, previous = results_file(args.out, "explore")
    if args.table:
        if not previous:
            print(f"{path}: no results yet (python -m bench.explore)", file=sys.stderr)
            return 1
        print(markdown_table(previous))
        return 0
    start = time.monotonic()
    model = model_preset(PRESET)
    rmodel = fit_model()
    log(rmodel.table())
    grid = QUICK_GRID if args.quick else DEFAULT_GRID
    boards, points = {}, {}
    for board in BOARDS:
        r = explore(model, board, grid=grid, jobs=args.jobs, resource_model=rmodel, keep_points=True)
        log(report(r, rows=10))
        points[board] = r.pop("points")
        boards[board] = {"counts": r["counts"], "capacity": r["capacity"], "base_hardware": r["base_hardware"],
                         "front": [_compact(p) for p in r["front"]], "pick": r["pick"], "chosen": r["chosen"],
                         "board_hardware": _compact(r["board_hardware"]),
                         "seconds": r["seconds"], "jobs": r["jobs"]}
    results = {
        "benchmark": "explore", "preset": PRESET, "commit": source_commit(), "resources_label": LABEL,
        "grid": grid.to_dict(), "quick": args.quick,
        "calibration": {"summary": rmodel.summary(), "points": rmodel.errors, "coefficients": rmodel.coefficients()},
        "boards": boards,
        "assumptions": r["assumptions"],
        "wall_seconds": round(time.monotonic() - start, 1),
    }
    path.write_text(dumps(results))
    png = path.with_suffix(".png")
    plot(results, points, png)
    log(f"\nwrote {path} and {png}")
    log(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
