"""Verilog from Amaranth components, and the hand-written Verilog they may instantiate.

:func:`verilog_of` is the one conversion every consumer uses (the simulation runner, the
resource estimator, the generator). Hand-written modules live in :data:`VERILOG_LIBRARY`
(``hw/verilog/<module>.v``, one module per file named after it, shipped as package data of
``tellme.hw``); :func:`verilog_library_sources` finds the ones a converted design instantiates.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from amaranth.back import verilog
from amaranth.lib import wiring

__all__ = ["VERILOG_LIBRARY", "verilog_of", "verilog_library_sources", "without_zero_memory_init"]

#: Hand-written Verilog modules that designs instantiate through ``Instance`` (file = module name).
VERILOG_LIBRARY = Path(str(resources.files("tellme.hw") / "verilog"))

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def verilog_of(component: wiring.Component, name: str) -> str:
    """Return the Verilog text of ``component`` as a module called ``name``, with one port per
    signature member (see :mod:`tellme.sim.tb.streams` for how stream ports are named)."""
    if not _NAME_RE.match(name):
        raise ValueError(f"module name must be a plain Verilog identifier, not {name!r}")
    if not isinstance(component, wiring.Component):
        raise TypeError(f"expected an amaranth.lib.wiring.Component, not {component!r}")
    return verilog.convert(component, name=name)


def verilog_library_sources(verilog_text: str) -> list[Path]:
    """Return the files of :data:`VERILOG_LIBRARY` whose module ``verilog_text`` instantiates,
    directly or through another library module (an instance is a line starting with the module
    name, as Yosys writes it), in name order."""
    available = {path.stem: path for path in sorted(VERILOG_LIBRARY.glob("*.v"))}
    found: dict[str, Path] = {}
    pending = [verilog_text]
    while pending:
        text = pending.pop()
        for module, path in available.items():
            if module not in found and re.search(rf"^\s*\\?{re.escape(module)}\s", text, re.MULTILINE):
                found[module] = path
                pending.append(path.read_text())
    return [found[module] for module in sorted(found)]


#: An ``initial`` block that only sets memory words to zero, as Yosys writes it for an Amaranth
#: ``Memory(init=[])``: one ``name[i] = W'h0...;`` (or ``W'd0``) line per word.
_ZERO_INIT = re.compile(r"\n  initial begin\n(?:    \\?[\w$.]+ ?\[\d+\] = \d+'(?:h0+|d0);\n)+  end\n")


def without_zero_memory_init(verilog_text: str) -> tuple[str, int]:
    """``verilog_text`` without the all-zero ``initial`` blocks of its memories, and how many
    were removed. On the FPGA they change nothing (block RAM, UltraRAM, LUTRAM and flip-flops
    all configure to zero), but synthesis tools treat them as contents to load: Yosys spends a
    long time on a memory of 100 K words written out word by word and will not map an
    initialised memory to UltraRAM, which has no initial contents. The build tree and the
    resource estimate use this form; simulation keeps Amaranth's."""
    text, count = _ZERO_INIT.subn("\n", verilog_text)
    return text, count
