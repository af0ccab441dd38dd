"""cocotb bench of the weight streamer on the DDR model: lane-side waiting and DDR bandwidth.

Runs inside the simulator (started by ``bench/weight_buffer.py`` through
:func:`tellme.sim.rtl.run_cocotb`) on that script's harness ``StreamerOnDdr`` (the design under
test, built by the host: this module imports nothing from ``bench``). Configuration
(:func:`tellme.sim.tb.tb_config`):

- ``group``, ``lanes``, ``ports``, ``depth``, ``addr_width``, ``ddr_base``, ``seed``;
- ``fields``: ``{"cmd": [...]}``, the field list of the projection command;
- ``projections``: ``[[name, rows, k], ...]``; random ternary weights are drawn for each, their
  DDR image streams (``gen.image.encode_projection``) are written into the model memory;
- ``scenarios``: ``[{"name", "order" (projection indices, one command each), "warmup"
  (commands before the steady-state window), "passes", "latency", "rate" (fixed point,
  ``ddr_model.rate_fixed``)}, ...]``, run one after the other; every command is tiled as
  ``gen.tiling.tile_projection`` computes;
- ``results``: path of the JSON file written at the end.

Per scenario the commands are all pushed into the harness's command FIFO at once; the bench
then only wakes when the lane-word counter reaches the end of the first and of the last
warm-up commands and of the last one (the harness's ``done``) and on every change of ``waiting`` (timed with the hardware
cycle counter), so the simulation runs at Verilator speed. The lane words' running checksum is
compared with the golden weight stream at the end of every scenario.
"""

from __future__ import annotations

import json
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from ...contract import formats
from ...contract.formats import code_bits
from ...contract.layouts import ImageFormat
from ...gen import image
from ...gen.tiling import tile_projection
from ...weights import TernaryTensor
from . import tb_config
from .ddr import load_ddr_image
from .streams import StreamSource, reset_dut, start_clock, with_timeout

MASK64 = (1 << 64) - 1
PAGE = 4096


