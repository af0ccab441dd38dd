"""Smoke test of the RTL flow: StreamBuffer under Verilator + cocotb, and proof that the
testbench catches broken designs (so a passing run means something)."""

from __future__ import annotations

import os
import re

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.hw.stream_buffer import StreamBuffer
from tellme.sim.rtl import RTLTestFailure, build_cache_limit, prune_builds, run_cocotb, waves_format
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
    # run_cocotb fails unless every requested test ran and passed.
    run_cocotb(StreamBuffer(shape=shape), name="stream_buffer", test_module=TB,
               testcase=["test_random_stalls", "test_full_throughput", "test_backpressure",
                         "test_no_combinational_paths"],
               parameters=tb_parameters(shape))


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
        # A fixed seed: under some stall patterns the overwrite replaces a beat in the very cycle
        # it is first offered, which shows as a lost beat (the scoreboard's failure), not as a
        # held payload changing (a clean CI run drew such a seed); seed 1's stalls hold one.
        run_cocotb(OverwritingStreamBuffer(PLAIN_SHAPE), name="overwriting_buffer", seed=1,
                   test_module=TB, testcase="test_random_stalls", waves_on_failure=False,
                   parameters=tb_parameters(PLAIN_SHAPE, beats=300,
                                            stall_probabilities=[[0.0, 0.5]]))
    message = caught.value.failed["test_random_stalls"]
    assert "payload changed" in message, message
    assert caught.value.waves is None


# -- tests that did not run must not pass --------------------------------------------------------

RUNNER_TB = "tellme.sim.tb.tb_runner_checks"


def _run_checks(testcase):
    # The design is the plain StreamBuffer of test_stream_buffer (same build); the tests of
    # tb_runner_checks do not look at it.
    return run_cocotb(StreamBuffer(shape=PLAIN_SHAPE), name="stream_buffer",
                      test_module=RUNNER_TB, testcase=testcase)


@pytest.mark.rtl
def test_runner_passes_what_ran():
    # The control: the same module and design pass when the requested test runs and passes.
    result = _run_checks("runner_passes")
    assert result.tests == {"runner_passes": "passed"}


@pytest.mark.rtl
def test_runner_fails_on_a_requested_test_that_does_not_exist():
    with pytest.raises(RTLTestFailure) as caught:
        _run_checks(["runner_passes", "runner_no_such_test"])
    failure = caught.value
    assert list(failure.failed) == ["runner_no_such_test"]
    assert "requested but did not run" in failure.failed["runner_no_such_test"]
    assert "runner_no_such_test" in str(failure) and RUNNER_TB in str(failure)
    assert failure.waves is None  # nothing failed in the simulator, so nothing to trace


@pytest.mark.rtl
def test_runner_fails_on_a_test_that_skips_itself():
    with pytest.raises(RTLTestFailure) as caught:
        _run_checks("runner_skips_itself")
    failure = caught.value
    assert list(failure.failed) == ["runner_skips_itself"]
    assert failure.failed["runner_skips_itself"].startswith("skipped")
    assert "runner_skips_itself: skipped" in str(failure)
    # The kept run directory's log says why the test skipped.
    assert "this test skips itself" in (failure.run_dir / "sim.log").read_text()


@pytest.mark.rtl
def test_runner_fails_on_a_skipped_test_when_running_the_whole_module():
    with pytest.raises(RTLTestFailure) as caught:
        _run_checks(None)
    failed = caught.value.failed
    assert set(failed) == {"runner_skips_itself", "runner_marked_skip"}, failed
    assert all(message.startswith("skipped") for message in failed.values()), failed


@pytest.mark.parametrize("testcase", ["", " , ", []])
def test_runner_rejects_an_empty_testcase(testcase):
    # Refused before the design is looked at, so no design is needed.
    with pytest.raises(ValueError, match="names no cocotb test"):
        run_cocotb(None, name="stream_buffer", test_module=RUNNER_TB, testcase=testcase)


def _fake_build(root, name, size, used):
    build = root / name
    build.mkdir()
    (build / "Vtop").write_bytes(b"\0" * size)
    stamp = build / "tellme-build-complete"
    stamp.write_text(f"{name}\n{size}\n")
    os.utime(stamp, (used, used))
    return build


def test_build_cache_prunes_least_recently_used(tmp_path):
    now = 1_000_000.0
    old = _fake_build(tmp_path, "a-1", 400, now - 9000)
    older = _fake_build(tmp_path, "b-1", 300, now - 9500)
    kept = _fake_build(tmp_path, "c-1", 300, now - 9900)   # oldest, but asked to keep
    recent = _fake_build(tmp_path, "d-1", 500, now - 60)   # within the grace hour
    half = tmp_path / "e-1"                                # a build without a stamp (in progress)
    half.mkdir()
    deleted = prune_builds(tmp_path, limit=900, keep=[kept], now=now)
    # 1500 bytes: the older unkept build goes first (1200), then the next (800 <= 900).
    assert deleted == [older, old]
    assert not older.exists() and not old.exists()
    assert kept.exists() and recent.exists() and half.exists()
    assert prune_builds(tmp_path, limit=900, now=now) == []


def test_build_cache_keeps_recent_builds_over_the_limit(tmp_path):
    now = 1_000_000.0
    recent = _fake_build(tmp_path, "a-1", 1000, now - 10)
    assert prune_builds(tmp_path, limit=1, now=now) == []
    assert recent.exists()


@pytest.mark.parametrize("text", ["0", "-2", "lots", ""])
def test_build_cache_limit_rejects_bad_values(monkeypatch, text):
    monkeypatch.setenv("TELLME_RTL_CACHE_GIB", text)
    with pytest.raises(ValueError, match="TELLME_RTL_CACHE_GIB"):
        build_cache_limit()


def test_build_cache_limit_reads_gib(monkeypatch):
    monkeypatch.setenv("TELLME_RTL_CACHE_GIB", "0.5")
    assert build_cache_limit() == 2**29
    monkeypatch.delenv("TELLME_RTL_CACHE_GIB")
    assert build_cache_limit() == 16 * 2**30


def test_build_cache_records_the_size_of_an_old_stamp(tmp_path):
    """A stamp written before sizes were recorded (the name alone) is measured once and gets
    its size, with its time of last use unchanged."""
    now = 1_000_000.0
    build = _fake_build(tmp_path, "a-1", 300, now - 9000)
    stamp = build / "tellme-build-complete"
    stamp.write_text("a-1\n")
    os.utime(stamp, (now - 9000, now - 9000))
    assert prune_builds(tmp_path, limit=10_000, now=now) == []
    assert stamp.read_text().split() == ["a-1", str(300 + len("a-1\n"))]
    assert stamp.stat().st_mtime == now - 9000
