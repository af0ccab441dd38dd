"""The error budget (tellme.sim.budget): with no knob exact the budget model is the golden model
bit for bit; every knob and format variant changes something; with every knob exact it is the
float reference to float32 rounding; `tellme compare --budget` prints the table and writes the
dict. The transformers-made checkpoint helper (tellme.sim.hf_random) under the oracle mark."""

import json

import numpy as np
import pytest

from tellme.cli import main
from tellme.config import hardware_preset, model_preset
from tellme.sim.backends import compare, cosine
from tellme.sim.budget import (KNOBS, VARIANTS, BudgetModel, Numerics, budget_table, error_budget, knobs_for,
                               measure, reference_run)
from tellme.sim.golden import GoldenModel, Trace, quantize
from tellme.sim.reference import ReferenceModel
from tellme.weights import TernaryTensor, random_weights

#: The budget's hardware: the int8 attention format, whose K/V cache and query are the knobs
#: kv_int8 and q_int8 (the default fp32 format is their fix, test below).
HW = hardware_preset("sim-small").replace(attn_format="int8")
PROMPT = [3, 141, 59, 26, 5, 35, 89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28, 84, 19]   # 20 > chunk 16
#: All knobs exact against the float reference: the same numbers up to the rounding of float32
#: sums (the reference's numpy order against float64 rounded once), ~1e-14 on these prompts.
#: (One activation rounding flipped by that rounding would cost ~1e-6: the bound allows neither.)
EXACT_TOLERANCE = 1e-9


def bits(a):
    return np.asarray(a, dtype=np.float32).view(np.uint32)


def run(weights, hw, exact=(), variants=(), prompt=PROMPT[:12], decode=(7, 200)):
    """Every traced value and every logits vector of a prefill and two decode steps."""
    model = BudgetModel(weights, hw, exact, variants)
    trace = Trace()
    values = [model.prefill(prompt, trace)] + [model.decode(t, trace) for t in decode]
    for layer in trace.layers:
        values += [layer[k] for k in sorted(layer)]
    return values


