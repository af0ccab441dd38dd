"""Read Hugging Face BitNet b1.58 checkpoints into :class:`tellme.weights.ModelWeights`.

Numpy only: safetensors files are parsed here (header JSON + memory-mapped data), so bfloat16
tensors load without torch and nothing is read twice. Two checkpoint families are understood:

- HF ``BitNetForCausalLM`` (``model_type`` "bitnet", 2B4T style, with ``attn_sub_norm`` and
  ``ffn_sub_norm``): either packed ("bitlinear", offline: uint8 ``weight`` of shape (out/4, in)
  holding w+1 in 2-bit fields, plus a one-value ``weight_scale``) or full precision
  ("autobitlinear", online, or no ``quantization_config``), quantised here exactly as HF's
  online ``WeightQuant`` does.
- The original 1bitLLM checkpoints (``architectures`` ["BitnetForCausalLM"], ``model_type``
  "llama"): full-precision weights, no sub-norms.

``TernaryTensor.weight_scale`` is HF's s_w with y = (x_q . W_t) / (s_x * s_w). For packed
checkpoints HF's ``BitLinear.forward`` divides by the stored ``weight_scale``
(``post_quant_process``: ``y / (input_scale * weight_scale)``), so s_w is that value as stored;
for full precision s_w = 1 / mean|W| in float32 (``TernaryTensor.quantize``).

Every problem raises :class:`CheckpointError` with a one-line message naming the file and the
tensor: a checkpoint is either loaded exactly or refused.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tellme.config import ConfigError, ModelConfig
from tellme.errors import TellmeError
from tellme.weights import PROJECTIONS, LayerWeights, ModelWeights, TernaryTensor, WeightsError

__all__ = [
    "CheckpointError", "CheckpointInfo", "SafetensorsFile", "load_checkpoint", "inspect_checkpoint",
    "config_from_hf", "pack_ternary", "unpack_ternary", "bf16_bits_to_float32",
    "float32_to_bf16_bits", "round_to_bfloat16", "SINGLE_FILE", "INDEX_FILE", "CONFIG_FILE",
]

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"

MAX_HEADER_BYTES = 100 * 1024 * 1024   # the safetensors format's own limit


class CheckpointError(TellmeError, ValueError):
    """A checkpoint cannot be loaded exactly (missing, corrupt, or not a supported BitNet)."""


# ----------------------------------------------------------------------------------------------
# bfloat16 without torch

def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bit patterns (uint16) to float32 (exact)."""
    out = np.asarray(bits, dtype=np.uint16).astype(np.uint32)
    out <<= np.uint32(16)
    return out.view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (round to nearest, ties to even); returns uint16 bits."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    bias = ((u >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    out = ((u.astype(np.uint64) + bias) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)   # quiet NaN
    return out


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 -> float32: what a bfloat16 checkpoint stores."""
    return bf16_bits_to_float32(float32_to_bf16_bits(x))


# ----------------------------------------------------------------------------------------------
# HF 2-bit packing (integrations/bitnet.py pack_weights / unpack_weights)

def pack_ternary(trits: np.ndarray) -> np.ndarray:
    """Pack int8 trits (out, in) into HF's uint8 (out/4, in): stored row r holds original rows
    r, r+out/4, r+2*out/4, r+3*out/4 as w+1 in bit pairs 0-1, 2-3, 4-5, 6-7."""
    trits = np.asarray(trits)
    if trits.ndim != 2 or trits.shape[0] % 4:
        raise CheckpointError(f"pack: need a 2-D array with rows divisible by 4, got shape {trits.shape}")
    rows = trits.shape[0] // 4
    packed = np.zeros((rows, trits.shape[1]), dtype=np.uint8)
    for i in range(4):
        packed |= (trits[i * rows:(i + 1) * rows] + 1).astype(np.uint8) << np.uint8(2 * i)
    return packed


def unpack_ternary(packed: np.ndarray, *, where: str = "packed weight") -> np.ndarray:
    """Inverse of :func:`pack_ternary`; raises CheckpointError on the unused 2-bit code 3."""
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise CheckpointError(f"{where}: packed weights must be 2-D uint8, got {packed.dtype} {packed.shape}")
    rows, cols = packed.shape
    trits = np.empty((4 * rows, cols), dtype=np.int8)
    for i in range(4):
        code = (packed >> np.uint8(2 * i)) & np.uint8(3)
        bad = code == 3
        if bad.any():
            r, c = (int(v) for v in np.argwhere(bad)[0])
            raise CheckpointError(
                f"{where}: packed value outside the ternary code (2-bit field {i} = 0b11) at stored "
                f"[{r}, {c}] (weight row {i * rows + r}); {int(bad.sum())} such field(s)")
        trits[i * rows:(i + 1) * rows] = code.astype(np.int8) - 1
    return trits


# ----------------------------------------------------------------------------------------------
# safetensors reader

_ST_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


def _is_count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile:
    """One .safetensors file: the header is parsed and checked against the file size on open;
    tensor data is memory-mapped and read on demand (so a shard is never held in memory twice)."""

    def __init__(self, path):
        self.path = Path(path)
        self.tensors: dict[str, TensorInfo] = {}
        self.metadata: dict = {}
        self._mm = None
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                head = f.read(8)
                if len(head) < 8:
                    self._fail(f"file is {size} bytes, too short for a safetensors header")
                n = int.from_bytes(head, "little")
                if n > MAX_HEADER_BYTES:
                    self._fail(f"header length field says {n} bytes (limit {MAX_HEADER_BYTES}): corrupt file")
                if 8 + n > size:
                    self._fail(f"truncated: header claims {n} bytes but the file has only {size - 8} "
                               "after the length field")
                raw = f.read(n)
        except OSError as e:
            raise CheckpointError(f"{self.path}: cannot read ({e.strerror})") from None
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            self._fail(f"bad header JSON ({e})")
        except RecursionError:
            self._fail("bad header JSON (nested too deeply)")
        if not isinstance(header, dict):
            self._fail("bad header JSON (not an object)")
        self.data_start = 8 + n
        data_len = size - self.data_start
        meta = header.pop("__metadata__", None) or {}
        if not isinstance(meta, dict):
            self._fail("bad header: __metadata__ is not an object")
        self.metadata = meta
        for name, entry in header.items():
            if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
                self._fail(f"tensor {name}: bad header entry {entry!r}")
            dtype, shape, offs = entry["dtype"], entry["shape"], entry["data_offsets"]
            if not isinstance(dtype, str) or dtype not in _ST_DTYPES:
                self._fail(f"tensor {name}: unsupported dtype {dtype!r:.60}")
            if (not isinstance(shape, list) or not all(_is_count(d) for d in shape)
                    or not isinstance(offs, list) or len(offs) != 2
                    or not all(_is_count(o) for o in offs) or offs[0] > offs[1]):
                self._fail(f"tensor {name}: bad shape {shape!r} or data_offsets {offs!r}")
            nbytes = math.prod(shape) * _ST_DTYPES[dtype].itemsize
            if offs[1] - offs[0] != nbytes:
                self._fail(f"tensor {name}: data_offsets {offs} span {offs[1] - offs[0]} bytes but "
                           f"{dtype}{shape} needs {nbytes}")
            if offs[1] > data_len:
                self._fail(f"truncated: tensor {name} needs data bytes up to {offs[1]} but the file "
                           f"holds only {data_len} after the header")
            self.tensors[name] = TensorInfo(name, dtype, tuple(shape), offs[0], offs[1])
        pos = 0      # the format requires the tensors to tile the data area exactly
        for info in sorted(self.tensors.values(), key=lambda t: (t.begin, t.end)):
            if info.begin != pos:
                self._fail(f"corrupt: tensor {info.name} starts at data byte {info.begin}, expected {pos} "
                           f"({'overlap' if info.begin < pos else 'gap'})")
            pos = info.end
        if pos != data_len:
            self._fail(f"corrupt: {data_len - pos} trailing bytes after the last tensor")

    def _fail(self, msg: str):
        raise CheckpointError(f"{self.path}: {msg}")

    def names(self) -> list[str]:
        return list(self.tensors)

    def array(self, name: str) -> np.ndarray:
        """The stored array, as a read-only view of the mapped file (bf16 as raw uint16 bits)."""
        info = self.tensors[name]
        if self._mm is None:
            self._mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        buf = self._mm[self.data_start + info.begin:self.data_start + info.end]
        return buf.view(_ST_DTYPES[info.dtype]).reshape(info.shape)

    def close(self):
        self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------------------------------------
# config.json -> ModelConfig

@dataclass
class CheckpointInfo:
    """What a checkpoint directory holds, from config.json and the file listing (no tensor data read)."""

    path: Path
    config: ModelConfig
    family: str                     # "bitnet" (HF BitNetForCausalLM) or "1bitllm"
    style: str                      # "packed" (bitlinear, offline) or "full" (quantised at load)
    files: dict[str, list[str] | None] = field(default_factory=dict)   # shard -> tensors per index (None: single file)


def _checkpoint_name(cfg: dict, root: Path) -> str:
    nop = cfg.get("_name_or_path")
    if isinstance(nop, str) and nop.strip():
        return nop.rstrip("/").split("/")[-1]
    root = root.resolve()
    if root.parent.name == "snapshots" and root.parent.parent.name.startswith("models--"):
        return root.parent.parent.name.split("--")[-1]      # HF hub cache layout
    return root.name or "checkpoint"


def config_from_hf(cfg: dict, *, name: str, where: str = CONFIG_FILE) -> tuple[ModelConfig, str, str]:
    """Map a Hugging Face config.json dict to (ModelConfig, family, style)."""

    def fail(msg):
        raise CheckpointError(f"{where}: {msg}")

    if not isinstance(cfg, dict):
        fail("expected a JSON object")
    archs = cfg.get("architectures") or []
    if isinstance(archs, str):
        archs = [archs]
    if not isinstance(archs, list):
        fail(f"architectures must be a list of class names, got {archs!r:.60}")
    model_type = cfg.get("model_type")
    if model_type == "bitnet":
        if any(str(a).lower() != "bitnetforcausallm" for a in archs):
            fail(f"unsupported architecture {archs} for model_type 'bitnet' (expected BitNetForCausalLM)")
        family = "bitnet"
    elif "BitnetForCausalLM" in archs and model_type in (None, "llama"):
        if len(archs) != 1:
            fail(f"unsupported architectures {archs}")
        family = "1bitllm"
    elif model_type == "llama" and not archs:
        family = "1bitllm"
    elif model_type == "llama":
        fail(f"unknown architecture {archs}: a plain Llama checkpoint is not a BitNet b1.58 model "
             "(expected BitNetForCausalLM or the 1bitLLM BitnetForCausalLM)")
    else:
        fail(f"unknown model_type {model_type!r} / architectures {archs} (expected 'bitnet' "
             "BitNetForCausalLM or 1bitLLM 'BitnetForCausalLM')")

    # Quantisation format.
    q = cfg.get("quantization_config")
    if family == "1bitllm":
        if q:
            fail("quantization_config is not supported for 1bitLLM-style checkpoints (full-precision weights expected)")
        style = "full"
    elif not q:
        style = "full"
    else:
        if not isinstance(q, dict):
            fail("quantization_config must be an object")
        if q.get("quant_method") != "bitnet":
            fail(f"unsupported quantization_config.quant_method {q.get('quant_method')!r} (expected 'bitnet')")
        linear_class = q.get("linear_class", "bitlinear")
        mode = q.get("quantization_mode", "offline")
        if q.get("use_rms_norm"):
            fail("quantization_config.use_rms_norm=true (an extra RMSNorm inside every BitLinear) is not supported")
        skip = q.get("modules_to_not_convert") or []
        if not isinstance(skip, list):
            fail(f"quantization_config.modules_to_not_convert must be a list, got {skip!r:.60}")
        if any(str(m).split(".")[-1] != "lm_head" for m in skip):
            fail(f"quantization_config.modules_to_not_convert={skip}: only lm_head may stay unquantised")
        if linear_class == "bitlinear" and mode in ("offline", "online"):
            style = "packed"     # HF uses the packed BitLinear whatever the mode
        elif linear_class == "autobitlinear" and mode == "online":
            style = "full"
        elif linear_class == "autobitlinear" and mode == "offline":
            fail("quantization_config autobitlinear+offline is not supported (HF multiplies by weight_scale there; "
                 "use bitlinear+offline packed or autobitlinear+online)")
        else:
            fail(f"unknown quantization_config linear_class={linear_class!r} quantization_mode={mode!r}")

    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            fail(f"{key}=true is not supported (BitNet b1.58 has no biases)")

    def req(key):
        if key not in cfg or cfg[key] is None:
            fail(f"missing field {key}")
        return cfg[key]

    vocab = req("vocab_size")
    hidden = req("hidden_size")
    inter = req("intermediate_size")
    layers = req("num_hidden_layers")
    heads = req("num_attention_heads")
    kv_heads = cfg.get("num_key_value_heads")
    if kv_heads is None:
        kv_heads = heads
    head_dim = cfg.get("head_dim")
    if head_dim is None:
        if not isinstance(hidden, int) or not isinstance(heads, int) or heads <= 0 or hidden % heads:
            fail(f"no head_dim and hidden_size {hidden!r} is not a multiple of num_attention_heads {heads!r}")
        head_dim = hidden // heads
    act = cfg.get("hidden_act", "relu2" if family == "bitnet" else "silu")
    if act == "swish":
        act = "silu"

    rope = cfg.get("rope_parameters")
    if rope is None:
        rope = cfg.get("rope_scaling")
    theta = cfg.get("rope_theta")
    if rope is not None:
        if not isinstance(rope, dict):
            fail(f"rope_parameters must be an object, got {rope!r}")
        rtype = rope.get("rope_type", rope.get("type", "default"))
        if rtype != "default":
            fail(f"unsupported RoPE type {rtype!r} (only plain RoPE, rope_type 'default')")
        if rope.get("rope_theta") is not None:
            if theta is not None and theta != rope["rope_theta"]:
                fail(f"rope_theta {theta} disagrees with rope_parameters.rope_theta {rope['rope_theta']}")
            theta = rope["rope_theta"]
    if theta is None:
        theta = 500000.0 if family == "bitnet" else 10000.0
    eps = cfg.get("rms_norm_eps", 1e-5 if family == "bitnet" else 1e-6)
    tie = cfg.get("tie_word_embeddings", False)
    if not isinstance(tie, bool):
        fail(f"tie_word_embeddings must be true or false, got {tie!r}")
    for key, value in (("rope_theta", theta), ("rms_norm_eps", eps)):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            fail(f"{key} must be a number, got {value!r}")
        if isinstance(value, int) and value.bit_length() > 1000:     # float() would overflow
            fail(f"{key} is out of range (an integer of {value.bit_length()} bits)")
    try:
        config = ModelConfig(
            name=name, vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_layers=layers,
            num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, hidden_act=act,
            rope_theta=float(theta), rms_norm_eps=float(eps), sub_norms=(family == "bitnet"),
            tie_word_embeddings=tie, max_position_embeddings=cfg.get("max_position_embeddings", 2048))
    except (ConfigError, TypeError, ValueError, OverflowError) as e:     # OverflowError: float(10**400)
        config = None
        error = str(e)
    if config is None:
        fail(error)
    return config, family, style


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: not valid JSON (nested too deeply)") from None


def inspect_checkpoint(path) -> CheckpointInfo:
    """Read config.json and locate the weights files, without reading tensor data."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a checkpoint directory")
    cfg_path = root / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing config.json")
    cfg = _read_json(cfg_path)
    config, family, style = config_from_hf(cfg, name=_checkpoint_name(cfg if isinstance(cfg, dict) else {}, root),
                                           where=str(cfg_path))
    single, index = root / SINGLE_FILE, root / INDEX_FILE
    files: dict[str, list[str] | None] = {}
    if single.is_file():
        files[SINGLE_FILE] = None
    elif index.is_file():
        data = _read_json(index)
        wmap = data.get("weight_map") if isinstance(data, dict) else None
        if not isinstance(wmap, dict) or not wmap:
            raise CheckpointError(f"{index}: no weight_map")
        for tensor, shard in wmap.items():
            if not isinstance(shard, str) or not shard or "/" in shard or "\\" in shard or shard in (".", ".."):
                raise CheckpointError(f"{index}: tensor {tensor}: bad shard file name {shard!r}")
            files.setdefault(shard, []).append(tensor)
        for shard in files:
            try:
                present = (root / shard).is_file()
            except (OSError, ValueError):             # a name too long, or with a NUL byte
                present = False
            if not present:
                raise CheckpointError(f"{root / shard}: shard listed in {INDEX_FILE} is absent "
                                      f"(holds {len(files[shard])} tensors, e.g. {files[shard][0]})")
    else:
        other = sorted(p.name for p in root.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".gguf"))
        hint = f" (found {', '.join(other)}: convert to safetensors)" if other else ""
        raise CheckpointError(f"{root}: missing weights file: neither {SINGLE_FILE} nor {INDEX_FILE}{hint}")
    return CheckpointInfo(root, config, family, style, files)


