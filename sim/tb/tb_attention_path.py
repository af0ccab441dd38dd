"""cocotb test of :class:`tellme.hw.attention_path.AttentionPath` on a DDR model holding a real
image (the RoPE tables), the scratch region and the KV cache (``tests/test_attention_path.py``).

A sequence of calls: each writes fresh random q/k/v rows of its tokens into the scratch arrays
(the first call's with extreme rows: all zero and -0, huge, tiny normal and subnormal values),
then runs its passes, each an ``Attention`` step of the program (``gen.program.build_program``)
sent as one command. After every pass the ``attn`` array and the whole KV-cache region in DDR
must equal the bytes of a :class:`~tellme.sim.machine.StepMachine` that ran the same step on
the same rows, so the cache the later passes read is the one the earlier ones built, and the
pass must have made exactly its bursts (AR of the q/k/v and table readers, AW of the attn and
cache writers: every row once, each table row once per rotated vector, no cache write without
``write_kv``). Random
stalls hold each AXI channel of the shared DDR ports (``stall``) with probability ``stall``.

Configuration: ``model``, ``hardware``, ``image``, ``memory_base``, ``image_base``,
``scratch_base``, ``kv_base``, ``command_fields``, ``stall``, ``calls``: ``{pos0, tokens, seed,
extreme (optional), passes: [{layer, kv_head, first, write_kv (optional)}]}`` (``first``: the
pass's index among the program's passes over that kv head; ``write_kv`` overrides the step's,
for a repeated pass of a group of one pass).
"""

from __future__ import annotations

import dataclasses

import cocotb
import numpy as np

from ...config import HardwareConfig, ModelConfig
from ...contract.layouts import KV_RECORD_BYTES, kv_row_bytes
from ...gen.program import Attention, build_program
from ..machine import StepMachine
from .axi import axi_channel
from .ddr import load_ddr_image, read_ddr
from .streams import HandshakeMonitor, StreamSource, random_pause
from .testbench import Testbench


