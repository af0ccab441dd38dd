"""Formal equivalence of a design with a reference netlist, for refactors that must not change
behaviour (Yosys ``equiv_make`` / ``equiv_simple`` / ``equiv_induct`` / ``equiv_status -assert``).

A refactor of a unit in ``hw/`` keeps the Verilog of the design before the change (its
*reference*, written by :func:`write_reference` from the unit at the revision before the
refactor, committed under ``tests/equiv/``) and proves the current design equal to it
(:func:`prove_equivalent`; ``tests/test_equivalence.py`` runs the proofs). Both netlists are
read, their processes lowered, their hierarchy flattened and their memories mapped to flip-flops
(so only small parameter sets are practical); ``equiv_make`` pairs the signals of equal name
(but for Amaranth's numbered temporaries such as ``$12`` or ``full$3``, whose numbers shift),
``equiv_simple`` proves what follows from the paired signals in one cycle and
``equiv_induct`` proves the rest by induction over the paired state. Every port must pair: a
renamed port or a register that moved into a submodule (its flattened name changes, e.g.
``full`` -> ``banks.full``) is renamed in the current netlist first (``renames``, current name ->
reference name). The proof holds for every input sequence from any state in which the paired
registers agree, so it covers reset as well.
"""

from __future__ import annotations

import gzip
import re
import subprocess
import tempfile
from pathlib import Path

from amaranth.lib import wiring

from .estimate import YosysError, yosys_command
from .verilog import verilog_library_sources, verilog_of

__all__ = ["EquivalenceError", "IDENTICAL", "equivalence_script", "prove_equivalent", "write_reference",
           "read_reference", "strip_sources"]

TOP = "top"
#: What :func:`prove_equivalent` returns for a netlist identical to its reference.
IDENTICAL = "identical netlist (Verilog equal to the reference but for source locations)"
_SRC = re.compile(r'\(\* src = "[^"]*" \*\) ?')


class EquivalenceError(AssertionError):
    """The current design is not proven equivalent to its reference; the message ends with the
    unproven signals from the Yosys log."""


def _prepare(files: list[str], module: str, renames: dict[str, str]) -> list[str]:
    lines = [f"read_verilog {f}" for f in files]
    lines += [f"hierarchy -top {TOP}", "proc", "flatten", "memory -nomap", "memory_map", "opt_clean",
              # Amaranth's numbered names (``$12``, ``full$3``) differ between versions of a
              # design: never pair them.
              "rename -hide w:*$*"]
    if renames:
        lines.append(f"cd {TOP}")
        lines += [f"rename {_escape(old)} {_escape(new)}" for old, new in renames.items()]
        lines.append("cd ..")
    lines += [f"rename {TOP} {module}", f"design -stash {module}"]
    return lines


def _escape(name: str) -> str:
    # Yosys reads a name with dots or brackets as given when it starts with a backslash.
    return "\\" + name


def equivalence_script(gold_files: list[str], gate_files: list[str], *, renames: dict[str, str] | None = None,
                       seq: int = 4) -> str:
    """The Yosys script that proves module ``top`` of ``gate_files`` equal to module ``top`` of
    ``gold_files`` (file names relative to the directory Yosys runs in)."""
    lines = _prepare(gold_files, "gold", {}) + _prepare(gate_files, "gate", renames or {})
    lines += [
        "design -copy-from gold -as gold gold",
        "design -copy-from gate -as gate gate",
        "equiv_make gold gate equiv",
        "hierarchy -top equiv",
        "equiv_simple",
        f"equiv_induct -seq {seq}",
        "equiv_status -assert",
        "",
    ]
    return "\n".join(lines)


def write_reference(component: wiring.Component, path: Path) -> Path:
    """Write the Verilog of ``component`` (module ``top``, without source locations) to ``path``
    (gzip-compressed if it ends in ``.gz``): the reference that later versions of the unit are
    proven equal to."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = strip_sources(verilog_of(component, TOP)).encode()
    if path.suffix == ".gz":
        # mtime 0: the same design gives the same bytes
        text = gzip.compress(text, mtime=0)
    path.write_bytes(text)
    return path


def read_reference(path: Path) -> str:
    """The Verilog text of a reference (``.v``, or gzip-compressed ``.v.gz``)."""
    path = Path(path)
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode()


def strip_sources(verilog_text: str) -> str:
    """``verilog_text`` without its ``(* src = "file:line" *)`` attributes (they name the checkout
    the reference was written in)."""
    return _SRC.sub("", verilog_text)


def prove_equivalent(component: wiring.Component, reference: Path, *, renames: dict[str, str] | None = None,
                     seq: int = 4, timeout: float = 600, identical: bool = False) -> str:
    """Prove ``component`` equivalent to the Verilog in ``reference`` (module ``top``); return the
    Yosys log (it ends with ``equiv_status``'s count of proven cells). Raise
    :class:`EquivalenceError` naming the unproven signals otherwise.

    With ``identical=True`` a netlist whose Verilog equals the reference but for source
    locations is accepted as it is (returns :data:`IDENTICAL`) without running Yosys: for units
    whose floating-point datapaths make a SAT proof take too long, a refactor must leave their
    netlist unchanged."""
    gate = verilog_of(component, TOP)
    gold = read_reference(reference)
    if identical and strip_sources(gate) == strip_sources(gold):
        return IDENTICAL
    with tempfile.TemporaryDirectory(prefix="tellme-equiv-") as tmp:
        work = Path(tmp)
        # (Relative paths: YoWASP sees only the directory it runs in.)
        gold_files, gate_files = [], []
        for text, files, tag in ((gold, gold_files, "gold"), (gate, gate_files, "gate")):
            (work / f"{tag}.v").write_text(text)
            files.append(f"{tag}.v")
            for lib in verilog_library_sources(text):
                (work / f"{tag}_{lib.name}").write_text(lib.read_text())
                files.append(f"{tag}_{lib.name}")
        (work / "script.ys").write_text(equivalence_script(gold_files, gate_files, renames=renames, seq=seq))
        try:
            done = subprocess.run([*yosys_command(), "-l", "yosys.log", "-s", "script.ys"], cwd=work,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise YosysError(f"equivalence proof against {reference} timed out after {timeout:g} s") from None
        log = (work / "yosys.log").read_text(errors="replace") if (work / "yosys.log").exists() else done.stdout
    if done.returncode != 0:
        unproven = [line.strip() for line in log.splitlines() if "Unproven $equiv" in line]
        tail = "\n".join(unproven[:40]) or "\n".join((log + done.stderr).splitlines()[-40:])
        raise EquivalenceError(f"not proven equivalent to {reference}:\n{tail}")
    if "Equivalence successfully proven!" not in log:
        raise EquivalenceError(f"no equiv_status verdict in the Yosys log of {reference}")
    return log
