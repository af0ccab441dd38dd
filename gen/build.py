"""``tellme build``: a folder that Vivado turns into a bitstream + .hwh and PYNQ runs.

From (model, hardware, board) this writes a build tree::

    OUT/
      build.sh                 checks Vivado and the board files, runs Vivado, makes the Kria firmware
      plan.json                what was built and why (board, model, hardware, resource estimate)
      vivado/                  Amaranth's XilinxPlatform build plan (``platform.build(do_build=False)``):
        tellme.v                 the platform top: the block design's wrapper + board pins (KV260 fan)
        tellme.tcl, tellme.xdc   Amaranth's Vivado batch script and constraints
        build_tellme.sh          Amaranth's Vivado command
        block_design.tcl         the PS block design, sourced through the ``script_after_read`` hook
        check_board.tcl          board-file look-up, run by build.sh before anything else
        tellme_ip.v              the accelerator as a Vivado module reference (interfaces by name)
        tellme_top.v, *.v        the accelerator's Verilog (tellme generate)
        lint_waivers.vlt         the Verilator -Wall waivers of the generated Verilog, with reasons
      deploy/                  what goes to the board: driver, run_on_board.py, DDR image, and
                               tellme.bit + tellme.hwh once Vivado has run
      firmware/                (Kria) tellme.bif, tellme.dtsi, shell.json; build.sh adds
                               tellme.bit.bin (bootgen) and tellme.dtbo (dtc) for ``xmutil loadapp``

The block design (docs section 9): ``zynq_ultra_ps_e`` with the board preset, pl_clk0 from the
IOPLL at the design's clock, M_AXI_HPM0_FPD -> SmartConnect -> the register file (at
:data:`REGISTER_BASE`), the accelerator's AXI4 managers straight onto S_AXI_HP0..3_FPD at 128
bits, ``proc_sys_reset`` for the reset, the interrupt on pl_ps_irq0; every PS port the design
does not use is switched off, every used port's clock driven by pl_clk0.

The accelerator enters the block design as a module reference of :func:`ip_wrapper_verilog`'s
``tellme_ip``, whose ports carry ``X_INTERFACE_INFO`` attributes, so its AXI interfaces, clock,
reset and interrupt are declared by name rather than inferred. Its AXI4 ports have the PS's
widths (49-bit addresses, 6-bit IDs; the accelerator's 40-bit addresses and 4-bit IDs are
zero-extended, and the PS echoes IDs so the upper response ID bits are dropped).
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from amaranth.hdl import Elaboratable, Instance, Module, Shape
from amaranth.lib import io, wiring

from ..boards import ZynqMPPlatform
from ..config import HardwareConfig, ModelConfig
from ..contract.regmap import REGISTER_MAP, design_hardware, design_hash
from ..errors import TellmeError
from ..sim.toolchain import build_root

__all__ = ["BuildError", "SUPPORTED_VIVADO", "REGISTER_BASE", "REGISTER_RANGE", "IpPort", "ip_ports",
           "ip_wrapper_verilog", "block_design_tcl", "check_board_tcl", "build_script", "kria_firmware",
           "driver_sources", "LINT_WAIVERS", "lint_waivers_vlt", "BuildPlan", "plan_build", "check_out_folder", "estimate_resources",
           "build_verilog", "write_build"]

#: Vivado releases the generated TCL was written against (build.sh refuses others unless
#: TELLME_ANY_VIVADO=1). PYNQ 3.0 images match 2022.1; PYNQ 3.1 images 2024.1.
SUPPORTED_VIVADO = ("2022.1", "2022.2", "2023.1", "2023.2", "2024.1", "2024.2", "2025.1")
#: The register file's window on M_AXI_HPM0_FPD (the PL window starts at 0xA000_0000) and its size
#: (the 12-bit AXI4-Lite address of the register map).
REGISTER_BASE = 0xA000_0000
REGISTER_RANGE = 0x1000
#: Names in the block design and the Vivado project.
PROJECT, BD_NAME, IP_MODULE, IP_CELL = "tellme", "tellme_bd", "tellme_ip", "tellme_0"
#: The S_AXI_HP ports' address and ID widths (Zynq UltraScale+ PS, PG201).
PS_ADDR_WIDTH, PS_ID_WIDTH = 49, 6
#: GIC interrupt of pl_ps_irq0[0] (SPI 89 = IRQ 121).
PL_PS_IRQ0_SPI = 89


class BuildError(TellmeError, ValueError):
    """The build cannot go ahead: the design does not fit the board, or the output folder is taken."""


# -- the module-reference wrapper -------------------------------------------------------------------

@dataclass(frozen=True)
class IpPort:
    """One port of ``tellme_ip``: its name, direction and width, the ``tellme_top`` port behind
    it (``inner``, ``inner_width``), and the Vivado interface it belongs to (``bus``,
    ``logical`` name in that interface's definition)."""
    name: str
    direction: str                  # "input" | "output"
    width: int
    inner: str
    inner_width: int
    bus: str | None = None
    vlnv: str | None = None
    logical: str | None = None


_AXI_MM = "xilinx.com:interface:aximm:1.0"


def ip_ports(top: wiring.Component, hp_ports: int) -> list[IpPort]:
    """The ports of ``tellme_ip`` for the top level ``top`` (a :class:`tellme.gen.top.TellmeTop`)."""
    ports = [IpPort("clk", "input", 1, "clk", 1, "clk", "xilinx.com:signal:clock:1.0", "CLK"),
             IpPort("rst", "input", 1, "rst", 1, "rst", "xilinx.com:signal:reset:1.0", "RST")]
    members = top.signature.members
    for bus in ["s_axil", *(f"m_axi_hp{p}" for p in range(hp_ports))]:
        for name, member in members[bus].signature.members.items():
            inner_width = Shape.cast(member.shape).width
            # (the signature of an In member, s_axil, comes flipped: flows are the top's own)
            out = member.flow == wiring.Out
            width = inner_width
            if bus != "s_axil" and name in ("araddr", "awaddr"):
                width = PS_ADDR_WIDTH
            elif bus != "s_axil" and name in ("arid", "awid", "rid", "bid"):
                width = PS_ID_WIDTH
            ports.append(IpPort(f"{bus}_{name}", "output" if out else "input", width, f"{bus}__{name}", inner_width,
                                bus, _AXI_MM, name.upper()))
    ports.append(IpPort("irq", "output", 1, "irq", 1, "irq", "xilinx.com:signal:interrupt:1.0", "INTERRUPT"))
    return ports


def _interface_parameters(bus: str, hw: HardwareConfig) -> str:
    if bus == "clk":
        buses = ":".join(["s_axil", *(f"m_axi_hp{p}" for p in range(hw.hp_ports))])
        return f"ASSOCIATED_BUSIF {buses}, ASSOCIATED_RESET rst, FREQ_HZ {round(hw.clock_mhz * 1e6)}"
    if bus == "rst":
        return "POLARITY ACTIVE_HIGH"
    if bus == "irq":
        return "SENSITIVITY LEVEL_HIGH"
    if bus == "s_axil":
        return "PROTOCOL AXI4LITE, DATA_WIDTH 32, ADDR_WIDTH 12"
    return (f"PROTOCOL AXI4, DATA_WIDTH {hw.axi_data_width}, ADDR_WIDTH {PS_ADDR_WIDTH}, ID_WIDTH {PS_ID_WIDTH}, "
            f"HAS_BURST 1, HAS_CACHE 1, HAS_LOCK 1, HAS_PROT 1, HAS_QOS 1, HAS_REGION 0, MAX_BURST_LENGTH 256")


def ip_wrapper_verilog(top: wiring.Component, hw: HardwareConfig) -> str:
    """The Verilog of ``tellme_ip``: ``tellme_top`` under flat port names with Vivado interface
    attributes (``X_INTERFACE_INFO``/``X_INTERFACE_PARAMETER``), the form a module reference
    declares its AXI interfaces, clock, reset and interrupt in."""
    ports = ip_ports(top, hw.hp_ports)
    lines = [
        "// tellme_ip: the tellme accelerator as a Vivado module reference (generated by tellme build).",
        f"// Model {top.model.name}, CONFIG_HASH {design_hash(top.model, hw):#010x}.",
        "// AXI4 managers widened to the PS's S_AXI_HP ports: addresses zero-extended to 49 bits, IDs to",
        "// 6 bits (the PS echoes a request's ID, so the upper bits of RID/BID are always zero).",
        "`default_nettype none",
        f"module {IP_MODULE} (",
        ",\n".join(f"    {p.name}" for p in ports),
        ");",
    ]
    seen = set()
    for p in ports:
        attrs = f'(* X_INTERFACE_INFO = "{p.vlnv} {p.bus} {p.logical}" *)'
        if p.bus not in seen:
            seen.add(p.bus)
            attrs += f' (* X_INTERFACE_PARAMETER = "{_interface_parameters(p.bus, hw)}" *)'
        rng = f"[{p.width - 1}:0] " if p.width > 1 else ""
        lines.append(f"  {attrs}\n  {p.direction} wire {rng}{p.name};")
    for p in ports:
        if p.width != p.inner_width:
            lines.append(f"  wire [{p.inner_width - 1}:0] {p.name}_inner;")
    for p in ports:
        if p.width != p.inner_width and p.direction == "output":
            lines.append(f"  assign {p.name} = {{{p.width - p.inner_width}'b0, {p.name}_inner}};")
        elif p.width != p.inner_width:
            lines.append(f"  assign {p.name}_inner = {p.name}[{p.inner_width - 1}:0];")
            lines.append(f"  wire unused_{p.name}_high = &{{1'b0, {p.name}[{p.width - 1}:{p.inner_width}]}};")
    lines.append("  tellme_top accelerator (")
    lines.append(",\n".join(f"    .{p.inner}({p.name}_inner)" if p.width != p.inner_width else f"    .{p.inner}({p.name})"
                            for p in ports))
    lines += ["  );", "endmodule", "`default_nettype wire", ""]
    return "\n".join(lines)


#: Verilator ``-Wall`` waivers for the Verilog Amaranth generates (``tellme_top.v`` only; the
#: wrapper and the hand-written library lint clean without any). Each rule with the reason it is
#: noise in generated code rather than a defect.
LINT_WAIVERS = {
    "UNUSEDSIGNAL": "Yosys keeps named intermediate wires and unused fields of wide records",
    "PROCASSINIT": "Amaranth gives every register its reset value as an initial value and assigns it "
                   "again in the process that resets it",
    "WIDTHTRUNC": "RTLIL operators have explicit result widths; write_verilog leaves the implicit "
                  "truncation to Verilog's sizing rules, which implement them exactly",
    "WIDTHEXPAND": "as WIDTHTRUNC, for zero/sign extension",
    "CASEINCOMPLETE": "Yosys writes switch processes whose default keeps the previous value",
    "DECLFILENAME": "one file holds the top and all of its submodules (escaped hierarchical names)",
    "VARHIDDEN": "a submodule's wire and an instance in the module above can share a name",
    "UNSIGNED": "comparisons of unsigned values against 0 that Amaranth's range checks produce",
}


def lint_waivers_vlt(generated_file: str = "tellme_top.v") -> str:
    lines = ["`verilator_config", f"// Waivers for the Amaranth-generated {generated_file} only (tellme build)."]
    for rule, why in LINT_WAIVERS.items():
        lines.append(f"// {rule}: {why}")
        lines.append(f'lint_off -rule {rule} -file "*/{generated_file}"')
    return "\n".join(lines) + "\n"


# -- the block design -------------------------------------------------------------------------------

def _tcl_board_part(board: ZynqMPPlatform) -> str:
    """TCL that sets the project's board part (and carrier connections) to the latest installed
    board files matching the board's patterns."""
    lines = [
        "proc tellme_board_part {pattern what} {",
        "    set parts [get_board_parts -quiet -latest_file_version $pattern]",
        "    if {[llength $parts] == 0} {",
        '        error "tellme: no Vivado board files for $what (looked for $pattern); install them '
        '(Vivado: Tools > Vivado Store > Boards, or xhub::refresh_catalog + xhub::install) and run build.sh again"',
        "    }",
        "    return [lindex [lsort -dictionary $parts] end]",
        "}",
        f"set tellme_board_part [tellme_board_part {{{board.board_part_pattern}}} {{{board.title}}}]",
        'puts "tellme: board part $tellme_board_part"',
        "set_property board_part $tellme_board_part [current_project]",
    ]
    if board.board_connections:
        lines.append("set tellme_connections {}")
        for connector, pattern in board.board_connections:
            lines.append(f"set carrier [tellme_board_part {{{pattern}}} {{the {board.title} carrier}}]")
            lines.append(f"lappend tellme_connections {connector} [string map {{:part0: :{connector}:}} $carrier]")
        lines.append('puts "tellme: board connections $tellme_connections"')
        lines.append("set_property board_connections $tellme_connections [current_project]")
    return "\n".join(lines)


def ps_config(hw: HardwareConfig) -> dict[str, str]:
    """The PS configuration the block design sets: exactly the ports the design uses switched on
    (HPM0_FPD, S_AXI_HP0..hp_ports-1 at axi_data_width, IRQ0, pl_clk0), every other port off."""
    config = {
        "PSU__USE__M_AXI_GP0": "1", "PSU__MAXIGP0__DATA_WIDTH": "32",       # HPM0_FPD: registers
        "PSU__USE__M_AXI_GP1": "0", "PSU__USE__M_AXI_GP2": "0",             # HPM1_FPD, HPM0_LPD
        "PSU__USE__S_AXI_GP0": "0", "PSU__USE__S_AXI_GP1": "0",             # HPC0, HPC1
        "PSU__USE__S_AXI_GP6": "0",                                         # LPD
        "PSU__USE__S_AXI_ACP": "0", "PSU__USE__S_AXI_ACE": "0",
        "PSU__USE__IRQ0": "1", "PSU__USE__IRQ1": "0",
        "PSU__FPGA_PL0_ENABLE": "1", "PSU__CRL_APB__PL0_REF_CTRL__SRCSEL": "IOPLL",
        "PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ": f"{hw.clock_mhz:g}",
        "PSU__FPGA_PL1_ENABLE": "0", "PSU__FPGA_PL2_ENABLE": "0", "PSU__FPGA_PL3_ENABLE": "0",
    }
    for p in range(4):                 # S_AXI_HP0..3_FPD are S_AXI_GP2..5 in the PS IP
        gp = p + 2
        used = p < hw.hp_ports
        config[f"PSU__USE__S_AXI_GP{gp}"] = "1" if used else "0"
        if used:
            config[f"PSU__SAXIGP{gp}__DATA_WIDTH"] = str(hw.axi_data_width)
    return config


def block_design_tcl(board: ZynqMPPlatform, hw: HardwareConfig) -> str:
    """The block-design TCL the platform's ``script_after_read`` hook sources."""
    ps, clk = "zynq_ultra_ps_e_0", "zynq_ultra_ps_e_0/pl_clk0"
    last = max(reg.offset for reg in REGISTER_MAP.registers)
    if last + 4 > REGISTER_RANGE:      # the window the block design and the device tree give the registers
        raise AssertionError(f"the register map ends at {last + 4:#x}, past the {REGISTER_RANGE:#x} window")
    config = " \\\n    ".join(f"CONFIG.{k} {{{v}}}" for k, v in ps_config(hw).items())
    port_clocks = ["maxihpm0_fpd_aclk", *(f"saxihp{p}_fpd_aclk" for p in range(hw.hp_ports))]
    lines = [
        f"# tellme block design for {board.title} ({board.part}): generated by tellme build.",
        "# Sourced by tellme.tcl (Amaranth's Vivado script) after the sources are read.",
        _tcl_board_part(board),
        "",
        f"create_bd_design {BD_NAME}",
        f"set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:{board.ps_type} {ps}]",
        "apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e -config {apply_board_preset \"1\"} $ps",
        f"set_property -dict [list \\\n    {config} \\\n] $ps",
        f"set acc [create_bd_cell -type module -reference {IP_MODULE} {IP_CELL}]",
        "set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset_0]",
        "set regbus [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect smartconnect_0]",
        "set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $regbus",
        "",
        "# one clock: pl_clk0 drives the accelerator, the reset block, the register bus and every PS port clock",
        "connect_bd_net [get_bd_pins " + clk + "] " + " ".join(
            f"[get_bd_pins {pin}]" for pin in [f"{IP_CELL}/clk", "proc_sys_reset_0/slowest_sync_clk",
                                               "smartconnect_0/aclk", *(f"{ps}/{c}" for c in port_clocks)]),
        f"connect_bd_net [get_bd_pins {ps}/pl_resetn0] [get_bd_pins proc_sys_reset_0/ext_reset_in]",
        f"connect_bd_net [get_bd_pins proc_sys_reset_0/peripheral_reset] [get_bd_pins {IP_CELL}/rst]",
        "connect_bd_net [get_bd_pins proc_sys_reset_0/interconnect_aresetn] [get_bd_pins smartconnect_0/aresetn]",
        "",
        "# registers: HPM0_FPD -> SmartConnect (AXI4 -> AXI4-Lite) -> the register file",
        f"connect_bd_intf_net [get_bd_intf_pins {ps}/M_AXI_HPM0_FPD] [get_bd_intf_pins smartconnect_0/S00_AXI]",
        f"connect_bd_intf_net [get_bd_intf_pins smartconnect_0/M00_AXI] [get_bd_intf_pins {IP_CELL}/s_axil]",
        "# DDR: each AXI4 manager straight onto its S_AXI_HP port",
        *(f"connect_bd_intf_net [get_bd_intf_pins {IP_CELL}/m_axi_hp{p}] [get_bd_intf_pins {ps}/S_AXI_HP{p}_FPD]"
          for p in range(hw.hp_ports)),
        f"connect_bd_net [get_bd_pins {IP_CELL}/irq] [get_bd_pins {ps}/pl_ps_irq0]",
        "",
        "# addresses: the register file at a fixed window (the driver and the device tree use it),",
        "# the HP ports onto all of the PS's memory",
        f"assign_bd_address -offset {REGISTER_BASE:#010x} -range {REGISTER_RANGE:#x} "
        f"-target_address_space [get_bd_addr_spaces {ps}/Data] [get_bd_addr_segs {IP_CELL}/s_axil/*]",
        "assign_bd_address",
        "validate_bd_design",
        "save_bd_design",
        "",
        "# synthesised with the top (no out-of-context runs), wrapper added for tellme.v to instantiate",
        f"set bd_file [get_files {BD_NAME}.bd]",
        "set_property synth_checkpoint_mode None $bd_file",
        "generate_target all $bd_file",
        "add_files -norecurse [make_wrapper -files $bd_file -top]",
        "",
    ]
    return "\n".join(lines)


def check_board_tcl(board: ZynqMPPlatform) -> str:
    """TCL build.sh runs first: the part is installed and the board files are there."""
    return "\n".join([
        f"# tellme: checks for {board.title} before the build (generated by tellme build)",
        f"if {{[llength [get_parts -quiet {board.part}]] == 0}} {{",
        f'    puts "tellme: the part {board.part} is not installed in this Vivado (add the Zynq UltraScale+ '
        f'MPSoC devices with the Vivado installer)"',
        "    exit 2",
        "}",
        "if {[catch {",
        "    create_project -in_memory -part " + board.part,
        "    " + _tcl_board_part(board).replace("\n", "\n    "),
        "} message]} {",
        '    puts "$message"',
        "    exit 3",
        "}",
        'puts "tellme: board files ok"',
        "exit 0",
        "",
    ])


def _step_hooks(total: int = 7) -> dict[str, str]:
    """The platform hooks: step messages build.sh shows, the block design, and the outputs copied
    out under one base name (tellme.bit + tellme.hwh, what PYNQ's Overlay needs)."""
    def step(n, what):
        return f'puts "tellme-step: {n}/{total} {what}"'
    copy_out = "\n".join([
        step(7, "outputs: deploy/tellme.bit, deploy/tellme.hwh"),
        "set hwh [glob -nocomplain [get_property DIRECTORY [current_project]]/*/sources_1/bd/"
        f"{BD_NAME}/hw_handoff/{BD_NAME}.hwh]",
        "if {[llength $hwh] == 0} {",
        f'    error "tellme: no {BD_NAME}.hwh under the project (.gen/ or .srcs/ sources_1/bd/{BD_NAME}/hw_handoff)"',
        "}",
        f"file copy -force {PROJECT}.bit ../deploy/tellme.bit",
        "file copy -force [lindex $hwh 0] ../deploy/tellme.hwh",
        "set info [open ../deploy/build_info.json w]",
        'puts $info "{\\"vivado\\": \\"[version -short]\\", \\"part\\": \\"[get_property PART [current_project]]\\"}"',
        "close $info",
        'puts "tellme-step: done"',
    ])
    return {
        "script_after_read": "\n".join([step(1, "block design (block_design.tcl)"), "source block_design.tcl",
                                        step(2, "synthesis (synth_design)")]),
        "script_after_synth": step(3, "optimisation and placement (opt_design, place_design)"),
        "script_after_place": step(4, "routing (route_design)"),
        "script_after_route": "\n".join([
            step(5, "timing (phys_opt_design, reports)"),
            "set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]",
            'if {$wns ne "" && $wns < 0} {',
            '    puts "tellme-warning: timing not met (worst setup slack $wns ns): lower clock_mhz in the '
            'hardware file; see tellme_timing.rpt"',
            "}",
        ]),
        "script_before_bitstream": step(6, "bitstream (write_bitstream)"),
        "script_after_bitstream": copy_out,
    }


class _SystemTop(Elaboratable):
    """The platform's top (``tellme.v``): the block design's wrapper, and the board's pins (the
    Kria fan, driven on)."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.bd = Instance(f"{BD_NAME}_wrapper")
        if any(r.name == "fan" for r in platform.resources.values()):
            m.submodules.fan = fan = io.Buffer("o", platform.request("fan", 0, dir="-"))
            m.d.comb += fan.o.eq(1)
        return m


# -- build.sh, Kria firmware -------------------------------------------------------------------------

def build_script(board: ZynqMPPlatform) -> str:
    """build.sh: checks the Vivado version and the board files, runs Amaranth's Vivado script
    with step messages, says which step failed and where its log is; Kria firmware after."""
    firmware = ""
    if board.kria:
        firmware = r"""
say "Kria firmware: bootgen (tellme.bit.bin) and dtc (tellme.dtbo) -> firmware/"
command -v bootgen >/dev/null || fail "bootgen is not on PATH (it comes with Vivado/Vitis, or Debian's xilinx-bootgen)"
command -v dtc >/dev/null || fail "dtc is not on PATH (Debian/Ubuntu: device-tree-compiler)"
cp deploy/tellme.bit firmware/tellme.bit
(cd firmware && bootgen -arch zynqmp -image tellme.bif -process_bitstream bin -w > bootgen.log 2>&1) \
    || fail "bootgen failed; log: firmware/bootgen.log"
rm -f firmware/tellme.bit
dtc -@ -O dtb -o firmware/tellme.dtbo firmware/tellme.dtsi > firmware/dtc.log 2>&1 \
    || fail "dtc failed; log: firmware/dtc.log"
cp firmware/tellme.bit.bin firmware/tellme.dtbo firmware/shell.json deploy/
say "firmware ready: on the board, copy firmware/ to /lib/firmware/xilinx/tellme and run: sudo xmutil unloadapp; sudo xmutil loadapp tellme"
"""
    return f"""#!/bin/bash
# tellme build tree for {board.title} ({board.part}): Vivado -> deploy/tellme.bit + deploy/tellme.hwh
# Generated by tellme build. Run from anywhere: ./build.sh
set -u
cd "$(dirname "$0")"
SUPPORTED="{' '.join(SUPPORTED_VIVADO)}"
say() {{ echo "build.sh: $*"; }}
fail() {{ echo "build.sh: FAILED: $*" >&2; exit 1; }}

command -v vivado >/dev/null || fail "vivado is not on PATH (source <Vivado install>/settings64.sh first)"
VERSION=$(vivado -version 2>/dev/null | sed -n 's/^[Vv]ivado v\\([0-9][0-9]*\\.[0-9]\\).*/\\1/p' | head -n 1)
[ -n "$VERSION" ] || fail "could not read the Vivado version from 'vivado -version'"
case " $SUPPORTED " in
  *" $VERSION "*) say "Vivado $VERSION";;
  *) [ -n "${{TELLME_ANY_VIVADO:-}}" ] || fail "Vivado $VERSION is not one this tree was written for ($SUPPORTED); set TELLME_ANY_VIVADO=1 to try it anyway"
     say "Vivado $VERSION (not in: $SUPPORTED; going on because TELLME_ANY_VIVADO is set)";;
