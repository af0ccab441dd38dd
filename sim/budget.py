"""Error budget of the golden model: each hardware approximation switchable to the exact float
operation, so the fidelity each one costs is measured (issue #13).

:class:`BudgetModel` is the golden model's forward pass (:mod:`tellme.sim.golden`, the units of
docs/architecture.md section 3) with every place where it departs from Hugging Face's BitNet (the
float reference, :mod:`tellme.sim.reference`) behind a named switch, a *knob* (:data:`KNOBS`).
``BudgetModel(weights, hw, exact=frozenset())`` is the golden model bit for bit (prefill and
decode logits; tests/test_budget.py); each knob named in ``exact`` is replaced by the float
operation Hugging Face does. With every knob exact the model is the float reference up to the
float32 rounding of its sums (the reference sums in numpy's float32 order, the exact knobs in
float64 rounded once): BitNet's own quantisation (ternary weights, absmax int8 activations in
front of every BitLinear) is in both and is not a knob.

The TLMM is exact integer arithmetic (docs 3.2), so the model computes each projection as
one integer matrix product (in float64, exact below 2^53) instead of table lookups: the same
int32 accumulators, faster.

Knobs own disjoint sites: ``exp`` is the softmax's exp, ``silu`` the whole SiLU (its exp and
recip included), ``recip`` the quantiser's and the softmax's reciprocals. With ``ftz`` exact
the element-wise operations keep subnormals; the approximation units in their hardware form
(fp32.exp, recip, rsqrt, silu) flush inside as the hardware does.

:func:`error_budget` runs a set of configurations (all hardware, each knob made exact alone,
all knobs exact but one, all exact, and any extra sets) teacher-forced on the reference's
greedy tokens and records per step the logits cosine and argmax agreement, and per layer the
hidden-state cosines of the prompt. :data:`VARIANTS` are candidate binary16 formats measured the
same way. Findings (``bench/fidelity.py``, docs/architecture.md 3.11): the loss is the int8 K/V
cache and the int8 query in the score; the arithmetic approximations cost ~1e-5 each; BitNet's
int8 activation quantiser makes losses grow layer by layer from any perturbation above a few
ulp, so they do not add and binary16 formats lose nearly as much as int8.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import numpy as np

from ..config import HardwareConfig, ModelConfig
from ..contract import fp32 as f
from ..weights import ModelWeights
from .backends import cosine
from .golden import ACT_CLAMP, INV_127, SCORE_LANES, FloatKVCache, GoldenModel, KVCache, Trace, key_tile_order
from .reference import ReferenceModel

F32 = np.float32
F64 = np.float64

#: knob -> what the hardware does -> the exact operation that replaces it.
KNOBS: dict[str, str] = {
    "kv_int8": "K and V cached as int8 with one scale per (token, kv head) (3.8) -> float32 K and V",
    "q_int8": "the query quantised to int8 per (token, head) for the score (3.8) -> the float32 query",
    "lm_head_int8": "int8 head rows with a per-row scale and the int8 quantiser of the final normalised "
                    "vector (3.9) -> the float32 head on the float32 normalised vector",
    "lm_head_fp16": "head rows rounded to binary16 (3.9) -> the float32 rows",
    "online_softmax": "online softmax over key tiles, descending tiles, running max, rescale by exp(m - m'), "
                      "o * recip(l) at the end (3.8) -> Hugging Face's softmax: one max over all keys, "
                      "p = exp(s - max) / sum(p) (a division), then sum_j p_j v_j",
    "exp": "fp32.exp (2^n x degree-6 polynomial) in the softmax -> exp in float64 rounded to float32",
    "recip": "fp32.recip (seed table + 2 Newton steps) in the quantiser (s = recip(d)) and the softmax's "
             "o * recip(l) -> 1/x in float64 rounded to float32 (both sites are inside the hardware forms "
             "of act_scale and online_softmax, so 'keep recip' is 'all exact')",
    "rsqrt": "fp32.rsqrt (seed table + 2 Newton steps) in every RMSNorm -> 1/sqrt(x) in float64 rounded",
    "silu": "SiLU as x * recip(1 + exp(-x)) with fp32.exp and fp32.recip (3.5) -> x / (1 + exp(-x)) in "
            "float32 with a correctly rounded exp (Hugging Face)",
    "reduction_order": "the documented float32 orders: fp32.vector_sum's lanes and partials (RMSNorm sum of "
                       "squares; the fp32 attention format's score, 16 lanes, 3.8, and the score wherever "
                       "another knob makes an operand float), the "
                       "softmax's sequential l and o accumulations -> float64 sums rounded once",
    "ftz": "flush-to-zero of subnormal inputs and outputs of the element-wise operations (the embedding "
           "row included) -> IEEE gradual underflow",
    "act_scale": "the quantiser's multiplier s = recip(m * fp32(1/127)) (3.1) -> s = 127 / m correctly "
                 "rounded (Hugging Face)",
    "dequant": "BitLinear output from_int(acc) * (d_x * fp32(1/s_w)) (3.4) -> acc / (s_x * s_w) "
               "(Hugging Face's division)",
    "norm_mean": "RMSNorm mean as ss * fp32(1/d) (3.3) -> ss / d correctly rounded",
}

#: The knobs that are storage or data formats (what a format change of the hardware would
#: replace), as opposed to arithmetic details.
FORMAT_KNOBS = ("kv_int8", "q_int8", "lm_head_int8", "lm_head_fp16")

#: Candidate hardware formats, measured like the knobs but not float-exact: each replaces the
#: format of a FORMAT_KNOBS site by a binary16 one (a format change the hardware could make).
VARIANTS: dict[str, str] = {
    "kv_fp16": "K and V cached as binary16 (no scale); scores and the weighted sum of V in float32",
    "q_fp16": "the query rounded to binary16 for the score (no scale)",
    "head_fp16": "the LM head as binary16 rows on the float32 normalised vector (hw lm_head_format "
                 "'fp16', 3.9) instead of int8 rows and the int8 quantiser",
    "kv_int16": "K and V cached as int16 with the int8 format's absmax scale per (token, head) (d = m / 32767), "
                "kept as their dequantised float32 values; scores and the weighted sum of V in float32",
    "q_int16": "the query quantised the same way to int16 per (token, head) for the score",
    "k_channel_int8": "keys cached as int8 with one scale per (kv head, channel), fixed from the absmax of the "
                      "prompt's keys (later keys clipped to it; KIVI-style per-channel key scales, calibrated on "
                      "the prompt itself, a best case); values int8 per (token, head) as the hardware's; scores "
                      "and the weighted sum in float32",
}

#: Variants that replace the K/V cache's format, and the query's (each needs the int8 site it replaces).
KV_VARIANTS = ("kv_fp16", "kv_int16", "k_channel_int8")
Q_VARIANTS = ("q_fp16", "q_int16")


def knobs_for(config: ModelConfig, hw: HardwareConfig) -> tuple[str, ...]:
    """The knobs that have sites in this model on this hardware (``silu`` only for SiLU models;
    the LM-head knob of hw.lm_head_format)."""
    skip = {"lm_head_fp16" if hw.lm_head_format == "int8" else "lm_head_int8"}
    if hw.attn_format == "fp32":             # float K/V and query: the int8 sites are not there
        skip |= {"kv_int8", "q_int8"}
    if config.hidden_act != "silu":
        skip.add("silu")
    return tuple(k for k in KNOBS if k not in skip)


def check_knobs(exact: Iterable[str], known: dict[str, str] = KNOBS) -> frozenset[str]:
    if isinstance(exact, str):
        raise TypeError("give a collection of knob names, not one string")
    exact = frozenset(exact)
    unknown = sorted(exact - set(known))
    if unknown:
        raise ValueError(f"unknown name(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return exact


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def _as_fp16(x) -> np.ndarray:
    """float32 values rounded to binary16 (nearest even; overflow to inf), back as float32."""
    with np.errstate(all="ignore"):
        return np.asarray(x, dtype=F32).astype(np.float16).astype(F32)


def _absmax_round(x, levels: int, m=None) -> np.ndarray:
    """x rounded to ``levels`` steps of an absmax scale (d = m / levels, m the absmax over the last
    axis unless given, broadcastable), clipped, back as float32: an integer format's values."""
    x = np.asarray(x, F64)
    m = np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), 1e-5) if m is None else np.asarray(m, F64)
    d = m / levels
    return _f32(np.clip(np.round(x / d), -levels, levels) * d)


