"""The LM head (hw/lm_head.py), int8 and fp16 rows: parameter and command checks, and cocotb
tests under Verilator (sim/tb/tb_lm_head.py, whose docstring lists what each covers), every
logit bit for bit against golden.lm_head (golden.lm_head_fp16) and the token against
numpy.argmax.

The default build is small (8 lanes on a 128-bit bus, scale chunks of 2 beats so a call spans
several chunks) with shapes that divide nothing evenly: cols 160 and 72 against 16-byte beats
(rows straddle beats), cols 5 (several rows per beat), rows 37 and 288. The slow set adds a
KV260-like size (cols 1536, 128-bit bus, default scale chunks) and the other width relations
(x beats wider than the bus, a 32-bit bus).
"""

import json

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment
from helpers import kwargs_id

from tellme.config import ConfigError
from tellme.hw.lm_head import MAX_COLS, LmHead
from tellme.hw.pipeline import f32_vec, q8_vec
from tellme.sim.rtl import run_cocotb
from tellme.sim.tb.streams import struct_fields

TB = "tellme.sim.tb.tb_lm_head"
TESTS = {"random_calls", "extreme_calls", "throughput"}


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(lanes=0), ConfigError, "lanes"),
    (dict(max_cols=-3), ConfigError, "max_cols"),
    (dict(scale_beats=True), ConfigError, "scale_beats"),
    (dict(lanes=3), ValueError, "divide one another"),
    (dict(lanes=12, data_width=128), ValueError, "divide one another"),
    (dict(data_width=96), ValueError, "data_width"),
    (dict(addr_width=8), ValueError, "addr_width"),
    (dict(max_cols=MAX_COLS + 1), ValueError, "int32 accumulator"),
    (dict(max_rows=1 << 32), ValueError, "max_rows"),
    (dict(max_burst=300), ValueError, "max_burst"),
    (dict(weight_format="bf16"), ValueError, "weight_format"),
    (dict(weight_format="fp16", lanes=16, data_width=128), ValueError, "fp16 rows"),
    (dict(weight_format="fp16", lanes=3, data_width=128), ValueError, "fp16 rows"),
    (dict(ports=3), ValueError, "power of two"),
    (dict(ports=8, data_width=128), ValueError, "at most 512 bits"),
], ids=kwargs_id)
def test_parameters_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        LmHead(**kwargs)


def test_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        LmHead(8)


#: the unit whose commands are checked
COMMAND_HEAD = dict(lanes=8, data_width=128, max_cols=2048, max_rows=40000, addr_width=32)


def test_command_checks():
    head = LmHead(**COMMAND_HEAD)
    assert head.chunk_rows == 64 and head.latency == 3 + 2 + 9
    cmd = head.command(rows_base=0x1000, scales_base=0x2_0000, rows=32002, cols=1536)
    assert cmd == {"stripe_base": 0, "stripe_bytes": 0, "rows_base": 0x1000, "scales_base": 0x2_0000,
                   "rows": 32002, "cols": 1536}
    layout = head.command_layout
    assert [name for name, _ in layout] == ["stripe_base", "stripe_bytes", "rows_base", "scales_base", "rows", "cols"]
    verilog.convert(head, name="lm_head")            # elaborates (and silences the warning)


