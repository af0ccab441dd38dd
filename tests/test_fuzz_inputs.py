"""Fuzzing the input readers (issue #16): mutated small files either load or are refused with
the project's own error.

Targets: the DDR image reader (``read_image``, which checks the header and every section's
CRC-32 first) and the checkpoint loader (``load_checkpoint``: config.json, safetensors files,
the shard index). Each case starts from a small valid file and applies one to three mutations:
byte flips, truncations, insertions and deletions anywhere (biased towards the preamble or
length field, the header and the start of a section or tensor), preamble fields overwritten,
and header edits (a JSON value replaced, nudged, removed or added, with the lengths and the
header CRC rewritten so the checks behind them are reached); image mutations may also be
resealed (every section's CRC recomputed), so corrupt contents reach the decoder.

A read must either succeed or raise a ``tellme.errors.TellmeError``: any other exception
(KeyError, struct.error, numpy's errors, UnicodeDecodeError, OverflowError, MemoryError, ...)
fails the test, and so does a case slower than the deadline or stuck past the alarm. Cases are
derandomized, so CI runs the same ones every time: 250 per target, or TELLME_FUZZ_EXAMPLES; set
TELLME_FUZZ_RANDOM=1 for new random cases on each run (a longer search, e.g. nightly; pytest's
``--hypothesis-seed`` then replays one).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import struct
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from test_image import reseal
from tellme.config import hardware_preset, model_preset
from tellme.errors import TellmeError
from tellme.gen.checkpoint import load_checkpoint
from tellme.gen.image import read_image, write_image
from tellme.gen.synthetic import make_synthetic
from tellme.weights import random_weights

#: A case that takes longer than this is a failure (reads of these files take milliseconds;
#: generous for a machine shared with simulations).
DEADLINE = timedelta(seconds=10)
#: And one stuck this long is stopped (a hang never reaches hypothesis' deadline check).
ALARM_SECONDS = 60

FUZZ = settings(max_examples=int(os.environ.get("TELLME_FUZZ_EXAMPLES", "250")),
                derandomize=not os.environ.get("TELLME_FUZZ_RANDOM"), database=None, deadline=DEADLINE, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Hang(Exception):
    """A read still running after ALARM_SECONDS."""


@contextlib.contextmanager
def alarm(seconds: float):
    def fire(signum, frame):
        raise Hang(f"still reading after {seconds} s")
    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def load_or_refuse(read, *args) -> None:
    """``read(*args)`` succeeds or raises a TellmeError; anything else propagates (a failure)."""
    with alarm(ALARM_SECONDS):
        try:
            read(*args)
        except TellmeError as e:           # counted by kind (--hypothesis-show-statistics)
            why = str(e).split(": ", 1)[-1]
            event(f"refused: {type(e).__name__}: {re.split(r'[0-9({]', why, maxsplit=1)[0][:48]}")
            return
    event("loaded")


# ----------------------------------------------------------------------------------------------
# Mutations

#: JSON values a header edit puts in: wrong types, absurd sizes, the names the formats use.
NAMES = ["F32", "BF16", "F16", "U8", "I8", "I64", "BOOL", "float32", "float16", "int8", "tlmm", "fp16",
         "embed", "lm_head.q", "model.norm.weight", "__metadata__", "bitnet", "llama", "silu", "relu2"]
SIZES = [0, 1, -1, 3, 4, 7, 64, 4095, 4096, 4097, 2 ** 31, 2 ** 32, 2 ** 32 - 1, 2 ** 53, 2 ** 63, 2 ** 64,
         10 ** 9, 10 ** 18, 10 ** 30, 10 ** 400]
SCALARS = st.one_of(st.none(), st.booleans(), st.sampled_from(SIZES), st.integers(-300, 70000),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6), st.sampled_from(NAMES))
JSON_VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=4), inner, max_size=3),
                           max_leaves=5)


def _slots(obj, out, limit=2000):
    """Every (container, key) of a JSON value, depth first."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        if len(out) >= limit:
            break
        out.append((obj, key))
        _slots(value, out, limit)
    return out


def edit_json(draw, obj):
    """One edit of a JSON value, in place where possible; returns the edited value."""
    slots = _slots(obj, [])
    if not slots:
        return draw(JSON_VALUES)
    container, key = draw(st.sampled_from(slots))
    action = draw(st.sampled_from(["replace", "nudge", "remove", "add"]))
    value = container[key]
    if action == "nudge" and isinstance(value, int) and not isinstance(value, bool):
        container[key] = value + draw(st.sampled_from([-4096, -16, -2, -1, 1, 2, 16, 4096]))
    elif action == "remove":
        del container[key]
    elif action == "add" and isinstance(container, dict):
        container[draw(st.sampled_from(NAMES) | st.text(max_size=4))] = draw(JSON_VALUES)
    elif action == "add":
        container.insert(key, draw(JSON_VALUES))
    else:
        container[key] = draw(JSON_VALUES)
    return obj


