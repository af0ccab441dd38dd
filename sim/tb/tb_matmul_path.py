"""cocotb tests of :class:`tellme.hw.matmul_path.MatmulPath` on a DDR model holding a real DDR
image: the weight commands of every case go out first (the weight streamer loads a case's
tiles while the cases before it run, as the sequencer's walker has it), then per case the
testbench fills the act buffer with x_q/d_x of n tokens, issues the projection's command
(tiles, passes, residual, gate or neither) and compares the destination rows the path writes
to DDR with ``golden.dequantize(golden.tlmm(codes, x_q), d_x, w_mult)`` (``+ residual_add``,
or ``gated_activation`` with gate rows of every kind: normal, zeros, subnormal, huge, NaN,
infinities), bit for bit, for every case of the configuration.

Configuration (``run_cocotb(parameters=...)``): ``model``, ``hardware`` (config dicts),
``image`` (path), ``memory_base``, ``image_base``, ``scratch_base``, ``command_fields``,
``weights_fields``, ``act_command_fields``, ``act`` (the path's gating activation),
``cases``: list of ``{layer, proj, tokens, tile_rows, residual, seed}`` and optionally ``gate``
(the array of the gate rows) and ``extreme``.
"""

from __future__ import annotations

import cocotb
import numpy as np

from ...config import HardwareConfig, ModelConfig
from ...contract import fp32
from ...contract.formats import tlmm_encode
from ...contract.layouts import ImageFormat, image_sections, projection_port_stride, scratch_layout
from ...gen.image import decode_projection
from .. import golden
from .ddr import load_ddr_image, read_ddr
from .streams import StreamSource, random_pause
from .tb_step_paths import scratch_values
from .testbench import Testbench


