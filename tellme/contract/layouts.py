"""Memory layouts shared by the host and the hardware (docs/architecture.md sections 4 and 6).

- :data:`PAGE`: 4 KiB, the AXI burst boundary and the alignment of every DDR section and array.
- The DDR image: :data:`IMAGE_MAGIC`, :data:`IMAGE_VERSION`, :data:`IMAGE_PREAMBLE_BYTES` and
  :class:`ImageFormat`, the hardware parameters that fix where and how weights are stored
  (the writer and reader are ``tellme.gen.image``).
- The URAM weight buffer: :class:`BufferGeometry` (lane word width, bank depth, per-port
  sub-word size) that both the weight streamer RTL and the generator's tiling read.
- The KV cache: :func:`kv_cache_map` (where each (layer, kv head)'s K rows, V rows and scale
  records start), :func:`kv_element_bytes` / :func:`kv_row_bytes` (the int8 and fp32 formats),
  :data:`KV_RECORD_BYTES` and :func:`scale_records` (the int8 format's records),
  :func:`kv_arrays` (the bytes a cache holds for a range of positions) and
  :func:`kv_bytes_per_token`.

Pure Python and numpy: no hardware description, no simulation.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, HardwareConfig, ModelConfig
from .formats import code_bits, tlmm_groups

__all__ = ["PAGE", "page_up", "align_up", "subword_bytes",
           "IMAGE_MAGIC", "IMAGE_VERSION", "IMAGE_PREAMBLE_BYTES", "ImageFormat", "Section", "image_sections",
           "projection_port_stride", "PROJECTIONS_ORDER", "stripe", "unstripe", "LmHeadStream",
           "URAM_DEPTH", "URAM_WIDTH", "BufferGeometry",
           "KV_RECORD_BYTES", "KvBases", "kv_cache_map", "kv_element_bytes", "kv_row_bytes", "kv_bytes_per_token",
           "scale_records", "kv_arrays",
           "ScratchArray", "scratch_layout", "IoLayout"]

#: AXI bursts never cross a 4 KiB boundary; every DDR section and KV array starts on one.
PAGE = 4096


def align_up(n: int, alignment: int) -> int:
    """The smallest multiple of ``alignment`` that is >= ``n``."""
    return -(-n // alignment) * alignment


def page_up(n: int) -> int:
    """``n`` rounded up to whole 4 KiB pages."""
    return align_up(n, PAGE)


def subword_bytes(lanes_per_port: int, group: int, beat_bytes: int) -> int:
    """Bytes of one AXI port's share of a TLMM lane word (``lanes_per_port`` codes of
    ``code_bits(group)`` bits, packed little-endian), padded to whole beats of ``beat_bytes``."""
    return align_up(-(-lanes_per_port * code_bits(group) // 8), beat_bytes)


# ------------------------------------------------------------------------------------------------
# DDR image
# ------------------------------------------------------------------------------------------------

IMAGE_MAGIC = b"TLMEIMG\0"
#: 2: the header's CRC-32 in the preamble and a CRC-32 per section in its table (1 had neither;
#: the sections themselves, all the hardware reads, are laid out as in 1). 3: the LM head is one
#: section, ``lm_head``, its rows (and int8 scales) one byte stream striped over the HP ports
#: (:class:`LmHeadStream`; 2 had ``lm_head.q`` + ``lm_head.scale`` or ``lm_head.f16``).
IMAGE_VERSION = 3
#: The preamble page: magic, u32 format version, u32 header length, u64 header offset, u32
#: CRC-32 of the header; the rest zero.
IMAGE_PREAMBLE_BYTES = PAGE


@dataclass(frozen=True)
class ImageFormat:
    """The hardware parameters that fix the image layout."""
    tlmm_group: int
    tlmm_lanes: int
    hp_ports: int
    lm_head_format: str
    max_context: int
    #: AXI data bytes per beat (``axi_data_width / 8``): per-port sub-words are padded to it.
    beat_bytes: int = 16

    @classmethod
    def of(cls, hw: HardwareConfig) -> "ImageFormat":
        if hw.tlmm_lanes % hw.hp_ports:
            raise ConfigError(f"tlmm_lanes: {hw.tlmm_lanes} must be a multiple of hp_ports ({hw.hp_ports}) "
                              "for the per-port weight streams")
        return cls(hw.tlmm_group, hw.tlmm_lanes, hw.hp_ports, hw.lm_head_format, hw.max_context,
                   hw.axi_data_width // 8)

    @property
    def lanes_per_port(self) -> int:
        return self.tlmm_lanes // self.hp_ports

    @property
    def subword_bytes(self) -> int:
        """Bytes of one port's share of a lane word, padded to whole AXI beats."""
        return subword_bytes(self.lanes_per_port, self.tlmm_group, self.beat_bytes)


