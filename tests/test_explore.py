"""``tellme explore`` (gen/explore.py): the resource model against the Yosys points it is
calibrated on, the sweep's drops and its Pareto front, the hardware file it writes and the
command line's errors."""

from __future__ import annotations

import io
import json
import sys
import warnings
from pathlib import Path

import pytest

from tellme.boards import get_board
from tellme.cli import _hardware, main
from tellme.config import HardwareConfig, hardware_preset, model_preset
from tellme.gen.explore import (LABEL, QUICK_GRID, RESOURCE_KEYS, Grid, ProgressBar, explore, fit_model, instances,
                                objectives, pareto_front, pick, program_words, rope_extra_cycles, validate)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
LARGE = model_preset("bitnet-b1.58-large")


@pytest.fixture(scope="module")
def rmodel():
    return fit_model()


@pytest.fixture(scope="module")
def kv260_large(rmodel):
    return explore(LARGE, "kv260", grid=QUICK_GRID, jobs=1, resource_model=rmodel, progress=False, keep_points=True)


# -- the resource model ---------------------------------------------------------------------------

def test_model_reproduces_the_recorded_units_within_its_reported_error(rmodel):
    """Each unit of the whole kv260 top (read here from kv260_fit.json, not through the model's
    loader) against the model at the same parameters: within the error the model reports for
    that point, and that error within 15 %."""
    fit = json.loads((RESULTS / "kv260_fit.json").read_text())
    hw = HardwareConfig.from_dict(fit["hardware"])
    params = {unit: p for unit, p, _ in instances(LARGE, hw)}
    reported = {(e["unit"], e["source"].startswith("bench/results/kv260_fit.json (whole")): e
                for e in rmodel.errors if e["role"] == "fit"}
    checked = 0
    for path, unit in (("datapath.matmul.tlmm", "tlmm"), ("datapath.attention.attention", "attention"),
                       ("datapath.norm_quant.norm_quant", "norm_quant"), ("datapath.matmul.gating", "gating"),
                       ("datapath.attention.rope", "rope"), ("datapath.matmul.dequant", "dequant")):
        yosys = fit["resources_per_unit"][path]
        est = rmodel.unit(unit, params[unit])
        e = reported[unit, True]
        for key in ("lut", "ff", "dsp"):
            if yosys[key]:
                err = (est[key] - yosys[key]) / yosys[key]
                assert err == pytest.approx(e["error"][key], abs=1e-6), (unit, key)
                assert abs(err) <= 0.15, (unit, key, err)
                checked += 1
    assert checked >= 15


def test_whole_top_and_summary(rmodel):
    """The sum of the units against the whole kv260 top's Yosys figures (the one whole-top point
    of the current design): within 5 % in every resource; the summary reports the fitted and
    left-out errors it is asked for."""
    fit = json.loads((RESULTS / "kv260_fit.json").read_text())
    # priced as that top was built (gen.explore.AS_BUILT, by its commit)
    est = rmodel.estimate(LARGE, HardwareConfig.from_dict(fit["hardware"]), as_built=fit["commit"])
    for key, field in (("lut", "lut_equiv"), ("ff", "ff"), ("dsp", "dsp"), ("bram36", "bram36"), ("uram", "uram")):
        used = fit["resources"][key]["used"]
        assert abs(est[field] - used) / used <= 0.05, (key, est[field], used)
    today = rmodel.estimate(LARGE, HardwareConfig.from_dict(fit["hardware"]))
    # a top as built at 2968e36 (gen.explore.AS_BUILT): its LM head read one HP port, today's four
    # (16 x 4 int8 multipliers), and its K/V history one port, today's four
    old = rmodel.estimate(LARGE, HardwareConfig.from_dict(fit["hardware"]), as_built="2968e36")
    assert today["dsp"] > old["dsp"] + 40 and today["lut_equiv"] > old["lut_equiv"]
    s = rmodel.summary()
    assert set(s) == set(RESOURCE_KEYS)
    assert abs(s["lut"]["whole_top_units_apart"]) <= 0.05
    assert s["lut"]["fit_points"] >= 20 and s["lut"]["loo_points"] >= 5
    assert s["lut"]["fit_max_abs"] <= 0.15 and s["lut"]["loo_max_abs"] is not None
    table = rmodel.table()
    assert LABEL in table and "left out" in table and "[check]" in table


