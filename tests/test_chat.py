"""``tellme chat``: the tokenizer shipped with synthetic checkpoints, one turn on every backend
(the same ids as ``generate`` on the encoded prompt), streaming of whole characters, the errors,
and the command line (one-shot, stdin REPL, JSON, a stand-in board)."""

from __future__ import annotations

import io
import json
import sys

import pytest

import tellme.cli as cli
from tellme.chat import ChatError, Generated, chat_generate, load_tokenizer, make_chat_backend
from tellme.config import hardware_preset
from tellme.gen.checkpoint import load_checkpoint
from tellme.gen.synthetic import byte_level_tokenizer, make_synthetic
from tellme.sim.backends import generate, make_backend

TEXTS = ["Hello, world!", "héllo wörld — ünïcödé", "日本語のテキスト", "emoji 🙂🚀 mixed\twith\ncontrol \x00\x7f",
         "  leading and trailing spaces  ", "The quick brown fox jumps over the lazy dog. 0123456789"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "tiny"
    make_synthetic("tiny", path, style="packed", seed=0)
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny):
    weights = load_checkpoint(tiny)
    hw = cli._fit_hardware(hardware_preset("kv260"), weights)
    return weights, hw


def chat_main(monkeypatch, *argv) -> int:
    """``tellme chat ...`` through tellme.cli.main (its error handling and exit codes)."""
    return cli.main(["chat", *map(str, argv)])


# -- the tokenizer of synthetic checkpoints ------------------------------------------------------

def test_synthetic_checkpoint_has_a_fitting_tokenizer(tiny):
    assert (tiny / "tokenizer.json").is_file() and (tiny / "tokenizer_config.json").is_file()
    tokenizer = load_tokenizer(tiny)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    assert sorted(vocab.values()) == list(range(256))
    for text in TEXTS:
        ids = tokenizer.encode(text).ids
        assert ids == list(text.encode("utf-8")), text          # id b is byte b
        assert tokenizer.decode(ids) == text


@pytest.mark.parametrize("vocab_size", [257, 1000, 32002, 128256])
def test_larger_vocabularies_fit_and_round_trip(vocab_size):
    tokenizer = byte_level_tokenizer(vocab_size)
    vocab = tokenizer.get_vocab(with_added_tokens=True)
    assert sorted(vocab.values()) == list(range(vocab_size))
    bytes_only = byte_level_tokenizer(256)
    assert all(tokenizer.id_to_token(b) == bytes_only.id_to_token(b) for b in range(256))
    for text in TEXTS:
        ids = tokenizer.encode(text).ids
        assert ids and max(ids) < vocab_size
        assert tokenizer.decode(ids) == text
    assert len(tokenizer.encode("the and of the").ids) < len("the and of the")    # merges learnt
    assert tokenizer.decode([vocab_size - 1])                                   # fillers decode


def test_tokenizer_is_deterministic_and_leaves_the_tensors_alone(tmp_path):
    make_synthetic("tiny-silu", tmp_path / "a", seed=5)
    make_synthetic("tiny-silu", tmp_path / "b", seed=5)
    make_synthetic("tiny-silu", tmp_path / "c", seed=5, tokenizer=False)
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    for name in ("config.json", "model.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes(), name
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())["model_max_length"] == 256


# -- one turn ------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["golden", "program"])
def test_chat_matches_generate_on_the_encoded_prompt(tiny, tiny_model, backend):
    weights, hw = tiny_model
    tokenizer = load_tokenizer(tiny)
    text = "Hi there, wörld"
    streamed = []
    result = chat_generate(text, tokenizer=tokenizer, backend_generate=make_chat_backend(backend, weights, hw),
                           max_new_tokens=6, on_token=lambda i, d: streamed.append((i, d)),
                           max_context=hw.max_context, vocab_size=weights.config.vocab_size)
    prompt = tokenizer.encode(text).ids
    expected, _ = generate(make_backend("golden", weights, hw), prompt, 6)
    assert result.prompt_ids == prompt
    assert result.generated_ids == expected
    assert [i for i, _ in streamed] == expected                    # one call per id, in order
    assert "".join(d for _, d in streamed) == result.text == tokenizer.decode(expected)
    assert result.tokens_per_s > 0 and result.simulated_decode_tokens_per_s is None


def _fake_backend(ids, stream=True, one_argument=False):
    def backend_generate(prompt_ids, max_new_tokens, on_token):
        out = list(ids)[:max_new_tokens]
        if stream:
            for step, token in enumerate(out):
                on_token(token) if one_argument else on_token(step, token)
        return out
    return backend_generate


