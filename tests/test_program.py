"""The sequencer program (gen/program.py): its memory layouts agree with the image writer, and
executed on DDR bytes by the numpy step machine (sim/machine.py) it computes exactly what the
golden model computes, call after call (prefill chunks, then decode steps)."""

import numpy as np
import pytest

from tellme.config import ConfigError, ModelConfig, hardware_preset, model_preset
from tellme.contract.layouts import ImageFormat, image_sections, page_up
from tellme.gen.image import read_header, write_image
from tellme.gen.program import Attention, LmHead, MatMul, NormQuant, build_program
from tellme.sim.golden import GoldenModel
from tellme.sim.machine import StepMachine
from tellme.weights import random_weights

SMALL = hardware_preset("sim-small")
# Shapes that divide nothing evenly: padding to lanes, groups, beats and tiles.
ODD = ModelConfig(name="odd", vocab_size=288, hidden_size=160, intermediate_size=416, num_layers=2,
                  num_heads=5, num_kv_heads=1, head_dim=32, hidden_act="silu", sub_norms=True,
                  tie_word_embeddings=False, max_position_embeddings=256)


def image_of(weights, hw, tmp_path):
    path = tmp_path / "model.img"
    write_image(weights, hw, path)
    return path


@pytest.mark.parametrize("preset", ["tiny", "tiny-silu", "bitnet-b1.58-large", "bitnet-b1.58-2B-4T"])
def test_image_sections_are_where_the_writer_puts_them(preset, tmp_path):
    config = model_preset(preset)
    hw = SMALL if preset.startswith("tiny") else hardware_preset("kv260")
    sections = image_sections(config, ImageFormat.of(hw))
    offsets = [s.offset for s in sections.values()]
    assert offsets == sorted(offsets) and all(o % 4096 == 0 for o in offsets)
    assert all(b.offset >= a.offset + a.size for a, b in zip(sections.values(), list(sections.values())[1:]))
    if preset.startswith("tiny"):
        header = read_header(image_of(random_weights(config, seed=1), hw, tmp_path))
        written = {s["name"]: (s["offset"], s["size"], s["dtype"], tuple(s["shape"])) for s in header["sections"]}
        assert written == {n: (s.offset, s.size, s.dtype, s.shape) for n, s in sections.items()}


def test_program_structure_follows_the_schedule():
    config, hw = model_preset("tiny"), SMALL
    program = build_program(config, hw)
    ops = [s.op for s in program.steps]
    assert ops[0] == "EMBED" and ops[-1] == "LM_HEAD"
    per_layer = ["NORM_QUANT", "MATMUL", "MATMUL", "MATMUL"] + ["ATTENTION"] * 4 + \
        ["NORM_QUANT", "MATMUL", "NORM_QUANT", "MATMUL", "MATMUL", "NORM_QUANT", "MATMUL"]
    assert ops[1:-1] == per_layer * config.num_layers
    mats = [s for s in program.steps if isinstance(s, MatMul)]
    assert [m.proj for m in mats[:7]] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    assert [(m.dst, m.residual) for m in mats if m.residual] == [("h1", "h0"), ("h0", "h1")] * config.num_layers
    # up_proj applies the gated activation to gate_proj's rows; the norm before down_proj reads it
    assert [(m.proj, m.dst, m.gate) for m in mats if m.gate] == [("up_proj", "up", "gate")] * config.num_layers
    norms = [s for s in program.steps if isinstance(s, NormQuant) and s.layer == 0]
    assert [n.src for n in norms] == ["h0", "attn", "h1", "up"]
    # GQA 2:1 with one core per unit: two passes per kv head, the first appends k/v.
    attn = [s for s in program.steps if isinstance(s, Attention) and s.layer == 0]
    assert [(a.kv_head, a.heads, a.write_kv) for a in attn] == [(0, (0,), True), (0, (1,), False),
                                                               (1, (2,), True), (1, (3,), False)]
    listing = program.listing()
    assert f"steps: {len(program.steps)}" in listing and "q_proj 64x64" in listing
    assert len(listing.splitlines()) == len(program.steps) + 8


def test_program_of_the_kv260_large_model():
    program = build_program(model_preset("bitnet-b1.58-large"), hardware_preset("kv260"))
    counts = program.counts()
    assert counts == {"EMBED": 1, "NORM_QUANT": 4 * 24, "MATMUL": 7 * 24, "ATTENTION": 16 * 24, "LM_HEAD": 1}
    down = next(s for s in program.steps if isinstance(s, MatMul) and s.proj == "down_proj")
    assert (down.tiles, down.tile_rows, down.blocks) == (3, 512, 13)
    assert isinstance(program.steps[-1], LmHead) and program.steps[-1].fmt == "int8"
    # docs section 1's hand figures: 91,648 lane-block entries per layer (G=5, P=64), one pass
    # per T=8 tokens: 16 passes for a 128-token chunk, one for a decode step
    assert program.tlmm_cycles(128) == 16 * 91_648 * 24
    assert program.tlmm_cycles(1) == program.tlmm_cycles(8) == 91_648 * 24


