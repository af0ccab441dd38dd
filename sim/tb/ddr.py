"""Filling and reading the memory of :class:`tellme.hw.ddr_model.DdrModel` from cocotb.

The model's storage is a plain Verilog array ``reg [W-1:0] mem [N-1:0]`` (word ``i`` holds the
little-endian bytes ``i*W/8 .. (i+1)*W/8 - 1`` of the memory) inside the instance ``mem`` of the
hand-written module ``hw/verilog/tellme_ddr_mem.v``, which ``run_cocotb``'s Verilator build
(``--public-flat-rw``) exposes through VPI: the instance is ``dut.mem`` when the model is the
top level, ``dut.ddr.mem`` inside :class:`~tellme.hw.ddr_model.DdrSystem`, and the array is its
child ``mem``. The functions here take either the instance or the array.

Why VPI writes and not ``$readmemh``: a ``$readmemh`` in the storage module would need the file
name (or a plusarg) at build or start time and one file per image, and an image baked into the
memory's initial contents costs ~30 s of conversion per MiB on every run. Writing the words
through VPI costs ~13-20 us per word: a 550 KB image (35 K words of 128 bit) loads in about
0.5-0.8 s, and ``skip_zero`` skips the zero words (alignment padding) of a fresh memory.

The writes here bypass cocotb's scheduled-write queue (they take effect immediately, like
``handle.set(Immediate(...))``) and do not create one Python handle object per word; where the
cocotb internals used for that are missing they fall back to the public API.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["load_ddr_image", "read_ddr", "word_bytes"]


def _array(memory):
    """The ``mem`` array handle, given it or the storage instance that holds it."""
    try:
        from cocotb.handle import HierarchyObject
    except ImportError:
        return memory
    return memory.mem if isinstance(memory, HierarchyObject) else memory


def word_bytes(memory) -> int:
    """Bytes per word of the memory ``memory`` (the storage instance or its array)."""
    memory = _array(memory)
    return len(memory[_first_index(memory)]) // 8


def _first_index(memory) -> int:
    try:
        return min(memory.range.left, memory.range.right)
    except AttributeError:
        return 0


def _raw_access(memory):
    """(get element handle by index, write binstr now, read binstr) using cocotb's GPI objects,
    or None if this cocotb does not have them."""
    try:
        from cocotb.handle import _GPISetAction
        raw = memory._handle
        action = _GPISetAction.NO_DELAY.value
        raw.get_handle_by_index
    except (ImportError, AttributeError):
        return None
    return raw.get_handle_by_index, action


def _image_bytes(image) -> bytes:
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    raise TypeError(f"image must be bytes or a path, not {type(image).__name__}")


def load_ddr_image(memory, image, base: int = 0, *, skip_zero: bool = False) -> dict:
    """Write ``image`` (bytes, or the path of a file) into the model memory ``memory`` (the cocotb
    handle of the storage instance ``mem`` or of its ``mem`` array) at byte offset ``base`` from
    the memory's first byte (for a model at address ``B``, DDR address ``A`` is offset ``A - B``).

    ``base`` must be word aligned; a partial last word keeps the bytes beyond the image (they are
    read back first). With ``skip_zero`` all-zero words are not written, which is right only for
    a memory that still holds zeros there (a fresh simulation). Takes effect immediately, at any
    point of the simulation. Returns ``{"bytes", "words", "written"}``.
    """
    data = _image_bytes(image)
    memory = _array(memory)
    wb = word_bytes(memory)
    if base % wb:
        raise ValueError(f"base {base:#x} is not aligned to the {wb}-byte memory word")
    first = _first_index(memory)
    depth = len(memory)
    start = base // wb
    count = -(-len(data) // wb)
    if base < 0 or start + count > depth:
        raise ValueError(f"image of {len(data)} bytes at offset {base:#x} does not fit the "
                         f"{depth * wb}-byte memory")
    tail = len(data) % wb
    if tail:
        # keep the bytes after the image in its last word
        old = read_ddr(memory, (start + count - 1) * wb, wb)
        data = data + old[tail:]
    bits = wb * 8
    fmt = f"0{bits}b"
    raw = _raw_access(memory)
    written = 0
    if raw is not None:
        by_index, action = raw
        for k in range(count):
            word = int.from_bytes(data[k * wb:(k + 1) * wb], "little")
            if skip_zero and not word:
                continue
            by_index(first + start + k).set_signal_val_binstr(action, format(word, fmt))
            written += 1
    else:
        from cocotb.handle import Immediate
        for k in range(count):
            word = int.from_bytes(data[k * wb:(k + 1) * wb], "little")
            if skip_zero and not word:
                continue
            memory[first + start + k].set(Immediate(word))
            written += 1
    return {"bytes": len(data), "words": count, "written": written}


def read_ddr(memory, offset: int, length: int) -> bytes:
    """Read ``length`` bytes at byte offset ``offset`` of the model memory ``memory``."""
    if length <= 0:
        return b""
    memory = _array(memory)
    wb = word_bytes(memory)
    first = _first_index(memory)
    lo, hi = offset // wb, -(-(offset + length) // wb)
    if offset < 0 or hi > len(memory):
        raise ValueError(f"[{offset:#x}, {offset + length:#x}) lies outside the {len(memory) * wb}-byte memory")
    raw = _raw_access(memory)
    out = bytearray()
    for index in range(lo, hi):
        if raw is not None:
            text = raw[0](first + index).get_signal_val_binstr()
            try:
                word = int(text, 2)
            except ValueError:           # X/Z bits read as 0
                word = int(text.translate(str.maketrans("xXzZuUwWlLhH-", "0000000000110")), 2)
        else:
            word = int(memory[first + index].value)
        out += word.to_bytes(wb, "little")
    skip = offset - lo * wb
    return bytes(out[skip:skip + length])
