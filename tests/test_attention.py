"""Attention units under Verilator + cocotb, bit-exact against ``golden.attention_query``.

The testbench is ``sim/tb/tb_attention.py``; its docstring lists what every cocotb test covers.
One Verilator build per configuration, each running several cocotb tests:

- AttentionCore alone (keys driven by the testbench in ``golden.key_tile_order`` order):
  head_dim 64/96/128 at tile 32 with dot_lanes 16, pv_lanes 16 or 32, out_lanes 8, and a
  quick tile-8 build;
- DecodeAttention (KvReader + AttentionCore) against a cocotbext-axi AxiRamRead holding the
  cache as docs/architecture.md section 6 lays it out: MHA contexts 1, 2, 32, 33, 128, GQA 4:1
  and 5:1, one context of 1024, AXI reads checked byte-exact per query;
- KvWriter: random appends into an AxiRamWrite, the whole memory checked against the layout;
- the same in the fp32 format (``attn_format="fp32"``: float32 cache rows and query, outputs
  against ``golden.attention_query`` with ``golden.FloatKVCache`` and ``lanes=dot_lanes``):
  AttentionCore at hd 64 tile 8 (dot_lanes 8) and hd 96 tile 32, DecodeAttention at hd 64
  tile 8 (contexts 1, 2, 8, 9, 17, 40 and GQA) and hd 96 tile 32 (as the int8 build, context
  1024 included; AXI reads: K and V rows of 4*hd bytes, no scale records), KvWriter at hd 96
  (float32 rows with any bit pattern). The hd-96 builds are in the slow set.

Cycles per query (first key beat in .. last output beat out) are printed (``pytest -s`` or
``-rP``) and kept in ``build/rtl/attention-cycles-<config>.json``.
"""

from __future__ import annotations

import json

import pytest

from tellme.hw.attention import AttentionCore
from tellme.hw.attn_decode import DecodeAttention, KvWriter
from tellme.sim.rtl import default_build_root, run_cocotb

TB = "tellme.sim.tb.tb_attention"


#: AttentionCore configurations: name -> constructor arguments.
CORE_CONFIGS = {
    "hd64_t8": dict(head_dim=64, tile=8, dot_lanes=16, pv_lanes=16, out_lanes=8),
    "hd64_t32": dict(head_dim=64, tile=32, dot_lanes=16, pv_lanes=16, out_lanes=8),
    "hd96_t32": dict(head_dim=96, tile=32, dot_lanes=16, pv_lanes=32, out_lanes=8),
    "hd128_t32": dict(head_dim=128, tile=32, dot_lanes=16, pv_lanes=32, out_lanes=8),
    # the fp32 format (float32 cache and query; the score's vector_sum over dot_lanes beats);
    # dot_lanes 8: 8 beats per key, each of the accumulator's 4 partials takes two
    "fp32_hd64_t8_d8": dict(head_dim=64, tile=8, dot_lanes=8, pv_lanes=16, out_lanes=8, attn_format="fp32"),
    "fp32_hd96_t32": dict(head_dim=96, tile=32, dot_lanes=16, pv_lanes=16, out_lanes=8, attn_format="fp32"),
}
#: The decode unit of bitnet-b1.58-large (hd 96, tile 32, the units' default lanes); the
#: benchmark (bench/attention.py) simulates the same build.
DECODE_CONFIG = dict(head_dim=96, tile=32, dot_lanes=16, pv_lanes=16, out_lanes=8)
DECODE_NAME = "attn_decode_hd96_t32"
#: DecodeAttention in the fp32 format: name -> (constructor arguments, extra test parameters).
#: The small build runs in `make test` (contexts across its tile-8 boundaries); the large
#: model's configuration, with a context of 1024, in `make test-all`.
DECODE_FP32_CONFIGS = {
    "fp32_hd64_t8": (dict(head_dim=64, tile=8, dot_lanes=16, pv_lanes=16, out_lanes=8, attn_format="fp32"),
                     {"contexts": [1, 2, 8, 9, 17, 40]}),
    "fp32_hd96_t32": (dict(head_dim=96, tile=32, dot_lanes=16, pv_lanes=16, out_lanes=8, attn_format="fp32"),
                      {"long_context": 1024}),
}
DECODE_FP32_SLOW = {"fp32_hd96_t32"}


def _results_file(name: str):
    path = default_build_root() / f"attention-cycles-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    return path


def _report(path, title: str) -> dict:
    data = json.loads(path.read_text()) if path.exists() else {}
    print(f"\n{title}")
    for test, entry in data.items():
        for q in entry.get("queries", []):
            extra = ""
            if "bytes" in q:
                extra = f"  {q['bytes']:7d} B read in {q['bursts']:3d} bursts, {q['cmd_to_last_out']:6d} cycles cmd..last out"
            cycles = q.get("cycles", "-")
            print(f"  {test:16s} {q['label']:26s} pos {q['pos']:5d} keys {q['keys']:5d} tiles {q['tiles']:3d}: "
                  f"{cycles:>6} cycles first key..last out{extra}")
        if "cycles_per_append" in entry:
            print(f"  {test}: {entry['appends']} appends, cycles per append {entry['cycles_per_append']}")
    return data


def _report_run(result):
    # run_cocotb has checked that every requested test ran and passed.
    print(f"  build {result.build_seconds:.0f} s, simulation {result.sim_seconds:.0f} s, seed {result.seed}")


CORE_TESTS = ["core_lengths", "core_stalls", "core_extremes"]
# Cold Verilator builds of the cores take minutes each: they run in `make test-all` and the
# benchmark. `make test` keeps the KV writer; the core itself runs there inside the prefill
# unit's default test (tests/test_attn_prefill.py: the same extremes, every key through it).
# The fp32 format's small build (a minute) runs in `make test` too: no other test takes its
# score path.
CORE_SLOW = {"hd64_t8", "hd64_t32", "hd96_t32", "hd128_t32", "fp32_hd96_t32"}


