"""``tellme chat``: text in, text out, on any backend.

The checkpoint's ``tokenizer.json`` (Hugging Face ``tokenizers``; synthetic checkpoints carry a
byte-level one, :func:`tellme.gen.synthetic.byte_level_tokenizer`) turns the text into ids, a
backend generates greedily, and the reply is decoded and streamed as the tokens arrive.

A backend is any callable ``backend_generate(prompt_ids, max_new_tokens, on_token)`` that
returns the generated ids (or a :class:`Generated` with figures of its own, e.g. simulated
cycles) and calls ``on_token(step, id)`` for each id as it is chosen, as
:func:`tellme.sim.backends.generate` does (``on_token(id)`` is taken too; a backend that cannot
stream may skip the calls: :func:`chat_generate` streams the ids it did not hear about when it
returns).
:func:`make_chat_backend` builds one for ``golden``, ``float``, ``program`` (numpy, through
:func:`tellme.sim.backends.generate`), ``rtl`` (the generated Verilog under Verilator,
:func:`tellme.sim.top_harness.rtl_generate`) and ``board`` (a ``board_generate`` callable
supplied by the caller; the command line takes it from ``tellme.deploy.board_generate`` when
that exists).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import TellmeError
from .gen.synthetic import TOKENIZER_FILE

__all__ = ["ChatError", "ChatResult", "Generated", "CHAT_BACKENDS", "TOKENIZER_FILE", "load_tokenizer",
           "chat_generate", "make_chat_backend", "add_chat_parser", "cmd_chat"]

CHAT_BACKENDS = ("golden", "float", "program", "rtl", "board")
#: What an incomplete UTF-8 sequence decodes to; held back while streaming (see chat_generate).
REPLACEMENT = "\ufffd"
#: The most U+FFFD an incomplete UTF-8 character decodes to (one per byte, with a byte-fallback
#: decoder; one in all, with a byte-level decoder).
MAX_INCOMPLETE = 3


class ChatError(TellmeError):
    """A problem with a chat request (tokenizer, prompt, backend), explained by the message."""


@dataclass
class Generated:
    """What a backend may return instead of a plain list of ids: the ids and extra figures
    (``simulated_decode_tokens_per_s``, ``clock_mhz``, cycle counts, ...) for the result."""
    ids: list[int]
    stats: dict = field(default_factory=dict)


@dataclass
class ChatResult:
    """One turn: the prompt's text and ids, the generated ids and their decoded text, the wall
    clock (seconds of generation, tokens/s over them) and, from a simulated backend, the
    simulated decode tokens/s at ``clock_mhz`` plus the backend's other figures (``stats``)."""
    prompt: str
    prompt_ids: list[int]
    generated_ids: list[int]
    text: str
    seconds: float
    tokens_per_s: float | None
    simulated_decode_tokens_per_s: float | None = None
    clock_mhz: float | None = None
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def rate_line(self) -> str:
        """One line for stderr: the token count and the rates, each labelled with its clock."""
        n = len(self.generated_ids)
        parts = [f"{n} token{'s' if n != 1 else ''}"]
        if self.clock_mhz is not None and "simulated_decode_tokens_per_s" in self.stats:
            if self.simulated_decode_tokens_per_s is not None:
                parts.append(f"{self.simulated_decode_tokens_per_s:.1f} decode tokens/s "
                             f"(simulated at {self.clock_mhz:g} MHz)")
            else:
                parts.append(f"no decode step to time (simulated at {self.clock_mhz:g} MHz)")
            if self.stats.get("simulated_prefill_seconds") is not None:
                parts.append(f"prefill {self.stats['simulated_prefill_seconds'] * 1e3:.3f} ms simulated")
        rate = f"{self.tokens_per_s:.2f} tokens/s" if self.tokens_per_s is not None else "no tokens"
        detail = f"{self.seconds:.2f} s"
        if self.stats.get("build_seconds") is not None:
            detail += f": build {self.stats['build_seconds']:.0f} s, simulation {self.stats.get('sim_seconds', 0):.0f} s"
        parts.append(f"{rate} wall clock ({detail})")
        return "[" + ", ".join(parts) + "]"


# -- tokenizer -----------------------------------------------------------------------------------

