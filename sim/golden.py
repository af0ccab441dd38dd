"""Hardware-exact golden model: one function per hardware unit (docs/architecture.md).

Every function here is the contract its RTL unit is tested against, bit for bit. Integer parts
are exact; floating-point parts use only the primitives of :mod:`tellme.contract.fp32` in the order
stated. Shapes: a leading token axis T on activations; weights as the units see them.

The formats these units read (TLMM codes, the weight stream order, the RoPE table, the int8
LM-head rows, the weight multiplier) are defined once in :mod:`tellme.contract.formats`.

Units:
    tlmm_table                 online table precompute of one activation group
    tlmm                       lookup-accumulate lanes: int32 dot products
    quantize                   absmax int8 quantiser (per token, or per token and head)
    rmsnorm                    RMSNorm
    rmsnorm_quantize           the fused RMSNorm + quantiser pipeline
    dequantize                 int32 accumulators -> float32 (activation scale x weight multiplier)
    residual_add               residual stream update
    gated_activation           ReLU^2(gate) * up or SiLU(gate) * up
    rope                       rotate-half RoPE from the host-computed table
    KVCache, FloatKVCache      the K/V cache in the int8 and fp32 formats (append quantises or stores)
    attention                  prefill and decode attention (online softmax over key tiles)
    lm_head                    int8-per-row (or fp16) LM head
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import HardwareConfig, ModelConfig
from ..contract import fp32 as f
from ..contract.formats import (ATTN_SCORE_LANES, code_bits, lm_head_int8, rope_table, tlmm_digits, tlmm_encode,
                                tlmm_groups, weight_multiplier)
from ..weights import ModelWeights

ACT_CLAMP = np.float32(1e-5)
INV_127 = np.float32(1.0 / 127.0)


# --------------------------------------------------------------------------------------------
# TLMM: code format, table precompute, lookup-accumulate
# --------------------------------------------------------------------------------------------

def tlmm_table(x_group: np.ndarray, group: int) -> np.ndarray:
    """Online precompute: entry m = sum_i d_i(m) * x_i over the G activations of one group
    (int8 in, int32 out, exact); entries in ascending m. Sign symmetry: entry(-n) = -entry(n)."""
    return tlmm_digits(group).astype(np.int32) @ np.asarray(x_group, dtype=np.int32)


def tlmm_tables(x_q: np.ndarray, group: int) -> np.ndarray:
    """Tables of every group of every token: (T, Kg, entries) int32; K zero-padded to Kg*G."""
    x_q = np.atleast_2d(np.asarray(x_q, dtype=np.int32))
    t, k = x_q.shape
    kg = tlmm_groups(k, group)
    padded = np.zeros((t, kg * group), dtype=np.int32)
    padded[:, :k] = x_q
    return padded.reshape(t, kg, group) @ tlmm_digits(group).astype(np.int32).T


def tlmm(codes: np.ndarray, x_q: np.ndarray, group: int) -> np.ndarray:
    """Lookup-accumulate: acc[t, r] = sum_g sign(r,g) * table[t, g, |code(r,g)|], exact int32.

    codes: (N, Kg) from tlmm_encode; x_q: (T, K) int8. Integer addition is exact, so the
    result does not depend on lane count or order; the RTL must match it exactly."""
    codes = np.asarray(codes).astype(np.int64)
    b = code_bits(group)
    mag = codes & ((1 << (b - 1)) - 1)
    neg = ((codes >> (b - 1)) & 1).astype(bool)
    tables = tlmm_tables(x_q, group)                               # (T, Kg, E)
    kg = codes.shape[1]
    if tables.shape[1] != kg:
        raise ValueError(f"codes have {kg} groups but activations give {tables.shape[1]}")
    out = np.empty((tables.shape[0], codes.shape[0]), dtype=np.int64)
    g_idx = np.arange(kg)
    for t in range(tables.shape[0]):
        looked = tables[t][g_idx[None, :], mag]                     # (N, Kg)
        out[t] = np.where(neg, -looked, looked).sum(axis=1)
    assert np.all(np.abs(out) < 2 ** 31)
    return out.astype(np.int32)


# --------------------------------------------------------------------------------------------
# Element-wise units
# --------------------------------------------------------------------------------------------

def quantize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Absmax int8 quantiser over the last axis.

    m = max(max|x|, 1e-5); d = m * fp32(1/127); s = recip(d); x_q = to_int8(x * s).
    Returns (x_q int8, d float32 with the last axis removed): x ~= x_q * d. (s is formed from d,
    not as 127 * recip(m), so it stays a normal number for every finite m.)"""
    x = f.ftz(x)
    m = f.fmax(f.max_abs(x), ACT_CLAMP)
    d = f.mul(m, INV_127)
    x_q = f.to_int8(f.mul(x, f.recip(d)[..., None]))
    return x_q, d


