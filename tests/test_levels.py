"""Logic levels of mapped netlists (gen/levels.py) and per-unit synthesis (synth_resources with
units=True): hand-built netlists with known paths, and a small Verilog design through Yosys."""

from __future__ import annotations

import pytest

from tellme.gen.estimate import modules_to_depth, synth_resources, unit_longest_paths, units_at_depth
from tellme.gen.levels import CombinationalLoopError, instance_of, longest_paths

LUT_PORTS = {"I0": "input", "I1": "input", "I2": "input", "O": "output"}
FF_PORTS = {"C": "input", "CE": "input", "D": "input", "R": "input", "Q": "output"}
CARRY_PORTS = {"CI": "input", "CI_TOP": "input", "DI": "input", "S": "input", "O": "output", "CO": "output"}


def cell(kind, ports, **connections):
    return {"type": kind, "port_directions": ports, "connections": connections, "parameters": {}}


def netlist(cells, ports=None, netnames=None):
    return {"modules": {"top": {"ports": ports or {}, "cells": cells, "netnames": netnames or {}}}}


def test_instance_names_come_from_flatten_prefixes():
    assert instance_of("$flatten\\a.\\b.$abc$1$lut$aiger$o2") == "a.b"
    assert instance_of("$flatten\\mul0.$auto$ff.cc:337:slice$4793") == "mul0"
    assert instance_of("$abc$7$lut") == ""


def test_lut_levels_and_carry_chains_between_registers():
    # reg r0 -> LUT -> LUT -> CARRY (enters the chain) -> CARRY (CI, continues) -> reg in "u.v"
    cells = {
        "$flatten\\u.$r0": cell("FDRE", FF_PORTS, C=[1], CE=[], D=[2], R=[], Q=[10]),
        "$flatten\\u.$l1": cell("LUT3", LUT_PORTS, I0=[10], I1=[10], I2=[10], O=[11]),
        "$flatten\\u.$l2": cell("LUT3", LUT_PORTS, I0=[11], I1=[10], I2=[10], O=[12]),
        "$flatten\\u.\\v.$c1": cell("CARRY4", CARRY_PORTS, CI=[], CI_TOP=[], DI=[12], S=[12], O=[13], CO=[14]),
        "$flatten\\u.\\v.$c2": cell("CARRY4", CARRY_PORTS, CI=[14], CI_TOP=[], DI=[], S=[10], O=[15], CO=[16]),
        "$flatten\\u.\\v.$r1": cell("FDRE", FF_PORTS, C=[1], CE=[], D=[15], R=[], Q=[17]),
        # a short path into another register of u: one LUT
        "$flatten\\u.$r2": cell("FDRE", FF_PORTS, C=[1], CE=[], D=[11], R=[], Q=[18]),
    }
    names = {"\\u.count": {"hide_name": 0, "bits": [10]}, "\\u.\\v.total": {"hide_name": 0, "bits": [17]}}
    paths = longest_paths(netlist(cells, netnames=names), "top")
    assert paths["u.v"]["lut_levels"] == 2 and paths["u.v"]["carry_chains"] == 1
    assert paths["u.v"]["cost"] == 3
    assert paths["u.v"]["from"] == "u.count" and paths["u.v"]["to"] == "u.v.total"
    assert paths["u"]["lut_levels"] == 1 and paths["u"]["carry_chains"] == 0


def test_combinational_dsp_and_wide_muxes_and_ports():
    dsp_ports = {"A": "input", "B": "input", "P": "output"}
    dsp = cell("DSP48E2", dsp_ports, A=[20], B=[20], P=[21])
    dsp["parameters"] = {"AREG": "0", "BREG": "0", "MREG": "0", "PREG": "0"}
    cells = {
        "$dsp": dsp,
        "$mux": cell("MUXF7", {"I0": "input", "I1": "input", "S": "input", "O": "output"}, I0=[21], I1=[21], S=[20], O=[22]),
        "$lut": cell("LUT3", LUT_PORTS, I0=[22], I1=[20], I2=[20], O=[23]),
    }
    ports = {"a": {"direction": "input", "bits": [20]}, "y": {"direction": "output", "bits": [23]}}
    paths = longest_paths(netlist(cells, ports), "top")
    assert paths[""] == {"cost": 1 + 3, "lut_levels": 1, "carry_chains": 0, "dsp_levels": 1,
                         "from": "<input a>", "to": "<output y>"}


