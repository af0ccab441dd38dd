"""The host driver on simulated hardware (sim/tb/host.py): its RTL transport reaches the
generated register file through cocotbext-axi's AxiLiteMaster and the DDR model's memory through
VPI, and the driver makes exactly the register writes it makes on the behavioural model."""

import json

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from tellme.config import hardware_preset, model_preset
from tellme.gen.image import write_image
from tellme.hw.axi import axi_lite_signature
from tellme.hw.ddr_model import DdrModel
from tellme.hw.regfile import RegisterFile
from tellme.runtime import Accelerator
from tellme.sim.board_model import ModelTransport, register_constants
from tellme.sim.rtl import run_cocotb
from tellme.weights import random_weights

HW = hardware_preset("sim-small").replace(prefill_chunk=8)
CONFIG = model_preset("tiny")
MEMORY_BASE, MEMORY_BYTES = 0x4000_0000, 4 << 20


class HostHarness(wiring.Component):
    """The generated register file (constants of CONFIG on HW) behind ``s_axil``, and a DDR model
    whose memory the host's buffers live in (nothing else: no call ever finishes)."""

    def __init__(self):
        self.regfile = RegisterFile(constants=register_constants(CONFIG, HW))
        self.ddr = DdrModel(size_bytes=MEMORY_BYTES, base=MEMORY_BASE, ports=1)
        super().__init__({"s_axil": In(axi_lite_signature())})

    def elaborate(self, platform):
        m = Module()
        m.submodules.regfile, m.submodules.ddr = self.regfile, self.ddr
        wiring.connect(m, wiring.flipped(self.s_axil), self.regfile.bus)
        return m


@pytest.mark.rtl
def test_driver_on_the_register_file(tmp_path):
    image = tmp_path / "tiny.img"
    write_image(random_weights(CONFIG, seed=2), HW, image)
    results = tmp_path / "results.json"
    run_cocotb(HostHarness(), name="host_harness", test_module="tellme.sim.tb.tb_host",
               parameters={"image": str(image), "model": CONFIG.to_dict(), "hardware": HW.to_dict(),
                           "memory_base": MEMORY_BASE, "memory_bytes": MEMORY_BYTES,
                           "clock_hz": HW.clock_mhz * 1e6, "results": str(results)})
    rtl_writes = [tuple(w) for w in json.loads(results.read_text())["writes"]]
    # The same driver on the behavioural model, same calls: the same register writes.
    model = ModelTransport(CONFIG, HW)
    writes = []
    write32 = model.write32
    model.write32 = lambda offset, value: (writes.append((offset, value)), write32(offset, value))
    acc = Accelerator(model, image, HW)
    acc.prefill([1, 2, 3])
    bases = {(o, v) for o, v in writes[:8]}
    # The buffer addresses differ between the two memories; everything else is equal.
    assert len(rtl_writes) == len(writes) and rtl_writes[8:] == writes[8:]
    assert len(bases) == 8
