"""Write small synthetic BitNet checkpoints in the real Hugging Face format.

``write_checkpoint`` turns a :class:`ModelWeights` into a directory that
``transformers.BitNetForCausalLM.from_pretrained`` accepts (and that
:func:`tellme.gen.checkpoint.load_checkpoint` reads back to the same weights):

- ``style="packed"``: ``quantization_config`` bitlinear/offline; every projection is stored as
  HF's packed uint8 (out/4, in) plus a one-value ``weight_scale`` (= our s_w).
- ``style="full"``: ``quantization_config`` autobitlinear/online; every projection is stored as
  a full-precision W that HF's online quantiser maps back to the same trits and (as nearly as
  float32 allows) the same s_w. W = trits / s_w does *not* do that: mean|W| would be
  (nonzeros/N) / s_w, so s_w would come back as s_w * N / nonzeros. We store nonzeros with
  magnitude about N / (nonzeros * s_w) (round(|w| * s_w) = round(N / nonzeros) clamps to 1)
  plus one small residual in a zero position (|e| * s_w < 0.5, still rounds to 0), searched so
  that numpy's float32 mean|W| gives back s_w bit-exactly (see :func:`full_precision_weight`).
- ``sub_norms=False`` models (1bitLLM style, which HF's BitNetForCausalLM cannot represent) are
  written with ``architectures`` ["BitnetForCausalLM"], ``model_type`` "llama" and
  full-precision weights.

:func:`make_synthetic` also writes a small Hugging Face tokenizer (``tokenizer.json`` and
``tokenizer_config.json``, :func:`byte_level_tokenizer`) sized to the model's vocabulary, so
text can be fed to a synthetic model (``tellme chat``).

Writes go to a temporary sibling directory renamed into place, so a failure leaves nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tellme.config import ModelConfig, model_preset
from tellme.weights import ModelWeights, TernaryTensor, WeightsError, random_weights

from .checkpoint import (CONFIG_FILE, INDEX_FILE, SINGLE_FILE, CheckpointError,
                         bf16_bits_to_float32, float32_to_bf16_bits, pack_ternary)

__all__ = ["write_checkpoint", "make_synthetic", "full_precision_weight", "save_safetensors",
           "byte_level_tokenizer", "tokenizer_files", "STYLES", "DTYPES", "PACKED_QUANT", "FULL_QUANT",
           "TOKENIZER_FILE", "TOKENIZER_CONFIG_FILE"]

STYLES = ("packed", "full")
DTYPES = ("float32", "bfloat16")
_ST_NAME = {"float32": "F32", "bfloat16": "BF16"}

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

PACKED_QUANT = {"quant_method": "bitnet", "linear_class": "bitlinear", "quantization_mode": "offline"}
FULL_QUANT = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}


def _representable(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 array -> the same values as stored in `dtype` (float32 view)."""
    if dtype == "bfloat16":
        return bf16_bits_to_float32(float32_to_bf16_bits(x))
    return np.asarray(x, dtype=np.float32)


def _step(v: np.float32, ulps: int, dtype: str) -> np.float32:
    """Move a positive value `ulps` representable steps in `dtype` (negative: down)."""
    if dtype == "bfloat16":
        bits = int(float32_to_bf16_bits(np.array([v], dtype=np.float32))[0]) + ulps
        return np.float32(bf16_bits_to_float32(np.array([bits], dtype=np.uint16))[0])
    return np.array([v], dtype=np.float32).view(np.int32).__add__(ulps).view(np.float32)[0]


def _neighbours(a: float, dtype: str, spread: int) -> tuple[np.float32, np.float32]:
    """Positive values lo <= a < hi representable in `dtype`, `spread` steps either side of a."""
    v = _representable(np.array([a], dtype=np.float32), dtype)[0]
    if float(v) > a:
        v = _step(v, -1, dtype)
    return _step(v, 1 - spread, dtype), _step(v, spread, dtype)


