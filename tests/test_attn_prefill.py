"""Prefill attention (hw/attn_prefill.py) under Verilator + cocotb, bit-exact against
``golden.attention_query`` for every token and head of a chunk; the testbench is
``sim/tb/tb_attn_prefill.py`` (its docstring lists the cases: sequence lengths 1, 2, tile,
tile+1, chunk; chunks on top of a cache, aligned and straddling a tile; GQA passes sharing a
kv head; extreme values; random stalls and AXI pauses everywhere).

The configs build a small unit (hd 32, tile 8, chunk 20, two query heads sharing the kv head)
in both cache formats (``attn_format`` "int8" and "fp32": float32 K/V rows and queries, no
scale records); hd 64 / 96 / 128 (tile 8 and 32, up to four cores) build for minutes. All run
in ``make test-all``.
"""

from __future__ import annotations

import json

import pytest

from tellme.hw.attn_prefill import PrefillAttention
from tellme.hw.attn_tiled import TiledAttention
from tellme.sim.rtl import default_build_root, run_cocotb

TB = "tellme.sim.tb.tb_attn_prefill"
TESTS = ["prefill_lengths", "prefill_history", "prefill_gqa", "prefill_extremes"]

#: name -> (constructor arguments, slow). All slow: the unit runs one head per pass inside
#: every attention-path and end-to-end test of `make test`; these sweeps (two and four cores,
#: long chunks, wide heads) build and simulate for minutes each (`make test-all`).
CONFIGS = {
    "hd32_t8_c20_h2": (dict(head_dim=32, tile=8, chunk=20, heads=2), True),
    "fp32_hd32_t8_c20_h2": (dict(head_dim=32, tile=8, chunk=20, heads=2, attn_format="fp32"), True),
    "hd64_t8_c24_h2": (dict(head_dim=64, tile=8, chunk=24, heads=2), True),
    "hd96_t32_c128_h1": (dict(head_dim=96, tile=32, chunk=128, heads=1), True),
    "hd128_t32_c40_h4": (dict(head_dim=128, tile=32, chunk=40, heads=4, pv_lanes=32), True),
}

#: TiledAttention (fp32, query tiles): name -> (constructor arguments, slow).
TILED_CONFIGS = {
    # one history read manager (no preset's top uses it: slow set)
    "tiled_hd32_t8_c20_h2": (dict(head_dim=32, tile=8, chunk=20, heads=2), True),
    # the history over four read managers (K rows in halves on two, V rows on the other two)
    # into three slots, as in the tops of every preset (one per HP port, gen.tiling)
    "tiled_hd32_t8_c20_h2_p4": (dict(head_dim=32, tile=8, chunk=20, heads=2, history_ports=4, history_slots=3),
                                False),
    "tiled_hd16_t8_c16_h2_p2": (dict(head_dim=16, tile=8, chunk=16, heads=2, out_lanes=4, history_ports=2), True),
    # the tiny presets' shape: one beat per pair (a free cycle after each), one lane group
    "tiled_hd16_t8_c16_h2": (dict(head_dim=16, tile=8, chunk=16, heads=2, out_lanes=4), False),
    "tiled_hd32_t4_c12_h1_pv32": (dict(head_dim=32, tile=4, chunk=12, heads=1, pv_lanes=32, out_lanes=8), True),
    "tiled_hd96_t32_c128_h1": (dict(head_dim=96, tile=32, chunk=128, heads=1), True),
}


def test_parameters_checked():
    with pytest.raises(ValueError, match="heads"):
        PrefillAttention(head_dim=64, tile=8, chunk=16, heads=0)
    with pytest.raises(ValueError, match="chunk"):
        PrefillAttention(head_dim=64, tile=8, chunk=1 << 16)
    with pytest.raises(ValueError, match="head_dim"):
        PrefillAttention(head_dim=60, tile=8, chunk=16)
    with pytest.raises(ValueError, match="attn_format"):
        PrefillAttention(head_dim=64, tile=8, chunk=16, attn_format="fp16")


@pytest.mark.rtl
@pytest.mark.parametrize("config", [pytest.param(n, marks=[pytest.mark.slow] if slow else [])
                                    for n, (_, slow) in CONFIGS.items()])
def test_prefill_attention(config):
    params, _ = CONFIGS[config]
    params = {**params, "attn_format": params.get("attn_format", "int8")}
    results = default_build_root() / f"prefill-cycles-{config}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    # run_cocotb fails unless every test of TESTS ran and passed.
    run_cocotb(PrefillAttention(**params), name=f"attn_prefill_{config}", test_module=TB,
               testcase=TESTS, timeout=3600,
               parameters={**params, "seed": 7 + params["head_dim"], "results": str(results)})
    if results.exists():
        for row in json.loads(results.read_text()).get("prefill_lengths", []):
            print(f"  {row['label']:10s} {row['count']:4d} tokens: {row['cycles']:7d} cycles after the load")


def test_tiled_parameters_checked():
    with pytest.raises(ValueError, match="fp32"):
        TiledAttention(head_dim=64, tile=8, chunk=16, attn_format="int8")
    with pytest.raises(ValueError, match="dot_lanes"):
        TiledAttention(head_dim=24, tile=8, chunk=16, dot_lanes=16)
    with pytest.raises(ValueError, match="out_lanes"):
        TiledAttention(head_dim=64, tile=8, chunk=16, pv_lanes=8, out_lanes=16)
    with pytest.raises(ValueError, match="whole 128-bit AXI beats"):
        TiledAttention(head_dim=64, tile=8, chunk=16, pv_lanes=2, out_lanes=2)
    with pytest.raises(ValueError, match="load_lanes"):
        TiledAttention(head_dim=64, tile=8, chunk=16, pv_lanes=4, out_lanes=4, load_lanes=8)
    with pytest.raises(ValueError, match="history_ports must be 1 or twice a power of two"):
        TiledAttention(head_dim=64, tile=8, chunk=16, history_ports=6)
    for slots in (1, 4):
        with pytest.raises(ValueError, match="history_slots must be 2 or 3"):
            TiledAttention(head_dim=64, tile=8, chunk=16, history_slots=slots)


@pytest.mark.rtl
@pytest.mark.parametrize("config", [pytest.param(n, marks=[pytest.mark.slow] if slow else [])
                                    for n, (_, slow) in TILED_CONFIGS.items()])
def test_tiled_attention(config):
    params, _ = TILED_CONFIGS[config]
    results = default_build_root() / f"prefill-cycles-{config}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    results.unlink(missing_ok=True)
    run_cocotb(TiledAttention(**params), name=f"attn_{config}", test_module=TB, testcase=TESTS, timeout=3600,
               parameters={**params, "attn_format": "fp32", "history_per": "query_tile",
                           "history_ports": params.get("history_ports", 1),
                           "load_lanes": params.get("load_lanes", 8),
                           "seed": 11 + params["head_dim"], "results": str(results)})