def load_tokenizer(checkpoint_dir, vocab_size: int | None = None):
    """The ``tokenizers.Tokenizer`` of ``checkpoint_dir/tokenizer.json``; ChatError naming the
    file if it is missing or unreadable, or if it has ids the model does not (>= ``vocab_size``;
    None: the vocab_size of the checkpoint's config.json)."""
    path = Path(checkpoint_dir) / TOKENIZER_FILE
    if not Path(checkpoint_dir).is_dir():
        raise ChatError(f"{checkpoint_dir}: not a checkpoint directory")
    if not path.is_file():
        raise ChatError(f"{path}: missing; chat needs the checkpoint's Hugging Face tokenizer "
                        "(`tellme synth-checkpoint` writes one for synthetic models)")
    try:
        from tokenizers import Tokenizer
    except ImportError as e:
        raise ChatError(f"chat needs the `tokenizers` package ({e})") from None
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:     # tokenizers raises a bare Exception for a malformed file
        raise ChatError(f"{path}: cannot read the tokenizer ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if vocab_size is None:
        from .gen.checkpoint import inspect_checkpoint
        vocab_size = inspect_checkpoint(checkpoint_dir).config.vocab_size
    ids = tokenizer.get_vocab(with_added_tokens=True).values()
    top = max(ids, default=-1)
    if top >= vocab_size:
        raise ChatError(f"{path}: the tokenizer has ids up to {top}, beyond the model's vocab_size {vocab_size}")
    return tokenizer


# -- one turn ------------------------------------------------------------------------------------

def chat_generate(text: str, *, tokenizer, backend_generate: Callable, max_new_tokens: int,
                  on_token: Callable[[int, str], None] | None = None, max_context: int | None = None,
                  vocab_size: int | None = None) -> ChatResult:
    """Encode ``text``, generate ``max_new_tokens`` ids with ``backend_generate(prompt_ids,
    max_new_tokens, on_token)`` and decode them.

    ``on_token(id, delta)`` is called once per generated id with the text it adds: the whole
    generated sequence is decoded each time and the new suffix emitted, holding back up to three
    trailing U+FFFD (an incomplete UTF-8 character) until the next ids show what they are, so
    multi-byte characters come out whole; the deltas add up to the reply text (for a decoder
    that only appends, as the byte-level one does). ChatError for an empty prompt, or one that
    with ``max_new_tokens`` exceeds ``max_context``; a prompt id >= ``vocab_size`` is refused as
    well (when given).
    """
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ChatError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    prompt_ids = list(tokenizer.encode(text).ids)
    if not prompt_ids:
        raise ChatError("the prompt is empty: it encodes to no tokens")
    if max_context is not None and len(prompt_ids) + max_new_tokens > max_context:
        raise ChatError(f"the prompt is too long: {len(prompt_ids)} tokens + {max_new_tokens} new "
                        f"token{'s' if max_new_tokens != 1 else ''} "
                        f"exceed the context of {max_context} tokens")
    if vocab_size is not None and max(prompt_ids) >= vocab_size:
        raise ChatError(f"the tokenizer gave id {max(prompt_ids)}, beyond the model's vocab_size {vocab_size}")

    streamed: list[int] = []
    emitted = [""]          # text passed to on_token so far

    def emit(final: bool):
        full = tokenizer.decode(streamed)
        stable = full
        if not final:     # an incomplete character at the end decodes to (at most 3) U+FFFD
            for _ in range(MAX_INCOMPLETE):
                if not stable.endswith(REPLACEMENT):
                    break
                stable = stable[:-1]
        if stable.startswith(emitted[0]):
            delta = stable[len(emitted[0]):]
            emitted[0] = stable
        else:   # a decoder that rewrites earlier text (not a byte-level one): emit nothing more
            delta = ""
        return delta

    def heard(*step_and_token):        # (step, id) as sim.backends.generate calls it, or (id)
        token = int(step_and_token[-1])
        streamed.append(token)
        delta = emit(final=len(streamed) >= max_new_tokens)
        if on_token is not None:
            on_token(token, delta)

    start = time.monotonic()
    out = backend_generate(list(prompt_ids), max_new_tokens, heard)
    seconds = time.monotonic() - start
    generated, stats = (list(out.ids), dict(out.stats)) if isinstance(out, Generated) else (list(out), {})
    generated = [int(t) for t in generated]
    if generated[:len(streamed)] != streamed:
        raise RuntimeError(f"the backend streamed ids {streamed} but returned {generated}")
    for token in generated[len(streamed):]:       # a backend without a per-token callback
        heard(token)
    tail = emit(final=True)
    if tail and on_token is not None:
        # A backend that stopped before max_new_tokens inside a character: the U+FFFD held back
        # goes out with its last id, so the deltas still add up to the reply.
        on_token(generated[-1], tail)
    reply = tokenizer.decode(generated)
    return ChatResult(prompt=text, prompt_ids=prompt_ids, generated_ids=generated, text=reply, seconds=seconds,
                      tokens_per_s=(len(generated) / seconds if generated and seconds > 0 else None),
                      simulated_decode_tokens_per_s=stats.get("simulated_decode_tokens_per_s"),
                      clock_mhz=stats.get("clock_mhz"), stats=stats)


# -- backends ------------------------------------------------------------------------------------

def make_chat_backend(name: str, weights, hw, **kw) -> Callable:
    """A ``backend_generate(prompt_ids, max_new_tokens, on_token)`` callable for ``name``.

    ``golden``, ``float``, ``program``: :func:`tellme.sim.backends.make_backend` (one model,
    reset for each turn), streaming each id. ``rtl``: :func:`tellme.sim.top_harness.rtl_generate`
    (kw ``progress``: report the build and the calls on stderr); its ids arrive when the
    simulation ends, with the simulated decode tokens/s (decode calls x clock / decode cycles).
    ``board``: kw ``board_generate``, a backend_generate callable that runs on the board;
    ChatError without it.
    """
    if name in ("golden", "float", "program"):
        from .sim.backends import generate, make_backend
        model = make_backend(name, weights, hw)

        def numpy_generate(prompt_ids, max_new_tokens, on_token=None):
            generated, _ = generate(model, prompt_ids, max_new_tokens, on_token=on_token)
            return generated
        return numpy_generate
    if name == "rtl":
        progress = bool(kw.get("progress", False))

        def rtl_backend(prompt_ids, max_new_tokens, on_token=None):
            from .sim.top_harness import rtl_generate
            generated, _, run = rtl_generate(weights, hw, list(prompt_ids), max_new_tokens, progress=progress)
            return Generated(list(generated), _rtl_stats(run, hw.clock_mhz))
        return rtl_backend
    if name == "board":
        board_generate = kw.get("board_generate")
        if board_generate is None:
            raise ChatError("board backend: no board generator is available (it runs the accelerator on "
                            "the board over ssh; this installation has no tellme.deploy.board_generate)")
        if not callable(board_generate):
            raise ChatError(f"board backend: board_generate must be callable, got {type(board_generate).__name__}")
        return board_generate
    raise ChatError(f"unknown chat backend {name!r}; known: {', '.join(CHAT_BACKENDS)}")


def _rtl_stats(run, clock_mhz: float) -> dict:
    """The figures of an RTL run: cycles per call kind, simulated decode tokens/s and prefill
    time at ``clock_mhz``, and the build and simulation wall-clock seconds."""
    cycles = {"prefill": [c["cycles"] for c in run.calls if c["kind"] == "prefill"],
              "decode": [c["cycles"] for c in run.calls if c["kind"] == "decode"]}
    clock = clock_mhz * 1e6
    decode_rate = len(cycles["decode"]) * clock / sum(cycles["decode"]) if sum(cycles["decode"]) else None
    return {"clock_mhz": clock_mhz, "cycles": cycles, "simulated_decode_tokens_per_s": decode_rate,
            "simulated_prefill_seconds": sum(cycles["prefill"]) / clock if cycles["prefill"] else None,
            "build_seconds": run.build_seconds, "sim_seconds": run.sim_seconds}


def _board_generator(args) -> Callable:
    """The board's generator: ``run_on_board.py`` in the folder ``tellme deploy`` made on
    ``--host`` (:func:`tellme.deploy.board_generate`)."""
    from .deploy import board_generate, parse_host
    if not args.host:
        raise ChatError("board backend: --host is required (the board's ssh address, e.g. ubuntu@kria)")
    return board_generate(parse_host(args.host), args.remote_dir)


# -- command line --------------------------------------------------------------------------------

def add_chat_parser(subparsers) -> None:
    """Register ``tellme chat`` on the subparsers of :func:`tellme.cli.build_parser`."""
    s = subparsers.add_parser(
        "chat", help="text in, text out: generate a reply with the checkpoint's tokenizer",
        description="Greedy generation from text. With --prompt: one turn; without: one turn per line read "
                    "from stdin until EOF (each line an independent prompt). The reply goes to stdout as the "
                    "tokens arrive, the token count and rates to stderr.")
    s.add_argument("--checkpoint", required=True, help="HF checkpoint directory with tokenizer.json")
    s.add_argument("--hardware", default="kv260", help="hardware preset name or JSON file (default kv260)")
    s.add_argument("--backend", default="golden", choices=list(CHAT_BACKENDS),
                   help="golden model (default), float reference, the sequencer program on the numpy step "
                        "machine, the generated Verilog under Verilator (rtl: reports simulated tokens/s), "
                        "or the board (over ssh)")
    s.add_argument("--max-new-tokens", type=int, default=16, help="tokens to generate per turn (default 16)")
    s.add_argument("--prompt", help="one prompt; without it, prompts are read from stdin, one per line")
    s.add_argument("--json", help="write the last turn's result (ids, text, rates) as JSON here")
    s.add_argument("--quiet", action="store_true", help="no build/simulation progress on stderr (rtl)")
    s.add_argument("--host", help="board backend: USER@ADDR (ssh), or local:DIR for a stand-in board")
    s.add_argument("--remote-dir", default="tellme",
                   help="board backend: the folder `tellme deploy` copied the build to (default ~/tellme)")
    s.set_defaults(func=cmd_chat)


def cmd_chat(args, *, stdin=None, stdout=None, stderr=None) -> int:
    """``tellme chat``; streams default to sys.stdin/stdout/stderr."""
    from .cli import _fit_hardware, _hardware, write_json_atomic
    stdin = sys.stdin if stdin is None else stdin
    stdout = sys.stdout if stdout is None else stdout
    stderr = sys.stderr if stderr is None else stderr
    if args.max_new_tokens < 1:
        raise ChatError("--max-new-tokens must be >= 1")
    hw = _hardware(args.hardware)
    if args.backend == "board":
        # The board holds the weights: only the configuration is needed here.
        from .gen.checkpoint import inspect_checkpoint
        config = inspect_checkpoint(args.checkpoint).config
        tokenizer = load_tokenizer(args.checkpoint, config.vocab_size)
        hw = _fit_hardware(hw, _ConfigOnly(config))
        backend = make_chat_backend("board", None, hw, board_generate=_board_generator(args))
    else:
        from .gen.checkpoint import load_checkpoint
        tokenizer = load_tokenizer(args.checkpoint)
        weights = load_checkpoint(args.checkpoint)
        config = weights.config
        hw = _fit_hardware(hw, weights)
        backend = make_chat_backend(args.backend, weights, hw, progress=not args.quiet)

    def turn(text: str) -> ChatResult:
        def show(token, delta):
            if delta:
                stdout.write(delta)
                stdout.flush()
        result = chat_generate(text, tokenizer=tokenizer, backend_generate=backend,
                               max_new_tokens=args.max_new_tokens, on_token=show,
                               max_context=hw.max_context, vocab_size=config.vocab_size)
        stdout.write("\n")
        stdout.flush()
        print(result.rate_line(), file=stderr, flush=True)
        return result

    last, failed = None, False
    if args.prompt is not None:
        last = turn(args.prompt)
    else:
        interactive = _isatty(stdin)
        try:
            while True:
                if interactive:
                    stdout.write("> ")
                    stdout.flush()
                line = stdin.readline()
                if not line:
                    break
                text = line[:-1] if line.endswith("\n") else line
                if not text.strip():
                    continue
                try:
                    last = turn(text)
                except ChatError as e:      # one bad line does not end the session
                    print(f"tellme: error: {e}", file=stderr, flush=True)
                    failed = True
        except KeyboardInterrupt:
            stdout.write("\n")
            stdout.flush()
            return 130
        if interactive:
            stdout.write("\n")
            stdout.flush()
    if args.json:
        if last is None:
            print(f"tellme: no turn ran; {args.json} not written", file=stderr)
        else:
            write_json_atomic(args.json, {"model": config.name, "backend": args.backend,
                                          "hardware": hw.to_dict(), **last.to_dict()})
    return 2 if failed else 0


class _ConfigOnly:
    """What tellme.cli._fit_hardware reads of the weights (their config), for the board backend."""

    def __init__(self, config):
        self.config = config


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
