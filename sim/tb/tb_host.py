"""cocotb tests of the host driver's RTL transport (:mod:`tellme.sim.tb.host`) on a harness of
the generated register file and a DDR model (tests/test_host_transport.py builds it): the driver
constructs an :class:`~tellme.runtime.Accelerator` through AXI4-Lite (identity, size registers,
``CONFIG_HASH``), copies the image into the simulated DDR and back, writes the bases, and starts a
call that nothing finishes, which must end in the driver's timeout naming the call.

Configuration (``run_cocotb(parameters=...)``): ``image`` (path), ``model`` and ``hardware``
(config dicts), ``memory_base``, ``memory_bytes``, ``clock_hz``, ``results`` (path of a JSON
file for the register writes the driver made).
"""

from __future__ import annotations

import cocotb
import numpy as np

from ...config import HardwareConfig
from ...runtime import Accelerator, AcceleratorError
from . import record_result, tb_config
from .host import RtlTransport, run_host
from .streams import reset_dut, start_clock


@cocotb.test()
async def test_driver_through_axi_lite(dut):
    cfg = tb_config()
    clock = start_clock(dut)
    await reset_dut(dut, clock)
    hw = HardwareConfig.from_dict(cfg["hardware"])
    transport = RtlTransport(dut, axil_prefix="s_axil_", clock=clock, reset=dut.rst, memory=dut.ddr.mem,
                             memory_base=cfg["memory_base"], memory_bytes=cfg["memory_bytes"],
                             clock_hz=cfg["clock_hz"])

    def host():
        acc = Accelerator(transport, cfg["image"], hw, timeout=2e-6, poll_interval=1e-7)
        image = acc.buffers["image"]
        want = np.fromfile(cfg["image"], dtype=np.uint8)
        image[:] = 0
        image.sync_from_device()                          # the bytes the DDR holds
        assert np.array_equal(image, want), "the image in the simulated DDR differs from the file"
        for name, buffer in acc.buffers.items():
            assert acc.regs.read64(f"{name.upper()}_BASE") == buffer.physical_address, name
        try:
            acc.prefill([1, 2, 3])
        except AcceleratorError as error:
            return str(error)
        return None

    message = await run_host(host)
    assert message is not None and message.startswith("prefill call at position 0 (3 tokens): no DONE after"), message
    record_result(cfg.get("results"), "writes", transport.writes)
