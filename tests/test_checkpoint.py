"""Hugging Face BitNet checkpoints: synthetic writer, numpy loader, error handling, HF interop."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from tellme.config import model_preset
from tellme.gen.checkpoint import (CheckpointError, SafetensorsFile, bf16_bits_to_float32,
                                   float32_to_bf16_bits, inspect_checkpoint, load_checkpoint,
                                   pack_ternary, round_to_bfloat16, unpack_ternary)
from tellme.gen.synthetic import (full_precision_weight, make_synthetic, save_safetensors,
                                  write_checkpoint)
from tellme.weights import PROJECTIONS, TernaryTensor, random_weights

Q0 = "model.layers.0.self_attn.q_proj"


# ----------------------------------------------------------------------------------------------
# helpers

def _stored(x, dtype):
    return round_to_bfloat16(x) if dtype == "bfloat16" else x


def assert_loaded_equals(loaded, src, *, style, dtype):
    """Loaded weights are exactly what `src` becomes when stored in (style, dtype)."""
    assert loaded.config == src.config
    np.testing.assert_array_equal(loaded.embed, _stored(src.embed, dtype))
    np.testing.assert_array_equal(loaded.lm_head, _stored(src.lm_head, dtype))
    np.testing.assert_array_equal(loaded.final_norm, _stored(src.final_norm, dtype))
    if src.config.tie_word_embeddings:
        assert loaded.lm_head is loaded.embed
    for a, b in zip(src.layers, loaded.layers):
        for f in ("input_norm", "post_attention_norm", "attn_sub_norm", "ffn_sub_norm"):
            if getattr(a, f) is None:
                assert getattr(b, f) is None
            else:
                np.testing.assert_array_equal(getattr(b, f), _stored(getattr(a, f), dtype))
        for p in PROJECTIONS:
            np.testing.assert_array_equal(b.proj[p].trits, a.proj[p].trits)
            want = a.proj[p].weight_scale
            if style == "packed" and dtype == "bfloat16":
                want = round_to_bfloat16(np.array([want], np.float32))[0]
            got = b.proj[p].weight_scale
            if style == "full" and not _has_reciprocal(want):
                # no float32 m has 1/m == s_w (e.g. 63.25): one ulp is as near as float32 gets
                assert _ulps(got, want) <= 1, (p, got, want)
            else:
                # full style: the writer searches W so numpy's float32 mean gives s_w back exactly
                assert got == want, (p, got, want)


def _ulps(a, b):
    return abs(int(np.float32(a).view(np.int32)) - int(np.float32(b).view(np.int32)))


def _has_reciprocal(s):
    s = np.float32(s)
    m0 = (np.float32(1) / s).view(np.int32)
    return any(np.float32(1) / (m0 + d).view(np.float32) == s for d in range(-3, 4))


def _raw(path):
    with SafetensorsFile(path) as f:
        return {n: (("BF16", f.array(n).copy()) if f.tensors[n].dtype == "BF16" else f.array(n).copy())
                for n in f.names()}


def _rewrite(path, edit):
    tensors = _raw(path)
    edit(tensors)
    save_safetensors(path, tensors)


def _poke(path, tensor, offset, data: bytes):
    """Overwrite bytes of one tensor's data in place."""
    with SafetensorsFile(path) as f:
        pos = f.data_start + f.tensors[tensor].begin + offset
    with open(path, "r+b") as fh:
        fh.seek(pos)
        fh.write(data)


def _edit_config(ckpt, **changes):
    p = ckpt / "config.json"
    cfg = json.loads(p.read_text())
    for k, v in changes.items():
        if v is _DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    p.write_text(json.dumps(cfg))


_DELETE = object()


def _expect(ckpt, *fragments):
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(ckpt)
    msg = str(e.value)
    assert "\n" not in msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"
    return msg


@pytest.fixture
def packed(tmp_path):
    path = tmp_path / "tiny"
    make_synthetic("tiny", path, style="packed")
    return path


@pytest.fixture
def full(tmp_path):
    path = tmp_path / "tiny-silu"
    make_synthetic("tiny-silu", path, style="full")
    return path


# ----------------------------------------------------------------------------------------------
# round trips

