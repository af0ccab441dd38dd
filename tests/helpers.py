"""Helpers shared by several test files (``from helpers import ...``: pytest puts tests/ on the path)."""

import dataclasses

from amaranth.hdl import Module
from amaranth.lib import wiring

from tellme.config import hardware_preset, model_preset
from tellme.gen.image import write_image
from tellme.gen.program import build_program
from tellme.hw.compose import forward, prefixed_members
from tellme.weights import random_weights


#: SiLU + MHA with shapes that divide nothing evenly: hidden 160 and FFN 416 are no multiple of
#: the sim-small TLMM's group of 5 x 4 lanes, vocabulary 288 no multiple of the LM head's beat,
#: head_dim 32 with 5 heads; padding them is the generator's job.
ODD_SILU = dataclasses.replace(model_preset("tiny-silu"), name="odd-silu", hidden_size=160, intermediate_size=416,
                               vocab_size=288, head_dim=32, num_heads=5, num_kv_heads=5)


def kwargs_id(value):
    """Test id of a keyword-argument dict (``lanes=3,data_width=64``); None (pytest's own id)
    for anything else. For ``@pytest.mark.parametrize(..., ids=kwargs_id)``."""
    if isinstance(value, dict):
        # (functions by name: their repr holds an address, which differs between xdist workers)
        return ",".join(f"{key}={getattr(val, '__name__', None) if callable(val) else val!r}"
                        for key, val in value.items())
    return None


class ReadWritePair(wiring.Component):
    """A read unit (ports ``rd_*``) and a write unit (ports ``wr_*``) side by side, every member
    forwarded, for testing both with one build."""

    def __init__(self, rd: wiring.Component, wr: wiring.Component):
        self.rd, self.wr = rd, wr
        super().__init__({**prefixed_members(rd, "rd_"), **prefixed_members(wr, "wr_")})

    def elaborate(self, platform):
        m = Module()
        m.submodules.rd, m.submodules.wr = self.rd, self.wr
        forward(m, self, "rd_", self.rd)
        forward(m, self, "wr_", self.wr)
        return m


def tiny_image(tmp_path, *, seed: int, model=None):
    """The tiny model (or ``model``) on the sim-small hardware with random weights (``seed``)
    written as an image ``tmp_path / "tiny.img"``: (model, hardware, image path, program)."""
    model, hw = model or model_preset("tiny"), hardware_preset("sim-small")
    image = tmp_path / "tiny.img"
    write_image(random_weights(model, seed=seed), hw, image)
    return model, hw, image, build_program(model, hw)     # the program: region sizes of the tiny model