def test_tlmm_formula_follows_lanes_tokens_and_group(rmodel):
    """The TLMM's LUTs grow with P x T and with G's table size: a formula that ignores them fails."""
    tlmm = lambda g, p, t: rmodel.unit("tlmm", {"group": g, "lanes": p, "tokens": t, "max_rows": 2048})["lut"]  # noqa
    assert tlmm(5, 64, 8) > 1.5 * tlmm(5, 32, 8) and tlmm(5, 32, 8) > 1.5 * tlmm(5, 16, 8)
    assert tlmm(5, 32, 8) > 1.5 * tlmm(5, 32, 4)
    assert tlmm(5, 32, 4) > tlmm(4, 32, 4) > tlmm(2, 32, 4)


def test_instances_are_the_generators():
    """The parameters the model prices each unit at are the ones the generator builds: the
    TopShape's largest tile and the program's words."""
    from tellme.gen.program import build_program
    from tellme.gen.tiling import MatmulRates
    from tellme.gen.top import TopShape
    for model, hw in ((LARGE, hardware_preset("kv260")), (model_preset("tiny"), hardware_preset("sim-small")),
                      (model_preset("tiny"), hardware_preset("sim-small").replace(attn_heads_parallel=2)),
                      (LARGE, HardwareConfig(tlmm_group=3, tlmm_lanes=32, tlmm_tokens=4, urams_per_bank=6))):
        program = build_program(model, hw)
        shape = TopShape.of(program)
        units = {u: p for u, p, _ in instances(model, hw)}
        assert units["tlmm"]["max_rows"] == shape.max_rows
        assert units["norm_quant"]["max_dim"] == shape.max_dim
        assert units["transpose"]["block"] == shape.block
        rates = MatmulRates.of(model, hw.tlmm_group, hw.tlmm_lanes, hw.tlmm_tokens, hw.ew_lanes)
        assert units["dequant"]["lanes"] == rates.dequant_lanes
        assert program_words(model, hw) == len(program.steps) + 1


def test_no_uram_board_counts_block_ram(rmodel):
    hw = hardware_preset("kv260")
    with_uram = rmodel.estimate(LARGE, hw, has_uram=True)
    without = rmodel.estimate(LARGE, hw, has_uram=False)
    assert without["uram"] == 0 and with_uram["uram"] > 40
    assert without["bram36"] >= with_uram["bram36"] + 8 * (with_uram["uram"] - 1)


# -- the sweep -----------------------------------------------------------------------------------------

def test_too_big_for_the_ultra96_is_dropped_with_the_reason(rmodel):
    grid = Grid(tlmm_group=(5,), tlmm_lanes=(128,), tlmm_tokens=(16,), ew_lanes=(16,), gating_lanes=(4,),
                rope_lanes=(8,), attn_tile=(32,), attn_heads_parallel=(1,), prefill_chunk=(128,), hp_ports=(4,),
                urams_per_bank=(16,))
    r = explore(LARGE, "ultra96v2", grid=grid, jobs=1, resource_model=rmodel, progress=False)
    c = r["counts"]
    assert (c["swept"], c["invalid"], c["do_not_fit"], c["evaluated"]) == (1, 0, 1, 0)
    assert r["front"] == [] and r["chosen"] is None
    (key, entry), = c["do_not_fit_by_reason"].items()
    assert key.split("+")[0] == "lut" and entry["count"] == 1
    problem = entry["example"]["problems"][0]
    assert problem.startswith("lut: ") and "> 70560 available" in problem
    with pytest.raises(Exception, match="no configuration fits"):
        pick(r["front"])


