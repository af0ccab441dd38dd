"""The sequencer program: docs/architecture.md section 8 as a table of steps, generated from
the model and hardware configurations.

One program serves every call: a call runs the steps in order for its ``TOKEN_COUNT`` tokens at
``SEQ_POS`` (a prefill chunk of 1..``prefill_chunk`` tokens, or a decode step of one). Every
address a step names is fixed by the configurations alone: image sections relative to
``IMAGE_BASE`` (:func:`tellme.contract.layouts.image_sections`), activation arrays relative to
``SCRATCH_BASE`` (:func:`~tellme.contract.layouts.scratch_layout`), KV rows relative to
``KV_BASE`` (:func:`~tellme.contract.layouts.kv_cache_map`), token ids and logits relative to
``IO_BASE``. The int8 activations of the TLMM stay on chip in the activation buffer (``act``).

Steps (one dataclass each, ``op`` names the datapath configuration):

- ``EMBED``: the call's token ids -> embedding rows (flushed to zero) into ``h0``.
- ``NORM_QUANT``: rows of a scratch array -> RMSNorm (with a gain section) or not -> absmax int8
  per token -> ``act`` (x_q and d_x per token).
- ``MATMUL``: one projection on the TLMM over ``act``, tile by tile, ``ceil(n / T)`` token
  passes per tile -> dequantisation (+ the residual array, or x act(the gate array): up_proj
  applies the gated FFN activation to gate_proj's rows as its own rows stream out) -> a
  scratch array.
- ``ATTENTION``: one pass of the attention unit over one kv head: RoPE and per-head int8 of
  the chunk's queries and key, the key/value rows appended to the KV cache, causal attention ->
  the heads' columns of ``attn``.
- ``LM_HEAD``: the last token's row of ``h0`` -> final norm + quantiser -> int8 (or fp16) LM
  head -> logits to the I/O region and their argmax to ``RESULT_TOKEN``.

The weight streamer takes the ``MATMUL`` steps' projections as its own queue, in program order,
so weight loading runs ahead across step and layer boundaries (bounded by the two buffer
banks). :func:`build_program` makes the program, :meth:`Program.listing` prints it, and
:mod:`tellme.sim.machine` executes it on numpy DDR bytes with the golden model's unit functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import ConfigError, HardwareConfig, ModelConfig
from ..contract.formats import tlmm_groups
from ..contract.layouts import (PROJECTIONS_ORDER, BufferGeometry, ImageFormat, IoLayout, KvBases, LmHeadStream,
                                ScratchArray,
                                Section, image_sections, kv_cache_map, page_up, scratch_layout)
from .tiling import tile_projection

__all__ = ["Embed", "NormQuant", "MatMul", "Attention", "LmHead", "Step", "Program", "build_program",
           "check_datapath"]


@dataclass(frozen=True)
class Embed:
    op = "EMBED"
    table: Section
    dst: str

    def describe(self) -> str:
        return f"ids (IO) -> {self.dst}: rows of {self.table.name} @ image+{self.table.offset:#x}, flushed to zero"


@dataclass(frozen=True)
class NormQuant:
    op = "NORM_QUANT"
    layer: int | None
    src: str
    width: int
    gain: Section | None
    eps: float

    def describe(self) -> str:
        norm = (f"RMSNorm {self.gain.name} @ image+{self.gain.offset:#x} (eps {self.eps:g}) + "
                if self.gain is not None else "")
        return f"{self.src}[:, :{self.width}] -> {norm}absmax int8 -> act"


@dataclass(frozen=True)
class MatMul:
    op = "MATMUL"
    layer: int
    proj: str
    weights: Section
    scales: Section
    scale_index: int
    rows: int
    inputs: int
    blocks: int
    tile_rows: int
    tiles: int
    dst: str
    residual: str | None
    gate: str | None = None        # the array g of o = act(g) * y (the model's hidden_act)

    def describe(self) -> str:
        res = f" + {self.residual}" if self.residual else ""
        if self.gate:
            res = f" x act({self.gate})"
        return (f"{self.proj} {self.rows}x{self.inputs} @ image+{self.weights.offset:#x}: {self.tiles} tile(s) of "
                f"<= {self.tile_rows} rows x {self.blocks} blocks; act -> dequant (w_mult {self.scales.name}"
                f"[{self.scale_index}]){res} -> {self.dst}")


@dataclass(frozen=True)
class Attention:
    op = "ATTENTION"
    layer: int
    kv_head: int
    heads: tuple[int, ...]
    write_kv: bool
    cache: KvBases
    rope_cos: Section
    rope_sin: Section

    def describe(self) -> str:
        append = ", append k/v" if self.write_kv else ""
        return (f"kv head {self.kv_head}, query heads {', '.join(map(str, self.heads))}: RoPE + int8 q, k; int8 v"
                f"{append} (K @ kv+{self.cache.k_base:#x}); causal attention -> attn")


@dataclass(frozen=True)
class LmHead:
    op = "LM_HEAD"
    src: str
    norm: Section
    head: Section                       # the image section ``lm_head``
    stream: LmHeadStream                # its striped layout
    fmt: str
    eps: float

    def describe(self) -> str:
        return (f"last row of {self.src} -> RMSNorm {self.norm.name} -> {self.fmt} head "
                f"@ image+{self.head.offset:#x} ({self.stream.ports} port(s)) -> logits (IO), argmax -> RESULT_TOKEN")


Step = Embed | NormQuant | MatMul | Attention | LmHead


@dataclass(frozen=True)
class Program:
    """The steps of a call and the memory layouts they address."""
    model: ModelConfig
    hardware: HardwareConfig
    image: dict[str, Section]
    scratch: dict[str, ScratchArray]
    io: IoLayout
    kv_bytes: int
    steps: tuple[Step, ...] = field(repr=False)

    @property
    def image_bytes(self) -> int:
        return max(s.offset + page_up(s.size) for s in self.image.values())

    @property
    def scratch_bytes(self) -> int:
        return max(a.offset + page_up(a.size) for a in self.scratch.values())

    def tlmm_cycles(self, tokens: int) -> int:
        """Docs section 1's hand figure for the TLMM of a call of ``tokens`` tokens: ceil(n / T)
        passes of one lane-block entry (blocks x rows of each MATMUL step) per cycle, the cycles
        it would take if it never waited and nothing around it cost a cycle."""
        passes = -(-tokens // self.hardware.tlmm_tokens)
        return passes * sum(s.blocks * s.rows for s in self.steps if isinstance(s, MatMul))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for step in self.steps:
            out[step.op] = out.get(step.op, 0) + 1
        return out

    def listing(self) -> str:
        """The program as a readable listing: header, memory regions, one line per step."""
        m, hw = self.model, self.hardware
        lines = [
            f"tellme program: {m.name} on {hw.board} hardware",
            f"  model: {m.num_layers} layers, hidden {m.hidden_size}, FFN {m.intermediate_size} ({m.hidden_act}), "
            f"{m.num_heads} heads / {m.num_kv_heads} kv heads x {m.head_dim}, vocab {m.vocab_size}",
            f"  hardware: G={hw.tlmm_group}, P={hw.tlmm_lanes} lanes, T={hw.tlmm_tokens} tokens, "
            f"L={hw.ew_lanes} element-wise lanes, attention tile {hw.attn_tile}, chunk {hw.prefill_chunk}, "
            f"context {hw.max_context}, {hw.hp_ports} x {hw.axi_data_width}-bit ports",
            f"  memory: image {self.image_bytes:,} B, KV cache {self.kv_bytes:,} B, "
            f"scratch {self.scratch_bytes:,} B, I/O {self.io.size:,} B",
            "  scratch arrays: " + ", ".join(f"{a.name} @ +{a.offset:#x} ({a.rows} x {a.width})"
                                            for a in self.scratch.values()),
            f"  steps: {len(self.steps)} (" + ", ".join(f"{n} {op}" for op, n in self.counts().items()) + ")",
            "",
            f"{'step':>5}  {'op':<10} {'layer':>5}  what",
        ]
        for i, step in enumerate(self.steps):
            layer = getattr(step, "layer", None)
            lines.append(f"{i:>5}  {step.op:<10} {'' if layer is None else layer:>5}  {step.describe()}")
        return "\n".join(lines)


def check_datapath(model: ModelConfig, hw: HardwareConfig) -> None:
    """Raise ConfigError, naming the field and the numbers, when the datapath cannot move
    ``model``'s rows: every row a scratch reader or writer moves (embedding and activation rows,
    norm gains, one head's vector, one RoPE table row) must be whole beats of the element-wise
    lanes and of the AXI bus (which also makes each half of a head vector, the unit RoPE rotates,
    whole beats)."""
    hw.check_model(model)
    unit = max(4 * hw.ew_lanes, hw.axi_data_width // 8)
    rows = {"hidden_size": (model.hidden_size, 4 * model.hidden_size, "an embedding or residual row"),
            "intermediate_size": (model.intermediate_size, 4 * model.intermediate_size, "an FFN row"),
            "head_dim": (model.head_dim, 4 * model.head_dim, "one head's vector"),
            "head_dim ": (model.head_dim, 2 * model.head_dim, "a RoPE table row (head_dim / 2 floats)")}
    for name, (value, nbytes, what) in rows.items():
        if nbytes % unit:
            raise ConfigError(f"{name.strip()}: {value} gives {what} of {nbytes} bytes, not a multiple of the "
                              f"{unit}-byte row unit of this hardware (ew_lanes {hw.ew_lanes} x 4 bytes, "
                              f"{hw.axi_data_width}-bit AXI beats)")


def build_program(model: ModelConfig, hw: HardwareConfig, *, urams_per_bank: int | None = None) -> Program:
    """The program of ``model`` on ``hw``; raises ConfigError when ``hw`` cannot run ``model``
    (:func:`check_datapath`, the buffer geometry and tiling)."""
    check_datapath(model, hw)
    fmt = ImageFormat.of(hw)
    image = image_sections(model, fmt)
    scratch = scratch_layout(model, hw)
    io = IoLayout.of(model, hw)
    kv, kv_bytes = kv_cache_map(0, model.num_layers, model.num_kv_heads, hw.max_context, model.head_dim,
                                hw.attn_format)
    geometry = BufferGeometry.of(hw, urams_per_bank)
    shapes = model.projections()
    cores = hw.attn_heads_parallel
    eps = float(model.rms_norm_eps)
    steps: list[Step] = [Embed(image["embed"], "h0")]

    def matmul(layer: int, proj: str, dst: str, residual: str | None = None, gate: str | None = None) -> MatMul:
        rows, inputs = shapes[proj]
        tiling = tile_projection(proj, rows, inputs, geometry, max(hw.ew_lanes, hw.axi_data_width // 32))
        if tiling.blocks != -(-tlmm_groups(inputs, hw.tlmm_group) // hw.tlmm_lanes):
            raise ConfigError(f"{proj}: tiling and the TLMM disagree on the block count")
        return MatMul(layer, proj, image[f"layers.{layer}.{proj}"], image[f"layers.{layer}.scales"],
                      PROJECTIONS_ORDER.index(proj), rows, inputs, tiling.blocks, tiling.tile_rows,
                      len(tiling.tiles), dst, residual, gate)

    def gain(name: str) -> Section | None:
        return image.get(name)

    for i in range(model.num_layers):
        # h0 holds the residual stream at the start of every layer: each residual matmul writes
        # the other buffer, and there are two per layer.
        steps.append(NormQuant(i, "h0", model.hidden_size, image[f"layers.{i}.input_norm"], eps))
        steps += [matmul(i, "q_proj", "q"), matmul(i, "k_proj", "k"), matmul(i, "v_proj", "v")]
        for kv_head in range(model.num_kv_heads):
            group = range(kv_head * model.group_size, (kv_head + 1) * model.group_size)
            for first in range(0, model.group_size, cores):
                steps.append(Attention(i, kv_head, tuple(group[first:first + cores]), first == 0,
                                       kv[i, kv_head], image["rope.cos"], image["rope.sin"]))
        steps.append(NormQuant(i, "attn", model.q_size, gain(f"layers.{i}.attn_sub_norm"), eps))
        steps.append(matmul(i, "o_proj", "h1", residual="h0"))
        steps.append(NormQuant(i, "h1", model.hidden_size, image[f"layers.{i}.post_attention_norm"], eps))
        # up_proj's rows leave the TLMM as act(gate) * up: the gated FFN activation streams with
        # the projection instead of running as a step of its own.
        steps += [matmul(i, "gate_proj", "gate"), matmul(i, "up_proj", "up", gate="gate")]
        steps.append(NormQuant(i, "up", model.intermediate_size, gain(f"layers.{i}.ffn_sub_norm"), eps))
        steps.append(matmul(i, "down_proj", "h0", residual="h1"))
    steps.append(LmHead("h0", image["final_norm"], image["lm_head"], LmHeadStream.of(model, ImageFormat.of(hw)),
                        hw.lm_head_format, eps))
    # The sequencer ends a NORM_QUANT step once the act buffer has its write command and relies
    # on the next step being the MATMUL that reads the buffer behind the writes (hw/sequencer.py).
    for step, after in zip(steps, steps[1:]):
        if isinstance(step, NormQuant) and not isinstance(after, MatMul):
            raise AssertionError(f"program: a {after.op} step follows a NORM_QUANT; only a MATMUL may")
    return Program(model, hw, image, scratch, io, kv_bytes, tuple(steps))
