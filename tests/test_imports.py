"""The direction of imports between the project's layers (README "Layout", docs section 0).

Every ``import`` and ``from ... import`` in every module of the ``tellme`` package, at any depth
(imports inside functions count too), is resolved to a ``tellme.*`` module name and checked
against :data:`ALLOWED`: a module may import its own layer and the layers listed for it, never a
layer above. The folders are read through pyproject.toml's package-dir map, so a new folder or
module is covered without editing this test.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Layers, bottom first. A module belongs to the first layer whose prefix matches its name.
LAYERS = [
    ("errors", ("tellme.errors",)),
    ("contract", ("tellme.contract", "tellme.config", "tellme.weights")),
    ("tools", ("tellme.sim.toolchain",)),
    ("hw", ("tellme.hw",)),
    ("models", ("tellme.sim.golden", "tellme.sim.reference")),
    ("boards", ("tellme.boards",)),
    ("gen", ("tellme.gen",)),
    ("driver", ("tellme.runtime",)),
    ("harness", ("tellme.sim",)),
    ("host", ("tellme",)),
]

#: layer -> the layers it may import (besides itself).
ALLOWED = {
    "errors": set(),
    "contract": {"errors"},
    "tools": {"errors"},
    "hw": {"errors", "contract"},
    "models": {"errors", "contract"},
    "boards": {"errors", "contract"},
    "gen": {"errors", "contract", "tools", "hw", "boards"},
    "driver": {"errors", "contract", "tools", "gen"},
    "harness": {"errors", "contract", "tools", "hw", "models", "boards", "gen", "driver"},
    "host": {"errors", "contract", "tools", "hw", "models", "boards", "gen", "driver", "harness"},
}


def layer_of(module: str) -> str:
    for layer, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return layer
    raise AssertionError(f"{module} belongs to no layer")


def package_modules() -> dict[str, Path]:
    """Module name -> file, for every .py file of the installed package's folders."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    modules = {}
    for package in tool["packages"]:
        folder = REPO / _folder_of(package, tool["package-dir"])
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            modules[name] = path
    return modules


def _folder_of(package: str, package_dir: dict[str, str]) -> str:
    if package in package_dir:
        return package_dir[package]
    parent, _, leaf = package.rpartition(".")
    return f"{_folder_of(parent, package_dir)}/{leaf}"


def imported_modules(name: str, path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every tellme import in the file."""
    is_package = path.stem == "__init__"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from tellme.contract import fp32` imports the module tellme.contract.fp32.
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return [(line, mod) for line, mod in found if mod == "tellme" or mod.startswith("tellme.")]


MODULES = package_modules()


def test_every_module_is_in_a_layer():
    assert "tellme.contract.fp32" in MODULES and "tellme.hw.tlmm" in MODULES
    for name in MODULES:
        layer_of(name)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_down(name):
    own = layer_of(name)
    wrong = []
    for line, target in imported_modules(name, MODULES[name]):
        # `from .x import Name` names a module or an attribute: judge by the longest module prefix.
        while target not in MODULES and "." in target:
            target = target.rpartition(".")[0]
        other = layer_of(target)
        if other != own and other not in ALLOWED[own]:
            wrong.append(f"{MODULES[name].relative_to(REPO)}:{line} imports {target} "
                         f"({own} may import {sorted(ALLOWED[own]) or 'nothing else'}, not {other})")
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_an_upward_import(tmp_path):
    """The resolver sees relative, absolute and function-level imports (so the test can fail)."""
    probe = tmp_path / "probe.py"
    probe.write_text("from ..sim import golden\n\ndef f():\n    import tellme.gen.image\n")
    targets = [t for _, t in imported_modules("tellme.hw.probe", probe)]
    assert targets == ["tellme.sim.golden", "tellme.gen.image"]
    assert "models" not in ALLOWED[layer_of("tellme.hw.probe")]
