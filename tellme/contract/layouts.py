"""Memory layouts shared by the host and the hardware (docs/architecture.md sections 4 and 6).

- :data:`PAGE`: 4 KiB, the AXI burst boundary and the alignment of every DDR section and array.
- The DDR image: :data:`IMAGE_MAGIC`, :data:`IMAGE_VERSION`, :data:`IMAGE_PREAMBLE_BYTES` and
  :class:`ImageFormat`, the hardware parameters that fix where and how weights are stored
  (the writer and reader are ``tellme.gen.image``).
- The URAM weight buffer: :class:`BufferGeometry` (lane word width, bank depth, per-port
  sub-word size) that both the weight streamer RTL and the generator's tiling read.
- The KV cache: :func:`kv_cache_map` (where each (layer, kv head)'s K rows, V rows and scale
  records start), :data:`KV_RECORD_BYTES` and :func:`scale_records` (the record format), and
  :func:`kv_arrays` (the bytes a cache holds for a range of positions).

Pure Python and numpy: no hardware description, no simulation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..config import ConfigError, HardwareConfig
from .formats import code_bits

__all__ = ["PAGE", "page_up", "align_up", "subword_bytes",
           "IMAGE_MAGIC", "IMAGE_VERSION", "IMAGE_PREAMBLE_BYTES", "ImageFormat",
           "URAM_DEPTH", "URAM_WIDTH", "BufferGeometry",
           "KV_RECORD_BYTES", "KvBases", "kv_cache_map", "scale_records", "kv_arrays"]

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
IMAGE_VERSION = 1
#: The preamble page: magic, u32 format version, u32 header length, u64 header offset.
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
    def of(cls, hw: HardwareConfig, urams_per_bank: int = 16) -> "BufferGeometry":
        return cls(hw.tlmm_lanes, hw.tlmm_group, hw.hp_ports, urams_per_bank, hw.axi_data_width // 8)


# ------------------------------------------------------------------------------------------------
# KV cache
# ------------------------------------------------------------------------------------------------

#: Bytes per scale record {k_scale f32, v_scale f32, 8 reserved zero bytes}: one 128-bit beat.
KV_RECORD_BYTES = 16


@dataclass(frozen=True)
class KvBases:
    """Base byte addresses of one (layer, kv head)'s three arrays."""
    k_base: int
    v_base: int
    s_base: int


def kv_cache_map(kv_base: int, layers: int, kv_heads: int, capacity: int, head_dim: int
                 ) -> tuple[dict[tuple[int, int], KvBases], int]:
    """Addresses of every (layer, kv head)'s arrays in a KV-cache buffer at ``kv_base`` (4 KiB
    aligned): per (layer, kv head) in order, K rows [capacity][hd] int8, V rows
    [capacity][hd] int8, scale records [capacity] x 16 bytes, each array starting on a 4 KiB
    boundary. Returns (map, total bytes)."""
    if kv_base % PAGE:
        raise ValueError(f"kv_base {kv_base:#x} is not 4 KiB aligned")
    rows, records = page_up(capacity * head_dim), page_up(capacity * KV_RECORD_BYTES)
    bases, addr = {}, kv_base
    for layer in range(layers):
        for head in range(kv_heads):
            bases[layer, head] = KvBases(addr, addr + rows, addr + 2 * rows)
            addr += 2 * rows + records
    return bases, addr - kv_base


def scale_records(k_scale: np.ndarray, v_scale: np.ndarray) -> bytes:
    """Scale records {k_scale f32, v_scale f32, 8 reserved zero bytes} of consecutive positions."""
    return b"".join(struct.pack("<ff8x", k, v) for k, v in
                    zip(np.asarray(k_scale, np.float32), np.asarray(v_scale, np.float32)))


def kv_arrays(cache, kv_head: int, count: int) -> tuple[bytes, bytes, bytes]:
    """The bytes of positions 0..count-1 of one kv head of a KV cache (any object with the
    golden model's ``KVCache`` arrays ``k``, ``v``, ``k_scale``, ``v_scale``) as section 6 lays
    them out: (K rows, V rows, scale records)."""
    return (cache.k[kv_head, :count].astype(np.int8).tobytes(),
            cache.v[kv_head, :count].astype(np.int8).tobytes(),
            scale_records(cache.k_scale[kv_head, :count], cache.v_scale[kv_head, :count]))
