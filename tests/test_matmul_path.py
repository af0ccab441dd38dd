"""The MATMUL step's datapath (hw/matmul_path.py) on the DDR model with a real image: act buffer,
weight streamer, TLMM, dequantisation, transpose, residual and scratch writer together, bit-exact
against the golden model for several projections, token counts, tilings and the residual."""

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from helpers import tiny_image

from tellme.contract.layouts import BufferGeometry, page_up
from tellme.gen.tiling import MatmulRates
from tellme.hw.act_buffer import write_command_layout
from tellme.hw.ddr_model import DdrModel
from tellme.hw.matmul_path import MatmulPath
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields

MEMORY_BASE = 0x1000_0000


class MatmulOnDdr(wiring.Component):
    """The path's AXI managers on a DDR model (weights on read ports 0..P-1, the residual reader
    on port P, the writer on the write port); its command and act-buffer ports outside."""

    def __init__(self, path: MatmulPath, memory_bytes: int):
        self.path = path
        g = path.geometry
        self.ddr = DdrModel(size_bytes=memory_bytes, base=MEMORY_BASE, ports=g.ports + 1,
                            data_width=g.beat_bytes * 8, latency=12, bytes_per_cycle=64)
        members = {name: member for name, member in path.signature.members.items()
                   if name in ("cmd", "weights_cmd", "done", "act_wr_cmd", "act_q", "act_scale", "act_written", "error")}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.path, m.submodules.ddr = self.path, self.ddr
        for p in range(self.path.geometry.ports):
            wiring.connect(m, self.path.weights[p], getattr(self.ddr, f"rd{p}"))
        wiring.connect(m, self.path.res_axi, getattr(self.ddr, f"rd{self.path.geometry.ports}"))
        wiring.connect(m, self.path.wr_axi, self.ddr.wr)
        for name in ("cmd", "weights_cmd", "act_wr_cmd", "act_q", "act_scale"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(self.path, name))
        m.d.comb += [self.done.eq(self.path.done), self.act_written.eq(self.path.act_written),
                     self.error.eq(self.path.error)]
        return m


@pytest.mark.rtl
@pytest.mark.parametrize("narrowed", [False, True], ids=["full", "narrowed"])
def test_matmul_path_tiny(tmp_path, narrowed):
    """``narrowed``: Dequant and the residual adder at the TLMM's output rate, as the generator
    builds them (``MatmulRates``: one token and one adder per cycle here), and SiLU gating with
    one activation lane; else T and L lanes and ReLU^2 gating on every lane."""
    model, hw, image, program = tiny_image(tmp_path, seed=11)
    rates = MatmulRates.of(model, hw.tlmm_group, hw.tlmm_lanes, hw.tlmm_tokens, hw.ew_lanes)
    assert (rates.dequant_lanes, rates.add_lanes) == (1, 1)
    act = "silu" if narrowed else "relu2"
    lanes = (dict(dequant_lanes=rates.dequant_lanes, add_lanes=rates.add_lanes, act_lanes=1) if narrowed
             else dict(act_lanes=hw.ew_lanes))
    image_bytes, scratch_bytes = program.image_bytes, program.scratch_bytes
    image_base, scratch_base = MEMORY_BASE, MEMORY_BASE + page_up(image_bytes)
    geometry = BufferGeometry.of(hw, urams_per_bank=1)
    max_inputs = max(model.hidden_size, model.intermediate_size, model.q_size)
    path = MatmulPath(geometry=geometry, tokens=hw.tlmm_tokens, lanes=hw.ew_lanes, block=8,
                      max_tokens=hw.prefill_chunk, max_inputs=max_inputs, max_rows=model.intermediate_size,
                      depth=1024, ram_style="block", act=act, **lanes)
    cases = [
        {"layer": 0, "proj": "q_proj", "tokens": 5, "tile_rows": 16, "residual": None, "dst": "q", "seed": 1},
        {"layer": 1, "proj": "down_proj", "tokens": 16, "tile_rows": 24, "residual": "h1", "dst": "h0", "seed": 2},
        {"layer": 0, "proj": "k_proj", "tokens": 1, "tile_rows": 32, "residual": None, "dst": "k", "seed": 3},
        {"layer": 1, "proj": "gate_proj", "tokens": 3, "tile_rows": 160, "residual": None, "dst": "gate", "seed": 4,
         "extreme": True},
        {"layer": 0, "proj": "o_proj", "tokens": 2, "tile_rows": 20, "residual": "h0", "dst": "h1", "seed": 5},
        {"layer": 1, "proj": "up_proj", "tokens": 7, "tile_rows": 40, "residual": None, "gate": "gate", "dst": "up",
         "seed": 6},
        {"layer": 0, "proj": "up_proj", "tokens": 16, "tile_rows": 160, "residual": None, "gate": "gate",
         "dst": "up", "seed": 7},
    ]
    run_cocotb(MatmulOnDdr(path, page_up(image_bytes) + scratch_bytes + (1 << 16)),
               name="matmul_path_narrowed" if narrowed else "matmul_path",
               test_module="tellme.sim.tb.tb_matmul_path", timeout=900,
               parameters={"model": model.to_dict(), "hardware": hw.to_dict(), "image": str(image),
                           "memory_base": MEMORY_BASE, "image_base": image_base, "scratch_base": scratch_base,
                           "command_fields": struct_fields(path.cmd.payload.shape()),
                           "weights_fields": struct_fields(path.weights_cmd.payload.shape()),
                           "act_command_fields": struct_fields(write_command_layout(max_inputs, hw.prefill_chunk)),
                           "act": act, "cases": cases})