#: The ternary projections of a layer in schedule order (``layers.<i>.scales`` row order too).
PROJECTIONS_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Section:
    """One section of the image: byte ``offset`` from the image base, ``size`` in bytes (before
    the padding to the next 4 KiB boundary), element ``dtype`` and ``shape`` (for ``"tlmm"``
    sections the projection's (N, K))."""
    name: str
    offset: int
    size: int
    dtype: str
    shape: tuple[int, ...]


def projection_port_stride(shape: tuple[int, int], fmt: ImageFormat) -> int:
    """Bytes from one port's weight sub-stream of a projection to the next port's (4 KiB
    aligned): ``blocks x N`` sub-words of ``subword_bytes``."""
    n_rows, k = shape
    blocks = -(-tlmm_groups(k, fmt.tlmm_group) // fmt.tlmm_lanes)
    return page_up(blocks * n_rows * fmt.subword_bytes)


def stripe(stream: bytes, *, ports: int, beat_bytes: int) -> list[bytes]:
    """The ``ports`` stripes of a byte stream: stripe k holds bytes [k B, (k + 1) B) of every
    ``ports x B``-byte word of it (B = ``beat_bytes``), the stream zero-padded to whole words.
    Read in lockstep, one beat from each stripe, they give the stream back a word at a time
    (``tellme.hw.striped_read.StripedReadMaster``)."""
    word = ports * beat_bytes
    words = np.frombuffer(stream + bytes(-len(stream) % word), dtype=np.uint8).reshape(-1, ports, beat_bytes)
    return [words[:, k].tobytes() for k in range(ports)]


def unstripe(stripes: list[bytes], *, beat_bytes: int) -> bytes:
    """The byte stream of :func:`stripe`'s stripes (with its padding to whole words)."""
    beats = [np.frombuffer(s, dtype=np.uint8).reshape(-1, beat_bytes) for s in stripes]
    return np.stack(beats, axis=1).tobytes()


@dataclass(frozen=True)
class LmHeadStream:
    """The image section ``lm_head``: the head's rows (``rows`` x ``cols``, int8 or binary16,
    row-major) from logical byte 0 and, for int8, the rows' float32 scales from
    :attr:`scales_offset`, as one logical byte stream (each part padded to whole words of
    ``ports`` x ``beat_bytes``), striped over ``ports`` HP ports (:func:`stripe`): stripe k
    at ``k x`` :attr:`stripe_bytes` from the section's start. The LM head reads it as ``ports``
    lockstep AXI masters, a logical word per cycle; ``ports`` is the image format's HP ports
    when a row is a whole number of words of them (else 1: the stream itself)."""
    rows: int
    cols: int
    weight_format: str
    ports: int
    beat_bytes: int

    @classmethod
    def of(cls, config: ModelConfig, fmt: "ImageFormat") -> "LmHeadStream":
        esize = 1 if fmt.lm_head_format == "int8" else 2
        word = fmt.hp_ports * fmt.beat_bytes
        striped = (fmt.hp_ports & (fmt.hp_ports - 1) == 0 and word <= 64
                   and (esize * config.hidden_size) % word == 0)
        return cls(config.vocab_size, config.hidden_size, fmt.lm_head_format,
                   fmt.hp_ports if striped else 1, fmt.beat_bytes)

    @property
    def word_bytes(self) -> int:
        """A logical beat: one AXI beat from each stripe."""
        return self.ports * self.beat_bytes

    @property
    def weight_bytes(self) -> int:
        return 1 if self.weight_format == "int8" else 2

    @property
    def rows_bytes(self) -> int:
        return self.rows * self.cols * self.weight_bytes

    @property
    def scales_offset(self) -> int:
        """Logical byte of the int8 head's scales (0 for binary16: it has none)."""
        return align_up(self.rows_bytes, self.word_bytes) if self.weight_format == "int8" else 0

    @property
    def logical_bytes(self) -> int:
        end = self.scales_offset + 4 * self.rows if self.weight_format == "int8" else self.rows_bytes
        return align_up(end, self.word_bytes)

    @property
    def stripe_bytes(self) -> int:
        """From one stripe's start to the next's: one stripe, to a whole 4 KiB page."""
        return page_up(self.logical_bytes // self.ports)

    @property
    def section_bytes(self) -> int:
        return (self.ports - 1) * self.stripe_bytes + self.logical_bytes // self.ports

    def encode(self, arrays: tuple[np.ndarray, ...]) -> bytes:
        """The section's bytes from ``(q int8 (R, C), scale float32 (R,))`` or ``(f16 (R, C),)``."""
        logical = bytearray(self.logical_bytes)
        rows = np.ascontiguousarray(arrays[0]).tobytes()
        logical[:len(rows)] = rows
        if self.weight_format == "int8":
            scales = np.ascontiguousarray(arrays[1], dtype="<f4").tobytes()
            logical[self.scales_offset:self.scales_offset + len(scales)] = scales
        stripes = stripe(bytes(logical), ports=self.ports, beat_bytes=self.beat_bytes)
        padded = [s + bytes(self.stripe_bytes - len(s)) for s in stripes[:-1]] + stripes[-1:]
        return b"".join(padded)

    def decode(self, raw: bytes) -> tuple[np.ndarray, ...]:
        """:meth:`encode`'s arrays back from the section's bytes."""
        n = self.logical_bytes // self.ports
        logical = unstripe([bytes(raw[k * self.stripe_bytes:k * self.stripe_bytes + n]) for k in range(self.ports)],
                           beat_bytes=self.beat_bytes)
        dtype = np.int8 if self.weight_format == "int8" else np.float16
        rows = np.frombuffer(logical[:self.rows_bytes], dtype=dtype).reshape(self.rows, self.cols).copy()
        if self.weight_format != "int8":
            return (rows,)
        scales = np.frombuffer(logical[self.scales_offset:self.scales_offset + 4 * self.rows], dtype="<f4").copy()
        return rows, scales


def image_sections(config: ModelConfig, fmt: ImageFormat) -> dict[str, Section]:
    """Every section of the image of a ``config`` model in format ``fmt``, in image order, at
    the offsets the writer gives them (docs section 5). They depend only on (config, format), so
    the generator bakes them into the sequencer program."""
    hd, hidden = config.head_dim, config.hidden_size
    shapes: list[tuple[str, str, tuple[int, ...]]] = [
        ("embed", "float32", (config.vocab_size, hidden)),
        ("rope.cos", "float32", (fmt.max_context, hd // 2)),
        ("rope.sin", "float32", (fmt.max_context, hd // 2)),
    ]
    projections = config.projections()
    for i in range(config.num_layers):
        norms = ["input_norm", "post_attention_norm"] + (["attn_sub_norm", "ffn_sub_norm"] if config.sub_norms else [])
        widths = {"attn_sub_norm": config.q_size, "ffn_sub_norm": config.intermediate_size}
        shapes += [(f"layers.{i}.{n}", "float32", (widths.get(n, hidden),)) for n in norms]
        shapes.append((f"layers.{i}.scales", "float32", (len(PROJECTIONS_ORDER), 2)))
        shapes += [(f"layers.{i}.{p}", "tlmm", projections[p]) for p in PROJECTIONS_ORDER]
    shapes.append(("final_norm", "float32", (hidden,)))
    # (dtype "lm_head.int8" or "lm_head.float16": LmHeadStream's striped rows and scales)
    shapes.append(("lm_head", f"lm_head.{'int8' if fmt.lm_head_format == 'int8' else 'float16'}",
                   (config.vocab_size, hidden)))
    sections, offset = {}, IMAGE_PREAMBLE_BYTES
    for name, dtype, shape in shapes:
        if dtype == "tlmm":
            size = fmt.hp_ports * projection_port_stride(shape, fmt)
        elif name == "lm_head":
            size = LmHeadStream.of(config, fmt).section_bytes
        else:
            size = math.prod(shape) * np.dtype(dtype).itemsize
        sections[name] = Section(name, offset, size, dtype, tuple(shape))
        offset += page_up(size)
    return sections


# ------------------------------------------------------------------------------------------------
# URAM weight buffer
# ------------------------------------------------------------------------------------------------

#: One URAM288: 4096 words of 72 bits.
URAM_DEPTH = 4096
URAM_WIDTH = 72


@dataclass(frozen=True)
class BufferGeometry:
    """The weight buffer of one hardware configuration."""
    lanes: int
    group: int
    ports: int
    urams_per_bank: int
    beat_bytes: int = 16

    @property
    def word_bits(self) -> int:
        return self.lanes * code_bits(self.group)

    @property
    def urams_wide(self) -> int:
        return -(-self.word_bits // URAM_WIDTH)

    @property
    def entries_per_bank(self) -> int:
        if self.urams_per_bank % self.urams_wide:
            raise ConfigError(f"urams_per_bank: {self.urams_per_bank} is not a multiple of the "
                              f"{self.urams_wide} URAMs one lane word needs")
        return URAM_DEPTH * (self.urams_per_bank // self.urams_wide)

    @property
    def subword_bytes(self) -> int:
        return subword_bytes(self.lanes // self.ports, self.group, self.beat_bytes)

    @classmethod
    def of(cls, hw: HardwareConfig, urams_per_bank: int | None = None) -> "BufferGeometry":
        """The buffer of ``hw`` (``urams_per_bank`` overrides the configuration's)."""
        urams = hw.urams_per_bank if urams_per_bank is None else urams_per_bank
        return cls(hw.tlmm_lanes, hw.tlmm_group, hw.hp_ports, urams, hw.axi_data_width // 8)


# ------------------------------------------------------------------------------------------------
# KV cache
# ------------------------------------------------------------------------------------------------

#: Bytes per scale record {k_scale f32, v_scale f32, 8 reserved zero bytes}: one 128-bit beat.
KV_RECORD_BYTES = 16


def kv_element_bytes(attn_format: str) -> int:
    """Bytes of one cached K or V element: 1 (``"int8"``) or 4 (``"fp32"``)."""
    try:
        return {"int8": 1, "fp32": 4}[attn_format]
    except KeyError:
        raise ConfigError(f"attn_format: unknown K/V format {attn_format!r}; known: int8, fp32") from None


def kv_row_bytes(head_dim: int, attn_format: str) -> int:
    """Bytes of one cached K or V row of ``head_dim`` elements."""
    return head_dim * kv_element_bytes(attn_format)


@dataclass(frozen=True)
class KvBases:
    """Base byte addresses of one (layer, kv head)'s arrays (``s_base``, the scale records, is 0
    and unused in the fp32 format, which has none)."""
    k_base: int
    v_base: int
    s_base: int


def kv_cache_map(kv_base: int, layers: int, kv_heads: int, capacity: int, head_dim: int,
                 attn_format: str = "int8") -> tuple[dict[tuple[int, int], KvBases], int]:
    """Addresses of every (layer, kv head)'s arrays in a KV-cache buffer at ``kv_base`` (4 KiB
    aligned): per (layer, kv head) in order, K rows [capacity][hd], V rows [capacity][hd] (int8
    or float32 elements, :func:`kv_element_bytes`) and, in the int8 format, scale records
    [capacity] x 16 bytes, each array starting on a 4 KiB boundary. Returns (map, total bytes)."""
    if kv_base % PAGE:
        raise ValueError(f"kv_base {kv_base:#x} is not 4 KiB aligned")
    rows = page_up(capacity * kv_row_bytes(head_dim, attn_format))
    records = page_up(capacity * KV_RECORD_BYTES) if attn_format == "int8" else 0
    bases, addr = {}, kv_base
    for layer in range(layers):
        for head in range(kv_heads):
            bases[layer, head] = KvBases(addr, addr + rows, addr + 2 * rows if records else 0)
            addr += 2 * rows + records
    return bases, addr - kv_base


def kv_bytes_per_token(layers: int, kv_heads: int, head_dim: int, attn_format: str) -> int:
    """DDR bytes one cached position holds over all layers and kv heads (K row, V row and, in
    the int8 format, its scale record): what a decode step reads per position of context."""
    per_head = 2 * kv_row_bytes(head_dim, attn_format) + (KV_RECORD_BYTES if attn_format == "int8" else 0)
    return layers * kv_heads * per_head


def scale_records(k_scale: np.ndarray, v_scale: np.ndarray) -> bytes:
    """Scale records {k_scale f32, v_scale f32, 8 reserved zero bytes} of consecutive positions."""
    return b"".join(struct.pack("<ff8x", k, v) for k, v in
                    zip(np.asarray(k_scale, np.float32), np.asarray(v_scale, np.float32)))


def kv_arrays(cache, kv_head: int, count: int) -> tuple[bytes, bytes, bytes]:
    """The bytes of positions 0..count-1 of one kv head of a KV cache (the golden model's
    ``KVCache``: int8 ``k``, ``v`` and scales ``k_scale``, ``v_scale``; or ``FloatKVCache``:
    float32 ``k``, ``v``) as section 6 lays them out: (K rows, V rows, scale records; the
    last empty in the fp32 format)."""
    if cache.format == "fp32":
        return (cache.k[kv_head, :count].astype(np.float32).tobytes(),
                cache.v[kv_head, :count].astype(np.float32).tobytes(), b"")
    return (cache.k[kv_head, :count].astype(np.int8).tobytes(),
            cache.v[kv_head, :count].astype(np.int8).tobytes(),
            scale_records(cache.k_scale[kv_head, :count], cache.v_scale[kv_head, :count]))


# ------------------------------------------------------------------------------------------------
# Scratch and I/O regions
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScratchArray:
    """One float32 activation array in the scratch region: ``rows`` token rows of ``width``
    elements, row t at ``offset + t * row_bytes`` (``row_bytes`` padded to whole element-wise
    beats and AXI beats, the padding zero)."""
    name: str
    offset: int
    width: int
    rows: int
    row_bytes: int

    @property
    def size(self) -> int:
        return self.rows * self.row_bytes


def scratch_layout(config: ModelConfig, hw: HardwareConfig) -> dict[str, ScratchArray]:
    """The scratch region's arrays (docs section 6), each 4 KiB aligned, for chunks of up to
    ``prefill_chunk`` tokens: ``h0``/``h1`` the residual stream (ping-pong: a residual matmul
    reads one and writes the other), ``q``, ``k``, ``v`` the projections, ``attn`` the
    attention output (these four with the q row's stride), ``gate``/``up`` the FFN projections
    (the gated activation overwrites ``gate``)."""
    # Whole beats of the element-wise lanes and of the AXI bus (one divides the other).
    beat = max(hw.ew_lanes * 4, hw.axi_data_width // 8)
    widths = {"h0": config.hidden_size, "h1": config.hidden_size, "q": config.q_size, "k": config.kv_size,
              "v": config.kv_size, "attn": config.q_size, "gate": config.intermediate_size,
              "up": config.intermediate_size}
    # q, k, v and attn share one row stride (the q row's), so one attention pass addresses all
    # four with a single stride; under GQA the k and v rows carry padding.
    shared = align_up(config.q_size * 4, beat)
    arrays, offset = {}, 0
    for name, width in widths.items():
        row_bytes = shared if name in ("q", "k", "v", "attn") else align_up(width * 4, beat)
        arrays[name] = ScratchArray(name, offset, width, hw.prefill_chunk, row_bytes)
        offset += page_up(hw.prefill_chunk * row_bytes)
    return arrays


@dataclass(frozen=True)
class IoLayout:
    """The I/O region: the call's token ids (u32 each) at ``ids_offset``, the last token's
    logits (float32 x vocab) at ``logits_offset``."""
    ids_offset: int
    logits_offset: int
    size: int

    @classmethod
    def of(cls, config: ModelConfig, hw: HardwareConfig) -> "IoLayout":
        logits = page_up(4 * hw.prefill_chunk)
        return cls(0, logits, logits + page_up(4 * config.vocab_size))