def test_invalid_points_are_counted_by_field(rmodel):
    grid = Grid(tlmm_group=(5,), tlmm_lanes=(16,), tlmm_tokens=(2,), ew_lanes=(4,), gating_lanes=(1, 3),
                rope_lanes=(2, 8), attn_tile=(16,), attn_heads_parallel=(1, 2), prefill_chunk=(64,), hp_ports=(4, 8),
                urams_per_bank=(4,))
    r = explore(LARGE, "ultra96v2", grid=grid, jobs=1, resource_model=rmodel, progress=False)
    c = r["counts"]
    assert c["swept"] == 16 and c["invalid"] + c["do_not_fit"] + c["evaluated"] == 16
    assert c["evaluated"] + c["do_not_fit"] == 1
    reasons = c["invalid_by_reason"]
    assert set(reasons) == {"gating_lanes", "rope_lanes", "attn_heads_parallel", "hp_ports"}
    assert reasons["gating_lanes"]["count"] == 8 and "must divide ew_lanes" in reasons["gating_lanes"]["example"]
    assert "S_AXI_HP" in reasons["hp_ports"]["example"]


def test_front_is_non_dominated_and_covers_every_point(kv260_large):
    front = kv260_large["front"]
    assert front, "kv260 + bitnet-b1.58-large: the front is empty"
    objs = [objectives(p) for p in front]
    for i, a in enumerate(objs):
        for j, b in enumerate(objs):
            if i != j:
                dominated = (a["decode_tok_s"] >= b["decode_tok_s"] and a["ttft_s"] <= b["ttft_s"]
                             and a["lut"] <= b["lut"] and a != b)
                assert not dominated, (front[i]["hardware"], front[j]["hardware"])
    # every point that fits is on the front or dominated by (or equal to) a front point
    for lut, rate, ttft in kv260_large["points"]:
        o = {"decode_tok_s": round(rate, 2), "ttft_s": round(ttft, 4), "lut": int(lut)}
        assert any(f["decode_tok_s"] >= o["decode_tok_s"] and f["ttft_s"] <= o["ttft_s"] and f["lut"] <= o["lut"]
                   for f in objs), o
    for p in front:
        assert p["resources"]["lut_equiv"] <= 117120
        assert set(p["decode_tok_s_at"]) == {"128", "1024"} and set(p["ttft_s_for"]) == {"64", "128"}
    assert kv260_large["counts"]["evaluated"] == len(kv260_large["points"]) > len(front)


def test_pareto_front_drops_a_dominated_point():
    mk = lambda rate, ttft, lut: {"decode_tok_s": rate, "ttft_s": ttft, "hardware": {"x": (rate, ttft, lut)},  # noqa
                                  "resources": {"lut_equiv": lut, "ff": 0, "dsp": 0, "bram36": 0, "uram": 0}}
    a, b, c, d = mk(40, 0.3, 100), mk(39, 0.3, 100), mk(45, 0.5, 120), mk(30, 0.2, 90)
    assert pareto_front([b, a, c, d]) == [c, a, d]
    assert pick([a, c, d], "fastest") is c and pick([a, c, d], "smallest") is d
    assert pick([a, c, d], "balanced") in (a, c, d)


def test_picks_are_extremes_of_the_front(kv260_large):
    front = kv260_large["front"]
    assert pick(front, "fastest")["decode_tok_s"] == max(p["decode_tok_s"] for p in front)
    assert pick(front, "smallest")["resources"]["lut_equiv"] == min(p["resources"]["lut_equiv"] for p in front)
    assert kv260_large["chosen"] in front


def test_rope_correction_is_zero_at_the_calibrated_ratio():
    hw = hardware_preset("kv260")
    assert rope_extra_cycles(LARGE, hw, 128) == 0
    # 8 of 8 lanes: the query and key beats at a full beat per cycle, 128 x 2 x 96 / 8 less per pass
    full = rope_extra_cycles(LARGE, hw.replace(rope_lanes=8), 128)
    assert full == pytest.approx(-24 * 16 * 128 * 2 * 96 / 8)


def test_parallel_sweep_equals_serial(rmodel, kv260_large):
    r = explore(LARGE, "kv260", grid=QUICK_GRID, jobs=2, resource_model=rmodel, progress=False)
    assert [p["hardware"] for p in r["front"]] == [p["hardware"] for p in kv260_large["front"]]
    assert r["counts"]["evaluated"] == kv260_large["counts"]["evaluated"]


