"""Model and hardware configurations.

A :class:`ModelConfig` describes a BitNet b1.58 network (shapes and numerics that the checkpoint
fixes); a :class:`HardwareConfig` describes one accelerator instance (board, clock and the
parallelism the generator picked). Both validate themselves on construction and raise
:class:`ConfigError` naming the offending field, so a wrong configuration never reaches the
golden model or the generator.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from .contract.formats import code_bits
from .errors import TellmeError


class ConfigError(TellmeError, ValueError):
    """A configuration field has an invalid value or an invalid combination with another."""


ACTIVATIONS = ("relu2", "silu")
LM_HEAD_FORMATS = ("int8", "fp16")
#: Formats of the K/V cache and of the query in the attention score (docs/architecture.md 3.8, 6).
ATTN_FORMATS = ("int8", "fp32")


def _require(cond: bool, field_name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{field_name}: {message}")


def check_positive_int(name: str, value: Any) -> int:
    """Return ``value`` if it is a positive ``int`` (not a bool); else raise :class:`ConfigError`
    naming ``name``. The one parameter check of configs and hardware components alike."""
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             name, f"must be a positive integer, got {value!r}")
    return value


def _positive_int(obj: Any, name: str) -> None:
    check_positive_int(name, getattr(obj, name))


def _from_dict(cls, data: dict, what: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{what}: unknown field(s) {', '.join(unknown)}")
    return cls(**data)


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and numerics of a BitNet b1.58 decoder-only model.

    ``sub_norms`` selects the 2B4T-style extra RMSNorms (``attn_sub_norm`` before ``o_proj`` and
    ``ffn_sub_norm`` before ``down_proj``); Hugging Face's ``BitNetForCausalLM`` always has them,
    the original 1bitLLM "large" checkpoints do not.
    """

    name: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_act: str = "relu2"
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    sub_norms: bool = True
    tie_word_embeddings: bool = True
    max_position_embeddings: int = 2048

    def __post_init__(self):
        _require(isinstance(self.name, str) and self.name != "", "name", "must be a non-empty string")
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
                     "num_kv_heads", "head_dim", "max_position_embeddings"):
            _positive_int(self, name)
        _require(self.hidden_act in ACTIVATIONS, "hidden_act",
                 f"must be one of {', '.join(ACTIVATIONS)}, got {self.hidden_act!r}")
        _require(self.num_heads % self.num_kv_heads == 0, "num_kv_heads",
                 f"must divide num_heads ({self.num_heads}), got {self.num_kv_heads}")
        _require(self.head_dim % 2 == 0, "head_dim", f"must be even for rotate-half RoPE, got {self.head_dim}")
        _require(float(self.rope_theta) > 1.0, "rope_theta", f"must be > 1, got {self.rope_theta!r}")
        _require(0.0 < float(self.rms_norm_eps) < 1.0, "rms_norm_eps", f"must be in (0, 1), got {self.rms_norm_eps!r}")

    # Derived shapes, named as the hardware uses them.
    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 for MHA)."""
        return self.num_heads // self.num_kv_heads

    def projections(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each ternary projection of one layer, in schedule order."""
        return {
            "q_proj": (self.q_size, self.hidden_size),
            "k_proj": (self.kv_size, self.hidden_size),
            "v_proj": (self.kv_size, self.hidden_size),
            "o_proj": (self.hidden_size, self.q_size),
            "gate_proj": (self.intermediate_size, self.hidden_size),
            "up_proj": (self.intermediate_size, self.hidden_size),
            "down_proj": (self.hidden_size, self.intermediate_size),
        }

    def ternary_weights_per_token(self) -> int:
        return self.num_layers * sum(n * k for n, k in self.projections().values())

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return _from_dict(cls, data, "model config")


