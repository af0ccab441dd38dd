"""Randomized regression (issue #16), the nightly job: ``make regress`` (30 minutes,
``REGRESS_MINUTES=`` to change) or ``python -m bench.regress --minutes M [--seed S] [--only UNIT]``
(``python -m bench``, which runs every script here, runs it for 30 minutes too).

For the given time it runs case after case, each unit and the top level in turn (the unit with
the least time so far per its weight goes next; the top level weighs :data:`TOP_WEIGHT`), each
case on the unit's own cocotb testbench (``sim/tb/``) with the designs and parameter builders
of its tests (``tests/test_<unit>.py``, so the Verilator builds of ``make test`` are reused),
checked bit for bit against the golden model:

- random stalls: every stream's valid/ready pause probability per stall setting, from the
  patterns of :data:`STALL_PATTERNS` (none, uniform, one stream heavy, random per stream, all
  heavy), one to four settings a case; the top level: random holds on every AXI channel of
  every HP port and random pauses on the AXI4-Lite port;
- random shapes within the config space: the design configuration among the tests' ones, the
  problem, vector, command, call and prompt sizes (up to each design's limits), the counts;
- random data: the testbench's stimuli (from the case seed, which is also cocotb's seed), the
  top level's weights and prompt.

A case is (unit, seed): everything it draws follows from the two, so
``python -m bench.regress --only UNIT --seed SEED --cases 1`` replays it exactly; every case
prints that command. Case i of a run has seed S + i (S from ``--seed``, else drawn and printed).
A failing case stops the run with its replay command; the harness keeps its run directory
(``sim.log``) and reruns the failed cocotb tests with tracing (the waveform named in the
message); a failing top-level case is traced step by step (``tellme trace``'s monitor: the
first unit whose output differs). ``--no-waves`` skips both.

After the cases, the malformed-input fuzzers (``tests/test_fuzz_inputs.py``'s mutations of DDR
images and checkpoints: every case must load or be refused with the project's own error) run
``--fuzz-examples`` examples per target, the refusal tests of the command line, configs,
checkpoints, images and driver are counted, and the formal proofs (:mod:`tellme.sim.formal`)
run; then ``bench/results/reliability.json`` is written (a run with ``--only`` or ``--cases``
writes no JSON unless ``--json`` names one): per unit and end to end the cases, design
configurations, stall patterns injected, the seed range and the failures (must be 0), and the
``malformed_inputs`` and ``formal`` sections.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import random
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import BENCH_DIR, RESULTS_DIR, log, source_commit

TESTS_DIR = BENCH_DIR.parent / "tests"
DEFAULT_MINUTES = 30.0
#: The top level's share of the time against one unit's.
TOP_WEIGHT = 4.0
#: Wall-clock limit of one unit simulation (a hang is a failure, not a stuck night).
SIM_TIMEOUT = 900.0
#: Malformed-input cases per fuzz target (tests/test_fuzz_inputs.py runs 250 in CI).
FUZZ_EXAMPLES = 250
STALL_PATTERNS = ("none", "uniform", "one-heavy", "random", "heavy")


class RegressionFailure(AssertionError):
    """A case whose design disagreed with the golden model (or hung, or broke a stream rule)."""


def _tests(name: str):
    """The test module ``tests/<name>.py``: its designs and parameter builders are the regression's."""
    if str(TESTS_DIR) not in sys.path:
        sys.path.insert(0, str(TESTS_DIR))
    return importlib.import_module(name)


# -- stalls -----------------------------------------------------------------------------------------

def stall_setting(rng: random.Random, streams: int) -> dict:
    """One stall setting: ``{"pattern", "p"}``, ``p`` a pause probability per stream."""
    pattern = rng.choice(STALL_PATTERNS)
    if pattern == "none":
        p = [0.0] * streams
    elif pattern == "uniform":
        p = [round(rng.uniform(0.1, 0.7), 2)] * streams
    elif pattern == "one-heavy":
        p = [0.0] * streams
        p[rng.randrange(streams)] = round(rng.uniform(0.7, 0.9), 2)
    elif pattern == "random":
        p = [round(rng.uniform(0.0, 0.8), 2) for _ in range(streams)]
    else:
        p = [round(rng.uniform(0.75, 0.9), 2) for _ in range(streams)]
    return {"pattern": pattern, "p": p}


def stall_settings(rng: random.Random, streams: int, most: int = 4) -> list[dict]:
    return [stall_setting(rng, streams) for _ in range(rng.randint(1, most))]


def probabilities(stalls: list[dict]) -> list[list[float]]:
    return [s["p"] for s in stalls]


# -- cases ------------------------------------------------------------------------------------------

@dataclass
class Case:
    """One randomized case: what it runs (``config``), what it drew (``shapes``, ``stalls``) and
    ``run(context) -> observed`` (raises on a mismatch)."""
    unit: str
    seed: int
    config: str
    shapes: dict
    stalls: list
    run: Callable[["Context"], Any] = field(repr=False)

    def describe(self) -> dict:
        return {"unit": self.unit, "seed": self.seed, "config": self.config, "shapes": self.shapes,
                "stalls": self.stalls}


