"""``python -m bench`` (``make bench``) finds its benchmarks."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_bench_lists_every_script():
    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    listed = done.stdout.split("benchmarks: ")[1].strip().split(", ")
    assert listed == sorted(p.stem for p in (REPO / "bench").glob("*.py") if not p.stem.startswith("_"))
    assert {"boards", "fidelity", "tlmm", "top"} <= set(listed)
    done = subprocess.run([sys.executable, "-m", "bench", "no_such_bench"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 2 and "unknown benchmark(s) ['no_such_bench']" in done.stderr
