"""Board files (boards/): one Amaranth XilinxPlatform per board with the facts the generator,
the estimator and the build read."""

import pytest

from tellme.boards import (BOARD_MODULES, DEFAULT_BOARD, PL_RESOURCE_KEYS, board_class, board_of, get_board,
                           weight_ram_style)
from tellme.config import ConfigError, hardware_preset, model_preset
from tellme.gen.estimate import KV260
from tellme.gen.program import build_program

# From AMD's device tables and the boards' user guides (../shared/reference/facts.md).
EXPECTED = {
    "kv260": ("xck26-sfvc784-2LV-c", (117120, 234240, 1248, 144, 64), 19.2e9, 4 << 30, True),
    "kr260": ("xck26-sfvc784-2LV-c", (117120, 234240, 1248, 144, 64), 19.2e9, 4 << 30, True),
    "zcu104": ("xczu7ev-ffvc1156-2-e", (230400, 460800, 1728, 312, 96), 17.1e9, 2 << 30, False),
    "zcu102": ("xczu9eg-ffvb1156-2-e", (274080, 548160, 2520, 912, 0), 17.1e9, 4 << 30, False),
    "ultra96v2": ("xczu3eg-sbva484-1-i", (70560, 141120, 360, 216, 0), 8.5e9, 2 << 30, False),
}


def test_the_boards_the_issue_names_are_there_and_kv260_is_default():
    assert set(BOARD_MODULES) == set(EXPECTED) and DEFAULT_BOARD == "kv260"
    assert hardware_preset("kv260") == get_board("kv260").default_hardware()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_board_facts(name):
    part, resources, ddr_peak, ddr_bytes, kria = EXPECTED[name]
    board = get_board(name)
    assert board.name == name and board.part == part
    assert tuple(board.pl_resources[k] for k in PL_RESOURCE_KEYS) == resources
    assert board.ddr_peak_bytes_per_s == ddr_peak and board.ddr_bytes == ddr_bytes and board.kria == kria
    assert board.hp_ports == 4 and board.hp_data_width == 128 and board.ps_type == "zynq_ultra_ps_e"
    assert board.board_part.split(":")[1] in board.board_part_pattern
    # no URAM -> the weight buffer in block RAM
    assert board.weight_ram_style == ("ultra" if resources[4] else "block")
    assert weight_ram_style(board.default_hardware()) == board.weight_ram_style
    # the board's own instance is valid for both model styles on it
    hw = board.default_hardware()
    assert hw.board == name and board_of(hw).name == name
    board.check_hardware(hw)
    for preset in ("tiny", "bitnet-b1.58-large"):
        model = model_preset(preset)
        build_program(model, hw.replace(max_context=min(hw.max_context, model.max_position_embeddings)))
    # an Amaranth platform: the Vivado toolchain and the board's pins
    assert board.toolchain == "Vivado" and board.family == "ultrascaleplus"
    assert ("fan" in {r.name for r in board.resources.values()}) == kria


def test_kria_fan_pin_is_the_active_low_a12():
    for name in ("kv260", "kr260"):
        fan = get_board(name).resources["fan", 0]
        assert fan.ios[0].names == ["A12"] and fan.ios[0].invert
        assert fan.attrs["IOSTANDARD"] == "LVCMOS33"


def test_estimate_budget_is_the_kv260_board_file():
    assert KV260 == get_board("kv260").pl_resources


def test_unknown_board_and_what_a_board_cannot_give():
    with pytest.raises(ConfigError, match=r"board: unknown board 'kv999'; known: kv260, kr260"):
        board_class("kv999")
    u96 = get_board("ultra96v2")
    with pytest.raises(ConfigError, match=r"clock_mhz: 300 MHz is above what Ultra96-V2 gives the PL \(pl_clk0 up to 250"):
        u96.check_hardware(u96.default_hardware().replace(clock_mhz=300.0))
    with pytest.raises(ConfigError, match=r"axi_data_width: 256 bits, the S_AXI_HP ports of Kria KV260 are at most 128"):
        get_board("kv260").check_hardware(hardware_preset("kv260").replace(axi_data_width=256))
    # simulation-only hardware has no board (URAM-style buffer)
    assert board_of(hardware_preset("sim-small")) is None and weight_ram_style(hardware_preset("sim-small")) == "ultra"


def test_readme_board_table_is_the_board_files():
    from pathlib import Path
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[1].startswith("`") and cells[1].strip("`") in BOARD_MODULES:
            rows[cells[1].strip("`")] = cells
    assert set(rows) == set(BOARD_MODULES)
    for name, cells in rows.items():
        board = get_board(name)
        assert cells[2] == board.part
        assert [int(c.replace(",", "")) for c in cells[3:8]] == [board.pl_resources[k] for k in PL_RESOURCE_KEYS]
        assert f"{board.ddr_peak_bytes_per_s / 1e9:g} GB/s" in cells[8]
        assert cells[9] == ("URAM" if board.has_uram else "block RAM")


def test_every_module_of_boards_is_a_board():
    """Adding a board is writing one file: the package lists every public module."""
    from pathlib import Path
    folder = Path(__file__).resolve().parent.parent / "boards"
    assert sorted(BOARD_MODULES) == sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    assert BOARD_MODULES[0] == DEFAULT_BOARD


def test_readme_fit_table_is_boards_json():
    """The README's fit table is `python -m bench.boards --table` of bench/results/boards.json."""
    import re
    import subprocess
    import sys
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bench.boards", "--table"], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    readme = (repo / "README.md").read_text()
    table = re.search(r"<!-- boards table -->\n(.*?)\n<!-- end boards table -->", readme, re.S).group(1)
    assert table == done.stdout.strip()
    assert "bitnet-b1.58-large" in table
