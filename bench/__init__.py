"""tellme benchmarks: ``python -m bench`` runs every benchmark script in this folder in turn.

A benchmark is a module ``bench/<name>.py`` with a ``main(argv) -> int`` (run alone with
``python -m bench.<name>``); it writes its numbers and every assumption behind them to
``bench/results/<name>.json`` (plus plots). Modules named ``tb_*.py`` are cocotb testbenches
the benchmarks start in the simulator, not benchmarks.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BENCH_DIR", "RESULTS_DIR", "benchmarks"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def benchmarks() -> list[str]:
    """Names of the benchmark modules in this folder, sorted."""
    return sorted(path.stem for path in BENCH_DIR.glob("*.py")
                  if not path.stem.startswith(("_", "tb_")))
