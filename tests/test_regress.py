"""The randomized regression (``make regress``, ``bench/regress.py``, issue #16): it runs, prints
replayable seeds, a replay draws the same case (shapes, stalls and data), a wrong expected value
makes it fail, and the committed ``bench/results/reliability.json`` is a passing run of every
unit and the top level."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import regress  # noqa: E402


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_case_is_a_function_of_unit_and_seed():
    """Every unit's case maker runs (without simulating), and draws the same case from the same
    (unit, seed); the seeds change what is drawn."""
    for unit in regress.UNITS:
        first, again = regress.make_case(unit, 3).describe(), regress.make_case(unit, 3).describe()
        assert first == again, unit
        assert first["stalls"] and first["config"], first
    draws = {json.dumps(regress.make_case("tlmm", seed).describe(), sort_keys=True) for seed in range(8)}
    assert len(draws) > 1
    assert regress.replay_command("tlmm", 12) == "python -m bench.regress --only tlmm --seed 12 --cases 1"


def test_top_level_check_catches_one_flipped_bit():
    from tellme.config import hardware_preset, model_preset
    from tellme.sim.backends import generate, make_backend
    from tellme.weights import random_weights
    weights = random_weights(model_preset("tiny"), seed=1)
    ids, logits = generate(make_backend("golden", weights, hardware_preset("sim-small")), [1, 2, 3], 3)
    regress.check_generation(ids, logits, ids, logits)
    wrong = [step.copy() for step in logits]
    wrong[2].view(np.uint32)[7] ^= 1
    with pytest.raises(regress.RegressionFailure, match=r"step 2: logits differ at \[7\]"):
        regress.check_generation(ids, logits, ids, wrong)
    with pytest.raises(regress.RegressionFailure, match="generated ids"):
        regress.check_generation(ids, logits, ids[:2] + [ids[2] + 1], logits)


def test_malformed_input_fuzzing_is_counted():
    out = regress.fuzz_inputs(seed=4, examples=4)
    assert set(out) == {"image", "checkpoint (packed)", "checkpoint (sharded)"}
    for target, counts in out.items():
        assert counts["cases"] == 4 and counts["failures"] == 0 and "error" not in counts, (target, counts)
        assert counts["loaded"] + sum(counts["refused"].values()) == 4, (target, counts)


@pytest.mark.rtl
def test_regression_prints_seeds_and_a_replay_draws_the_same_case(tmp_path, capsys):
    """Two TLMM cases (seeds 11 and 12) pass and print their replay commands; replaying seed 12
    alone draws the same configuration, stalls and problems (names with their shapes, digests of
    their weights, activations and scales, as the testbench recorded them) as the second case,
    which differ from the first case's."""
    first = tmp_path / "run.jsonl"
    assert regress.main(["--only", "tlmm", "--seed", "11", "--cases", "2", "--log", str(first)]) == 0
    out = capsys.readouterr().out
    for seed in (11, 12):
        assert f"] tlmm seed {seed} (" in out and f"replay: python -m bench.regress --only tlmm --seed {seed} --cases 1" in out
    assert "all passed" in out
    run = _records(first)
    assert [r["seed"] for r in run] == [11, 12] and all(r["status"] == "passed" for r in run)
    assert all(r["observed"]["problems"] for r in run)
    assert run[0]["observed"] != run[1]["observed"]

    again = tmp_path / "replay.jsonl"
    assert regress.main(["--only", "tlmm", "--seed", "12", "--cases", "1", "--log", str(again)]) == 0
    (replay,) = _records(again)
    for key in ("unit", "seed", "config", "shapes", "stalls", "observed"):
        assert replay[key] == run[1][key], key


@pytest.mark.rtl
def test_regression_fails_on_a_wrong_expected_value(capsys):
    """With a wrong expected value (one lane word's code sign flipped against the rows the
    scoreboard expects) the regression stops at that case, non-zero, with its replay command."""
    assert regress.main(["--only", "tlmm", "--seed", "5", "--cases", "3", "--inject-fault", "--no-waves"]) == 1
    out = capsys.readouterr().out
    assert "FAILED: tlmm seed 5: RTLTestFailure" in out and "expected" in out
    assert "replay: python -m bench.regress --only tlmm --seed 5 --cases 1 --inject-fault" in out
    assert "] tlmm seed 6 (" not in out                 # the run stopped at the failure
    assert out.rstrip().endswith("FAILED")


def test_committed_results_are_a_passing_run_of_every_unit():
    """``bench/results/reliability.json`` is a run of every unit and the top level without a
    failure, with the malformed-input cases counted and every formal proof proven (and every
    broken variant caught)."""
    results = json.loads((REPO / "bench" / "results" / "reliability.json").read_text())
    assert results["total"]["failures"] == 0 and results["failure"] is None
    assert set(results["units"]) | {"top"} == set(regress.UNITS), "a unit the committed run did not reach"
    assert results["end_to_end"]["cases"] >= 1 and results["end_to_end"]["failures"] == 0
    assert all(u["failures"] == 0 and u["stall_settings"] >= u["cases"] for u in results["units"].values())
    assert results["duration_minutes"] >= 3
    inputs = results["malformed_inputs"]
    assert inputs["failures"] == 0 and inputs["cases"] >= 3 * inputs["fuzz"]["examples_per_target"]
    assert all(t["loaded"] + sum(t["refused"].values()) == t["cases"] for t in inputs["fuzz"]["targets"].values())
    formal = results["formal"]
    assert formal["status"] == "run" and formal["proofs"] and formal["failures"] == 0, formal
    assert all(p["result"] == "proven" for p in formal["proofs"])
    assert all(v.startswith("fails as it must") for v in formal["broken_variants"].values())