@dataclass
class Context:
    """How a case runs: its seed (cocotb's too), waveforms on failure, a results file."""
    seed: int
    waves: bool
    work: Path

    def sim(self, dut, *, name: str, test_module: str, testcase, parameters: dict, timeout: float = SIM_TIMEOUT):
        """``run_cocotb`` with the case's seed (cocotb's and the testbench's ``seed``) and a
        results file; returns what the testbench recorded there."""
        from tellme.sim.rtl import run_cocotb
        results = self.work / f"{name}-results.json"
        results.unlink(missing_ok=True)
        run_cocotb(dut, name=name, test_module=test_module, testcase=testcase, seed=self.seed,
                   waves_on_failure=self.waves, timeout=timeout,
                   parameters={**parameters, "seed": self.seed, "results": str(results)})
        return json.loads(results.read_text()) if results.exists() else {}

    @contextlib.contextmanager
    def pinned(self, module):
        """Within: ``module``'s own helpers run their simulations with the case's seed."""
        from tellme.sim.rtl import run_cocotb
        original = module.run_cocotb

        def seeded(*args, **kwargs):
            kwargs.update(seed=self.seed, waves_on_failure=self.waves)
            return run_cocotb(*args, **kwargs)
        module.run_cocotb = seeded
        try:
            yield
        finally:
            module.run_cocotb = original


def _pick(rng: random.Random, options: dict):
    key = rng.choice(sorted(options))
    return key, options[key]


def _tlmm(rng, seed, fault):
    t = _tests("test_tlmm")
    key, params = _pick(rng, t.ENGINE_SETS)
    stalls, problems = stall_settings(rng, 4), rng.randint(2, 10)

    def run(ctx):
        dut = t.engine(params)
        return ctx.sim(dut, name="tlmm", test_module=t.TB, testcase=["test_random", "test_back_to_back"],
                       parameters=t.engine_parameters(dut, params, stalls=probabilities(stalls),
                                                      random_problems=problems, corrupt=fault))
    return Case("tlmm", seed, key, {"random_problems_per_setting": problems,
                                    "problems": "rows, K up to max_blocks x P x G, tokens up to T: drawn per problem"},
                stalls, run)


def _tlmm_decode(rng, seed, fault):
    t = _tests("test_tlmm")
    key, params = _pick(rng, t.DECODE_SETS)
    params = {k: v for k, v in params.items() if k != "shapes"}
    max_k = 4 * params["lanes"] * params["group"]
    shapes = [[rng.randint(1, 64), rng.randint(1, max_k)] for _ in range(rng.randint(1, 4))]
    stalls = stall_settings(rng, 2)

    def run(ctx):
        from tellme.hw.tlmm_decode import TlmmWeightDecode
        dut = TlmmWeightDecode(**params)
        return ctx.sim(dut, name="tlmm_decode", test_module=t.TB_DECODE, testcase="test_decode",
                       parameters={**params, "beats_per_word": dut.beats_per_word, "shapes": shapes,
                                   "stalls": probabilities(stalls)})
    return Case("tlmm_decode", seed, key, {"projections": shapes}, stalls, run)


def _elementwise(unit: str):
    def make(rng, seed, fault):
        te = _tests("test_elementwise")
        from tellme.hw.dequant import Dequant
        from tellme.hw.gating import Gating
        from tellme.hw.norm_quant import NormQuant
        from tellme.hw.rope import Rope
        if unit == "norm_quant":
            config, build = "l8", lambda: NormQuant(lanes=8, max_dim=te.MAX_DIM)
            widths = [w for w in te.norm_quant_parameters(8)["widths"] if rng.random() < 0.3]
            shapes = {"widths": widths, "random_vectors": rng.randint(1, 6), "random_max_dim": rng.randint(1, te.MAX_DIM)}
            streams, name = 5, "norm_quant_l8"
            parameters = lambda dut, **kw: te.norm_quant_parameters(8, **shapes, **kw)       # noqa: E731
        elif unit == "dequant":
            tokens, residual, lanes = rng.choice([(1, False, None), (1, True, None), (8, False, None), (8, True, None),
                                                  (8, False, 2), (8, True, 2)])
            config = f"t{tokens}{'_a2' if lanes else ''}_{'res' if residual else 'plain'}"
            build = lambda: Dequant(tokens=tokens, residual=residual, **({"lanes": lanes} if lanes else {}))  # noqa: E731
            shapes = {"commands": rng.randint(1, 16), "max_rows": rng.randint(1, 256)}
            streams, name = 3 if residual else 2, f"dequant_{config}"
            parameters = lambda dut, **kw: te.dequant_parameters(dut, **shapes, **kw)       # noqa: E731
        elif unit == "gating":
            act_lanes = rng.choice([8, 2])
            config = f"relu2_l8{'' if act_lanes == 8 else '_a2'}"
            build = lambda: Gating(lanes=8, act="relu2", act_lanes=act_lanes)              # noqa: E731
            shapes = {"vectors": rng.randint(1, 10), "max_dim": rng.randint(1, 4096)}
            streams, name = 3, f"gating_{config}"
            # the fault: the ReLU^2 unit held to the SiLU golden model
            parameters = lambda dut, **kw: te.gating_parameters(dut, **shapes, **kw, **({"act": "silu"} if fault else {}))  # noqa: E731
        else:
            sets = {**{k: (lanes, hd, None) for k, (lanes, hd, _) in te.ROPE_SETS.items() if k != "l8_hd128"},
                    **{k: (lanes, hd, r) for k, (lanes, hd, r, _) in te.NARROW_ROPE_SETS.items()}}
            config, (lanes, head_dim, rotate) = _pick(rng, sets)
            build = lambda: Rope(lanes=lanes, head_dim=head_dim, **({"rotate_lanes": rotate} if rotate else {}))  # noqa: E731
            shapes = {"heads": rng.randint(1, 60)}
            streams, name = 3, f"rope_{config}"
            parameters = lambda dut, **kw: te.rope_parameters(dut, **shapes, **kw)          # noqa: E731
        stalls = stall_settings(rng, streams)

        def run(ctx):
            dut = build()
            return ctx.sim(dut, name=name, test_module=te.TB, testcase="test_random",
                           parameters=parameters(dut, stalls=probabilities(stalls)))
        return Case(unit, seed, config, shapes, stalls, run)
    return make