# ----------------------------------------------------------------------------------------------
# tensors -> ModelWeights

_LAYER_RE = re.compile(r"^model\.layers\.(\d{1,9})\.(.+)$")
_PROJ_PREFIX = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
                "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")   # buffers some old Llama exports saved


class _Assembler:
    def __init__(self, info: CheckpointInfo):
        self.info = info
        c = info.config
        self.c = c
        self.packed = info.style == "packed"
        self.globals: dict[str, np.ndarray] = {}
        # Filled as tensors come (a config's num_hidden_layers is not trusted to size anything).
        self.layers: dict[int, dict] = {}
        # layer tensor suffix -> (kind, field, shape)
        lt: dict[str, tuple] = {
            "input_layernorm.weight": ("norm", "input_norm", (c.hidden_size,)),
            "post_attention_layernorm.weight": ("norm", "post_attention_norm", (c.hidden_size,)),
        }
        if c.sub_norms:
            lt["self_attn.attn_sub_norm.weight"] = ("norm", "attn_sub_norm", (c.q_size,))
            lt["mlp.ffn_sub_norm.weight"] = ("norm", "ffn_sub_norm", (c.intermediate_size,))
        for proj, (n, k) in c.projections().items():
            base = f"{_PROJ_PREFIX[proj]}.{proj}"
            lt[f"{base}.weight"] = ("weight", proj, (n, k))
            if self.packed:
                lt[f"{base}.weight_scale"] = ("scale", proj, (1,))
        self.layer_tensors = lt
        self.global_tensors = {"model.embed_tokens.weight": (c.vocab_size, c.hidden_size),
                               "model.norm.weight": (c.hidden_size,),
                               "lm_head.weight": (c.vocab_size, c.hidden_size)}
        self.seen: dict[str, Path] = {}

    def add(self, f: SafetensorsFile, name: str):
        where = f"{f.path}: tensor {name}"
        if _IGNORED.search(name):
            return
        if name in self.seen:
            raise CheckpointError(f"{where}: duplicate (also in {self.seen[name]})")
        m = _LAYER_RE.match(name)
        if m:
            idx, rest = int(m.group(1)), m.group(2)
            if idx >= self.c.num_layers:
                raise CheckpointError(f"{where}: unexpected tensor for layer {idx}, but config.json has "
                                      f"num_hidden_layers={self.c.num_layers}")
            if rest not in self.layer_tensors:
                raise CheckpointError(f"{where}: unexpected tensor (not part of a {self.info.family} "
                                      f"{self.info.style} checkpoint)")
            kind, fld, shape = self.layer_tensors[rest]
            if kind == "norm":
                value = self._float(f, name, shape)
            elif kind == "scale":
                value = self._scale(f, name)
            elif self.packed:
                value = self._packed(f, name, shape)                       # int8 trits
            else:
                value = TernaryTensor.quantize(self._float(f, name, shape))  # HF online quantisation
            self.layers.setdefault(idx, {})[self._key(kind, fld)] = value
        elif name in self.global_tensors:
            self.globals[name] = self._float(f, name, self.global_tensors[name])
        else:
            raise CheckpointError(f"{where}: unexpected tensor")
        self.seen[name] = f.path

    def _key(self, kind: str, fld: str) -> str:
        return {"norm": "", "scale": "scale:", "weight": "trits:" if self.packed else "tern:"}[kind] + fld

    @staticmethod
    def _check_shape(f, name, shape):
        info = f.tensors[name]
        if info.shape != tuple(shape):
            raise CheckpointError(f"{f.path}: tensor {name}: wrong shape {list(info.shape)}, expected {list(shape)}")

    def _float(self, f: SafetensorsFile, name: str, shape) -> np.ndarray:
        info = f.tensors[name]
        if info.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"{f.path}: tensor {name}: dtype {info.dtype}, expected a float type")
        self._check_shape(f, name, shape)
        raw = f.array(name)
        with np.errstate(over="ignore"):        # float64 beyond float32's range: inf, refused below
            arr = bf16_bits_to_float32(raw) if info.dtype == "BF16" else raw.astype(np.float32)
        finite = np.isfinite(arr)
        if not finite.all():
            pos = tuple(int(v) for v in np.argwhere(~finite)[0])
            raise CheckpointError(f"{f.path}: tensor {name}: {int((~finite).sum())} NaN/inf value(s) "
                                  f"(first at {list(pos)}, value {arr[pos]})")
        return np.ascontiguousarray(arr)

    def _scale(self, f: SafetensorsFile, name: str) -> np.float32:
        info = f.tensors[name]
        if info.dtype not in FLOAT_DTYPES or math.prod(info.shape) != 1 or len(info.shape) > 1:
            raise CheckpointError(f"{f.path}: tensor {name}: weight_scale must be one float value, got "
                                  f"{info.dtype}{list(info.shape)}")
        raw = f.array(name).reshape(-1)
        with np.errstate(over="ignore"):
            v = bf16_bits_to_float32(raw)[0] if info.dtype == "BF16" else raw.astype(np.float32)[0]
        if not np.isfinite(v) or v <= 0:
            raise CheckpointError(f"{f.path}: tensor {name}: weight_scale must be finite and > 0, got {v}")
        return np.float32(v)

    def _packed(self, f: SafetensorsFile, name: str, shape) -> np.ndarray:
        n, k = shape
        info = f.tensors[name]
        if n % 4:
            raise CheckpointError(f"{f.path}: tensor {name}: {n} output rows is not a multiple of 4, "
                                  "cannot be a packed BitLinear weight")
        if info.dtype != "U8":
            raise CheckpointError(f"{f.path}: tensor {name}: packed weight must be U8, got {info.dtype} "
                                  "(full-precision weights need quantization_config autobitlinear/online)")
        self._check_shape(f, name, (n // 4, k))
        return unpack_ternary(f.array(name), where=f"{f.path}: tensor {name}")

    def finish(self) -> ModelWeights:
        c, root = self.c, self.info.path

        def missing(name):
            raise CheckpointError(f"{root}: missing tensor {name} (in no weights file)")

        for g in ("model.embed_tokens.weight", "model.norm.weight"):
            if g not in self.globals:
                missing(g)
        embed = self.globals["model.embed_tokens.weight"]
        if c.tie_word_embeddings:
            head = self.globals.get("lm_head.weight")
            if head is not None and not np.array_equal(head, embed):
                raise CheckpointError(f"{self.seen['lm_head.weight']}: tensor lm_head.weight differs from "
                                      "model.embed_tokens.weight but tie_word_embeddings is true")
            lm_head = embed
        else:
            if "lm_head.weight" not in self.globals:
                missing("lm_head.weight (tie_word_embeddings is false)")
            lm_head = self.globals["lm_head.weight"]
        layers = []
        for i in range(c.num_layers):
            slot = self.layers.get(i, {})
            for suffix, (kind, fld, _) in self.layer_tensors.items():
                if self._key(kind, fld) not in slot:
                    missing(f"model.layers.{i}.{suffix}")
            if self.packed:
                proj = {p: TernaryTensor(slot["trits:" + p], slot["scale:" + p]) for p in PROJECTIONS}
            else:
                proj = {p: slot["tern:" + p] for p in PROJECTIONS}
            layers.append(LayerWeights(
                input_norm=slot["input_norm"], post_attention_norm=slot["post_attention_norm"],
                attn_sub_norm=slot.get("attn_sub_norm"), ffn_sub_norm=slot.get("ffn_sub_norm"), proj=proj))
        weights = ModelWeights(c, embed, layers, self.globals["model.norm.weight"], lm_head)
        try:
            return weights.validate()
        except WeightsError as e:
            raise CheckpointError(f"{root}: {e}") from None


def load_checkpoint(path) -> ModelWeights:
    """Load a Hugging Face BitNet checkpoint directory (config.json + model.safetensors, or
    model.safetensors.index.json + shards) into ModelWeights, all float tensors in float32.

    Shards are read one at a time through a memory map; each tensor is converted (bf16/fp16 ->
    float32, packed -> trits, full precision -> quantised) as it is read.
    """
    info = inspect_checkpoint(path)
    asm = _Assembler(info)
    for shard, listed in info.files.items():
        with SafetensorsFile(info.path / shard) as f:
            if listed is not None:
                in_file = set(f.tensors)
                for name in listed:
                    if name not in in_file:
                        raise CheckpointError(f"{f.path}: missing tensor {name} "
                                              f"({INDEX_FILE} says it is in this shard)")
                listed_set = set(listed)
                for name in f.tensors:
                    if name not in listed_set:
                        raise CheckpointError(f"{f.path}: tensor {name} is not listed for this shard in {INDEX_FILE}")
            for name in f.names():
                asm.add(f, name)
    return asm.finish()