@dataclass(frozen=True)
class HardwareConfig:
    """One accelerator instance: board, clock and parallelism.

    - ``tlmm_group`` (G): activations per table-lookup group; codes are ``1 + ceil(log2((3^G+1)/2))``
      bits (G=5: exactly one byte).
    - ``tlmm_lanes`` (P): lookups per cycle per token; lane p handles group p of each block of P groups.
    - ``tlmm_tokens`` (T): tokens whose tables are read with the same code in the same cycle
      (weight reuse across tokens in prefill).
    - ``ew_lanes``: elements per cycle of the element-wise pipelines; also the lane count of every
      documented floating-point reduction order.
    - ``gating_lanes``: activation units of the gated FFN (SiLU costs ~7 K LUT per lane); it
      must cover the TLMM's output rate T / ceil(hidden / (G P)) elements per cycle (1.6 for the
      large model on the KV260), so 2 of the 8 element-wise lanes suffice.
    - ``rope_lanes``: lanes of the RoPE rotation (four binary32 multipliers and two adders
      each); with fewer than ``ew_lanes`` the query and key beats of the attention load pass at
      rope_lanes/ew_lanes of a beat per cycle (4 of 8 on the KV260: about 4 ms more time to first
      token for 128 tokens on bitnet-b1.58-large, 6 K LUT-eq less).
    - ``attn_tile``: keys (and queries, in prefill) per attention tile.
    - ``max_context``: KV-cache capacity in tokens.
    - ``attn_format``: the K/V cache's and the query's format in attention (docs 3.8, 6):
      ``"int8"`` (absmax int8 rows with a float32 scale per (token, head); an int8 query) or
      ``"fp32"`` (float32 rows and query, no scales: 4x the cache bytes, the only format that
      keeps the logits within cosine 0.999 of Hugging Face's BitNet, ``bench/results/fidelity.json``).
    - ``urams_per_bank``: URAM blocks (4 K x 72 bits) per bank of the double-buffered weight
      buffer; a lane word of P codes spans ceil(P x code bits / 72) of them side by side, so a
      bank holds 4096 x urams_per_bank / that lane words (docs section 4).
    """

    board: str = "kv260"
    clock_mhz: float = 300.0
    tlmm_group: int = 5
    tlmm_lanes: int = 64
    tlmm_tokens: int = 8
    ew_lanes: int = 8
    gating_lanes: int = 2
    rope_lanes: int = 4
    attn_tile: int = 32
    attn_heads_parallel: int = 1
    max_context: int = 2048
    prefill_chunk: int = 128
    axi_data_width: int = 128
    hp_ports: int = 4
    lm_head_format: str = "int8"
    attn_format: str = "fp32"
    urams_per_bank: int = 16

    def __post_init__(self):
        _require(isinstance(self.board, str) and self.board != "", "board", "must be a board name")
        _require(0.0 < float(self.clock_mhz) <= 1000.0, "clock_mhz", f"must be in (0, 1000], got {self.clock_mhz!r}")
        _require(self.tlmm_group in (2, 3, 4, 5), "tlmm_group", f"must be 2, 3, 4 or 5, got {self.tlmm_group!r}")
        for name in ("tlmm_lanes", "tlmm_tokens", "ew_lanes", "gating_lanes", "rope_lanes", "attn_tile",
                     "attn_heads_parallel",
                     "max_context", "prefill_chunk", "hp_ports", "urams_per_bank"):
            _positive_int(self, name)
        _require(self.ew_lanes & (self.ew_lanes - 1) == 0, "ew_lanes",
                 f"must be a power of two (it fixes the reduction tree), got {self.ew_lanes}")
        _require(self.ew_lanes % self.gating_lanes == 0, "gating_lanes",
                 f"must divide ew_lanes ({self.ew_lanes}), got {self.gating_lanes}")
        _require(self.ew_lanes % self.rope_lanes == 0, "rope_lanes",
                 f"must divide ew_lanes ({self.ew_lanes}), got {self.rope_lanes}")
        _require(self.axi_data_width in (64, 128, 256), "axi_data_width",
                 f"must be 64, 128 or 256, got {self.axi_data_width!r}")
        _require(self.lm_head_format in LM_HEAD_FORMATS, "lm_head_format",
                 f"must be one of {', '.join(LM_HEAD_FORMATS)}, got {self.lm_head_format!r}")
        _require(self.attn_format in ATTN_FORMATS, "attn_format",
                 f"must be one of {', '.join(ATTN_FORMATS)}, got {self.attn_format!r}")
        _require(self.prefill_chunk % self.tlmm_tokens == 0, "prefill_chunk",
                 f"must be a multiple of tlmm_tokens ({self.tlmm_tokens}), got {self.prefill_chunk}")

    @property
    def code_bits(self) -> int:
        return code_bits(self.tlmm_group)

    def check_model(self, model: ModelConfig) -> None:
        """Raise ConfigError if this instance cannot run ``model``."""
        _require(self.max_context <= model.max_position_embeddings, "max_context",
                 f"{self.max_context} exceeds the model's max_position_embeddings ({model.max_position_embeddings})")
        _require(self.prefill_chunk <= self.max_context, "prefill_chunk",
                 f"{self.prefill_chunk} exceeds max_context ({self.max_context})")

    def capped_to(self, model: ModelConfig) -> "HardwareConfig":
        """This instance with ``max_context`` (and ``prefill_chunk``) cut to the model's
        ``max_position_embeddings`` where they exceed it, so small models run on it."""
        limit = model.max_position_embeddings
        if self.max_context <= limit:
            return self
        return self.replace(max_context=limit, prefill_chunk=min(self.prefill_chunk, limit))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "HardwareConfig":
        return _from_dict(cls, data, "hardware config")

    def replace(self, **changes) -> "HardwareConfig":
        return dataclasses.replace(self, **changes)


