"""Configurations validate themselves and name the field at fault."""

import json

import pytest

from tellme.config import (HARDWARE_PRESETS, MODEL_PRESETS, ConfigError, HardwareConfig, ModelConfig,
                           hardware_preset, load_json_config, model_preset)


def test_presets_are_valid_and_have_the_published_shapes():
    large = model_preset("bitnet-b1.58-large")
    assert (large.hidden_size, large.intermediate_size, large.num_layers, large.head_dim) == (1536, 4096, 24, 96)
    assert large.hidden_act == "silu" and large.num_kv_heads == large.num_heads
    b2 = model_preset("bitnet-b1.58-2B-4T")
    assert b2.group_size == 4 and b2.hidden_act == "relu2" and b2.sub_norms
    # facts.md: ternary weights per token, about 679 M (large) and 2.08 G (2B4T)
    assert round(large.ternary_weights_per_token() / 1e6) == 679
    assert round(b2.ternary_weights_per_token() / 1e9, 2) == 2.08
    for m in MODEL_PRESETS.values():
        assert ModelConfig.from_dict(m.to_dict()) == m
    for h in HARDWARE_PRESETS.values():
        assert HardwareConfig.from_dict(h.to_dict()) == h


@pytest.mark.parametrize("change, field", [
    ({"num_kv_heads": 3}, "num_kv_heads"),
    ({"head_dim": 15}, "head_dim"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"hidden_size": 0}, "hidden_size"),
    ({"num_layers": 1.5}, "num_layers"),
    ({"rms_norm_eps": 0}, "rms_norm_eps"),
    ({"rope_theta": 0.5}, "rope_theta"),
])
def test_model_errors_name_the_field(change, field):
    data = {**model_preset("tiny").to_dict(), **change}
    with pytest.raises(ConfigError, match=f"^{field}:"):
        ModelConfig.from_dict(data)


@pytest.mark.parametrize("change, field", [
    ({"tlmm_group": 6}, "tlmm_group"),
    ({"tlmm_lanes": 0}, "tlmm_lanes"),
    ({"ew_lanes": 6}, "ew_lanes"),
    ({"gating_lanes": 3}, "gating_lanes"),
    ({"gating_lanes": 16}, "gating_lanes"),
    ({"rope_lanes": 3}, "rope_lanes"),
    ({"rope_lanes": 16}, "rope_lanes"),
    ({"axi_data_width": 96}, "axi_data_width"),
    ({"lm_head_format": "int4"}, "lm_head_format"),
    ({"attn_format": "fp16"}, "attn_format"),
    ({"prefill_chunk": 100}, "prefill_chunk"),
    ({"clock_mhz": -1}, "clock_mhz"),
])
def test_hardware_errors_name_the_field(change, field):
    with pytest.raises(ConfigError, match=f"^{field}:"):
        HardwareConfig.from_dict({**HardwareConfig().to_dict(), **change})


def test_check_model_and_unknowns(tmp_path):
    with pytest.raises(ConfigError, match="max_context"):
        hardware_preset("kv260").check_model(model_preset("tiny"))
    with pytest.raises(ConfigError, match="unknown field"):
        ModelConfig.from_dict({**model_preset("tiny").to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="unknown model preset"):
        model_preset("gpt-5")
    path = tmp_path / "hw.json"
    path.write_text(json.dumps({"tlmm_group": 3}))
    assert load_json_config(path, HardwareConfig).tlmm_group == 3
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_json_config(path, HardwareConfig)


@pytest.mark.parametrize("model", ["bitnet-b1.58-large", "bitnet-b1.58-2B-4T"])
def test_gating_lanes_cover_the_tlmm_output_rate(model):
    """The KV260 preset's gating lanes keep up with gate_proj/up_proj outputs in prefill: T
    rows' results every ceil(hidden / (G P)) cycles (one lane-block per cycle)."""
    hw, cfg = hardware_preset("kv260"), model_preset(model)
    blocks = -(-cfg.hidden_size // (hw.tlmm_group * hw.tlmm_lanes))
    assert hw.gating_lanes >= hw.tlmm_tokens / blocks
    assert hw.gating_lanes < hw.ew_lanes          # the point: fewer SiLU units than stream lanes
