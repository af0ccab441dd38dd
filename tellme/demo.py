"""`make demo`: the main job end to end on the built-in tiny models.

For both BitNet styles: a synthetic Hugging Face checkpoint -> checkpoint loader -> DDR image ->
the accelerator generated for it (``tellme generate``: Verilog + description) -> greedy generation
on that Verilog under Verilator, driven by the host driver through the register map, beside the
golden (hardware-exact) model and the float reference -> cycles per call -> the layer-by-layer
agreement table of the golden model against the float reference.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .config import hardware_preset
from .gen.checkpoint import load_checkpoint
from .gen.image import read_image, write_image
from .gen.synthetic import make_synthetic
from .gen.top import write_top
from .sim.backends import compare, generate, make_backend
from .sim.top_harness import rtl_generate

PROMPT = [1, 17, 42, 7, 99, 3, 250, 64]
NEW_TOKENS = 8
STYLES = (("tiny", "packed", "2B4T style: ReLU^2, GQA 4:2, packed 2-bit weights"),
          ("tiny-silu", "full", "large style: SiLU gate, MHA, full-precision weights quantised at load"))


def run_demo(out_dir="out/demo") -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hw = hardware_preset("sim-small")
    summary = {}
    for preset, style, what in STYLES:
        t0 = time.monotonic()
        print(f"\n== {preset}: {what}")
        ckpt = out / f"{preset}-{style}"
        make_synthetic(preset, ckpt, style=style, seed=1, overwrite=True)
        print(f"  1. wrote a synthetic Hugging Face checkpoint: {ckpt}/ "
              f"({', '.join(sorted(p.name for p in ckpt.iterdir()))})")
        weights = load_checkpoint(ckpt)
        c = weights.config
        print(f"  2. loaded it: {c.num_layers} layers, hidden {c.hidden_size}, ffn {c.intermediate_size}, "
              f"heads {c.num_heads}/{c.num_kv_heads}, vocab {c.vocab_size}, act {c.hidden_act}")
        image = out / f"{preset}.img"
        header = write_image(weights, hw, image)
        print(f"  3. DDR image {image}: {image.stat().st_size:,} bytes, {len(header['sections'])} sections, "
              f"TLMM G={hw.tlmm_group} ({hw.code_bits}-bit codes), lanes {hw.tlmm_lanes}, {hw.hp_ports} ports")
        from_image, _, _ = read_image(image)
        golden = make_backend("golden", from_image, hw)
        reference = make_backend("float", weights, hw)
        golden_ids, golden_logits = generate(golden, PROMPT, NEW_TOKENS)
        float_ids, _ = generate(reference, PROMPT, NEW_TOKENS)
        rtl_dir = out / f"{preset}-rtl"
        info = write_top(c, hw, rtl_dir)
        print(f"  4. generated the accelerator: {rtl_dir}/tellme_top.v ({(rtl_dir / 'tellme_top.v').stat().st_size:,} "
              f"bytes of Verilog), {info['program']['steps']} program steps, {len(info['ports']) - 3} AXI4 ports")
        print("     running the prompt on that Verilog under Verilator (the first build takes minutes) ...", flush=True)
        rtl_ids, rtl_logits, run = rtl_generate(from_image, hw, PROMPT, NEW_TOKENS)
        same_logits = all(np.array_equal(np.asarray(a, np.float32).view(np.uint32),
                                         np.asarray(b, np.float32).view(np.uint32))
                          for a, b in zip(rtl_logits, golden_logits))
        print(f"  5. greedy generation from prompt {PROMPT}:")
        print(f"       RTL (generated Verilog, Verilator):                        {rtl_ids}")
        print(f"       golden (hardware-exact, weights read back from the image): {golden_ids}")
        print(f"       float reference (Hugging Face BitNet semantics):           {float_ids}")
        print(f"       RTL = golden, tokens and every step's logits bit for bit: {rtl_ids == golden_ids and same_logits}")
        cycles = [(call["kind"], call["cycles"]) for call in run.calls]
        print("       cycles per call: " + ", ".join(f"{k} {n:,}" for k, n in cycles) +
              f" (at {hw.clock_mhz:g} MHz; build {run.build_seconds:.0f} s, simulation {run.sim_seconds:.0f} s)")
        report = compare(from_image, hw, PROMPT)
        print("  6. agreement per layer of golden vs float (cosine of hidden states over the prompt):")
        for row in report["layers"]:
            print(f"       layer {row['layer']}: q {row['q']:.6f}  attn-out {row['after_attn']:.6f}  "
                  f"ffn {row['ffn_act']:.6f}  hidden {row['hidden']:.6f}")
        print(f"       logits cosine {report['logits_cosine']:.6f}; same greedy tokens: {golden_ids == float_ids}"
              f"  ({time.monotonic() - t0:.1f} s)")
        summary[preset] = {"prompt_ids": PROMPT, "rtl_ids": rtl_ids, "rtl_equals_golden": rtl_ids == golden_ids and same_logits,
                           "cycles": cycles, "verilog": str(rtl_dir / "tellme_top.v"),
                           "golden_ids": golden_ids, "float_ids": float_ids,
                           "logits_cosine": report["logits_cosine"],
                           "min_layer_cosine": min(r["hidden"] for r in report["layers"]),
                           "last_logits_top5": np.argsort(golden_logits[-1])[::-1][:5].tolist()}
    print(f"\nDemo outputs are in {out}/. Next: `tellme run --checkpoint DIR --prompt-ids ...`, "
          "`tellme compare`, `tellme info`.")
    return summary
