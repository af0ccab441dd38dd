"""The NORM_QUANT step's datapath (hw/norm_quant_path.py) on the DDR model with a real image:
scratch rows and the image's gain rows through NormQuant, bit-exact with the golden model."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from helpers import ODD_SILU, tiny_image

from tellme.contract.layouts import page_up
from tellme.hw.ddr_model import DdrModel
from tellme.hw.act_buffer import write_command_layout
from tellme.hw.norm_quant_path import NormQuantPath
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields

MEMORY_BASE = 0x1000_0000


class NormQuantOnDdr(wiring.Component):
    def __init__(self, path: NormQuantPath, memory_bytes: int):
        self.path = path
        self.ddr = DdrModel(size_bytes=memory_bytes, base=MEMORY_BASE, ports=2, latency=12)
        super().__init__({name: member for name, member in path.signature.members.items()
                          if name in ("cmd", "act_cmd", "q", "scale", "error")})

    def elaborate(self, platform):
        m = Module()
        m.submodules.path, m.submodules.ddr = self.path, self.ddr
        wiring.connect(m, self.path.rows_axi, self.ddr.rd0)
        wiring.connect(m, self.path.gain_axi, self.ddr.rd1)
        wiring.connect(m, wiring.flipped(self.cmd), self.path.cmd)
        for name in ("act_cmd", "q", "scale"):
            wiring.connect(m, getattr(self.path, name), wiring.flipped(getattr(self, name)))
        m.d.comb += self.error.eq(self.path.error)
        return m


@pytest.mark.rtl
@pytest.mark.parametrize("model", [None, ODD_SILU], ids=["tiny", "odd"])  # rows of 160 and 416
def test_norm_quant_path(tmp_path, model):
    model, hw, image, program = tiny_image(tmp_path, seed=12, model=model)
    image_bytes, scratch_bytes = program.image_bytes, program.scratch_bytes
    max_dim = max(model.hidden_size, model.intermediate_size, model.q_size)
    path = NormQuantPath(lanes=hw.ew_lanes, max_dim=max_dim, max_tokens=hw.prefill_chunk)
    cases = [
        {"src": "h0", "gain": "layers.0.input_norm", "tokens": 5, "seed": 1},
        {"src": "attn", "gain": None, "tokens": 3, "seed": 2, "zeros": True},
        {"src": "gate", "gain": "layers.1.ffn_sub_norm", "tokens": 16, "seed": 3},
        {"src": "h1", "gain": "layers.1.post_attention_norm", "tokens": 1, "seed": 4},
        {"src": "h0", "gain": "final_norm", "tokens": 2, "seed": 5, "zeros": True},
    ]
    run_cocotb(NormQuantOnDdr(path, page_up(image_bytes) + scratch_bytes), name="norm_quant_path",
               test_module="tellme.sim.tb.tb_norm_quant_path", timeout=900,
               parameters={"model": model.to_dict(), "hardware": hw.to_dict(), "image": str(image),
                           "memory_base": MEMORY_BASE, "image_base": MEMORY_BASE,
                           "scratch_base": MEMORY_BASE + page_up(image_bytes),
                           "command_fields": struct_fields(path.cmd.payload.shape()),
                           "act_fields": struct_fields(write_command_layout(max_dim, hw.prefill_chunk)), "cases": cases})
