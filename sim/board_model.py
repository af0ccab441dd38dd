"""A behavioural model of the accelerator at its register map, for the host side.

:class:`DdrMemory` stands for the board's physical memory: ``allocate`` hands out 4 KiB-aligned
buffers (numpy arrays with a ``physical_address``, like ``pynq.allocate``'s). :class:`BoardModel`
implements the register map of docs section 7 (:data:`tellme.contract.regmap.REGISTER_MAP`:
read-only constants, RW words, write-1-to-clear status, self-clearing control) and, on
``START``, checks the call as the hardware does (``BAD_TOKEN_COUNT``, ``CONTEXT_OVERFLOW``,
``MISALIGNED_BASE``, ``BAD_TOKEN_ID``, bases outside any buffer -> ``AXI_READ``; a call ends
inside its START, so ``START_WHILE_BUSY`` never arises) and runs the sequencer program
on the buffers at the base registers with :class:`tellme.sim.machine.StepMachine`, which is
bit-exact with the golden model. It counts no cycles (``CYCLES`` and ``STALL`` read 0).

:class:`ModelTransport` puts the two behind the host driver's transport interface, so
:class:`tellme.runtime.Accelerator` runs unchanged on this model, on the RTL in simulation and on
the board; :func:`fake_pynq_module` builds a stand-in ``pynq`` module over the same model that
records every call, to test the driver's pynq transport off the board.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field

import numpy as np

from ..config import HardwareConfig, ModelConfig
from ..contract.layouts import PAGE, page_up
from ..contract.regmap import ERROR_BITS, REGISTER_MAP, RegisterMap, register_constants
from ..gen.program import Program, build_program
from .machine import StepMachine

__all__ = ["DdrBuffer", "DdrMemory", "BoardModel", "ModelTransport", "fake_pynq_module", "standin_pynq_module",
           "STANDIN_PYNQ_SHIM", "register_constants"]


class DdrBuffer(np.ndarray):
    """A uint8 buffer in :class:`DdrMemory`: a numpy array with ``physical_address`` and the
    ``sync_to_device``/``sync_from_device``/``freebuffer`` methods of a ``pynq`` buffer (the model
    shares one memory, so syncing does nothing but count)."""

    physical_address: int
    syncs: list

    def sync_to_device(self) -> None:
        self.syncs.append(("to_device", self.physical_address))

    def sync_from_device(self) -> None:
        self.syncs.append(("from_device", self.physical_address))

    def freebuffer(self) -> None:
        self.syncs.append(("free", self.physical_address))


class DdrMemory:
    """Physical memory as 4 KiB-aligned buffers from ``base`` up."""

    def __init__(self, base: int = 0x4000_0000):
        self.next = base
        self.buffers: list[DdrBuffer] = []
        self.syncs: list[tuple[str, int]] = []

    def allocate(self, nbytes: int) -> DdrBuffer:
        if nbytes < 1:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        buffer = np.zeros(nbytes, dtype=np.uint8).view(DdrBuffer)
        buffer.physical_address, buffer.syncs = self.next, self.syncs
        self.next += page_up(nbytes) + PAGE          # a guard page between buffers
        self.buffers.append(buffer)
        return buffer

    def view(self, address: int, nbytes: int) -> np.ndarray | None:
        """The bytes [address, address + nbytes) if they lie inside one buffer, else None."""
        for buffer in self.buffers:
            offset = address - buffer.physical_address
            if 0 <= offset and offset + nbytes <= buffer.size:
                return buffer[offset:offset + nbytes].view(np.ndarray)
        return None


@dataclass
class BoardModel:
    """The accelerator of ``program`` at its register map, over ``memory``."""

    program: Program
    memory: DdrMemory
    regmap: RegisterMap = REGISTER_MAP
    words: dict[int, int] = field(default_factory=dict)
    calls: int = 0

    def __post_init__(self):
        for reg in self.regmap.registers:
            self.words[reg.offset] = sum(f.reset << f.lsb for f in reg.fields)
        for key, value in register_constants(self.program.model, self.program.hardware).items():
            name, field_name = key.split(".")
            f = next(f for f in self.regmap[name].fields if f.name == field_name)
            self.words[self.regmap[name].offset] = (self.words[self.regmap[name].offset] & ~f.mask) | (value << f.lsb)
        self._machine: tuple[tuple[int, int, int, int], StepMachine] | None = None

    def _field(self, name: str, field_name: str) -> int:
        return self.regmap.decode(name, self.words[self.regmap[name].offset])[field_name]

    def _word64(self, name: str) -> int:
        return self.words[self.regmap[name + "_LO"].offset] | (self.words[self.regmap[name + "_HI"].offset] << 32)

    def read32(self, offset: int) -> int:
        return self.words.get(offset, 0)

    def write32(self, offset: int, value: int) -> None:
        reg = next((r for r in self.regmap.registers if r.offset == offset), None)
        if reg is None:
            return                                        # unmapped: ignored
        word = self.words[offset]
        for f in reg.fields:
            bits = (value >> f.lsb) & ((1 << f.width) - 1)
            if f.access == "rw":
                word = (word & ~f.mask) | (bits << f.lsb)
            elif f.access == "w1c" and bits:
                word &= ~(bits << f.lsb)
        self.words[offset] = word
        if reg.name == "CONTROL":
            control = self.regmap.decode("CONTROL", value)
            if control["SOFT_RESET"]:
                self._set_status(busy=0)
            if control["START"]:
                self._start()

    def _set_status(self, *, busy: int | None = None, done: int | None = None, error: int | None = None) -> None:
        status = self.regmap["STATUS"]
        word = self.words[status.offset]
        for name, value in (("BUSY", busy), ("DONE", done), ("ERROR", error)):
            if value is not None:
                f = next(f for f in status.fields if f.name == name)
                word = (word & ~f.mask) | (value << f.lsb)
        self.words[status.offset] = word

    def _fail(self, *errors: str) -> None:
        self.words[self.regmap["ERR_CODE"].offset] = sum(1 << ERROR_BITS.index(e) for e in errors)
        self._set_status(busy=0, error=1)

    def _start(self) -> None:
        self.calls += 1
        hw, program = self.program.hardware, self.program
        self.words[self.regmap["ERR_CODE"].offset] = 0
        count, pos = self._field("TOKEN_COUNT", "COUNT"), self._field("SEQ_POS", "POS")
        decode = self._field("MODE", "DECODE")
        if count == 0 or count > hw.prefill_chunk or (decode and count != 1):
            return self._fail("BAD_TOKEN_COUNT")
        if pos + count > hw.max_context:
            return self._fail("CONTEXT_OVERFLOW")
        bases = tuple(self._word64(n) for n in ("IMAGE_BASE", "KV_BASE", "SCRATCH_BASE", "IO_BASE"))
        if any(b % PAGE for b in bases):
            return self._fail("MISALIGNED_BASE")
        sizes = (program.image_bytes, program.kv_bytes, program.scratch_bytes, program.io.size)
        regions = [self.memory.view(b, n) for b, n in zip(bases, sizes)]
        if any(r is None for r in regions):
            # The hardware would read (or write) outside the host's buffers: a bus error.
            return self._fail("AXI_READ")
        if self._machine is None or self._machine[0] != bases:
            image, kv, scratch, io = regions
            self._machine = (bases, StepMachine(program, image, kv=kv, scratch=scratch, io=io))
        machine = self._machine[1]
        io_region = regions[3]
        ids = io_region[program.io.ids_offset:program.io.ids_offset + 4 * count].view("<u4")
        if np.any(ids >= program.model.vocab_size):
            return self._fail("BAD_TOKEN_ID")
        # The model copies nothing: StepMachine reads and writes the buffers in place.
        _, token = machine.call(ids.astype(np.int64), pos)
        self.words[self.regmap["RESULT_TOKEN"].offset] = token
        self._set_status(busy=0, done=1)


class ModelTransport:
    """The host driver's transport over a :class:`BoardModel` (register access and buffers)."""

    def __init__(self, model: ModelConfig, hw: HardwareConfig):
        self.memory = DdrMemory()
        self.board = BoardModel(build_program(model, hw), self.memory)

    def read32(self, offset: int) -> int:
        return self.board.read32(offset)

    def write32(self, offset: int, value: int) -> None:
        self.board.write32(offset, value)

    def allocate(self, nbytes: int) -> DdrBuffer:
        return self.memory.allocate(nbytes)

    def wait(self, seconds: float) -> None:
        """Time passing between polls: the model finishes a call inside START."""


