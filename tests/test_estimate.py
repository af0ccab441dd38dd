"""Resource estimates from Yosys (gen/estimate.py): counts, cache, budgets, errors."""

from __future__ import annotations

import time

import pytest

from tellme.gen.estimate import (KV260, LUTRAM_LUTS, YosysError, fits, parse_stat,
                                 synth_resources, utilisation)
from tellme.hw.stream_buffer import StreamBuffer


def test_parse_stat_counts_lutram_sites_and_bram_equivalents():
    stat = {"modules": {"\\top": {"num_cells_by_type": {
        "$scopeinfo": 3, "LUT2": 10, "LUT6": 5, "INV": 2, "FDRE": 7, "FDSE": 1, "CARRY4": 4,
        "RAM128X1S": 3, "RAM32M16": 2, "RAM64X1D": 1, "SRLC32E": 2, "RAMB36E2": 1, "RAMB18E2": 3,
        "DSP48E2": 2, "URAM288": 1, "MUXF7": 6, "MUXF8": 1}}}}
    res = parse_stat(stat, top="top")
    assert res["lut"] == 15 and res["inv"] == 2
    assert res["lutram_cells"] == {"RAM128X1S": 3, "RAM32M16": 2, "RAM64X1D": 1}
    assert res["lutram_luts"] == 3 * 2 + 2 * 8 + 1 * 2
    assert res["srl_luts"] == 2
    assert res["lut_equiv"] == 15 + 2 + 24 + 2
    assert res["ff"] == 8
    assert res["carry4"] == 4 and res["carry8_equiv"] == 2
    assert res["ramb36"] == 1 and res["ramb18"] == 3 and res["bram36"] == 2.5
    assert res["dsp"] == 2 and res["uram"] == 1 and res["muxf7"] == 6 and res["muxf8"] == 1
    assert "$scopeinfo" not in res["cells"]
    # The LUT-site table covers the primitives UG574 lists, with its counts.
    for kind, sites in {"RAM64X1S": 1, "RAM64X1D": 2, "RAM128X1S": 2, "RAM128X1D": 4,
                        "RAM256X1S": 4, "RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8}.items():
        assert LUTRAM_LUTS[kind] == sites


def test_fits_reports_each_exceeded_resource_with_utilisation():
    small = {"lut": 100, "lut_equiv": 150, "ff": 10, "dsp": 0, "bram36": 1.5, "uram": 0}
    assert fits(small, KV260) == []
    big = dict(small, lut_equiv=234240, bram36=200)
    problems = fits(big, KV260)
    assert len(problems) == 2
    assert problems[0].startswith("lut:") and "200.0 %" in problems[0]   # lut_equiv, not lut
    assert problems[1].startswith("bram36:") and "138.9 %" in problems[1]
    assert utilisation(small, KV260)["ff"] == pytest.approx(100 * 10 / 234240)


def test_synth_resources_counts_and_cache(tmp_path):
    component = StreamBuffer(shape=8)
    first = synth_resources(component, name="est_stream_buffer", cache_dir=tmp_path)
    assert not first["cached"]
    # Two 8-bit payload registers and two valid bits, some muxing: sane, small counts.
    assert 18 <= first["ff"] <= 40, first
    assert 1 <= first["lut"] <= 60, first
    assert first["lut_equiv"] >= first["lut"]
    assert first["dsp"] == 0 and first["bram36"] == 0 and first["uram"] == 0
    assert first["yosys"].startswith("Yosys ")
    assert "synth_xilinx -family xcup -top est_stream_buffer -noiopad -flatten" in first["script"]

    start = time.monotonic()
    second = synth_resources(StreamBuffer(shape=8), name="est_stream_buffer", cache_dir=tmp_path)
    assert time.monotonic() - start < 5   # Verilog conversion only, no Yosys run
    assert second["cached"]
    assert {k: v for k, v in second.items() if k != "cached"} == \
           {k: v for k, v in first.items() if k != "cached"}

    # A different design is a different cache entry.
    other = synth_resources(StreamBuffer(shape=16), name="est_stream_buffer", cache_dir=tmp_path)
    assert not other["cached"] and other["ff"] > first["ff"]

    # The tiny design fits the KV260; a budget smaller than it does not.
    assert fits(first, KV260) == []
    tiny_board = {"lut": 1, "ff": 1, "dsp": 0, "bram36": 0, "uram": 0}
    problems = fits(first, tiny_board)
    assert [p.split(":")[0] for p in problems] == ["lut", "ff"]
    assert all("% utilisation" in p for p in problems)


def test_synth_resources_reports_yosys_errors(tmp_path):
    broken = "module broken(input a, output b);\n  assign b = a &;\nendmodule\n"
    with pytest.raises(YosysError) as caught:
        synth_resources(broken, name="broken", cache_dir=tmp_path)
    message = str(caught.value)
    assert "failed" in message and "syntax error" in message.lower(), message
    assert caught.value.log is not None and caught.value.log.exists()
    assert not list(tmp_path.glob("broken-*.json"))   # nothing cached