def full_precision_weight(t: TernaryTensor, dtype: str = "float32") -> np.ndarray:
    """A float32 W (exactly representable in `dtype`) whose HF online quantisation gives back
    ``t.trits`` exactly and ``t.weight_scale`` as closely as possible: bit-exactly under
    :meth:`TernaryTensor.quantize` whenever the float32 mean can reach a value m with
    fl(1/m) == s_w (all cases tried).

    Nonzero trits get magnitude lo or hi (adjacent representable values around
    N / (nonzeros * s_w), k of them hi) and one zero trit gets a small residual e < 0.5 / s_w
    (still rounds to 0): the coarse k and fine e are searched until numpy's float32 mean|W|
    is exactly the m with 1/m == s_w. Raises CheckpointError if the trits cannot be reproduced;
    an all-zero tensor is written as zeros (its s_w comes back as 1e5).
    """
    trits = t.trits
    s = np.float32(t.weight_scale)
    n = trits.size
    flat = trits.reshape(-1)
    nz = np.flatnonzero(flat)
    if nz.size == 0:
        return np.zeros(trits.shape, dtype=np.float32)
    zero_pos = int(np.flatnonzero(flat == 0)[0]) if nz.size < n else None
    sign = flat[nz].astype(np.float32)
    e_max = 0.25 / float(s)                          # |e| * s_w stays far below 0.5

    # the float32 mean m that quantises to exactly s_w (fall back to 1/s_w)
    m0 = np.float32(1.0) / s
    targets = [m for m in (_step(m0, d, "float32") for d in (0, -1, 1, -2, 2))
               if np.float32(1.0) / np.maximum(m, np.float32(1e-5)) == s]
    target = float(targets[0]) if targets else 1.0 / float(s)

    best = None
    for margin_ulps in (64, 1024):                   # residual e aimed at about this many mean-ulps
        e0 = 0.0 if zero_pos is None else min(e_max / 2, margin_ulps * n * float(np.spacing(np.float32(target))))
        a = (n * target - e0) / nz.size              # magnitude of the nonzeros
        lo, hi = _neighbours(a, dtype, spread=1)
        k = int(math.floor((n * target - e0 - nz.size * float(lo)) / (float(hi) - float(lo))))
        k = min(max(k, 0), nz.size)
        mag = np.full(nz.size, lo, dtype=np.float32)
        mag[:k] = hi
        w = np.zeros(n, dtype=np.float32)
        w[nz] = sign * mag
        e = n * target - nz.size * float(lo) - k * (float(hi) - float(lo))
        below = above = last = None                  # residuals bracketing the target mean
        for _ in range(48):
            if zero_pos is not None:
                e = float(_representable(np.array([min(max(e, 0.0), e_max)], np.float32), dtype)[0])
                if e == last:
                    break                            # clamped at 0 or e_max: no progress
                w[zero_pos] = last = e
            m = np.mean(np.abs(w), dtype=np.float32)   # exactly as TernaryTensor.quantize
            err = abs(float(np.float32(1.0) / np.maximum(m, np.float32(1e-5))) - float(s))
            if best is None or err < best[0]:
                best = (err, w.copy())
            if err == 0.0 or zero_pos is None:
                break
            if float(m) < target:
                below = e if below is None else max(below, e)
            else:
                above = e if above is None else min(above, e)
            if below is not None and above is not None:
                mid = float(_representable(np.array([(below + above) / 2], np.float32), dtype)[0])
                if mid in (below, above):
                    break                            # no representable residual in between
                e = mid
            else:
                nxt = e + (target - float(m)) * n     # secant step on mean = sum / n
                if float(_representable(np.array([nxt], np.float32), dtype)[0]) == e:
                    nxt = float(_step(np.float32(max(e, 1e-30)), 1 if float(m) < target else -1, dtype))
                e = nxt
        if best is not None and (best[0] == 0.0 or zero_pos is None):
            break
    if best is not None and not np.array_equal(TernaryTensor.quantize(best[1].reshape(trits.shape)).trits, trits):
        best = None
    if best is None:
        raise CheckpointError(f"cannot store weight_scale {float(s)} as a full-precision {dtype} weight "
                              "that re-quantises to the same trits")
    return best[1].reshape(trits.shape)


def _hf_config(c: ModelConfig, style: str, dtype: str) -> dict:
    common = {
        "_name_or_path": c.name,
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "head_dim": c.head_dim,
        "hidden_act": c.hidden_act,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "tie_word_embeddings": c.tie_word_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": 1 if c.vocab_size > 2 else None,
        "eos_token_id": 2 if c.vocab_size > 2 else None,
        "pad_token_id": None,
    }
    if c.sub_norms:
        return {
            "architectures": ["BitNetForCausalLM"],
            "model_type": "bitnet",
            **common,
            "rope_parameters": {"rope_type": "default", "rope_theta": float(c.rope_theta)},
            "dtype": dtype,
            "quantization_config": dict(PACKED_QUANT if style == "packed" else FULL_QUANT),
        }
    return {   # original 1bitLLM layout: Llama config, full-precision weights, no sub-norms
        "architectures": ["BitnetForCausalLM"],
        "model_type": "llama",
        **common,
        "rope_theta": float(c.rope_theta),
        "rope_scaling": None,
        "torch_dtype": dtype,
        "weight_bits": 1,
        "input_bits": 8,
    }


