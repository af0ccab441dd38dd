"""The accelerator's DDR image: everything the hardware reads, in the layout it reads it.

Layout (docs/architecture.md, "DDR image"): a 4 KiB preamble page, then sections each starting
on a 4 KiB boundary, then the header. The preamble is ``b"TLMEIMG\\0"``, a little-endian u32
format version, u32 header length, u64 header offset and u32 CRC-32 of the header bytes; the
header is UTF-8 JSON: the model config, the format parameters (G, lanes, ports, LM head format,
max context) and the section table (name, offset, size, dtype, shape, crc32). A section's
``crc32`` is ``zlib.crc32`` of its ``size`` bytes as stored, the zero padding up to the next
4 KiB boundary excluded (nothing reads it). The hardware only reads sections, at offsets the
host programs; the header is for the host.

Reading checks everything it can before any weight is used, and raises :class:`ImageError`
naming the file and the section: the header's CRC and structure (:func:`read_header`: every
field of the right type, the section table exactly the contract's layout of that model and
format, the file exactly as long as it says), then each section's CRC in one pass over the
bytes (:func:`check_sections`, shared by :func:`read_image` and the host driver
``tellme.runtime.Accelerator`` before it starts the hardware).

Ternary projections are stored as the TLMM weight stream of :func:`tlmm_weight_stream`,
split by lanes into one contiguous sub-stream per AXI port: port i holds, for each (block, row)
in order, the codes of lanes [i*P/ports, (i+1)*P/ports) packed little-endian at code_bits(G)
bits each, padded to whole 16-byte beats.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ..config import LM_HEAD_FORMATS, HardwareConfig, ModelConfig
from ..contract.formats import (code_bits, lm_head_int8, pack_codes, rope_table, tlmm_codes_from_stream, tlmm_decode,
                                tlmm_encode, tlmm_groups, tlmm_weight_stream, unpack_codes, weight_multiplier)
from ..contract.layouts import (IMAGE_MAGIC, IMAGE_PREAMBLE_BYTES, IMAGE_VERSION, PAGE, ImageFormat, LmHeadStream,
                                image_sections,
                                page_up, projection_port_stride)
from ..errors import TellmeError
from ..weights import PROJECTIONS, LayerWeights, ModelWeights, TernaryTensor, WeightsError

#: After the magic: u32 format version, u32 header length, u64 header offset, u32 header CRC-32.
_PREAMBLE = struct.Struct("<IIQI")


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
    head = LmHeadStream.of(c, fmt)
    arrays = lm_head_int8(weights.lm_head) if fmt.lm_head_format == "int8" else (weights.lm_head.astype(np.float16),)
    yield "lm_head", head.encode(arrays), image_sections(c, fmt)["lm_head"].dtype


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
                if dtype == "tlmm":
                    shape = weights.config.projections()[name.split(".")[-1]]
                elif name == "lm_head":
                    shape = [weights.config.vocab_size, weights.config.hidden_size]
                else:
                    shape = list(data.shape)
                # The contract's layout (baked into the sequencer program) and the bytes agree.
                expected = layout.get(name)
                if expected is None or (expected.offset, expected.size, expected.dtype, expected.shape) != \
                        (offset, len(raw), dtype, tuple(shape)):
                    raise AssertionError(f"image section {name} at {offset:#x} ({len(raw)} B, {dtype} {tuple(shape)}) "
                                         f"differs from contract.layouts.image_sections: {expected}")
                table.append({"name": name, "offset": offset, "size": len(raw), "dtype": dtype, "shape": list(shape),
                              "crc32": zlib.crc32(raw)})
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
            out.write(IMAGE_MAGIC + _PREAMBLE.pack(IMAGE_VERSION, len(blob), offset, zlib.crc32(blob)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return header


def _corrupt(path, msg: str):
    raise ImageError(f"{path}: corrupt header: {msg}")


_KINDS = {"int": int, "float": (int, float), "bool": bool, "str": str}


def _typed(cls, data, what: str, path):
    """``cls(**data)`` for a header object, every field checked to be of its annotated type
    first (a header is JSON: a number may come back as a string, a list, a bool, ...)."""
    if not isinstance(data, dict):
        _corrupt(path, f"{what} is {type(data).__name__}, not an object")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        _corrupt(path, f"{what}: unknown field(s) {', '.join(map(str, unknown))}")
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING:
                _corrupt(path, f"{what}.{name} missing")
            continue
        v = data[name]
        if not isinstance(v, _KINDS[f.type]) or (isinstance(v, bool) and f.type != "bool"):
            _corrupt(path, f"{what}.{name} = {v!r:.60} is not of type {f.type}")
        if f.type == "float" and isinstance(v, int) and v.bit_length() > 1000:
            _corrupt(path, f"{what}.{name} is out of range (an integer of {v.bit_length()} bits)")
    try:
        return cls(**data)
    except (TellmeError, TypeError, ValueError, OverflowError) as e:
        _corrupt(path, f"{what}: {e}")


def _image_format(data, path) -> ImageFormat:
    fmt = _typed(ImageFormat, data, "format", path)
    for name in ("tlmm_lanes", "hp_ports", "max_context", "beat_bytes"):
        if getattr(fmt, name) <= 0:
            _corrupt(path, f"format.{name} = {getattr(fmt, name)} is not positive")
    if fmt.tlmm_group not in (2, 3, 4, 5):
        _corrupt(path, f"format.tlmm_group = {fmt.tlmm_group} (must be 2, 3, 4 or 5)")
    if fmt.tlmm_lanes % fmt.hp_ports:
        _corrupt(path, f"format.tlmm_lanes = {fmt.tlmm_lanes} is not a multiple of hp_ports = {fmt.hp_ports}")
    if fmt.lm_head_format not in LM_HEAD_FORMATS:
        _corrupt(path, f"format.lm_head_format = {fmt.lm_head_format!r} (must be one of {', '.join(LM_HEAD_FORMATS)})")
    if fmt.beat_bytes not in (8, 16, 32):
        _corrupt(path, f"format.beat_bytes = {fmt.beat_bytes} (must be 8, 16 or 32)")
    return fmt


def _check_table(header: dict, config: ModelConfig, fmt: ImageFormat, sections_end: int, path) -> None:
    """The section table: well formed, inside the sections area, and exactly the contract's
    layout of this model and format (the sequencer reads the sections at those offsets)."""
    table = header["sections"]
    if not isinstance(table, list):
        _corrupt(path, "the section table is not a list")
    # every layer has sections of its own: more layers than table entries cannot match, and the
    # contract's layout of an absurd layer count is not built
    if config.num_layers > len(table):
        _corrupt(path, f"{len(table)} sections in the table, a {config.num_layers}-layer model has more")
    layout = list(image_sections(config, fmt).values())
    if len(table) != len(layout):
        _corrupt(path, f"{len(table)} sections in the table, a {config.num_layers}-layer model has {len(layout)}")
    keys = {"name", "offset", "size", "dtype", "shape", "crc32"}
    for i, s in enumerate(table):
        if not isinstance(s, dict) or set(s) != keys:
            _corrupt(path, f"section table entry {i} is not an object with the fields {', '.join(sorted(keys))}")
        name = s["name"] if isinstance(s["name"], str) else f"#{i}"
        counts = [s["offset"], s["size"], s["crc32"]] + (s["shape"] if isinstance(s["shape"], list) else [None])
        if (not isinstance(s["name"], str) or not isinstance(s["dtype"], str) or not isinstance(s["shape"], list)
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts)
                or s["crc32"] >= 1 << 32):
            _corrupt(path, f"section {name}: bad entry {json.dumps(s)[:200]}")
        if s["offset"] < IMAGE_PREAMBLE_BYTES or s["offset"] + s["size"] > sections_end:
            _corrupt(path, f"section {name} (bytes {s['offset']:#x}..{s['offset'] + s['size']:#x}) lies outside the "
                           f"sections area {IMAGE_PREAMBLE_BYTES:#x}..{sections_end:#x} (sizes lie or the file is cut)")
    for s, want in zip(table, layout):
        got = (s["name"], s["offset"], s["size"], s["dtype"], tuple(s["shape"]))
        if got != (want.name, want.offset, want.size, want.dtype, want.shape):
            _corrupt(path, f"section {s['name']}: the table says offset {s['offset']:#x}, {s['size']} B, "
                           f"{s['dtype']} {list(s['shape'])}; this model and format place {want.name} at "
                           f"{want.offset:#x}, {want.size} B, {want.dtype} {list(want.shape)}")
    end = page_up(layout[-1].offset + layout[-1].size)
    if end != sections_end:
        _corrupt(path, f"the sections end at {sections_end:#x}, this model and format need {end:#x}")


def read_header(path) -> dict:
    """The header of an image, checked: the magic and format version, the header's CRC-32,
    every field's type, the section table against the contract's layout, and the file's size.
    Section contents are not read (:func:`check_sections` does that)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(IMAGE_PREAMBLE_BYTES)
            if head[:8] != IMAGE_MAGIC[:len(head)] or not head:
                raise ImageError(f"{path}: not a tellme DDR image (bad magic)")
            if len(head) < IMAGE_PREAMBLE_BYTES:
                raise ImageError(f"{path}: truncated: {size} bytes, shorter than the {IMAGE_PREAMBLE_BYTES}-byte preamble")
            version = struct.unpack_from("<I", head, 8)[0]
            if version != IMAGE_VERSION:
                why = ("an older tellme wrote it: convert the checkpoint again (`tellme convert`)"
                       if version < IMAGE_VERSION else "a newer tellme wrote it")
                raise ImageError(f"{path}: image format version {version}, this tellme reads version "
                                 f"{IMAGE_VERSION} ({why})")
            _, length, offset, header_crc = _PREAMBLE.unpack_from(head, 8)
            if size < offset + length:
                raise ImageError(f"{path}: truncated: {size} bytes, the image needs {offset + length}")
            if size > offset + length:
                raise ImageError(f"{path}: {size - offset - length} unexpected bytes after the header, which ends "
                                 f"the image at {offset + length} (the file is corrupt)")
            if offset < IMAGE_PREAMBLE_BYTES or offset % PAGE:
                raise ImageError(f"{path}: corrupt preamble: the header offset {offset:#x} is not a 4 KiB boundary "
                                 "after the preamble")
            f.seek(offset)
            blob = f.read(length)
    except OSError as e:
        raise ImageError(f"{path}: cannot read ({e.strerror})") from None
    if zlib.crc32(blob) != header_crc:
        raise ImageError(f"{path}: header CRC32 {zlib.crc32(blob):#010x} does not match the preamble's "
                         f"{header_crc:#010x} (the file is corrupt)")
    try:
        header = json.loads(blob)
    except (ValueError, RecursionError):          # JSONDecodeError, UnicodeDecodeError
        _corrupt(path, "not valid JSON")
    if not isinstance(header, dict):
        _corrupt(path, f"{type(header).__name__}, not an object")
    missing = {"model", "format", "tied_embeddings", "sections_end", "sections"} - set(header)
    if missing:
        _corrupt(path, f"missing field(s) {', '.join(sorted(missing))}")
    if header["sections_end"] != offset or isinstance(header["sections_end"], bool):
        _corrupt(path, f"section end {header['sections_end']!r:.40} != the header's offset {offset}")
    if not isinstance(header["tied_embeddings"], bool):
        _corrupt(path, f"tied_embeddings = {header['tied_embeddings']!r:.40} is not true or false")
    config = _typed(ModelConfig, header["model"], "model", path)
    fmt = _image_format(header["format"], path)
    if fmt.max_context > config.max_position_embeddings:
        _corrupt(path, f"format.max_context {fmt.max_context} exceeds the model's max_position_embeddings "
                       f"{config.max_position_embeddings}")
    _check_table(header, config, fmt, offset, path)
    return header


