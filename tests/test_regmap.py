"""The register map: one description behind the RTL register file, the host runtime and the doc."""

from pathlib import Path

import pytest

from tellme.contract.regmap import REGISTER_MAP, Field, Register, RegisterMap, RegisterMapError
from tellme.hw.regfile import RegisterFile
from tellme.runtime import Accelerator, AcceleratorError, Registers
from tellme.sim.rtl import run_cocotb

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def test_architecture_doc_shows_the_map():
    assert REGISTER_MAP.markdown_table() in DOC.read_text()


def test_inconsistent_maps_are_refused():
    with pytest.raises(RegisterMapError, match="overlaps"):
        RegisterMap(id_value=0, registers=(Register("A", 0, (Field("X", 0, 4, "rw"), Field("Y", 3, 2, "rw"))),))
    with pytest.raises(RegisterMapError, match="duplicate"):
        RegisterMap(id_value=0, registers=(Register("A", 0, ()), Register("B", 0, ())))
    with pytest.raises(RegisterMapError, match="access"):
        RegisterMap(id_value=0, registers=(Register("A", 0, (Field("X", 0, 1, "wo"),)),))


def test_field_logic():
    word = REGISTER_MAP.encode_write("CONTROL", {"START": 1}, current=0x100)
    assert word == 0x101                       # IRQ_ENABLE kept, START pulsed, SOFT_RESET not
    assert REGISTER_MAP.decode("CAPS", 5 | (64 << 4) | (8 << 16) | (4 << 24)) == {"G": 5, "LANES": 64, "TOKENS": 8, "PORTS": 4}
    with pytest.raises(ValueError, match="read-only"):
        REGISTER_MAP.encode_write("STATUS", {"BUSY": 1})
    with pytest.raises(ValueError, match="does not fit"):
        REGISTER_MAP.encode_write("MODE", {"DECODE": 2})


class FakeBoard:
    """A register-level model of the accelerator for host-side tests."""

    def __init__(self, ident=REGISTER_MAP.id_value):
        self.words = {r.offset: 0 for r in REGISTER_MAP.registers}
        self.words[0] = ident
        self.writes = []

    def read32(self, offset):
        return self.words.get(offset, 0)

    def write32(self, offset, value):
        self.writes.append((offset, value))
        if offset == REGISTER_MAP["STATUS"].offset:      # write 1 to clear
            self.words[offset] &= ~value
        elif offset != 0:
            self.words[offset] = value


def test_runtime_drives_the_map():
    board = FakeBoard()
    acc = Accelerator(board)
    acc.set_bases(image=0x4000_0000, kv=0x1_2000_0000, scratch=0x5000_0000, io=0x6000_0000)
    assert board.words[REGISTER_MAP["KV_BASE_HI"].offset] == 1
    acc.start(decode=True, seq_pos=17, token_count=1)
    assert board.words[REGISTER_MAP["SEQ_POS"].offset] == 17
    assert board.writes[-1] == (REGISTER_MAP["CONTROL"].offset, 1)
    assert acc.poll() is None
    board.words[REGISTER_MAP["STATUS"].offset] = 0b100
    board.words[REGISTER_MAP["ERR_CODE"].offset] = 0b1000
    with pytest.raises(AcceleratorError, match="CONTEXT_OVERFLOW"):
        acc.poll()
    with pytest.raises(ValueError, match="aligned"):
        acc.set_bases(image=0x1001, kv=0, scratch=0, io=0)
    with pytest.raises(AcceleratorError, match="no tellme accelerator"):
        Accelerator(FakeBoard(ident=0xDEADBEEF))
    regs = Registers(board)
    regs.write("MODE", DECODE=0)
    assert regs.read("MODE") == {"DECODE": 0}


CONSTANTS = {"CAPS.G": 5, "CAPS.LANES": 64, "CAPS.TOKENS": 8, "CAPS.PORTS": 4, "VOCAB.VALUE": 32002,
             "CONFIG_HASH.HASH": 0x89ABCDEF}


@pytest.mark.rtl
def test_register_file_rtl():
    run_cocotb(RegisterFile(constants=CONSTANTS), name="regfile", test_module="tellme.sim.tb.tb_regfile",
               parameters={"seed": 3, "constants": CONSTANTS})


def test_register_file_rejects_bad_constants():
    with pytest.raises(ValueError, match="not read-only"):
        RegisterFile(constants={"MODE.DECODE": 1})
    with pytest.raises(ValueError, match="no field"):
        RegisterFile(constants={"CAPS.NOPE": 1})
    with pytest.raises(ValueError, match="does not fit"):
        RegisterFile(constants={"CAPS.G": 99})
