"""The runtime object cache Verilator's makefile runs every compile through (sim/objcache.py):
Verilator's own runtime sources are compiled once per key and copied afterwards; anything
else, and any change of flags or source, compiles."""

import os
import stat
from pathlib import Path

import pytest

from tellme.sim import objcache, toolchain


@pytest.fixture
def fake_toolchain(tmp_path, monkeypatch):
    """A Verilator root with one runtime source and a compiler that copies its source to the
    object (and writes a .d file), counting its runs."""
    root = tmp_path / "verilator"
    (root / "include").mkdir(parents=True)
    runtime = root / "include" / "verilated_fake.cpp"
    runtime.write_text("int runtime;\n")
    counter = tmp_path / "runs"
    compiler = tmp_path / "fakecc"
    compiler.write_text(
        "#!/bin/sh\nset -e\n"
        f'echo x >> "{counter}"\n'
        'case "$*" in *-DFAIL*) exit 1;; esac\n'
        'while [ "$1" != "-o" ]; do shift; done; out="$2"; shift 2\n'
        'for a in "$@"; do src="$a"; done\n'
        'cat "$src" > "$out"; echo "$out: $src" > "${out%.o}.d"\n')
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(toolchain, "verilator_root", lambda: root)
    work = tmp_path / "build"
    work.mkdir()
    monkeypatch.chdir(work)

    def runs() -> int:
        return len(counter.read_text().splitlines()) if counter.exists() else 0

    return {"cache": tmp_path / "cache", "compiler": str(compiler), "runtime": runtime, "runs": runs,
            "work": work}


def _compile(t, source, *flags):
    return objcache.main(["objcache", str(t["cache"]), t["compiler"], *flags, "-c", "-o", "out.o", str(source)])


def test_runtime_object_compiled_once_then_copied(fake_toolchain):
    t = fake_toolchain
    assert _compile(t, t["runtime"], "-Os", "-DVM_TRACE=0") == 0
    assert t["runs"]() == 1
    first = Path("out.o").read_bytes()
    os.remove("out.o")
    os.remove("out.d")
    assert _compile(t, t["runtime"], "-Os", "-DVM_TRACE=0") == 0
    assert t["runs"]() == 1, "the second compile of the same source and flags must hit the cache"
    assert Path("out.o").read_bytes() == first and Path("out.d").exists()


def test_other_flags_or_source_compile_again(fake_toolchain):
    t = fake_toolchain
    _compile(t, t["runtime"], "-Os", "-DVM_TRACE=0")
    _compile(t, t["runtime"], "-Os", "-DVM_TRACE=1")                  # other defines
    assert t["runs"]() == 2
    t["runtime"].write_text("int runtime_changed;\n")                 # other source bytes
    _compile(t, t["runtime"], "-Os", "-DVM_TRACE=0")
    assert t["runs"]() == 3
    assert Path("out.o").read_text() == "int runtime_changed;\n"


def test_design_sources_are_never_cached(fake_toolchain):
    t = fake_toolchain
    design = t["work"] / "Vtop__ALL.cpp"
    design.write_text("int design;\n")
    for _ in range(2):
        assert _compile(t, design, "-Os") == 0
    assert t["runs"]() == 2
    assert not t["cache"].exists() or not list(t["cache"].glob("*.o"))


def test_a_failed_compile_is_not_stored(fake_toolchain):
    t = fake_toolchain
    assert _compile(t, t["runtime"], "-Os", "-DFAIL") != 0
    assert not t["cache"].exists() or not list(t["cache"].glob("*.o"))
    assert _compile(t, t["runtime"].with_name("verilated_missing.cpp"), "-Os") != 0