def test_chosen_point_builds_the_top(kv260_large):
    """The generator accepts the chosen configuration (TellmeTop is constructed, not elaborated)."""
    from tellme.gen.top import TellmeTop
    hw = HardwareConfig.from_dict(kv260_large["chosen"]["hardware_config"])
    validate(LARGE, hw, get_board("kv260"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        top = TellmeTop(LARGE, hw, ram_style="ultra")
    assert top.hw == hw


def test_progress_bar():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    out = Tty()
    bar = ProgressBar(10, "sweep", stream=out)
    bar.update(5)
    bar.update(5)
    bar.close()
    assert "\r" in out.getvalue() and "100.0 %" in out.getvalue() and out.getvalue().endswith("\n")
    log = io.StringIO()
    bar = ProgressBar(8, "sweep", stream=log)
    for _ in range(8):
        bar.update(1)
    assert "\r" not in log.getvalue() and log.getvalue().count("\n") == 4


# -- the command line ----------------------------------------------------------------------------------

def test_cli_writes_a_hardware_file_the_other_commands_accept(tmp_path, capsys):
    hw_file, out = tmp_path / "explored.json", tmp_path / "explore.json"
    assert main(["explore", "--board", "kv260", "--preset", "tiny", "--quick", "--jobs", "1", "--quiet",
                 "--pick", "smallest", "--json", str(out), "--write-hardware", str(hw_file)]) == 0
    printed = capsys.readouterr().out
    assert LABEL in printed and "Pareto front" in printed and "chosen (smallest)" in printed
    result = json.loads(out.read_text())
    hw = _hardware(str(hw_file))
    assert hw.to_dict() == result["chosen"]["hardware_config"] and hw.board == "kv260"
    assert hw.max_context == 256                 # capped at tiny's max_position_embeddings
    assert main(["build", "--preset", "tiny", "--board", "kv260", "--hardware", str(hw_file),
                 "--out", str(tmp_path / "build"), "--dry-run", "--no-estimate"]) == 0
    assert main(["run", "--preset", "tiny", "--hardware", str(hw_file), "--backend", "golden",
                 "--prompt-ids", "1,17,42", "--max-new-tokens", "2", "--quiet"]) == 0
    assert main(["program", "--preset", "tiny", "--hardware", str(hw_file)]) == 0
    assert f"G={hw.tlmm_group}, P={hw.tlmm_lanes} lanes" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--board", "kv261", "--preset", "tiny"], "unknown board 'kv261'"),
    (["--board", "kv260", "--preset", "tinyy"], "unknown model preset 'tinyy'"),
    (["--board", "kv260", "--preset", "tiny", "--jobs", "0"], "--jobs must be at least 1"),
    (["--board", "kv260", "--preset", "tiny", "--write-hardware", "hw"], "must end in .json"),
    (["--board", "kv260", "--preset", "tiny", "--ddr-efficiency", "1.5"], "--ddr-efficiency must be in (0, 1]"),
])
def test_cli_errors(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["explore", "--quick", "--quiet", "--json", "out.json", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("tellme: error: ") and message in err
    assert list(tmp_path.iterdir()) == []


def test_cli_takes_a_checkpoint(tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    assert main(["synth-checkpoint", "--preset", "tiny-silu", "--out", str(ckpt)]) == 0
    out = tmp_path / "r.json"
    assert main(["explore", "--board", "zcu104", "--checkpoint", str(ckpt), "--quick", "--jobs", "1", "--quiet",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "tiny-silu" and result["board"] == "zcu104" and result["front"]
    assert result["chosen"]["hardware_config"]["board"] == "zcu104"


def test_cli_refuses_when_nothing_fits(tmp_path, capsys):
    hw_file = tmp_path / "hw.json"
    code = main(["explore", "--board", "ultra96v2", "--preset", "bitnet-b1.58-large", "--quick", "--jobs", "1",
                 "--quiet", "--write-hardware", str(hw_file)])
    assert code == 2 and not hw_file.exists()
    assert "no configuration of the sweep fits ultra96v2" in capsys.readouterr().err


def test_readme_table_comes_from_the_bench_json():
    sys.path.insert(0, str(REPO))
    from bench.explore import markdown_table
    results = json.loads((RESULTS / "explore.json").read_text())
    assert markdown_table(results) in (REPO / "README.md").read_text()
    assert results["resources_label"] == LABEL and set(results["boards"]) == {"kv260", "zcu104"}
