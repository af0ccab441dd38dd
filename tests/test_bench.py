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


def test_readme_cycle_model_tables_come_from_the_json():
    """The README's cycle-model tables are ``python -m bench.cycle_model --table`` of the
    committed JSON (so the numbers travel with the code and are never typed in)."""
    import json
    sys.path.insert(0, str(REPO))
    from bench.cycle_model import markdown_table
    results = json.loads((REPO / "bench" / "results" / "cycle_model.json").read_text())
    assert markdown_table(results) in (REPO / "README.md").read_text()