def test_a_combinational_loop_is_reported():
    cells = {"$a": cell("LUT3", LUT_PORTS, I0=[30], I1=[30], I2=[30], O=[31]),
             "$b": cell("LUT3", LUT_PORTS, I0=[31], I1=[31], I2=[31], O=[30])}
    with pytest.raises(CombinationalLoopError, match="loop"):
        longest_paths(netlist(cells, {"y": {"direction": "output", "bits": [31]}}), "top")


# Module names as Amaranth writes them: the instance's path (unit_resources relies on it).
VERILOG = r"""
module \levels_top.u_and (input clk, input [35:0] a, output reg y);
  always @(posedge clk) y <= &a;
endmodule
module \levels_top.u_add (input clk, input [15:0] a, input [15:0] b, output reg [15:0] s);
  always @(posedge clk) s <= a + b;
endmodule
module levels_top(input clk, input [35:0] x, input [15:0] p, input [15:0] q, output y, output [15:0] s);
  reg [35:0] xr; reg [15:0] pr, qr;
  always @(posedge clk) begin xr <= x; pr <= p; qr <= q; end
  \levels_top.u_and  u_and(.clk(clk), .a(xr), .y(y));
  \levels_top.u_add  u_add(.clk(clk), .a(pr), .b(qr), .s(s));
endmodule
"""


def test_per_unit_synthesis_counts_instances_and_levels(tmp_path):
    res = synth_resources(VERILOG, name="levels_top", units=True, cache_dir=tmp_path)
    units = res["units"]
    assert set(units) == {"", "u_and", "u_add"}
    assert units["u_and"]["ff"] == 1 and units["u_add"]["ff"] == 16
    assert units[""]["ff"] == res["ff"] == 36 + 32 + 17     # the top's input registers + the units'
    assert units[""]["own_lut_equiv"] == 0
    paths = res["longest_paths"]
    # 36 inputs need at least two levels of 6-input LUTs (ABC's area mapping makes it three);
    # an adder: at most one LUT (the propagate) into one carry chain
    assert paths["u_and"]["lut_levels"] in (2, 3) and paths["u_and"]["carry_chains"] == 0
    assert paths["u_add"]["carry_chains"] == 1 and paths["u_add"]["lut_levels"] <= 1
    assert "-flatten" not in next(l for l in res["script"].splitlines() if l.startswith("synth_xilinx"))


def test_units_at_depth_add_up_to_the_whole_top():
    def res(lut, ff=0):
        return {"lut_equiv": lut, "lut": lut, "ff": ff, "dsp": 0, "bram36": 0, "uram": 0, "carry8_equiv": 0}
    per_instance = {"": res(100, 50), "a": res(60, 30), "a.x": res(25, 10), "a.y": res(30, 20),
                    "a.y.deep": res(5), "b": res(30, 10)}
    units = units_at_depth(per_instance, 2)
    assert set(units) == {"top (own)", "a (own)", "a.x", "a.y", "b"}
    assert units["top (own)"]["lut_equiv"] == 10 and units["a (own)"]["lut_equiv"] == 5
    assert sum(u["lut_equiv"] for u in units.values()) == 100
    assert sum(u["ff"] for u in units.values()) == 50
    longest = {"": {"cost": 2}, "a.y.deep": {"cost": 9}, "a.y": {"cost": 4}, "a": {"cost": 3}, "b": {"cost": 1}}
    paths = unit_longest_paths(longest, units)
    assert paths["a.y"] == {"cost": 9, "instance": "a.y.deep"}     # the worst under it
    assert paths["a (own)"] == {"cost": 3, "instance": "a"}        # its own instance only
    assert paths["top (own)"]["cost"] == 2 and "a.x" not in paths


def test_units_to_a_depth_keep_only_those_instances(tmp_path):
    assert modules_to_depth("module \\t.a (x);\nmodule \\t.a.b (y);\nmodule t (z);\n", "t", 1) == ["t.a"]
    res = synth_resources(VERILOG, name="levels_top", units=1, cache_dir=tmp_path)
    assert set(res["units"]) == {"", "u_and", "u_add"}
    assert res["units"]["u_add"]["ff"] == 16
    assert "keep_hierarchy 1 \\levels_top.u_and" in res["script"] and "-flatten" in res["script"]
    assert res["longest_paths"]["u_add"]["carry_chains"] == 1