def _residual_add(rng, seed, fault):
    tt = _tests("test_transpose")
    from tellme.hw.transpose import ResidualAdd
    config, kwargs = _pick(rng, {"l4": dict(lanes=4), "l8_a2": dict(lanes=8, add_lanes=2)})
    stalls, beats = stall_settings(rng, 3), rng.randint(1, 600)

    def run(ctx):
        unit = ResidualAdd(**kwargs)
        return ctx.sim(unit, name=f"residual_add_{config}", test_module=tt.TB, testcase="test_residual_values",
                       parameters=tt.residual_parameters(unit, stalls=probabilities(stalls), beats=beats))
    return Case("residual_add", seed, config, {"beats_per_setting": beats}, stalls, run)


def _transpose(rng, seed, fault):
    tt = _tests("test_transpose")
    from tellme.hw.transpose import Transpose
    tokens, lanes, block = rng.choice([(4, 4, 8), (3, 2, 6)])
    lengths = [rng.randint(1, 4 * block + lanes) for _ in range(rng.randint(1, 8))]
    stalls = stall_settings(rng, 4)

    def run(ctx):
        return ctx.sim(Transpose(tokens=tokens, lanes=lanes, block=block), name=f"transpose_t{tokens}_l{lanes}_r{block}",
                       test_module=tt.TB, testcase="test_transpose_ranges",
                       parameters=tt.transpose_parameters(tokens, lanes, block, stalls=probabilities(stalls),
                                                          lengths=lengths, repeat=1))
    return Case("transpose", seed, f"t{tokens}_l{lanes}_r{block}", {"range_lengths": lengths}, stalls, run)


def _act_buffer(rng, seed, fault):
    ta = _tests("test_act_buffer")
    from tellme.sim.tb.tb_act_buffer import STREAMS
    key, params = _pick(rng, ta.SETS)
    stalls = stall_settings(rng, len(STREAMS))

    def run(ctx):
        dut = ta.ActTlmm(**params)
        return ctx.sim(dut, name="act_tlmm", test_module=ta.TB, testcase="test_program",
                       parameters=ta.parameters(dut, params, stalls=[dict(zip(STREAMS, s["p"])) for s in stalls]))
    return Case("act_buffer", seed, key, {"program": "writes and reads drawn by the testbench"}, stalls, run)


def _lm_head(rng, seed, fault):
    tl = _tests("test_lm_head")
    from tellme.hw.lm_head import LmHead
    fp16 = rng.random() < 0.5
    kwargs = dict(lanes=4 if fp16 else 8, data_width=128, addr_width=32, max_cols=256, max_rows=512, scale_beats=2,
                  **({"weight_format": "fp16"} if fp16 else {}))
    name = "lm_head_fp16_l4_w128" if fp16 else "lm_head_l8_w128"
    shapes = [[rng.randint(1, 300), rng.randint(1, 256)] for _ in range(rng.randint(1, 4))]
    stalls = stall_settings(rng, 6, most=3)

    def run(ctx):
        head = LmHead(**kwargs)
        return ctx.sim(head, name=name, test_module=tl.TB, testcase="random_calls",
                       parameters=tl._parameters(head, shapes=shapes, throughput_shapes=[[1, 1]],
                                                 stalls=probabilities(stalls)))
    return Case("lm_head", seed, name.removeprefix("lm_head_"), {"calls": shapes}, stalls, run)


def _fp32(rng, seed, fault):
    tf = _tests("test_fp32_rtl")
    from tellme.hw.fp32 import FixedLatencyStream
    unit = rng.choice(sorted(tf.UNITS))
    count, stalls = rng.randint(2_000, 30_000), stall_settings(rng, 2)

    def run(ctx):
        dut = FixedLatencyStream(tf.UNITS[unit].construct())
        return ctx.sim(dut, name=f"fp32_{unit}", test_module=tf.TB, testcase="test_random_stalls",
                       parameters=tf.bench_parameters(unit, dut, count=count, stalls=probabilities(stalls)))
    return Case("fp32", seed, unit, {"operands": count}, stalls, run)


def _stream_buffer(rng, seed, fault):
    ts = _tests("test_rtl_smoke")
    from tellme.hw.stream_buffer import StreamBuffer
    config, shape = _pick(rng, {"plain13": ts.PLAIN_SHAPE, "struct16": ts.STRUCT_SHAPE})
    beats, stalls = rng.randint(100, 3000), stall_settings(rng, 2)

    def run(ctx):
        return ctx.sim(StreamBuffer(shape=shape), name="stream_buffer", test_module=ts.TB, testcase="test_random_stalls",
                       parameters=ts.tb_parameters(shape, beats=beats, stall_probabilities=probabilities(stalls)))
    return Case("stream_buffer", seed, config, {"beats_per_setting": beats}, stalls, run)