class MatmulTB(Testbench):
    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg
        self.model = ModelConfig.from_dict(cfg["model"])
        self.hw = HardwareConfig.from_dict(cfg["hardware"])
        self.fmt = ImageFormat.of(self.hw)
        self.sections = image_sections(self.model, self.fmt)
        self.scratch = scratch_layout(self.model, self.hw)
        self.image = np.fromfile(cfg["image"], dtype=np.uint8)
        self.memory = dut.ddr.mem
        L = self.hw.ew_lanes
        self.cmd = StreamSource(dut, "cmd", self.clock, fields=cfg["command_fields"])
        self.weights = StreamSource(dut, "weights_cmd", self.clock, fields=cfg["weights_fields"],
                                    pause=random_pause(0.3, 3))
        self.wr_cmd = StreamSource(dut, "act_wr_cmd", self.clock, fields=cfg["act_command_fields"])
        self.q = StreamSource(dut, "act_q", self.clock, fields=[("q", 8 * L, False), ("last", 1, False)],
                              pause=random_pause(0.3, 1))
        self.scale = StreamSource(dut, "act_scale", self.clock, pause=random_pause(0.5, 2))

    def ddr_offset(self, address: int) -> int:
        return address - self.cfg["memory_base"]

    def section(self, name: str) -> np.ndarray:
        s = self.sections[name]
        return self.image[s.offset:s.offset + s.size].view(np.dtype(s.dtype)).reshape(s.shape)

    async def fill_act(self, x_q: np.ndarray, d_x: np.ndarray) -> None:
        n, k = x_q.shape
        L = self.hw.ew_lanes
        self.wr_cmd.send_nowait({"inputs": k, "tokens": n})
        for t in range(n):
            row = np.zeros(-(-k // L) * L, dtype=np.int8)
            row[:k] = x_q[t]
            for b in range(len(row) // L):
                lanes = row[b * L:(b + 1) * L]
                self.q.send_nowait({"q": sum((int(v) & 0xFF) << (8 * j) for j, v in enumerate(lanes)),
                                    "last": int(b == len(row) // L - 1)})
            self.scale.send_nowait(int(np.float32(d_x[t]).view(np.uint32)))
        await self.wait_until(lambda: int(self.dut.act_written.value) == n, 20000, "act buffer fill")


@cocotb.test()
async def test_projections(dut):
    tb = MatmulTB(dut)
    cfg, hw, model = tb.cfg, tb.hw, tb.model
    await tb.reset()
    watchdog = tb.watchdog(5_000_000, "matmul path")
    load_ddr_image(tb.memory, tb.image.tobytes(), tb.ddr_offset(cfg["image_base"]), skip_zero=True)
    ports = hw.hp_ports

    def weight_fields(case) -> dict:
        rows, k = model.projections()[case["proj"]]
        section = tb.sections[f"layers.{case['layer']}.{case['proj']}"]
        base = [cfg["image_base"] + section.offset + p * projection_port_stride((rows, k), tb.fmt) for p in range(ports)]
        return {"base": sum(b << (40 * p) for p, b in enumerate(base)),
                "blocks": -(-(-(-k // hw.tlmm_group)) // hw.tlmm_lanes), "rows": rows,
                "tile_rows": case["tile_rows"], "tokens": case["tokens"]}

    for case in cfg["cases"]:
        tb.weights.send_nowait(weight_fields(case))
    for index, case in enumerate(cfg["cases"]):
        rng = np.random.default_rng(case["seed"])
        layer, proj, n = case["layer"], case["proj"], case["tokens"]
        rows, k = model.projections()[proj]
        section = tb.sections[f"layers.{layer}.{proj}"]
        codes = tlmm_encode(decode_projection(tb.image[section.offset:section.offset + section.size].tobytes(),
                                              (rows, k), tb.fmt), hw.tlmm_group)
        w_mult = tb.section(f"layers.{layer}.scales")[["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                        "down_proj"].index(proj), 0]
        x_q = rng.integers(-128, 128, (n, k)).astype(np.int8)
        if case.get("extreme"):
            x_q[:] = rng.choice([-128, 127], (n, k))
        d_x = (rng.random(n) * 0.05 + 1e-4).astype(np.float32)
        await tb.fill_act(x_q, d_x)
        want = golden.dequantize(golden.tlmm(codes, x_q, hw.tlmm_group), d_x, w_mult)
        dst = tb.scratch[case["dst"]]
        # (the command's base is the weight command's; the path does not use it)
        fields = {**weight_fields(case), "tiles": -(-rows // case["tile_rows"]),
                  "w_mult": int(np.float32(w_mult).view(np.uint32)),
                  "dst": cfg["scratch_base"] + dst.offset, "row_stride": dst.row_bytes,
                  "residual": int(bool(case["residual"])), "res": 0, "gate": 0}
        if case["residual"]:
            res = tb.scratch[case["residual"]]
            h = fp32.ftz(rng.standard_normal((n, res.width)).astype(np.float32) * 3)
            block = np.zeros((n, res.row_bytes // 4), dtype=np.float32)
            block[:, :res.width] = h
            load_ddr_image(tb.memory, block.tobytes(), tb.ddr_offset(cfg["scratch_base"] + res.offset))
            fields["res"] = cfg["scratch_base"] + res.offset
            want = golden.residual_add(h, want)
        if case.get("gate"):
            gate = tb.scratch[case["gate"]]
            g = scratch_values(rng, (n, gate.width), "mixed")
            block = np.zeros((n, gate.row_bytes // 4), dtype=np.float32)
            block[:, :gate.width] = g
            load_ddr_image(tb.memory, block.tobytes(), tb.ddr_offset(cfg["scratch_base"] + gate.offset))
            fields.update(gate=1, res=cfg["scratch_base"] + gate.offset)
            want = golden.gated_activation(g, want, cfg["act"])
        tb.cmd.send_nowait(fields)
        await tb.wait_until(lambda: int(dut.done.value), 2_000_000, f"case {index} ({proj}, n={n})")
        got = np.frombuffer(read_ddr(tb.memory, tb.ddr_offset(cfg["scratch_base"] + dst.offset), n * dst.row_bytes),
                            dtype=np.float32).reshape(n, -1)[:, :rows]
        bad = np.argwhere(got.view(np.uint32) != want.astype(np.float32).view(np.uint32))
        assert not bad.size, (f"case {index} ({proj} layer {layer}, n={n}, tile_rows {case['tile_rows']}, "
                              f"residual {case['residual']}): {len(bad)} elements differ, first (token, row) "
                              f"{tuple(bad[0])}: {got[tuple(bad[0])]!r} != {want[tuple(bad[0])]!r}")
        assert not int(dut.error.value)
        tb.log.info("case %d: %s n=%d tiles=%d ok", index, proj, n, fields["tiles"])
    watchdog.cancel()
