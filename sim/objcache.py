"""Reuse of Verilator's runtime objects across builds (the ``OBJCACHE`` compiler wrapper).

Every Verilator build compiles the same runtime sources (``verilated.cpp``,
``verilated_vpi.cpp``, ``verilated_threads.cpp``, ``verilated_dpi.cpp`` of the wheel's
``include/`` folder) before the design's own C++; for a small unit that is most of its build
time. Verilator's makefile runs every compile as ``$(OBJCACHE) $(CXX) ...``, so
:func:`tellme.sim.rtl.run_cocotb` sets ``OBJCACHE`` to this module: a compile whose source lies
in Verilator's ``include/`` folder is looked up in a cache folder under a key made of the whole
command line (output path aside: flags, defines, optimisation level), the source's bytes, the
compiler's identity and the Verilator version; a miss compiles and stores the object (and its
``.d`` dependency file), a hit copies them. Any other compile (the design, cocotb's
``verilator.cpp`` which includes the design's header) runs unchanged. The runtime sources only
include headers of the same ``include/`` folder, which the Verilator version pins.

Usage (by make): ``python -m tellme.sim.objcache <cache dir> <compiler> <arguments...>``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["cache_key", "main"]


def _runtime_source(args: list[str], include: Path) -> Path | None:
    """The compiled source when it is one of Verilator's own runtime files, else None."""
    sources = [Path(a) for a in args if a.endswith((".cpp", ".cc")) and not a.startswith("-")]
    if len(sources) != 1 or "-c" not in args:
        return None
    source = sources[0].resolve()
    runtime = source.parent == include and source.name.startswith("verilated") and source.is_file()
    return source if runtime else None           # (a missing source: the compiler says so)


def _output(args: list[str]) -> str | None:
    return args[args.index("-o") + 1] if "-o" in args and args.index("-o") + 1 < len(args) else None


def cache_key(compiler: str, args: list[str], source: Path, verilator_version: str) -> str:
    """Key of one compile: every argument but the output path, the source's bytes, the
    compiler's resolved path, size and modification time, and the Verilator version."""
    digest = hashlib.sha256()
    resolved = Path(shutil.which(compiler) or compiler).resolve()
    stat = resolved.stat()
    out = _output(args)
    for part in (str(resolved), str(stat.st_size), str(stat.st_mtime_ns), verilator_version,
                 *(a for a in args if a != out and a != "-o")):
        digest.update(part.encode())
        digest.update(b"\0")
    digest.update(source.read_bytes())
    return digest.hexdigest()[:32]


def _store(path: Path, target: Path) -> None:
    """Copy ``path`` to ``target`` atomically (another build may be reading the cache)."""
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        shutil.copyfileobj(path.open("rb"), tmp)
    os.replace(tmp.name, target)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: python -m tellme.sim.objcache <cache dir> <compiler> <arguments...>", file=sys.stderr)
        return 2
    cache, compiler, args = Path(argv[1]), argv[2], argv[3:]
    from .toolchain import verilator_root
    include = (verilator_root() / "include").resolve()
    source = _runtime_source(args, include)
    out = _output(args)
    if source is None or out is None:
        return subprocess.call([compiler, *args])
    from importlib.metadata import version
    key = cache_key(compiler, args, source, version("verilator"))
    cache.mkdir(parents=True, exist_ok=True)
    obj, dep = cache / f"{key}.o", cache / f"{key}.d"
    out_dep = Path(out).with_suffix(".d")
    if obj.exists():
        shutil.copyfile(obj, out)
        if dep.exists():
            shutil.copyfile(dep, out_dep)
        return 0
    status = subprocess.call([compiler, *args])
    if status == 0 and Path(out).exists():
        if out_dep.exists():
            _store(out_dep, dep)
        _store(Path(out), obj)  # the object last: its presence means the entry is whole
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
