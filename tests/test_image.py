"""DDR image: layout, round trip, and clear errors on bad files."""

import os

import numpy as np
import pytest

from tellme.config import ConfigError, hardware_preset, model_preset
from tellme.contract.formats import pack_codes, tlmm_encode, unpack_codes
from tellme.contract.layouts import ImageFormat
from tellme.gen.image import ImageError, read_header, read_image, write_image
from tellme.weights import random_weights

HW = hardware_preset("kv260").replace(max_context=256, prefill_chunk=128)


@pytest.mark.parametrize("bits", [4, 5, 7, 8])
def test_pack_unpack_codes(bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 2 ** bits, (3, 5, 16)).astype(np.uint16)
    words = pack_codes(codes, bits, 16)
    assert words.shape == (3, 5, 16)
    assert np.array_equal(unpack_codes(words, bits, 16), codes)
    if bits == 8:      # G=5: one byte per code, lane j at byte j
        assert np.array_equal(words, codes.astype(np.uint8))


@pytest.mark.parametrize("group", [2, 3, 4, 5])
@pytest.mark.parametrize("preset", ["tiny", "tiny-silu"])
def test_round_trip_is_exact_and_idempotent(tmp_path, group, preset):
    hw = HW.replace(tlmm_group=group)
    weights = random_weights(model_preset(preset), seed=group)
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    write_image(weights, hw, first)
    back, fmt, header = read_image(first)
    assert fmt == ImageFormat.of(hw)
    for a, b in zip(weights.layers, back.layers):
        for name, t in a.proj.items():
            assert np.array_equal(t.trits, b.proj[name].trits)
            assert t.weight_scale == b.proj[name].weight_scale
        assert np.array_equal(a.input_norm, b.input_norm)
    assert np.array_equal(weights.embed, back.embed)
    if weights.config.tie_word_embeddings:
        assert back.lm_head is back.embed
    else:
        assert np.allclose(back.lm_head, weights.lm_head, atol=np.abs(weights.lm_head).max() / 254 + 1e-7)
    write_image(back, hw, second)
    assert first.read_bytes() == second.read_bytes()


def test_sections_are_4k_aligned_and_projection_layout(tmp_path):
    weights = random_weights(model_preset("tiny"), seed=0)
    header = write_image(weights, HW, tmp_path / "x.img")
    assert all(s["offset"] % 4096 == 0 for s in header["sections"])
    sec = {s["name"]: s for s in header["sections"]}["layers.0.q_proj"]
    raw = (tmp_path / "x.img").read_bytes()[sec["offset"]:]
    # G=5, P=64, 4 ports: port 0 holds lanes 0-15, one byte per lane, one 16-byte beat per row
    codes = tlmm_encode(weights.layers[0].proj["q_proj"].trits, 5)
    assert list(raw[:16]) == list(codes[0, :13]) + [0, 0, 0]      # 13 groups for K=64, rest padding
    assert list(raw[16:32]) == list(codes[1, :13]) + [0, 0, 0]


def test_truncated_and_corrupt_images_are_refused(tmp_path):
    path = tmp_path / "x.img"
    write_image(random_weights(model_preset("tiny"), seed=0), HW, path)
    data = path.read_bytes()
    (tmp_path / "short.img").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        read_image(tmp_path / "short.img")
    (tmp_path / "magic.img").write_bytes(b"XXXX" + data[4:])
    with pytest.raises(ImageError, match="magic"):
        read_header(tmp_path / "magic.img")
    with pytest.raises(ImageError, match="cannot read"):
        read_header(tmp_path / "missing.img")
    # a code outside the G=5 format inside a projection
    sec = {s["name"]: s for s in read_header(path)["sections"]}["layers.1.down_proj"]
    bad = bytearray(data)
    bad[sec["offset"]] = 122
    (tmp_path / "badcode.img").write_bytes(bytes(bad))
    with pytest.raises(ImageError, match="outside"):
        read_image(tmp_path / "badcode.img")


def test_failed_write_leaves_nothing(tmp_path):
    weights = random_weights(model_preset("tiny"), seed=0)
    with pytest.raises(ConfigError, match="max_context"):
        write_image(weights, hardware_preset("kv260"), tmp_path / "x.img")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ConfigError, match="hp_ports"):
        write_image(weights, HW.replace(tlmm_lanes=6), tmp_path / "x.img")
    assert os.listdir(tmp_path) == []
