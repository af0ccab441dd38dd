"""cocotb tests of :class:`tellme.hw.norm_quant_path.NormQuantPath` on a DDR model holding a real
image and scratch rows: for each case, the int8 vectors and scales it emits equal
``golden.rmsnorm_quantize`` (with the image's gain row) or ``golden.quantize`` bit for bit, and the
act buffer command says the width and token count.

Configuration: ``model``, ``hardware``, ``image``, ``memory_base``, ``image_base``,
``scratch_base``, ``command_fields``, ``act_fields``, ``cases``: ``{src, gain (section or
null), tokens, seed}``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from ...config import HardwareConfig, ModelConfig
from ...contract import fp32
from ...contract.layouts import ImageFormat, image_sections, scratch_layout
from .. import golden
from .ddr import load_ddr_image
from .streams import StreamSink, StreamSource, random_pause, with_timeout
from .testbench import Testbench


@cocotb.test()
async def test_rows_to_int8(dut):
    tb = Testbench(dut)
    cfg = tb.cfg
    model, hw = ModelConfig.from_dict(cfg["model"]), HardwareConfig.from_dict(cfg["hardware"])
    sections = image_sections(model, ImageFormat.of(hw))
    scratch = scratch_layout(model, hw)
    image = np.fromfile(cfg["image"], dtype=np.uint8)
    L = hw.ew_lanes
    cmd = StreamSource(dut, "cmd", tb.clock, fields=cfg["command_fields"])
    q = StreamSink(dut, "q", tb.clock, fields=[("q", 8 * L, False), ("last", 1, False)], pause=random_pause(0.3, 5))
    scale = StreamSink(dut, "scale", tb.clock, pause=random_pause(0.5, 6))
    act = StreamSink(dut, "act_cmd", tb.clock, fields=cfg["act_fields"], pause=random_pause(0.5, 7))
    await tb.reset()
    watchdog = tb.watchdog(3_000_000, "norm/quant path")
    memory, offset = dut.ddr.mem, lambda address: address - cfg["memory_base"]
    load_ddr_image(memory, image.tobytes(), offset(cfg["image_base"]), skip_zero=True)
    for index, case in enumerate(cfg["cases"]):
        rng = np.random.default_rng(case["seed"])
        array, n = scratch[case["src"]], case["tokens"]
        x = fp32.ftz((rng.standard_normal((n, array.width)) * rng.choice([1e-3, 1.0, 40.0])).astype(np.float32))
        if case.get("zeros"):
            x[0] = 0.0
        rows = np.zeros((n, array.row_bytes // 4), dtype=np.float32)
        rows[:, :array.width] = x
        load_ddr_image(memory, rows.tobytes(), offset(cfg["scratch_base"] + array.offset))
        gain = case["gain"]
        if gain is None:
            want_q, want_d = golden.quantize(x)
        else:
            s = sections[gain]
            g = image[s.offset:s.offset + s.size].view(np.float32)
            want_q, want_d = golden.rmsnorm_quantize(x, g, model.rms_norm_eps, L)
        cmd.send_nowait({"src": cfg["scratch_base"] + array.offset, "tokens": n, "row_bytes": array.row_bytes,
                         "row_stride": array.row_bytes, "width": array.width, "norm": int(gain is not None),
                         "gain": cfg["image_base"] + (sections[gain].offset if gain else 0),
                         "inv_dim": int(np.float32(1.0 / array.width).view(np.uint32)),
                         "eps": int(np.float32(model.rms_norm_eps).view(np.uint32))})
        got = await with_timeout(act.recv(), tb.clock, 100_000, f"case {index}: act command")
        assert got == {"inputs": array.width, "tokens": n}, got
        beats = array.row_bytes // (4 * L)
        for t in range(n):
            d = await with_timeout(scale.recv(), tb.clock, 100_000, f"case {index} token {t}: scale")
            assert d == int(np.float32(want_d[t]).view(np.uint32)), f"case {index} token {t}: d_x differs"
            values = []
            for b in range(beats):
                beat = await with_timeout(q.recv(), tb.clock, 100_000, f"case {index} token {t} beat {b}")
                assert beat["last"] == int(b == beats - 1)
                values += [((beat["q"] >> (8 * j)) & 0xFF) for j in range(L)]
            got_q = np.array(values, dtype=np.uint8).view(np.int8)[:array.width]
            assert np.array_equal(got_q, want_q[t]), f"case {index} token {t}: x_q differs"
    assert q.empty() and scale.empty() and act.empty()
    assert not int(dut.error.value)
    watchdog.cancel()