def _weight_buffer(rng, seed, fault):
    tw = _tests("test_weight_buffer")
    tiles, stalls = rng.randint(4, 40), stall_settings(rng, 3)

    def run(ctx):
        return ctx.sim(tw._buffer(), name="weight_buffer", test_module=tw.TB_BUFFER, testcase="test_random",
                       parameters=tw.buffer_parameters(tiles_per_batch=tiles, stalls=probabilities(stalls)))
    return Case("weight_buffer", seed, f"d{tw.BUFFER_DEPTH}_w{tw.BUFFER_WIDTH}", {"tiles_per_batch": tiles}, stalls, run)


def _own_pauses(what: str) -> list:
    return [{"pattern": "testbench", "p": what}]


def _pinned(unit: str, module_name: str, configs: Callable, count: tuple[str, int, int], pauses: str,
            call: Callable) -> Callable:
    """The case maker of a unit whose test module's own helper runs it (that module's
    ``run_cocotb`` pinned to the case's seed): one of ``configs(module)`` (name -> helper
    arguments) and ``count`` = (keyword, low, high) drawn; the testbench draws its pauses from
    the seed (``pauses`` says which)."""
    def make(rng, seed, fault):
        module = _tests(module_name)
        config, args = _pick(rng, configs(module))
        keyword, low, high = count
        n = rng.randint(low, high)

        def run(ctx):
            with ctx.pinned(module):
                call(module, *args, seed=ctx.seed, **{keyword: n})
        return Case(unit, seed, config, {keyword: n}, _own_pauses(pauses), run)
    return make


_axi = _pinned("axi", "test_axi", lambda m: {f"w{w}-b{b}-o{o}": (w, b, o) for w, b, o in m.CONFIGS},
               ("commands", 4, 60), "cocotbext-axi RAM pauses on every channel, drawn from the seed",
               lambda m, *a, **kw: m._run(*a, **kw, testcase=["read_random", "read_errors", "write_random",
                                                               "write_errors"]))
_axi_arbiter = _pinned("axi_arbiter", "test_axi_arbiter", lambda m: {"m3-w128-o4": (3, 128, 4)},
                       ("transfers", 4, 60), "random pauses on managers and the subordinate, drawn from the seed",
                       lambda m, *a, **kw: m._run(*a, **kw, testcase=["write_then_read", "outstanding_limit"]))
_act_mover = _pinned("act_mover", "test_act_mover", lambda m: {"r2,12-w12,2,2": (m.DEFAULT,)},
                     ("commands", 2, 30), "random pauses on every AXI channel and stream, drawn from the seed",
                     lambda m, *a, **kw: m._run(*a, **kw))


def _attention(rng, seed, fault):
    t = _tests("test_attention")
    from tellme.hw.attention import AttentionCore
    from tellme.hw.attn_decode import DecodeAttention
    if rng.random() < 0.5:
        params = t.CORE_CONFIGS["fp32_hd64_t8_d8"]
        shapes = {"lengths": sorted(rng.randint(1, 300) for _ in range(rng.randint(1, 5)))}
        config, build, name = "core_fp32_hd64_t8_d8", lambda: AttentionCore(**params), "attn_core_fp32_hd64_t8_d8"
        tests, kind = ["core_lengths", "core_stalls"], "core"
    else:
        params = t.DECODE_FP32_CONFIGS["fp32_hd64_t8"][0]
        shapes = {"contexts": sorted({rng.randint(1, 200) for _ in range(rng.randint(1, 5))})}
        config, build, name = "decode_fp32_hd64_t8", lambda: DecodeAttention(**params), "attn_decode_fp32_hd64_t8"
        tests, kind = ["decode_contexts", "decode_gqa"], "decode"

    def run(ctx):
        return ctx.sim(build(), name=name, test_module=t.TB, testcase=tests,
                       parameters={"kind": kind, **params, **shapes})
    return Case("attention", seed, config, shapes,
                _own_pauses("stalls 0.2-0.3 on the streams and AXI pauses, patterns drawn from the seed"), run)


def _prefill_attention(rng, seed, fault):
    t = _tests("test_attn_prefill")
    from tellme.hw.attn_tiled import TiledAttention
    config, (params, _) = _pick(rng, {k: v for k, v in t.TILED_CONFIGS.items() if not v[1]})

    def run(ctx):
        return ctx.sim(TiledAttention(**params), name=f"attn_{config}", test_module=t.TB,
                       testcase=["prefill_history", "prefill_gqa"],
                       parameters={**params, "attn_format": "fp32", "history_per": "query_tile",
                                   "load_lanes": params.get("load_lanes", 8),
                                   "history_ports": params.get("history_ports", 1)})
    return Case("prefill_attention", seed, config, {"chunks": "lengths, histories and GQA groups drawn from the seed"},
                _own_pauses("stalls on cmd, load and out, pauses on every AXI channel, drawn from the seed"), run)


# -- the top level ----------------------------------------------------------------------------------

