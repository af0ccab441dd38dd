"""The register map: one description behind the RTL register file, the host runtime and the doc."""

from pathlib import Path

import pytest

from tellme.contract.regmap import REGISTER_MAP, Field, Register, RegisterMap, RegisterMapError
from tellme.hw.regfile import RegisterFile
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