@pytest.mark.parametrize("stream, one_argument", [(True, False), (True, True), (False, False)])
def test_multibyte_characters_stream_whole(stream, one_argument):
    tokenizer = byte_level_tokenizer(256)
    reply = "aé日🙂b"
    ids = list(reply.encode())
    deltas = []
    result = chat_generate("x", tokenizer=tokenizer, backend_generate=_fake_backend(ids, stream, one_argument),
                           max_new_tokens=len(ids), on_token=lambda i, d: deltas.append(d))
    assert result.generated_ids == ids and result.text == reply
    assert len(deltas) == len(ids)
    assert [d for d in deltas if d] == ["a", "é", "日", "🙂", "b"]
    assert "\ufffd" not in "".join(deltas)


def test_invalid_bytes_still_stream_and_add_up():
    tokenizer = byte_level_tokenizer(256)
    ids = [224] * 8 + [65] + [0xE6, 0x97]          # lead bytes that never complete, an 'A', a cut-off character
    deltas = []
    result = chat_generate("x", tokenizer=tokenizer, backend_generate=_fake_backend(ids),
                           max_new_tokens=len(ids), on_token=lambda i, d: deltas.append(d))
    assert "".join(deltas) == result.text == tokenizer.decode(ids)
    assert "".join(deltas[:4])                      # streaming does not wait for the end


def test_a_backend_may_return_figures():
    tokenizer = byte_level_tokenizer(256)

    def backend_generate(prompt_ids, max_new_tokens, on_token):
        return Generated([104, 105], {"simulated_decode_tokens_per_s": 123.0, "clock_mhz": 250.0})
    result = chat_generate("x", tokenizer=tokenizer, backend_generate=backend_generate, max_new_tokens=2)
    assert (result.text, result.simulated_decode_tokens_per_s, result.clock_mhz) == ("hi", 123.0, 250.0)
    assert "simulated at 250 MHz" in result.rate_line()


# -- errors --------------------------------------------------------------------------------------

def test_errors_name_the_problem(tiny, tmp_path):
    tokenizer = load_tokenizer(tiny)
    backend = _fake_backend([65] * 8)
    with pytest.raises(ChatError, match="empty"):
        chat_generate("", tokenizer=tokenizer, backend_generate=backend, max_new_tokens=2)
    with pytest.raises(ChatError, match=r"too long: 299 tokens \+ 1 new tokens? exceed the context of 256"):
        chat_generate("x" * 299, tokenizer=tokenizer, backend_generate=backend, max_new_tokens=1, max_context=256)
    chat_generate("x" * 255, tokenizer=tokenizer, backend_generate=backend, max_new_tokens=1, max_context=256)
    with pytest.raises(ChatError, match="max_new_tokens"):
        chat_generate("x", tokenizer=tokenizer, backend_generate=backend, max_new_tokens=0)

    bare = tmp_path / "bare"
    make_synthetic("tiny", bare, tokenizer=False)
    with pytest.raises(ChatError, match=r"tokenizer\.json: missing"):
        load_tokenizer(bare)
    (bare / "tokenizer.json").write_text("{not json")
    with pytest.raises(ChatError, match=r"tokenizer\.json: cannot read"):
        load_tokenizer(bare)
    (bare / "tokenizer.json").write_text(byte_level_tokenizer(300).to_str())
    with pytest.raises(ChatError, match="ids up to 299.*vocab_size 256"):
        load_tokenizer(bare)
    assert load_tokenizer(bare, vocab_size=300).get_vocab_size() == 300
    with pytest.raises(ChatError, match="not a checkpoint directory"):
        load_tokenizer(tmp_path / "nope")


def test_board_backend_needs_a_board_generator(tiny_model):
    weights, hw = tiny_model
    with pytest.raises(ChatError, match="^board backend: "):
        make_chat_backend("board", weights, hw)
    fake = _fake_backend([1, 2])
    assert make_chat_backend("board", weights, hw, board_generate=fake) is fake
    with pytest.raises(ChatError, match="unknown chat backend"):
        make_chat_backend("fpga", weights, hw)


# -- the command line ----------------------------------------------------------------------------

