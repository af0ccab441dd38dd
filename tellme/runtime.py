"""Host runtime: drives the accelerator through its register map, on the board or in simulation.

The register layout comes from ``tellme.contract.regmap.REGISTER_MAP`` (the same description the RTL
register file is built from). A transport supplies 32-bit register reads and writes:

- :class:`PynqTransport` on the board (``pynq.Overlay`` MMIO), imported only when used;
- a simulation transport (cocotbext-axi's ``AxiLiteMaster``) lives with the testbenches, and
  uses :meth:`RegisterMap.encode_write` / :meth:`RegisterMap.decode` so both sides share one
  field logic.
"""

from __future__ import annotations

from typing import Protocol

from .contract.regmap import ERROR_BITS, REGISTER_MAP, RegisterMap


class Transport(Protocol):
    def read32(self, offset: int) -> int: ...
    def write32(self, offset: int, value: int) -> None: ...


class AcceleratorError(RuntimeError):
    """The accelerator reported an error, or is not the design the host expects."""


class Registers:
    """Named access to the register map over a synchronous transport."""

    def __init__(self, transport: Transport, regmap: RegisterMap = REGISTER_MAP):
        self.transport, self.regmap = transport, regmap

    def read(self, name: str) -> dict[str, int]:
        return self.regmap.decode(name, self.transport.read32(self.regmap[name].offset))

    def read_word(self, name: str) -> int:
        return self.transport.read32(self.regmap[name].offset)

    def write(self, name: str, **fields: int) -> None:
        reg = self.regmap[name]
        needs_current = any(f.access == "rw" and f.name not in fields for f in reg.fields)
        current = self.transport.read32(reg.offset) if needs_current else 0
        self.transport.write32(reg.offset, self.regmap.encode_write(name, fields, current))

    def write64(self, name: str, value: int) -> None:
        """A 64-bit value into the register pair NAME_LO / NAME_HI."""
        self.transport.write32(self.regmap[name + "_LO"].offset, value & 0xFFFFFFFF)
        self.transport.write32(self.regmap[name + "_HI"].offset, value >> 32)

    def read64(self, name: str) -> int:
        return self.read_word(name + "_LO") | (self.read_word(name + "_HI") << 32)


class Accelerator:
    """One accelerator instance: identity check, base addresses, calls."""

    def __init__(self, transport: Transport, regmap: RegisterMap = REGISTER_MAP):
        self.regs = Registers(transport, regmap)
        ident = self.regs.read_word("ID")
        if ident != regmap.id_value:
            raise AcceleratorError(f"no tellme accelerator at this address: ID reads {ident:#010x}, "
                                   f"expected {regmap.id_value:#010x}")

    def check_config_hash(self, expected: int) -> None:
        got = self.regs.read_word("CONFIG_HASH")
        if got != expected:
            raise AcceleratorError(f"the bitstream was generated for another model/format "
                                   f"(CONFIG_HASH {got:#010x}, the image needs {expected:#010x})")

    def set_bases(self, *, image: int, kv: int, scratch: int, io: int) -> None:
        for name, addr in (("IMAGE_BASE", image), ("KV_BASE", kv), ("SCRATCH_BASE", scratch), ("IO_BASE", io)):
            if addr % 4096:
                raise ValueError(f"{name} {addr:#x} is not 4 KiB aligned")
            self.regs.write64(name, addr)

    def start(self, *, decode: bool, seq_pos: int, token_count: int) -> None:
        self.regs.write("STATUS", DONE=1, ERROR=1)            # clear the previous call's flags
        self.regs.write("MODE", DECODE=int(decode))
        self.regs.write("SEQ_POS", POS=seq_pos)
        self.regs.write("TOKEN_COUNT", COUNT=token_count)
        self.regs.write("CONTROL", START=1)

    def poll(self) -> dict[str, int] | None:
        """None while busy; else the call's result (token, cycles, stall cycles)."""
        status = self.regs.read("STATUS")
        if status["ERROR"]:
            errors = self.regs.read("ERR_CODE")
            names = [n for n in ERROR_BITS if errors[n]]
            raise AcceleratorError(f"accelerator error: {', '.join(names) or 'unknown'}")
        if not status["DONE"]:
            return None
        return {"token": self.regs.read_word("RESULT_TOKEN"), "cycles": self.regs.read64("CYCLES"),
                "stall_cycles": self.regs.read64("STALL")}


class PynqTransport:
    """Register access through a PYNQ overlay's MMIO (on the board only)."""

    def __init__(self, bitstream: str, ip_name: str = "tellme_0"):
        try:
            import pynq
        except ImportError:
            raise AcceleratorError("pynq is not installed: PynqTransport runs on the board") from None
        self.overlay = pynq.Overlay(bitstream)
        self.mmio = getattr(self.overlay, ip_name).mmio

    def read32(self, offset: int) -> int:
        return int(self.mmio.read(offset))

    def write32(self, offset: int, value: int) -> None:
        self.mmio.write(offset, value)
