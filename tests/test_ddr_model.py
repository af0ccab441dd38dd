"""The simulation-only DDR model (hw/ddr_model.py): parameters, conversion cost, and cocotb tests
(sim/tb/tb_ddr_model.py) of latency, bandwidth, data, error responses and image loading, alone
and with the project's AXI masters as managers (DdrSystem)."""

import json
import re
import time


import pytest
from amaranth.back import verilog

from tellme.config import hardware_preset, model_preset
from tellme.gen.image import write_image
from tellme.hw.ddr_model import MIN_LATENCY, RATE_FRAC_BITS, STORAGE_SOURCE, DdrModel, DdrSystem, rate_fixed
from tellme.gen.verilog import verilog_library_sources
from tellme.sim.rtl import run_cocotb
from tellme.weights import random_weights



BASE = 0x4000_0000
SIZE = 1 << 20


def test_rate_fixed_point():
    assert rate_fixed(64) == 64 << RATE_FRAC_BITS
    assert rate_fixed(51.2) == round(51.2 * (1 << RATE_FRAC_BITS))
    assert abs(rate_fixed(19.2e9 / 300e6) / (1 << RATE_FRAC_BITS) - 64) < 1e-9
    with pytest.raises(ValueError):
        rate_fixed(0)


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="multiple of 4096"):
        DdrModel(size_bytes=5000)
    with pytest.raises(ValueError, match="latency"):
        DdrModel(size_bytes=4096, latency=MIN_LATENCY - 1)
    with pytest.raises(ValueError, match="ports"):
        DdrModel(size_bytes=4096, ports=0)
    with pytest.raises(ValueError, match="aligned"):
        DdrModel(size_bytes=4096, base=0x800)
    with pytest.raises(ValueError, match="address space"):
        DdrModel(size_bytes=1 << 20, addr_width=12)


def test_large_memory_converts_fast_without_initial_contents():
    """A 64 MiB model converts in seconds and its memory has no initial block (which Amaranth
    would otherwise emit word by word): the storage is the hand-written tellme_ddr_mem module,
    which run_cocotb adds to the Verilator build."""
    start = time.monotonic()
    text = verilog.convert(DdrModel(size_bytes=64 << 20, ports=4), name="ddr")
    assert time.monotonic() - start < 30
    assert re.search(r"tellme_ddr_mem #\(\s*\.ABITS\(32'd22\),\s*\.DEPTH\(32'd4194304\),\s*"
                     r"\.RD_PORTS\(32'd4\),\s*\.WIDTH\(32'd128\)\s*\) mem \(", text)
    assert "mem[0] =" not in text and len(text) < 1_000_000
    assert verilog_library_sources(text) == [STORAGE_SOURCE]
    storage = STORAGE_SOURCE.read_text()
    # A plain array (the testbench reads and writes it in place, hence public_flat_rw).
    assert re.search(r"reg \[WIDTH-1:0\] mem \[DEPTH-1:0\]\s*(/\* verilator public_flat_rw \*/)?;", storage)
    assert not re.search(r"^\s*initial\b", storage, re.MULTILINE)
    ports = [line for line in text.splitlines() if line.strip().startswith(("input", "output"))]
    assert any("rd3__arvalid" in line for line in ports) and any("wr__wdata" in line for line in ports)


@pytest.mark.rtl
def test_ddr_model_rtl(tmp_path):
    results = tmp_path / "results.json"
    run_cocotb(DdrModel(size_bytes=SIZE, ports=2, base=BASE, configurable=True), name="ddr_model",
               test_module="tellme.sim.tb.tb_ddr_model",
               testcase=["model_latency", "model_data_and_errors", "model_bandwidth", "model_image_load"],
               parameters={"size": SIZE, "base": BASE, "ports": 2, "results": str(results)})
    measured = json.loads(results.read_text())
    print(json.dumps(measured, indent=1))
    assert measured["latency"] == {str(k): k for k in (MIN_LATENCY, 4, 17, 40)}
    assert measured["image_load"]["load_seconds"] < 10


@pytest.mark.rtl
def test_ddr_model_fixed_settings_rtl():
    run_cocotb(DdrModel(size_bytes=64 * 1024, ports=1, latency=7, bytes_per_cycle=12), name="ddr_model_fixed",
               test_module="tellme.sim.tb.tb_ddr_model", testcase="model_fixed_settings",
               parameters={"size": 64 * 1024, "ports": 1, "latency": 7, "rate": 12})


@pytest.mark.rtl
def test_ddr_system_rtl(tmp_path):
    hw = hardware_preset("kv260").replace(max_context=256, prefill_chunk=128)
    image = tmp_path / "tiny.img"
    write_image(random_weights(model_preset("tiny"), seed=1), hw, image)
    results = tmp_path / "results.json"
    run_cocotb(DdrSystem(size_bytes=SIZE, ports=4, base=BASE), name="ddr_system",
               test_module="tellme.sim.tb.tb_ddr_model", testcase=["system_image", "system_bandwidth"],
               parameters={"size": SIZE, "base": BASE, "ports": 4, "image": str(image), "results": str(results)})
    measured = json.loads(results.read_text())
    print(json.dumps(measured, indent=1))
    by_rate = {(r["rate"], r["with_write"]): r["bytes_per_cycle"] for r in measured["system_bandwidth"]}
    assert by_rate[(100, False)] >= 0.97 * 64        # the four ports' peak
