"""Stream routing units of the top level (hw/stream_switch.py) under Verilator."""

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring

from tellme.hw.compose import forward
from tellme.hw.pipeline import f32_vec
from tellme.hw.stream_switch import Ftz, StreamDemux, StreamMux
from tellme.sim.rtl import run_cocotb

TB = "tellme.sim.tb.tb_stream_switch"


class Clocked(wiring.Component):
    """A combinational unit behind a top that has ``clk``/``rst`` (one toggling register), so the
    testbench's clock and reset have somewhere to go; every port is forwarded unchanged."""

    def __init__(self, unit: wiring.Component):
        self.unit = unit
        super().__init__(dict(unit.signature.members))

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = self.unit
        toggle = Signal()
        m.d.sync += toggle.eq(~toggle)
        forward(m, self, "", self.unit)
        return m


@pytest.mark.rtl
def test_stream_mux():
    run_cocotb(Clocked(StreamMux(shape=f32_vec(4), count=3)), name="stream_mux", test_module=TB, testcase="test_mux",
               parameters={"count": 3, "lanes": 4})


@pytest.mark.rtl
def test_stream_demux():
    run_cocotb(Clocked(StreamDemux(shape=f32_vec(4), count=3)), name="stream_demux", test_module=TB, testcase="test_demux",
               parameters={"count": 3, "lanes": 4})


@pytest.mark.rtl
def test_ftz():
    run_cocotb(Clocked(Ftz(lanes=4)), name="ftz", test_module=TB, testcase="test_ftz", parameters={"lanes": 4})


def test_parameters():
    with pytest.raises(ValueError, match="count"):
        StreamMux(shape=8, count=0)
    with pytest.raises(ValueError, match="lanes"):
        Ftz(lanes=0)
