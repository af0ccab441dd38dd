"""The cycle model (gen/cycles.py) against the RTL, and its command line (issue #15).

The RTL comparisons simulate a whole generation under Verilator on the DDR model and require
every call's cycles within TOLERANCE of the model's; the fast set runs one configuration, the
slow set all of ``tellme.sim.cycle_check.CONFIGURATIONS`` (one decoder layer of
bitnet-b1.58-large at the kv260 settings among them).
"""

from __future__ import annotations

import json

import pytest

from tellme.cli import main
from tellme.config import ConfigError, hardware_preset, model_preset
from tellme.gen.cycles import CycleModel, DdrTiming
from tellme.sim.cycle_check import CONFIGURATIONS, TOLERANCE, check_cycles


def _report(result: dict) -> str:
    lines = [f"{result['name']}: worst call error {100 * result['max_abs_error']:.1f} %"]
    for call in result["calls"]:
        ops = ", ".join(f"{op} {v['rtl']}/{v['model']}" for op, v in call["per_op"].items())
        lines.append(f"  {call['kind']} {call['tokens']} @ {call['pos']}: rtl {call['rtl_cycles']} model "
                     f"{call['model_cycles']} ({100 * call['error']:+.1f} %); rtl/model per op: {ops}")
    return "\n".join(lines)


#: Run in the default set (about a minute and a half); the others (kv260-sized builds, minutes each) are slow.
FAST = ("tiny/sim-small",)


@pytest.mark.parametrize("config", [c if c.name in FAST else pytest.param(c, marks=pytest.mark.slow)
                                    for c in CONFIGURATIONS], ids=[c.name for c in CONFIGURATIONS])
def test_model_within_tolerance_of_rtl(config):
    result = check_cycles(config)
    print(_report(result))
    assert result["max_abs_error"] <= TOLERANCE, _report(result)
    # the model sees the weight waits where the RTL does: no stall predicted for a call without one
    for call in result["calls"]:
        if call["rtl_stall_cycles"] == 0:
            assert call["model_stall_cycles"] <= 0.01 * call["model_cycles"], _report(result)


def test_steps_add_up_and_scale():
    cm = CycleModel(model_preset("bitnet-b1.58-large"), hardware_preset("kv260"), DdrTiming(54.4, 40))
    short, long = cm.call(64), cm.call(128)
    assert short.cycles == sum(s.cycles for s in short.steps) == sum(short.per_op().values())
    assert long.cycles > 1.8 * short.cycles            # the TLMM's passes and attention's pairs
    assert all(s.parts["tlmm"] > 0 for s in long.steps if s.op == "MATMUL")
    assert 0 < cm.elementwise_overhead(long) < 1
    near, far = cm.decode(128), cm.decode(1024)
    assert far.per_op()["ATTENTION"] > 4 * near.per_op()["ATTENTION"]   # the history grows with the context
    assert far.per_op()["MATMUL"] == pytest.approx(near.per_op()["MATMUL"], rel=1e-3)   # weights: the same bytes
    # one word per ROM word of the generated sequencer (the LM head is two)
    from tellme.gen.top import TellmeTop
    tiny, hw = model_preset("tiny"), hardware_preset("sim-small")
    assert len(CycleModel(tiny, hw).words) == len(TellmeTop(tiny, hw).words)


def test_slow_ddr_makes_the_tlmm_wait():
    model, hw = model_preset("bitnet-b1.58-large"), hardware_preset("kv260")
    fast = CycleModel(model, hw, DdrTiming(64, 40)).decode(128)
    slow = CycleModel(model, hw, DdrTiming(8, 40)).decode(128)
    assert slow.stall_cycles > 0
    assert slow.per_op()["MATMUL"] > 3 * fast.per_op()["MATMUL"]
    weights = sum(b for s in CycleModel(model, hw).program.steps if s.op == "MATMUL"
                  for _, b in CycleModel(model, hw)._tiles(s))
    assert slow.cycles >= weights / 8          # no faster than the DDR gives the bytes (loads overlap other steps)


def test_bad_requests_are_refused():
    cm = CycleModel(model_preset("tiny"), hardware_preset("sim-small"))
    with pytest.raises(ValueError, match="tokens"):
        cm.call(0)
    with pytest.raises(ValueError, match="tokens"):
        cm.call(hardware_preset("sim-small").prefill_chunk + 1)
    with pytest.raises(ValueError, match="max_context"):
        cm.call(4, pos=hardware_preset("sim-small").max_context - 2)
    with pytest.raises(ConfigError, match="attn_format"):
        CycleModel(model_preset("tiny"), hardware_preset("sim-small").replace(attn_format="int8"))
    with pytest.raises(ValueError, match="efficiency"):
        DdrTiming.of_board(type("B", (), {"ddr_peak_bytes_per_s": 1e9})(), 300, efficiency=1.5)


def test_estimate_command_reports_cycles_like_run_rtl(tmp_path, capsys):
    out = tmp_path / "estimate.json"
    assert main(["estimate", "--preset", "tiny", "--hardware", "sim-small", "--prompt-len", "20",
                 "--decode-steps", "3", "--steps", "--json", str(out), "--plot", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "roofline.png").stat().st_size > 0
    data = json.loads(out.read_text())
    chunk = hardware_preset("sim-small").prefill_chunk
    assert len(data["cycles"]["prefill"]) == -(-20 // chunk) and len(data["cycles"]["decode"]) == 3
    assert set(data["stall_cycles"]) == {"prefill", "decode"}
    assert all(c > 0 for c in data["cycles"]["prefill"] + data["cycles"]["decode"])
    assert data["calls"][0]["steps"] and "calibration" in data["assumptions"]
    assert {"decode_tok_s", "ttft_s", "ddr_bytes_per_token", "ddr_roofline_frac", "resources"} <= set(data)
    assert "tokens/s" in capsys.readouterr().out


def test_recorded_resources_match_the_hardware_exactly():
    from tellme.boards import get_board
    from tellme.gen.cycles import recorded_resources
    board, model = get_board("kv260"), model_preset("bitnet-b1.58-large")
    hw = board.default_hardware()
    found = recorded_resources(board, model, hw)
    assert found is not None and found["lut"]["capacity"] == board.pl_resources["lut"] and "Yosys" in found["source"]
    assert recorded_resources(board, model, hw.replace(tlmm_lanes=32)) is None


def test_estimate_command_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "e.json"
    assert main(["estimate", "--preset", "tiny", "--hardware", "sim-small", "--prompt-len", "300",
                 "--json", str(out)]) == 2
    assert "max_context" in capsys.readouterr().err and not out.exists()
    assert main(["estimate", "--preset", "tiny", "--ddr-efficiency", "0", "--json", str(out)]) == 2
    assert not out.exists()
