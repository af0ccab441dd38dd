"""The top level: the whole accelerator of one (model, hardware) pair as one Amaranth component
(docs/architecture.md section 9).

:class:`TellmeTop` composes the register file, the sequencer (the program of
:mod:`tellme.gen.program` as a ROM, :func:`encode_program`), the step datapaths (EMBED,
NORM_QUANT, MATMUL, ATTENTION, LM_HEAD) and the AXI arbiters that share the HP ports
among their managers. :func:`generate` writes its Verilog and a JSON description.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.hdl import Module, Mux, ResetInserter, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..boards import weight_ram_style
from ..config import ConfigError, HardwareConfig, ModelConfig
from ..contract.formats import ATTN_SCORE_LANES
from ..contract.layouts import BufferGeometry, ImageFormat, LmHeadStream, projection_port_stride
from ..contract.regmap import ERROR_BITS, REGISTER_MAP, design_hash, register_constants
from ..hw.attention_path import AttentionPath
from ..hw.axi import axi_lite_signature, axi_signature
from ..hw.axi_arbiter import AxiReadArbiter, AxiWriteArbiter
from ..hw.axi_quiesce import AxiQuiesce
from ..hw.embed_path import EmbedPath
from ..hw.lm_head_path import LmHeadPath
from ..hw.matmul_path import MatmulPath
from ..hw.norm_quant_path import NormQuantPath
from ..hw.regfile import RegisterFile
from ..hw.sequencer import FAIL_CODES, OPS, RUNTIME_FIELDS, Sequencer, step_layout
from .program import Attention, Embed, LmHead, MatMul, NormQuant, Program, build_program
from .tiling import MatmulRates, kv_history_ports, kv_history_slots

__all__ = ["TellmeTop", "encode_program", "top_ports", "write_top", "summary", "ADDR_WIDTH"]

#: DDR address width of the HP ports (Zynq UltraScale+: 40 bits, DDR at 0 .. 2^40).
ADDR_WIDTH = 40


def _f32_bits(value: float) -> int:
    return int(np.float32(value).view(np.uint32))


@dataclass(frozen=True)
class TopShape:
    """The sizes the datapaths are built for, from (model, hardware)."""
    max_dim: int            # widest activation row (NORM_QUANT, act buffer)
    max_rows: int           # largest MATMUL tile
    block: int              # transpose rows

    @classmethod
    def of(cls, program: Program) -> "TopShape":
        m, hw = program.model, program.hardware
        matmuls = [s for s in program.steps if isinstance(s, MatMul)]
        return cls(max(m.hidden_size, m.intermediate_size, m.q_size), max(s.tile_rows for s in matmuls),
                   max(2 * hw.ew_lanes, 8))


def _fill(layout: data.StructLayout, values: dict, op: str) -> dict:
    """``values`` for the fields of ``layout`` (array fields as lists); every field must be given,
    except the ones the sequencer fills at run time (and MATMUL's w_mult, fetched)."""
    out = {}
    for name, member in layout:
        if name in values:
            value = values[name]
            if isinstance(member.shape, data.ArrayLayout):
                value = list(value) + [0] * (member.shape.length - len(value))
            out[name] = value
        elif name in RUNTIME_FIELDS or (op == "MATMUL" and name == "w_mult"):
            continue
        else:
            raise ConfigError(f"{op} step: the command field {name!r} has no value in the program encoder")
    return out


def encode_program(program: Program, commands: dict[str, data.StructLayout]) -> list[int]:
    """The sequencer ROM of ``program``: one step word per step (two for LM_HEAD: the NORM_QUANT
    of the last row to the LM head, then the head), address fields as offsets into their
    region (:data:`tellme.hw.sequencer.RELOCATIONS`)."""
    model, hw = program.model, program.hardware
    scratch, io = program.scratch, program.io
    fmt = ImageFormat.of(hw)
    shapes = model.projections()
    hd = model.head_dim
    layout = step_layout(commands)
    words = []

    def word(op: str, values: dict, **flags) -> int:
        cmd = _fill(commands[op], values, op)
        # A union's const takes one variant; its bits are the word's `cmd` bits.
        variant = data.Const(commands[op], commands[op].const(cmd).as_bits())
        bits = layout.const({"op": OPS.index(op), **flags}).as_bits()
        offset = layout["cmd"].offset
        return bits | (variant.as_bits() << offset)

    for step in program.steps:
        if isinstance(step, Embed):
            h0 = scratch[step.dst]
            words.append(word("EMBED", {"ids": io.ids_offset, "table": step.table.offset,
                                        "row_bytes": 4 * model.hidden_size, "dst": h0.offset,
                                        "row_stride": h0.row_bytes}))
        elif isinstance(step, NormQuant):
            src = scratch[step.src]
            words.append(word("NORM_QUANT", _norm_quant_values(src, step.width, step.gain, step.eps)))
        elif isinstance(step, MatMul):
            dst = scratch[step.dst]
            stride = projection_port_stride(shapes[step.proj], fmt)
            scale = step.scales.offset + step.scale_index * 4 * int(np.prod(step.scales.shape[1:]))
            words.append(word("MATMUL", {
                "base": [step.weights.offset + p * stride for p in range(hw.hp_ports)],
                "blocks": step.blocks, "rows": step.rows, "tile_rows": step.tile_rows, "tiles": step.tiles,
                "dst": dst.offset, "row_stride": dst.row_bytes, "residual": int(step.residual is not None),
                "gate": int(step.gate is not None),
                "res": scratch[step.residual or step.gate].offset if step.residual or step.gate else 0},
                scale=scale))
        elif isinstance(step, Attention):
            first = step.heads[0] * hd * 4
            words.append(word("ATTENTION", {
                "q": scratch["q"].offset + first, "k": scratch["k"].offset + step.kv_head * hd * 4,
                "v": scratch["v"].offset + step.kv_head * hd * 4, "attn": scratch["attn"].offset + first,
                "row_stride": scratch["q"].row_bytes, "rope_cos": step.rope_cos.offset,
                "rope_sin": step.rope_sin.offset, "k_base": step.cache.k_base, "v_base": step.cache.v_base,
                "s_base": step.cache.s_base, "write_kv": int(step.write_kv)}))
        elif isinstance(step, LmHead):
            src = scratch[step.src]
            words.append(word("NORM_QUANT", _norm_quant_values(src, model.hidden_size, step.norm, step.eps),
                              last_row=1, to_head=1))
            # rows and scales at logical bytes of the striped section (the fp16 head has no scales:
            # its command's scales_base is unused)
            words.append(word("LM_HEAD", {"stripe_base": step.head.offset, "stripe_bytes": step.stream.stripe_bytes,
                                          "rows_base": 0, "scales_base": step.stream.scales_offset,
                                          "rows": model.vocab_size, "cols": model.hidden_size,
                                          "logits": io.logits_offset}))
        else:
            raise TypeError(f"no encoding for step {step!r}")
    return words


def _norm_quant_values(src, width: int, gain, eps: float) -> dict:
    return {"src": src.offset, "row_bytes": src.row_bytes, "row_stride": src.row_bytes, "width": width,
            "norm": int(gain is not None), "gain": gain.offset if gain is not None else 0,
            "inv_dim": _f32_bits(1.0 / width), "eps": _f32_bits(eps)}


class TellmeTop(wiring.Component):
    """The accelerator of ``model`` on ``hw``.

    Ports: ``s_axil`` (AXI4-Lite subordinate: the register file, docs section 7),
    ``m_axi_hp0`` .. ``m_axi_hp{P-1}`` (AXI4 managers, ``axi_data_width`` bits: port p carries
    the weight stream p and a share of the other read managers; port 0 also carries every
    write), ``irq`` (level: DONE or ERROR while ``CONTROL.IRQ_ENABLE``).

    A call: ``START`` -> the sequencer walks the program (:func:`encode_program`) on the step
    datapaths, one step at a time, its weight walker sending every MATMUL's weight command
    ahead (loading runs ahead of the steps); ``STATUS.DONE`` (or ``ERROR`` with ``ERR_CODE``) at the
    end; ``CYCLES`` counts the call's cycles, ``STALL`` the cycles the TLMM waited for weights.
    An AXI error response on any port ends the call with ``AXI_READ``/``AXI_WRITE``, a token id
    not below the vocabulary with ``BAD_TOKEN_ID``, a call without AXI progress for
    ``WATCHDOG.CYCLES`` with ``WATCHDOG``; each of them and
    ``SOFT_RESET`` return every engine to idle: the datapath is held in reset (not the register
    file) until every HP port is at rest (:class:`~tellme.hw.axi_quiesce.AxiQuiesce`). A START
    while a call runs is ignored and sets ``START_WHILE_BUSY`` beside the running call's flags.

    Parameters: ``model``, ``hw``, ``fault_port`` (simulation only, for the tests of ``tellme
    trace``: an input ``fault_step``; every word the step of that index writes to DDR has bit 0
    flipped), ``ram_style`` of the weight buffer (``"ultra"``
    on URAM boards, ``"block"`` else).
    """

    def __init__(self, model: ModelConfig, hw: HardwareConfig, *, ram_style: str = "ultra",
                 fault_port: bool = False):
        self.model, self.hw, self.ram_style = model, hw, ram_style
        self.program = program = build_program(model, hw)
        groups = model.group_size
        if groups % hw.attn_heads_parallel:
            raise ConfigError(f"attn_heads_parallel: {hw.attn_heads_parallel} does not divide the {groups} query "
                              f"heads of a kv head (num_heads {model.num_heads} / num_kv_heads {model.num_kv_heads})")
        self.shape = shape = TopShape.of(program)
        L, C, dw, aw = hw.ew_lanes, hw.prefill_chunk, hw.axi_data_width, ADDR_WIDTH
        geometry = BufferGeometry.of(hw)
        self.embed = EmbedPath(lanes=L, row_bytes=4 * model.hidden_size, vocab=model.vocab_size, max_tokens=C,
                               data_width=dw, addr_width=aw)
        fp16_head = hw.lm_head_format == "fp16"
        if fp16_head and dw % (16 * L):
            raise ConfigError(f"lm_head_format: the fp16 head takes ew_lanes ({L}) binary16 weights at a time "
                              f"from whole AXI beats, so 16 x ew_lanes ({16 * L} bits) must divide "
                              f"axi_data_width ({dw})")
        # the fp16 head reads the normalised float vector beside the quantiser's output
        self.norm_quant = NormQuantPath(lanes=L, max_dim=shape.max_dim, max_tokens=C, data_width=dw, addr_width=aw,
                                        float_out=fp16_head)
        rates = MatmulRates.of(model, hw.tlmm_group, hw.tlmm_lanes, hw.tlmm_tokens, L)
        self.matmul = MatmulPath(geometry=geometry, tokens=hw.tlmm_tokens, lanes=L, block=shape.block, max_tokens=C,
                                 max_inputs=shape.max_dim, max_rows=shape.max_rows, addr_width=aw, ram_style=ram_style,
                                 dequant_lanes=rates.dequant_lanes, add_lanes=rates.add_lanes,
                                 act=model.hidden_act, act_lanes=hw.gating_lanes)
        self.attention = AttentionPath(head_dim=model.head_dim, heads=hw.attn_heads_parallel, lanes=L,
                                       tile=hw.attn_tile, chunk=C, data_width=dw, addr_width=aw,
                                       dot_lanes=ATTN_SCORE_LANES, attn_format=hw.attn_format,
                                       rope_lanes=hw.rope_lanes, history_ports=kv_history_ports(hw),
                                       history_slots=kv_history_slots(hw))
        # The head streams over every HP port at once when its rows allow (LmHeadStream).
        head_ports = LmHeadStream.of(model, ImageFormat.of(hw)).ports
        self.lm_head = LmHeadPath(lanes=L, max_rows=model.vocab_size, max_cols=model.hidden_size,
                                  weight_format=hw.lm_head_format, data_width=dw, addr_width=aw,
                                  ports=head_ports, aligned_rows=head_ports > 1)
        paths = {"EMBED": self.embed, "NORM_QUANT": self.norm_quant, "MATMUL": self.matmul,
                 "ATTENTION": self.attention, "LM_HEAD": self.lm_head}
        self.paths = paths
        commands = {op: path.cmd.payload.shape() for op, path in paths.items()}
        self.words = encode_program(program, commands)
        self.fault_port = fault_port
        self.sequencer = Sequencer(commands=commands, words=self.words, max_tokens=C, max_context=hw.max_context,
                                   lanes=L, data_width=dw, addr_width=aw)
        self.regfile = RegisterFile(constants=register_constants(model, hw))
        # Every AXI manager of the datapath: (name, port); the weight streams first, one per HP port.
        self.read_managers = [(f"matmul.weights[{p}]", self.matmul.weights[p]) for p in range(hw.hp_ports)]
        self.write_managers, striped = [], []
        for unit_name, unit in [("sequencer", self.sequencer), *((op.lower(), p) for op, p in paths.items())]:
            for name, member in unit.signature.members.items():
                if not name.endswith("_axi"):
                    continue
                port = getattr(unit, name)
                if member.dimensions:                # one manager per HP port (LM head stripes, K/V history)
                    striped.append([(f"{unit_name}.{name}[{p}]", port[p]) for p in range(member.dimensions[0])])
                    continue
                kind = "read" if "arvalid" in member.signature.members else "write"
                (self.read_managers if kind == "read" else self.write_managers).append((f"{unit_name}.{name}", port))
        # Port p: weight stream p, then the other readers dealt round robin, then stripe p of
        # each striped reader.
        self.port_readers = [[self.read_managers[p]] for p in range(hw.hp_ports)]
        for i, manager in enumerate(self.read_managers[hw.hp_ports:]):
            self.port_readers[i % hw.hp_ports].append(manager)
        for managers in striped:
            for p, manager in enumerate(managers):
                self.port_readers[p].append(manager)
            self.read_managers += managers
        self.datapath = _Datapath(self)
        self.quiesce = [AxiQuiesce(data_width=dw, addr_width=aw) for _ in range(hw.hp_ports)]
        members = {"s_axil": In(axi_lite_signature(addr_width=12))}
        for p in range(hw.hp_ports):
            members[f"m_axi_hp{p}"] = Out(axi_signature(addr_width=aw, data_width=dw))
        members["irq"] = Out(1)
        if fault_port:
            members["fault_step"] = In(range(len(self.words) + 1))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        hw = self.hw
        regs = self.regfile
        m.submodules.regfile = regs
        wiring.connect(m, wiring.flipped(self.s_axil), regs.bus)

        # The datapath (sequencer, step paths, arbiters) is reset by the system reset, SOFT_RESET
        # or an abort after an AXI error; the register file only by the system reset.
        # A reset request holds the datapath in reset until every HP port is at rest (AxiQuiesce:
        # R and B drained, owed W beats sent empty), so the next call starts on a quiet bus.
        dp_reset, reset_request, draining = Signal(), Signal(), Signal()
        dpf = self.datapath
        m.submodules.datapath = ResetInserter(dp_reset)(dpf)
        idle = []
        for p, quiesce in enumerate(self.quiesce):
            m.submodules[f"quiesce{p}"] = quiesce
            wiring.connect(m, dpf.hp[p], quiesce.i)
            wiring.connect(m, quiesce.o, wiring.flipped(getattr(self, f"m_axi_hp{p}")))
            m.d.comb += quiesce.drain.eq(reset_request | draining)
            idle.append(quiesce.idle)
        with m.If(reset_request):
            m.d.sync += draining.eq(1)
        with m.Elif(_all(idle)):
            m.d.sync += draining.eq(0)
        m.d.comb += dp_reset.eq(reset_request | draining)

        # -- the call: registers -> sequencer -------------------------------------------------------
        # A START while the datapath drains after a reset waits for the end of the drain.
        start_pending = Signal()
        with m.If(regs.control_start & dp_reset):
            m.d.sync += start_pending.eq(1)
        with m.Elif(~dp_reset):
            m.d.sync += start_pending.eq(0)
        m.d.comb += [
            dpf.start.eq((regs.control_start | start_pending) & ~dp_reset), dpf.decode.eq(regs.mode_decode),
            dpf.seq_pos.eq(regs.seq_pos_pos), dpf.token_count.eq(regs.token_count_count),
            dpf.bases[0].eq(regs.image_base_lo_addr | (regs.image_base_hi_addr << 32)),
            dpf.bases[1].eq(regs.kv_base_lo_addr | (regs.kv_base_hi_addr << 32)),
            dpf.bases[2].eq(regs.scratch_base_lo_addr | (regs.scratch_base_hi_addr << 32)),
            dpf.bases[3].eq(regs.io_base_lo_addr | (regs.io_base_hi_addr << 32)),
            regs.status_busy.eq(dpf.busy), regs.result_token_token.eq(dpf.result_token),
        ]
        if self.fault_port:
            m.d.comb += dpf.fault.eq(dpf.busy & (self.sequencer.step == self.fault_step))
        # A START while a call runs is ignored (the sequencer takes it only when idle): it must
        # not clear the running call's ERR_CODE, CYCLES or STALL either; it is flagged instead.
        start_accepted, start_while_busy = Signal(), Signal()
        m.d.comb += [start_accepted.eq(regs.control_start & ~dpf.busy),
                     start_while_busy.eq(regs.control_start & dpf.busy & ~dp_reset)]
        # ERR_CODE: cleared at an accepted START, set by the call's refusal, an AXI error
        # response, a bad token id, the watchdog, or a START while busy.
        errors = Signal(len(ERROR_BITS))
        read_error, write_error = Signal(), Signal()
        # An error response the datapath takes during a call (not while draining after a reset:
        # those responses belong to the call already ended).
        hp = [getattr(self, f"m_axi_hp{p}") for p in range(hw.hp_ports)]
        m.d.comb += [
            read_error.eq(_any([port.rvalid & inner.rready & (port.rresp != 0) for port, inner in zip(hp, dpf.hp)])
                          & dpf.busy & ~draining),
            write_error.eq(hp[0].bvalid & dpf.hp[0].bready & (hp[0].bresp != 0) & dpf.busy & ~draining),
        ]
        for i, name in enumerate(ERROR_BITS):
            m.d.comb += getattr(regs, f"err_code_{name.lower()}").eq(errors[i])
        # START clears it; the same cycle may set bits again (a call refused at START).
        raised = Signal(len(ERROR_BITS))
        bad_token = Signal()
        m.d.comb += [raised[ERROR_BITS.index("AXI_READ")].eq(read_error),
                     raised[ERROR_BITS.index("AXI_WRITE")].eq(write_error),
                     raised[ERROR_BITS.index("START_WHILE_BUSY")].eq(start_while_busy),
                     bad_token.eq(dpf.bad_token_id & dpf.busy & ~draining),
                     raised[ERROR_BITS.index("BAD_TOKEN_ID")].eq(bad_token)]
        for code, name in enumerate(FAIL_CODES):      # the sequencer's refusals, by their ERR_CODE names
            m.d.comb += raised[ERROR_BITS.index(name)].eq(dpf.fail & dpf.fail_code[code])
        m.d.sync += errors.eq(Mux(start_accepted, 0, errors) | raised)
        # Watchdog: a call whose units stop making progress (no handshake on any channel of any
        # HP port for WATCHDOG.CYCLES cycles: a starved or deadlocked unit) ends as an AXI error
        # does, with ERR_CODE.WATCHDOG; it fires once, then the drain resets the datapath.
        progress = _any([getattr(port, f"{ch}valid") & getattr(port, f"{ch}ready")
                         for port in dpf.hp for ch in ("ar", "r", "aw", "w", "b")])
        quiet = Signal(32)
        with m.If(start_accepted | progress | ~dpf.busy | draining):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != regs.watchdog_cycles):
            m.d.sync += quiet.eq(quiet + 1)
        watchdog = Signal()
        m.d.comb += [watchdog.eq((regs.watchdog_cycles != 0) & (quiet == regs.watchdog_cycles - 1)
                                 & dpf.busy & ~progress & ~draining),
                     raised[ERROR_BITS.index("WATCHDOG")].eq(watchdog)]
        # The abort follows the error response by a cycle: the managers' RREADY may depend on
        # RVALID, which the drain overrides, so a combinational abort would close a loop.
        abort = Signal()
        m.d.sync += abort.eq(read_error | write_error | watchdog | bad_token)
        m.d.comb += [reset_request.eq(regs.control_soft_reset | abort),
                     regs.status_done_set.eq(dpf.done),
                     regs.status_error_set.eq(dpf.fail | abort)]
        # CYCLES: START to DONE; STALL: of those, the TLMM waiting for weights.
        cycles, stall = Signal(64), Signal(64)
        with m.If(start_accepted):
            m.d.sync += [cycles.eq(0), stall.eq(0)]
        with m.Elif(dpf.busy):
            m.d.sync += [cycles.eq(cycles + 1), stall.eq(stall + dpf.weights_wait)]
        m.d.comb += [regs.cycles_lo_value.eq(cycles[:32]), regs.cycles_hi_value.eq(cycles[32:]),
                     regs.stall_lo_value.eq(stall[:32]), regs.stall_hi_value.eq(stall[32:]),
                     self.irq.eq(regs.control_irq_enable & (regs.status_done | regs.status_error))]
        return m


