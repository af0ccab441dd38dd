"""Host runtime: drives the accelerator through its register map, on the board or in simulation.

:class:`Accelerator` is the one driver: it loads a DDR image into a buffer (its header and every
section's CRC-32 checked first, ``tellme.gen.image.check_sections``), allocates the KV cache,
scratch and I/O buffers the sequencer program needs (``tellme.gen.program``), checks that the
hardware is the design the image and hardware configuration were made for (``ID``, ``VERSION``,
``CONFIG_HASH``, the size registers), writes the base registers, and runs calls:
prefill in chunks of ``PREFILL_CHUNK`` tokens and decode steps, returning the last token's
logits (read back from the I/O buffer) with the result token and the cycle counters.
``ERR_CODE`` bits become :class:`AcceleratorError` messages that name the call.

The register layout comes from ``tellme.contract.regmap.REGISTER_MAP`` (the same description the
RTL register file is built from). A transport supplies register access, buffers and waiting:

- :class:`PynqTransport` on the board (``pynq.Overlay`` MMIO and ``pynq.allocate``);
- ``tellme.sim.board_model.ModelTransport``: a behavioural model of the accelerator (the
  sequencer program on numpy buffers), and the RTL simulation transport (cocotbext-axi's
  ``AxiLiteMaster`` on the generated Verilog).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .config import HardwareConfig, ModelConfig
from .contract.layouts import IMAGE_VERSION, ImageFormat
from .contract.regmap import ERROR_BITS, REGISTER_MAP, RegisterMap, design_hash
from .errors import TellmeError


class Buffer(Protocol):
    """A physically contiguous uint8 buffer shared with the accelerator (``pynq.allocate``'s)."""
    physical_address: int
    def sync_to_device(self) -> None: ...
    def sync_from_device(self) -> None: ...


class Transport(Protocol):
    def read32(self, offset: int) -> int: ...
    def write32(self, offset: int, value: int) -> None: ...
    def allocate(self, nbytes: int) -> Buffer: ...
    def wait(self, seconds: float) -> None: ...


class AcceleratorError(TellmeError, RuntimeError):
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


@dataclass
class CallResult:
    """What one call returned: the result token, the cycle counters, and the logits."""
    kind: str
    tokens: int
    token: int
    cycles: int
    stall_cycles: int
    logits: np.ndarray


class Accelerator:
    """One accelerator instance running one model: ``prefill(ids)``, ``decode(id)``, ``reset()``
    (the backend interface of ``tellme.sim.backends``, so ``generate`` drives it), ``results``
    (a :class:`CallResult` per call since the last reset).

    ``image`` is the DDR image file (``tellme convert``); ``hardware`` the configuration the
    design was generated from (its build's hardware file). ``timeout`` bounds one call in
    seconds of waiting (``transport.wait``)."""

    def __init__(self, transport: Transport, image: str | Path, hardware: HardwareConfig, *,
                 timeout: float = 600.0, poll_interval: float = 1e-3, regmap: RegisterMap = REGISTER_MAP):
        from .gen.image import check_sections, read_header
        from .gen.program import build_program
        self.transport, self.timeout, self.poll_interval = transport, timeout, poll_interval
        self.regs = Registers(transport, regmap)
        header = read_header(image)
        self.model = ModelConfig.from_dict(header["model"])
        self.hardware = hardware
        fmt = ImageFormat.of(hardware).__dict__
        if header["format"] != fmt:
            diff = ", ".join(f"{k} {header['format'].get(k)!r} (hardware {v!r})" for k, v in fmt.items()
                             if header["format"].get(k) != v)
            raise AcceleratorError(f"{image}: the image was converted for other hardware: {diff}")
        self._check_identity(regmap)
        self.program = build_program(self.model, hardware)
        raw = np.fromfile(image, dtype=np.uint8)
        check_sections(header, raw, image)        # every section's CRC-32, before the hardware sees a byte
        self.buffers = {"image": transport.allocate(raw.size), "kv": transport.allocate(self.program.kv_bytes),
                        "scratch": transport.allocate(self.program.scratch_bytes),
                        "io": transport.allocate(self.program.io.size)}
        self.buffers["image"][:] = raw
        self.buffers["image"].sync_to_device()
        self.set_bases(**{name: buf.physical_address for name, buf in self.buffers.items()})
        self.reset()

    def _check_identity(self, regmap: RegisterMap) -> None:
        ident = self.regs.read_word("ID")
        if ident != regmap.id_value:
            raise AcceleratorError(f"no tellme accelerator at this address: ID reads {ident:#010x}, "
                                   f"expected {regmap.id_value:#010x}")
        version = self.regs.read("VERSION")
        if version["IMAGE"] != IMAGE_VERSION:
            raise AcceleratorError(f"the design reads DDR image format {version['IMAGE']}, "
                                   f"this host writes format {IMAGE_VERSION}")
        self.check_config_hash(design_hash(self.model, self.hardware))
        for name, want in (("MAX_CONTEXT", self.hardware.max_context), ("PREFILL_CHUNK", self.hardware.prefill_chunk),
                           ("VOCAB", self.model.vocab_size), ("HIDDEN", self.model.hidden_size),
                           ("LAYERS", self.model.num_layers)):
            got = self.regs.read_word(name)
            if got != want:
                raise AcceleratorError(f"{name} reads {got}, the model and hardware configuration say {want}")

    def check_config_hash(self, expected: int) -> None:
        got = self.regs.read_word("CONFIG_HASH")
        if got != expected:
            raise AcceleratorError(f"the bitstream was generated for another model or hardware configuration "
                                   f"(CONFIG_HASH {got:#010x}, the image and hardware file need {expected:#010x})")

    def set_bases(self, *, image: int, kv: int, scratch: int, io: int) -> None:
        for name, addr in (("IMAGE_BASE", image), ("KV_BASE", kv), ("SCRATCH_BASE", scratch), ("IO_BASE", io)):
            if addr % 4096:
                raise ValueError(f"{name} {addr:#x} is not 4 KiB aligned")
            self.regs.write64(name, addr)

    def refuse_if_busy(self, what: str) -> None:
        """:class:`AcceleratorError` naming ``what`` while a call runs: a START then would be lost
        (the sequencer takes one call at a time) and the flags a new call clears are the running
        call's."""
        if self.regs.read("STATUS")["BUSY"]:
            raise AcceleratorError(f"{what}: the accelerator is busy with another call (STATUS.BUSY): "
                                   f"wait for its DONE or write CONTROL.SOFT_RESET")

    def start(self, *, decode: bool, seq_pos: int, token_count: int) -> None:
        self.refuse_if_busy(f"{'decode' if decode else 'prefill'} call at position {seq_pos}")
        self._start(decode, seq_pos, token_count)

    def _start(self, decode: bool, seq_pos: int, token_count: int) -> None:
        """START without the busy check (the caller made it)."""
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
            if "WATCHDOG" in names:
                names[names.index("WATCHDOG")] = (f"WATCHDOG (no AXI handshake for {self.regs.read_word('WATCHDOG')} "
                                                  f"cycles: a unit starved or stuck)")
            raise AcceleratorError(f"accelerator error: {', '.join(names) or 'unknown'}")
        if not status["DONE"]:
            return None
        if self.regs.read("ERR_CODE")["START_WHILE_BUSY"]:
            # Another host (or process) wrote START while a call ran: one of the two calls never
            # ran, and the result at hand may be the other's.
            raise AcceleratorError("the accelerator ignored a START while this call ran (ERR_CODE.START_WHILE_BUSY): "
                                   "another host or process drives it, so this result may not be this call's")
        return {"token": self.regs.read_word("RESULT_TOKEN"), "cycles": self.regs.read64("CYCLES"),
                "stall_cycles": self.regs.read64("STALL")}

    # -- calls ----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new sequence: position 0 (the KV cache is overwritten as positions are reused)."""
        self.position = 0
        self.results: list[CallResult] = []

    def _check(self, ids: list[int], what: str) -> None:
        """Refuse, before anything starts, what the driver can see is wrong."""
        if self.position + len(ids) > self.hardware.max_context:
            raise AcceleratorError(f"{what}: {self.position} + {len(ids)} tokens exceed the context of "
                                   f"{self.hardware.max_context}")
        if any(not 0 <= i < self.model.vocab_size for i in ids):
            raise AcceleratorError(f"{what}: token ids must be in [0, {self.model.vocab_size})")

    def _call(self, ids: list[int], decode: bool) -> np.ndarray:
        kind = "decode" if decode else "prefill"
        what = f"{kind} call at position {self.position} ({len(ids)} token{'s' * (len(ids) != 1)})"
        self._check(ids, what)
        self.refuse_if_busy(what)                         # before the I/O region is touched
        io, layout = self.buffers["io"], self.program.io
        io[layout.ids_offset:layout.ids_offset + 4 * len(ids)] = np.asarray(ids, dtype="<u4").view(np.uint8)
        io.sync_to_device()
        self._start(decode, self.position, len(ids))
        waited = 0.0
        while True:
            try:
                result = self.poll()
            except AcceleratorError as error:
                raise AcceleratorError(f"{what}: {error}") from None
            if result is not None:
                break
            if waited >= self.timeout:
                status = self.regs.read("STATUS")
                raise AcceleratorError(f"{what}: no DONE after {self.timeout:g} s (STATUS {status})")
            self.transport.wait(self.poll_interval)
            waited += self.poll_interval
        io.sync_from_device()
        logits = io[layout.logits_offset:layout.logits_offset + 4 * self.model.vocab_size].view(np.float32).copy()
        self.results.append(CallResult(kind, len(ids), result["token"], result["cycles"], result["stall_cycles"], logits))
        self.position += len(ids)
        return logits

    def prefill(self, token_ids) -> np.ndarray:
        ids = [int(i) for i in np.asarray(token_ids).reshape(-1)]
        if not ids:
            raise ValueError("no tokens given")
        self._check(ids, f"prefill of {len(ids)} tokens at position {self.position}")
        chunk = self.hardware.prefill_chunk
        logits = None
        for lo in range(0, len(ids), chunk):
            logits = self._call(ids[lo:lo + chunk], decode=False)
        return logits

    def decode(self, token_id: int) -> np.ndarray:
        return self._call([int(token_id)], decode=True)


class PynqTransport:
    """Register access, buffers and waiting through PYNQ (on the board): the overlay's MMIO for
    the accelerator ``ip_name`` and ``pynq.allocate`` for the DDR buffers. ``download=False``
    attaches to a design already in the PL (loaded by ``xmutil loadapp`` or over JTAG)."""

    def __init__(self, bitstream: str, ip_name: str = "tellme_0", *, download: bool = True):
        try:
            import pynq
        except ImportError:
            raise AcceleratorError("pynq is not installed: PynqTransport runs on the board") from None
        self.pynq = pynq
        self.overlay = pynq.Overlay(bitstream, download=download)
        try:
            self.mmio = getattr(self.overlay, ip_name).mmio
        except AttributeError:
            raise AcceleratorError(f"{bitstream}: the overlay has no IP named {ip_name}") from None

    def read32(self, offset: int) -> int:
        return int(self.mmio.read(offset))

    def write32(self, offset: int, value: int) -> None:
        self.mmio.write(offset, value)

    def allocate(self, nbytes: int):
        return self.pynq.allocate(shape=(nbytes,), dtype=np.uint8)

    def wait(self, seconds: float) -> None:
        time.sleep(seconds)
