"""The command line: every subcommand has --help, bad input exits 2 with one line, outputs are
complete or absent."""

import json
import subprocess
import sys

import pytest

from tellme.cli import EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, CliError, main
from tellme.errors import TellmeError

SUBCOMMANDS = ["info", "demo", "convert", "synth-checkpoint", "run", "compare", "program"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tellme.cli", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    assert "usage: tellme " + command in capsys.readouterr().out


def test_info_lists_presets_and_toolchain(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "bitnet-b1.58-large" in out and "bitnet-b1.58-2B-4T" in out and "kv260" in out
    assert "verilator" in out and "amaranth" in out


def test_run_writes_the_promised_json(tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["run", "--preset", "tiny", "--prompt-ids", "1,17,42", "--max-new-tokens", "3",
                 "--backend", "golden", "--json", str(out), "--quiet"]) == 0
    data = json.loads(out.read_text())
    assert data["prompt_ids"] == [1, 17, 42]
    assert len(data["generated_ids"]) == 3 and len(data["step_logits"]) == 3
    assert all(len(l) == 256 for l in data["step_logits"])
    # each generated id is the argmax of the logits it was chosen from
    assert data["generated_ids"] == [max(range(256), key=l.__getitem__) for l in data["step_logits"]]


def test_convert_and_run_from_checkpoint_and_image(tmp_path, capsys):
    ckpt, image = tmp_path / "ckpt", tmp_path / "m.img"
    assert main(["synth-checkpoint", "--preset", "tiny-silu", "--style", "full", "--out", str(ckpt)]) == 0
    assert main(["convert", "--checkpoint", str(ckpt), "--out", str(image), "--hardware", "sim-small"]) == 0
    results = {}
    for source in (["--checkpoint", str(ckpt)], ["--image", str(image)]):
        out = tmp_path / "r.json"
        assert main(["run", *source, "--hardware", "sim-small", "--prompt-ids", "5,6,7", "--max-new-tokens", "4",
                     "--json", str(out), "--quiet"]) == 0
        results[source[0]] = json.loads(out.read_text())["generated_ids"]
    assert results["--checkpoint"] == results["--image"]
    assert main(["compare", "--image", str(image), "--hardware", "sim-small", "--prompt-ids", "1,2,3"]) == 0
    assert "logits cosine" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["run", "--preset", "tiny", "--prompt-ids", "1,x"], "--prompt-ids"),
    (["run", "--preset", "tiny", "--prompt-ids", "1,999"], "--prompt-ids"),
    (["run", "--prompt-ids", "1"], "exactly one of"),
    (["run", "--preset", "tiny", "--prompt-ids", "1", "--max-new-tokens", "0"], "max-new-tokens"),
    (["run", "--preset", "tiny", "--prompt-ids", "1", "--hardware", "nope"], "unknown hardware preset"),
    (["run", "--checkpoint", "/nonexistent/ckpt", "--prompt-ids", "1"], "/nonexistent/ckpt"),
    (["convert", "--checkpoint", "/nonexistent/ckpt", "--out", "x.img"], "/nonexistent/ckpt"),
    (["run", "--image", "/nonexistent.img", "--prompt-ids", "1"], "/nonexistent.img"),
    (["compare", "--preset", "tiny", "--prompt-ids", "1,999"], "--prompt-ids"),
    (["compare", "--preset", "tiny", "--hardware", "sim-small", "--prompt-ids", ",".join(["1"] * 17)],
     "prefill_chunk=16"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tellme: error:") and message in lines[0]
    assert not (tmp_path / "x.img").exists()


@pytest.mark.slow      # two top-level Verilator builds; tests/test_top.py covers the RTL in the default set
def test_demo_runs(tmp_path, capsys):
    summary_path = tmp_path / "demo.json"
    assert main(["demo", "--out", str(tmp_path / "demo"), "--json", str(summary_path)]) == 0
    summary = json.loads(summary_path.read_text())
    for preset in ("tiny", "tiny-silu"):
        assert summary[preset]["rtl_equals_golden"], summary[preset]
        assert summary[preset]["golden_ids"] == summary[preset]["float_ids"]
        assert summary[preset]["min_layer_cosine"] >= 0.999


def test_program_prints_the_listing(capsys):
    assert main(["program", "--preset", "bitnet-b1.58-large", "--hardware", "kv260"]) == 0
    out = capsys.readouterr().out
    assert "tellme program: bitnet-b1.58-large on kv260 hardware" in out
    assert "steps: 650 (1 EMBED, 96 NORM_QUANT, 168 MATMUL, 384 ATTENTION, 1 LM_HEAD)" in out
    assert "down_proj 1536x4096" in out and out.rstrip().splitlines()[-1].split()[1] == "LM_HEAD"


def test_program_of_a_checkpoint_and_bad_input(tmp_path, capsys):
    assert main(["synth-checkpoint", "--preset", "tiny", "--out", str(tmp_path / "ck")]) == 0
    capsys.readouterr()
    assert main(["program", "--checkpoint", str(tmp_path / "ck"), "--hardware", "sim-small"]) == 0
    assert "tellme program: tiny on sim hardware" in capsys.readouterr().out
    assert main(["program", "--checkpoint", str(tmp_path / "nothing"), "--hardware", "sim-small"]) == 2
    assert "not a checkpoint directory" in capsys.readouterr().err


def test_run_on_the_program_backend_matches_golden(tmp_path):
    outs = {}
    for backend in ("golden", "program"):
        out = tmp_path / f"{backend}.json"
        assert main(["run", "--preset", "tiny", "--hardware", "sim-small", "--prompt-ids", "1,17,42,7",
                     "--max-new-tokens", "4", "--backend", backend, "--json", str(out), "--quiet"]) == 0
        outs[backend] = json.loads(out.read_text())
    assert outs["program"]["generated_ids"] == outs["golden"]["generated_ids"]
    assert outs["program"]["step_logits"] == outs["golden"]["step_logits"]


@pytest.mark.slow
@pytest.mark.rtl
def test_run_on_the_rtl_backend_matches_golden(tmp_path, capsys):
    """``tellme run --backend rtl``: the golden backend's JSON (same ids, same logits bit for
    bit) plus the cycles of every call from CYCLES_LO/HI, the weight stalls, the clock and the
    simulated decode rate; progress goes to stderr. (Slow: a Verilator build of the top, the
    demo's design when it ran first.)"""
    outs = {}
    for backend in ("golden", "rtl"):
        out = tmp_path / f"{backend}.json"
        assert main(["run", "--preset", "tiny", "--hardware", "sim-small", "--prompt-ids", "1,17,42,7",
                     "--max-new-tokens", "4", "--backend", backend, "--json", str(out)]) == 0
        outs[backend] = json.loads(out.read_text())
    rtl, golden = outs["rtl"], outs["golden"]
    assert rtl["generated_ids"] == golden["generated_ids"]
    assert rtl["step_logits"] == golden["step_logits"]
    assert rtl["hardware"] == golden["hardware"]
    cycles, stalls = rtl["cycles"], rtl["stall_cycles"]
    assert [len(cycles["prefill"]), len(cycles["decode"])] == [1, 3]
    assert all(c > 0 for c in cycles["prefill"] + cycles["decode"])
    assert all(0 <= s <= c for kind in cycles for s, c in zip(stalls[kind], cycles[kind], strict=True))
    assert rtl["clock_mhz"] == golden["hardware"]["clock_mhz"]
    assert rtl["simulated_decode_tokens_per_s"] == pytest.approx(3 * rtl["clock_mhz"] * 1e6 / sum(cycles["decode"]))
    assert "rtl: building the top level of tiny" in capsys.readouterr().err


# -- user errors and bugs ------------------------------------------------------------------------

def _user_error_classes():
    from tellme.config import ConfigError
    from tellme.contract.regmap import RegisterMapError
    from tellme.gen.checkpoint import CheckpointError
    from tellme.gen.estimate import YosysError
    from tellme.gen.image import ImageError
    from tellme.runtime import AcceleratorError
    from tellme.sim.toolchain import VerilatorNotFound
    from tellme.weights import WeightsError
    # each with the built-in class it always was (callers catching that still catch it)
    return [(ConfigError, ValueError), (CheckpointError, ValueError), (ImageError, ValueError),
            (WeightsError, ValueError), (RegisterMapError, ValueError), (VerilatorNotFound, RuntimeError),
            (YosysError, RuntimeError), (AcceleratorError, RuntimeError), (CliError, Exception)]


@pytest.mark.parametrize("error, builtin", _user_error_classes(), ids=lambda c: c.__name__)
def test_project_errors_are_user_errors(error, builtin, monkeypatch, capsys):
    assert issubclass(error, TellmeError) and issubclass(error, builtin)

    def fails():
        raise error("the tool is not there")
    # `tellme info` calls toolchain_versions; here it fails the way a user error would.
    monkeypatch.setattr("tellme.sim.toolchain.toolchain_versions", fails)
    assert main(["info"]) == EXIT_USER_ERROR == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["tellme: error: the tool is not there"]


@pytest.mark.parametrize("bug", [ValueError("bad index math"), KeyError("layer"),
                                 ZeroDivisionError("division by zero")], ids=lambda e: type(e).__name__)
def test_other_exceptions_are_internal_errors(bug, monkeypatch, capsys):
    def fails():
        raise bug
    monkeypatch.setattr("tellme.sim.toolchain.toolchain_versions", fails)
    assert main(["info"]) == EXIT_INTERNAL_ERROR != 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert "in fails" in err  # the traceback reaches the function that raised
    assert f"tellme: internal error: {type(bug).__name__}: {bug}" in lines
    assert "bug in tellme" in lines[-1]
    assert not any(line.startswith("tellme: error:") for line in lines)


def test_internal_error_exit_status_of_the_command():
    # The same through a process of its own: a bug in a subcommand (here `info` replaced by one
    # that indexes an empty list) exits 3 with the traceback, not 2.
    code = ("import sys, tellme.cli as cli\n"
            "cli.cmd_info = lambda args: [][0]\n"
            "sys.exit(cli.main(['info']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert "tellme: internal error: IndexError: list index out of range" in result.stderr
    assert "Traceback (most recent call last):" in result.stderr