esac

say "0/7 board files and part ({board.board_part_pattern})"
(cd vivado && vivado -mode batch -nojournal -log check_board.log -source check_board.tcl > check_board.out 2>&1) \\
    || fail "$(grep -h '^tellme:' vivado/check_board.out | tail -n 1) (log: vivado/check_board.log)"

say "running Vivado in batch mode; full log: vivado/{PROJECT}.log"
(cd vivado && bash build_{PROJECT}.sh) 2>&1 | while IFS= read -r line; do
  case "$line" in
    tellme-step:*) say "${{line#tellme-step: }}";;
    tellme-warning:*|tellme:*) say "$line";;
    ERROR:*|CRITICAL\\ WARNING:*) echo "    $line";;
  esac
done
STATUS=${{PIPESTATUS[0]}}
if [ "$STATUS" -ne 0 ]; then
  LAST=$(grep -h '^tellme-step:' vivado/{PROJECT}.log 2>/dev/null | tail -n 1)
  fail "Vivado stopped (status $STATUS) in step '${{LAST#tellme-step: }}'; log: vivado/{PROJECT}.log (reports: vivado/*.rpt). \\
Vivado killed without an ERROR line is often out of memory."
fi
[ -f deploy/tellme.bit ] && [ -f deploy/tellme.hwh ] || fail "Vivado finished but deploy/tellme.bit or deploy/tellme.hwh is missing; log: vivado/{PROJECT}.log"
{firmware}
say "done: deploy/ holds tellme.bit, tellme.hwh, the DDR image and the driver; next: tellme deploy --board {board.name} --host USER@ADDR $(pwd)"
"""


def kria_firmware(board: ZynqMPPlatform, hw: HardwareConfig) -> dict[str, str]:
    """The sources of the ``xmutil loadapp`` folder: bootgen's BIF, the device-tree overlay
    (fpga_full firmware, pl_clk0 at the design's clock, the HP ports' AFI widths, the accelerator
    as a generic-uio device with its interrupt) and shell.json."""
    width_code = {128: 0, 64: 1, 32: 2}[hw.axi_data_width]
    afi = []
    for index in range(12):              # HPC0 r/w, HPC1 r/w, HP0 r/w .. HP3 r/w
        port = index // 2 - 2            # HP port number, or < 0 for HPC
        afi.append(f"<{index} {width_code if 0 <= port < hw.hp_ports else 0}>")
    afi += ["<12 0>", "<13 0>", "<14 0x0>", "<15 0x0>"]     # HPM0_FPD at 32 bits, HPM1 off, LPD
    dtsi = f"""/dts-v1/;