class Numerics:
    """The golden model's arithmetic with the knobs of ``exact`` replaced by float operations.
    Every method with no knob exact is the fp32/golden function it names, bit for bit."""

    def __init__(self, exact: Iterable[str], lanes: int):
        self.exact = check_knobs(exact)
        self.lanes = lanes
        self.flush = "ftz" not in self.exact

    def hw(self, knob: str) -> bool:
        return knob not in self.exact

    # --- element-wise binary32 operations (FTZ unless the ftz knob is exact) -----------------
    def ftz(self, x) -> np.ndarray:
        return f.ftz(x) if self.flush else np.array(x, dtype=F32, copy=True)

    def _ieee(self, fn, *args) -> np.ndarray:
        with np.errstate(all="ignore"):
            return _f32(fn(*[_f32(a) for a in args]))

    def add(self, a, b):
        return f.add(a, b) if self.flush else self._ieee(np.add, a, b)

    def sub(self, a, b):
        return f.sub(a, b) if self.flush else self._ieee(np.subtract, a, b)

    def mul(self, a, b):
        return f.mul(a, b) if self.flush else self._ieee(np.multiply, a, b)

    def div(self, a, b):
        """Correctly rounded float32 division (exact knobs only; the hardware has no divider)."""
        out = self._ieee(np.divide, a, b)
        return f.ftz(out) if self.flush else out

    def fmax(self, a, b):
        return f.fmax(a, b) if self.flush else self._ieee(np.maximum, a, b)

    def max_abs(self, x):
        return f.max_abs(x) if self.flush else np.max(np.abs(_f32(x)), axis=-1)

    @staticmethod
    def _round64(x) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(x, dtype=F64).astype(F32)

    # --- approximated functions --------------------------------------------------------------
    def exp(self, x):
        if self.hw("exp"):
            return f.exp(x)
        with np.errstate(all="ignore"):
            return self._round64(np.exp(np.asarray(x, dtype=F64)))

    def recip(self, x):
        if self.hw("recip"):
            return f.recip(x)
        with np.errstate(all="ignore"):
            return self._round64(1.0 / np.asarray(x, dtype=F64))

    def rsqrt(self, x):
        if self.hw("rsqrt"):
            return f.rsqrt(x)
        with np.errstate(all="ignore"):
            return self._round64(1.0 / np.sqrt(np.asarray(x, dtype=F64)))

    def silu(self, x):
        if self.hw("silu"):
            return f.silu(x)
        x = self.ftz(x)
        with np.errstate(all="ignore"):
            e = self._round64(np.exp(-np.asarray(x, dtype=F64)))
        return self.div(x, self.add(F32(1.0), e))

    # --- reductions ---------------------------------------------------------------------------
    def vector_sum(self, x, lanes: int | None = None):
        """Sum over the last axis: fp32.vector_sum's order (beats of ``lanes``, default the
        element-wise lanes), or float64 rounded once."""
        lanes = self.lanes if lanes is None else lanes
        if not self.hw("reduction_order"):
            return self._round64(np.sum(np.asarray(x, dtype=F64), axis=-1))
        if self.flush:
            return f.vector_sum(x, lanes)
        # fp32.vector_sum's order without the flushing
        x = _f32(x)
        n, inter = x.shape[-1], f.ACC_INTERLEAVE
        beats = max(1, -(-n // lanes))
        padded = np.zeros(x.shape[:-1] + (beats * lanes,), dtype=F32)
        padded[..., :n] = x
        y = padded.reshape(x.shape[:-1] + (beats, lanes))
        while y.shape[-1] > 1:
            y = self.add(y[..., 0::2], y[..., 1::2])
        beat_sums = y[..., 0]
        partial = np.zeros(x.shape[:-1] + (inter,), dtype=F32)
        for k in range(beats):
            partial[..., k % inter] = self.add(partial[..., k % inter], beat_sums[..., k])
        while partial.shape[-1] > 1:
            partial = self.add(partial[..., 0::2], partial[..., 1::2])
        return partial[..., 0]

    def dot(self, a, b, lanes: int | None = None):
        """sum_i a_i * b_i over the last axis: products rounded then vector_sum (over beats of
        ``lanes``, default the element-wise lanes), or the exact products summed in float64 and
        rounded once."""
        if not self.hw("reduction_order"):
            return self._round64(np.sum(np.asarray(a, dtype=F64) * np.asarray(b, dtype=F64), axis=-1))
        return self.vector_sum(self.mul(a, b), lanes)

    def accumulate(self, acc, terms):
        """acc + terms[0] + terms[1] + ... (terms along axis 0): sequentially in float32 (the
        softmax's order), or in float64 rounded once."""
        if not self.hw("reduction_order"):
            return self._round64(np.asarray(acc, dtype=F64) + np.sum(np.asarray(terms, dtype=F64), axis=0))
        for j in range(len(terms)):
            acc = self.add(acc, terms[j])
        return acc

    # --- units --------------------------------------------------------------------------------
    def quantize(self, x):
        """golden.quantize -> (x_q int8, d = dequantisation scale, s = quantising multiplier)."""
        x = self.ftz(x)
        m = self.fmax(self.max_abs(x), ACT_CLAMP)
        d = self.mul(m, INV_127)
        s = self.recip(d) if self.hw("act_scale") else self.div(F32(127.0), m)
        return f.to_int8(self.mul(x, s[..., None])), d, s

    def rmsnorm(self, x, gain, eps):
        x = self.ftz(x)
        d = x.shape[-1]
        ss = self.dot(x, x)
        mean = self.mul(ss, F32(1.0 / d)) if self.hw("norm_mean") else self.div(ss, F32(d))
        r = self.rsqrt(self.add(mean, F32(eps)))
        return self.mul(self.mul(x, r[..., None]), _f32(gain))

    def dequantize(self, acc, d_x, s_x, weight_scale, w_mult):
        if self.hw("dequant"):
            comb = self.mul(_f32(d_x), F32(w_mult))
            return self.mul(f.from_int(acc), comb[..., None])
        return self.div(f.from_int(acc), self.mul(_f32(s_x), F32(weight_scale))[..., None])

    def gated_activation(self, gate, up, act):
        if act == "relu2":
            x = self.ftz(gate)
            r = np.where(x > 0, x, F32(0))
            a = self.mul(r, r)
        elif act == "silu":
            a = self.silu(gate)
        else:
            raise ValueError(f"unknown activation {act!r}")
        return self.mul(a, up)

    def rope(self, x, positions, cos, sin):
        half = x.shape[-1] // 2
        c = cos[positions][:, None, :]
        s = sin[positions][:, None, :]
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([self.sub(self.mul(x1, c), self.mul(x2, s)),
                               self.add(self.mul(x2, c), self.mul(x1, s))], axis=-1)


class BudgetModel(GoldenModel):
    """The golden model with the knobs in ``exact`` replaced by the exact float operation
    (:data:`KNOBS`) and the formats in ``variants`` (:data:`VARIANTS`) replacing the hardware's;
    same interface (``reset``, ``prefill(ids, trace)``, ``decode(id, trace)``) and the same
    :class:`~tellme.sim.golden.Trace` entries."""

    def __init__(self, weights: ModelWeights, hw: HardwareConfig, exact: Iterable[str] = frozenset(),
                 variants: Iterable[str] = frozenset()):
        self.exact = check_knobs(exact)
        self.variants = check_knobs(variants, VARIANTS)
        if "head_fp16" in self.variants and hw.lm_head_format != "int8":
            raise ValueError("variant head_fp16 replaces the int8 LM head; this hardware's head is already fp16")
        self.ops = Numerics(self.exact, hw.ew_lanes)
        # the float paths of K/V and q: float32 (the fp32 format or an exact knob) or binary16 (variant)
        fp32 = hw.attn_format == "fp32"
        if fp32 and self.variants & {*KV_VARIANTS, *Q_VARIANTS}:
            raise ValueError(f"variants {', '.join(KV_VARIANTS + Q_VARIANTS)} replace the int8 formats; "
                             "this hardware's attention is fp32")
        if len(self.variants & set(KV_VARIANTS)) > 1 or len(self.variants & set(Q_VARIANTS)) > 1:
            raise ValueError("at most one K/V variant and one query variant at a time")
        self.float_kv = fp32 or bool(self.variants & set(KV_VARIANTS)) or not self.ops.hw("kv_int8")
        self.float_q = fp32 or bool(self.variants & set(Q_VARIANTS)) or not self.ops.hw("q_int8")
        super().__init__(weights, hw)
        # the TLMM is exact: one float64 matrix product per projection gives the same integers
        self.trits_t = [{n: t.trits.T.astype(F64) for n, t in lw.proj.items()} for lw in weights.layers]
        self.weight_scale = [{n: t.weight_scale for n, t in lw.proj.items()} for lw in weights.layers]
        self.lm_head_f32 = np.asarray(weights.lm_head, dtype=F32)
        self.lm_head_f16 = np.asarray(weights.lm_head, dtype=F32).astype(np.float16).astype(F32)

    def reset(self):
        c = self.config
        make = FloatKVCache.empty if self.float_kv else KVCache.empty
        self.caches = [make(c.num_kv_heads, self.hw.max_context, c.head_dim) for _ in range(c.num_layers)]
        self.key_channel_max = [None] * c.num_layers    # k_channel_int8: per (kv head, channel)
        self.position = 0

    # --- pieces ---------------------------------------------------------------------------------
    def _project(self, i: int, name: str, quant) -> np.ndarray:
        x_q, d_x, s_x = quant
        acc = (x_q.astype(F64) @ self.trits_t[i][name]).astype(np.int64)
        assert np.all(np.abs(acc) < 2 ** 31)
        return self.ops.dequantize(acc.astype(np.int32), d_x, s_x, self.weight_scale[i][name],
                                   self.layers[i].w_mult[name])

    def _norm_quant(self, x, gain):
        if gain is None:
            return self.ops.quantize(x)
        return self.ops.quantize(self.ops.rmsnorm(x, gain, self.config.rms_norm_eps))

    def _scores(self, cache, kv_head: int, lo: int, hi: int, q_vec, q_factor):
        """s_j for keys lo..hi-1: int8 dot products exact where both sides are int8."""
        o = self.ops
        kv_hw = not self.float_kv
        if kv_hw and not self.float_q:
            dots = f.from_int(cache.k[kv_head, lo:hi].astype(np.int64) @ q_vec.astype(np.int64))
        else:
            keys = f.from_int(cache.k[kv_head, lo:hi]) if kv_hw else cache.k[kv_head, lo:hi]
            query = q_vec if self.float_q else f.from_int(q_vec)
            dots = o.dot(keys, query[None, :], SCORE_LANES)     # the fp32 format's score order
        if kv_hw:
            dots = o.mul(dots, cache.k_scale[kv_head, lo:hi])
        return o.mul(dots, q_factor)

    def _values(self, cache, kv_head: int, lo: int, hi: int, p):
        """(weights w_j, value rows): w_j = p_j * d_v[j] and int8 rows, or p_j and float rows."""
        o = self.ops
        if not self.float_kv:
            return o.mul(p, cache.v_scale[kv_head, lo:hi]), f.from_int(cache.v[kv_head, lo:hi])
        return p, cache.v[kv_head, lo:hi]

    def _weighted_rows(self, acc, w, rows):
        """acc + sum_j w_j * rows[j]: products rounded then the softmax's order, or exactly."""
        o = self.ops
        if not o.hw("reduction_order"):
            return o._round64(np.asarray(acc, F64) + np.asarray(w, F64) @ np.asarray(rows, F64))
        for j in range(len(w)):
            acc = o.add(acc, o.mul(w[j], rows[j]))
        return acc

    def attention_query(self, q_vec, d_q, cache, kv_head: int, pos: int) -> np.ndarray:
        """golden.attention_query with the knobs: q_vec is int8 (q_int8) or float32."""
        o, hd, tile = self.ops, self.config.head_dim, self.hw.attn_tile
        inv_sqrt = F32(1.0 / np.sqrt(hd))
        q_factor = inv_sqrt if self.float_q else o.mul(F32(d_q), inv_sqrt)
        if not o.hw("online_softmax"):
            s = self._scores(cache, kv_head, 0, pos + 1, q_vec, q_factor)
            p = o.exp(o.sub(s, np.max(s)))
            l = o.accumulate(F32(0.0), p)
            w, rows = self._values(cache, kv_head, 0, pos + 1, o.div(p, l))
            return self._weighted_rows(np.zeros(hd, F32), w, rows)
        m = F32(-np.inf)
        l = F32(0.0)
        acc = np.zeros(hd, dtype=F32)
        for lo, hi in key_tile_order(pos, tile):
            s = self._scores(cache, kv_head, lo, hi, q_vec, q_factor)
            m_new = o.fmax(m, np.max(s))
            a = o.exp(o.sub(m, m_new))
            p = o.exp(o.sub(s, m_new))
            l = o.mul(l, a)
            acc = o.mul(acc, a)
            w, rows = self._values(cache, kv_head, lo, hi, p)
            l = o.accumulate(l, p)
            acc = self._weighted_rows(acc, w, rows)
            m = m_new
        return o.mul(acc, o.recip(l))

    def attention(self, q, positions, cache) -> np.ndarray:
        c, o = self.config, self.ops
        t_count, heads, hd = q.shape
        if self.float_q:
            if "q_fp16" in self.variants:
                q = _as_fp16(q)
            elif "q_int16" in self.variants:
                q = _absmax_round(q, 32767)
            q_vec, d_q = q, np.ones((t_count, heads), F32)
        else:
            q_vec, d_q, _ = o.quantize(q)
        out = np.zeros((t_count, heads, hd), dtype=F32)
        for t in range(t_count):
            for h in range(heads):
                out[t, h] = self.attention_query(q_vec[t, h], d_q[t, h], cache, h // c.group_size, int(positions[t]))
        return out.reshape(t_count, heads * hd)

    # --- the model ------------------------------------------------------------------------------
    def layer(self, i: int, h: np.ndarray, positions: np.ndarray, trace: Trace | None = None) -> np.ndarray:
        c, lw, o = self.config, self.layers[i], self.ops
        t = h.shape[0]
        xq = o.quantize(o.rmsnorm(h, lw.input_norm, c.rms_norm_eps))
        q = self._project(i, "q_proj", xq).reshape(t, c.num_heads, c.head_dim)
        k = self._project(i, "k_proj", xq).reshape(t, c.num_kv_heads, c.head_dim)
        v = self._project(i, "v_proj", xq).reshape(t, c.num_kv_heads, c.head_dim)
        q = o.rope(q, positions, self.cos, self.sin)
        k = o.rope(k, positions, self.cos, self.sin)
        if not self.float_kv:
            k_q, k_d, _ = o.quantize(k)
            v_q, v_d, _ = o.quantize(v)
            self.caches[i].write(int(positions[0]), k_q, k_d, v_q, v_d)
        elif "kv_fp16" in self.variants:
            self.caches[i].write(int(positions[0]), _as_fp16(k), _as_fp16(v))
        elif "kv_int16" in self.variants:
            self.caches[i].write(int(positions[0]), _absmax_round(k, 32767), _absmax_round(v, 32767))
        elif "k_channel_int8" in self.variants:
            if int(positions[0]) == 0:            # the prompt's first chunk fixes the channel scales
                self.key_channel_max[i] = np.maximum(np.max(np.abs(np.asarray(k, F64)), axis=0), 1e-5)
            self.caches[i].write(int(positions[0]), _absmax_round(k, 127, self.key_channel_max[i]),
                                 _absmax_round(v, 127))
        else:
            self.caches[i].write(int(positions[0]), k, v)
        attn = self.attention(q, positions, self.caches[i])
        h = o.add(h, self._project(i, "o_proj", self._norm_quant(attn, lw.attn_sub_norm)))
        attn_out = h
        xq = o.quantize(o.rmsnorm(h, lw.post_attention_norm, c.rms_norm_eps))
        g = o.gated_activation(self._project(i, "gate_proj", xq), self._project(i, "up_proj", xq), c.hidden_act)
        h = o.add(h, self._project(i, "down_proj", self._norm_quant(g, lw.ffn_sub_norm)))
        if trace is not None:
            trace.layers.append({"q": q, "k": k, "v": v, "attn": attn, "after_attn": attn_out, "ffn_act": g, "hidden": h})
        return h

    def _lm_head(self, last: np.ndarray) -> np.ndarray:
        o, eps = self.ops, self.config.rms_norm_eps
        x = o.rmsnorm(last, self.final_norm, eps)
        if "head_fp16" in self.variants:
            return o.dot(self.lm_head_f16, x[0][None, :])
        if self.hw.lm_head_format == "int8" and o.hw("lm_head_int8"):
            x_q, d_x, _ = o.quantize(x)
            acc = x_q.astype(np.int64) @ self.head_q.astype(np.int64).T
            comb = o.mul(_f32(d_x)[:, None], _f32(self.head_scale)[None, :])
            return o.mul(f.from_int(acc), comb)[0]
        if self.hw.lm_head_format == "fp16" and o.hw("lm_head_fp16"):
            w = self.head_f16.astype(F32)
        else:
            w = self.lm_head_f32
        return o.dot(w, x[0][None, :])

    def forward(self, token_ids, trace: Trace | None = None) -> np.ndarray:
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("no tokens given")
        if np.any(ids < 0) or np.any(ids >= self.config.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {self.config.vocab_size})")
        if self.position + ids.size > self.hw.max_context:
            raise ValueError(f"context overflow: {self.position} + {ids.size} tokens exceed max_context {self.hw.max_context}")
        positions = np.arange(self.position, self.position + ids.size)
        h = self.ops.ftz(self.embed[ids])
        for i in range(self.config.num_layers):
            h = self.layer(i, h, positions, trace)
        self.position += ids.size
        last = h[-1:]
        logits = self._lm_head(last)
        if trace is not None:
            trace.final = {"hidden": last[0], "logits": logits}
        return logits


# ------------------------------------------------------------------------------------------------
# The error budget
# ------------------------------------------------------------------------------------------------

TRACE_KEYS = ("q", "k", "v", "after_attn", "ffn_act", "hidden")


def layer_states(trace: Trace, num_layers: int) -> list[dict[str, np.ndarray]]:
    """Per layer, the traced values of every chunk of a prefill joined along the token axis."""
    chunks = [trace.layers[i:i + num_layers] for i in range(0, len(trace.layers), num_layers)]
    return [{k: np.concatenate([ch[layer][k] for ch in chunks]) for k in TRACE_KEYS if k in chunks[0][layer]}
            for layer in range(num_layers)]


def configurations(knobs: Iterable[str], extra: Iterable[Iterable[str]] = ()) -> list[dict]:
    """The configurations of an error budget: all hardware, each knob exact alone ("fix"), all
    exact but one ("keep"), all exact, then one per set in ``extra``: its knobs exact and its
    :data:`VARIANTS` formats in place ("fix a+b", kind "fix_set"; "fix a use v" or "use v",
    kind "formats")."""
    knobs = tuple(knobs)
    out = [{"name": "hardware", "kind": "hardware", "exact": [], "variants": []}]
    out += [{"name": f"fix {k}", "kind": "fix_one", "exact": [k], "variants": []} for k in knobs]
    out += [{"name": f"keep {k}", "kind": "keep_one", "exact": [j for j in knobs if j != k], "variants": []}
            for k in knobs]
    out.append({"name": "all exact", "kind": "all_exact", "exact": list(knobs), "variants": []})
    for group in extra:
        group = list(group)
        check_knobs([g for g in group if g not in VARIANTS])
        exact = [k for k in knobs if k in group]
        variants = [v for v in VARIANTS if v in group]
        name = " ".join(([f"fix {'+'.join(exact)}"] if exact else []) + ([f"use {'+'.join(variants)}"] if variants else []))
        out.append({"name": name, "kind": "formats" if variants else "fix_set", "exact": exact, "variants": variants})
    return out


def reference_run(reference, prompt_ids, steps: int, num_layers: int):
    """Greedy run of the reference: (tokens, step logits, prefill layer states or None). The
    reference is any backend; its prefill takes a trace if it is a ReferenceModel/GoldenModel."""
    reference.reset()
    trace = Trace()
    try:
        logits = reference.prefill(list(prompt_ids), trace)
    except TypeError:
        reference.reset()
        logits, trace = reference.prefill(list(prompt_ids)), None
    tokens, step_logits = [], []
    for step in range(steps):
        tokens.append(int(np.argmax(logits)))
        step_logits.append(np.asarray(logits, dtype=F32))
        if step + 1 < steps:
            logits = reference.decode(tokens[-1])
    states = layer_states(trace, num_layers) if trace is not None and trace.layers else None
    return tokens, step_logits, states


def measure(model, prompt_ids, ref_tokens, ref_logits, ref_states) -> dict:
    """One model teacher-forced on the reference's tokens: per-step logits cosine and argmax
    agreement, per-layer hidden-state cosines of the prefill."""
    model.reset()
    trace = Trace()
    logits = model.prefill(list(prompt_ids), trace)
    cos, agree, max_err = [], [], 0.0
    for step, want in enumerate(ref_logits):
        if step:
            logits = model.decode(ref_tokens[step - 1])
        cos.append(cosine(logits, want))
        max_err = max(max_err, float(np.max(np.abs(np.asarray(logits, F64) - want))))
        agree.append(int(np.argmax(logits)) == ref_tokens[step])
    out = {"step_logits_cosine": cos, "argmax_equal": agree, "min_logits_cosine": min(cos),
           "max_logits_error": max_err,
           "first_argmax_difference": next((i for i, a in enumerate(agree) if not a), None),
           "tokens_agree": all(agree)}
    if ref_states is not None:
        states = layer_states(trace, model.config.num_layers)
        out["layers"] = [{"layer": i, **{k: cosine(a[k], b[k]) for k in TRACE_KEYS if k in a and k in b}}
                         for i, (a, b) in enumerate(zip(states, ref_states))]
        out["last_layer_hidden_cosine"] = out["layers"][-1]["hidden"]
    return out


def error_budget(weights: ModelWeights, hw: HardwareConfig, prompt_ids, steps: int, *, reference=None,
                 knobs: Iterable[str] | None = None, extra: Iterable[Iterable[str]] = (),
                 progress: Callable[[str], None] | None = None) -> dict:
    """The error budget of the golden model on one prompt (a JSON-able dict).

    The reference (default: :class:`~tellme.sim.reference.ReferenceModel`, Hugging Face's
    BitNet in float32) generates ``steps`` greedy tokens; every configuration of
    :func:`configurations` (over ``knobs``, default :func:`knobs_for` the model, plus the
    ``extra`` sets) is then fed the prompt and those same tokens (teacher forcing, so all see
    the same inputs) and measured against the reference step by step (:func:`measure`)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    prompt = [int(i) for i in prompt_ids]
    if not prompt:
        raise ValueError("the prompt is empty")
    c = weights.config
    if len(prompt) + steps - 1 > hw.max_context:
        raise ValueError(f"prompt ({len(prompt)}) + steps ({steps}) exceed max_context {hw.max_context}")
    if knobs is not None:
        check_knobs(knobs)          # (a frozenset: its order changes with the hash seed; keep the caller's)
    knobs = tuple(knobs_for(c, hw) if knobs is None else dict.fromkeys(knobs))
    reference = ReferenceModel(weights, max_context=hw.max_context) if reference is None else reference
    ref_tokens, ref_logits, ref_states = reference_run(reference, prompt, steps, c.num_layers)
    results = []
    for conf in configurations(knobs, extra):
        start = time.monotonic()
        model = BudgetModel(weights, hw, exact=conf["exact"], variants=conf["variants"])
        results.append({**conf, **measure(model, prompt, ref_tokens, ref_logits, ref_states),
                        "seconds": round(time.monotonic() - start, 2)})
        if progress is not None:
            r = results[-1]
            progress(f"  {conf['name']:<28} min logits cosine {r['min_logits_cosine']:.6f}  "
                     f"first argmax difference {r['first_argmax_difference']}")
    return {"model": c.name, "config": c.to_dict(), "hardware": hw.to_dict(), "prompt_ids": prompt,
            "steps": steps, "reference_tokens": ref_tokens,
            "reference_margins": [margin(l) for l in ref_logits],
            "reference_logits_std": [float(np.std(l)) for l in ref_logits],
            "knobs": {k: KNOBS[k] for k in knobs},
            "variants": {v: VARIANTS[v] for v in sorted({v for c in results for v in c["variants"]})},
            "configurations": results}


def margin(logits) -> float:
    """Top-1 minus top-2 logit: how far the greedy choice is from a tie."""
    top = np.sort(np.asarray(logits, F64))[-2:]
    return float(top[1] - top[0]) if top.size == 2 else float("inf")


def budget_table(report: dict) -> list[str]:
    """The readable table of an error budget: one row per configuration; cosines with seven
    decimals and the loss 1 - cosine beside them (the small knobs differ far below 1e-6)."""
    width = max([13] + [len(r["name"]) for r in report["configurations"]])
    lines = [f"{'configuration':<{width}}  {'min logits cos':>14} {'(1 - cos)':>9}  {'1st argmax diff':>15}  "
             f"{'last hidden cos':>15} {'(1 - cos)':>9}"]
    for r in report["configurations"]:
        first = "-" if r["first_argmax_difference"] is None else str(r["first_argmax_difference"])
        hidden = r.get("last_layer_hidden_cosine")
        hidden_text = f"{'n/a':>15} {'':>9}" if hidden is None else f"{hidden:15.7f} {1 - hidden:9.1e}"
        lines.append(f"{r['name']:<{width}}  {r['min_logits_cosine']:14.7f} {1 - r['min_logits_cosine']:9.1e}  "
                     f"{first:>15}  {hidden_text}")
    return lines