def fake_pynq_module(model: ModelConfig, hw: HardwareConfig, ip_name: str = "tellme_0") -> types.ModuleType:
    """A stand-in for the ``pynq`` package over a :class:`BoardModel`: ``Overlay(path)`` (with the
    accelerator as attribute ``ip_name``, its ``mmio`` reading and writing the registers) and
    ``allocate(shape, dtype)``. Every call lands in the module's ``calls`` list."""
    module = types.ModuleType("pynq")
    transport = ModelTransport(model, hw)
    calls: list[tuple] = []

    class MMIO:
        def read(self, offset: int, length: int = 4) -> int:
            value = transport.read32(offset)
            calls.append(("mmio.read", offset, value))
            return value

        def write(self, offset: int, value: int) -> None:
            calls.append(("mmio.write", offset, int(value)))
            transport.write32(offset, int(value))

    class Overlay:
        def __init__(self, bitfile: str, download: bool = True):
            calls.append(("Overlay", str(bitfile)))
            ip = types.SimpleNamespace(mmio=MMIO())
            setattr(self, ip_name, ip)
            self.ip_dict = {ip_name: {"phys_addr": 0xA000_0000, "addr_range": 0x1000}}

    def allocate(shape, dtype=np.uint8, **kwargs):
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        buffer = transport.allocate(nbytes)
        calls.append(("allocate", nbytes, buffer.physical_address))
        return buffer

    module.Overlay, module.allocate, module.calls, module.transport = Overlay, allocate, calls, transport
    return module


