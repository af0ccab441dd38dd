"""Codes and tables: the formats the host writes and the hardware reads (docs/architecture.md
sections 3 and 5).

- TLMM weight codes: G ternary weights as one sign-magnitude balanced-ternary code of
  :func:`code_bits` bits indexing a sign-halved table of :func:`table_entries` entries
  (:func:`tlmm_encode`, :func:`tlmm_decode`, :func:`tlmm_digits`), the lane order the TLMM
  consumes them in (:func:`tlmm_weight_stream`) and their little-endian bit packing
  (:func:`pack_codes`).
- Host-computed tables: the RoPE (cos, sin) table, the per-projection weight multiplier and the
  int8 LM-head rows with their scales.

Every function is pure numpy and is used by the golden model, the image writer and the RTL
generators alike, so one definition fixes each format.
"""

from __future__ import annotations

import numpy as np

__all__ = ["code_bits", "table_entries", "tlmm_groups", "tlmm_encode", "tlmm_digits", "tlmm_decode",
           "tlmm_weight_stream", "tlmm_codes_from_stream", "pack_codes", "unpack_codes",
           "rope_table", "weight_multiplier", "lm_head_int8", "ATTN_SCORE_LANES"]

#: Lanes of the fp32 attention format's score dot product: the beats of ``fp32.vector_sum``
#: over the products k_i q_i (docs/architecture.md 3.8), the attention cores' ``dot_lanes``.
ATTN_SCORE_LANES = 16


def code_bits(group: int) -> int:
    """Bits of one TLMM code for group size G: a sign bit and ceil(log2((3^G+1)/2)) magnitude bits."""
    entries = (3 ** group + 1) // 2
    return 1 + (entries - 1).bit_length()


def table_entries(group: int) -> int:
    """Entries of one sign-halved lookup table: magnitudes 0 .. (3^G-1)/2."""
    return (3 ** group + 1) // 2