def edit_bytes(draw, blob: bytearray, regions: list[tuple[int, int]]) -> bytearray:
    """One byte-level mutation: flip, truncate, insert or delete, at a position drawn in one of
    ``regions`` (start, end) or anywhere."""
    kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete"]))
    lo, hi = draw(st.sampled_from(regions + [(0, len(blob))]))
    hi = max(lo + 1, min(hi, len(blob)))
    pos = min(draw(st.integers(lo, hi - 1)), max(len(blob) - 1, 0))
    if kind == "flip" and blob:
        blob[pos] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del blob[pos:]
    elif kind == "insert":
        blob[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    else:
        del blob[pos:pos + draw(st.integers(1, 64))]
    return blob


# ----------------------------------------------------------------------------------------------
# The DDR image

@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz-image") / "tiny.img"
    header = write_image(random_weights(model_preset("tiny"), seed=11), hardware_preset("sim-small"), path)
    return path, path.read_bytes(), header


def _image_regions(blob: bytes, header: dict) -> list[tuple[int, int]]:
    _, length, offset, _ = struct.unpack_from("<IIQI", blob, 8)
    regions = [(0, 28), (offset, offset + length)]
    regions += [(s["offset"], s["offset"] + min(s["size"], 64)) for s in header["sections"]]
    return regions


def mutate_image(draw, good: bytes, header: dict) -> bytes:
    blob = bytearray(good)
    regions = _image_regions(good, header)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["bytes", "bytes", "preamble", "header", "reseal"]))
        if kind == "bytes":
            blob = edit_bytes(draw, blob, regions)
        elif kind == "preamble" and len(blob) >= 28:
            field = draw(st.sampled_from([(8, "<I"), (12, "<I"), (16, "<Q"), (24, "<I")]))
            limit = 2 ** (8 * struct.calcsize(field[1])) - 1
            value = draw(st.sampled_from([0, 1, 2, 3, 4095, 4096, len(blob), limit]) | st.integers(0, limit))
            struct.pack_into(field[1], blob, field[0], value)
        elif kind == "header":       # a JSON edit, lengths and header CRC rewritten
            blob = bytearray(_try(lambda: reseal(bytes(blob), lambda h: edit_json(draw, h), sections=False), blob))
        elif kind == "reseal":       # every CRC rewritten: corrupt contents reach the decoder
            blob = bytearray(_try(lambda: reseal(bytes(blob)), blob))
    return bytes(blob)


def _try(make, fallback):
    """``make()`` for a mutation that needs a parseable file; the file unchanged if it is not."""
    try:
        return make()
    except Exception:                  # the mutation helper's own parsing, not a reader's
        return fallback


@FUZZ
@given(data=st.data())
def test_image_reader_fuzz(image, data):
    path, good, header = image
    bad = mutate_image(data.draw, good, header)
    target = path.with_name("mutated.img")
    target.write_bytes(bad)
    load_or_refuse(read_image, target)


