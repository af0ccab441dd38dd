"""Simulation backends behind one interface, and greedy generation on any of them.

A backend has ``reset()``, ``prefill(ids) -> logits`` and ``decode(id) -> logits`` (logits of
the last token, float32 (vocab,)). ``float`` is the Hugging Face-equivalent reference,
``golden`` the hardware-exact model, ``program`` the sequencer program run on DDR bytes by the
numpy step machine (:mod:`tellme.sim.machine`; bit-exact with ``golden``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..config import HardwareConfig
from ..weights import ModelWeights
from .golden import GoldenModel, Trace
from .reference import ReferenceModel

BACKENDS = ("float", "golden", "program")


def make_backend(name: str, weights: ModelWeights, hw: HardwareConfig):
    if name == "float":
        return ReferenceModel(weights, max_context=hw.max_context)
    if name == "golden":
        return GoldenModel(weights, hw)
    if name == "program":
        from .machine import ProgramBackend
        return ProgramBackend(weights, hw)
    raise ValueError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")


def generate(model, prompt_ids, max_new_tokens: int,
             on_token: Callable[[int, int], None] | None = None) -> tuple[list[int], list[np.ndarray]]:
    """Greedy generation: prefill the prompt, then decode; returns (generated ids, the logits each
    id was chosen from)."""
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0")
    if len(prompt_ids) == 0:
        raise ValueError("the prompt is empty")
    model.reset()
    generated, step_logits = [], []
    if max_new_tokens == 0:
        return generated, step_logits
    logits = model.prefill(list(prompt_ids))
    for step in range(max_new_tokens):
        token = int(np.argmax(logits))
        generated.append(token)
        step_logits.append(logits)
        if on_token is not None:
            on_token(step, token)
        if step + 1 < max_new_tokens:
            logits = model.decode(token)
    return generated, step_logits


def cosine(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    den = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / den) if den else float(np.array_equal(a, b))


def compare(weights: ModelWeights, hw: HardwareConfig, prompt_ids) -> dict:
    """Golden vs float on one prompt (prefill in one chunk per hw.prefill_chunk): per-layer
    hidden-state cosine over all prompt tokens, and the last token's logits cosine and argmax."""
    ids = list(prompt_ids)
    if len(ids) > hw.prefill_chunk:
        raise ValueError(f"compare takes at most prefill_chunk={hw.prefill_chunk} prompt tokens")
    golden, ref = GoldenModel(weights, hw), ReferenceModel(weights, max_context=hw.max_context)
    tg, tr = Trace(), Trace()
    lg, lr = golden.prefill(ids, tg), ref.prefill(ids, tr)
    layers = []
    for i, (a, b) in enumerate(zip(tg.layers, tr.layers)):
        layers.append({"layer": i, **{k: cosine(a[k], b[k]) for k in ("q", "k", "v", "after_attn", "ffn_act", "hidden")}})
    return {"layers": layers, "logits_cosine": cosine(lg, lr),
            "golden_argmax": int(np.argmax(lg)), "float_argmax": int(np.argmax(lr))}