class Projection:
    def __init__(self, cfg: dict, name: str, rows: int, k: int, rng: np.random.Generator, base: int):
        g, lanes, ports = cfg["group"], cfg["lanes"], cfg["ports"]
        self.name, self.rows, self.k = name, rows, k
        trits = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(rows, k), p=[0.35, 0.3, 0.35])
        fmt = ImageFormat(g, lanes, ports, "int8", 128)
        self.raw = image.encode_projection(TernaryTensor(trits, np.float32(1.0)), fmt)
        self.stride = image.projection_port_stride((rows, k), fmt)
        self.bases = [base + p * self.stride for p in range(ports)]

        class Geometry:
            pass
        geometry = Geometry()
        geometry.group, geometry.lanes = g, lanes
        geometry.entries_per_bank, geometry.subword_bytes = cfg["depth"], fmt.subword_bytes
        self.tiling = tile_projection(name, rows, k, geometry)
        stream = formats.tlmm_weight_stream(formats.tlmm_encode(trits, g), lanes)      # (B, N, P)
        word_bytes = -(-lanes * code_bits(g) // 8)
        assert word_bytes % 8 == 0
        packed = np.ascontiguousarray(formats.pack_codes(stream, code_bits(g), word_bytes))
        # fold of each lane word: its 64-bit little-endian chunks XORed together
        self.fold = np.bitwise_xor.reduce(packed.view("<u8"), axis=-1)               # (B, N)

    @property
    def end(self) -> int:
        return self.bases[0] + len(self.raw)

    def words(self, passes: int) -> int:
        return self.tiling.blocks * self.rows * passes

    def command(self, cfg: dict, passes: int) -> dict:
        base = 0
        for p, a in enumerate(self.bases):
            base |= a << (p * cfg["addr_width"])
        return {"base": base, "blocks": self.tiling.blocks, "rows": self.rows,
                "tile_rows": self.tiling.tile_rows, "passes": passes}

    def checksum(self, checksum: int, passes: int) -> int:
        """The harness's running checksum after one command's lane words."""
        for tile in self.tiling.tiles:
            seq = [int(v) for v in self.fold[:, tile.row0:tile.row0 + tile.rows].reshape(-1)]
            for _ in range(passes):
                for f in seq:
                    checksum = (((checksum << 1) | (checksum >> 63)) & MASK64) ^ f
        return checksum


def sample(dut) -> dict:
    return {name: int(getattr(dut, name).value) for name in ("cycles", "words", "wait_cycles", "beats")}


@cocotb.test()
async def bench(dut):
    cfg = tb_config()
    rng = np.random.default_rng(cfg["seed"])
    clock = start_clock(dut)
    dut.expect.value = 0
    dut.cfg_latency.value = cfg["scenarios"][0]["latency"]
    dut.cfg_rate.value = cfg["scenarios"][0]["rate"]
    await reset_dut(dut, clock, 4)
    cmd = StreamSource(dut, "cmd", clock, fields=cfg["fields"]["cmd"])

    t0 = time.monotonic()
    projections = []
    address = cfg["ddr_base"]
    for name, rows, k in cfg["projections"]:
        proj = Projection(cfg, name, rows, k, rng, address)
        load_ddr_image(dut.ddr.mem, proj.raw, proj.bases[0] - cfg["ddr_base"], skip_zero=True)
        projections.append(proj)
        address = -(-(proj.end + PAGE) // PAGE) * PAGE
    dut._log.info("images of %s loaded in %.1f s (%d bytes)", [p.name for p in projections],
                  time.monotonic() - t0, address - cfg["ddr_base"])

    # every change of ``waiting``: (cycle counter, new value)
    changes: list[tuple[int, int]] = []

    async def watch_waiting():
        while True:
            await dut.waiting.value_change
            changes.append((int(dut.cycles.value), int(dut.waiting.value)))

    cocotb.start_soon(watch_waiting())

    expected_checksum = 0
    results = []
    for sc in cfg["scenarios"]:
        order = [projections[i] for i in sc["order"]]
        passes, n = sc["passes"], len(order)
        counts = [proj.words(passes) for proj in order]
        dut.cfg_latency.value = sc["latency"]
        dut.cfg_rate.value = sc["rate"]
        await ClockCycles(clock, 2)
        start = sample(dut)
        changes.clear()
        changes.append((start["cycles"], int(dut.waiting.value)))
        wall = time.monotonic()
        for proj in order:
            cmd.send_nowait(proj.command(cfg, passes))
        bound = 4 * sum(counts) + 10_000
        marks = []
        for target in (start["words"] + sum(counts[:sc["warmup"]]), start["words"] + sum(counts)):
            dut.expect.value = target
            await RisingEdge(clock)
            if not int(dut.done.value):
                await with_timeout(RisingEdge(dut.done), clock, bound, f"{sc['name']}: lane words")
            marks.append(sample(dut))
        first, last = marks
        assert last["words"] == start["words"] + sum(counts), (sc["name"], last, start)
        await ClockCycles(clock, 50)
        assert int(dut.words.value) == last["words"], f"{sc['name']}: extra lane words"
        assert not int(dut.error.value), f"{sc['name']}: AXI error"
        for proj in order:
            expected_checksum = proj.checksum(expected_checksum, passes)
        got = int(dut.checksum.value)
        assert got == expected_checksum, (f"{sc['name']}: lane word checksum {got:#x}, expected "
                                          f"{expected_checksum:#x}: wrong or misordered lane words")
        # waiting runs (start cycle, length) inside [start, last]
        runs = []
        high_since = None
        for cycle, value in changes:
            if value and high_since is None:
                high_since = cycle
            elif not value and high_since is not None:
                runs.append((high_since, cycle - high_since))
                high_since = None
        runs = [(c, length) for c, length in runs if c < last["cycles"]]
        results.append({"scenario": sc, "start": start, "first": first, "last": last,
                        "waiting_runs": runs, "checksum_ok": True,
                        "wall_seconds": round(time.monotonic() - wall, 1)})
        dut._log.info("%s: %d commands, %d words: warm-up done at +%d, last at +%d cycles, "
                      "waiting %d cycles; %d waiting runs; %.1f s", sc["name"], n, sum(counts),
                      first["cycles"] - start["cycles"], last["cycles"] - start["cycles"],
                      last["wait_cycles"] - start["wait_cycles"], len(runs), time.monotonic() - wall)
    with open(cfg["results"], "w") as fh:
        json.dump({"scenarios": results,
                   "projections": [{"name": p.name, "rows": p.rows, "k": p.k, "blocks": p.tiling.blocks,
                                    "tile_rows": p.tiling.tile_rows,
                                    "tiles": [[t.row0, t.rows] for t in p.tiling.tiles],
                                    "bases": p.bases, "stride": p.stride} for p in projections]}, fh)