@pytest.mark.parametrize("shards", [1, 3])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("style", ["packed", "full"])
@pytest.mark.parametrize("preset", ["tiny", "tiny-silu"])   # GQA + tied, MHA + untied
def test_round_trip(tmp_path, preset, style, dtype, shards):
    path = tmp_path / preset
    src = make_synthetic(preset, path, style=style, dtype=dtype, shards=shards, seed=3)
    files = sorted(p.name for p in path.iterdir())
    tokenizer = ["tokenizer.json", "tokenizer_config.json"]
    if shards == 1:
        assert files == ["config.json", "model.safetensors", *tokenizer]
    else:
        assert files == ["config.json"] + [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)] + \
            ["model.safetensors.index.json", *tokenizer]
        index = json.loads((path / "model.safetensors.index.json").read_text())
        assert index["metadata"]["total_size"] == sum(
            (path / f).stat().st_size - 8 - int.from_bytes((path / f).read_bytes()[:8], "little")
            for f in files if f.startswith("model-"))
    info = inspect_checkpoint(path)
    assert (info.family, info.style) == ("bitnet", style)
    assert_loaded_equals(load_checkpoint(path), src, style=style, dtype=dtype)


def test_round_trip_tied_and_untied_gqa_and_mha(tmp_path):
    for tie in (True, False):
        for kv in (1, 2, 4):
            cfg = dataclasses.replace(model_preset("tiny"), name=f"t{tie}{kv}", tie_word_embeddings=tie,
                                      num_kv_heads=kv)
            src = random_weights(cfg, seed=kv)
            path = write_checkpoint(src, tmp_path / cfg.name, style="packed", shards=2)
            loaded = load_checkpoint(path)
            assert_loaded_equals(loaded, src, style="packed", dtype="float32")
            has_head = "lm_head.weight" in json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
            assert has_head == (not tie)


def test_round_trip_1bitllm_style(tmp_path):
    cfg = dataclasses.replace(model_preset("tiny-silu"), name="tiny-1bit", sub_norms=False)
    for dtype in ("float32", "bfloat16"):
        path = tmp_path / dtype
        src = make_synthetic(cfg, path, style="full", dtype=dtype)
        hf = json.loads((path / "config.json").read_text())
        assert hf["architectures"] == ["BitnetForCausalLM"] and hf["model_type"] == "llama"
        assert "quantization_config" not in hf
        assert not any("sub_norm" in n for n in _raw(path / "model.safetensors"))
        info = inspect_checkpoint(path)
        assert (info.family, info.style) == ("1bitllm", "full")
        loaded = load_checkpoint(path)
        assert loaded.config.sub_norms is False
        assert_loaded_equals(loaded, src, style="full", dtype=dtype)
    with pytest.raises(CheckpointError, match="full-precision only"):
        make_synthetic(cfg, tmp_path / "p", style="packed")
    assert not (tmp_path / "p").exists()