def _tensor_plan(w: ModelWeights, style: str, dtype: str) -> list[tuple[str, str, tuple, object]]:
    """(name, safetensors dtype, shape, producer) in HF order; producers build bytes lazily."""
    c = w.config
    fdt = _ST_NAME[dtype]

    def floats(arr):
        def make():
            a = np.ascontiguousarray(arr, dtype=np.float32)
            return float32_to_bf16_bits(a).tobytes() if dtype == "bfloat16" else a.astype("<f4").tobytes()
        return make

    plan = [("model.embed_tokens.weight", fdt, (c.vocab_size, c.hidden_size), floats(w.embed))]
    for i, layer in enumerate(w.layers):
        p = f"model.layers.{i}"
        plan.append((f"{p}.input_layernorm.weight", fdt, (c.hidden_size,), floats(layer.input_norm)))
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            plan += _proj_entries(f"{p}.self_attn.{proj}", layer.proj[proj], style, dtype)
        if c.sub_norms:
            plan.append((f"{p}.self_attn.attn_sub_norm.weight", fdt, (c.q_size,), floats(layer.attn_sub_norm)))
        for proj in ("gate_proj", "up_proj", "down_proj"):
            plan += _proj_entries(f"{p}.mlp.{proj}", layer.proj[proj], style, dtype)
        if c.sub_norms:
            plan.append((f"{p}.mlp.ffn_sub_norm.weight", fdt, (c.intermediate_size,), floats(layer.ffn_sub_norm)))
        plan.append((f"{p}.post_attention_layernorm.weight", fdt, (c.hidden_size,), floats(layer.post_attention_norm)))
    plan.append(("model.norm.weight", fdt, (c.hidden_size,), floats(w.final_norm)))
    if not c.tie_word_embeddings:
        plan.append(("lm_head.weight", fdt, (c.vocab_size, c.hidden_size), floats(w.lm_head)))
    return plan


def _proj_entries(base: str, t: TernaryTensor, style: str, dtype: str):
    n, k = t.shape
    fdt = _ST_NAME[dtype]
    if style == "packed":
        return [
            (f"{base}.weight", "U8", (n // 4, k), lambda: pack_ternary(t.trits).tobytes()),
            (f"{base}.weight_scale", fdt, (1,),
             lambda: (float32_to_bf16_bits(np.array([t.weight_scale], np.float32)).tobytes() if dtype == "bfloat16"
                      else np.array([t.weight_scale], "<f4").tobytes())),
        ]

    def make():
        w = full_precision_weight(t, dtype)
        return float32_to_bf16_bits(w).tobytes() if dtype == "bfloat16" else w.astype("<f4").tobytes()
    return [(f"{base}.weight", fdt, (n, k), make)]


_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
             "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}
_NP_CODE = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
            "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16",
            "uint8": "U8", "bool": "BOOL"}


def _nbytes(entry) -> int:
    return math.prod(entry[2]) * _ITEMSIZE[entry[1]]


def _write_safetensors(path: Path, entries) -> None:
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, dt, shape, _ in entries:
        size = math.prod(shape) * _ITEMSIZE[dt]
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + size]}
        off += size
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little"))
        f.write(hb)
        for name, dt, shape, make in entries:
            data = make()
            if len(data) != math.prod(shape) * _ITEMSIZE[dt]:
                raise CheckpointError(f"{path}: tensor {name}: produced {len(data)} bytes, expected "
                                      f"{math.prod(shape) * _ITEMSIZE[dt]}")
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_safetensors(path, tensors: dict) -> None:
    """Write one safetensors file from {name: array} (numpy dtype kept; little-endian) or
    {name: ("BF16", uint16 bit patterns)}; handy for building and corrupting checkpoints."""
    entries = []
    for name, value in tensors.items():
        if isinstance(value, tuple):
            code, arr = value
            arr = np.ascontiguousarray(arr)
        else:
            arr = np.ascontiguousarray(value)
            code = _NP_CODE.get(arr.dtype.name)
            if code is None:
                raise CheckpointError(f"{path}: tensor {name}: dtype {arr.dtype} has no safetensors code")
        if arr.itemsize != _ITEMSIZE[code]:
            raise CheckpointError(f"{path}: tensor {name}: {arr.dtype} does not fit safetensors {code}")
        le = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        entries.append((name, code, tuple(arr.shape), (lambda a=le: a.tobytes())))
    _write_safetensors(Path(path), entries)


