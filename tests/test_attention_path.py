"""The ATTENTION step's datapath (hw/attention_path.py) on the DDR model with a real image: q/k/v
scratch rows through RoPE, the per-head quantiser, the load assembler and prefill attention,
the KV cache built up over a sequence of passes (a first chunk, a second one starting inside a
tile, GQA passes without the append, decode steps across a tile boundary), the ``attn`` columns
and the KV cache bytes bit-exact with the step machine (``sim/machine.py``). Every manager of
the path shares one DDR port (AXI arbiters) with random stalls on every AXI channel."""

import dataclasses

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from tellme.config import HardwareConfig, hardware_preset, model_preset
from tellme.contract.layouts import page_up
from tellme.gen.image import write_image
from tellme.gen.program import build_program
from tellme.hw.attention_path import AttentionPath
from tellme.hw.axi_arbiter import AxiReadArbiter, AxiWriteArbiter
from tellme.hw.ddr_model import DdrModel
from tellme.sim.axi_stall import STALL_CHANNELS, connect_stalled
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields
from tellme.weights import random_weights

MEMORY_BASE = 0x1000_0000
READ_MANAGERS = ("qkv_axi", "cos_axi", "sin_axi", "kv_read_axi")
WRITE_MANAGERS = ("kv_write_axi", "wr_axi")
class AttentionOnDdr(wiring.Component):
    """The path's four read managers on one DDR read port and its two write managers on the write
    port, through arbiters and a stall gate driven by ``stall`` (one bit per AXI channel)."""

    def __init__(self, path: AttentionPath, memory_bytes: int):
        self.path = path
        self.ddr = DdrModel(size_bytes=memory_bytes, base=MEMORY_BASE, ports=1, latency=12)
        self.rd_arb = AxiReadArbiter(managers=len(READ_MANAGERS))
        self.wr_arb = AxiWriteArbiter(managers=len(WRITE_MANAGERS))
        members = {name: member for name, member in path.signature.members.items() if name in ("cmd", "done", "error")}
        super().__init__({**members, "stall": In(len(STALL_CHANNELS))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.path, m.submodules.ddr = self.path, self.ddr
        m.submodules.rd_arb, m.submodules.wr_arb = self.rd_arb, self.wr_arb
        for i, name in enumerate(READ_MANAGERS):
            wiring.connect(m, getattr(self.path, name), self.rd_arb.mgr[i])
        for i, name in enumerate(WRITE_MANAGERS):
            wiring.connect(m, getattr(self.path, name), self.wr_arb.mgr[i])
        connect_stalled(m, self.rd_arb.axi, self.ddr.rd0, self.stall)
        connect_stalled(m, self.wr_arb.axi, self.ddr.wr, self.stall)
        wiring.connect(m, wiring.flipped(self.cmd), self.path.cmd)
        m.d.comb += [self.done.eq(self.path.done), self.error.eq(self.path.error)]
        return m


def _run(tmp_path, model, hw: HardwareConfig, calls, *, name: str, seed: int):
    image = tmp_path / f"{model.name}.img"
    write_image(random_weights(model, seed=seed), hw, image)
    program = build_program(model, hw)
    image_bytes, scratch_bytes = page_up(program.image_bytes), page_up(program.scratch_bytes)
    path = AttentionPath(head_dim=model.head_dim, heads=hw.attn_heads_parallel, lanes=hw.ew_lanes,
                         tile=hw.attn_tile, chunk=hw.prefill_chunk, data_width=hw.axi_data_width,
                         attn_format=hw.attn_format)
    # A power of two (1 MiB for both tiny models), so that equal paths share one build.
    memory = 1 << (image_bytes + scratch_bytes + page_up(program.kv_bytes) - 1).bit_length()
    run_cocotb(AttentionOnDdr(path, memory), name=name, test_module="tellme.sim.tb.tb_attention_path",
               timeout=900, public=True,  # the testbench watches the path's own AXI ports
               parameters={"model": model.to_dict(), "hardware": hw.to_dict(), "image": str(image),
                           "memory_base": MEMORY_BASE, "image_base": MEMORY_BASE,
                           "scratch_base": MEMORY_BASE + image_bytes,
                           "kv_base": MEMORY_BASE + image_bytes + scratch_bytes,
                           "command_fields": struct_fields(path.cmd.payload.shape()), "calls": calls,
                           "stall": 0.25})


def test_parameters_checked():
    with pytest.raises(ValueError, match="head_dim"):
        AttentionPath(head_dim=12, heads=1, lanes=4, tile=8, chunk=16)
    with pytest.raises(ValueError, match="heads"):
        AttentionPath(head_dim=16, heads=0, lanes=4, tile=8, chunk=16)


@pytest.mark.rtl
def test_attention_path_tiny(tmp_path):
    """GQA (4 query heads, 2 kv heads), one query head per pass: a first chunk of 11 tokens with
    extreme rows, a second of 9 from position 11 (inside a tile), each over both kv heads with
    the second query head's pass not appending; then decode steps at positions 20..24 (the tile
    boundary at 24)."""
    model, hw = model_preset("tiny"), hardware_preset("sim-small")
    both = [{"layer": 0, "kv_head": kv, "first": first} for kv in (0, 1) for first in (0, 1)]
    calls = [{"pos0": 0, "tokens": 11, "passes": both, "seed": 1, "extreme": True},
             {"pos0": 11, "tokens": 9, "passes": both, "seed": 2},
             *({"pos0": p, "tokens": 1, "passes": both[:2], "seed": 3 + p} for p in range(20, 25))]
    _run(tmp_path, model, hw, calls, name="attention_path", seed=21)


@pytest.mark.rtl
def test_attention_path_tiny_silu(tmp_path):
    """MHA (4 heads, 4 kv heads): every pass appends; a chunk of 16 tokens (a whole chunk, two
    tiles), then one of 3 tokens and a decode step, on two kv heads of layer 1."""
    model, hw = model_preset("tiny-silu"), hardware_preset("sim-small")
    passes = [{"layer": 1, "kv_head": kv, "first": 0} for kv in (1, 3)]
    calls = [{"pos0": 0, "tokens": 16, "passes": passes, "seed": 11, "extreme": True},
             {"pos0": 16, "tokens": 3, "passes": passes, "seed": 12},
             {"pos0": 19, "tokens": 1, "passes": passes, "seed": 13}]
    _run(tmp_path, model, hw, calls, name="attention_path", seed=22)


@pytest.mark.rtl
@pytest.mark.slow
def test_attention_path_fp32(tmp_path):
    """(Slow: the fp32 path, the default, runs in `make test` inside every top-level test.)
    The fp32 format (``attn_format``: float32 K/V rows, no scale records, float32 queries, no
    quantiser): GQA with one query head per pass as in the int8 test, a first chunk of 11
    tokens with extreme rows, a second of 9 inside a tile, decode steps across the tile boundary
    at 24; the KV region (4 hd bytes per row) bit-exact with the step machine's."""
    model, hw = model_preset("tiny"), hardware_preset("sim-small").replace(attn_format="fp32")
    both = [{"layer": 0, "kv_head": kv, "first": first} for kv in (0, 1) for first in (0, 1)]
    calls = [{"pos0": 0, "tokens": 11, "passes": both, "seed": 41, "extreme": True},
             {"pos0": 11, "tokens": 9, "passes": both, "seed": 42},
             *({"pos0": p, "tokens": 1, "passes": both[:2], "seed": 43 + p} for p in (20, 23, 24))]
    _run(tmp_path, model, hw, calls, name="attention_path_fp32", seed=24)


@pytest.mark.rtl
@pytest.mark.slow
def test_attention_path_tiny_two_heads(tmp_path):
    """Two query heads per pass (``attn_heads_parallel`` 2: the whole GQA group of a kv head in
    one pass, two attention cores): chunks of 11 and 9 tokens and two decode steps over both kv
    heads, each kv head's pass repeated without the append."""
    model, hw = model_preset("tiny"), dataclasses.replace(hardware_preset("sim-small"), attn_heads_parallel=2)
    passes = [{"layer": 0, "kv_head": kv, "first": 0, **extra} for kv in (0, 1) for extra in ({}, {"write_kv": False})]
    calls = [{"pos0": 0, "tokens": 11, "passes": passes, "seed": 31, "extreme": True},
             {"pos0": 11, "tokens": 9, "passes": passes, "seed": 32},
             *({"pos0": p, "tokens": 1, "passes": passes[:2], "seed": 33 + p} for p in (20, 23, 24))]
    _run(tmp_path, model, hw, calls, name="attention_path_h2", seed=23)
