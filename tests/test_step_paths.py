"""The EMBED and LM_HEAD step datapaths (hw/embed_path.py, hw/lm_head_path.py) on the DDR model
with a real tiny image, bit-exact against the golden model.

One design holds the paths under test (EMBED and LM_HEAD on the "tiny" image, and a second
LM_HEAD of half the lanes, whose logits beats are half an AXI beat), so the file costs one
Verilator build. EMBED's two readers and the LM heads' share one DDR read port through an AXI
read arbiter and the three writers share the write port, as the top level shares its HP ports.
The testbench (sim/tb/tb_step_paths.py) throttles the DDR's bandwidth at random every cycle.
(The gated FFN activation is part of the MATMUL path: tests/test_matmul_path.py.)
"""

import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from tellme.config import hardware_preset, model_preset
from tellme.contract.layouts import page_up
from tellme.gen.image import write_image
from tellme.gen.program import build_program
from tellme.hw.axi_arbiter import AxiReadArbiter, AxiWriteArbiter
from tellme.hw.compose import forward, prefixed_members
from tellme.hw.ddr_model import DdrModel
from tellme.hw.embed_path import EmbedPath
from tellme.hw.lm_head_path import LmHeadPath
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields
from tellme.weights import random_weights

MEMORY_BASE = 0x1000_0000
#: Ports of each path brought out of the harness (the AXI managers stay inside).
OUTSIDE = {"embed": ("cmd", "done", "error", "bad_id"),
           "head": ("cmd", "x", "scale", "done", "token", "error"),
           "head2": ("cmd", "x", "scale", "done", "token", "error")}


class StepPathsOnDdr(wiring.Component):
    """The paths on one configurable DDR model: the read port = EMBED's ids and rows readers and
    the two LM heads', the write port = the three writers (each port through an AXI arbiter). Ports: ``<path>_<member>`` for the
    members of :data:`OUTSIDE`, ``<path>_aw`` and ``<path>_b`` (the path's AW and B handshakes),
    and ``ddr_cfg_latency``, ``ddr_cfg_rate``."""

    def __init__(self, paths: dict, memory_bytes: int):
        self.paths = paths
        self.ddr = DdrModel(size_bytes=memory_bytes, base=MEMORY_BASE, ports=1, latency=20, configurable=True)
        self.read_arbiters = [AxiReadArbiter(managers=4)]
        self.write_arbiter = AxiWriteArbiter(managers=3)
        members = prefixed_members(self.ddr, "ddr_", ("cfg_latency", "cfg_rate"))
        for key, path in paths.items():
            members.update(prefixed_members(path, f"{key}_", OUTSIDE[key]))
            # the write manager's AW and B handshakes, for the testbench to count
            members.update({f"{key}_aw": Out(1), f"{key}_b": Out(1)})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        p = self.paths
        m.submodules.ddr = self.ddr
        for key, path in p.items():
            m.submodules[key] = path
            forward(m, self, f"{key}_", path, OUTSIDE[key])
        forward(m, self, "ddr_", self.ddr, ("cfg_latency", "cfg_rate"))
        readers = [(p["embed"].ids_axi, p["embed"].rows_axi, p["head"].head_axi, p["head2"].head_axi)]
        for index, (arbiter, managers) in enumerate(zip(self.read_arbiters, readers)):
            m.submodules[f"rd_arbiter{index}"] = arbiter
            for k, manager in enumerate(managers):
                wiring.connect(m, manager, arbiter.mgr[k])
            wiring.connect(m, arbiter.axi, getattr(self.ddr, f"rd{index}"))
        m.submodules.wr_arbiter = self.write_arbiter
        for k, key in enumerate(("embed", "head", "head2")):
            axi = p[key].wr_axi
            wiring.connect(m, axi, self.write_arbiter.mgr[k])
            m.d.comb += [getattr(self, f"{key}_aw").eq(axi.awvalid & axi.awready),
                         getattr(self, f"{key}_b").eq(axi.bvalid & axi.bready)]
        wiring.connect(m, self.write_arbiter.axi, self.ddr.wr)
        return m


