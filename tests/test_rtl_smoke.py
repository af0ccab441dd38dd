"""Smoke test of the RTL flow: StreamBuffer under Verilator + cocotb, and proof that the
testbench catches broken designs (so a passing run means something)."""

from __future__ import annotations

import re

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.hw.stream_buffer import StreamBuffer
from tellme.sim.rtl import RTLTestFailure, run_cocotb, waves_format
from tellme.sim.tb.streams import pack_struct, struct_fields, unpack_struct

TB = "tellme.sim.tb.tb_stream_buffer"

# An odd width, so nothing can lean on byte alignment.
PLAIN_SHAPE = 13
# A signed field in the middle, so sign extension and field offsets both matter.
STRUCT_SHAPE = data.StructLayout({"last": 1, "value": signed(11), "tag": 4})


def tb_parameters(shape, **overrides) -> dict:
    fields = struct_fields(shape) if isinstance(shape, data.StructLayout) else None
    return {"fields": fields, "beats": 2000, **overrides}


# -- pure Python checks (no simulator) ------------------------------------------------------------

def test_struct_packing_matches_amaranth():
    fields = struct_fields(STRUCT_SHAPE)
    assert fields == [("last", 1, False), ("value", 11, True), ("tag", 4, False)]
    # Amaranth's own view of the same bits: `last` at bit 0, `value` at bits 1..11.
    raw = STRUCT_SHAPE.const({"last": 1, "value": -3, "tag": 9}).as_value().value
    assert pack_struct(fields, {"last": 1, "value": -3, "tag": 9}) == raw
    assert unpack_struct(fields, raw) == {"last": 1, "value": -3, "tag": 9}
    with pytest.raises(ValueError, match="value"):
        pack_struct(fields, {"last": 0, "value": 1024, "tag": 0})
    with pytest.raises(ValueError, match="missing"):
        pack_struct(fields, {"last": 0, "value": 0})


@pytest.mark.parametrize("bad_shape", [0, -1, "8", None, True, 1.5])
def test_stream_buffer_rejects_bad_shape(bad_shape):
    with pytest.raises(ValueError, match="StreamBuffer shape"):
        StreamBuffer(shape=bad_shape)


# -- the real thing ------------------------------------------------------------------------------

@pytest.mark.rtl
@pytest.mark.parametrize("shape", [PLAIN_SHAPE, STRUCT_SHAPE], ids=["plain13", "struct16"])
def test_stream_buffer(shape):
    result = run_cocotb(StreamBuffer(shape=shape), name="stream_buffer", test_module=TB,
                        parameters=tb_parameters(shape))
    assert set(result.tests) == {"test_random_stalls", "test_full_throughput",
                                 "test_backpressure", "test_no_combinational_paths"}
    assert set(result.tests.values()) == {"passed"}


# -- broken designs the testbench must reject --------------------------------------------------

class DroppingStreamBuffer(wiring.Component):
    """A one-register stream stage that silently loses its 100th beat (stream rules obeyed)."""

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        accepted = Signal(range(1000))
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += accepted.eq(accepted + 1)
            with m.If(accepted != 99):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        return m


class OverwritingStreamBuffer(wiring.Component):
    """A register that ignores backpressure: it always accepts and overwrites a stalled beat,
    breaking the rule that payload holds until the beat moves."""

    def __init__(self, shape):
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(1)
        with m.If(self.i.valid):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        return m


@pytest.mark.rtl
def test_testbench_catches_dropped_beat():
    with pytest.raises(RTLTestFailure) as caught:
        run_cocotb(DroppingStreamBuffer(PLAIN_SHAPE), name="dropping_buffer", test_module=TB,
                   testcase="test_random_stalls",
                   parameters=tb_parameters(PLAIN_SHAPE, beats=300,
                                            stall_probabilities=[[0.3, 0.3]]))
    failure = caught.value
    assert list(failure.failed) == ["test_random_stalls"]
    # The design loses beat 99; the scoreboard reports the first position whose value differs,
    # which is later if beat 100 happens to equal beat 99.
    message = failure.failed["test_random_stalls"]
    position = re.search(r"beat (\d+) is", message)
    assert position is not None and int(position.group(1)) >= 99, message
    # FST where the LZ4 headers are installed, VCD otherwise (see waves_format).
    assert failure.waves is not None and failure.waves.suffix == "." + waves_format()
    assert failure.waves.stat().st_size > 0
    assert str(failure.waves) in str(failure)


@pytest.mark.rtl
def test_testbench_catches_protocol_violation():
    with pytest.raises(RTLTestFailure) as caught:
        run_cocotb(OverwritingStreamBuffer(PLAIN_SHAPE), name="overwriting_buffer",
                   test_module=TB, testcase="test_random_stalls", waves_on_failure=False,
                   parameters=tb_parameters(PLAIN_SHAPE, beats=300,
                                            stall_probabilities=[[0.0, 0.5]]))
    message = caught.value.failed["test_random_stalls"]
    assert "payload changed" in message, message
    assert caught.value.waves is None
