"""The accelerator's AXI4-Lite register map: one description for the RTL and the host.

``hw/regfile.py`` builds the register file from :data:`REGISTER_MAP`; ``tellme.runtime`` reads
and writes through it; ``markdown_table()`` renders the table of docs/architecture.md section 7
(a test checks the document agrees). Change the map here and all three follow.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from ..config import HardwareConfig, ModelConfig
from ..errors import TellmeError
from .layouts import IMAGE_VERSION

ACCESS = ("ro", "rw", "w1c", "sc")


class RegisterMapError(TellmeError, ValueError):
    """A register map description is inconsistent."""


@dataclass(frozen=True)
class Field:
    """Bits [lsb, lsb+width) of a register.

    access: ``ro`` (driven by the core), ``rw`` (held for the core, read back), ``w1c`` (set by
    the core, cleared by writing 1), ``sc`` (a write of 1 gives the core a one-cycle pulse;
    reads 0).
    """
    name: str
    lsb: int
    width: int
    access: str
    doc: str = ""
    reset: int = 0

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    fields: tuple[Field, ...]
    doc: str = ""

    @property
    def defined_mask(self) -> int:
        mask = 0
        for f in self.fields:
            mask |= f.mask
        return mask

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")


@dataclass(frozen=True)
class RegisterMap:
    registers: tuple[Register, ...]
    id_value: int
    size: int = 0x1000

    def __post_init__(self):
        seen_names, seen_offsets = set(), set()
        for r in self.registers:
            if r.offset % 4 or not 0 <= r.offset < self.size:
                raise RegisterMapError(f"{r.name}: offset {r.offset:#x} is not a word inside the map")
            if r.name in seen_names or r.offset in seen_offsets:
                raise RegisterMapError(f"{r.name}: duplicate name or offset {r.offset:#x}")
            seen_names.add(r.name)
            seen_offsets.add(r.offset)
            used = 0
            for f in r.fields:
                if f.access not in ACCESS:
                    raise RegisterMapError(f"{r.name}.{f.name}: access must be one of {ACCESS}")
                if f.width < 1 or f.lsb < 0 or f.lsb + f.width > 32:
                    raise RegisterMapError(f"{r.name}.{f.name}: bits outside the 32-bit word")
                if used & f.mask:
                    raise RegisterMapError(f"{r.name}.{f.name}: overlaps another field")
                if f.reset >> f.width:
                    raise RegisterMapError(f"{r.name}.{f.name}: reset value does not fit")
                used |= f.mask

    def __getitem__(self, name: str) -> Register:
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"no register {name}")

    def decode(self, name: str, word: int) -> dict[str, int]:
        """Field values of register ``name`` from its 32-bit word."""
        reg = self[name]
        return {f.name: (word >> f.lsb) & ((1 << f.width) - 1) for f in reg.fields}


    def encode_write(self, name: str, fields: dict[str, int], current: int = 0) -> int:
        """The word to write so that the given fields take the given values; other writable
        fields keep their value in ``current`` (a read of the register), W1C and SC fields not
        named are written 0 (so they are not cleared or pulsed by accident)."""
        reg = self[name]
        word = 0
        for f in reg.fields:
            if f.name in fields:
                value = fields[f.name]
                if not 0 <= value < (1 << f.width):
                    raise ValueError(f"{name}.{f.name}: {value} does not fit {f.width} bits")
                if f.access == "ro":
                    raise ValueError(f"{name}.{f.name} is read-only")
                word |= value << f.lsb
            elif f.access == "rw":
                word |= current & f.mask
        unknown = set(fields) - {f.name for f in reg.fields}
        if unknown:
            raise ValueError(f"{name} has no field(s) {', '.join(sorted(unknown))}")
        return word

    def markdown_table(self) -> str:
        """The table of docs/architecture.md section 7."""
        access_names = {"ro": "RO", "rw": "RW", "w1c": "W1C", "sc": "SC"}
        lines = ["| offset | name | fields |", "|---|---|---|"]
        for r in self.registers:
            parts = []
            for f in r.fields:
                bits = f"[{f.lsb}]" if f.width == 1 else f"[{f.lsb + f.width - 1}:{f.lsb}]"
                parts.append(f"{bits} {f.name} ({access_names[f.access]}){': ' + f.doc if f.doc else ''}")
            lines.append(f"| 0x{r.offset:02X} | {r.name} | {'; '.join(parts)} |")
        return "\n".join(lines)


def _word(name, doc, access="rw"):
    return (Field(name, 0, 32, access, doc),)


#: ``WATCHDOG.CYCLES`` after reset: 2^24 cycles (56 ms at 300 MHz) without a handshake on any
#: AXI port of the datapath. Every step streams from or to DDR, so a working call's stretches
#: without a beat (a table build, an element-wise pipeline's drain, an attention tile's
#: softmax) stay far below it: the longest measured, 28,546 cycles in a 128-token prefill of
#: a bitnet-b1.58-large layer (bench/results/cycle_model.json, ``watchdog``), is 588 x shorter.
WATCHDOG_CYCLES = 1 << 24

# Error bits of ERR_CODE, in order (bit i). All but START_WHILE_BUSY end the call with
# STATUS.ERROR; START_WHILE_BUSY marks a START the hardware ignored because a call was running
# (that call goes on and ends with DONE, the flag beside it: its host learns that another
# START was lost, and a host whose START was the lost one does not take the running call's
# result for its own).
ERROR_BITS = ("AXI_READ", "AXI_WRITE", "BAD_TOKEN_COUNT", "CONTEXT_OVERFLOW", "MISALIGNED_BASE", "WATCHDOG",
              "START_WHILE_BUSY", "BAD_TOKEN_ID")

#: What each ERR_CODE bit says (the register table of docs section 7).
ERROR_DOCS = {
    "AXI_READ": "an HP port answered a read with an error response",
    "AXI_WRITE": "an HP port answered a write with an error response",
    "BAD_TOKEN_COUNT": "TOKEN_COUNT 0, above PREFILL_CHUNK, or not 1 in decode (refused at START)",
    "CONTEXT_OVERFLOW": "SEQ_POS + TOKEN_COUNT above MAX_CONTEXT (refused at START)",
    "MISALIGNED_BASE": "a region base not 4 KiB aligned (refused at START)",
    "WATCHDOG": "no AXI handshake for WATCHDOG.CYCLES cycles during the call",
    "START_WHILE_BUSY": "a START came while a call ran and was ignored (that call goes on; no STATUS.ERROR)",
    "BAD_TOKEN_ID": "a token id in the I/O region not below VOCAB (the call ends at the EMBED step)",
}

REGISTER_MAP = RegisterMap(id_value=0x544C4D45, registers=(
    Register("ID", 0x00, _word("ID", 'reads 0x544C4D45 ("TLME")', "ro")),
    Register("VERSION", 0x04, (Field("RTL", 0, 16, "ro", "RTL version"),
                               Field("IMAGE", 16, 16, "ro", "DDR image format version"))),
    Register("CONFIG_HASH", 0x08, _word("HASH", "CRC-32 of the model + hardware configuration of the generated design", "ro")),
    Register("CAPS", 0x0C, (Field("G", 0, 4, "ro", "TLMM group size"), Field("LANES", 4, 12, "ro", "TLMM lanes"),
                            Field("TOKENS", 16, 8, "ro", "TLMM tokens"), Field("PORTS", 24, 8, "ro", "AXI read ports"))),
    Register("CONTROL", 0x10, (Field("START", 0, 1, "sc", "start a call"),
                               Field("SOFT_RESET", 1, 1, "sc", "abort and return to idle"),
                               Field("IRQ_ENABLE", 8, 1, "rw", "raise the interrupt on DONE or ERROR"))),
    Register("STATUS", 0x14, (Field("BUSY", 0, 1, "ro", "a call is running"),
                              Field("DONE", 1, 1, "w1c", "the last call finished"),
                              Field("ERROR", 2, 1, "w1c", "the last call failed: see ERR_CODE"))),
    Register("MODE", 0x18, (Field("DECODE", 0, 1, "rw", "0 = prefill, 1 = decode"),)),
    Register("SEQ_POS", 0x1C, _word("POS", "position of the first token of this call")),
    Register("TOKEN_COUNT", 0x20, _word("COUNT", "tokens in this call (1..PREFILL_CHUNK; 1 in decode)")),
    Register("ERR_CODE", 0x24, tuple(Field(name, i, 1, "ro", ERROR_DOCS[name]) for i, name in enumerate(ERROR_BITS))),
    Register("RESULT_TOKEN", 0x28, _word("TOKEN", "argmax of the last position's logits", "ro")),
    Register("WATCHDOG", 0x2C, (Field("CYCLES", 0, 32, "rw", "a call whose AXI ports see no handshake for this "
                                      "many cycles ends with ERR_CODE.WATCHDOG (0: never)",
                                      reset=WATCHDOG_CYCLES),)),
    Register("CYCLES_LO", 0x30, _word("VALUE", "cycles from START to DONE of the last call, low word", "ro")),
    Register("CYCLES_HI", 0x34, _word("VALUE", "high word", "ro")),
    Register("STALL_LO", 0x38, _word("VALUE", "cycles the TLMM lanes waited for weights, low word", "ro")),
    Register("STALL_HI", 0x3C, _word("VALUE", "high word", "ro")),
    Register("IMAGE_BASE_LO", 0x40, _word("ADDR", "DDR image base, low word (4 KiB aligned)")),
    Register("IMAGE_BASE_HI", 0x44, _word("ADDR", "high word")),
    Register("KV_BASE_LO", 0x48, _word("ADDR", "KV cache base, low word (4 KiB aligned)")),
    Register("KV_BASE_HI", 0x4C, _word("ADDR", "high word")),
    Register("SCRATCH_BASE_LO", 0x50, _word("ADDR", "scratch base, low word (4 KiB aligned)")),
    Register("SCRATCH_BASE_HI", 0x54, _word("ADDR", "high word")),
    Register("IO_BASE_LO", 0x58, _word("ADDR", "token/logit I/O base, low word (4 KiB aligned)")),
    Register("IO_BASE_HI", 0x5C, _word("ADDR", "high word")),
    Register("MAX_CONTEXT", 0x60, _word("VALUE", "KV-cache capacity in tokens", "ro")),
    Register("PREFILL_CHUNK", 0x64, _word("VALUE", "most tokens per prefill call", "ro")),
    Register("VOCAB", 0x68, _word("VALUE", "vocabulary size", "ro")),
    Register("HIDDEN", 0x6C, _word("VALUE", "hidden size", "ro")),
    Register("LAYERS", 0x70, _word("VALUE", "decoder layers", "ro")),
))


#: ``VERSION.RTL``: bumped when the RTL's behaviour at the register map changes (2: WATCHDOG;
#: 3: START_WHILE_BUSY and BAD_TOKEN_ID).
RTL_VERSION = 3

#: Hardware fields that do not change the generated design (so not in its hash).
_NOT_IN_DESIGN = ("board", "clock_mhz")


def design_hardware(hw: HardwareConfig) -> dict:
    """The fields of ``hw`` that shape the design: all but the board name and the clock."""
    return {k: v for k, v in hw.to_dict().items() if k not in _NOT_IN_DESIGN}


def design_hash(model: ModelConfig, hw: HardwareConfig) -> int:
    """``CONFIG_HASH``: CRC-32 of the canonical JSON of the model configuration and the hardware
    configuration (less the board name and clock, which do not change the design). The
    generator bakes it into the register file; the host computes it from the image header's
    model and the build's hardware file and refuses to run a design that differs."""
    text = json.dumps({"model": model.to_dict(), "hardware": design_hardware(hw)}, sort_keys=True, separators=(",", ":"))
    return zlib.crc32(text.encode())


def register_constants(model: ModelConfig, hw: HardwareConfig) -> dict[str, int]:
    """The read-only fields the generator bakes into the register file, ``"REG.FIELD": value``."""
    return {"ID.ID": REGISTER_MAP.id_value, "VERSION.RTL": RTL_VERSION, "VERSION.IMAGE": IMAGE_VERSION,
            "CONFIG_HASH.HASH": design_hash(model, hw), "CAPS.G": hw.tlmm_group, "CAPS.LANES": hw.tlmm_lanes,
            "CAPS.TOKENS": hw.tlmm_tokens, "CAPS.PORTS": hw.hp_ports, "MAX_CONTEXT.VALUE": hw.max_context,
            "PREFILL_CHUNK.VALUE": hw.prefill_chunk, "VOCAB.VALUE": model.vocab_size,
            "HIDDEN.VALUE": model.hidden_size, "LAYERS.VALUE": model.num_layers}