def check_generation(got_ids, got_logits, want_ids, want_logits) -> None:
    """Raise :class:`RegressionFailure` unless the RTL's ids and every step's logits equal the
    golden model's, bit for bit."""
    if list(got_ids) != list(want_ids):
        raise RegressionFailure(f"generated ids {list(got_ids)} != golden {list(want_ids)}")
    for step, (got, want) in enumerate(zip(got_logits, want_logits, strict=True)):
        g, w = np.asarray(got, np.float32).view(np.uint32), np.asarray(want, np.float32).view(np.uint32)
        if not np.array_equal(g, w):
            bad = np.flatnonzero(g != w)
            raise RegressionFailure(f"step {step}: logits differ at {bad[:8].tolist()} ({len(bad)} of {len(w)}): "
                                    f"RTL {g[bad[0]]:#010x}, golden {w[bad[0]]:#010x}")


def _top(rng, seed, fault):
    from tellme.config import model_preset
    tt, helpers = _tests("test_top"), _tests("helpers")
    hw = tt.HW
    config, model = _pick(rng, {"tiny": model_preset("tiny"), "odd-silu": helpers.ODD_SILU})
    new_tokens = rng.randint(1, 8)
    prompt_len = rng.randint(1, hw.max_context - new_tokens)
    prompt = [rng.randrange(model.vocab_size) for _ in range(prompt_len)]
    hp = rng.choice([0.0, 0.0, 0.1, 0.3, 0.5])
    axil = rng.random() < 0.5
    stalls = [{"pattern": "hp_ports", "p": hp}, {"pattern": "axi_lite", "p": 0.3 if axil else 0.0}]

    def run(ctx):
        from tellme.sim.backends import generate, make_backend
        from tellme.sim.top_harness import rtl_generate
        from tellme.weights import random_weights
        weights = random_weights(model, seed=ctx.seed)
        want_ids, want_logits = generate(make_backend("golden", weights, hw), prompt, new_tokens)
        if fault:                            # a wrong golden value: the last logit's low bit
            want_logits[-1] = want_logits[-1].copy()
            want_logits[-1].view(np.uint32)[-1] ^= 1
        options = dict(hp_pauses=hp, axi_pauses=axil, pause_seed=ctx.seed, seed=ctx.seed)
        got_ids, got_logits, rtl = rtl_generate(weights, hw, prompt, new_tokens, **options)
        try:
            check_generation(got_ids, got_logits, want_ids, want_logits)
        except RegressionFailure as failure:
            if not ctx.waves:
                raise
            from tellme.sim.trace import trace_generation
            report = trace_generation(weights, hw, prompt, new_tokens, **options)
            raise RegressionFailure(f"{failure}; traced step by step: {report}") from None
        return {"calls": [[c["kind"], c["tokens"]] for c in rtl.calls], "generated": got_ids}
    return Case("top", seed, config, {"prompt_tokens": prompt_len, "new_tokens": new_tokens,
                                      "hardware": f"sim-small, prefill_chunk {hw.prefill_chunk}, "
                                                  f"max_context {hw.max_context}"}, stalls, run)


@dataclass(frozen=True)
class Unit:
    make: Callable[[random.Random, int, bool], Case]
    weight: float = 1.0
    fault: bool = False          # --inject-fault makes its cases fail


#: The units and the top level, in the order a run starts them.
UNITS: dict[str, Unit] = {
    "tlmm": Unit(_tlmm, fault=True),
    "norm_quant": Unit(_elementwise("norm_quant")),
    "dequant": Unit(_elementwise("dequant")),
    "gating": Unit(_elementwise("gating"), fault=True),
    "rope": Unit(_elementwise("rope")),
    "residual_add": Unit(_residual_add),
    "transpose": Unit(_transpose),
    "tlmm_decode": Unit(_tlmm_decode),
    "act_buffer": Unit(_act_buffer),
    "lm_head": Unit(_lm_head),
    "fp32": Unit(_fp32),
    "stream_buffer": Unit(_stream_buffer),
    "weight_buffer": Unit(_weight_buffer),
    "axi": Unit(_axi),
    "axi_arbiter": Unit(_axi_arbiter),
    "act_mover": Unit(_act_mover),
    "attention": Unit(_attention),
    "prefill_attention": Unit(_prefill_attention),
    "top": Unit(_top, weight=TOP_WEIGHT, fault=True),
}


def make_case(unit: str, seed: int, *, fault: bool = False) -> Case:
    """The case (``unit``, ``seed``): the same draws every time."""
    return UNITS[unit].make(random.Random(f"{unit}:{seed}"), seed, fault)


def replay_command(unit: str, seed: int, *, fault: bool = False) -> str:
    return f"python -m bench.regress --only {unit} --seed {seed} --cases 1{' --inject-fault' if fault else ''}"


# -- the run ----------------------------------------------------------------------------------------

def _next_unit(units: list[str], spent: dict[str, float]) -> str:
    return min(units, key=lambda u: (spent[u] / UNITS[u].weight, units.index(u)))