def check_sections(header: dict, data, where) -> None:
    """Check every section of an image against its CRC-32 in ``header`` (from :func:`read_header`).

    ``data`` is the whole image: bytes, or a 1-D uint8 array or memory map of the file (one
    pass, no copy: a memory map is paged in as the CRC runs). Raises :class:`ImageError` naming
    the first section that does not match; ``where`` names the image in the message."""
    buf = memoryview(data).cast("B")
    if buf.nbytes < header["sections_end"]:
        raise ImageError(f"{where}: truncated: {buf.nbytes} bytes, the sections end at {header['sections_end']}")
    for s in header["sections"]:
        got = zlib.crc32(buf[s["offset"]:s["offset"] + s["size"]])
        if got != s["crc32"]:
            raise ImageError(f"{where}: image section {s['name']}: CRC32 {got:#010x} does not match the header's "
                             f"{s['crc32']:#010x} (the file is corrupt)")


def verify_image(path) -> dict:
    """:func:`read_header`, then :func:`check_sections` over the file; return the header."""
    header = read_header(path)
    check_sections(header, np.memmap(path, dtype=np.uint8, mode="r"), path)
    return header


def read_image(path) -> tuple[ModelWeights, ImageFormat, dict]:
    """Load an image back into ModelWeights (exact for everything but the LM head, which comes
    back dequantised from its int8 or fp16 form; a tied head comes back as the embedding).

    The header and every section's CRC are checked first (:func:`verify_image`), then the
    contents: TLMM codes inside the format, scales finite and positive with the hardware's
    multiplier fp32(1/s_w) beside each, no NaN or infinity in a float tensor."""
    header = verify_image(path)
    config = ModelConfig.from_dict(header["model"])
    fmt = ImageFormat(**header["format"])
    sections = {s["name"]: s for s in header["sections"]}
    data = np.memmap(path, dtype=np.uint8, mode="r")

    def raw(name):
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
            name = f"layers.{i}.{p}"
            w_mult, s_w = scales[j]
            if not (np.isfinite(s_w) and s_w > 0) or w_mult.view(np.uint32) != weight_multiplier(s_w).view(np.uint32):
                raise ImageError(f"{path}: image section layers.{i}.scales: {p} has s_w {float(s_w)!r} and multiplier "
                                 f"{float(w_mult)!r}; it needs a finite s_w > 0 and the multiplier fp32(1/s_w)")
            try:
                proj[p] = TernaryTensor(decode_projection(raw(name).tobytes(), tuple(sections[name]["shape"]), fmt), s_w)
            except (ImageError, WeightsError) as e:
                raise ImageError(f"{path}: image section {name}: {e}") from None
        layers.append(LayerWeights(
            input_norm=arr(f"layers.{i}.input_norm"), post_attention_norm=arr(f"layers.{i}.post_attention_norm"),
            attn_sub_norm=arr(f"layers.{i}.attn_sub_norm") if config.sub_norms else None,
            ffn_sub_norm=arr(f"layers.{i}.ffn_sub_norm") if config.sub_norms else None, proj=proj))
    embed = arr("embed")
    if header["tied_embeddings"]:
        lm_head = embed
    else:
        head = LmHeadStream.of(config, fmt).decode(raw("lm_head").tobytes())
        if fmt.lm_head_format == "int8":
            with np.errstate(over="ignore", invalid="ignore"):
                lm_head = (head[0].astype(np.float64) * head[1].astype(np.float64)[:, None]).astype(np.float32)
        else:
            lm_head = head[0].astype(np.float32)
    weights = ModelWeights(config, embed, layers, arr("final_norm"), lm_head)
    try:
        return weights.validate(), fmt, header
    except WeightsError as e:     # NaN or infinity in a float section (named as the image names it)
        raise ImageError(f"{path}: image section {e}") from None
