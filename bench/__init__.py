"""tellme benchmarks: ``python -m bench`` runs every benchmark script in this folder in turn.

A benchmark is a module ``bench/<name>.py`` with a ``main(argv) -> int`` (run alone with
``python -m bench.<name>``); it writes its numbers and every assumption behind them to
``bench/results/<name>.json`` (plus plots). The cocotb testbenches the benchmarks start in the
simulator live with all the others in ``sim/tb/`` (``tellme.sim.tb.tb_*``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["BENCH_DIR", "RESULTS_DIR", "CLOCK_MHZ", "benchmarks", "log", "log_table", "argument_parser",
           "results_file", "reuse_or_run", "source_commit"]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
#: The clock cycle counts are converted to time at (the KV260 target).
CLOCK_MHZ = 300.0


def source_commit() -> str:
    """The commit a result was measured at: HEAD's short hash, and the design and simulation
    sources (hw/, gen/, sim/, tellme/) with uncommitted changes in the tree it ran from
    ("unknown" outside a git checkout)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True).stdout
    try:
        changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
                   if line[3:].startswith(("hw/", "gen/", "sim/", "tellme/"))]
        head = git("rev-parse", "--short", "HEAD").strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (f" with uncommitted changes to {', '.join(changed)}" if changed else "")


def benchmarks() -> list[str]:
    """The benchmark scripts' names: every module ``bench/<name>.py`` (``python -m bench`` runs
    them in this order)."""
    return sorted(p.stem for p in BENCH_DIR.glob("*.py") if not p.stem.startswith("_"))


def log(message: str) -> None:
    print(message, flush=True)


def log_table(title: str, header: str, rows: Iterable[str]) -> None:
    """A blank line, ``title``, the column ``header`` and one line per row."""
    for line in ("", title, header, *rows):
        log(line)


def argument_parser(name: str, doc: str) -> argparse.ArgumentParser:
    """The command line of ``python -m bench.<name>``: described by the first paragraph of its
    ``doc``, with ``--out`` (the results directory, default ``bench/results``)."""
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=doc.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS_DIR), help="results directory")
    return parser


def results_file(out: str | Path, name: str) -> tuple[Path, dict]:
    """Create the directory ``out``; return its ``<name>.json`` and what that holds from an
    earlier run (``{}`` if nothing), for the parts a run keeps instead of re-measuring."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    return path, json.loads(path.read_text()) if path.exists() else {}


def reuse_or_run(results: dict, key: str, previous: dict, *, skip: bool, run: Callable[[], Any], wall: dict,
                 wall_key: str, failure: str | None = None) -> None:
    """Fill in one part of a benchmark's ``results``, ``results[key]``: with ``skip``, the earlier
    run's ``previous[key]`` (left out if it has none); else ``run()``, its wall time stored as
    ``wall[wall_key]``. With ``failure`` (what failed, e.g. ``"synthesis"``), an exception from
    ``run`` is logged and the part becomes ``{"skipped": ...}`` so that the other parts are still
    written."""
    if skip:
        if key in previous:
            results[key] = previous[key]
        return
    start = time.monotonic()
    try:
        results[key] = run()
    except Exception as error:
        if failure is None:
            raise
        log(f"{failure} failed: {str(error)[:2000]}")
        results[key] = {"skipped": f"{failure} failed: {str(error)[:400]}"}
    wall[wall_key] = round(time.monotonic() - start, 1)
