"""The generated top level (gen/top.py): the sequencer ROM encodes the program, and BitNet
generation on the Verilog under Verilator, driven by the host driver through the register map,
equals the golden model bit for bit (tokens and every step's logits), with the call errors of
the register map reported as messages."""

import dataclasses

import numpy as np
import pytest
from amaranth.lib import data

from tellme.config import ConfigError, hardware_preset, model_preset
from tellme.gen.program import build_program
from tellme.gen.top import TellmeTop, encode_program
from tellme.hw.sequencer import OPS, RELOCATIONS, step_layout
from tellme.sim.backends import generate, make_backend
from tellme.weights import random_weights

# Chunks of 12 tokens with attention tiles of 8: the second chunk starts inside a tile.
HW = hardware_preset("sim-small").replace(prefill_chunk=12, max_context=64)


def _decode(word: int, layout: data.StructLayout, commands) -> tuple[str, dict]:
    op = OPS[word & 0b111]
    cmd_bits = word >> layout["cmd"].offset
    cmd_layout = commands[op]
    view = data.Const(cmd_layout, cmd_bits & ((1 << cmd_layout.size) - 1))
    return op, {name: view[name] for name, _ in cmd_layout}


def test_program_rom_encodes_every_step():
    model = model_preset("tiny")
    top = TellmeTop(model, HW)
    program = top.program
    commands = {op: path.cmd.payload.shape() for op, path in top.paths.items()}
    words = encode_program(program, commands)
    # One word per step, and the LM head's last-row NORM_QUANT before it.
    assert len(words) == len(program.steps) + 1
    layout = step_layout(commands)
    ops = [_decode(w, layout, commands)[0] for w in words]
    assert ops[0] == "EMBED" and ops[-2:] == ["NORM_QUANT", "LM_HEAD"]
    assert ops.count("MATMUL") == 7 * model.num_layers
    # Address fields hold offsets into their region: the first MATMUL's weights are q_proj's
    # section of the image, its destination the q array of the scratch region.
    first = next(w for w in words if _decode(w, layout, commands)[0] == "MATMUL")
    _, fields = _decode(first, layout, commands)
    assert int(fields["base"][0]) == program.image["layers.0.q_proj"].offset
    assert int(fields["dst"]) == program.scratch["q"].offset
    assert set(RELOCATIONS) == set(OPS)


def test_top_refuses_a_model_the_hardware_cannot_run():
    model = dataclasses.replace(model_preset("tiny"), hidden_size=66)
    with pytest.raises(ConfigError, match="hidden_size"):
        TellmeTop(model, HW)
    with pytest.raises(ConfigError, match="attn_heads_parallel"):
        TellmeTop(model_preset("tiny"), HW.replace(attn_heads_parallel=3))


def _golden(weights, hw, prompt, new_tokens):
    return generate(make_backend("golden", weights, hw), prompt, new_tokens)


@pytest.mark.rtl
@pytest.mark.parametrize("preset, new_tokens", [("tiny", 17), ("tiny-silu", 10)])
def test_generation_on_the_rtl_equals_golden(preset, new_tokens):
    from tellme.sim.top_harness import rtl_generate
    weights = random_weights(model_preset(preset), seed=5)
    rng = np.random.default_rng(7)
    prompt = [int(i) for i in rng.integers(0, weights.config.vocab_size, size=20)]
    # Decode from position 20 crosses the tile boundary at 24 (and, with 17 tokens, 32).
    want_ids, want_logits = _golden(weights, HW, prompt, new_tokens)
    # Before the generation, on the same design: calls the hardware must refuse or survive.
    errors = [] if preset != "tiny" else [
        {"op": "expect_error", "call": {"op": "start", "seq_pos": 0, "token_count": 0}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": 0, "token_count": HW.prefill_chunk + 1}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": 0, "token_count": 2, "decode": True}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": HW.max_context - 3, "token_count": 5}},
        {"op": "bases", "bases": {"image": 0x1000_0000}},          # below the DDR model: DECERR
        {"op": "expect_error", "call": {"op": "prefill", "ids": prompt[:3]}},
        {"op": "restore_bases"},
        {"op": "soft_reset_during", "call": {"seq_pos": 0, "token_count": 12}, "after": 20e-6},
    ]
    got_ids, got_logits, run = rtl_generate(weights, HW, prompt, new_tokens, before=errors)
    if errors:
        messages = run.errors
        for message, code in zip(messages[:4], ["BAD_TOKEN_COUNT"] * 3 + ["CONTEXT_OVERFLOW"]):
            assert message is not None and code in message, (code, message)
        assert "AXI_READ" in messages[4] and messages[4].startswith("prefill call at position 0 (3 tokens)"), messages[4]
        assert messages[5] == {"busy_when_reset": 1, "busy_after": 0}, messages[5]
    assert got_ids == want_ids
    for step, (got, want) in enumerate(zip(got_logits, want_logits)):
        assert np.array_equal(got.view(np.uint32), np.asarray(want, np.float32).view(np.uint32)), \
            f"step {step}: logits differ at {np.flatnonzero(got.view(np.uint32) != np.asarray(want, np.float32).view(np.uint32))[:8]}"
    kinds = [c["kind"] for c in run.calls]
    assert kinds == ["prefill", "prefill"] + ["decode"] * (new_tokens - 1)
    assert all(c["cycles"] > 0 for c in run.calls)


@pytest.mark.rtl
def test_trace_names_the_broken_unit():
    """The trace monitor compares every step with the step machine: clean, it reports bit-exact;
    with one step's writes broken (bit 0 flipped, same build), it names that unit and layer."""
    from tellme.sim.trace import trace_generation
    weights = random_weights(model_preset("tiny"), seed=5)
    prompt = [3, 14, 15, 92, 65]
    clean = trace_generation(weights, HW, prompt, 2)
    assert clean.mismatch is None and clean.values_compared > 0, str(clean)
    program = build_program(weights.config, HW)
    broken = next(i for i, s in enumerate(program.steps)
                  if getattr(s, "proj", None) == "o_proj" and s.layer == 1)
    report = trace_generation(weights, HW, prompt, 2, fault_step=broken)
    assert report.mismatch is not None, str(report)
    assert report.mismatch.unit.startswith("MATMUL o_proj") and report.mismatch.layer == 1, str(report)
    assert report.mismatch.call == 0 and report.mismatch.element == 0, str(report)


def test_generate_writes_the_verilog_and_its_description(tmp_path, capsys):
    """`tellme generate`: the top level's Verilog, the hand-written Verilog it needs (none
    here: the DDR model is the testbench's), a JSON of ports and parameters, and a summary."""
    import json

    from tellme.cli import main
    out = tmp_path / "gen"
    assert main(["generate", "--preset", "tiny", "--hardware", "sim-small", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tellme generate: tiny on sim hardware" in text and str(out / "tellme_top.v") in text
    verilog = (out / "tellme_top.v").read_text()
    assert "module tellme_top(" in verilog and "tellme_ddr_mem" not in verilog
    info = json.loads((out / "tellme_top.json").read_text())
    assert set(info["ports"]) >= {"s_axil", "m_axi_hp0", "m_axi_hp3", "irq"}
    assert info["program"]["rom_words"] == info["program"]["steps"] + 1
    assert [r["name"] for r in info["register_map"]][:3] == ["ID", "VERSION", "CONFIG_HASH"]
    for port in ("s_axil__awvalid", "m_axi_hp0__araddr", "m_axi_hp0__wdata", "irq"):
        assert port in verilog
    assert not list(out.glob(".*.tmp"))
