"""Shared fixtures, and the order tests run in."""

import pytest

#: Modules whose RTL tests simulate for minutes (the whole accelerator, the attention path):
#: they start first, so that under xdist both workers finish together instead of one running
#: a long simulation alone after everything else is done.
LONG_MODULES = ("test_top", "test_attention_path", "test_attn_prefill", "test_step_paths", "test_limits")


def pytest_collection_modifyitems(config, items):
    def rank(item):
        if item.get_closest_marker("rtl") is None:
            return (2, 0)
        name = item.module.__name__
        return (0, LONG_MODULES.index(name)) if name in LONG_MODULES else (1, 0)
    items.sort(key=rank)                 # stable: the order within a rank stays as collected


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