def test_step_path_parameters():
    """Parameters are checked at construction; the command layouts carry the documented fields."""
    with pytest.raises(ValueError, match="row_bytes must be a multiple of 32"):
        EmbedPath(lanes=8, row_bytes=48, vocab=256, max_tokens=16)
    with pytest.raises(ValueError, match="vocab"):
        EmbedPath(lanes=4, row_bytes=256, vocab=0, max_tokens=16)
    with pytest.raises(ValueError, match="max_cols"):
        LmHeadPath(lanes=4, max_rows=256, max_cols=1 << 20)
    embed = EmbedPath(lanes=2, row_bytes=256, vocab=200, max_tokens=16)
    assert [name for name, _ in embed.cmd.payload.shape()] == ["ids", "tokens", "table", "dst", "row_stride"]
    assert embed.ids_beats == 8                      # 64 bytes of ids in 8-byte stream beats
    head = LmHeadPath(lanes=2, max_rows=256, max_cols=64)
    assert [name for name, _ in head.cmd.payload.shape()] == ["stripe_base", "stripe_bytes", "rows_base", "scales_base",
                                                              "rows", "cols", "logits"]
    # 2 lanes per beat, 128-bit AXI beats: logits padded to whole AXI beats (4 floats)
    assert [head.logits_bytes(rows) for rows in (1, 2, 3, 4, 5, 256)] == [16, 16, 16, 16, 32, 1024]
    for path in (embed, head):
        Fragment.get(path, None)                     # they elaborate (and are used)


@pytest.mark.rtl
def test_step_paths_tiny(tmp_path):
    """The paths' cocotb tests in one simulation of one build (the design's conversion and
    build dominate the run time): ``test_embed`` (ids 0 and vocab-1, repeated ids, 1 to 16 tokens, table rows with subnormals and
    NaNs; ids not below the vocabulary pulse ``bad_id``, once each) and ``test_lm_head`` (x_q/d_x of golden.rmsnorm_quantize with the image's final_norm;
    a tied maximum where the first index wins, vocabularies that are not whole beats, calls back
    to back, and a head of half the lanes padding its logits to whole AXI beats)."""
    hw = hardware_preset("sim-small")
    model = model_preset("tiny")
    image = tmp_path / "tiny.img"
    write_image(random_weights(model, seed=21), hw, image)
    tiny = build_program(model, hw)
    # memory: the tiny image, its scratch region, the I/O region
    layout, offset = {}, 0
    for name, size in (("image", tiny.image_bytes), ("scratch", tiny.scratch_bytes), ("io", tiny.io.size)):
        layout[name] = MEMORY_BASE + offset
        offset += page_up(size)
    L, T = hw.ew_lanes, hw.prefill_chunk
    paths = {"embed": EmbedPath(lanes=L, row_bytes=4 * model.hidden_size, vocab=model.vocab_size, max_tokens=T),
             "head": LmHeadPath(lanes=L, max_rows=model.vocab_size, max_cols=model.hidden_size),
             # half the lanes: two logits beats per AXI beat, so the path pads whole AXI beats
             "head2": LmHeadPath(lanes=L // 2, max_rows=16, max_cols=model.hidden_size)}
    run_cocotb(StepPathsOnDdr(paths, offset), name="step_paths", test_module="tellme.sim.tb.tb_step_paths",
               testcase=["test_embed", "test_lm_head"], timeout=600,
               parameters={"model": model.to_dict(), "hardware": hw.to_dict(),
                           "image": str(image), "memory_base": MEMORY_BASE, "layout": layout,
                           "fields": {key: struct_fields(path.cmd.payload.shape()) for key, path in paths.items()}})


@pytest.mark.parametrize("ports", [1, 4])
def test_lm_head_path_writes_the_logits_it_gets(ports):
    """The writer's command covers exactly the logits LmHead gives (``logits_bytes``), over one
    port or four (a loop over the ports once shadowed the padding unit: 2 beats too many, and
    the call never ended). Amaranth's simulator, the command alone."""
    from amaranth.sim import Simulator
    for rows in (1, 4, 16, 100, 256):
        path = LmHeadPath(lanes=4, max_rows=256, max_cols=64, ports=ports, aligned_rows=ports > 1)
        sim = Simulator(path)
        sim.add_clock(1e-6)
        seen = {}

        async def bench(ctx, rows=rows, path=path, seen=seen):
            ctx.set(path.cmd.payload.rows, rows)
            ctx.set(path.cmd.payload.cols, 64)
            ctx.set(path.cmd.valid, 1)
            await ctx.tick().until(path.cmd.ready)
            ctx.set(path.cmd.valid, 0)
            await ctx.tick().until(path.writer.cmd.valid)
            seen["bytes"] = ctx.get(path.writer.cmd.payload.row_bytes)

        sim.add_testbench(bench)
        sim.run_until(2e-5)
        assert seen["bytes"] == path.logits_bytes(rows), (ports, rows, seen)
