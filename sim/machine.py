"""The accelerator as a step machine in numpy: a sequencer program run on DDR bytes.

:class:`StepMachine` holds the four DDR regions the host allocates (image, KV cache, scratch,
I/O; docs section 6) as byte arrays and executes a :class:`tellme.gen.program.Program` step by
step, reading and writing them only at the addresses the program and the contract's layouts
name, and computing each step with the golden model's unit functions. It is the reference the
RTL top level is held against step by step (same memory, same order of steps), and its result
equals :class:`tellme.sim.golden.GoldenModel` bit for bit (tests/test_program.py), which checks
the program itself: its steps, their order and every address.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..contract import fp32 as f
from ..contract.formats import tlmm_encode
from ..contract.layouts import KV_RECORD_BYTES, ImageFormat, KvBases, Section, kv_row_bytes
from ..gen.image import decode_projection
from ..gen.program import Attention, Embed, LmHead, MatMul, NormQuant, Program
from . import golden

__all__ = ["StepMachine", "ProgramBackend"]


class StepMachine:
    """Executes ``program`` against a DDR image (the bytes of an image file).

    ``call(ids, seq_pos)`` runs one call: the token ids go to the I/O region, every step runs
    for ``len(ids)`` tokens at positions ``seq_pos..``; it returns the logits the LM head wrote
    to the I/O region and the result token. ``on_step(index, step, machine)``, if given, runs
    after each step (for traces)."""

    def __init__(self, program: Program, image: bytes | np.ndarray, *, kv: np.ndarray | None = None,
                 scratch: np.ndarray | None = None, io: np.ndarray | None = None,
                 on_step: Callable[[int, object, "StepMachine"], None] | None = None):
        self.program = program
        self.image = np.frombuffer(bytes(image), dtype=np.uint8) if not isinstance(image, np.ndarray) else image
        # The regions may be given (uint8 arrays, e.g. views of host-allocated DDR buffers) or
        # are allocated here, zeroed.
        self.kv = self._region("KV cache", kv, program.kv_bytes)
        self.scratch = self._region("scratch", scratch, program.scratch_bytes)
        self.io = self._region("I/O", io, program.io.size)
        self._region("image", self.image, program.image_bytes)
        self.on_step = on_step
        self.act: tuple[np.ndarray, np.ndarray] | None = None
        self.result_token: int | None = None
        self._codes: dict[str, np.ndarray] = {}

    @staticmethod
    def _region(what: str, array: np.ndarray | None, size: int) -> np.ndarray:
        if array is None:
            return np.zeros(size, dtype=np.uint8)
        if array.dtype != np.uint8 or array.ndim != 1 or array.size < size:
            raise ValueError(f"{what} region: need a uint8 array of at least {size} bytes, "
                             f"got {array.dtype} {array.shape}")
        return array

    # -- memory views ---------------------------------------------------------------------------

    def section(self, section: Section) -> np.ndarray:
        raw = self.image[section.offset:section.offset + section.size]
        return raw.view(np.dtype(section.dtype)).reshape(section.shape)

    def rows(self, name: str, n: int) -> np.ndarray:
        """A writable view of the first ``n`` rows of scratch array ``name`` (float32, width)."""
        a = self.program.scratch[name]
        block = self.scratch[a.offset:a.offset + n * a.row_bytes].view(np.float32).reshape(n, a.row_bytes // 4)
        return block[:, :a.width]

    def kv_view(self, bases: KvBases) -> golden.KVCache:
        """One kv head's cache arrays in the KV region, as the golden model's KVCache or
        FloatKVCache (views)."""
        hw, hd = self.program.hardware, self.program.model.head_dim
        capacity, size = hw.max_context, hw.max_context * kv_row_bytes(hd, hw.attn_format)
        fp32 = hw.attn_format == "fp32"
        k, v = (self.kv[base:base + size].view(np.float32 if fp32 else np.int8).reshape(1, capacity, hd)
                for base in (bases.k_base, bases.v_base))
        if fp32:
            return golden.FloatKVCache(k, v)
        records = self.kv[bases.s_base:bases.s_base + capacity * KV_RECORD_BYTES].view(np.float32)
        records = records.reshape(capacity, KV_RECORD_BYTES // 4)
        return golden.KVCache(k, v, records[None, :, 0], records[None, :, 1])

    def codes(self, step: MatMul) -> np.ndarray:
        """The projection's TLMM codes, read back from its per-port weight streams."""
        key = step.weights.name
        if key not in self._codes:
            fmt = ImageFormat.of(self.program.hardware)
            raw = self.image[step.weights.offset:step.weights.offset + step.weights.size].tobytes()
            trits = decode_projection(raw, (step.rows, step.inputs), fmt)
            self._codes[key] = tlmm_encode(trits, fmt.tlmm_group)
        return self._codes[key]

    # -- a call ---------------------------------------------------------------------------------

    def call(self, ids, seq_pos: int) -> tuple[np.ndarray, int]:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        hw, model = self.program.hardware, self.program.model
        if not 1 <= ids.size <= hw.prefill_chunk:
            raise ValueError(f"a call takes 1..{hw.prefill_chunk} tokens, got {ids.size}")
        if seq_pos + ids.size > hw.max_context:
            raise ValueError(f"context overflow: {seq_pos} + {ids.size} exceed max_context {hw.max_context}")
        if np.any(ids < 0) or np.any(ids >= model.vocab_size):
            raise ValueError(f"token id outside the vocabulary [0, {model.vocab_size})")
        io = self.program.io
        self.io[io.ids_offset:io.ids_offset + 4 * ids.size] = ids.astype("<u4").view(np.uint8)
        n, positions = ids.size, np.arange(seq_pos, seq_pos + ids.size)
        for index, step in enumerate(self.program.steps):
            self._run(step, n, positions)
            if self.on_step is not None:
                self.on_step(index, step, self)
        logits = self.io[io.logits_offset:io.logits_offset + 4 * model.vocab_size].view(np.float32).copy()
        return logits, self.result_token

    def _run(self, step, n: int, positions: np.ndarray) -> None:
        model, hw = self.program.model, self.program.hardware
        if isinstance(step, Embed):
            io = self.program.io
            ids = self.io[io.ids_offset:io.ids_offset + 4 * n].view("<u4")
            self.rows(step.dst, n)[:] = f.ftz(self.section(step.table)[ids])
        elif isinstance(step, NormQuant):
            x = self.rows(step.src, n)
            if step.gain is None:
                self.act = golden.quantize(x)
            else:
                self.act = golden.rmsnorm_quantize(x, self.section(step.gain), step.eps, hw.ew_lanes)
        elif isinstance(step, MatMul):
            x_q, d_x = self.act
            if x_q.shape[1] != step.inputs:
                raise AssertionError(f"{step.proj}: act holds {x_q.shape[1]} inputs, the projection takes {step.inputs}")
            acc = golden.tlmm(self.codes(step), x_q, hw.tlmm_group)
            y = golden.dequantize(acc, d_x, self.section(step.scales)[step.scale_index, 0])
            if step.residual is not None:
                y = golden.residual_add(self.rows(step.residual, n), y)
            if step.gate is not None:
                y = golden.gated_activation(self.rows(step.gate, n), y, model.hidden_act)
            self.rows(step.dst, n)[:] = y
        elif isinstance(step, Attention):
            self._attention(step, n, positions)
        elif isinstance(step, LmHead):
            last = self.rows(step.src, n)[n - 1:n]
            head = step.stream.decode(self.image[step.head.offset:step.head.offset + step.head.size].tobytes())
            if step.fmt == "int8":
                x_q, d_x = golden.rmsnorm_quantize(last, self.section(step.norm), step.eps, hw.ew_lanes)
                logits = golden.lm_head(x_q, d_x, head[0], head[1])[0]
            else:
                x = golden.rmsnorm(last, self.section(step.norm), step.eps, hw.ew_lanes)
                logits = golden.lm_head_fp16(x, head[0], hw.ew_lanes)[0]
            io = self.program.io
            self.io[io.logits_offset:io.logits_offset + 4 * model.vocab_size] = logits.astype(np.float32).view(np.uint8)
            # argmax: the first index of the maximum (NaN never wins: logits are finite here).
            self.result_token = int(np.argmax(logits))
        else:
            raise TypeError(f"unknown step {step!r}")

    def _attention(self, step: Attention, n: int, positions: np.ndarray) -> None:
        model, hw = self.program.model, self.program.hardware
        hd = model.head_dim
        cos, sin = self.section(step.rope_cos), self.section(step.rope_sin)
        cache = self.kv_view(step.cache)
        if step.write_kv:
            cols = slice(step.kv_head * hd, (step.kv_head + 1) * hd)
            k = golden.rope(self.rows("k", n)[:, None, cols], positions, cos, sin)
            cache.append(int(positions[0]), k, self.rows("v", n)[:, None, cols])
        for head in step.heads:
            cols = slice(head * hd, (head + 1) * hd)
            q = golden.rope(self.rows("q", n)[:, None, cols], positions, cos, sin)
            q_in, d_q = golden.attention_query_input(q, hw.attn_format)
            out = self.rows("attn", n)
            for t in range(n):
                out[t, cols] = golden.attention_query(q_in[t, 0], None if d_q is None else d_q[t, 0], cache, 0,
                                                      int(positions[t]), hw.attn_tile, hd)


