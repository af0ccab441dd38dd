"""The accelerator's DDR image: everything the hardware reads, in the layout it reads it.

Layout (docs/architecture.md, "DDR image"): a 4 KiB preamble page, then sections each starting
on a 4 KiB boundary, then the header. The preamble is ``b"TLMEIMG\\0"``, a little-endian u32
format version, u32 header length and u64 header offset; the header is UTF-8 JSON: the model
config, the format parameters (G, lanes, ports, LM head format, max context) and the section
table (name, offset, size, dtype, shape). The hardware only reads sections, at offsets the host
programs; the header is for the host.

Ternary projections are stored as the TLMM weight stream of :func:`tlmm_weight_stream`,
split by lanes into one contiguous sub-stream per AXI port: port i holds, for each (block, row)
in order, the codes of lanes [i*P/ports, (i+1)*P/ports) packed little-endian at code_bits(G)
bits each, padded to whole 16-byte beats.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from ..config import HardwareConfig, ModelConfig
from ..contract.formats import (code_bits, lm_head_int8, pack_codes, rope_table, tlmm_codes_from_stream, tlmm_decode,
                                tlmm_encode, tlmm_groups, tlmm_weight_stream, unpack_codes, weight_multiplier)
from ..contract.layouts import (IMAGE_MAGIC, IMAGE_PREAMBLE_BYTES, IMAGE_VERSION, ImageFormat, image_sections, page_up,
                                projection_port_stride)
from ..errors import TellmeError
from ..weights import PROJECTIONS, LayerWeights, ModelWeights, TernaryTensor


class ImageError(TellmeError, ValueError):
    """An image file is truncated, corrupt, or does not match what it is used with."""


def encode_projection(t: TernaryTensor, fmt: ImageFormat) -> bytes:
    """The per-port weight streams of one projection, each padded to a 4 KiB multiple."""
    codes = tlmm_encode(t.trits, fmt.tlmm_group)
    stream = tlmm_weight_stream(codes, fmt.tlmm_lanes)         # (B, N, P)
    lpp = fmt.lanes_per_port
    parts = []
    for port in range(fmt.hp_ports):
        words = pack_codes(stream[:, :, port * lpp:(port + 1) * lpp], code_bits(fmt.tlmm_group), fmt.subword_bytes)
        raw = words.tobytes()
        parts.append(raw + bytes(page_up(len(raw)) - len(raw)))
    return b"".join(parts)


def decode_projection(raw: bytes, shape: tuple[int, int], fmt: ImageFormat) -> np.ndarray:
    n_rows, k = shape
    kg = tlmm_groups(k, fmt.tlmm_group)
    blocks = -(-kg // fmt.tlmm_lanes)
    port_bytes = blocks * n_rows * fmt.subword_bytes
    stride = projection_port_stride(shape, fmt)
    lpp = fmt.lanes_per_port
    stream = np.zeros((blocks, n_rows, fmt.tlmm_lanes), dtype=np.uint16)
    for port in range(fmt.hp_ports):
        words = np.frombuffer(raw, dtype=np.uint8, count=port_bytes, offset=port * stride)
        stream[:, :, port * lpp:(port + 1) * lpp] = unpack_codes(
            words.reshape(blocks, n_rows, fmt.subword_bytes), code_bits(fmt.tlmm_group), lpp)
    codes = tlmm_codes_from_stream(stream, kg)
    try:
        return tlmm_decode(codes, fmt.tlmm_group, k)
    except ValueError as e:
        raise ImageError(str(e)) from None


def _sections(weights: ModelWeights, fmt: ImageFormat):
    """(name, bytes, dtype, shape) of every section, in image order."""
    c = weights.config
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    yield "embed", f32(weights.embed), "float32"
    cos, sin = rope_table(c.rope_theta, c.head_dim, fmt.max_context)
    yield "rope.cos", f32(cos), "float32"
    yield "rope.sin", f32(sin), "float32"
    for i, lw in enumerate(weights.layers):
        yield f"layers.{i}.input_norm", f32(lw.input_norm), "float32"
        yield f"layers.{i}.post_attention_norm", f32(lw.post_attention_norm), "float32"
        if c.sub_norms:
            yield f"layers.{i}.attn_sub_norm", f32(lw.attn_sub_norm), "float32"
            yield f"layers.{i}.ffn_sub_norm", f32(lw.ffn_sub_norm), "float32"
        # Per projection: the hardware's multiplier fp32(1/s_w) and s_w itself (for the way back).
        scales = np.array([[weight_multiplier(lw.proj[p].weight_scale), lw.proj[p].weight_scale]
                           for p in PROJECTIONS], dtype=np.float32)
        yield f"layers.{i}.scales", scales, "float32"
        for p in PROJECTIONS:
            yield f"layers.{i}.{p}", encode_projection(lw.proj[p], fmt), "tlmm"
    yield "final_norm", f32(weights.final_norm), "float32"
    if fmt.lm_head_format == "int8":
        q, scale = lm_head_int8(weights.lm_head)
        yield "lm_head.q", q, "int8"
        yield "lm_head.scale", scale, "float32"
    else:
        yield "lm_head.f16", weights.lm_head.astype(np.float16), "float16"


def write_image(weights: ModelWeights, hw: HardwareConfig, path) -> dict:
    """Write the DDR image atomically (temp file, then rename); return the header dict."""
    weights.validate()
    hw.check_model(weights.config)
    fmt = ImageFormat.of(hw)
    path = Path(path)
    layout = image_sections(weights.config, fmt)
    table, offset = [], IMAGE_PREAMBLE_BYTES
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(bytes(IMAGE_PREAMBLE_BYTES))
            for name, data, dtype in _sections(weights, fmt):
                raw = data if isinstance(data, bytes) else data.tobytes()
                shape = weights.config.projections()[name.split(".")[-1]] if dtype == "tlmm" else list(data.shape)
                # The contract's layout (baked into the sequencer program) and the bytes agree.
                expected = layout.get(name)
                if expected is None or (expected.offset, expected.size, expected.dtype, expected.shape) != \
                        (offset, len(raw), dtype, tuple(shape)):
                    raise AssertionError(f"image section {name} at {offset:#x} ({len(raw)} B, {dtype} {tuple(shape)}) "
                                         f"differs from contract.layouts.image_sections: {expected}")
                table.append({"name": name, "offset": offset, "size": len(raw), "dtype": dtype, "shape": list(shape)})
                out.write(raw)
                pad = page_up(len(raw)) - len(raw)
                out.write(bytes(pad))
                offset += len(raw) + pad
            header = {"model": weights.config.to_dict(), "format": fmt.__dict__,
                      "tied_embeddings": weights.lm_head is weights.embed or bool(np.array_equal(weights.lm_head, weights.embed)),
                      "sections_end": offset, "sections": table}
            blob = json.dumps(header).encode()
            out.write(blob)
            out.seek(0)
            out.write(IMAGE_MAGIC + struct.pack("<IIQ", IMAGE_VERSION, len(blob), offset))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return header


def read_header(path) -> dict:
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(IMAGE_PREAMBLE_BYTES)
            if len(head) < 24 or head[:8] != IMAGE_MAGIC:
                raise ImageError(f"{path}: not a tellme DDR image (bad magic)")
            version, length, offset = struct.unpack("<IIQ", head[8:24])
            if version != IMAGE_VERSION:
                raise ImageError(f"{path}: image format version {version}, this tellme reads {IMAGE_VERSION}")
            if size < offset + length:
                raise ImageError(f"{path}: truncated: {size} bytes, the image needs {offset + length}")
            f.seek(offset)
            blob = f.read(length)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    try:
        header = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ImageError(f"{path}: corrupt header") from None
    if header.get("sections_end") != offset:
        raise ImageError(f"{path}: corrupt header (section end {header.get('sections_end')} != {offset})")
    return header


def read_image(path) -> tuple[ModelWeights, ImageFormat, dict]:
    """Load an image back into ModelWeights (exact for everything but the LM head, which comes
    back dequantised from its int8 or fp16 form; a tied head comes back as the embedding)."""
    header = read_header(path)
    config = ModelConfig.from_dict(header["model"])
    fmt = ImageFormat(**header["format"])
    sections = {s["name"]: s for s in header["sections"]}
    data = np.memmap(path, dtype=np.uint8, mode="r")

    def raw(name):
        if name not in sections:
            raise ImageError(f"{path}: section {name} missing")
        s = sections[name]
        return data[s["offset"]:s["offset"] + s["size"]]

    def arr(name):
        s = sections[name]
        return np.frombuffer(raw(name).tobytes(), dtype=np.dtype(s["dtype"])).reshape(s["shape"]).copy()

    layers = []
    for i in range(config.num_layers):
        scales = arr(f"layers.{i}.scales")
        proj = {}
        for j, p in enumerate(PROJECTIONS):
            shape = tuple(sections[f"layers.{i}.{p}"]["shape"])
            proj[p] = TernaryTensor(decode_projection(raw(f"layers.{i}.{p}").tobytes(), shape, fmt), scales[j, 1])
        layers.append(LayerWeights(
            input_norm=arr(f"layers.{i}.input_norm"), post_attention_norm=arr(f"layers.{i}.post_attention_norm"),
            attn_sub_norm=arr(f"layers.{i}.attn_sub_norm") if config.sub_norms else None,
            ffn_sub_norm=arr(f"layers.{i}.ffn_sub_norm") if config.sub_norms else None, proj=proj))
    embed = arr("embed")
    if header["tied_embeddings"]:
        lm_head = embed
    elif fmt.lm_head_format == "int8":
        lm_head = (arr("lm_head.q").astype(np.float64) * arr("lm_head.scale").astype(np.float64)[:, None]).astype(np.float32)
    else:
        lm_head = arr("lm_head.f16").astype(np.float32)
    weights = ModelWeights(config, embed, layers, arr("final_norm"), lm_head)
    return weights.validate(), fmt, header