def rmsnorm(x: np.ndarray, gain: np.ndarray, eps: float, lanes: int) -> np.ndarray:
    """y = (x * rsqrt(vector_sum(x*x) * fp32(1/d) + eps)) * gain, over the last axis."""
    x = f.ftz(x)
    d = x.shape[-1]
    ss = f.vector_sum(f.mul(x, x), lanes)
    mean = f.mul(ss, np.float32(1.0 / d))
    r = f.rsqrt(f.add(mean, np.float32(eps)))
    return f.mul(f.mul(x, r[..., None]), f.as_f32(gain))


def rmsnorm_quantize(x, gain, eps, lanes):
    """The fused norm/quant pipeline: rmsnorm, then quantize of the normalised vector."""
    return quantize(rmsnorm(x, gain, eps, lanes))


def dequantize(acc: np.ndarray, d_x: np.ndarray, w_mult: np.float32) -> np.ndarray:
    """y = from_int(acc) * (d_x * w_mult): one multiplier per token, computed once."""
    comb = f.mul(f.as_f32(d_x), np.float32(w_mult))
    return f.mul(f.from_int(acc), comb[..., None])


def residual_add(h: np.ndarray, y: np.ndarray) -> np.ndarray:
    return f.add(h, y)


def gated_activation(gate: np.ndarray, up: np.ndarray, act: str) -> np.ndarray:
    """act(gate) * up with act = relu2 (max(x,0)^2) or silu (x * recip(1 + exp(-x)))."""
    if act == "relu2":
        a = f.relu2(gate)
    elif act == "silu":
        a = f.silu(gate)
    else:
        raise ValueError(f"unknown activation {act!r}")
    return f.mul(a, up)