@pytest.mark.parametrize("command,match", [
    (dict(rows_base=0, scales_base=0, rows=0, cols=16), "rows must be 1..40000"),
    (dict(rows_base=0, scales_base=0, rows=1, cols=2049), "cols must be 1..2048"),
    (dict(rows_base=8, scales_base=0, rows=1, cols=16), "16-byte logical beat"),
    (dict(rows_base=0xFFFF_FF00, scales_base=0, rows=2, cols=200), "address space"),
    (dict(ports=4, rows_base=0, scales_base=16, rows=1, cols=64), "64-byte logical beat"),
    (dict(ports=4, aligned_rows=True, rows_base=0, scales_base=0x1000, rows=1, cols=48), "whole number"),
    (dict(ports=4, rows_base=0, scales_base=0x1000, rows=1000, cols=64, stripe_bytes=0x100), "would overlap"),
    (dict(ports=4, stripe_base=8, rows_base=0, scales_base=0x1000, rows=1, cols=64, stripe_bytes=0x1000),
     "16-byte AXI beat"),
    (dict(ports=4, stripe_base=0xFFFF_0000, rows_base=0, scales_base=0x1000, rows=1, cols=64,
          stripe_bytes=0x1_0000), "address space"),
], ids=kwargs_id)
def test_commands_are_checked(command, match):
    command = dict(command)
    unit = {k: command.pop(k) for k in ("ports", "aligned_rows") if k in command}
    head = LmHead(**COMMAND_HEAD, **unit)
    with pytest.raises(ValueError, match=match):
        head.command(**command)
    Fragment.get(head, None)                         # elaborates (and silences the warning)


def _parameters(head: LmHead, **extra) -> dict:
    x_layout = f32_vec(head.lanes) if head.fp16 else q8_vec(head.lanes)
    return {"weight_format": head.weight_format, "lanes": head.lanes, "data_width": head.data_width,
            "ports": head.ports, "scale_beats": head.scale_beats,
            "fields": {"cmd": struct_fields(head.command_layout), "x": struct_fields(x_layout),
                       "logits": struct_fields(f32_vec(head.lanes))},
            # pause probabilities [axi, cmd, x, scale, logits, token]; a setting without AXI
            # pauses after one with them: the RAM's channels must come out of a pause (which
            # cocotbext-axi's set_pause_generator(None) alone leaves on: the regression's
            # lm_head seed 833859528 hung so)
            "stalls": [[0.3, 0.3, 0.3, 0.3, 0.3, 0.3], [0.0] * 6, [0.1, 0.5, 0.6, 0.5, 0.7, 0.6]],
            **extra}


def _run(head, name, parameters, testcase=None, timeout=600.0):
    result = run_cocotb(head, name=name, test_module=TB, parameters=parameters, testcase=testcase,
                        timeout=timeout)
    expected = TESTS if testcase is None else ({testcase} if isinstance(testcase, str) else set(testcase))
    assert set(result.tests) == expected, result.tests
    assert set(result.tests.values()) == {"passed"}, result.tests
    print(f"{name}: build {result.build_seconds:.0f} s, simulation {result.sim_seconds:.0f} s")
    return result


@pytest.mark.rtl
def test_lm_head_rtl(tmp_path):
    head = LmHead(lanes=8, data_width=128, addr_width=32, max_cols=256, max_rows=512, scale_beats=2)
    results = tmp_path / "results.json"
    _run(head, "lm_head_l8_w128",
         _parameters(head, seed=3, shapes=[[37, 160], [288, 72], [50, 5], [9, 16], [1, 1], [23, 200]],
                     throughput_shapes=[[64, 160], [64, 72]], results=str(results)))
    rate = json.loads(results.read_text())["throughput"]
    print(json.dumps(rate, indent=1))


@pytest.mark.rtl
def test_lm_head_fp16_rtl(tmp_path):
    """The binary16 head: 4 lanes on a 128-bit bus (two groups per word), rows of whole beats
    (cols 160, 72, 200, 16: 2 bytes a weight), rows straddling beats (cols 77: 154 bytes),
    several rows per beat (cols 5), one-element rows, partial final x beats (cols 5, 77, 1);
    golden.lm_head_fp16 bit for bit under every stall setting; throughput of whole-beat
    rows (cols 160) and rows straddling beats (cols 100: 200 bytes)."""
    head = LmHead(weight_format="fp16", lanes=4, data_width=128, addr_width=32, max_cols=256, max_rows=512,
                  scale_beats=2)
    assert head.latency == 1 + 4 + 2 * 4 + 4 + 1 + 8 + 1
    results = tmp_path / "results.json"
    _run(head, "lm_head_fp16_l4_w128",
         _parameters(head, seed=5, shapes=[[37, 160], [50, 5], [9, 16], [1, 1], [23, 200], [64, 72], [31, 77]],
                     throughput_shapes=[[64, 160], [64, 100]], results=str(results)))
    print(json.dumps(json.loads(results.read_text())["throughput"], indent=1))