class _Datapath(wiring.Component):
    """The sequencer, the step paths and the arbiters of a :class:`TellmeTop` (its ``dp``
    domain): the call's inputs, its status, and the HP ports."""

    def __init__(self, top: TellmeTop):
        self.top = top
        hw, aw, dw = top.hw, ADDR_WIDTH, top.hw.axi_data_width
        self.read_arbiters = [AxiReadArbiter(managers=len(readers), data_width=dw, addr_width=aw)
                              for readers in top.port_readers]
        self.write_arbiter = AxiWriteArbiter(managers=len(top.write_managers), data_width=dw, addr_width=aw)
        seq = top.sequencer
        super().__init__({
            "start": In(1), "decode": In(1), "seq_pos": In(32), "token_count": In(32),
            "bases": In(ADDR_WIDTH).array(4),
            "busy": Out(1), "done": Out(1), "fail": Out(1), "fail_code": Out(len(seq.fail_code)),
            "result_token": Out(32), "weights_wait": Out(1), "bad_token_id": Out(1), "fault": In(1),
            "hp": Out(axi_signature(addr_width=aw, data_width=dw)).array(hw.hp_ports),
        })

    def elaborate(self, platform):
        m = Module()
        top = self.top
        hw = top.hw
        seq = top.sequencer
        m.submodules.sequencer = seq
        for op, path in top.paths.items():
            m.submodules[op.lower()] = path
        for p, arbiter in enumerate(self.read_arbiters):
            m.submodules[f"read_arbiter{p}"] = arbiter
        m.submodules.write_arbiter = self.write_arbiter

        # -- the call --------------------------------------------------------------------------------
        m.d.comb += [seq.start.eq(self.start), seq.decode.eq(self.decode), seq.seq_pos.eq(self.seq_pos),
                     seq.token_count.eq(self.token_count),
                     self.busy.eq(seq.busy), self.done.eq(seq.done), self.fail.eq(seq.fail),
                     self.fail_code.eq(seq.fail_code), self.result_token.eq(seq.result_token),
                     self.weights_wait.eq(top.matmul.weights_wait), self.bad_token_id.eq(top.embed.bad_id)]
        for i in range(4):
            m.d.comb += seq.bases[i].eq(self.bases[i])

        # -- sequencer -> step paths -----------------------------------------------------------------
        for op, path in top.paths.items():
            wiring.connect(m, getattr(seq, f"{op.lower()}_cmd"), path.cmd)
            if op != "NORM_QUANT":
                m.d.comb += getattr(seq, f"{op.lower()}_done").eq(path.done)
        m.d.comb += seq.lm_token.eq(top.lm_head.token)
        # the MATMUL steps' weights, sent ahead by the sequencer's walker
        wiring.connect(m, seq.weights_cmd, top.matmul.weights_cmd)

        # -- NORM_QUANT results: to the act buffer, or to the LM head (``to_head``) -----------------
        nq, mm, lm = top.norm_quant, top.matmul, top.lm_head
        fp16_head = lm.head.fp16
        to_head = seq.to_head
        m.d.comb += [
            mm.act_wr_cmd.payload.eq(nq.act_cmd.payload),
            mm.act_wr_cmd.valid.eq(nq.act_cmd.valid & ~to_head),
            nq.act_cmd.ready.eq(to_head | mm.act_wr_cmd.ready),
            seq.act_cmd_taken.eq(mm.act_wr_cmd.valid & mm.act_wr_cmd.ready),
            # the int8 head takes x_q and d_x; the fp16 head the float vector beside x_q, and no d_x
            mm.act_q.payload.eq(nq.q.payload),
            *([lm.x.payload.data.eq(nq.y), lm.x.payload.last.eq(nq.q.payload.last)] if fp16_head
              else [lm.x.payload.eq(nq.q.payload)]),
            mm.act_q.valid.eq(nq.q.valid & ~to_head), lm.x.valid.eq(nq.q.valid & to_head),
            nq.q.ready.eq(Mux(to_head, lm.x.ready, mm.act_q.ready)),
            mm.act_scale.payload.eq(nq.scale.payload),
            *([] if fp16_head else [lm.scale.payload.eq(nq.scale.payload)]),
            mm.act_scale.valid.eq(nq.scale.valid & ~to_head),
            *([] if fp16_head else [lm.scale.valid.eq(nq.scale.valid & to_head)]),
            nq.scale.ready.eq(to_head | mm.act_scale.ready if fp16_head
                              else Mux(to_head, lm.scale.ready, mm.act_scale.ready)),
        ]

        # -- AXI: managers -> arbiters -> HP ports ---------------------------------------------------
        for p, (readers, arbiter) in enumerate(zip(top.port_readers, self.read_arbiters)):
            for i, (_, port) in enumerate(readers):
                wiring.connect(m, port, arbiter.mgr[i])
            _connect_members(m, arbiter.axi, self.hp[p], prefixes=("ar", "r"))
        for i, (_, port) in enumerate(top.write_managers):
            # All but WDATA wired through; WDATA with bit 0 flipped during a fault step (tests).
            mgr = self.write_arbiter.mgr[i]
            for name, member in port.signature.members.items():
                if name == "wdata":
                    m.d.comb += mgr.wdata.eq(port.wdata ^ self.fault)
                elif member.flow == Out:
                    m.d.comb += getattr(mgr, name).eq(getattr(port, name))
                else:
                    m.d.comb += getattr(port, name).eq(getattr(mgr, name))
        _connect_members(m, self.write_arbiter.axi, self.hp[0], prefixes=("aw", "w", "b"))
        for p in range(1, hw.hp_ports):          # the other ports never write
            m.d.comb += [self.hp[p].awvalid.eq(0), self.hp[p].wvalid.eq(0), self.hp[p].bready.eq(1)]
        return m