/plugin/;
/* tellme on {board.title}: loaded by `xmutil loadapp tellme` (generated by tellme build) */
&fpga_full {{
    firmware-name = "tellme.bit.bin";
    resets = <&zynqmp_reset 116>, <&zynqmp_reset 117>, <&zynqmp_reset 118>, <&zynqmp_reset 119>;
}};
&amba {{
    #address-cells = <2>;
    #size-cells = <2>;
    clocking0: clocking0 {{
        compatible = "xlnx,fclk";
        clocks = <&zynqmp_clk 71>;
        clock-output-names = "fabric_clk";
        #clock-cells = <0>;
        assigned-clocks = <&zynqmp_clk 71>;
        assigned-clock-rates = <{round(hw.clock_mhz * 1e6)}>;
    }};
    afi0: afi0 {{
        compatible = "xlnx,afi-fpga";
        config-afi = {', '.join(afi)};
    }};
    tellme_0: tellme@{REGISTER_BASE:x} {{
        compatible = "generic-uio";
        reg = <0x0 {REGISTER_BASE:#x} 0x0 {REGISTER_RANGE:#x}>;
        interrupt-parent = <&gic>;
        interrupts = <0 {PL_PS_IRQ0_SPI} 4>;
    }};
}};
"""
    return {
        "tellme.bif": "all:\n{\n    [destination_device = pl] tellme.bit\n}\n",
        "tellme.dtsi": dtsi,
        "shell.json": json.dumps({"shell_type": "XRT_FLAT", "num_slots": "1"}, indent=4) + "\n",
    }


# -- the driver for the board ------------------------------------------------------------------------

#: What runs on the board: the driver and the self-check entry point, with everything they import.
DRIVER_ROOTS = ("tellme.board_main", "tellme.runtime", "tellme.sim.board_model")


def _module_imports(name: str, origin: str) -> set[str]:
    """The tellme modules ``name`` (source ``origin``) imports, module level or inside functions
    (``from .pkg import module`` counts the module)."""
    package = name if origin.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(Path(origin).read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tellme"}
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[:len(parts) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] != "tellme":
                continue
            found.add(target)
            found |= {f"{target}.{a.name}" for a in node.names if _is_module(f"{target}.{a.name}")}
    return found


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:          # a parent is a module, not a package: the name is an attribute
        return False


def driver_sources(roots=DRIVER_ROOTS) -> dict[str, Path]:
    """The source files of the board driver: ``roots`` and every tellme module they import (with
    their packages' ``__init__``), as {path in the deploy folder: source file}. The driver needs
    numpy only (no Amaranth, no simulator)."""
    files: dict[str, Path] = {}
    pending, seen = list(roots), set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise BuildError(f"driver: cannot find module {name}")
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]
        relative = Path(*parts, "__init__.py") if spec.submodule_search_locations else Path(*parts[:-1], parts[-1] + ".py")
        files[relative.as_posix()] = Path(spec.origin)
        pending += sorted(_module_imports(name, spec.origin))
    return dict(sorted(files.items()))


RUN_ON_BOARD = '''#!/usr/bin/env python3
"""Load the tellme overlay on this board and generate (or self-check). See --help."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tellme.board_main import main  # noqa: E402

sys.exit(main())
'''


# -- the plan -----------------------------------------------------------------------------------------

@dataclass
class BuildPlan:
    """What ``tellme build`` does: printed by ``--dry-run``, saved as ``plan.json``."""
    board: ZynqMPPlatform
    model: ModelConfig
    hw: HardwareConfig
    out: Path
    source: str
    resources: dict | None = None
    estimate: str = "not estimated"
    files: dict[str, str] = field(default_factory=dict)

    def utilisation(self) -> dict[str, dict]:
        if self.resources is None:
            return {}
        from .estimate import budget_used
        return {key: {"used": budget_used(self.resources, key), "capacity": cap,
                      "percent": round(100.0 * budget_used(self.resources, key) / cap, 1) if cap else None}
                for key, cap in self.board.pl_resources.items()}

    def to_dict(self) -> dict:
        return {"board": self.board.describe(), "model": self.model.to_dict(), "hardware": self.hw.to_dict(),
                "config_hash": f"{design_hash(self.model, self.hw):#010x}", "source": self.source,
                "out": str(self.out), "estimate": self.estimate, "resources": self.utilisation(),
                "register_base": f"{REGISTER_BASE:#010x}", "supported_vivado": list(SUPPORTED_VIVADO),
                "files": self.files}

    def text(self) -> str:
        b, hw = self.board, self.hw
        lines = [f"tellme build: {self.model.name} ({self.source}) on {b.title} ({b.part}) -> {self.out}",
                 f"  hardware: {hw.clock_mhz:g} MHz, TLMM G={hw.tlmm_group} x {hw.tlmm_lanes} lanes x "
                 f"{hw.tlmm_tokens} tokens, {hw.ew_lanes} element-wise lanes, {hw.hp_ports} HP ports x "
                 f"{hw.axi_data_width} bits, weight buffer in {'URAM' if b.has_uram else 'block RAM'}, "
                 f"context {hw.max_context}, LM head {hw.lm_head_format}, attention {hw.attn_format}",
                 f"  block design: {b.ps_type} (board preset of {b.board_part_pattern}), pl_clk0 {hw.clock_mhz:g} MHz "
                 f"from IOPLL, HPM0_FPD -> registers at {REGISTER_BASE:#010x}, S_AXI_HP0..{hw.hp_ports - 1}_FPD "
                 f"at {hw.axi_data_width} bits, irq -> pl_ps_irq0",
                 f"  resources ({self.estimate}):"]
        if self.resources is None:
            lines.append("    not estimated")
        for key, row in self.utilisation().items():
            lines.append(f"    {key:7} {row['used']:>10,.0f} of {row['capacity']:>9,}  ({row['percent']:5.1f} %)")
        lines.append("  files:")
        lines += [f"    {name:28} {what}" for name, what in self.files.items()]
        lines.append(f"  then: {self.out}/build.sh (Vivado {', '.join(SUPPORTED_VIVADO)}), "
                     f"then tellme deploy --board {b.name} --host USER@ADDR {self.out}")
        return "\n".join(lines)


def _planned_files(board: ZynqMPPlatform) -> dict[str, str]:
    files = {
        "build.sh": "checks Vivado and the board files, runs Vivado with step messages",
        "plan.json": "this plan (board, model, hardware, resource estimate)",
        "vivado/tellme.tcl": "Amaranth's Vivado batch script (XilinxPlatform), hooks source the block design",
        "vivado/tellme.v": "the platform top: block-design wrapper" + (" + fan pin" if board.kria else ""),
        "vivado/tellme.xdc": "Amaranth's constraints (board pins)",
        "vivado/block_design.tcl": "zynq_ultra_ps_e + tellme_0 (module reference) + reset + register bus",
        "vivado/check_board.tcl": "looks up the installed board files",
        "vivado/tellme_ip.v": "the accelerator with Vivado interface attributes",
        "vivado/tellme_top.v": "the accelerator's Verilog (Amaranth)",
        "vivado/lint_waivers.vlt": "Verilator -Wall waivers of the generated Verilog",
        "deploy/": "driver (tellme/ subset), run_on_board.py, hardware.json, design.json, self_check.json, "
                   "the DDR image tellme.img",
    }
    if board.kria:
        files["firmware/"] = "tellme.bif, tellme.dtsi, shell.json (+ tellme.bit.bin, tellme.dtbo from build.sh)"
    return files


def build_verilog(top) -> str:
    """The Verilog of the top level ``top`` as the build tree holds it: Amaranth's, less the
    all-zero ``initial`` blocks of its memories (:func:`tellme.gen.verilog.without_zero_memory_init`:
    Vivado maps a memory with initial contents to UltraRAM only without them, and the FPGA
    configures every RAM to zero anyway).

    Cached in ``<build root>/verilog`` under a key of the model, the hardware (less the board and
    the clock, which do not change the design: the KV260, KR260 and ZCU104 share it), the RAM style, the
    Amaranth version and every source file of the tellme package (a conversion of
    bitnet-b1.58-large takes minutes)."""
    from .verilog import verilog_of, without_zero_memory_init
    key = hashlib.sha256(json.dumps({
        "model": top.model.to_dict(), "hardware": design_hardware(top.hw), "ram_style": top.ram_style,
        "fault_port": top.fault_port, "amaranth": importlib.metadata.version("amaranth"),
        "sources": _source_digest()}, sort_keys=True).encode()).hexdigest()[:20]
    path = build_root() / "verilog" / f"tellme_top-{key}.v"
    try:
        return path.read_text()
    except OSError:
        pass
    text = without_zero_memory_init(verilog_of(top, "tellme_top"))[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return text


@functools.cache
def _source_digest() -> str:
    """A digest of every file of the tellme package (Python and the Verilog library)."""
    digest = hashlib.sha256()
    roots = {Path(importlib.util.find_spec(name).origin).parent
             for name in ("tellme", "tellme.hw", "tellme.gen", "tellme.sim", "tellme.boards", "tellme.contract")}
    for root in sorted(roots):
        for path in sorted(root.rglob("*")):
            if path.suffix in (".py", ".v") and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def plan_build(model: ModelConfig, hw: HardwareConfig, board: ZynqMPPlatform, out, *, source: str) -> BuildPlan:
    """The plan (nothing generated yet). Raises :class:`tellme.config.ConfigError` when the board
    cannot host ``hw`` (clock, ports)."""
    if hw.board != board.name:
        raise BuildError(f"hardware: the configuration is for board {hw.board!r}, the build for {board.name!r}")
    board.check_hardware(hw)
    hw.check_model(model)
    return BuildPlan(board, model, hw, Path(out), source, files=_planned_files(board))


def estimate_resources(plan: BuildPlan, verilog_text: str, *, progress: Callable[[str], None] | None = None) -> None:
    """Fill ``plan.resources`` with a Yosys estimate of the whole top (cached) and refuse, with
    the numbers, a design that does not fit the board."""
    from .estimate import fits, synth_resources, yosys_version
    plan.resources = synth_resources(verilog_text, name="tellme_top", uram=plan.board.has_uram, progress=progress)
    plan.estimate = (f"Yosys synth_xilinx -family xcup estimate ({yosys_version().split(' (')[0]}), not Vivado's "
                     f"figures")
    problems = fits(plan.resources, plan.board.pl_resources)
    if problems:
        raise BuildError(f"{plan.model.name} with this hardware configuration does not fit {plan.board.title} "
                         f"(Yosys estimate): " + "; ".join(problems) + ". Choose a smaller hardware file "
                         "(--hardware: fewer tlmm_lanes, tlmm_tokens, ew_lanes or urams_per_bank) or a larger board")


def check_out_folder(out: Path, *, overwrite: bool) -> None:
    """Refuse an output path that exists and is not an empty folder, unless ``overwrite``."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise BuildError(f"{out}: exists and is not an empty folder (give --force to replace it)")


def write_build(plan: BuildPlan, top, verilog_text: str, *, image_writer: Callable[[Path], None],
                self_check: dict, tokenizer: Path | None = None, overwrite: bool = False,
                progress: Callable[[str], None] | None = None) -> None:
    """Write the build tree of ``plan`` for the generated top level ``top`` (Verilog
    ``verilog_text``): into a temporary folder beside ``plan.out``, renamed into place at the end,
    so a failure leaves nothing half-written. ``image_writer(path)`` writes the DDR image;
    ``self_check`` (prompt ids and the golden model's tokens) goes to deploy/self_check.json."""
    from .top import top_ports
    from .verilog import verilog_library_sources
    out = plan.out
    check_out_folder(out, overwrite=overwrite)
    say = progress or (lambda message: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        board, hw = plan.board, plan.hw
        # vivado/: Amaranth's plan, with the accelerator's sources added to the platform
        platform = type(board)()
        platform.add_file("tellme_top.v", verilog_text)
        for path in verilog_library_sources(verilog_text):
            platform.add_file(path.name, path.read_text())
        platform.add_file("tellme_ip.v", ip_wrapper_verilog(top, hw))
        platform.add_file("block_design.tcl", block_design_tcl(board, hw))
        platform.add_file("check_board.tcl", check_board_tcl(board))
        platform.add_file("lint_waivers.vlt", lint_waivers_vlt())
        amaranth_plan = platform.build(_SystemTop(), name=PROJECT, do_build=False, **_step_hooks())
        amaranth_plan.extract(work / "vivado")
        (work / "build.sh").write_text(build_script(board))
        (work / "build.sh").chmod(0o755)
        if board.kria:
            (work / "firmware").mkdir()
            for name, text in kria_firmware(board, hw).items():
                (work / "firmware" / name).write_text(text)
        # deploy/: the driver, its entry point, the design's description, the image
        deploy = work / "deploy"
        for relative, source in driver_sources().items():
            (deploy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, deploy / relative)
        (deploy / "run_on_board.py").write_text(RUN_ON_BOARD)
        (deploy / "run_on_board.py").chmod(0o755)
        (deploy / "hardware.json").write_text(json.dumps(hw.to_dict(), indent=2) + "\n")
        design = top_ports(top)
        design.update(board=board.name, register_base=REGISTER_BASE, ip_name=IP_CELL, bitstream="tellme.bit",
                      image="tellme.img")
        (deploy / "design.json").write_text(json.dumps(design, indent=2) + "\n")
        (deploy / "self_check.json").write_text(json.dumps(self_check, indent=2) + "\n")
        if tokenizer is not None:
            shutil.copyfile(tokenizer, deploy / "tokenizer.json")
        say("  writing the DDR image ...")
        image_writer(deploy / "tellme.img")
        (work / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