@pytest.mark.rtl
def test_lm_head_striped_rtl(tmp_path):
    """Four ports in lockstep (the kv260's HP ports): 512-bit logical beats, rows of whole
    beats without the realigner (``aligned_rows``), the stream striped at random bases under
    every stall setting (each port paused apart); golden.lm_head bit for bit, every stripe beat
    read once; a logical beat per cycle (four AXI beats) in the throughput test."""
    head = LmHead(lanes=8, data_width=128, addr_width=32, max_cols=256, max_rows=512, scale_beats=1,
                  ports=4, aligned_rows=True)
    results = tmp_path / "results.json"
    _run(head, "lm_head_l8_w128_p4",
         _parameters(head, seed=11, shapes=[[37, 128], [50, 64], [9, 256], [1, 64], [70, 192]],
                     throughput_shapes=[[64, 256]], results=str(results)))
    rate = json.loads(results.read_text())["throughput"]
    print(json.dumps(rate, indent=1))


SLOW = [
    # two ports of 64 bits with the realigner: rows straddling the 16-byte logical beats
    (dict(lanes=8, data_width=64, max_cols=300, max_rows=600, scale_beats=2, ports=2),
     dict(shapes=[[41, 300], [200, 13], [7, 64], [30, 24]], throughput_shapes=[[100, 64]])),
    # fp16 over four ports: 8 lanes of binary16 = a quarter of a 512-bit logical beat a cycle
    (dict(weight_format="fp16", lanes=8, data_width=128, max_cols=256, max_rows=512, ports=4, aligned_rows=True),
     dict(shapes=[[37, 128], [20, 32], [9, 256]], throughput_shapes=[[64, 256]])),
    # KV260-like: hidden 1536 on a 128-bit bus, 8 lanes, default scale chunks (64 rows)
    (dict(lanes=8, data_width=128, max_cols=1536, max_rows=1024, scale_beats=16),
     dict(shapes=[[300, 1536], [129, 1536], [37, 1000]], throughput_shapes=[[256, 1536]])),
    # x beats wider than the bus (32 int8 = 4 beats of 64 bits), uneven shapes
    (dict(lanes=32, data_width=64, max_cols=300, max_rows=600, scale_beats=1),
     dict(shapes=[[41, 300], [200, 13], [7, 64]], throughput_shapes=[[100, 64]])),
    # 32-bit bus: one scale per beat, 4 MACs per cycle
    (dict(lanes=4, data_width=32, max_cols=128, max_rows=256, scale_beats=4),
     dict(shapes=[[70, 37], [33, 128], [5, 3]], throughput_shapes=[[64, 32]])),


    # fp16 at the kv260 settings: 8 lanes of binary16 = one 128-bit word per cycle
    (dict(weight_format="fp16", lanes=8, data_width=128, max_cols=1536, max_rows=1024),
     dict(shapes=[[100, 1536], [37, 1000]], throughput_shapes=[[64, 1536]])),
]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("config,extra", SLOW, ids=["p2-w64", "fp16-p4", "kv260", "l32-w64", "l4-w32",
                                                    "fp16-kv260"])
def test_lm_head_sweep_rtl(config, extra):
    head = LmHead(addr_width=32, **config)
    _run(head, f"lm_head_{head.weight_format}_l{head.lanes}_w{head.data_width}_p{head.ports}_c{head.max_cols}",
         _parameters(head, seed=7, **extra),
         timeout=3600.0)