class ProgramBackend:
    """The step machine behind the backend interface of :mod:`tellme.sim.backends`
    (``reset``, ``prefill``, ``decode``): the image is written from ``weights`` once, the KV
    cache and positions start empty at every ``reset``."""

    def __init__(self, weights, hw):
        import tempfile
        from pathlib import Path

        from ..gen.image import write_image
        from ..gen.program import build_program
        self.program = build_program(weights.config, hw)
        with tempfile.TemporaryDirectory(prefix="tellme-image-") as tmp:
            path = Path(tmp) / "model.img"
            write_image(weights, hw, path)
            self.image = np.fromfile(path, dtype=np.uint8)
        self.reset()

    def reset(self) -> None:
        self.machine = StepMachine(self.program, self.image)
        self.position = 0

    def prefill(self, token_ids) -> np.ndarray:
        ids = list(np.asarray(token_ids, dtype=np.int64).reshape(-1))
        if not ids:
            raise ValueError("no tokens given")
        chunk = self.program.hardware.prefill_chunk
        logits = None
        for lo in range(0, len(ids), chunk):
            logits, _ = self.machine.call(ids[lo:lo + chunk], self.position)
            self.position += len(ids[lo:lo + chunk])
        return logits

    def decode(self, token_id: int) -> np.ndarray:
        logits, _ = self.machine.call([token_id], self.position)
        self.position += 1
        return logits
