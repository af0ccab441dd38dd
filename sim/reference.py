"""Float reference forward pass: Hugging Face BitNet semantics in float32 numpy.

This is the model the checkpoint defines (BitLinear with per-token absmax int8 activations and
ternary weights, full-precision everything else, float32 softmax attention over an unquantised KV
cache). Tests check it against ``transformers.BitNetForCausalLM``; the golden model is then
measured against it (per-layer hidden-state cosine, logits cosine, greedy tokens).
"""

from __future__ import annotations

import numpy as np

from ..weights import ModelWeights
from ..contract.formats import rope_table
from .golden import Trace

F32 = np.float32


def act_quant(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """HF BitLinear.activation_quant: s = 127 / max(|x|).clamp(1e-5); x_q = clamp(round(x*s))."""
    s = (F32(127.0) / np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), F32(1e-5))).astype(F32)
    return np.clip(np.rint(x * s), -128, 127).astype(F32), s


def bitlinear(x: np.ndarray, trits: np.ndarray, weight_scale: np.float32) -> np.ndarray:
    """y = (x_q . W_t) / (s_x * s_w) in float32."""
    x_q, s = act_quant(x)
    y = x_q @ trits.astype(F32).T
    return (y / (s * F32(weight_scale))).astype(F32)


def rmsnorm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    var = np.mean(x * x, axis=-1, keepdims=True, dtype=F32)
    return (gain * (x * (F32(1.0) / np.sqrt(var + F32(eps))))).astype(F32)


def activation(x: np.ndarray, act: str) -> np.ndarray:
    if act == "relu2":
        return np.square(np.maximum(x, F32(0))).astype(F32)
    return (x / (F32(1.0) + np.exp(-x))).astype(F32)


def rope(x: np.ndarray, positions: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    c = np.concatenate([cos[positions], cos[positions]], axis=-1)[:, None, :]
    s = np.concatenate([sin[positions], sin[positions]], axis=-1)[:, None, :]
    rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return (x * c + rot * s).astype(F32)


class ReferenceModel:
    """Float forward pass with a float32 KV cache; same interface as GoldenModel."""

    def __init__(self, weights: ModelWeights, max_context: int | None = None):
        self.w = weights
        self.config = c = weights.config
        self.max_context = max_context or c.max_position_embeddings
        self.cos, self.sin = rope_table(c.rope_theta, c.head_dim, self.max_context)
        self.reset()

    def reset(self):
        c = self.config
        self.k = [np.zeros((0, c.num_kv_heads, c.head_dim), F32) for _ in range(c.num_layers)]
        self.v = [np.zeros((0, c.num_kv_heads, c.head_dim), F32) for _ in range(c.num_layers)]
        self.position = 0

    def _attention(self, i, q, positions):
        c = self.config
        k = np.repeat(self.k[i], c.group_size, axis=1)   # (S, heads, hd)
        v = np.repeat(self.v[i], c.group_size, axis=1)
        scores = np.einsum("thd,shd->hts", q, k).astype(F32) * F32(c.head_dim ** -0.5)
        mask = np.arange(k.shape[0])[None, :] > positions[:, None]
        scores = np.where(mask[None], F32(-np.inf), scores)
        scores = scores - scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        p = (p / p.sum(axis=-1, keepdims=True)).astype(F32)
        out = np.einsum("hts,shd->thd", p, v).astype(F32)
        return out.reshape(q.shape[0], -1)

    def layer(self, i, h, positions, trace=None):
        c, lw = self.config, self.w.layers[i]
        t = h.shape[0]
        x = rmsnorm(h, lw.input_norm, c.rms_norm_eps)
        p = lw.proj
        q = bitlinear(x, p["q_proj"].trits, p["q_proj"].weight_scale).reshape(t, c.num_heads, c.head_dim)
        k = bitlinear(x, p["k_proj"].trits, p["k_proj"].weight_scale).reshape(t, c.num_kv_heads, c.head_dim)
        v = bitlinear(x, p["v_proj"].trits, p["v_proj"].weight_scale).reshape(t, c.num_kv_heads, c.head_dim)
        q = rope(q, positions, self.cos, self.sin)
        k = rope(k, positions, self.cos, self.sin)
        self.k[i] = np.concatenate([self.k[i], k])
        self.v[i] = np.concatenate([self.v[i], v])
        attn = self._attention(i, q, positions)
        if lw.attn_sub_norm is not None:
            attn = rmsnorm(attn, lw.attn_sub_norm, c.rms_norm_eps)
        h = (h + bitlinear(attn, p["o_proj"].trits, p["o_proj"].weight_scale)).astype(F32)
        after_attn = h
        x = rmsnorm(h, lw.post_attention_norm, c.rms_norm_eps)
        g = activation(bitlinear(x, p["gate_proj"].trits, p["gate_proj"].weight_scale), c.hidden_act)
        g = (g * bitlinear(x, p["up_proj"].trits, p["up_proj"].weight_scale)).astype(F32)
        ffn_act = g
        if lw.ffn_sub_norm is not None:
            g = rmsnorm(g, lw.ffn_sub_norm, c.rms_norm_eps)
        h = (h + bitlinear(g, p["down_proj"].trits, p["down_proj"].weight_scale)).astype(F32)
        if trace is not None:
            trace.layers.append({"q": q, "k": k, "v": v, "after_attn": after_attn, "ffn_act": ffn_act, "hidden": h})
        return h

    def forward(self, token_ids, trace: Trace | None = None, all_logits: bool = False) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("no tokens given")
        if np.any(ids < 0) or np.any(ids >= self.config.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {self.config.vocab_size})")
        if self.position + ids.size > self.max_context:
            raise ValueError(f"context overflow: {self.position} + {ids.size} tokens exceed {self.max_context}")
        positions = np.arange(self.position, self.position + ids.size)
        h = self.w.embed[ids].astype(F32)
        for i in range(self.config.num_layers):
            h = self.layer(i, h, positions, trace)
        self.position += ids.size
        x = rmsnorm(h if all_logits else h[-1:], self.w.final_norm, self.config.rms_norm_eps)
        logits = (x @ self.w.lm_head.T).astype(F32)
        if trace is not None:
            trace.final = {"hidden": h[-1], "logits": logits[-1]}
        return logits if all_logits else logits[0]

    prefill = forward

    def decode(self, token_id: int, trace: Trace | None = None) -> np.ndarray:
        return self.forward([token_id], trace)