def run_cases(units: list[str], base_seed: int, *, minutes: float | None, cases: int | None, waves: bool,
              fault: bool = False, case_log: Path | None = None, out=print) -> dict:
    """Run cases until ``minutes`` have passed or ``cases`` have run (or a case fails); returns
    ``{"records": [...], "failure": None or {...}, "seconds": ...}``."""
    start = time.monotonic()
    spent = {u: 0.0 for u in units}
    records, failure = [], None
    with tempfile.TemporaryDirectory(prefix="tellme-regress-") as tmp:
        index = 0
        while (cases is None or index < cases) and (minutes is None or time.monotonic() - start < 60 * minutes):
            unit, seed = _next_unit(units, spent), base_seed + index
            case = make_case(unit, seed, fault=fault)
            out(f"[{index + 1}] {unit} seed {seed} ({case.config}; {json.dumps(case.shapes)}; stalls "
                f"{json.dumps(case.stalls)}) -- replay: {replay_command(unit, seed, fault=fault)}")
            began = time.monotonic()
            record = {**case.describe(), "status": "passed"}
            try:
                observed = case.run(Context(seed, waves, Path(tmp)))
            except Exception as error:              # a mismatch, a hang, a broken stream rule
                record["status"] = "FAILED"
                failure = {**case.describe(), "replay": replay_command(unit, seed, fault=fault),
                           "error": f"{type(error).__name__}: {error}"}
                for attribute in ("run_dir", "waves"):
                    if getattr(error, attribute, None) is not None:
                        failure[attribute] = str(getattr(error, attribute))
                observed = None
            record["seconds"] = round(time.monotonic() - began, 1)
            spent[unit] += record["seconds"]
            records.append(record)
            if case_log is not None:
                with open(case_log, "a") as f:
                    f.write(json.dumps({**record, "observed": observed}) + "\n")
            if failure is not None:
                out(f"FAILED: {unit} seed {seed}: {failure['error']}")
                for key in ("run_dir", "waves"):
                    if key in failure:
                        out(f"  {key}: {failure[key]}")
                out(f"  replay: {failure['replay']}")
                break
            out(f"    passed in {record['seconds']:.1f} s")
            index += 1
    return {"records": records, "failure": failure, "seconds": round(time.monotonic() - start, 1)}


def summarise(records: list[dict]) -> dict:
    """Per unit: cases, failures, design configurations, stall settings by pattern, seed range, seconds."""
    units = {}
    for unit in dict.fromkeys(r["unit"] for r in records):
        mine = [r for r in records if r["unit"] == unit]
        patterns = Counter(s["pattern"] for r in mine for s in r["stalls"])
        units[unit] = {"cases": len(mine), "failures": sum(r["status"] != "passed" for r in mine),
                       "configs": dict(Counter(r["config"] for r in mine)),
                       "stall_settings": sum(patterns.values()), "stall_patterns": dict(patterns),
                       "seeds": [min(r["seed"] for r in mine), max(r["seed"] for r in mine)],
                       "seconds": round(sum(r["seconds"] for r in mine), 1)}
    return units


# -- malformed inputs -------------------------------------------------------------------------------

def fuzz_inputs(seed: int, examples: int) -> dict:
    """``examples`` mutated DDR images and as many of each of two checkpoints (the mutations of
    tests/test_fuzz_inputs.py, hypothesis seeded with ``seed``): each must load or be refused
    with a TellmeError. Returns per target the cases, loaded, refused by error type, failures."""
    import shutil

    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from tellme.config import hardware_preset, model_preset
    from tellme.errors import TellmeError
    from tellme.gen.checkpoint import load_checkpoint
    from tellme.gen.image import read_image, write_image
    from tellme.gen.synthetic import make_synthetic
    from tellme.weights import random_weights
    fz = _tests("test_fuzz_inputs")
    run_settings = settings(max_examples=examples, database=None, deadline=fz.DEADLINE,
                            suppress_health_check=list(HealthCheck))
    out = {}

    def fuzz(target: str, mutate: Callable, read: Callable) -> None:
        counts = Counter()

        @hypothesis_seed(seed)
        @run_settings
        @given(data=st.data())
        def case(data):
            path = mutate(data.draw)
            counts["cases"] += 1
            with fz.alarm(fz.ALARM_SECONDS):
                try:
                    read(path)
                except TellmeError as error:
                    counts[f"refused: {type(error).__name__}"] += 1
                    return
                except Exception:
                    counts["failures"] += 1
                    raise
            counts["loaded"] += 1
        try:
            case()
        except Exception as error:
            counts["error"] = f"{type(error).__name__}: {error}"[:400]
        out[target] = {"cases": counts.pop("cases", 0), "loaded": counts.pop("loaded", 0),
                       "failures": counts.pop("failures", 0),
                       "refused": {k.removeprefix("refused: "): v for k, v in sorted(counts.items()) if k.startswith("refused")},
                       **({"error": counts["error"]} if "error" in counts else {})}

    with tempfile.TemporaryDirectory(prefix="tellme-fuzz-") as tmp:
        root = Path(tmp)
        image = root / "tiny.img"
        header = write_image(random_weights(model_preset("tiny"), seed=11), hardware_preset("sim-small"), image)
        good = image.read_bytes()
        mutated = root / "mutated.img"

        def mutate_image(draw):
            mutated.write_bytes(fz.mutate_image(draw, good, header))
            return mutated
        fuzz("image", mutate_image, read_image)
        make_synthetic("tiny", root / "packed", style="packed", dtype="bfloat16", seed=2)
        make_synthetic("tiny-silu", root / "sharded", style="full", shards=2, seed=3)
        for which in ("packed", "sharded"):
            work = root / f"{which}-mutated"

            def mutate_checkpoint(draw, which=which, work=work):
                shutil.rmtree(work, ignore_errors=True)
                shutil.copytree(root / which, work)
                fz.mutate_checkpoint(draw, work)
                return work
            fuzz(f"checkpoint ({which})", mutate_checkpoint, load_checkpoint)
    return out