def test_help(monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        chat_main(monkeypatch, "--help")
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "usage: tellme chat" in out and "--remote-dir" in out


def test_cli_missing_tokenizer_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    make_synthetic("tiny", tmp_path / "bare", tokenizer=False)
    assert chat_main(monkeypatch, "--checkpoint", tmp_path / "bare", "--prompt", "hi") == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tellme: error: ") and "tokenizer.json: missing" in err[0]


def test_cli_one_turn_streams_the_reply_and_writes_json(tiny, tiny_model, tmp_path, monkeypatch, capsys):
    weights, hw = tiny_model
    out = tmp_path / "chat.json"
    assert chat_main(monkeypatch, "--checkpoint", tiny, "--prompt", "Hi there", "--max-new-tokens", 5,
                     "--json", out) == 0
    captured = capsys.readouterr()
    result = json.loads(out.read_text())
    prompt = load_tokenizer(tiny).encode("Hi there").ids
    assert result["prompt_ids"] == prompt
    assert result["generated_ids"] == generate(make_backend("golden", weights, hw), prompt, 5)[0]
    assert captured.out == result["text"] + "\n"
    assert (result["model"], result["backend"], result["hardware"]) == ("tiny", "golden", hw.to_dict())
    assert result["tokens_per_s"] > 0
    assert "5 tokens" in captured.err and "tokens/s wall clock" in captured.err


def test_cli_reads_prompts_from_stdin(tiny, tmp_path, monkeypatch, capsys):
    out = tmp_path / "chat.json"
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\n\n" + "x" * 300 + "\nlast one"))
    assert chat_main(monkeypatch, "--checkpoint", tiny, "--max-new-tokens", 3, "--json", out) == cli.EXIT_USER_ERROR
    captured = capsys.readouterr()
    assert not captured.out.startswith(">")                 # no prompt marker when stdin is not a tty
    assert captured.out.count("\n") == 2                    # two replies, one per line
    err = captured.err.splitlines()
    assert len([line for line in err if line.startswith("[3 tokens")]) == 2
    assert [line for line in err if line.startswith("tellme: error: ")] == [
        "tellme: error: the prompt is too long: 300 tokens + 3 new tokens exceed the context of 256 tokens"]
    assert json.loads(out.read_text())["prompt"] == "last one"


def test_cli_board_backend_on_a_stand_in_board(tiny, tmp_path, monkeypatch, capsys):
    """``tellme chat --backend board``: a build of the checkpoint deployed to a stand-in board
    (tellme deploy --host local:DIR) answers with the golden model's tokens, streamed."""
    assert chat_main(monkeypatch, "--checkpoint", tiny, "--backend", "board", "--prompt", "hi") == 2
    assert "--host is required" in capsys.readouterr().err
    build = tmp_path / "build"
    assert cli.main(["build", "--checkpoint", str(tiny), "--hardware", "sim-small", "--out", str(build),
                     "--no-estimate"]) == 0
    assert (build / "deploy" / "tokenizer.json").read_text() == (tiny / "tokenizer.json").read_text()
    (build / "deploy" / "tellme.bit").write_bytes(b"stand-in")
    (build / "deploy" / "tellme.hwh").write_text("stand-in")
    board = tmp_path / "board"
    assert cli.main(["deploy", str(build), "--host", f"local:{board}", "--remote-dir", "apps/tellme"]) == 0
    out = tmp_path / "board.json"
    assert chat_main(monkeypatch, "--checkpoint", tiny, "--hardware", "sim-small", "--backend", "board", "--host",
                     f"local:{board}", "--remote-dir", "apps/tellme", "--prompt", "hi", "--max-new-tokens", 3,
                     "--json", out) == 0
    weights = load_checkpoint(tiny)
    prompt = load_tokenizer(tiny).encode("hi").ids
    golden = generate(make_backend("golden", weights, hardware_preset("sim-small")), prompt, 3)[0]
    assert json.loads(out.read_text())["generated_ids"] == golden


@pytest.mark.slow          # a Verilator build of the tiny top (2 minutes cold); test_top covers the RTL itself
@pytest.mark.rtl
def test_cli_rtl_backend_matches_golden(tiny, tmp_path, monkeypatch, capsys):
    """``tellme chat --backend rtl``: the golden ids, with the simulated decode rate at the
    hardware's clock. (A Verilator build of the tiny top on sim-small.)"""
    results = {}
    for backend in ("golden", "rtl"):
        out = tmp_path / f"{backend}.json"
        assert chat_main(monkeypatch, "--checkpoint", tiny, "--hardware", "sim-small", "--backend", backend,
                         "--prompt", "Hi", "--max-new-tokens", 2, "--json", out, "--quiet") == 0
        results[backend] = json.loads(out.read_text())
    captured = capsys.readouterr()
    rtl, golden = results["rtl"], results["golden"]
    assert rtl["prompt_ids"] == golden["prompt_ids"] and rtl["generated_ids"] == golden["generated_ids"]
    assert rtl["text"] == golden["text"]
    cycles = rtl["stats"]["cycles"]
    assert len(cycles["prefill"]) == 1 and len(cycles["decode"]) == 1
    assert rtl["clock_mhz"] == 300.0
    assert rtl["simulated_decode_tokens_per_s"] == pytest.approx(300e6 / cycles["decode"][0])
    assert "decode tokens/s (simulated at 300 MHz)" in captured.err


def test_cli_prompt_marker_on_a_terminal(tiny, monkeypatch, capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", Terminal("hi\n"))
    assert chat_main(monkeypatch, "--checkpoint", tiny, "--max-new-tokens", 2) == 0
    out = capsys.readouterr().out
    assert out.startswith("> ") and out.count("> ") == 2 and out.endswith("\n")