def _split(plan, shards: int):
    """Contiguous groups of about equal bytes, none empty."""
    total = sum(_nbytes(e) for e in plan)
    groups, cur, acc = [], [], 0
    for i, e in enumerate(plan):
        cur.append(e)
        acc += _nbytes(e)
        left_entries, left_groups = len(plan) - i - 1, shards - len(groups) - 1
        if left_groups > 0 and (acc >= total * (len(groups) + 1) / shards or left_entries == left_groups):
            groups.append(cur)
            cur = []
    groups.append(cur)
    assert len(groups) == shards and all(groups)
    return groups


def write_checkpoint(weights: ModelWeights, path, *, style: str = "packed", dtype: str = "float32",
                     shards: int = 1, overwrite: bool = False, extra_files: dict | None = None) -> Path:
    """Write `weights` as a Hugging Face BitNet checkpoint directory at `path`; returns the path.

    style "packed" (bitlinear/offline, packed uint8 + weight_scale) or "full"
    (autobitlinear/online, full-precision weights); dtype of the float tensors "float32" or
    "bfloat16"; `shards` > 1 writes model-0000i-of-0000n.safetensors plus the index file.
    `extra_files`: {file name: str or bytes} written into the directory as well (e.g. the
    tokenizer, :func:`tokenizer_files`), inside the same all-or-nothing write.
    """
    if style not in STYLES:
        raise CheckpointError(f"style must be one of {STYLES}, got {style!r}")
    if dtype not in DTYPES:
        raise CheckpointError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    try:
        weights.validate()
    except WeightsError as e:
        raise CheckpointError(f"weights: {e}") from None
    c = weights.config
    if not c.sub_norms and style == "packed":
        raise CheckpointError("sub_norms=False (1bitLLM-style) models are written full-precision only: "
                              "use style='full'")
    if style == "packed":
        for proj, (n, _) in c.projections().items():
            if n % 4:
                raise CheckpointError(f"{proj}: {n} output rows is not a multiple of 4; HF's packed format needs it")
    if c.tie_word_embeddings and not np.array_equal(weights.lm_head, weights.embed):
        raise CheckpointError("lm_head differs from embed but tie_word_embeddings is true")
    plan = _tensor_plan(weights, style, dtype)
    if not isinstance(shards, int) or not 1 <= shards <= len(plan):
        raise CheckpointError(f"shards must be an integer in 1..{len(plan)}, got {shards!r}")
    extra_files = dict(extra_files or {})
    for name in extra_files:
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or os.sep in name \
                or name in (CONFIG_FILE, INDEX_FILE) or name.endswith(".safetensors"):
            raise CheckpointError(f"extra_files: {name!r} is not a plain file name beside the weights")

    dest = Path(path)
    if dest.exists() and not overwrite:
        raise CheckpointError(f"{dest}: already exists (pass overwrite=True to replace it)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        with open(tmp / CONFIG_FILE, "w") as f:
            json.dump(_hf_config(c, style, dtype), f, indent=2)
            f.write("\n")
        if shards == 1:
            _write_safetensors(tmp / SINGLE_FILE, plan)
        else:
            weight_map = {}
            for i, group in enumerate(_split(plan, shards)):
                fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
                _write_safetensors(tmp / fname, group)
                weight_map.update({e[0]: fname for e in group})
            index = {"metadata": {"total_size": sum(_nbytes(e) for e in plan)}, "weight_map": weight_map}
            with open(tmp / INDEX_FILE, "w") as f:
                json.dump(index, f, indent=2)
                f.write("\n")
        for name, content in extra_files.items():
            (tmp / name).write_bytes(content.encode() if isinstance(content, str) else bytes(content))
        old = None
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
            os.replace(dest, old / "x")
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def make_synthetic(preset_or_config, path, *, style: str = "packed", seed: int = 0, dtype: str = "float32",
                   shards: int = 1, overwrite: bool = False, tokenizer: bool = True) -> ModelWeights:
    """Random weights (tellme.weights.random_weights) for a preset name or ModelConfig, written
    with write_checkpoint; returns the in-memory weights that were written. ``tokenizer``: also
    write ``tokenizer.json`` and ``tokenizer_config.json`` (:func:`tokenizer_files`; none for a
    vocabulary below 256 ids, which cannot hold the 256 bytes)."""
    config = model_preset(preset_or_config) if isinstance(preset_or_config, str) else preset_or_config
    if not isinstance(config, ModelConfig):
        raise CheckpointError(f"expected a preset name or ModelConfig, got {type(preset_or_config).__name__}")
    weights = random_weights(config, seed=seed)
    extra = tokenizer_files(config) if tokenizer else {}
    write_checkpoint(weights, path, style=style, dtype=dtype, shards=shards, overwrite=overwrite, extra_files=extra)
    return weights


# ----------------------------------------------------------------------------------------------
# a tokenizer for synthetic checkpoints

#: The text the merges of a tokenizer above 256 ids are learnt from (fixed, so the tokenizer is
#: the same on every machine).
TOKENIZER_TEXT = """\
The quick brown fox jumps over the lazy dog. A ternary language model stores every weight as
minus one, zero or plus one, and a scale for each matrix. The accelerator reads the weights from
memory, looks up partial sums in small tables, and adds them up for every token of the prompt.
When the prompt has been read, the model writes one new token at a time: each token is the one
with the highest score, and it is fed back in to choose the next one. The host sends the prompt,
starts the run, waits for the interrupt and reads the answer back from memory.

This is a small piece of English text. It is here so that the tokenizer of a synthetic model
learns some of the common pairs of letters, such as "th", "he", "in", "er", "an" and "on", and a
few whole words like "the", "and", "of", "to", "is" and "for". It does not need to be long, and
it does not need to be good: it only needs to be the same every time the checkpoint is written.
Numbers like 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64, 128 and 256 show up too, as do
questions? Answers! Lists; colons: and (brackets).
"""


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map of the 256 bytes onto printable characters (what the ByteLevel pre-tokenizer
    produces and the ByteLevel decoder maps back)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _learn_merges(words: list[str], limit: int) -> list[tuple[str, str]]:
    """Byte-pair merges learnt from `words` (ByteLevel pre-tokens, repeats counted): at most
    `limit`, each the most frequent adjacent pair (ties: the smallest pair), while a pair occurs
    at least twice. Plain Python, so the result does not depend on threads or hash seeds."""
    counts: dict[tuple[str, ...], int] = {}
    for w in words:
        key = tuple(w)
        counts[key] = counts.get(key, 0) + 1
    merges: list[tuple[str, str]] = []
    while len(merges) < limit:
        pairs: dict[tuple[str, str], int] = {}
        for symbols, n in counts.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] = pairs.get(pair, 0) + n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merges.append(best)
        merged: dict[tuple[str, ...], int] = {}
        for symbols, n in counts.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] = merged.get(tuple(out), 0) + n
        counts = merged
    return merges


