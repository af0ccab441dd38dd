"""DDR image: layout, round trip, checksums, and clear errors on bad files."""

import json
import os
import struct
import zlib

import numpy as np
import pytest

from tellme.config import ConfigError, hardware_preset, model_preset
from tellme.contract.formats import pack_codes, tlmm_encode, unpack_codes
from tellme.contract.layouts import IMAGE_VERSION, ImageFormat
from tellme.gen.image import ImageError, check_sections, read_header, read_image, verify_image, write_image
from tellme.weights import random_weights

HW = hardware_preset("kv260").replace(max_context=256, prefill_chunk=128)


def reseal(data: bytes, edit=None, *, sections: bool = True) -> bytes:
    """``data`` (an image's bytes) as a writer would have sealed it after tampering: the header
    edited by ``edit(header)`` (in place, or returning the new header, or its bytes), each
    section's CRC-32 recomputed from the bytes as they are (``sections``), and the preamble's
    header length and CRC-32 rewritten. So a test reaches the checks behind the checksums."""
    data = bytearray(data)
    version, length, offset, _ = struct.unpack_from("<IIQI", data, 8)
    header = json.loads(bytes(data[offset:offset + length]))
    if sections:
        for s in header["sections"]:
            s["crc32"] = zlib.crc32(data[s["offset"]:s["offset"] + s["size"]])
    if edit is not None:
        new = edit(header)
        header = header if new is None else new
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    data = data[:offset] + blob
    struct.pack_into("<IIQI", data, 8, version, len(blob), offset, zlib.crc32(blob))
    return bytes(data)


