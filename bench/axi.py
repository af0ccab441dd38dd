"""AXI read bandwidth benchmark: the AxiReadMaster on the DDR model (docs/architecture.md 1, 6).

Run with ``python -m bench.axi`` (or ``python -m bench`` for every benchmark). For every
(max_burst, max_outstanding) in {16, 64, 256} x {1, 2, 4} it builds
:class:`tellme.hw.ddr_model.DdrSystem` (four 128-bit AxiReadMasters and an AxiWriteMaster on
the simulation-only :class:`~tellme.hw.ddr_model.DdrModel`) under Verilator and runs the
cocotb test ``bench_read`` of :mod:`tellme.sim.tb.tb_ddr_model` on these scenarios (the model's
latency and bandwidth are run-time inputs, so one build serves them all):

- ``no_stall``: one port, a subordinate that never stalls (the model at its minimum latency of
  3 cycles, no bandwidth limit), one long read;
- ``one_port_ddr``: one port on the KV260 DDR (latency 40 cycles, 64 B/cycle);
- ``kv260_64``: all four ports at once, latency 40, 64 B/cycle shared (19.2 GB/s / 300 MHz);
- ``kv260_50``: the same at 50 B/cycle (~80 % DDR efficiency).

Each port reads one long command (``BEATS`` beats) with its data stream always ready. Bandwidth is
bytes moved / cycles from the first to the last data beat (``bytes_per_cycle``; the figure from
the command to the last beat, which adds the first latency, is in the JSON too), per port and in
total, compared with the port's peak (16 B/cycle: one 128-bit beat per cycle) and with the
shared limit. Target: >= 90 % of the peak for long bursts. Writes ``bench/results/axi.json``
(every number and assumption) and ``bench/results/axi.png``, and prints a table.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tellme.hw.ddr_model import MIN_LATENCY, DdrSystem

from . import CLOCK_MHZ, argument_parser, log

DATA_WIDTH = 128
BEAT = DATA_WIDTH // 8
PORTS = 4
SIZE = 1 << 20
BASE = 0x4000_0000
BEATS = 4096
BURSTS = (16, 64, 256)
OUTSTANDING = (1, 2, 4)
KV260_LATENCY = 40
SCENARIOS = [
    {"name": "no_stall", "ports": 1, "latency": MIN_LATENCY, "rate": 4096, "beats": 2 * BEATS},
    {"name": "one_port_ddr", "ports": 1, "latency": KV260_LATENCY, "rate": 64, "beats": 2 * BEATS},
    {"name": "kv260_64", "ports": PORTS, "latency": KV260_LATENCY, "rate": 64, "beats": BEATS},
    {"name": "kv260_50", "ports": PORTS, "latency": KV260_LATENCY, "rate": 50, "beats": BEATS},
]


def simulate(max_burst: int, max_outstanding: int, work: Path) -> dict:
    from tellme.sim.rtl import run_cocotb
    results = work / f"b{max_burst}_o{max_outstanding}.json"
    start = time.monotonic()
    result = run_cocotb(
        DdrSystem(ports=PORTS, data_width=DATA_WIDTH, size_bytes=SIZE, base=BASE,
                  max_burst=max_burst, max_outstanding=max_outstanding),
        name="ddr_system", test_module="tellme.sim.tb.tb_ddr_model", testcase="bench_read",
        parameters={"size": SIZE, "base": BASE, "ports": PORTS, "data_width": DATA_WIDTH,
                    "results": str(results), "scenarios": SCENARIOS},
        timeout=1800)
    measured = json.loads(results.read_text())["scenarios"]
    log(f"[sim] max_burst={max_burst} max_outstanding={max_outstanding}: {time.monotonic() - start:.0f} s "
        f"(build {result.build_seconds:.0f} s, simulation {result.sim_seconds:.0f} s)")
    out = {}
    for sc in SCENARIOS:
        r = measured[sc["name"]]
        limit = min(sc["rate"], sc["ports"] * BEAT)
        per_port = r["bytes_per_cycle"] / sc["ports"]
        out[sc["name"]] = {
            **r,
            "per_port_mean_bytes_per_cycle": round(per_port, 3),
            "percent_of_port_peak": round(100 * per_port / BEAT, 1),
            "percent_of_available": round(100 * r["bytes_per_cycle"] / limit, 1),
            "available_bytes_per_cycle": limit,
            "gb_per_s_at_300mhz": round(r["bytes_per_cycle"] * CLOCK_MHZ * 1e6 / 1e9, 2),
        }
    return {"wall_seconds": {"build": round(result.build_seconds, 1), "simulation": round(result.sim_seconds, 1)},
            "scenarios": out}


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SCENARIOS), figsize=(4.2 * len(SCENARIOS), 3.8), sharey=False)
    width = 0.8 / len(OUTSTANDING)
    for ax, sc in zip(axes, SCENARIOS):
        for k, outstanding in enumerate(OUTSTANDING):
            values = [results["configs"][f"b{b}_o{outstanding}"]["scenarios"][sc["name"]]["bytes_per_cycle"]
                      for b in BURSTS]
            xs = [i + (k - (len(OUTSTANDING) - 1) / 2) * width for i in range(len(BURSTS))]
            ax.bar(xs, values, width, label=f"{outstanding} outstanding")
        limit = min(sc["rate"], sc["ports"] * BEAT)
        ax.axhline(limit, color="k", lw=0.8, ls="--", label="limit (port peak or shared DDR rate)")
        ax.axhline(0.9 * limit, color="grey", lw=0.8, ls=":", label="90 % of the limit")
        ax.set_xticks(range(len(BURSTS)), [str(b) for b in BURSTS])
        ax.set_xlabel("max burst (beats)")
        ax.set_title(f"{sc['name']}: {sc['ports']} port(s), lat {sc['latency']}, "
                     f"{'no limit' if sc['rate'] >= 1000 else str(sc['rate']) + ' B/c'}", fontsize=9)
        ax.set_ylim(0, limit * 1.15)
    axes[0].set_ylabel("read bandwidth (bytes/cycle)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("AxiReadMaster (128 bit) on the DDR model: bytes/cycle, first to last beat", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(results: dict) -> None:
    header = f"{'burst':>5} {'out':>3} | " + " | ".join(f"{sc['name']:>22}" for sc in SCENARIOS)
    log(header)
    log(f"{'':>5} {'':>3} | " + " | ".join(f"{'B/cycle  %port  %avail':>22}" for _ in SCENARIOS))
    log("-" * len(header))
    for b in BURSTS:
        for o in OUTSTANDING:
            row = results["configs"][f"b{b}_o{o}"]["scenarios"]
            cells = [f"{row[sc['name']]['bytes_per_cycle']:7.2f} {row[sc['name']]['percent_of_port_peak']:6.1f} "
                     f"{row[sc['name']]['percent_of_available']:7.1f}" for sc in SCENARIOS]
            log(f"{b:>5} {o:>3} | " + " | ".join(f"{c:>22}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("axi", __doc__)
    parser.add_argument("--jobs", type=int, default=2, help="simulations in parallel")
    args = parser.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    configs = [(b, o) for b in BURSTS for o in OUTSTANDING]
    with tempfile.TemporaryDirectory(prefix="bench-axi-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        futures = {(b, o): pool.submit(simulate, b, o, Path(tmp)) for b, o in configs}
        measured = {f"b{b}_o{o}": futures[b, o].result() for b, o in configs}
    results = {
        "benchmark": "AxiReadMaster read bandwidth on the DDR model",
        "assumptions": {
            "data_width_bits": DATA_WIDTH, "port_peak_bytes_per_cycle": BEAT, "ports": PORTS,
            "clock_mhz": CLOCK_MHZ,
            "kv260_ddr": "19.2 GB/s peak / 300 MHz = 64 B/cycle shared by the four HP ports; "
                         "50 B/cycle models ~80 % efficiency",
            "ddr_latency_cycles": KV260_LATENCY,
            "no_stall": f"the model at its minimum latency ({MIN_LATENCY} cycles from AR to the first beat) "
                        "with no bandwidth limit",
            "ddr_model": "tellme.hw.ddr_model.DdrModel: fixed latency from AR handshake to first beat, token "
                         "bucket shared by all ports, round-robin; bursts queued per port (8 deep)",
            "traffic": "each active port reads one long command (beats_per_port beats) at consecutive "
                       "addresses; data streams always ready; commands offered at once",
            "bytes_per_cycle": "bytes moved / cycles from the first to the last data beat (any port)",
            "bytes_per_cycle_total": "bytes moved / cycles from the commands to the last data beat",
            "scenarios": SCENARIOS,
        },
        "configs": measured,
        "wall_seconds": round(time.monotonic() - start, 1),
    }
    long_bursts = [measured[f"b256_o{o}"]["scenarios"]["no_stall"]["percent_of_port_peak"] for o in OUTSTANDING]
    results["target"] = {"goal": ">= 90 % of the port peak for long bursts (256 beats)",
                         "no_stall_percent_of_peak_b256": long_bursts,
                         "met": all(p >= 90 for p in long_bursts)}
    json_path = out_dir / "axi.json"
    json_path.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, out_dir / "axi.png")
    print_table(results)
    log(f"target (>= 90 % of peak, 256-beat bursts, no stalls): {long_bursts} -> "
        f"{'met' if results['target']['met'] else 'NOT met'}")
    log(f"wrote {json_path} and {out_dir / 'axi.png'} in {results['wall_seconds']:.0f} s")
    return 0 if results["target"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
