"""Shared fixtures."""

import pytest


@pytest.fixture(scope="session")
def hf():
    """(torch, transformers) as the reference oracle, skipped where they are not installed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    # integrations/bitnet.py decorates unpack_weights and BitLinear.activation_quant with
    # @torch.compile: it works on CPU here (needs a C compiler) but costs ~25 s of Inductor
    # compilation per process; eager mode computes the same thing.
    old, verbosity = torch._dynamo.config.disable, transformers.logging.get_verbosity()
    torch._dynamo.config.disable = True
    transformers.logging.set_verbosity_error()
    yield torch, transformers
    torch._dynamo.config.disable = old
    transformers.logging.set_verbosity(verbosity)