def _all(values):
    out = values[0]
    for v in values[1:]:
        out = out & v
    return out


def _any(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


def _connect_members(m: Module, source, sink, *, prefixes):
    """Connect the members of manager-side interface ``source`` (an arbiter's ``axi``) to the
    same-named members of ``sink`` (a datapath HP port, also manager side) whose channel is one
    of ``prefixes`` ("ar", "r", "aw", "w", "b")."""
    for name, member in source.signature.members.items():
        channel = next(p for p in ("ar", "aw", "r", "w", "b") if name.startswith(p))
        if channel not in prefixes:
            continue
        if member.flow == Out:
            m.d.comb += getattr(sink, name).eq(getattr(source, name))
        else:
            m.d.comb += getattr(source, name).eq(getattr(sink, name))


def top_ports(top: TellmeTop) -> dict:
    """The JSON description of a generated top: ports, parameters, register map, memories."""
    model, hw, program = top.model, top.hw, top.program
    return {
        "top": "tellme_top", "model": model.to_dict(), "hardware": hw.to_dict(),
        "config_hash": f"{design_hash(model, hw):#010x}",
        "ports": {
            "clk": "clock (pl_clk0)", "rst": "reset, active high, synchronous",
            "s_axil": {"protocol": "AXI4-Lite subordinate", "addr_width": 12, "data_width": 32},
            **{f"m_axi_hp{p}": {"protocol": "AXI4 manager", "addr_width": ADDR_WIDTH,
                                "data_width": hw.axi_data_width, "id_width": 4,
                                "managers": [name for name, _ in top.port_readers[p]] +
                                            ([name for name, _ in top.write_managers] if p == 0 else [])}
               for p in range(hw.hp_ports)},
            "irq": "level, DONE or ERROR while CONTROL.IRQ_ENABLE",
        },
        "register_map": [{"name": r.name, "offset": r.offset,
                          "fields": [{"name": f.name, "lsb": f.lsb, "width": f.width, "access": f.access}
                                     for f in r.fields]} for r in REGISTER_MAP.registers],
        "regions": {"image_bytes": program.image_bytes, "kv_bytes": program.kv_bytes,
                    "scratch_bytes": program.scratch_bytes, "io_bytes": program.io.size},
        "program": {"steps": len(program.steps), "rom_words": len(top.words),
                    "word_bits": top.sequencer.layout.size, "counts": program.counts()},
    }


def write_top(model: ModelConfig, hw: HardwareConfig, out: str | os.PathLike, *, ram_style: str | None = None) -> dict:
    """``tellme generate``: the top level's Verilog (``tellme_top.v``, plus the hand-written
    Verilog it instantiates) and its description (``tellme_top.json``: ports, parameters,
    register map, regions, program) in ``out``. Files are written to a temporary name and
    renamed, so a failure leaves no half-written file. Returns the description."""
    from .verilog import verilog_library_sources, verilog_of
    if ram_style is None:
        ram_style = weight_ram_style(hw)
    top = TellmeTop(model, hw, ram_style=ram_style)
    text = verilog_of(top, "tellme_top")
    library = verilog_library_sources(text)
    info = top_ports(top)
    info["files"] = ["tellme_top.v", *(p.name for p in library), "tellme_top.json"]
    info["units"] = {name: type(unit).__name__ for name, unit in
                     [("sequencer", top.sequencer), *((op.lower(), p) for op, p in top.paths.items()),
                      ("regfile", top.regfile)]}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"tellme_top.v": text, **{p.name: p.read_text() for p in library},
             "tellme_top.json": json.dumps(info, indent=2) + "\n"}
    for name, content in files.items():
        tmp = out / f".{name}.tmp"
        tmp.write_text(content)
        os.replace(tmp, out / name)
    return info


