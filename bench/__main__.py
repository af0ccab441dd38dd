"""``python -m bench [name ...]``: run every benchmark (or the named ones) in turn.

Each runs as ``python -m bench.<name>`` in its own process from the repository root, with its
output passed through; the exit status is non-zero if any benchmark failed.
"""

from __future__ import annotations

import subprocess
import sys
import time

from . import BENCH_DIR, RESULTS_DIR, benchmarks


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    available = benchmarks()
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        print(f"\nbenchmarks: {', '.join(available)}")
        return 0
    unknown = [name for name in argv if name not in available]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {available}", file=sys.stderr)
        return 2
    selected = argv or available
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    status = {}
    for index, name in enumerate(selected, 1):
        print(f"=== bench {index}/{len(selected)}: {name} ===", flush=True)
        start = time.monotonic()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}"], cwd=BENCH_DIR.parent)
        status[name] = (code, time.monotonic() - start)
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in "
              f"{status[name][1]:.0f} s ===", flush=True)
    failed = [name for name, (code, _) in status.items() if code != 0]
    print(f"results in {RESULTS_DIR}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