def rope(x: np.ndarray, positions: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate-half RoPE on (T, heads, head_dim): with x1, x2 the halves and c, s the table rows,
    out1 = x1*c - x2*s, out2 = x2*c + x1*s."""
    half = x.shape[-1] // 2
    c = cos[positions][:, None, :]
    s = sin[positions][:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([f.sub(f.mul(x1, c), f.mul(x2, s)),
                           f.add(f.mul(x2, c), f.mul(x1, s))], axis=-1)


# --------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------

@dataclass
class KVCache:
    """One layer's cache in the int8 format: int8 keys/values per (kv head, position, head_dim)
    and a float32 dequantisation scale per (kv head, position)."""

    k: np.ndarray
    v: np.ndarray
    k_scale: np.ndarray
    v_scale: np.ndarray
    format = "int8"

    @classmethod
    def empty(cls, kv_heads: int, capacity: int, head_dim: int) -> "KVCache":
        return cls(np.zeros((kv_heads, capacity, head_dim), np.int8), np.zeros((kv_heads, capacity, head_dim), np.int8),
                   np.zeros((kv_heads, capacity), np.float32), np.zeros((kv_heads, capacity), np.float32))

    @property
    def capacity(self) -> int:
        return self.k.shape[1]

    def _check(self, pos0: int, t: int) -> None:
        if pos0 + t > self.capacity:
            raise ValueError(f"KV cache overflow: positions {pos0}..{pos0 + t - 1} exceed capacity {self.capacity}")

    def write(self, pos0: int, k_q, k_d, v_q, v_d):
        """Store a chunk: k_q/v_q (T, kv_heads, hd), k_d/v_d (T, kv_heads)."""
        t = k_q.shape[0]
        self._check(pos0, t)
        self.k[:, pos0:pos0 + t] = k_q.transpose(1, 0, 2)
        self.v[:, pos0:pos0 + t] = v_q.transpose(1, 0, 2)
        self.k_scale[:, pos0:pos0 + t] = k_d.T
        self.v_scale[:, pos0:pos0 + t] = v_d.T

    def append(self, pos0: int, k, v):
        """The cache append of float32 k (after RoPE) and v (T, kv_heads, hd): each row
        quantised by :func:`quantize` (per token and kv head)."""
        k_q, k_d = quantize(k)
        v_q, v_d = quantize(v)
        self.write(pos0, k_q, k_d, v_q, v_d)


@dataclass
class FloatKVCache(KVCache):
    """One layer's cache in the fp32 format: float32 keys/values per (kv head, position,
    head_dim), stored as computed (no scales)."""

    k_scale: None = None
    v_scale: None = None
    format = "fp32"

    @classmethod
    def empty(cls, kv_heads: int, capacity: int, head_dim: int) -> "FloatKVCache":
        return cls(np.zeros((kv_heads, capacity, head_dim), np.float32),
                   np.zeros((kv_heads, capacity, head_dim), np.float32))

    def write(self, pos0: int, k, v):
        """Store a chunk: k/v (T, kv_heads, hd) float32."""
        t = k.shape[0]
        self._check(pos0, t)
        self.k[:, pos0:pos0 + t] = np.asarray(k, np.float32).transpose(1, 0, 2)
        self.v[:, pos0:pos0 + t] = np.asarray(v, np.float32).transpose(1, 0, 2)

    def append(self, pos0: int, k, v):
        self.write(pos0, k, v)


#: The K/V cache class of each ``HardwareConfig.attn_format``.
KV_CACHES = {"int8": KVCache, "fp32": FloatKVCache}

#: Lanes of the fp32 format's score dot product (``fp32.vector_sum``'s beats): the attention
#: cores' ``dot_lanes``.
SCORE_LANES = ATTN_SCORE_LANES


def key_tile_order(pos: int, tile: int) -> list[tuple[int, int]]:
    """Key ranges [lo, hi) one query at position ``pos`` visits, in order: tiles of ``tile`` keys
    aligned to multiples of ``tile``, from the tile holding ``pos`` (cut at pos, causal mask)
    down to tile 0 (the reversed order of docs/architecture.md)."""
    ranges = []
    top = pos // tile
    for t in range(top, -1, -1):
        lo = t * tile
        ranges.append((lo, min(lo + tile, pos + 1)))
    return ranges


def attention_scores(cache: KVCache, kv_head: int, lo: int, hi: int, q: np.ndarray, d_q, head_dim: int,
                     lanes: int = SCORE_LANES) -> np.ndarray:
    """Scores s_j of keys lo..hi-1 for one query (docs 3.8):

    - int8: s_j = (from_int(q_q . k_q[j]) * d_k[j]) * (d_q * fp32(1/sqrt(hd))), the dot product exact;
    - fp32: s_j = vector_sum(k[j] * q, lanes) * fp32(1/sqrt(hd)), products rounded to float32 and
      summed in ``fp32.vector_sum`` order over beats of ``lanes`` (the cores' dot lanes); d_q unused."""
    inv_sqrt = np.float32(1.0 / np.sqrt(head_dim))
    if cache.format == "fp32":
        dots = f.vector_sum(f.mul(cache.k[kv_head, lo:hi], f.as_f32(q)[None, :]), lanes)
        return f.mul(dots, inv_sqrt)
    dots = cache.k[kv_head, lo:hi].astype(np.int64) @ np.asarray(q).astype(np.int64)
    return f.mul(f.mul(f.from_int(dots), cache.k_scale[kv_head, lo:hi]), f.mul(np.float32(d_q), inv_sqrt))


def attention_values(cache: KVCache, kv_head: int, lo: int, hi: int, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The weights and value rows of keys lo..hi-1: (p_j * d_v[j], from_int(v_q[j])) in the int8
    format, (p_j, v[j]) in fp32."""
    if cache.format == "fp32":
        return p, cache.v[kv_head, lo:hi]
    return f.mul(p, cache.v_scale[kv_head, lo:hi]), f.from_int(cache.v[kv_head, lo:hi])


def attention_query(q: np.ndarray, d_q, cache: KVCache, kv_head: int, pos: int, tile: int, head_dim: int,
                    lanes: int = SCORE_LANES) -> np.ndarray:
    """One query head at position ``pos`` against cached keys 0..pos; returns float32 (head_dim,).
    ``q`` is the int8 query with its scale ``d_q`` (int8 cache) or the float32 query (fp32 cache,
    ``d_q`` unused): the query's format follows the cache's.

    Scores: :func:`attention_scores`. Online softmax over the tiles of key_tile_order; per
    tile: m' = max(m, max_j s_j), a = exp(m - m'), l = l*a then l += p_j for j ascending,
    o = o*a then o += w_j * v_j for j ascending with p_j = exp(s_j - m') and (w_j, v_j) of
    :func:`attention_values`. Output o * recip(l)."""
    m = np.float32(-np.inf)
    l = np.float32(0.0)
    o = np.zeros(head_dim, dtype=np.float32)
    for lo, hi in key_tile_order(pos, tile):
        s = attention_scores(cache, kv_head, lo, hi, q, d_q, head_dim, lanes)
        m_new = f.fmax(m, np.max(s))
        a = f.exp(f.sub(m, m_new))
        p = f.exp(f.sub(s, m_new))
        l = f.mul(l, a)
        o = f.mul(o, a)
        w, rows = attention_values(cache, kv_head, lo, hi, p)
        for j in range(hi - lo):
            l = f.add(l, p[j])
            o = f.add(o, f.mul(w[j], rows[j]))
        m = m_new
    return f.mul(o, f.recip(l))


def attention_query_input(q: np.ndarray, attn_format: str) -> tuple[np.ndarray, np.ndarray | None]:
    """The query in the score's format: (q_q int8, d_q) by :func:`quantize` per (token, head)
    for ``"int8"``; (q float32, None) for ``"fp32"``."""
    if attn_format == "fp32":
        return f.as_f32(q), None
    return quantize(q)


def attention(q: np.ndarray, positions: np.ndarray, cache: KVCache, config: ModelConfig, tile: int) -> np.ndarray:
    """Prefill (T > 1) or decode (T = 1) attention of q (T, heads, hd) float32 after RoPE, whose
    keys/values are already in ``cache``; q in the cache's format (:func:`attention_query_input`).
    GQA: query head h reads kv head h // (heads/kv_heads). Returns (T, heads*hd) float32."""
    q_in, d_q = attention_query_input(q, cache.format)
    t_count, heads, hd = q.shape
    out = np.zeros((t_count, heads, hd), dtype=np.float32)
    for t in range(t_count):
        for h in range(heads):
            out[t, h] = attention_query(q_in[t, h], None if d_q is None else d_q[t, h], cache, h // config.group_size,
                                        int(positions[t]), tile, hd)
    return out.reshape(t_count, heads * hd)


# --------------------------------------------------------------------------------------------
# LM head
# --------------------------------------------------------------------------------------------

def lm_head(x_q: np.ndarray, d_x: np.ndarray, head_q: np.ndarray, head_scale: np.ndarray) -> np.ndarray:
    """logit[t, r] = from_int(x_q[t] . head_q[r]) * (d_x[t] * head_scale[r]) (int8 head)."""
    acc = x_q.astype(np.int64) @ head_q.astype(np.int64).T
    comb = f.mul(f.as_f32(d_x)[:, None], f.as_f32(head_scale)[None, :])
    return f.mul(f.from_int(acc), comb)


def lm_head_fp16(x: np.ndarray, head_f16: np.ndarray, lanes: int) -> np.ndarray:
    """logit[t, r] = vector_sum(fp32(W16[r]) * x[t]) on the normalised float32 vector (fp16 head)."""
    w = head_f16.astype(np.float32)
    return np.stack([f.vector_sum(f.mul(w, x[t][None, :]), lanes) for t in range(x.shape[0])])


# --------------------------------------------------------------------------------------------
# Whole model
# --------------------------------------------------------------------------------------------

@dataclass
class PreparedLayer:
    """A layer in the form the accelerator holds it: TLMM codes and weight multipliers."""
    codes: dict[str, np.ndarray]
    w_mult: dict[str, np.float32]
    shapes: dict[str, tuple[int, int]]
    input_norm: np.ndarray
    post_attention_norm: np.ndarray
    attn_sub_norm: np.ndarray | None
    ffn_sub_norm: np.ndarray | None


@dataclass
class Trace:
    """Per-layer intermediate values of one forward call, for layer-by-layer comparison."""
    layers: list[dict[str, np.ndarray]] = field(default_factory=list)
    final: dict[str, np.ndarray] = field(default_factory=dict)


class GoldenModel:
    """The accelerator's forward pass, unit by unit, with its own KV cache.

    ``prefill(ids)`` processes a prompt chunk at the next positions and returns the logits of
    its last token; ``decode(id)`` is prefill of one token. Both append to the KV cache."""

    def __init__(self, weights: ModelWeights, hw: HardwareConfig):
        hw.check_model(weights.config)
        self.config = weights.config
        self.hw = hw
        c = self.config
        self.embed = weights.embed
        self.final_norm = weights.final_norm
        self.layers = []
        for lw in weights.layers:
            self.layers.append(PreparedLayer(
                codes={n: tlmm_encode(t.trits, hw.tlmm_group) for n, t in lw.proj.items()},
                w_mult={n: weight_multiplier(t.weight_scale) for n, t in lw.proj.items()},
                shapes={n: t.shape for n, t in lw.proj.items()},
                input_norm=lw.input_norm, post_attention_norm=lw.post_attention_norm,
                attn_sub_norm=lw.attn_sub_norm, ffn_sub_norm=lw.ffn_sub_norm))
        if hw.lm_head_format == "int8":
            self.head_q, self.head_scale = lm_head_int8(weights.lm_head)
        else:
            self.head_f16 = weights.lm_head.astype(np.float16)
        self.cos, self.sin = rope_table(c.rope_theta, c.head_dim, hw.max_context)
        self.reset()

    def reset(self):
        c = self.config
        cache = KV_CACHES[self.hw.attn_format]
        self.caches = [cache.empty(c.num_kv_heads, self.hw.max_context, c.head_dim) for _ in range(c.num_layers)]
        self.position = 0

    def _linear(self, layer: PreparedLayer, name: str, x_q, d_x):
        acc = tlmm(layer.codes[name], x_q, self.hw.tlmm_group)
        return dequantize(acc, d_x, layer.w_mult[name])

    def _norm_quant(self, x, gain):
        if gain is None:
            return quantize(x)
        return rmsnorm_quantize(x, gain, self.config.rms_norm_eps, self.hw.ew_lanes)

    def layer(self, i: int, h: np.ndarray, positions: np.ndarray, trace: Trace | None = None) -> np.ndarray:
        c, lw, lanes = self.config, self.layers[i], self.hw.ew_lanes
        t = h.shape[0]
        x_q, d_x = rmsnorm_quantize(h, lw.input_norm, c.rms_norm_eps, lanes)
        q = self._linear(lw, "q_proj", x_q, d_x).reshape(t, c.num_heads, c.head_dim)
        k = self._linear(lw, "k_proj", x_q, d_x).reshape(t, c.num_kv_heads, c.head_dim)
        v = self._linear(lw, "v_proj", x_q, d_x).reshape(t, c.num_kv_heads, c.head_dim)
        q = rope(q, positions, self.cos, self.sin)
        k = rope(k, positions, self.cos, self.sin)
        self.caches[i].append(int(positions[0]), k, v)
        attn = attention(q, positions, self.caches[i], c, self.hw.attn_tile)
        a_q, d_a = self._norm_quant(attn, lw.attn_sub_norm)
        h = residual_add(h, self._linear(lw, "o_proj", a_q, d_a))
        attn_out = h
        x_q, d_x = rmsnorm_quantize(h, lw.post_attention_norm, c.rms_norm_eps, lanes)
        g = gated_activation(self._linear(lw, "gate_proj", x_q, d_x), self._linear(lw, "up_proj", x_q, d_x), c.hidden_act)
        g_q, d_g = self._norm_quant(g, lw.ffn_sub_norm)
        h = residual_add(h, self._linear(lw, "down_proj", g_q, d_g))
        if trace is not None:
            trace.layers.append({"q": q, "k": k, "v": v, "attn": attn, "after_attn": attn_out, "ffn_act": g, "hidden": h})
        return h

    def forward(self, token_ids, trace: Trace | None = None) -> np.ndarray:
        """Run a chunk of tokens at the next positions; return the logits (vocab,) of the last one."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("no tokens given")
        if np.any(ids < 0) or np.any(ids >= self.config.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {self.config.vocab_size})")
        if self.position + ids.size > self.hw.max_context:
            raise ValueError(f"context overflow: {self.position} + {ids.size} tokens exceed max_context {self.hw.max_context}")
        positions = np.arange(self.position, self.position + ids.size)
        h = f.ftz(self.embed[ids])
        for i in range(self.config.num_layers):
            h = self.layer(i, h, positions, trace)
        self.position += ids.size
        last = h[-1:]
        if self.hw.lm_head_format == "int8":
            x_q, d_x = rmsnorm_quantize(last, self.final_norm, self.config.rms_norm_eps, self.hw.ew_lanes)
            logits = lm_head(x_q, d_x, self.head_q, self.head_scale)[0]
        else:
            x = rmsnorm(last, self.final_norm, self.config.rms_norm_eps, self.hw.ew_lanes)
            logits = lm_head_fp16(x, self.head_f16, self.hw.ew_lanes)[0]
        if trace is not None:
            trace.final = {"hidden": last[0], "logits": logits}
        return logits

    def prefill(self, token_ids, trace: Trace | None = None) -> np.ndarray:
        """Prefill in chunks of at most hw.prefill_chunk tokens; logits of the last token."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        logits = None
        for lo in range(0, len(ids), self.hw.prefill_chunk):
            logits = self.forward(ids[lo:lo + self.hw.prefill_chunk], trace)
        if logits is None:
            raise ValueError("no tokens given")
        return logits

    def decode(self, token_id: int, trace: Trace | None = None) -> np.ndarray:
        return self.forward([token_id], trace)