def test_float16_and_float64_tensors_load(tmp_path):
    src = make_synthetic("tiny-silu", tmp_path / "m", style="full")

    def widen_narrow(t):
        for name, v in t.items():
            t[name] = v.astype(np.float16 if "norm" in name or "lm_head" in name else np.float64)
    _rewrite(tmp_path / "m" / "model.safetensors", widen_narrow)
    loaded = load_checkpoint(tmp_path / "m")
    np.testing.assert_array_equal(loaded.final_norm, src.final_norm.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(loaded.lm_head, src.lm_head.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(loaded.embed, src.embed)
    for a, b in zip(src.layers, loaded.layers):
        for p in PROJECTIONS:
            np.testing.assert_array_equal(a.proj[p].trits, b.proj[p].trits)


def test_full_style_weights_requantise_exactly(tmp_path):
    """Full-precision W re-quantises to the same trits, and mean|W| = 1/s_w (not W = trits/s_w)."""
    src = make_synthetic("tiny", tmp_path / "m", style="full")
    raw = _raw(tmp_path / "m" / "model.safetensors")
    t = src.layers[0].proj["q_proj"]
    w = raw[Q0 + ".weight"]
    q = TernaryTensor.quantize(w)
    np.testing.assert_array_equal(q.trits, t.trits)
    assert q.weight_scale == t.weight_scale
    naive = TernaryTensor.quantize(t.trits / t.weight_scale)      # the obvious encoding is wrong
    assert naive.weight_scale != t.weight_scale
    np.testing.assert_allclose(naive.weight_scale, t.weight_scale * t.trits.size / np.count_nonzero(t.trits),
                               rtol=1e-6)
    # random shapes and scales, bf16 too
    rng = np.random.default_rng(5)
    for shape in [(64, 64), (96, 160), (160, 64)]:
        for dtype in ("float32", "bfloat16"):
            tt = TernaryTensor.quantize(rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.001, 2))
            ww = full_precision_weight(tt, dtype)
            if dtype == "bfloat16":
                np.testing.assert_array_equal(round_to_bfloat16(ww), ww)
            qq = TernaryTensor.quantize(ww)
            np.testing.assert_array_equal(qq.trits, tt.trits)
            assert abs(int(qq.weight_scale.view(np.int32)) - int(tt.weight_scale.view(np.int32))) <= 1


def test_pack_layout_matches_reference():
    # facts.md: stored row r holds rows r, r+out/4, r+2out/4, r+3out/4 in bit pairs 0-1 .. 6-7, as w+1
    trits = np.array([[0, -1], [-1, 1], [-1, 1], [-1, 1], [1, 0], [0, -1], [1, -1], [1, -1]], np.int8)
    packed = pack_ternary(trits)
    assert packed.tolist() == [[0b10100001, 0b00011000], [0b10010000, 0b00001010]]   # HF docstring example
    np.testing.assert_array_equal(unpack_ternary(packed), trits)
    rng = np.random.default_rng(0)
    t = rng.integers(-1, 2, size=(40, 24)).astype(np.int8)
    np.testing.assert_array_equal(unpack_ternary(pack_ternary(t)), t)
    bad = packed.copy()
    bad[1, 0] |= 0b11 << 4
    with pytest.raises(CheckpointError, match=r"0b11.*weight row 5"):
        unpack_ternary(bad)


def test_bfloat16_codec():
    x = np.array([1.0, -2.5, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -7 + 2 ** -9, np.inf, -np.inf,
                  np.finfo(np.float32).max, 1e-40],
                 np.float32)
    bits = float32_to_bf16_bits(x)
    back = bf16_bits_to_float32(bits)
    # round to nearest, ties to even: 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6
    assert back[0] == 1.0 and back[1] == -2.5
    assert back[2] == 1.0 and back[3] == np.float32(1 + 2 ** -6) and back[4] == np.float32(1 + 2 ** -7)
    assert np.isposinf(back[5]) and np.isneginf(back[6])
    assert np.isposinf(back[7])        # float32 max rounds past the bf16 maximum
    assert 0 < back[8] < 2e-40         # subnormals survive
    assert np.isnan(bf16_bits_to_float32(float32_to_bf16_bits(np.array([np.nan], np.float32))))[0]
    y = np.random.default_rng(1).standard_normal(1000).astype(np.float32)
    r = round_to_bfloat16(y)
    assert np.all(np.abs(r - y) <= np.abs(y) * 2 ** -8)
    np.testing.assert_array_equal(round_to_bfloat16(r), r)
    try:
        import torch
    except ImportError:
        return
    z = np.concatenate([x, y, np.float32(2.0) ** np.arange(-140, 120, dtype=np.float32) * np.float32(1.00390625)])
    want = torch.from_numpy(z).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(float32_to_bf16_bits(z), want)


def test_names_and_config_mapping(tmp_path, packed):
    assert load_checkpoint(packed).config.name == "tiny"
    _edit_config(packed, _name_or_path=_DELETE)
    moved = tmp_path / "some-model"
    shutil.move(packed, moved)
    assert load_checkpoint(moved).config.name == "some-model"
    # transformers 4 style: top-level rope_theta, no head_dim, no num_key_value_heads
    _edit_config(moved, rope_parameters=_DELETE, rope_theta=12345.0, head_dim=_DELETE)
    assert load_checkpoint(moved).config.rope_theta == 12345.0
    _edit_config(moved, rope_parameters={"rope_type": "default", "rope_theta": 999.0}, rope_theta=_DELETE)
    assert load_checkpoint(moved).config.rope_theta == 999.0
    _edit_config(moved, rope_parameters={"rope_type": "yarn", "rope_theta": 999.0, "factor": 4.0})
    _expect(moved, "config.json", "yarn")
    # Hugging Face hub cache layout: models--org--name/snapshots/<commit>
    snap = tmp_path / "models--microsoft--tiny-bitnet" / "snapshots" / "0123abc"
    make_synthetic("tiny", snap)
    _edit_config(snap, _name_or_path=_DELETE)
    assert load_checkpoint(snap).config.name == "tiny-bitnet"


# ----------------------------------------------------------------------------------------------
# writer

def test_write_is_atomic(tmp_path, monkeypatch):
    import tellme.gen.synthetic as synthetic
    w = random_weights(model_preset("tiny"), seed=1)

    def boom(_):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(synthetic, "pack_ternary", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_checkpoint(w, tmp_path / "out", style="packed", shards=2)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    write_checkpoint(w, tmp_path / "out")
    with pytest.raises(CheckpointError, match="already exists"):
        write_checkpoint(w, tmp_path / "out")
    w2 = random_weights(model_preset("tiny"), seed=2)
    write_checkpoint(w2, tmp_path / "out", style="full", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert_loaded_equals(load_checkpoint(tmp_path / "out"), w2, style="full", dtype="float32")


def test_writer_rejects_bad_requests(tmp_path):
    w = random_weights(model_preset("tiny"), seed=1)
    for kw, frag in [({"style": "gguf"}, "style"), ({"dtype": "float16"}, "dtype"),
                     ({"shards": 0}, "shards"), ({"shards": 10 ** 6}, "shards")]:
        with pytest.raises(CheckpointError, match=frag):
            write_checkpoint(w, tmp_path / "x", **kw)
    odd = dataclasses.replace(model_preset("tiny"), name="odd", intermediate_size=162)
    with pytest.raises(CheckpointError, match="multiple of 4"):
        write_checkpoint(random_weights(odd), tmp_path / "x", style="packed")
    write_checkpoint(random_weights(odd), tmp_path / "x", style="full")     # full precision has no such limit
    assert load_checkpoint(tmp_path / "x").config.intermediate_size == 162
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# errors: every one is a one-line CheckpointError naming the file and the tensor

def test_missing_files(tmp_path, packed):
    _expect(tmp_path / "nope", "not a checkpoint directory")
    (packed / "config.json").unlink()
    _expect(packed, "config.json", "missing")
    make_synthetic("tiny", tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").unlink()
    _expect(tmp_path / "b", "missing weights file", "model.safetensors")
    (tmp_path / "b" / "pytorch_model.bin").write_bytes(b"x")
    _expect(tmp_path / "b", "pytorch_model.bin", "convert to safetensors")


@pytest.mark.parametrize("change, frags", [
    ({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, ["unknown model_type", "gpt2"]),
    ({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}, ["unknown architecture", "LlamaForCausalLM"]),
    ({"architectures": ["BitNetModel"]}, ["unsupported architecture", "BitNetModel"]),
    ({"hidden_size": _DELETE}, ["missing field hidden_size"]),
    ({"hidden_act": "gelu"}, ["hidden_act", "gelu"]),
    ({"num_key_value_heads": 3}, ["num_kv_heads"]),
    ({"quantization_config": {"quant_method": "gptq"}}, ["quant_method", "gptq"]),
    ({"quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                              "quantization_mode": "offline"}}, ["autobitlinear+offline"]),
    ({"quantization_config": {"quant_method": "bitnet", "use_rms_norm": True}}, ["use_rms_norm"]),
    ({"attention_bias": True}, ["attention_bias"]),
])
def test_bad_config(packed, change, frags):
    _edit_config(packed, **change)
    _expect(packed, "config.json", *frags)


def test_bad_config_json(packed):
    (packed / "config.json").write_text("{not json")
    _expect(packed, "config.json", "not valid JSON")


def test_truncated_and_corrupt_files(tmp_path, packed):
    f = packed / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-100])
    _expect(packed, "model.safetensors", "truncated", "model.norm.weight")
    f.write_bytes(data[:5])
    _expect(packed, "model.safetensors", "too short")
    f.write_bytes((10 ** 6).to_bytes(8, "little") + data[8:200])
    _expect(packed, "model.safetensors", "truncated", "header claims 1000000 bytes")
    f.write_bytes(data[:8] + b"[" + data[9:])
    _expect(packed, "model.safetensors", "bad header JSON")
    f.write_bytes(data + b"junk")
    _expect(packed, "model.safetensors", "trailing bytes")
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header[Q0 + ".weight"]["data_offsets"][1] += 1
    hb = json.dumps(header).encode()
    f.write_bytes(len(hb).to_bytes(8, "little") + hb + data[8 + n:])
    _expect(packed, "model.safetensors", Q0 + ".weight", "data_offsets")
    header[Q0 + ".weight"]["data_offsets"][1] -= 1
    header["model.layers.0.self_attn.o_proj.weight"]["data_offsets"] = header[Q0 + ".weight"]["data_offsets"]
    hb = json.dumps(header).encode()
    f.write_bytes(len(hb).to_bytes(8, "little") + hb + data[8 + n:])
    _expect(packed, "model.safetensors", "corrupt", "overlap")


def test_missing_tensor(packed):
    _rewrite(packed / "model.safetensors", lambda t: t.pop("model.layers.1.mlp.up_proj.weight_scale"))
    _expect(packed, "missing tensor model.layers.1.mlp.up_proj.weight_scale")


def test_missing_untied_lm_head(tmp_path):
    make_synthetic("tiny-silu", tmp_path / "m")
    _rewrite(tmp_path / "m" / "model.safetensors", lambda t: t.pop("lm_head.weight"))
    _expect(tmp_path / "m", "missing tensor lm_head.weight")


def test_tied_lm_head_must_match(packed):
    def add_head(t):
        t["lm_head.weight"] = t["model.embed_tokens.weight"] * np.float32(2)
    _rewrite(packed / "model.safetensors", add_head)
    _expect(packed, "model.safetensors", "lm_head.weight differs", "tie_word_embeddings")
    _rewrite(packed / "model.safetensors", lambda t: t.update({"lm_head.weight": t["model.embed_tokens.weight"]}))
    load_checkpoint(packed)       # an identical copy is fine


#: id -> (checkpoint fixture, tensor added or replaced, its value, what the message says besides
#: the file and the tensor's name)
BAD_TENSORS = {
    "extra-layer": ("packed", "model.layers.2.input_layernorm.weight", np.ones(64, np.float32),
                    ["layer 2", "num_hidden_layers=2"]),
    "extra-bias": ("packed", Q0 + ".bias", np.zeros(64, np.float32), ["unexpected tensor"]),
    "norm-shape": ("packed", "model.layers.1.post_attention_layernorm.weight", np.ones(63, np.float32),
                   ["wrong shape [63]", "expected [64]"]),
    "unpacked-layout": ("packed", Q0 + ".weight", np.zeros((64, 64), np.uint8),
                        ["wrong shape [64, 64]", "expected [16, 64]"]),
    "packed-dtype": ("packed", Q0 + ".weight", np.zeros((16, 64), np.float32), ["must be U8"]),
    "scale-shape": ("packed", Q0 + ".weight_scale", np.ones(2, np.float32), ["one float value"]),
    "full-shape": ("full", "model.layers.0.mlp.down_proj.weight", np.ones((160, 64), np.float32),
                   ["wrong shape [160, 64]", "expected [64, 160]"]),
}


@pytest.mark.parametrize("ckpt,name,value,frags", list(BAD_TENSORS.values()), ids=list(BAD_TENSORS))
def test_extra_tensors_and_wrong_shapes(request, ckpt, name, value, frags):
    path = request.getfixturevalue(ckpt)
    _rewrite(path / "model.safetensors", lambda t: t.update({name: value}))
    _expect(path, "model.safetensors", name, *frags)


def test_rope_buffer_is_harmless(packed):
    _rewrite(packed / "model.safetensors",
             lambda t: t.update({"model.layers.0.self_attn.rotary_emb.inv_freq": np.ones(8, np.float32)}))
    load_checkpoint(packed)       # old Llama exports' RoPE buffer is harmless


def test_packed_code_3(packed):
    name = "model.layers.1.mlp.gate_proj.weight"
    with SafetensorsFile(packed / "model.safetensors") as f:
        byte = int(f.array(name)[3, 5])
    _poke(packed / "model.safetensors", name, 3 * 64 + 5, bytes([byte | 0b11000000]))
    _expect(packed, "model.safetensors", name, "outside the ternary code", "[3, 5]", "weight row 123")


def test_non_finite_and_bad_scales(packed, full):
    f = packed / "model.safetensors"
    good = f.read_bytes()
    nan = np.array([np.nan], np.float32).tobytes()
    _poke(f, "model.norm.weight", 4 * 7, nan)
    _expect(packed, "model.safetensors", "model.norm.weight", "NaN/inf", "[7]")
    f.write_bytes(good)
    _poke(f, "model.embed_tokens.weight", 4 * 65, np.array([np.inf], np.float32).tobytes())
    _expect(packed, "model.safetensors", "model.embed_tokens.weight", "NaN/inf", "[1, 1]")
    for bad in (0.0, -1.5, np.nan, np.inf):
        f.write_bytes(good)
        _poke(f, Q0 + ".weight_scale", 0, np.array([bad], np.float32).tobytes())
        _expect(packed, "model.safetensors", Q0 + ".weight_scale", "finite and > 0")
    _poke(full / "model.safetensors", "model.layers.1.self_attn.v_proj.weight", 0, nan)
    _expect(full, "model.safetensors", "model.layers.1.self_attn.v_proj.weight", "NaN/inf")


def test_non_finite_bf16(tmp_path):
    make_synthetic("tiny", tmp_path / "m", dtype="bfloat16")
    _poke(tmp_path / "m" / "model.safetensors", "model.layers.0.input_layernorm.weight", 2 * 3,
          np.array([0x7FC0], np.uint16).tobytes())
    _expect(tmp_path / "m", "model.layers.0.input_layernorm.weight", "NaN/inf", "[3]")


def test_sharded_errors(tmp_path):
    path = tmp_path / "m"
    make_synthetic("tiny-silu", path, style="full", shards=3)
    index_path = path / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard2 = path / "model-00002-of-00003.safetensors"
    good2 = shard2.read_bytes()
    shard2.unlink()
    _expect(path, "model-00002-of-00003.safetensors", "shard listed in model.safetensors.index.json is absent")
    shard2.write_bytes(good2)
    load_checkpoint(path)
    # index points a tensor at the wrong shard
    moved = next(n for n, s in index["weight_map"].items() if s == "model-00003-of-00003.safetensors")
    bad = json.loads(json.dumps(index))
    bad["weight_map"][moved] = "model-00001-of-00003.safetensors"
    index_path.write_text(json.dumps(bad))
    _expect(path, "model-00001-of-00003.safetensors", f"missing tensor {moved}")
    # a tensor present in a shard but not in the index
    bad = json.loads(json.dumps(index))
    del bad["weight_map"][moved]
    index_path.write_text(json.dumps(bad))
    _expect(path, "model-00003-of-00003.safetensors", moved, "not listed")
    # the same tensor in two shards
    index_path.write_text(json.dumps(index))
    _rewrite(path / "model-00001-of-00003.safetensors", lambda t: t.update({moved: _raw(
        path / "model-00003-of-00003.safetensors")[moved]}))
    index["weight_map"][moved] = "model-00001-of-00003.safetensors"
    index_path.write_text(json.dumps(index))
    _expect(path, moved)
    index_path.write_text("{}")
    _expect(path, "model.safetensors.index.json", "weight_map")


# ----------------------------------------------------------------------------------------------
# Hugging Face interop (oracle)

def _hf_load(hf, path):
    torch, transformers = hf
    model, info = transformers.BitNetForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                                 output_loading_info=True)
    assert not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


@pytest.mark.oracle
@pytest.mark.parametrize("preset, dtype, shards", [("tiny", "float32", 1), ("tiny-silu", "bfloat16", 2)])
def test_hf_loads_synthetic_checkpoints(hf, tmp_path, preset, dtype, shards):
    torch, transformers = hf
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear, pack_weights, unpack_weights

    logits = {}
    for style in ("packed", "full"):
        path = tmp_path / style
        if style == "packed":
            make_synthetic(preset, path, style=style, dtype=dtype, shards=shards, seed=7)
            ours = packed_weights = load_checkpoint(path)
        else:   # the same ternary model (bf16-rounded scales included) as full-precision weights
            write_checkpoint(packed_weights, path, style=style, dtype=dtype, shards=shards)
            ours = load_checkpoint(path)
            assert_loaded_equals(ours, packed_weights, style=style, dtype="float32")
        c = ours.config
        model = _hf_load(hf, path)
        hc = model.config
        assert (hc.num_hidden_layers, hc.num_attention_heads, hc.num_key_value_heads, hc.head_dim,
                hc.hidden_act, hc.tie_word_embeddings, hc.rope_parameters["rope_theta"]) == \
            (c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_act, c.tie_word_embeddings,
             c.rope_theta)

        def same(t, a):
            np.testing.assert_array_equal(t.detach().float().numpy(), a)

        same(model.model.embed_tokens.weight, ours.embed)
        same(model.lm_head.weight, ours.lm_head)
        if c.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        same(model.model.norm.weight, ours.final_norm)
        raw = {}
        for shard in inspect_checkpoint(path).files:
            raw.update(_raw(path / shard))
        for i, (hl, ol) in enumerate(zip(model.model.layers, ours.layers)):
            same(hl.input_layernorm.weight, ol.input_norm)
            same(hl.post_attention_layernorm.weight, ol.post_attention_norm)
            same(hl.self_attn.attn_sub_norm.weight, ol.attn_sub_norm)
            same(hl.mlp.ffn_sub_norm.weight, ol.ffn_sub_norm)
            for p in PROJECTIONS:
                mod = getattr(hl.self_attn if p in ("q_proj", "k_proj", "v_proj", "o_proj") else hl.mlp, p)
                t = ol.proj[p]
                if style == "packed":
                    assert isinstance(mod, BitLinear)
                    same(unpack_weights(mod.weight, dtype=torch.float32), t.trits.astype(np.float32))
                    assert mod.weight_scale.shape == (1,) and np.float32(mod.weight_scale.item()) == t.weight_scale
                    # HF's own packer gives our bytes
                    name = f"model.layers.{i}.{'self_attn' if p[0] in 'qkvo' else 'mlp'}.{p}.weight"
                    np.testing.assert_array_equal(
                        pack_weights(torch.from_numpy(t.trits.astype(np.int64))).numpy(), raw[name])
                else:
                    assert isinstance(mod, AutoBitLinear) and mod.online_quant
                    w = mod.weight.detach().float()      # HF WeightQuant.forward, step by step
                    scale = 1.0 / w.abs().mean().clamp(min=1e-5)
                    same((w * scale).round().clamp(-1, 1), t.trits.astype(np.float32))
                    # torch's mean reduces in another order than numpy's: allow a few float32 ulps
                    d = abs(int(np.float32(scale.item()).view(np.int32)) - int(t.weight_scale.view(np.int32)))
                    assert d <= 8, (i, p, d)

        # y = (x_q . W_t) / (s_x * s_w) for one projection, against HF's module
        mod = model.model.layers[0].mlp.gate_proj
        t = ours.layers[0].proj["gate_proj"]
        x = np.random.default_rng(0).standard_normal((3, c.hidden_size)).astype(np.float32)
        s_x = np.float32(127) / np.maximum(np.abs(x).max(axis=-1, keepdims=True), np.float32(1e-5))
        x_q = np.clip(np.rint(x * s_x), -128, 127)
        y_ref = (x_q @ t.trits.T.astype(np.float32)) / (s_x * t.weight_scale)
        with torch.no_grad():
            y_hf = mod(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(y_hf, y_ref, rtol=1e-5, atol=1e-5 * np.abs(y_ref).max())

        ids = torch.tensor([[1, 5, 7, 9, 200, 3]])
        with torch.no_grad():
            out = model(ids).logits.numpy()
        assert out.shape == (1, 6, c.vocab_size) and np.all(np.isfinite(out))
        logits[style] = out
    # HF runs the packed and the full-precision encodings of the same ternary model alike
    # (BitLinear: x_q.W_t / (s_x s_w); AutoBitLinear online: (x_q/s_x).(W_t/s_w'), with s_w'
    # from torch's mean, a few ulps from numpy's)
    scale = np.abs(logits["packed"]).max()
    assert np.abs(logits["packed"] - logits["full"]).max() <= 1e-4 * scale
