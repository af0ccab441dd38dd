"""The float reference against Hugging Face transformers' BitNetForCausalLM (the oracle), on tiny
random models in both checkpoint styles, loaded from the same synthetic checkpoint."""

import numpy as np
import pytest

from tellme.gen.checkpoint import load_checkpoint
from tellme.gen.synthetic import make_synthetic
from tellme.sim.backends import cosine, generate
from tellme.sim.reference import ReferenceModel

pytestmark = pytest.mark.oracle

PROMPT = [3, 141, 59, 26, 5, 35, 89, 79, 32, 38, 46, 26]


def hf_model(hf, path):
    torch, transformers = hf
    model = transformers.BitNetForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return model.eval()


@pytest.mark.parametrize("preset, style, seed", [("tiny", "packed", 0), ("tiny", "packed", 5),
                                                 ("tiny-silu", "full", 0), ("tiny-silu", "full", 5)])
def test_float_reference_matches_transformers(hf, tmp_path, preset, style, seed):
    torch = hf[0]
    path = tmp_path / "ckpt"
    make_synthetic(preset, path, style=style, seed=seed)
    weights = load_checkpoint(path)
    ours = ReferenceModel(weights)
    model = hf_model(hf, path)
    with torch.no_grad():
        hf_logits = model(torch.tensor([PROMPT])).logits[0].numpy()
    our_logits = ours.forward(PROMPT, all_logits=True)
    for pos in range(len(PROMPT)):
        assert cosine(our_logits[pos], hf_logits[pos]) >= 0.9999, pos
    assert np.array_equal(our_logits.argmax(-1), hf_logits.argmax(-1))
    # greedy generation with the KV cache on both sides
    with torch.no_grad():
        hf_ids = model.generate(torch.tensor([PROMPT]), max_new_tokens=8, do_sample=False,
                             pad_token_id=0)[0, len(PROMPT):].tolist()
    our_ids, step_logits = generate(ours, PROMPT, 8)
    assert our_ids == hf_ids
    assert len(step_logits) == 8 and step_logits[0].shape == (weights.config.vocab_size,)