def tlmm_groups(k: int, group: int) -> int:
    """Groups per row: K padded with zero weights (and zero activations) to a multiple of G."""
    return -(-k // group)


def tlmm_encode(trits: np.ndarray, group: int) -> np.ndarray:
    """Ternary weights (N, K) -> codes (N, ceil(K/G)), uint16.

    The weights w_0..w_{G-1} of inputs gG..gG+G-1 form the balanced-ternary number
    n = sum_i w_i 3^i. The code is ``sign << (b-1) | |n|`` with sign = (n < 0) and b = code_bits(G).
    """
    trits = np.asarray(trits)
    n_rows, k = trits.shape
    kg = tlmm_groups(k, group)
    padded = np.zeros((n_rows, kg * group), dtype=np.int64)
    padded[:, :k] = trits
    powers = 3 ** np.arange(group, dtype=np.int64)
    value = padded.reshape(n_rows, kg, group) @ powers
    sign = (value < 0).astype(np.int64)
    return ((sign << (code_bits(group) - 1)) | np.abs(value)).astype(np.uint16)


def tlmm_digits(group: int) -> np.ndarray:
    """Balanced-ternary digits of every table magnitude m: int8 (entries, G), digit i of weight 3^i."""
    m = np.arange(table_entries(group), dtype=np.int64)
    digits = np.zeros((len(m), group), dtype=np.int8)
    rest = m.copy()
    for i in range(group):
        d = ((rest + 1) % 3) - 1
        digits[:, i] = d
        rest = (rest - d) // 3
    return digits


def tlmm_decode(codes: np.ndarray, group: int, k: int) -> np.ndarray:
    """Inverse of tlmm_encode; raises ValueError on a magnitude outside the table."""
    codes = np.asarray(codes).astype(np.int64)
    b = code_bits(group)
    mag = codes & ((1 << (b - 1)) - 1)
    sign = (codes >> (b - 1)) & 1
    if np.any(mag >= table_entries(group)) or np.any(codes >> b):
        raise ValueError(f"TLMM code outside the G={group} format (magnitude >= {table_entries(group)})")
    digits = tlmm_digits(group).astype(np.int64)[mag]           # (N, Kg, G)
    digits = np.where(sign[..., None] == 1, -digits, digits)
    return digits.reshape(codes.shape[0], -1)[:, :k].astype(np.int8)


def tlmm_weight_stream(codes: np.ndarray, lanes: int) -> np.ndarray:
    """The order the TLMM lanes consume codes (and the DDR image stores them):
    (blocks, N, lanes) with block b, row r, lane p holding group b*lanes + p of row r; groups past
    Kg are zero codes (zero weights). Lane p of block b thus always sees the same activation group."""
    codes = np.asarray(codes)
    n_rows, kg = codes.shape
    blocks = -(-kg // lanes)
    padded = np.zeros((n_rows, blocks * lanes), dtype=codes.dtype)
    padded[:, :kg] = codes
    return padded.reshape(n_rows, blocks, lanes).transpose(1, 0, 2).copy()


def tlmm_codes_from_stream(stream: np.ndarray, kg: int) -> np.ndarray:
    """Inverse of tlmm_weight_stream."""
    blocks, n_rows, lanes = stream.shape
    return stream.transpose(1, 0, 2).reshape(n_rows, blocks * lanes)[:, :kg].copy()


def rope_table(theta: float, head_dim: int, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """Host-computed (cos, sin), each float32 (positions, head_dim/2), as Hugging Face computes
    them: inv_freq_i = 1 / theta^(2i/d) in float32, angle = float32(pos) * inv_freq (float32),
    cos/sin of that float32 angle correctly rounded to float32."""
    i = np.arange(0, head_dim, 2, dtype=np.float32)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** (i / np.float32(head_dim)))).astype(np.float32)
    angle = (np.arange(positions, dtype=np.float32)[:, None] * inv_freq[None, :]).astype(np.float32)
    return (np.cos(angle.astype(np.float64)).astype(np.float32),
            np.sin(angle.astype(np.float64)).astype(np.float32))


def lm_head_int8(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Host-side per-row int8 quantisation of the head: s_r = fp32(max|W_r| / 127) (1 for an
    all-zero row), q = clip(rint(W / s_r), -127, 127) computed in float64."""
    w = np.asarray(weight, dtype=np.float64)
    mx = np.max(np.abs(w), axis=1)
    scale = np.where(mx > 0, mx / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale.astype(np.float64)[:, None]), -127, 127).astype(np.int8)
    return q, scale


def weight_multiplier(weight_scale: np.float32) -> np.float32:
    """w_mult = fp32(1 / s_w), computed on the host in float64."""
    return np.float32(1.0 / float(weight_scale))


def pack_codes(codes: np.ndarray, bits_per_code: int, word_bytes: int) -> np.ndarray:
    """(..., n) codes -> (..., word_bytes) uint8: code j at bits [j*b, (j+1)*b), little-endian."""
    lead = codes.shape[:-1]
    n = codes.shape[-1]
    flat = codes.reshape(-1, n).astype(np.uint64)
    bitpos = np.arange(n) * bits_per_code
    out = np.zeros((flat.shape[0], word_bytes), dtype=np.uint8)
    for bit in range(bits_per_code):
        pos = bitpos + bit
        vals = ((flat >> np.uint64(bit)) & np.uint64(1)).astype(np.uint8)
        np.bitwise_or.at(out, (slice(None), pos // 8), (vals << (pos % 8).astype(np.uint8)))
    return out.reshape(lead + (word_bytes,))


def unpack_codes(words: np.ndarray, bits_per_code: int, n: int) -> np.ndarray:
    lead = words.shape[:-1]
    flat = words.reshape(-1, words.shape[-1])
    bitpos = np.arange(n) * bits_per_code
    out = np.zeros((flat.shape[0], n), dtype=np.uint16)
    for bit in range(bits_per_code):
        pos = bitpos + bit
        vals = (flat[:, pos // 8] >> (pos % 8).astype(np.uint8)) & 1
        out |= (vals.astype(np.uint16) << bit)
    return out.reshape(lead + (n,))
