"""What runs on the board: ``run_on_board.py`` in a build's ``deploy/`` folder.

It loads the overlay (PYNQ's ``Overlay("tellme.bit")`` with ``tellme.hwh`` beside it; with
``--no-download`` it attaches to a design already loaded, e.g. by ``xmutil loadapp`` or JTAG),
puts the DDR image in a ``pynq.allocate`` buffer through :class:`tellme.runtime.Accelerator`
(which checks ``ID``, ``VERSION``, ``CONFIG_HASH`` and the size registers first), and then:

- ``--self-check``: greedy generation of the prompt in ``self_check.json`` compared with the
  golden model's tokens shipped beside it (computed by ``tellme build``); exit 0 only if equal;
- ``--prompt-ids 1,2,3``: greedy generation, one ``token <id>`` line per token as it comes
  (``--max-new-tokens``), then a ``done`` line with the cycle counters.

``--simulate`` runs the same on the behavioural model of the accelerator
(:mod:`tellme.sim.board_model`) instead of the board, to check a deploy folder on a PC.
Needs numpy (and pynq on the board); nothing of Amaranth or the simulators.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .config import HardwareConfig, ModelConfig
from .errors import TellmeError
from .runtime import Accelerator, PynqTransport
from .sim.backends import generate

HERE_FILES = ("design.json", "hardware.json", "self_check.json", "tellme.img")


def _parse_ids(text: str) -> list[int]:
    try:
        ids = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise TellmeError(f"--prompt-ids: expected comma-separated integers, got {text!r}") from None
    if not ids:
        raise TellmeError("--prompt-ids: the prompt is empty")
    return ids


def open_accelerator(folder: Path, *, simulate: bool = False, download: bool = True) -> Accelerator:
    """The accelerator of the deploy folder ``folder``, on the board or (``simulate``) on the
    behavioural model."""
    for name in HERE_FILES:
        if not (folder / name).is_file():
            raise TellmeError(f"{folder / name}: missing (is this a tellme deploy folder?)")
    design = json.loads((folder / "design.json").read_text())
    hw = HardwareConfig.from_dict(json.loads((folder / "hardware.json").read_text()))
    if simulate:
        from .sim.board_model import ModelTransport
        transport = ModelTransport(ModelConfig.from_dict(design["model"]), hw)
    else:
        bitstream = folder / design["bitstream"]
        if download and not (bitstream.is_file() and bitstream.with_suffix(".hwh").is_file()):
            raise TellmeError(f"{bitstream} and its .hwh must be in {folder} (run build.sh, then tellme deploy)")
        transport = PynqTransport(str(bitstream), ip_name=design["ip_name"], download=download)
    return Accelerator(transport, folder / design["image"], hw)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="run_on_board.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--folder", default=str(Path(sys.argv[0]).resolve().parent),
                   help="the deploy folder (default: this script's)")
    p.add_argument("--self-check", action="store_true", help="compare a short generation with the golden tokens")
    p.add_argument("--prompt-ids", help="comma-separated token ids to generate from")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--no-download", action="store_true", help="the design is already loaded (xmutil, JTAG)")
    p.add_argument("--simulate", action="store_true", help="the behavioural model instead of the board")
    args = p.parse_args(argv)
    folder = Path(args.folder)
    try:
        if not args.self_check and not args.prompt_ids:
            raise TellmeError("give --self-check or --prompt-ids")
        start = time.monotonic()
        acc = open_accelerator(folder, simulate=args.simulate, download=not args.no_download)
        print(f"loaded: {acc.model.name}, CONFIG_HASH ok, image {acc.buffers['image'].size:,} bytes "
              f"({time.monotonic() - start:.1f} s; driver {Path(__file__).resolve().parent})", flush=True)
        if args.self_check:
            check = json.loads((folder / "self_check.json").read_text())
            got, _ = generate(acc, check["prompt_ids"], len(check["tokens"]))
            if got != check["tokens"]:
                print(f"self-check: FAIL: the board generated {got}, the golden model {check['tokens']} "
                      f"(prompt {check['prompt_ids']})", flush=True)
                return 1
            cycles = sum(r.cycles for r in acc.results)
            print(f"self-check: PASS ({len(got)} tokens equal to the golden model's; {cycles:,} cycles)", flush=True)
        if args.prompt_ids:
            ids = _parse_ids(args.prompt_ids)
            start = time.monotonic()
            generate(acc, ids, args.max_new_tokens, on_token=lambda step, t: print(f"token {t}", flush=True))
            decode = [r.cycles for r in acc.results if r.kind == "decode"]
            print(f"done tokens={args.max_new_tokens} seconds={time.monotonic() - start:.3f} "
                  f"prefill_cycles={sum(r.cycles for r in acc.results if r.kind == 'prefill')} "
                  f"decode_cycles={sum(decode)} decode_calls={len(decode)}", flush=True)
        return 0
    except (TellmeError, OSError) as error:
        print(f"run_on_board: error: {error}", file=sys.stderr, flush=True)
        return 2