def test_a_model_the_hardware_cannot_run_is_refused():
    config = model_preset("tiny")
    with pytest.raises(ConfigError, match="max_context"):
        build_program(config, SMALL.replace(max_context=512, prefill_chunk=16))
    odd = dict(ODD.to_dict(), name="bad")
    with pytest.raises(ConfigError, match="hidden_size: 162 gives an embedding or residual row of 648 bytes, "
                                          "not a multiple of the 16-byte row unit"):
        build_program(ModelConfig.from_dict(dict(odd, hidden_size=162)), SMALL)
    with pytest.raises(ConfigError, match="head_dim: 20 gives a RoPE table row"):
        build_program(ModelConfig.from_dict(dict(odd, head_dim=20)), SMALL)
    with pytest.raises(ConfigError, match="head_dim: 24 gives a RoPE table row .* of 48 bytes, not a multiple of "
                                          "the 32-byte row unit .*ew_lanes 8"):
        build_program(ModelConfig.from_dict(dict(odd, head_dim=24)), SMALL.replace(ew_lanes=8, gating_lanes=2))
    # Every preset runs on the hardware presets it is meant for.
    for preset in ("bitnet-b1.58-large", "bitnet-b1.58-2B-4T"):
        build_program(model_preset(preset), hardware_preset("kv260"))


def run_calls(machine_or_golden, calls):
    out = []
    position = 0
    for ids in calls:
        if isinstance(machine_or_golden, StepMachine):
            logits, token = machine_or_golden.call(ids, position)
            assert token == int(np.argmax(logits))
        else:
            logits = machine_or_golden.forward(ids)
        out.append(logits)
        position += len(ids)
    return out


@pytest.mark.parametrize("config, hw", [
    (model_preset("tiny"), SMALL),
    (model_preset("tiny-silu"), SMALL.replace(lm_head_format="fp16", attn_heads_parallel=2)),
    (ODD, SMALL.replace(prefill_chunk=12, attn_tile=8)),
    (model_preset("tiny"), SMALL.replace(attn_format="int8")),
    (ODD, SMALL.replace(prefill_chunk=12, attn_tile=8, attn_format="int8")),
], ids=["tiny-relu2-gqa", "tiny-silu-mha-fp16", "odd-shapes", "tiny-int8-attention", "odd-shapes-int8-attention"])
def test_step_machine_equals_golden_model(config, hw, tmp_path):
    """Two prefill chunks (the second starting inside an attention tile), then decode steps
    across a tile boundary: every call's logits equal the golden model's, bit for bit."""
    weights = random_weights(config, seed=3)
    image = image_of(weights, hw, tmp_path).read_bytes()
    rng = np.random.default_rng(4)
    chunk = hw.prefill_chunk
    prompt = rng.integers(0, config.vocab_size, chunk + 5).tolist()
    calls = [prompt[:chunk], prompt[chunk:]] + [[int(t)] for t in rng.integers(0, config.vocab_size, 6)]
    machine = StepMachine(build_program(config, hw), image)
    got = run_calls(machine, calls)
    want = run_calls(GoldenModel(weights, hw), calls)
    for i, (a, b) in enumerate(zip(got, want)):
        assert a.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"call {i}"


def test_step_machine_refuses_bad_calls(tmp_path):
    config, hw = model_preset("tiny"), SMALL
    machine = StepMachine(build_program(config, hw), image_of(random_weights(config), hw, tmp_path).read_bytes())
    with pytest.raises(ValueError, match="1..16 tokens"):
        machine.call([1] * 17, 0)
    with pytest.raises(ValueError, match="context overflow"):
        machine.call([1, 2], hw.max_context - 1)
    with pytest.raises(ValueError, match="vocabulary"):
        machine.call([config.vocab_size], 0)


def test_regions_are_page_aligned():
    program = build_program(model_preset("tiny"), SMALL)
    assert all(a.offset % 4096 == 0 and a.row_bytes % 16 == 0 for a in program.scratch.values())
    assert program.io.logits_offset == page_up(4 * SMALL.prefill_chunk)


@pytest.mark.parametrize("attn_format, row, records", [("int8", 16, True), ("fp32", 64, False)])
def test_kv_cache_map_lays_out_each_format(attn_format, row, records):
    """Per (layer, kv head): K rows, V rows (hd int8 or 4 hd float32 bytes per position), then the
    int8 format's scale records, every array on a 4 KiB page; the fp32 format has no records
    (s_base 0) and the program's KV region is the map's size."""
    from tellme.contract.layouts import PAGE, kv_bytes_per_token, kv_cache_map, kv_row_bytes
    assert kv_row_bytes(16, attn_format) == row
    bases, total = kv_cache_map(0, 2, 2, 300, 16, attn_format)
    rows = -(-300 * row // PAGE) * PAGE
    per_head = 2 * rows + (-(-300 * 16 // PAGE) * PAGE if records else 0)
    assert total == 4 * per_head
    b = bases[1, 0]
    assert (b.k_base, b.v_base) == (2 * per_head, 2 * per_head + rows)
    assert b.s_base == (2 * per_head + 2 * rows if records else 0)
    assert kv_bytes_per_token(2, 2, 16, attn_format) == 4 * (2 * row + (16 if records else 0))
    program = build_program(model_preset("tiny"), SMALL.replace(attn_format=attn_format))
    assert program.kv_bytes == kv_cache_map(0, 2, 2, SMALL.max_context, 16, attn_format)[1]