def summary(info: dict, out: str | os.PathLike) -> str:
    """A short readable summary of a generated top (``tellme generate`` prints it)."""
    hw, model = info["hardware"], info["model"]
    ports = [k for k in info["ports"] if k.startswith("m_axi_hp")]
    lines = [
        f"tellme generate: {model['name']} on {hw['board']} hardware (CONFIG_HASH {info['config_hash']})",
        "  units: " + ", ".join(f"{k} ({v})" for k, v in info["units"].items()),
        f"  ports: s_axil (AXI4-Lite, 32-bit), {len(ports)} x AXI4 manager ({hw['axi_data_width']}-bit, 40-bit "
        f"addresses), irq",
        f"  datapath: TLMM G={hw['tlmm_group']} x {hw['tlmm_lanes']} lanes x {hw['tlmm_tokens']} tokens, "
        f"{hw['ew_lanes']} element-wise lanes, attention tile {hw['attn_tile']}, chunk {hw['prefill_chunk']}, "
        f"context {hw['max_context']}",
        f"  sequencer: {info['program']['steps']} steps in a ROM of {info['program']['rom_words']} x "
        f"{info['program']['word_bits']} bits",
        f"  DDR regions: image {info['regions']['image_bytes']:,} B, KV {info['regions']['kv_bytes']:,} B, "
        f"scratch {info['regions']['scratch_bytes']:,} B, I/O {info['regions']['io_bytes']:,} B",
        "  wrote: " + ", ".join(str(Path(out) / f) for f in info["files"]),
    ]
    return "\n".join(lines)
