"""In-memory weights of a BitNet b1.58 model, independent of where they came from.

Checkpoint loaders (:mod:`tellme.gen.checkpoint`) produce a :class:`ModelWeights`; the float
reference, the golden model and the DDR image writer consume it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import ModelConfig
from .errors import TellmeError

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class WeightsError(TellmeError, ValueError):
    """Weights do not match their model configuration."""


@dataclass
class TernaryTensor:
    """A ternary projection: ``y = (x_q . trits) / (s_x * weight_scale)``.

    ``trits`` is int8 of shape (out_features, in_features) with values in {-1, 0, 1};
    ``weight_scale`` is Hugging Face's per-tensor ``s_w`` (for packed checkpoints the stored
    ``weight_scale``; for full-precision ones ``1 / mean(|W|)``), a float32 scalar.
    """

    trits: np.ndarray
    weight_scale: np.float32

    def __post_init__(self):
        if self.trits.dtype != np.int8 or self.trits.ndim != 2:
            raise WeightsError(f"trits must be a 2-D int8 array, got {self.trits.dtype} {self.trits.shape}")
        if self.trits.size and (self.trits.min() < -1 or self.trits.max() > 1):
            raise WeightsError("trits hold a value outside {-1, 0, 1}")
        self.weight_scale = np.float32(self.weight_scale)
        if not np.isfinite(self.weight_scale) or self.weight_scale <= 0:
            raise WeightsError(f"weight_scale must be finite and > 0, got {self.weight_scale}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.trits.shape

    @classmethod
    def quantize(cls, weight: np.ndarray) -> "TernaryTensor":
        """Quantise a full-precision weight as HF's online AutoBitLinear does (float32 arithmetic)."""
        w = np.asarray(weight, dtype=np.float32)
        scale = np.float32(1.0) / np.maximum(np.mean(np.abs(w), dtype=np.float32), np.float32(1e-5))
        trits = np.clip(np.rint(w * scale), -1, 1).astype(np.int8)
        return cls(trits, np.float32(scale))


@dataclass
class LayerWeights:
    input_norm: np.ndarray
    post_attention_norm: np.ndarray
    attn_sub_norm: np.ndarray | None
    ffn_sub_norm: np.ndarray | None
    proj: dict[str, TernaryTensor] = field(default_factory=dict)


@dataclass
class ModelWeights:
    config: ModelConfig
    embed: np.ndarray          # float32 (vocab, hidden)
    layers: list[LayerWeights]
    final_norm: np.ndarray     # float32 (hidden,)
    lm_head: np.ndarray        # float32 (vocab, hidden); the embedding itself when tied

    def validate(self) -> "ModelWeights":
        """Check every shape against the config; raise WeightsError naming the tensor."""
        c = self.config

        def check(name, arr, shape):
            if arr is None or tuple(arr.shape) != tuple(shape):
                got = None if arr is None else tuple(arr.shape)
                raise WeightsError(f"{name}: expected shape {tuple(shape)}, got {got}")
            if arr.dtype != np.float32 and arr.dtype != np.int8:
                raise WeightsError(f"{name}: unexpected dtype {arr.dtype}")
            if arr.dtype == np.float32 and not np.all(np.isfinite(arr)):
                raise WeightsError(f"{name}: holds NaN or infinity")

        check("embed", self.embed, (c.vocab_size, c.hidden_size))
        check("lm_head", self.lm_head, (c.vocab_size, c.hidden_size))
        check("final_norm", self.final_norm, (c.hidden_size,))
        if len(self.layers) != c.num_layers:
            raise WeightsError(f"layers: expected {c.num_layers}, got {len(self.layers)}")
        shapes = c.projections()
        for i, layer in enumerate(self.layers):
            p = f"layers.{i}"
            check(f"{p}.input_norm", layer.input_norm, (c.hidden_size,))
            check(f"{p}.post_attention_norm", layer.post_attention_norm, (c.hidden_size,))
            if c.sub_norms:
                check(f"{p}.attn_sub_norm", layer.attn_sub_norm, (c.q_size,))
                check(f"{p}.ffn_sub_norm", layer.ffn_sub_norm, (c.intermediate_size,))
            elif layer.attn_sub_norm is not None or layer.ffn_sub_norm is not None:
                raise WeightsError(f"{p}: sub-norm weights given but the config has sub_norms=False")
            for name in PROJECTIONS:
                if name not in layer.proj:
                    raise WeightsError(f"{p}.{name}: missing")
                check(f"{p}.{name}", layer.proj[name].trits, shapes[name])
        return self


def random_weights(config: ModelConfig, seed: int = 0) -> ModelWeights:
    """Random full-precision weights quantised at load, at the scale of a trained BitNet."""
    rng = np.random.default_rng(seed)

    def norm_gain(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    layers = []
    for _ in range(config.num_layers):
        proj = {}
        for name, (n, k) in config.projections().items():
            proj[name] = TernaryTensor.quantize(rng.standard_normal((n, k)).astype(np.float32) * 0.02)
        layers.append(LayerWeights(
            input_norm=norm_gain(config.hidden_size),
            post_attention_norm=norm_gain(config.hidden_size),
            attn_sub_norm=norm_gain(config.q_size) if config.sub_norms else None,
            ffn_sub_norm=norm_gain(config.intermediate_size) if config.sub_norms else None,
            proj=proj))
    embed = (rng.standard_normal((config.vocab_size, config.hidden_size)) * 0.05).astype(np.float32)
    lm_head = embed if config.tie_word_embeddings else \
        (rng.standard_normal((config.vocab_size, config.hidden_size)) * 0.05).astype(np.float32)
    return ModelWeights(config, embed, layers, norm_gain(config.hidden_size), lm_head).validate()
