"""The host driver on simulated hardware: a transport for :class:`tellme.runtime.Accelerator`
inside a cocotb test.

The driver is ordinary blocking code, as on the board; here it runs in a cocotb *bridge* thread
(``cocotb.task.bridge``) and each register access or buffer sync it makes is a coroutine run on
the simulator (``cocotb.task.resume``), so the same driver code drives the RTL and the board.

:class:`RtlTransport` gives it:

- ``read32``/``write32``: cocotbext-axi's ``AxiLiteMaster`` on the design's AXI4-Lite port;
- ``allocate``: buffers in the memory of a :class:`tellme.hw.ddr_model.DdrModel` (4 KiB aligned,
  a guard page between buffers), numpy arrays whose ``sync_to_device``/``sync_from_device``
  copy to and from the model's storage through VPI (:mod:`tellme.sim.tb.ddr`);
- ``wait(seconds)``: that much simulated time at the design's clock (at least one cycle).

:func:`run_host` starts a blocking host function in a bridge thread and awaits it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from ...contract.layouts import PAGE, page_up
from .ddr import load_ddr_image, read_ddr

__all__ = ["RtlTransport", "RtlBuffer", "run_host"]


class RtlBuffer(np.ndarray):
    """A host buffer backed by the simulated DDR: ``physical_address`` and the pynq-style syncs."""

    physical_address: int
    transport: "RtlTransport"

    def sync_to_device(self) -> None:
        self.transport._to_device(self.physical_address, bytes(self.view(np.ndarray)))

    def sync_from_device(self) -> None:
        self.view(np.ndarray)[:] = np.frombuffer(self.transport._from_device(self.physical_address, self.size),
                                                 dtype=np.uint8)


class RtlTransport:
    """``Transport`` for the driver on a simulated design.

    ``dut``: the cocotb top; ``axil_prefix``: the prefix of its AXI4-Lite port signals;
    ``memory``: the DDR model's storage handle; ``memory_base``/``memory_bytes``: the byte range
    of DDR addresses the model answers; ``clock_hz``: the design clock (for ``wait``)."""

    def __init__(self, dut, *, axil_prefix: str, clock, reset, memory, memory_base: int, memory_bytes: int,
                 clock_hz: float):
        self.dut, self.clock, self.memory = dut, clock, memory
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, axil_prefix), clock, reset)
        # One line per register access would drown a long run's log (and slow it down).
        self.axil.write_if.log.setLevel(logging.WARNING)
        self.axil.read_if.log.setLevel(logging.WARNING)
        self.memory_base, self.memory_end = memory_base, memory_base + memory_bytes
        self.next = memory_base
        self.clock_hz = clock_hz
        self.accesses: list[tuple[str, int, int]] = []

    # -- registers ------------------------------------------------------------------------------

    @resume
    async def read32(self, offset: int) -> int:
        value = await self.axil.read_dword(offset)
        self.accesses.append(("read", offset, value))
        return value

    @resume
    async def write32(self, offset: int, value: int) -> None:
        self.accesses.append(("write", offset, value))
        await self.axil.write_dword(offset, value)

    @property
    def writes(self) -> list[tuple[int, int]]:
        return [(offset, value) for kind, offset, value in self.accesses if kind == "write"]

    # -- buffers --------------------------------------------------------------------------------

    def allocate(self, nbytes: int) -> RtlBuffer:
        if nbytes < 1:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        if self.next + page_up(nbytes) > self.memory_end:
            raise MemoryError(f"the simulated DDR [{self.memory_base:#x}, {self.memory_end:#x}) has no room "
                              f"for {nbytes} more bytes at {self.next:#x}")
        buffer = np.zeros(nbytes, dtype=np.uint8).view(RtlBuffer)
        buffer.physical_address, buffer.transport = self.next, self
        self.next += page_up(nbytes) + PAGE
        return buffer

    @resume
    async def _to_device(self, address: int, data: bytes) -> None:
        load_ddr_image(self.memory, data, address - self.memory_base)

    @resume
    async def _from_device(self, address: int, length: int) -> bytes:
        return read_ddr(self.memory, address - self.memory_base, length)

    # -- time -----------------------------------------------------------------------------------

    @resume
    async def wait(self, seconds: float) -> None:
        await ClockCycles(self.clock, max(1, math.ceil(seconds * self.clock_hz)))


async def run_host(function, *args, **kwargs):
    """Run the blocking ``function(*args, **kwargs)`` (the host program) in a bridge thread."""
    return await bridge(function)(*args, **kwargs)