#: The tests of malformed configs, checkpoints, images, command lines and driver calls (each
#: parametrised case one malformed input or request, refused with a message naming it).
REFUSAL_TESTS = ["tests/test_config.py", "tests/test_cli.py", "tests/test_image.py", "tests/test_checkpoint.py",
                 "tests/test_runtime.py", "tests/test_program.py", "tests/test_fuzz_inputs.py"]
REFUSAL_KEYWORDS = ("(refus or bad or error or invalid or reject or tampered or truncated or missing or non_finite "
                    "or escape or packed_code or checked or flipped or corrupt or misplaced or mismatch or wrong "
                    "or unknown or identity or driver_checks) and not internal and not user_errors")


def refusal_tests() -> dict:
    """Run the refusal tests (:data:`REFUSAL_TESTS` whose names say so) and count their cases."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "refusals.xml"
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow and not rtl",
                               "-k", f"({REFUSAL_KEYWORDS}) and not reader_fuzz and not loader_fuzz", f"--junitxml={xml}", *REFUSAL_TESTS],
                              cwd=BENCH_DIR.parent, capture_output=True, text=True)
        if not xml.exists():
            return {"error": f"pytest exited with {done.returncode}: {done.stdout[-400:]}{done.stderr[-400:]}"}
        tests, failed = Counter(), []
        for testcase in ElementTree.parse(xml).getroot().iter("testcase"):
            name = f"{testcase.get('classname', '').rsplit('.', 1)[-1]}::{testcase.get('name', '').split('[')[0]}"
            if testcase.find("skipped") is not None:
                continue
            tests[name] += 1
            if testcase.find("failure") is not None or testcase.find("error") is not None:
                failed.append(testcase.get("name"))
    return {"cases": sum(tests.values()), "failures": len(failed), "failed": failed, "tests": dict(sorted(tests.items()))}


def malformed_inputs(seed: int, examples: int) -> dict:
    fuzzed = fuzz_inputs(seed, examples)
    refusals = refusal_tests()
    return {"fuzz": {"examples_per_target": examples, "hypothesis_seed": seed, "targets": fuzzed,
                     "note": "tests/test_fuzz_inputs.py's mutations (byte flips, truncations, insertions, header "
                             "edits with lengths and CRCs rewritten, resealed sections); every case must load or be "
                             "refused with a TellmeError"},
            "refusal_tests": {**refusals, "selection": f"{' '.join(REFUSAL_TESTS)} -k {REFUSAL_KEYWORDS!r}"},
            "cases": sum(t["cases"] for t in fuzzed.values()) + refusals.get("cases", 0),
            "failures": sum(t["failures"] + ("error" in t) for t in fuzzed.values())
                        + refusals.get("failures", 0) + ("error" in refusals)}


# -- formal -----------------------------------------------------------------------------------------

def formal_section() -> dict:
    """The formal proofs of :mod:`tellme.sim.formal` (per proof: unit, property families,
    assertions, method, depth, result) and its deliberately broken variants, each of which must
    fail; or what is there if that module is absent."""
    try:
        formal = importlib.import_module("tellme.sim.formal")
    except ImportError as error:
        return {"status": f"not available: {error}", "proofs": []}
    proofs = []
    for name, factory in formal.PROOFS.items():
        harness = factory()
        entry = {"proof": name, "unit": name.split("-")[0], "method": harness.method, "depth": harness.depth}
        try:
            proof = formal.prove(harness)
            entry.update(result="proven", seconds=round(proof.seconds, 1))
        except Exception as error:
            entry.update(result=f"FAILED: {type(error).__name__}: {str(error)[:300]}")
        entry.update(properties=sorted({a.split("_")[0] for a in harness.asserts}), assertions=len(harness.asserts))
        proofs.append(entry)
    broken = {}
    for name, (_, _, expected) in formal.BROKEN.items():
        try:
            formal.prove(formal.broken(name))
            broken[name] = "NOT CAUGHT: the broken variant was proven"
        except formal.FormalError as error:
            caught = sorted(set(error.failed) & set(expected))
            broken[name] = f"fails as it must ({', '.join(caught)})" if caught else f"NOT CAUGHT by {sorted(expected)}"
        except Exception as error:
            broken[name] = f"NOT CAUGHT: {type(error).__name__}: {str(error)[:200]}"
    failures = sum(p["result"] != "proven" for p in proofs) + sum(not v.startswith("fails") for v in broken.values())
    return {"status": "run", "tool": "YoWASP Yosys sat (tellme.sim.formal.prove)", "proofs": proofs,
            "properties_proven": sum(p["assertions"] for p in proofs if p["result"] == "proven"),
            "broken_variants": broken, "failures": failures}


# -- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regress", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help=f"time for the cases (default {DEFAULT_MINUTES:g}; "
                        "with --cases, no limit)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first case (case i: seed + i)")
    parser.add_argument("--only", default=None, help="comma-separated units (default all): " + ", ".join(UNITS))
    parser.add_argument("--cases", type=int, default=None, help="stop after this many cases")
    parser.add_argument("--no-waves", action="store_true", help="on failure, no traced rerun")
    parser.add_argument("--inject-fault", action="store_true",
                        help="hold the designs to a deliberately wrong expected value (the run must fail; units: "
                             + ", ".join(u for u, spec in UNITS.items() if spec.fault) + ")")
    parser.add_argument("--fuzz-examples", type=int, default=None,
                        help=f"malformed-input cases per fuzz target (default {FUZZ_EXAMPLES}, 0: no inputs section; "
                             "default 0 with --only or --cases)")
    parser.add_argument("--no-formal", action="store_true", help="leave out the formal proofs")
    parser.add_argument("--json", default=None, help="results JSON (default bench/results/reliability.json for a "
                        "full run, none with --only or --cases)")
    parser.add_argument("--log", default=None, help="append every case (with what its testbench recorded) to this JSONL")
    parser.add_argument("--formal-only", action="store_true",
                        help="run only the formal proofs and replace that section of the results JSON")
    parser.add_argument("--list", action="store_true", help="list the units and exit")
    args = parser.parse_args(argv)
    if args.list:
        for unit, spec in UNITS.items():
            print(f"{unit}{' (weight %g)' % spec.weight if spec.weight != 1 else ''}")
        return 0
    if args.formal_only:
        path = Path(args.json) if args.json else RESULTS_DIR / "reliability.json"
        results = json.loads(path.read_text())
        results["formal"] = formal_section()
        path.write_text(json.dumps(results, indent=1) + "\n")
        log(f"regress: formal proofs ({results['formal']['status']}) written to {path}")
        return 1 if results["formal"].get("failures") else 0
    units = list(UNITS) if args.only is None else [u.strip() for u in args.only.split(",") if u.strip()]
    unknown = [u for u in units if u not in UNITS]
    if unknown or not units:
        parser.error(f"unknown unit(s) {unknown}; units: {', '.join(UNITS)}")
    if args.inject_fault and not all(UNITS[u].fault for u in units):
        parser.error(f"--inject-fault needs --only among {[u for u, s in UNITS.items() if s.fault]}")
    partial = args.only is not None or args.cases is not None
    minutes = args.minutes if args.minutes is not None else (None if args.cases is not None else DEFAULT_MINUTES)
    base_seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    command = "python -m bench.regress " + " ".join(argv if argv is not None else sys.argv[1:])
    log(f"regress: units {', '.join(units)}; base seed {base_seed}; "
        f"{f'{minutes:g} minutes' if minutes is not None else 'no time limit'}"
        f"{f', at most {args.cases} cases' if args.cases is not None else ''}")
    started, commit = time.strftime("%Y-%m-%d %H:%M:%S"), source_commit()
    run = run_cases(units, base_seed, minutes=minutes, cases=args.cases, waves=not args.no_waves,
                    fault=args.inject_fault, case_log=Path(args.log) if args.log else None, out=log)
    records, failure = run["records"], run["failure"]
    per_unit = summarise(records)
    for unit, s in per_unit.items():
        log(f"  {unit:18s} {s['cases']:4d} cases, {s['stall_settings']:4d} stall settings, seeds "
            f"{s['seeds'][0]}-{s['seeds'][1]}, {s['seconds']:7.1f} s, {s['failures']} failed")
    examples = args.fuzz_examples if args.fuzz_examples is not None else (0 if partial else FUZZ_EXAMPLES)
    inputs = None
    if examples > 0 and failure is None:
        log(f"regress: malformed inputs ({examples} fuzz cases per target, the refusal tests) ...")
        inputs = malformed_inputs(base_seed, examples)
        log(f"  {inputs['cases']} malformed-input cases, {inputs['failures']} failed")
    formal = ({"status": "not run (--no-formal)", "proofs": []} if args.no_formal else
              None if partial or failure is not None else formal_section())
    json_path = Path(args.json) if args.json else (None if partial else RESULTS_DIR / "reliability.json")
    if json_path is not None:
        top = {k: v for k, v in per_unit.items() if k == "top"}
        results = {
            "generated_by": command.strip(), "commit": commit, "commit_at_end": source_commit(), "started": started,
            "duration_minutes": round(run["seconds"] / 60, 1), "requested_minutes": minutes,
            "base_seed": base_seed, "stall_patterns": list(STALL_PATTERNS),
            "total": {"cases": len(records), "failures": sum(s["failures"] for s in per_unit.values()),
                      "units_covered": sorted(k for k in per_unit if k != "top"),
                      "units_not_reached": [u for u in units if u not in per_unit]},
            "units": {k: v for k, v in per_unit.items() if k != "top"},
            "end_to_end": top.get("top"),
            "failure": failure,
            "cases": [{k: r[k] for k in ("unit", "seed", "config", "status", "seconds")} for r in records],
            "malformed_inputs": inputs, "formal": formal,
            "replay": "python -m bench.regress --only UNIT --seed SEED --cases 1",
        }
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=1) + "\n")
        log(f"regress: wrote {json_path}")
    failed = failure is not None or (inputs or {}).get("failures", 0) > 0 or (formal or {}).get("failures", 0) > 0
    log(f"regress: {len(records)} cases in {run['seconds'] / 60:.1f} minutes: " + ("FAILED" if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