# ----------------------------------------------------------------------------------------------
# Checkpoints

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two small checkpoints: packed with bfloat16 floats in one file, and full precision in
    float32 over two shards with an index."""
    root = tmp_path_factory.mktemp("fuzz-ckpt")
    make_synthetic("tiny", root / "packed", style="packed", dtype="bfloat16", seed=2)
    make_synthetic("tiny-silu", root / "sharded", style="full", shards=2, seed=3)
    return root


def _st_regions(blob: bytes) -> list[tuple[int, int]]:
    n = int.from_bytes(blob[:8], "little")
    regions = [(0, 8), (8, 8 + n)]
    try:
        header = json.loads(blob[8:8 + n])
        regions += [(8 + n + int(e["data_offsets"][0]), 8 + n + int(e["data_offsets"][0]) + 16)
                    for k, e in header.items() if k != "__metadata__"]
    except Exception:                  # a file an earlier mutation broke: no tensor regions
        pass
    return [(lo, hi) for lo, hi in regions if 0 <= lo < hi]


def _edit_st_header(draw, blob: bytes) -> bytes:
    """A safetensors header edit: the JSON changed and the length field rewritten."""
    n = int.from_bytes(blob[:8], "little")
    header = edit_json(draw, json.loads(blob[8:8 + n]))
    text = json.dumps(header).encode()
    text += b" " * draw(st.sampled_from([0, 0, 3]))           # safetensors pads headers with spaces
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def mutate_checkpoint(draw, folder):
    """Mutate the checkpoint in ``folder`` in place: a weights file, config.json or the index."""
    files = sorted(p.name for p in folder.iterdir() if p.suffix in (".safetensors", ".json")
                   and not p.name.startswith("tokenizer"))
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(files))
        path = folder / name
        blob = path.read_bytes()
        if name.endswith(".safetensors"):
            kind = draw(st.sampled_from(["bytes", "bytes", "length", "header"]))
            if kind == "bytes":
                blob = bytes(edit_bytes(draw, bytearray(blob), _st_regions(blob)))
            elif kind == "length" and len(blob) >= 8:
                value = draw(st.sampled_from([0, 1, 2, len(blob) - 8, len(blob), 100 * 2 ** 20, 2 ** 63, 2 ** 64 - 1])
                             | st.integers(0, 2 ** 64 - 1))
                blob = value.to_bytes(8, "little") + blob[8:]
            else:
                blob = _try(lambda: _edit_st_header(draw, blob), blob)
        else:                          # config.json or the index: a JSON edit, or bytes
            if draw(st.booleans()):
                blob = _try(lambda: json.dumps(edit_json(draw, json.loads(blob))).encode(), blob)
            else:
                blob = bytes(edit_bytes(draw, bytearray(blob), []))
        path.write_bytes(blob)


@pytest.mark.parametrize("which", ["packed", "sharded"])
def test_checkpoint_loader_fuzz(checkpoints, which):
    src = checkpoints / which
    work = checkpoints / f"{which}-mutated"
    load_checkpoint(src)                          # the unmutated checkpoint loads

    @FUZZ
    @given(data=st.data())
    def case(data):
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(src, work)
        mutate_checkpoint(data.draw, work)
        load_or_refuse(load_checkpoint, work)

    case()


# ----------------------------------------------------------------------------------------------
# The escapes found (by this fuzzing, or by reading the loader for its kind), pinned

def _st_header_edit(edit):
    def apply(folder):
        path = folder / "model.safetensors"
        blob = path.read_bytes()
        n = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + n])
        new = edit(header)
        text = new if isinstance(new, bytes) else json.dumps(header).encode()
        path.write_bytes(len(text).to_bytes(8, "little") + text + blob[8 + n:])
    return apply


def _json_edit(name, edit):
    def apply(folder):
        data = json.loads((folder / name).read_text())
        new = edit(data)
        (folder / name).write_bytes(new if isinstance(new, bytes) else json.dumps(data).encode())
    return apply


def _rename_layer_tensor(header):
    header["model.layers." + "1" * 5000 + ".input_layernorm.weight"] = header.pop("model.layers.1.input_layernorm.weight")


@pytest.mark.parametrize("which, mutate, match", [
    # found by the fuzzing: TypeError (unhashable dtype), TypeError (architectures not a list)
    ("packed", _st_header_edit(lambda h: h["model.norm.weight"].update(dtype=["F32"])), r"unsupported dtype \['F32'\]"),
    ("packed", _json_edit("config.json", lambda c: c.update(architectures=5)), r"architectures must be a list"),
    ("packed", _json_edit("config.json", lambda c: c.update(architectures=True)), r"architectures must be a list"),
    # found reading the loader: TypeError, OverflowError, RecursionError, ValueError, OSError, and a
    # list of num_hidden_layers dicts made before any tensor was read
    ("packed", _json_edit("config.json", lambda c: c["quantization_config"].update(modules_to_not_convert=3)),
     r"modules_to_not_convert must be a list"),
    ("packed", _json_edit("config.json", lambda c: c["rope_parameters"].update(rope_theta=10 ** 400)),
     r"rope_theta is out of range"),
    ("packed", _json_edit("config.json", lambda c: c.update(rms_norm_eps=-10 ** 400)), r"rms_norm_eps is out of range"),
    ("packed", _json_edit("config.json", lambda c: b"[" * 100_000), r"not valid JSON \(nested too deeply\)"),
    ("packed", _st_header_edit(lambda h: b"[" * 100_000 + b"]" * 100_000), r"bad header JSON \(nested too deeply\)"),
    ("packed", _st_header_edit(_rename_layer_tensor), r"tensor model.layers.1{5000}.input_layernorm.weight: unexpected"),
    ("packed", _json_edit("config.json", lambda c: c.update(num_hidden_layers=10 ** 12)),
     r"unexpected tensor|missing tensor model.layers.2"),
    ("sharded", _json_edit("model.safetensors.index.json",
                           lambda i: i["weight_map"].update({"model.norm.weight": "x" * 300 + ".safetensors"})),
     r"shard listed in model.safetensors.index.json is absent"),
])
def test_found_escapes_are_refused(checkpoints, tmp_path, which, mutate, match):
    work = tmp_path / which
    shutil.copytree(checkpoints / which, work)
    mutate(work)
    with alarm(ALARM_SECONDS), pytest.raises(TellmeError, match=match):
        load_checkpoint(work)