def standin_pynq_module(ip_name: str = "tellme_0") -> types.ModuleType:
    """A stand-in ``pynq`` for a board that is a folder (``tellme deploy`` to ``local:DIR``):
    ``Overlay(bitfile)`` reads the design's ``design.json`` beside the bitstream (model and
    hardware, as ``tellme build`` writes it) and puts a :func:`fake_pynq_module` over the
    behavioural model behind it; ``allocate`` hands out that model's buffers. The calls of the
    current overlay are in ``calls``."""
    import json
    from pathlib import Path

    module = types.ModuleType("pynq")
    module.current = None

    def Overlay(bitfile: str, download: bool = True):
        design = json.loads((Path(bitfile).parent / "design.json").read_text())
        hw = HardwareConfig.from_dict({k: v for k, v in design["hardware"].items()})
        module.current = fake_pynq_module(ModelConfig.from_dict(design["model"]), hw, design.get("ip_name", ip_name))
        module.calls = module.current.calls
        return module.current.Overlay(bitfile, download=download)

    def allocate(shape, dtype=np.uint8, **kwargs):
        if module.current is None:
            raise RuntimeError("stand-in pynq: allocate before Overlay")
        return module.current.allocate(shape, dtype, **kwargs)

    module.Overlay, module.allocate, module.calls = Overlay, allocate, []
    return module


#: The ``pynq.py`` a stand-in board's Python finds first on its path (tests of ``tellme deploy``).
STANDIN_PYNQ_SHIM = """\
# Stand-in for PYNQ on a board that is a folder (tellme deploy tests): the behavioural model of
# the design in the bitstream's folder answers the register map.
import sys as _sys
from tellme.sim.board_model import standin_pynq_module as _standin

_sys.modules[__name__] = _standin()
"""
