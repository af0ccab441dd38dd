"""README and docs/architecture.md describe the tree as it is.

Every repository path the documents name in `code font` (a word with a slash, e.g.
`hw/tlmm.py`, `bench/results/tlmm.json`, `sim/tb/`) must exist, unless the document marks it
`path` (planned), in which case it must not exist yet (so the mark is removed when the file
lands). Every dotted `tellme.x.y` name (and `golden.f`, `formats.f`, `fp32.f` for the golden
model's and the contract's functions) must be an importable module, or an attribute of one.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ["README.md", "docs/architecture.md"]
# A path in code font: starts at a top-level folder of the repository, no placeholders.
PATH = re.compile(r"`((?:[A-Za-z_.][\w.-]*/)+[\w.-]*)`(\s*\(planned\))?")
MODULE = re.compile(r"`((?:tellme|golden|formats|fp32)(?:\.\w+)+)`")
# Short names the documents use for the contract's and golden model's functions.
ALIASES = {"golden": "tellme.sim.golden", "formats": "tellme.contract.formats", "fp32": "tellme.contract.fp32"}
# Dotted names that are file names of a build (`tellme.bit`, `tellme.bit.bin`), not modules.
FILE_SUFFIXES = {"bit", "bin", "dtbo", "dtsi", "bif", "hwh", "img", "v", "tcl", "xdc", "json", "sh"}


def named_paths(text: str) -> list[tuple[str, bool]]:
    found = []
    for match in PATH.finditer(text):
        path = match.group(1)
        if path.startswith("."):
            continue  # made by set-up (.venv/), not part of the tree
        if not (REPO / path.split("/")[0]).is_dir() and path.split("/")[0] not in ("gen", "hw", "sim", "boards"):
            continue  # not a path of this repository (e.g. a board's file system)
        found.append((path, bool(match.group(2))))
    return found


@pytest.mark.parametrize("document", DOCUMENTS)
def test_named_paths_exist(document):
    text = (REPO / document).read_text()
    paths = named_paths(text)
    assert len(paths) > 10, "the path pattern found almost nothing: is it still right?"
    missing = [p for p, planned in paths if not planned and not (REPO / p).exists()]
    landed = [p for p, planned in paths if planned and (REPO / p).exists()]
    assert not missing, f"{document} names paths that do not exist: {sorted(set(missing))}"
    assert not landed, f"{document} marks as planned paths that exist now: {sorted(set(landed))}"


@pytest.mark.parametrize("document", DOCUMENTS)
def test_named_modules_exist(document):
    text = (REPO / document).read_text()
    names = sorted(n for n in set(MODULE.findall(text)) if n.rpartition(".")[2] not in FILE_SUFFIXES)
    unresolved = []
    for name in names:
        head, _, rest = name.partition(".")
        module, attrs = f"{ALIASES.get(head, head)}.{rest}", []
        while True:
            try:
                obj = importlib.import_module(module)
                break
            except ModuleNotFoundError:
                module, _, attr = module.rpartition(".")
                attrs.insert(0, attr)
        try:
            for attr in attrs:
                obj = getattr(obj, attr)
        except AttributeError:
            unresolved.append(name)
    assert not unresolved, f"{document} names modules or attributes that do not exist: {unresolved}"


def test_the_check_sees_a_missing_path():
    assert named_paths("see `hw/no_such_unit.py` and `gen/top.py` (planned)") == [
        ("hw/no_such_unit.py", False), ("gen/top.py", True)]