MODEL_PRESETS: dict[str, ModelConfig] = {
    "bitnet-b1.58-2B-4T": ModelConfig(
        name="bitnet-b1.58-2B-4T", vocab_size=128256, hidden_size=2560, intermediate_size=6912,
        num_layers=30, num_heads=20, num_kv_heads=5, head_dim=128, hidden_act="relu2",
        rope_theta=500000.0, rms_norm_eps=1e-5, sub_norms=True, tie_word_embeddings=True,
        max_position_embeddings=4096),
    "bitnet-b1.58-large": ModelConfig(
        name="bitnet-b1.58-large", vocab_size=32002, hidden_size=1536, intermediate_size=4096,
        num_layers=24, num_heads=16, num_kv_heads=16, head_dim=96, hidden_act="silu",
        rope_theta=10000.0, rms_norm_eps=1e-5, sub_norms=False, tie_word_embeddings=False,
        max_position_embeddings=2048),
    # Tiny models for tests and the demo: same structure, small enough for seconds-long simulation.
    "tiny": ModelConfig(
        name="tiny", vocab_size=256, hidden_size=64, intermediate_size=160, num_layers=2,
        num_heads=4, num_kv_heads=2, head_dim=16, hidden_act="relu2", rope_theta=10000.0,
        rms_norm_eps=1e-5, sub_norms=True, tie_word_embeddings=True, max_position_embeddings=256),
    "tiny-silu": ModelConfig(
        name="tiny-silu", vocab_size=256, hidden_size=64, intermediate_size=160, num_layers=2,
        num_heads=4, num_kv_heads=4, head_dim=16, hidden_act="silu", rope_theta=10000.0,
        rms_norm_eps=1e-5, sub_norms=True, tie_word_embeddings=False, max_position_embeddings=256),
}

HARDWARE_PRESETS: dict[str, HardwareConfig] = {
    "kv260": HardwareConfig(),
    # Small instance for RTL simulation of the tiny models.
    "sim-small": HardwareConfig(board="sim", clock_mhz=300.0, tlmm_group=5, tlmm_lanes=4,
                                tlmm_tokens=2, ew_lanes=4, rope_lanes=2, attn_tile=8, max_context=256,
                                prefill_chunk=16, urams_per_bank=1),
}


def model_preset(name: str) -> ModelConfig:
    try:
        return MODEL_PRESETS[name]
    except KeyError:
        raise ConfigError(f"preset: unknown model preset {name!r}; known: {', '.join(MODEL_PRESETS)}") from None


def hardware_preset(name: str) -> HardwareConfig:
    try:
        return HARDWARE_PRESETS[name]
    except KeyError:
        raise ConfigError(f"hardware: unknown hardware preset {name!r}; known: {', '.join(HARDWARE_PRESETS)}") from None


def load_json_config(path, cls):
    """Read a JSON file holding a ModelConfig or HardwareConfig dict, with errors naming the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    try:
        return cls.from_dict(data)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from None
