"""The act buffer: parameter checks, and under Verilator the cocotb tests in
``sim/tb/tb_act_buffer.py`` on :class:`ActTlmm`, an ActBuffer driving a TlmmEngine, bit for bit
against ``golden.tlmm`` (the testbench's docstring lists what is covered).
"""

from __future__ import annotations

import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from tellme.hw.act_buffer import (ActBuffer, read_command_layout, scales_layout,
                                  write_command_layout)
from tellme.hw.compose import forward, prefixed_members
from tellme.hw.tlmm import TlmmEngine, act_layout, command_layout, result_layout
from tellme.sim.rtl import RTLTestFailure, run_cocotb
from tellme.sim.tb.streams import struct_fields

TB = "tellme.sim.tb.tb_act_buffer"
BUFFER_PORTS = ["wr_cmd", "q", "scale", "rd_cmd", "scales", "written"]
ENGINE_PORTS = ["cmd", "codes", "o"]


class ActTlmm(wiring.Component):
    """An ActBuffer whose ``act`` feeds a TlmmEngine's ``act``; the other ports of both outside
    under their own names, and a copy of the ``act`` handshake (``mon_act_valid``,
    ``mon_act_ready``, ``mon_act_payload``) for the testbench's monitor."""

    def __init__(self, *, max_rows: int, **params):
        self.buf = ActBuffer(**params)
        self.tlmm = TlmmEngine(group=self.buf.group, lanes=self.buf.tlmm_lanes, tokens=self.buf.tokens,
                               max_rows=max_rows, max_blocks=self.buf.max_blocks)
        super().__init__({
            **prefixed_members(self.buf, "", BUFFER_PORTS),
            **prefixed_members(self.tlmm, "", ENGINE_PORTS),
            "mon_act_valid": Out(1),
            "mon_act_ready": Out(1),
            "mon_act_payload": Out(act_layout(self.buf.group)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.buf, m.submodules.tlmm = self.buf, self.tlmm
        wiring.connect(m, self.buf.act, self.tlmm.act)
        forward(m, self, "", self.buf, BUFFER_PORTS)
        forward(m, self, "", self.tlmm, ENGINE_PORTS)
        m.d.comb += [self.mon_act_valid.eq(self.buf.act.valid), self.mon_act_ready.eq(self.buf.act.ready),
                     self.mon_act_payload.eq(self.buf.act.payload)]
        return m


# (G, L, P, T, C, K max): L and G coprime, K max not a multiple of G or L's cases.
SETS = {
    "g3l4p4t2": dict(group=3, lanes=4, tlmm_lanes=4, tokens=2, max_tokens=6, max_inputs=70,
                     max_tiles=7, max_rows=6),
    "g5l4p4t2": dict(group=5, lanes=4, tlmm_lanes=4, tokens=2, max_tokens=6, max_inputs=70,
                     max_tiles=7, max_rows=6),
}
SLOW_SETS = {
    # The KV260's G, L, T with 16 lanes.
    "g5l8p16t8": dict(group=5, lanes=8, tlmm_lanes=16, tokens=8, max_tokens=20, max_inputs=300,
                      max_tiles=3, max_rows=8),
    # L > 2G (several groups per beat, a beat taken every few cycles), P and T odd.
    "g4l16p3t3": dict(group=4, lanes=16, tlmm_lanes=3, tokens=3, max_tokens=7, max_inputs=50,
                      max_tiles=3, max_rows=5),
    # L = 1, G = 2, one lane, T = 1.
    "g2l1p1t1": dict(group=2, lanes=1, tlmm_lanes=1, tokens=1, max_tokens=3, max_inputs=9,
                     max_tiles=3, max_rows=4),
}


def parameters(dut: ActTlmm, params: dict, **extra) -> dict:
    buf = dut.buf
    return {
        **params,
        "fields": {
            "wr_cmd": struct_fields(write_command_layout(buf.max_inputs, buf.max_tokens)),
            "rd_cmd": struct_fields(read_command_layout(buf.max_blocks, buf.max_tokens, buf.max_tiles)),
            "scales": struct_fields(scales_layout(buf.tokens)),
            "cmd": struct_fields(command_layout(buf.tokens, buf.max_blocks, params["max_rows"])),
            "o": struct_fields(result_layout(buf.tokens)),
            "act": struct_fields(act_layout(buf.group)),
        },
        **extra,
    }


def run(params: dict, testcase=None, **extra):
    dut = ActTlmm(**params)
    result = run_cocotb(dut, name="act_tlmm", test_module=TB, testcase=testcase,
                        parameters=parameters(dut, params, **extra), timeout=1200)
    assert set(result.tests.values()) == {"passed"}, result.tests
    print(f"{result.name}: build {result.build_seconds:.1f} s, simulation {result.sim_seconds:.1f} s, "
          f"seed {result.seed}")
    return result


@pytest.mark.rtl
@pytest.mark.parametrize("key", list(SETS))
def test_act_buffer(key, tmp_path):
    results = tmp_path / "results.json"
    result = run(SETS[key], results=str(results))
    assert set(result.tests) == {"test_program", "test_throughput"}
    print(results.read_text())


@pytest.mark.rtl
def test_act_buffer_harness_catches_wrong_activation():
    """One activation sent on ``q`` changed (the expected rows stay those of the true value):
    the TLMM results must differ and the row scoreboard fail (the act comparison is off)."""
    params = SETS["g3l4p4t2"]
    dut = ActTlmm(**params)
    with pytest.raises(RTLTestFailure) as caught:
        run_cocotb(dut, name="act_tlmm", test_module=TB, testcase="test_program", waves_on_failure=False,
                   parameters=parameters(dut, params, corrupt=True, check_act=False, stalls=[{}]))
    message = caught.value.failed["test_program"]
    assert "acc" in message and "expected" in message, message


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("key", list(SLOW_SETS))
def test_act_buffer_more(key):
    run(SLOW_SETS[key])


def test_parameters():
    buf = ActBuffer(group=5, lanes=8, tlmm_lanes=64, tokens=8, max_tokens=128, max_inputs=4096)
    assert (buf.max_groups, buf.max_blocks, buf.depth, buf.max_tiles) == (820, 13, 128 * 820, 255)
    assert buf.q.payload.shape().size == 8 * 8 + 1
    assert buf.act.payload.shape() == act_layout(5)
    Fragment.get(buf, None)   # the KV260 size elaborates
    for name, value in [("group", 6), ("group", 1), ("group", True), ("lanes", 0), ("lanes", 2.0),
                        ("tlmm_lanes", -1), ("tokens", None), ("max_tokens", 0), ("max_inputs", "70"),
                        ("max_tiles", False)]:
        params = dict(group=5, lanes=8, tlmm_lanes=4, tokens=2, max_tokens=6, max_inputs=70)
        params[name] = value
        with pytest.raises(ValueError, match=name):
            ActBuffer(**params)