def byte_level_tokenizer(vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` with exactly ``vocab_size`` ids (>= 256).

    Ids 0..255 are the 256 bytes (id b is byte b), so any UTF-8 text encodes and decodes back
    exactly (ByteLevel pre-tokenizer and decoder, as GPT-2 and Llama 3). Above 256: merges learnt
    from :data:`TOKENIZER_TEXT` (a few hundred), then filler tokens ``<|reserved_N|>`` that the
    encoder never produces and that decode to their own text. No special tokens. Deterministic.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    if not isinstance(vocab_size, int) or vocab_size < 256:
        raise CheckpointError(f"a byte-level tokenizer needs a vocabulary of at least 256 ids, got {vocab_size!r}")
    byte_char = _bytes_to_unicode()
    vocab = {byte_char[b]: b for b in range(256)}
    merges: list[tuple[str, str]] = []
    if vocab_size > 256:
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        words = [w for w, _ in pre.pre_tokenize_str(TOKENIZER_TEXT)]
        for a, b in _learn_merges(words, vocab_size - 256):
            merges.append((a, b))
            vocab.setdefault(a + b, len(vocab))
            if len(vocab) == vocab_size:
                break
        n = 0
        while len(vocab) < vocab_size:
            vocab.setdefault(f"<|reserved_{n}|>", len(vocab))
            n += 1
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def tokenizer_files(config: ModelConfig) -> dict[str, str]:
    """{``tokenizer.json``: ..., ``tokenizer_config.json``: ...} of :func:`byte_level_tokenizer`
    for ``config``'s vocabulary ({} below 256 ids), as written beside a synthetic checkpoint
    (``transformers.AutoTokenizer`` loads them as a ``PreTrainedTokenizerFast``)."""
    if config.vocab_size < 256:
        return {}
    tokenizer = byte_level_tokenizer(config.vocab_size)
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast",
                        "model_max_length": config.max_position_embeddings,
                        "clean_up_tokenization_spaces": False, "add_prefix_space": False}
    return {TOKENIZER_FILE: tokenizer.to_str(pretty=False) + "\n",
            TOKENIZER_CONFIG_FILE: json.dumps(tokenizer_config, indent=2) + "\n"}