def sections_of(path) -> dict:
    return {s["name"]: s for s in read_header(path)["sections"]}


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


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny image (G=5, int8 LM head) and its bytes."""
    path = tmp_path_factory.mktemp("good") / "x.img"
    write_image(random_weights(model_preset("tiny"), seed=0), HW, path)
    return path, path.read_bytes()


def refused(tmp_path, data: bytes, match: str, reader=read_image):
    path = tmp_path / "bad.img"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=match) as e:
        reader(path)
    return str(e.value)


def test_checksums_in_the_header(good):
    path, data = good
    header = verify_image(path)
    assert header == read_header(path)
    version, length, offset, crc = struct.unpack_from("<IIQI", data, 8)
    assert (version, offset + length) == (IMAGE_VERSION, len(data))
    assert crc == zlib.crc32(data[offset:])
    for s in header["sections"]:
        assert s["crc32"] == zlib.crc32(data[s["offset"]:s["offset"] + s["size"]])      # padding excluded
    check_sections(header, data, "bytes")
    check_sections(header, np.frombuffer(data, dtype=np.uint8), "array")
    # the padding after a section is not covered (nothing reads it)
    sec = sections_of(path)["layers.0.scales"]
    pad = bytearray(data)
    pad[sec["offset"] + sec["size"] + 5] ^= 0xFF
    check_sections(header, bytes(pad), "padding")


@pytest.mark.parametrize("section", ["layers.1.up_proj", "layers.0.q_proj", "embed", "lm_head"])
def test_two_flipped_bytes_in_a_section_are_refused_naming_it(tmp_path, good, section):
    path, data = good
    sec = sections_of(path)[section]
    bad = bytearray(data)
    for at in (sec["offset"] + 17, sec["offset"] + sec["size"] - 3):
        bad[at] ^= 0x5A
    msg = refused(tmp_path, bytes(bad), rf"image section {section}: CRC32 0x[0-9a-f]{{8}} does not match the "
                                        rf"header's {sec['crc32']:#010x} \(the file is corrupt\)")
    assert str(tmp_path / "bad.img") in msg
    refused(tmp_path, bytes(bad), f"image section {section}: CRC32", reader=verify_image)
    with pytest.raises(ImageError, match=f"image section {section}: CRC32"):
        check_sections(read_header(path), bytes(bad), "board buffer")


def test_the_driver_checks_the_sections_before_the_hardware_starts(tmp_path):
    from tellme.runtime import Accelerator
    from tellme.sim.board_model import ModelTransport
    hw, config = hardware_preset("sim-small"), model_preset("tiny")
    path = tmp_path / "x.img"
    write_image(random_weights(config, seed=1), hw, path)
    sec = sections_of(path)["layers.1.down_proj"]
    bad = bytearray(path.read_bytes())
    bad[sec["offset"] + 1] ^= 1
    bad[sec["offset"] + 2] ^= 1
    (tmp_path / "bad.img").write_bytes(bytes(bad))

    class Recording(ModelTransport):
        touched = []

        def allocate(self, size):
            self.touched.append(("allocate", size))
            return super().allocate(size)

        def write32(self, offset, value):
            self.touched.append(("write32", offset))
            super().write32(offset, value)

    with pytest.raises(ImageError, match="image section layers.1.down_proj: CRC32"):
        Accelerator(Recording(config, hw), tmp_path / "bad.img", hw)
    assert Recording.touched == []                  # nothing allocated, no register written
    Accelerator(Recording(config, hw), path, hw)    # the good image loads
    assert Recording.touched


def _with_size(section, size):
    def edit(h):
        next(s for s in h["sections"] if s["name"] == section)["size"] = size
    return edit


def _set(path_in_header, value):
    def edit(h):
        *keys, last = path_in_header
        for k in keys:
            h = h[k]
        h[last] = value
    return edit


@pytest.mark.parametrize("edit, match", [
    (_with_size("layers.0.q_proj", 4096), r"section layers.0.q_proj: the table says offset .*, 4096 B"),
    (_with_size("final_norm", 1 << 40), r"section final_norm .* lies outside the sections area .*sizes lie"),
    (_set(("sections", 3, "offset"), 12), r"section layers.0.input_norm .* lies outside the sections area"),
    (_set(("sections", 5, "dtype"), "float64"), r"section layers.0.attn_sub_norm: the table says"),
    (_set(("sections", 2, "crc32"), -1), r"section rope.sin: bad entry"),
    (lambda h: h["sections"].pop() and None, r"28 sections in the table, a 2-layer model has 29"),
    (lambda h: {"sections": []}, r"missing field\(s\) format, model, sections_end, tied_embeddings"),
    (lambda h: [h], r"corrupt header: list, not an object"),
    (lambda h: b'{"model": {"name": "tiny", ', r"corrupt header: not valid JSON"),
    (lambda h: b"\xff\xfe\x00garbage", r"corrupt header: not valid JSON"),
    (lambda h: b"[" * 100_000 + b"]" * 100_000, r"corrupt header: not valid JSON"),
    (_set(("model", "num_layers"), 10 ** 9), r"29 sections in the table, a 1000000000-layer model"),
    (_set(("model", "hidden_size"), "64"), r"model.hidden_size = '64' is not of type int"),
    (_set(("model", "rope_theta"), 10 ** 400), r"model.rope_theta is out of range"),
    (_set(("model", "rope_theta"), 0.5), r"model: rope_theta: must be > 1"),
    (_set(("model", "sub_norms"), 1), r"model.sub_norms = 1 is not of type bool"),
    (_set(("model", "flavour"), "x"), r"model: unknown field\(s\) flavour"),
    (_set(("format", "tlmm_group"), 7), r"format.tlmm_group = 7"),
    (_set(("format", "hp_ports"), 0), r"format.hp_ports = 0 is not positive"),
    (_set(("format", "tlmm_lanes"), 6), r"format.tlmm_lanes = 6 is not a multiple of hp_ports"),
    (_set(("format", "max_context"), 512), r"format.max_context 512 exceeds"),
    (_set(("format", "lm_head_format"), "int4"), r"format.lm_head_format = 'int4'"),
    (_set(("sections_end",), 4096), r"section end 4096 != the header's offset"),
    (_set(("tied_embeddings",), "yes"), r"tied_embeddings = 'yes' is not true or false"),
])
def test_tampered_headers_are_refused(tmp_path, good, edit, match):
    """Each edit resealed (header CRC rewritten), so the structural checks behind the CRC answer."""
    refused(tmp_path, reseal(good[1], edit), match, reader=read_header)


def test_header_corruption_without_reseal_fails_its_crc(tmp_path, good):
    _, data = good
    _, length, offset, crc = struct.unpack_from("<IIQI", data, 8)
    bad = bytearray(data)
    bad[offset + length // 2] ^= 0x20
    refused(tmp_path, bytes(bad), rf"header CRC32 0x[0-9a-f]{{8}} does not match the preamble's {crc:#010x}")


def test_bad_preambles_are_refused(tmp_path, good):
    path, data = good
    refused(tmp_path, b"XXXX" + data[4:], "not a tellme DDR image", reader=read_header)
    refused(tmp_path, b"", "not a tellme DDR image", reader=read_header)
    refused(tmp_path, data[:6], "truncated", reader=read_header)
    refused(tmp_path, data[:100], "truncated", reader=read_header)
    refused(tmp_path, data[: len(data) // 2], "truncated", reader=read_header)
    refused(tmp_path, data[:-1], "truncated", reader=read_header)
    refused(tmp_path, data + b"\0", "1 unexpected bytes after the header", reader=read_header)
    with pytest.raises(ImageError, match="cannot read"):
        read_header(tmp_path / "missing.img")
    for version, why in ((1, r"an older tellme wrote it: convert"), (IMAGE_VERSION - 1, r"an older tellme"),
                         (IMAGE_VERSION + 1, "a newer")):
        old = bytearray(data)
        struct.pack_into("<I", old, 8, version)
        refused(tmp_path, bytes(old), rf"image format version {version}, this tellme reads version "
                                      rf"{IMAGE_VERSION} \({why}", reader=read_header)
    # the header offset moved off its page
    moved = bytearray(data)
    _, length, offset, crc = struct.unpack_from("<IIQI", data, 8)
    struct.pack_into("<IIQI", moved, 8, IMAGE_VERSION, length + 8, offset - 8, crc)
    refused(tmp_path, bytes(moved), "corrupt preamble: the header offset", reader=read_header)


def test_contents_behind_the_checksums_are_checked(tmp_path, good):
    """Bytes changed and every CRC rewritten: the reader's content checks still name the section."""
    path, data = good
    secs = sections_of(path)
    # a code outside the G=5 format inside a projection
    bad = bytearray(data)
    bad[secs["layers.1.down_proj"]["offset"]] = 122
    refused(tmp_path, reseal(bytes(bad)), r"image section layers.1.down_proj: TLMM code outside the G=5 format")
    # a multiplier that is not fp32(1/s_w)
    bad = bytearray(data)
    struct.pack_into("<f", bad, secs["layers.0.scales"]["offset"] + 8 * 2, 3.0)
    refused(tmp_path, reseal(bytes(bad)), r"image section layers.0.scales: v_proj has s_w .* multiplier 3.0")
    # s_w zero (and its multiplier infinity, as the writer would compute it)
    bad = bytearray(data)
    struct.pack_into("<ff", bad, secs["layers.1.scales"]["offset"], float("inf"), 0.0)
    refused(tmp_path, reseal(bytes(bad)), r"image section layers.1.scales: q_proj has s_w 0.0")
    # NaN in a norm
    bad = bytearray(data)
    struct.pack_into("<f", bad, secs["layers.1.ffn_sub_norm"]["offset"] + 4 * 9, float("nan"))
    refused(tmp_path, reseal(bytes(bad)), r"image section layers.1.ffn_sub_norm: holds NaN")
    # resealed but unchanged: still a good image
    (tmp_path / "same.img").write_bytes(reseal(data))
    read_image(tmp_path / "same.img")


def test_failed_write_leaves_nothing(tmp_path):
    weights = random_weights(model_preset("tiny"), seed=0)
    with pytest.raises(ConfigError, match="max_context"):
        write_image(weights, hardware_preset("kv260"), tmp_path / "x.img")
    assert os.listdir(tmp_path) == []
    with pytest.raises(ConfigError, match="hp_ports"):
        write_image(weights, HW.replace(tlmm_lanes=6), tmp_path / "x.img")
    assert os.listdir(tmp_path) == []