class AttentionPathTB(Testbench):
    def __init__(self, dut):
        super().__init__(dut)
        cfg = self.cfg
        self.model = ModelConfig.from_dict(cfg["model"])
        self.hw = HardwareConfig.from_dict(cfg["hardware"])
        self.program = build_program(self.model, self.hw)
        self.image = np.fromfile(cfg["image"], dtype=np.uint8)
        self.machine = StepMachine(self.program, self.image)
        self.memory = dut.ddr.mem
        self.cmd = StreamSource(dut, "cmd", self.clock, fields=cfg["command_fields"], pause=random_pause(0.5, 3))
        self.hold_low("stall")
        path = dut.path
        self.mon = HandshakeMonitor(dut, self.clock, {
            **{name: axi_channel(path, f"{name}_axi", "ar", ("addr", "len")) for name in ("qkv", "cos", "sin")},
            **{name: axi_channel(path, f"{name}_axi", "aw", ("addr", "len")) for name in ("kv_write", "wr")}})

    def offset(self, address: int) -> int:
        return address - self.cfg["memory_base"]

    def pass_step(self, spec: dict) -> Attention:
        steps = [s for s in self.program.steps if isinstance(s, Attention)
                 and s.layer == spec["layer"] and s.kv_head == spec["kv_head"]]
        step = steps[spec["first"]]
        return dataclasses.replace(step, write_kv=bool(spec["write_kv"])) if "write_kv" in spec else step

    def write_rows(self, n: int, seed: int, extreme: bool) -> None:
        """Fresh q, k, v rows of n tokens, into the machine's scratch and the DDR's."""
        rng = np.random.default_rng(seed)
        for name in ("q", "k", "v"):
            rows = self.machine.rows(name, n)
            x = (rng.standard_normal(rows.shape) * rng.choice([1e-2, 1.0, 30.0], (n, 1))).astype(np.float32)
            if extreme:
                x[0] = np.where(rng.random(x.shape[1]) < 0.5, np.float32(0.0), np.float32(-0.0))
                if n > 3:     # huge (q overflows RoPE to inf; k, v stay finite so the cache stays usable)
                    scale = 3e38 if name == "q" else 1e30
                    x[3] = (rng.uniform(-1, 1, x.shape[1]) * scale).astype(np.float32)
                if n > 5:     # tiny: subnormals and normals whose products underflow
                    x[5] = (rng.uniform(-1, 1, x.shape[1]) * 1e-38).astype(np.float32)
                if n > 6:     # one large element among small ones
                    x[6] = (rng.standard_normal(x.shape[1]) * 1e-3).astype(np.float32)
                    x[6, rng.integers(x.shape[1])] = np.float32(5e4)
            rows[:] = x
            a = self.program.scratch[name]
            block = self.machine.scratch[a.offset:a.offset + n * a.row_bytes]
            load_ddr_image(self.memory, block.tobytes(), self.offset(self.cfg["scratch_base"] + a.offset))

    def command(self, step: Attention, pos0: int, n: int) -> dict:
        cfg, hd, scratch = self.cfg, self.model.head_dim, self.program.scratch
        s, kv = cfg["scratch_base"], cfg["kv_base"]
        first, kv_col = step.heads[0] * hd * 4, step.kv_head * hd * 4
        return {"q": s + scratch["q"].offset + first, "k": s + scratch["k"].offset + kv_col,
                "v": s + scratch["v"].offset + kv_col, "row_stride": scratch["q"].row_bytes,
                "tokens": n, "pos0": pos0,
                "rope_cos": cfg["image_base"] + step.rope_cos.offset, "rope_sin": cfg["image_base"] + step.rope_sin.offset,
                "k_base": kv + step.cache.k_base, "v_base": kv + step.cache.v_base, "s_base": kv + step.cache.s_base,
                "write_kv": int(step.write_kv), "attn": s + scratch["attn"].offset + first}

    def check_bursts(self, label: str, command: dict, mark: dict, n: int) -> None:
        """Every read and write of the pass, each exactly once: per token the q heads' row, the
        key's and the value's; H+1 copies of each table row; the attn rows; with ``write_kv``
        the K row, V row and (int8 format) scale record of each position, else no cache write."""
        hd, H, rs = self.model.head_dim, self.hw.attn_heads_parallel, command["row_stride"]
        row = kv_row_bytes(hd, self.hw.attn_format)
        records = ([(command["s_base"] + (command["pos0"] + t) * KV_RECORD_BYTES, KV_RECORD_BYTES) for t in range(n)]
                   if self.hw.attn_format == "int8" else [])
        beat = self.hw.axi_data_width // 8
        p0 = command["pos0"]

        def bursts(name):
            return sorted((v["addr"], (v["len"] + 1) * beat) for v in self.mon.values[name][mark[name]:])

        want = {
            "qkv": sorted([(command["q"] + t * rs, H * hd * 4) for t in range(n)]
                          + [(command[a] + t * rs, hd * 4) for a in ("k", "v") for t in range(n)]),
            "cos": sorted((command["rope_cos"] + (p0 + t) * 2 * hd, 2 * hd) for t in range(n) for _ in range(H + 1)),
            "sin": sorted((command["rope_sin"] + (p0 + t) * 2 * hd, 2 * hd) for t in range(n) for _ in range(H + 1)),
            "wr": sorted((command["attn"] + t * rs, H * hd * 4) for t in range(n)),
            "kv_write": sorted([(command[a] + (p0 + t) * row, row) for a in ("k_base", "v_base") for t in range(n)]
                               + records)
            if command["write_kv"] else [],
        }
        for name, bursts_wanted in want.items():
            got = bursts(name)
            assert got == bursts_wanted, f"{label}: {name} bursts {got} != {bursts_wanted}"

    def check(self, label: str) -> None:
        """The attn array and the KV region in DDR equal the machine's, byte for byte."""
        cfg, hd = self.cfg, self.model.head_dim
        a = self.program.scratch["attn"]
        got = np.frombuffer(read_ddr(self.memory, self.offset(cfg["scratch_base"] + a.offset), a.size), np.uint8)
        want = self.machine.scratch[a.offset:a.offset + a.size]
        if not np.array_equal(got, want):
            g = got.view(np.float32).reshape(a.rows, -1)
            w = want.view(np.float32).reshape(a.rows, -1)
            bad = np.argwhere(g.view(np.uint32) != w.view(np.uint32))
            t, col = bad[0]
            raise AssertionError(f"{label}: attn differs in {len(bad)} elements, first token {t} head {col // hd} "
                                 f"element {col % hd}: {g[t, col]!r} != {w[t, col]!r}")
        size = self.program.kv_bytes
        got = np.frombuffer(read_ddr(self.memory, self.offset(cfg["kv_base"]), size), np.uint8)
        bad = np.flatnonzero(got != self.machine.kv[:size])
        assert not bad.size, f"{label}: KV cache differs in {bad.size} bytes, first at offset {bad[0]:#x}"


@cocotb.test()
async def test_passes(dut):
    tb = AttentionPathTB(dut)
    cfg = tb.cfg
    await tb.reset()
    watchdog = tb.watchdog(5_000_000, "attention path")
    cocotb.start_soon(tb.random_bits("stall", cfg["stall"], 5))
    load_ddr_image(tb.memory, tb.image.tobytes(), tb.offset(cfg["image_base"]), skip_zero=True)
    passes = 0
    for call in cfg["calls"]:
        pos0, n = call["pos0"], call["tokens"]
        tb.write_rows(n, call["seed"], call.get("extreme", False))
        positions = np.arange(pos0, pos0 + n)
        for spec in call["passes"]:
            step = tb.pass_step(spec)
            label = (f"pass {passes} (layer {step.layer}, kv head {step.kv_head}, heads {step.heads}, "
                     f"write_kv {step.write_kv}, pos0 {pos0}, {n} tokens)")
            start, mark = tb.cycle(), tb.mon.mark()
            command = tb.command(step, pos0, n)
            tb.cmd.send_nowait(command)
            await tb.wait_until(lambda: int(dut.done.value), 1_000_000, label)
            tb.machine._run(step, n, positions)
            tb.check(label)
            tb.check_bursts(label, command, mark, n)
            assert not int(dut.error.value), f"{label}: AXI error"
            tb.log.info("%s: %d cycles, ok", label, tb.cycle() - start)
            passes += 1
    watchdog.cancel()