def differs(a, b):
    return any(not np.array_equal(bits(x), bits(y)) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("preset, head, attn", [("tiny", "int8", "int8"), ("tiny-silu", "int8", "int8"),
                                                ("tiny", "fp16", "int8"), ("tiny", "int8", "fp32"),
                                                ("tiny-silu", "int8", "fp32")])
def test_no_knob_exact_is_the_golden_model_bit_for_bit(preset, head, attn):
    weights = random_weights(model_preset(preset), seed=2)
    hw = HW.replace(lm_head_format=head, attn_format=attn)
    golden, budget = GoldenModel(weights, hw), BudgetModel(weights, hw)
    tg, tb = Trace(), Trace()
    want = [golden.prefill(PROMPT, tg)] + [golden.decode(t, tg) for t in (9, 250, 0)]
    got = [budget.prefill(PROMPT, tb)] + [budget.decode(t, tb) for t in (9, 250, 0)]
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(bits(a), bits(b))
    for la, lb in zip(tg.layers, tb.layers, strict=True):
        for key in la:
            np.testing.assert_array_equal(bits(la[key]), bits(lb[key]), err_msg=key)


def test_head_fp16_variant_is_the_hardwares_fp16_head():
    weights = random_weights(model_preset("tiny"), seed=4)
    want = GoldenModel(weights, HW.replace(lm_head_format="fp16")).prefill(PROMPT[:9])
    got = BudgetModel(weights, HW, variants={"head_fp16"}).prefill(PROMPT[:9])
    np.testing.assert_array_equal(bits(want), bits(got))


def _ftz_case():
    """Subnormal embedding entries that reach the residual stream untouched: o_proj and
    down_proj are all zero, so h stays the embedding (flushed by the hardware, kept by IEEE)."""
    weights = random_weights(model_preset("tiny"), seed=1)
    for layer in weights.layers:
        for name in ("o_proj", "down_proj"):
            t = layer.proj[name]
            layer.proj[name] = TernaryTensor(np.zeros_like(t.trits), t.weight_scale)
    weights.embed[:, :5] = np.float32(3e-39)
    return weights


def test_every_knob_and_variant_changes_something():
    """No knob is dead: making it exact alone changes a traced value or the logits, or (where
    the hardware's other approximations hide it) putting it back into the all-exact model does."""
    silu = random_weights(model_preset("tiny-silu"), seed=3)
    cases = {k: (silu, HW) for k in knobs_for(silu.config, HW)}
    cases["lm_head_fp16"] = (silu, HW.replace(lm_head_format="fp16"))
    cases["ftz"] = (_ftz_case(), HW)
    assert set(cases) == set(KNOBS)
    base = {}
    for knob, (weights, hw) in cases.items():
        key = (id(weights), hw)
        if key not in base:
            everything = knobs_for(weights.config, hw)
            base[key] = (run(weights, hw), run(weights, hw, everything), everything)
        hardware, exact, everything = base[key]
        changed = differs(hardware, run(weights, hw, {knob})) or \
            differs(exact, run(weights, hw, set(everything) - {knob}))
        assert changed, f"knob {knob} changes nothing"
    for variant in VARIANTS:
        assert differs(base[(id(silu), HW)][0], run(silu, HW, variants={variant})), variant


@pytest.mark.parametrize("formats", [(), ("kv_int8",), ("q_int8",), ("kv_int8", "q_int8")])
def test_attention_paths_against_float64(formats):
    """Each mix of int8 and float q / K / V (the rest exact) is softmax attention in float64 on
    the dequantised values, to float32 rounding."""
    weights = random_weights(model_preset("tiny"), seed=3)
    c = weights.config
    model = BudgetModel(weights, HW, set(knobs_for(c, HW)) - set(formats))
    trace = Trace()
    model.prefill(PROMPT[:16], trace)
    layer = trace.layers[0]
    q, k, v = (layer[n].astype(np.float64) for n in ("q", "k", "v"))
    if "kv_int8" in formats:
        k, v = ((x_q * d[..., None]).astype(np.float64) for x_q, d in (quantize(layer["k"]), quantize(layer["v"])))
    if "q_int8" in formats:
        q_q, d_q = quantize(layer["q"])
        q = (q_q * d_q[..., None]).astype(np.float64)
    k, v = np.repeat(k, c.group_size, axis=1), np.repeat(v, c.group_size, axis=1)
    t = q.shape[0]
    s = np.einsum("thd,shd->hts", q, k) / np.sqrt(c.head_dim)
    s = np.where(np.arange(t)[None, :] > np.arange(t)[:, None], -np.inf, s)
    p = np.exp(s - s.max(-1, keepdims=True))
    want = np.einsum("hts,shd->thd", p / p.sum(-1, keepdims=True), v).reshape(t, -1)
    assert np.max(np.abs(layer["attn"] - want)) <= 1e-6 * np.max(np.abs(want))


def test_ftz_numerics():
    tiny = np.float32(1e-20)
    assert Numerics((), 4).mul(tiny, tiny) == 0
    assert Numerics({"ftz"}, 4).mul(tiny, tiny) > 0


@pytest.mark.parametrize("preset", ["tiny", "tiny-silu"])
def test_all_exact_is_the_float_reference(preset):
    weights = random_weights(model_preset(preset), seed=5)
    exact = BudgetModel(weights, HW, knobs_for(weights.config, HW))
    tokens, logits, states = reference_run(ReferenceModel(weights, max_context=HW.max_context), PROMPT, 12,
                                           weights.config.num_layers)
    r = measure(exact, PROMPT, tokens, logits, states)
    assert r["tokens_agree"] and r["min_logits_cosine"] >= 1 - EXACT_TOLERANCE, r
    for layer in r["layers"]:
        assert min(v for k, v in layer.items() if k != "layer") >= 1 - EXACT_TOLERANCE, layer
    # and the all-hardware model is measurably worse: the budget has something to explain
    hardware = measure(BudgetModel(weights, HW), PROMPT, tokens, logits, states)
    assert 1 - hardware["min_logits_cosine"] > 1e3 * (1 - r["min_logits_cosine"])


def test_error_budget_report():
    weights = random_weights(model_preset("tiny"), seed=0)
    prompt = PROMPT[:10]
    report = error_budget(weights, HW, prompt, 3, knobs=["kv_int8", "exp"], extra=[["kv_int8", "kv_fp16"]])
    json.dumps(report)
    names = [c["name"] for c in report["configurations"]]
    assert names == ["hardware", "fix kv_int8", "fix exp", "keep kv_int8", "keep exp", "all exact",
                     "fix kv_int8 use kv_fp16"]
    assert report["configurations"][-1]["kind"] == "formats"
    hardware = report["configurations"][0]
    assert len(hardware["step_logits_cosine"]) == 3 and len(hardware["layers"]) == weights.config.num_layers
    # step 0 of the hardware row is what `tellme compare` reports
    assert hardware["step_logits_cosine"][0] == pytest.approx(compare(weights, HW, prompt)["logits_cosine"], abs=1e-12)
    assert report["reference_tokens"] == [int(np.argmax(l)) for l in reference_run(
        ReferenceModel(weights, max_context=HW.max_context), prompt, 3, 2)[1]]
    assert len(budget_table(report)) == 1 + len(names)
    with pytest.raises(ValueError, match="unknown"):
        error_budget(weights, HW, prompt, 3, knobs=["kv_int9"])
    with pytest.raises(ValueError, match="steps"):
        error_budget(weights, HW, prompt, 0)
    with pytest.raises(ValueError, match="head_fp16"):
        BudgetModel(weights, HW.replace(lm_head_format="fp16"), variants={"head_fp16"})


def test_compare_budget_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "budget.json"
    prompt = ",".join(str(i) for i in PROMPT)
    assert main(["compare", "--preset", "tiny", "--hardware", "sim-small", "--prompt-ids", prompt, "--budget",
                 "--steps", "3", "--quiet", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    for row in ("hardware", "fix rsqrt", "keep lm_head_int8", "all exact", "min logits cos", "1st argmax diff"):
        assert row in text
    assert "kv_int8" not in text and "q_int8" not in text      # sim-small's fp32 attention has no int8 sites
    data = json.loads(out.read_text())
    assert data["steps"] == 3 and data["prompt_ids"] == PROMPT
    assert {c["name"] for c in data["configurations"]} >= {"hardware", "all exact", "fix rsqrt", "keep rsqrt"}
    assert data["configurations"][-1]["min_logits_cosine"] >= 1 - EXACT_TOLERANCE


@pytest.mark.parametrize("extra, message", [
    (["--budget", "--steps", "0"], "--steps must be >= 1"),
    (["--budget", "--steps", "-3"], "--steps must be >= 1"),
    (["--steps", "4"], "--steps applies only with --budget"),
    (["--budget", "--steps", "300"], "exceed max_context"),
])
def test_compare_budget_bad_steps(extra, message, capsys):
    assert main(["compare", "--preset", "tiny", "--hardware", "sim-small", "--prompt-ids", "1,2,3", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tellme: error:") and message in err[0]


@pytest.mark.oracle
def test_transformers_made_checkpoint(hf, tmp_path):
    """A checkpoint transformers writes itself loads into tellme; the float reference and the
    all-exact budget model match transformers (float32 and float64)."""
    from tellme.gen.checkpoint import load_checkpoint
    from tellme.sim.hf_random import hf_logits, write_hf_random_checkpoint
    path = write_hf_random_checkpoint(tmp_path / "hf", vocab_size=300, hidden_size=96, intermediate_size=256,
                                      num_layers=2, num_heads=6, num_kv_heads=2, hidden_act="silu",
                                      tie_word_embeddings=False, max_position_embeddings=256, seed=1)
    config = json.loads((path / "config.json").read_text())
    assert config["quantization_config"]["linear_class"] == "bitlinear"
    weights = load_checkpoint(path)
    c = weights.config
    assert (c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_act,
            c.tie_word_embeddings) == (96, 2, 6, 2, 16, "silu", False)
    assert all(np.all(l.input_norm == 1) for l in weights.layers)          # transformers' init
    prompt = PROMPT[:8]
    tokens, logits, states = reference_run(ReferenceModel(weights, max_context=HW.max_context), prompt, 4, 2)
    seq = prompt + tokens[:-1]
    for dtype in ("float32", "float64"):
        theirs = hf_logits(path, seq, dtype)[len(prompt) - 1:]
        assert [int(np.argmax(l)) for l in theirs] == tokens
        assert min(cosine(a, b) for a, b in zip(logits, theirs)) >= 1 - EXACT_TOLERANCE
    exact = measure(BudgetModel(weights, HW, knobs_for(c, HW)), prompt, tokens, logits, states)
    assert exact["tokens_agree"] and exact["min_logits_cosine"] >= 1 - EXACT_TOLERANCE


@pytest.mark.parametrize("preset", ["tiny", "tiny-silu"])
def test_fp32_attention_format_is_the_budgets_float_kv_and_query(preset):
    """The hardware's fp32 attention format (``attn_format``) is the configuration the budget
    measured as "fix kv_int8+q_int8" (float32 K/V cache and query, the score in the fp32
    format's order), bit for bit: the budget's numbers for it are the format's."""
    weights = random_weights(model_preset(preset), seed=6)
    want = run(weights, HW.replace(attn_format="fp32"))
    got = run(weights, HW, exact={"kv_int8", "q_int8"})
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(bits(a), bits(b))
    assert differs(want, run(weights, HW))
