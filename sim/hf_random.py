"""BitNet checkpoints made by Hugging Face transformers itself (not by tellme), and their logits.

:func:`write_hf_random_checkpoint` builds a randomly initialised ``transformers.BitNetForCausalLM``
(transformers' own ``_init_weights``: every linear and the embedding normal(0, initializer_range),
RMSNorm gains 1), quantises its projections with the rule of transformers' online ``WeightQuant``
(``s_w = 1 / mean|W|``, ``trits = clamp(round(W * s_w), -1, 1)``), packs them with transformers'
``pack_weights`` into the ``BitLinear`` modules that ``replace_with_bitnet_linear`` puts in
(``quantization_config`` bitlinear / offline, the 2B4T checkpoint layout) and writes the model
with ``save_pretrained``. So the checkpoint's config.json, tensor names, packing and dtypes are
transformers', and tellme's loader (:func:`tellme.gen.checkpoint.load_checkpoint`) reads it as
any downloaded checkpoint.

:func:`hf_logits` runs ``BitNetForCausalLM.from_pretrained`` (eager attention) on one sequence
in float32 or float64: the oracle's logits and its own float32-vs-float64 spread.

Needs torch, transformers and accelerate (the ``test`` extra); imported only when called.
torch.compile (transformers' BitNet integration decorates two functions with it) is disabled
while these run: it costs ~25 s of compilation per process and computes the same thing.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def _eager():
    import torch
    import transformers
    old, verbosity = torch._dynamo.config.disable, transformers.logging.get_verbosity()
    torch._dynamo.config.disable = True
    transformers.logging.set_verbosity_error()
    try:
        yield torch, transformers
    finally:
        torch._dynamo.config.disable = old
        transformers.logging.set_verbosity(verbosity)


def write_hf_random_checkpoint(path, *, vocab_size: int, hidden_size: int, intermediate_size: int,
                               num_layers: int, num_heads: int, num_kv_heads: int, hidden_act: str,
                               head_dim: int | None = None, tie_word_embeddings: bool = True,
                               max_position_embeddings: int = 2048, seed: int = 0, **config) -> Path:
    """A random transformers BitNet model saved by ``save_pretrained`` as a packed checkpoint
    (see the module docstring). Other BitNetConfig fields (e.g. ``rope_parameters``) go in
    ``config``; left out, they are transformers' defaults. Returns the directory."""
    with _eager() as (torch, transformers):
        from transformers.integrations.bitnet import pack_weights, replace_with_bitnet_linear
        from transformers.utils.quantization_config import BitNetQuantConfig

        cfg = transformers.BitNetConfig(
            vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=intermediate_size,
            num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
            hidden_act=hidden_act, max_position_embeddings=max_position_embeddings,
            tie_word_embeddings=tie_word_embeddings, bos_token_id=1, eos_token_id=2, **config)
        if head_dim is not None:
            cfg.head_dim = head_dim
        torch.manual_seed(seed)
        model = transformers.BitNetForCausalLM(cfg).eval()
        state = {}
        for name, value in model.state_dict().items():
            if name.endswith("_proj.weight"):
                w = value.float()
                scale = 1.0 / w.abs().mean().clamp(min=1e-5)
                trits = (w * scale).round().clamp(-1, 1).to(torch.int8)
                state[name] = pack_weights(trits.clone())
                state[name[:-len("weight")] + "weight_scale"] = scale.reshape(1).to(torch.float32)
            else:
                state[name] = value
        quant = BitNetQuantConfig(linear_class="bitlinear", quantization_mode="offline")
        model = replace_with_bitnet_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quant)
        model.to_empty(device="cpu")
        result = model.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise RuntimeError(f"packed state does not fit the BitLinear model: {result}")
        model.config.quantization_config = quant
        path = Path(path)
        model.save_pretrained(path)
    return path


def hf_logits(path, token_ids, dtype: str = "float32") -> np.ndarray:
    """Logits (tokens, vocab) of transformers' BitNetForCausalLM from ``path`` on one sequence
    (no cache: one forward pass over all tokens), in ``dtype`` ("float32" or "float64"),
    returned as float64."""
    with _eager() as (torch, transformers):
        model = transformers.BitNetForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), attn_implementation="eager").eval()
        with torch.no_grad():
            out = model(torch.tensor([list(token_ids)])).logits[0]
        return out.double().numpy()


def against_transformers(model, path, prompt, steps: int) -> dict:
    """``model`` (a backend with ``reset``/``prefill``/``decode``, e.g. the golden model)
    generates ``steps`` greedy tokens after ``prompt``; transformers' BitNet from ``path`` then
    computes the logits of that same sequence (one float32 pass). Returns per step the cosine of
    the two logits vectors, whether transformers' argmax is the model's token, and
    transformers' top-2 margin over the standard deviation of its logits (how near a tie the
    greedy choice is), plus the tokens: ``{"tokens", "cosine", "same_token", "margin"}``."""
    from .backends import cosine, generate
    from .budget import margin
    tokens, logits = generate(model, prompt, steps)
    ref = hf_logits(path, list(prompt) + tokens[:-1])[len(prompt) - 1:]
    return {"tokens": tokens, "cosine": [cosine(a, b) for a, b in zip(logits, ref)],
            "same_token": [int(np.argmax(r)) == t for r, t in zip(ref, tokens)],
            "margin": [margin(r) / float(np.std(r)) for r in ref]}
