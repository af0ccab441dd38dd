"""``tellme deploy`` and the board driver (``deploy/run_on_board.py``) against a stand-in board:
a folder as the board's file system, this machine's Python with the stand-in ``pynq`` over the
behavioural model, and none of the development packages (Amaranth, cocotb, torch ...)."""

import json
import shutil
import subprocess
import sys

import pytest

from tellme.cli import main
from tellme.config import hardware_preset
from tellme.deploy import BOARD_ABSENT_PACKAGES, DeployError, LocalHost, board_generate, deploy, parse_host
from tellme.sim.backends import generate, make_backend
from tellme.weights import random_weights
from tellme.config import model_preset


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """A kv260 build of the tiny preset, with stand-ins for Vivado's tellme.bit and tellme.hwh."""
    out = tmp_path_factory.mktemp("deploy") / "build"
    assert main(["build", "--preset", "tiny", "--board", "kv260", "--hardware", "sim-small", "--out", str(out),
                 "--no-estimate"]) == 0
    (out / "deploy" / "tellme.bit").write_bytes(b"stand-in bitstream")
    (out / "deploy" / "tellme.hwh").write_text("<stand-in hwh/>")
    return out


def copy_of(build, tmp_path):
    shutil.copytree(build, tmp_path / "build")
    return tmp_path / "build"


def test_deploy_to_a_stand_in_board_passes_its_self_check(build, tmp_path, capsys):
    board = tmp_path / "board"
    assert main(["deploy", str(build), "--board", "kv260", "--host", f"local:{board}"]) == 0
    printed = capsys.readouterr().out
    assert "self-check: PASS (4 tokens equal to the golden model's" in printed
    assert "loaded by PYNQ Overlay (tellme.bit + tellme.hwh)" in printed
    # the driver that ran is the one shipped in the deploy folder, without the development packages
    report = deploy(build, board="kv260", host=LocalHost(board))
    assert f"driver {board.resolve() / 'tellme' / 'tellme'}" in report.output
    for package in BOARD_ABSENT_PACKAGES:
        assert (board / ".standin-site" / f"{package}.py").read_text().startswith("raise ImportError")
    assert (board / "tellme" / "tellme.img").is_file() and (board / "tellme" / "tellme.bit").is_file()


def test_a_wrong_board_answer_fails_the_self_check(build, tmp_path):
    tree = copy_of(build, tmp_path)
    check = json.loads((tree / "deploy" / "self_check.json").read_text())
    check["tokens"][-1] = (check["tokens"][-1] + 1) % 256
    (tree / "deploy" / "self_check.json").write_text(json.dumps(check))
    with pytest.raises(DeployError, match=r"(?s)the self-check on local:.* failed:.*self-check: FAIL: the board generated"):
        deploy(tree, board="kv260", host=LocalHost(tmp_path / "board"))


def test_deploy_refusals(build, tmp_path, capsys):
    tree = copy_of(build, tmp_path)
    with pytest.raises(DeployError, match=r"was built for board 'kv260', not 'zcu104'"):
        deploy(tree, board="zcu104", host=LocalHost(tmp_path / "b"))
    with pytest.raises(DeployError, match=r"--jtag: openFPGALoader cannot load Kria KV260 \(xck26-sfvc784-2LV-c\)"):
        deploy(tree, board="kv260", host=LocalHost(tmp_path / "b"), jtag=True)
    with pytest.raises(DeployError, match=r"--xmutil: a stand-in board \(local:DIR\) has no xmutil"):
        deploy(tree, board="kv260", host=LocalHost(tmp_path / "b"), xmutil=True)
    with pytest.raises(DeployError, match=r"not a tellme build folder"):
        deploy(tmp_path, board="kv260", host=LocalHost(tmp_path / "b"))
    (tree / "deploy" / "tellme.hwh").unlink()
    assert main(["deploy", str(tree), "--host", f"local:{tmp_path / 'b'}"]) == 2
    assert "tellme.hwh missing: run" in capsys.readouterr().err and "build.sh (Vivado) first" in str(
        pytest.raises(DeployError, deploy, tree, board="kv260", host=LocalHost(tmp_path / "b")).value)
    with pytest.raises(DeployError, match="expected USER@ADDR or local:DIR"):
        parse_host("user@host with spaces")


def test_chat_path_streams_the_board_tokens(build, tmp_path):
    board = LocalHost(tmp_path / "board")
    deploy(build, board="kv260", host=board)
    streamed = []
    tokens = board_generate(board, "tellme")([5, 6, 7], 5, lambda step, token: streamed.append(token))
    golden, _ = generate(make_backend("golden", random_weights(model_preset("tiny"), seed=0),
                                      hardware_preset("sim-small")), [5, 6, 7], 5)
    assert tokens == streamed == golden


def test_run_on_board_simulate_on_the_build_folder(build):
    """A deploy folder checks itself on a PC with the behavioural model (no pynq needed)."""
    done = subprocess.run([sys.executable, str(build / "deploy" / "run_on_board.py"), "--simulate", "--self-check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "self-check: PASS" in done.stdout
    done = subprocess.run([sys.executable, str(build / "deploy" / "run_on_board.py"), "--simulate"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "give --self-check or --prompt-ids" in done.stderr


def test_jtag_load_where_openfpgaloader_supports_the_part(tmp_path, monkeypatch):
    """ZCU102: the bitstream over JTAG (openFPGALoader, here a stand-in that records its call),
    then the self-check on the design already loaded (--no-download)."""
    out = tmp_path / "zcu102"
    assert main(["build", "--preset", "tiny", "--board", "zcu102", "--hardware", "sim-small", "--out", str(out),
                 "--no-estimate"]) == 0
    (out / "deploy" / "tellme.bit").write_bytes(b"stand-in bitstream")
    (out / "deploy" / "tellme.hwh").write_text("<stand-in hwh/>")
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    (bin_dir / "openFPGALoader").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "openFPGALoader").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    report = deploy(out, board="zcu102", host=LocalHost(tmp_path / "board"), jtag=True)
    assert calls.read_text().split() == ["-b", "zcu102", str(out / "deploy" / "tellme.bit")]
    assert report.loaded_by == "JTAG (openFPGALoader)" and report.self_check.startswith("self-check: PASS")
    with pytest.raises(DeployError, match=r"--xmutil: ZCU102 is not a Kria board"):
        deploy(out, board="zcu102", host=LocalHost(tmp_path / "board"), xmutil=True)


def test_ssh_host_commands():
    host = parse_host("ubuntu@kria", python="sudo -E python3")
    assert host.command(["python3", "run_on_board.py", "--self-check"], cwd="apps/tellme") == [
        "ssh", "-o", "BatchMode=yes", "ubuntu@kria", "cd apps/tellme && python3 run_on_board.py --self-check"]
    assert host.python_argv("run_on_board.py", "--prompt-ids", "1,2") == [
        "sudo", "-E", "python3", "run_on_board.py", "--prompt-ids", "1,2"]
    assert host.command(["echo", "a b"]) == ["ssh", "-o", "BatchMode=yes", "ubuntu@kria", "echo 'a b'"]
