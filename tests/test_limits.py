"""Limits tested at their edges (issue #16), end to end: the prompt lengths around one prefill
chunk, and a generation that fills the context to its last KV position, on the generated top
level under Verilator against the golden model, bit for bit.

The unit-level edges live with their units: the TLMM's all-127 activations against all +1
weights (and the other int8 limits) over each engine's longest K (tests/test_tlmm.py:
test_corners of every engine set, ``limit_tiles`` at the kv260 lane count and, slow, at
bitnet-b1.58-2B-4T's K = 6912), the residual adder at the largest binary32 values
(tests/test_transpose.py, ``test_residual_limits``) and decode attention at the kv260's longest
context (tests/test_attention.py, slow).
"""

from __future__ import annotations

import numpy as np
import pytest

from tellme.config import model_preset
from tellme.gen.image import write_image
from tellme.sim.backends import generate, make_backend
from tellme.weights import random_weights

# test_top's hardware (chunks of 12, context 64): the same design, so the Verilator build is shared.
from test_top import HW


def _same_bits(got, want, what: str) -> None:
    got_bits, want_bits = np.asarray(got, np.float32).view(np.uint32), np.asarray(want, np.float32).view(np.uint32)
    assert np.array_equal(got_bits, want_bits), f"{what}: logits differ at {np.flatnonzero(got_bits != want_bits)[:8]}"


@pytest.mark.rtl
def test_prompt_and_context_edges_equal_golden(tmp_path):
    """On the tiny model with chunks of 12 and a context of 64, three generations of two tokens
    each on one design: a prompt of exactly ``prefill_chunk`` tokens (one full chunk), one of
    ``prefill_chunk + 1`` (a second chunk of one token) and one of ``max_context - 1`` (five
    full chunks and one of 3), whose decode writes the last KV position, ``max_context - 1``:
    ids and every step's logits equal the golden model's bit for bit. Then the context is full
    and one more token is refused: by the driver, and, started past the driver's checks, by
    the hardware with CONTEXT_OVERFLOW (a decode at ``max_context``, a 2-token prefill at
    ``max_context - 1``); the golden model refuses it too."""
    from tellme.sim.top_harness import run_calls
    chunk, context = HW.prefill_chunk, HW.max_context
    weights = random_weights(model_preset("tiny"), seed=16)
    rng = np.random.default_rng(16)
    prompts = [[int(i) for i in rng.integers(0, weights.config.vocab_size, n)] for n in (chunk, chunk + 1, context - 1)]
    image = tmp_path / "tiny.img"
    write_image(weights, HW, image)
    script = [{"op": "generate", "ids": p, "max_new_tokens": 2} for p in prompts] + [
        {"op": "expect_error", "call": {"op": "decode", "id": 0}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": context, "token_count": 1, "decode": True}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": context - 1, "token_count": 2}},
    ]
    run = run_calls(weights.config, HW, image, script)

    calls = [(c["kind"], c["tokens"]) for c in run.calls]
    chunks = [[("prefill", chunk)], [("prefill", chunk), ("prefill", 1)],
              [("prefill", chunk)] * (context // chunk) + [("prefill", (context - 1) % chunk)]]
    assert calls == [call for c in chunks for call in c + [("decode", 1)]], calls
    assert sum(n for _, n in calls[-len(chunks[-1]) - 1:]) == context          # the context is full
    golden = make_backend("golden", weights, HW)
    logits = run.logits()
    start = 0
    for prompt, prefills in zip(prompts, chunks):
        want_ids, want_logits = generate(golden, prompt, 2)
        got = run.calls[start + len(prefills) - 1:start + len(prefills) + 1]     # the last chunk, the decode
        assert [c["token"] for c in got] == want_ids, (len(prompt), [c["token"] for c in got], want_ids)
        for step, want in enumerate(want_logits):
            _same_bits(logits[start + len(prefills) - 1 + step], want, f"prompt of {len(prompt)}, step {step}")
        start += len(prefills) + 1

    driver, decode_past, prefill_past = run.errors
    assert driver is not None and f"{context} + 1 tokens exceed the context of {context}" in driver, driver
    for message in (decode_past, prefill_past):
        assert message is not None and "CONTEXT_OVERFLOW" in message, message
    with pytest.raises(ValueError, match="context overflow"):
        golden.decode(want_ids[-1])