@pytest.mark.rtl
@pytest.mark.parametrize("config", [pytest.param(name, marks=[pytest.mark.slow] if name in CORE_SLOW else [])
                                    for name in CORE_CONFIGS])
def test_attention_core(config):
    params = CORE_CONFIGS[config]
    results = _results_file(f"core_{config}")
    result = run_cocotb(AttentionCore(**params), name=f"attn_core_{config}", test_module=TB,
                        testcase=CORE_TESTS, timeout=1800,
                        parameters={"kind": "core", **params, "seed": 11 + params["head_dim"] + params["tile"],
                                    "results": str(results)})
    _report(results, f"AttentionCore {config}")
    _report_run(result)


#: decode_long (context 1024) simulates in ~25 s, so it runs with the others (one conversion).
DECODE_TESTS = ["decode_contexts", "decode_gqa", "decode_long"]


@pytest.mark.rtl
@pytest.mark.slow
def test_decode_attention():
    results = _results_file("decode")
    result = run_cocotb(DecodeAttention(**DECODE_CONFIG), name=DECODE_NAME, test_module=TB,
                        testcase=DECODE_TESTS, timeout=3600,
                        parameters={"kind": "decode", **DECODE_CONFIG, "seed": 5, "long_context": 1024,
                                    "results": str(results)})
    _report(results, "DecodeAttention hd96 tile 32")
    _report_run(result)


@pytest.mark.rtl
@pytest.mark.parametrize("config", [pytest.param(name, marks=[pytest.mark.slow] if name in DECODE_FP32_SLOW else [])
                                    for name in DECODE_FP32_CONFIGS])
def test_decode_attention_fp32(config):
    params, extra = DECODE_FP32_CONFIGS[config]
    tests = DECODE_TESTS if "long_context" in extra else ["decode_contexts", "decode_gqa"]
    results = _results_file(f"decode_{config}")
    result = run_cocotb(DecodeAttention(**params), name=f"attn_decode_{config}", test_module=TB,
                        testcase=tests, timeout=3600,
                        parameters={"kind": "decode", **params, **extra, "seed": 6, "results": str(results)})
    _report(results, f"DecodeAttention {config}")
    _report_run(result)


@pytest.mark.rtl
@pytest.mark.slow
def test_decode_attention_at_the_longest_context():
    """The longest context (issue #16): bitnet-b1.58-large's fp32 decode unit (hd 96, tile 32)
    at the kv260's max_context, one query over every key up to the last KV position
    (max_context - 1), with pauses on AR/R, against the golden model."""
    from tellme.config import hardware_preset
    params, _ = DECODE_FP32_CONFIGS["fp32_hd96_t32"]
    context = hardware_preset("kv260").max_context
    result = run_cocotb(DecodeAttention(**params), name="attn_decode_fp32_hd96_t32", test_module=TB,
                        testcase=["decode_long"], timeout=3600,
                        parameters={"kind": "decode", **params, "long_context": context, "seed": 7})
    _report_run(result)


@pytest.mark.rtl
@pytest.mark.parametrize("head_dim", [96, pytest.param(128, marks=pytest.mark.slow)])
def test_kv_writer(head_dim):
    results = _results_file(f"writer_hd{head_dim}")
    result = run_cocotb(KvWriter(head_dim=head_dim), name=f"kv_writer_hd{head_dim}", test_module=TB,
                        testcase=["writer_appends"], timeout=900,
                        parameters={"kind": "writer", "head_dim": head_dim, "seed": 3, "appends": 40,
                                    "results": str(results)})
    _report(results, f"KvWriter hd{head_dim}")
    _report_run(result)


@pytest.mark.rtl
def test_kv_writer_fp32():
    """KvWriter in the fp32 format: float32 rows of 4*hd bytes (any bit pattern), no record."""
    head_dim = 96
    results = _results_file(f"writer_fp32_hd{head_dim}")
    result = run_cocotb(KvWriter(head_dim=head_dim, attn_format="fp32"), name=f"kv_writer_fp32_hd{head_dim}",
                        test_module=TB, testcase=["writer_appends"], timeout=900,
                        parameters={"kind": "writer", "head_dim": head_dim, "attn_format": "fp32", "seed": 4,
                                    "appends": 40, "results": str(results)})
    _report(results, f"KvWriter fp32 hd{head_dim}")
    _report_run(result)


def test_parameters_checked():
    """The attention format is one of int8/fp32 everywhere; fp32 beats are powers of two."""
    from tellme.hw.kv_reader import KvReader
    for make in (lambda fmt: AttentionCore(head_dim=64, tile=8, attn_format=fmt),
                 lambda fmt: DecodeAttention(head_dim=64, tile=8, attn_format=fmt),
                 lambda fmt: KvReader(head_dim=64, tile=8, attn_format=fmt),
                 lambda fmt: KvWriter(head_dim=64, attn_format=fmt)):
        with pytest.raises(ValueError, match="int8, fp32"):
            make("fp16")
    with pytest.raises(ValueError, match="power of two"):
        AttentionCore(head_dim=96, tile=8, dot_lanes=12, pv_lanes=16, attn_format="fp32")
    AttentionCore(head_dim=96, tile=8, dot_lanes=12, pv_lanes=16)        # int8: any divisor
    core = AttentionCore(head_dim=64, tile=8, attn_format="fp32")      # float32 query, no d_q
    query = core.signature.members["query"].signature.members["payload"].shape
    assert set(dict(query.members)) == {"q"} and query.size == 64 * 32
