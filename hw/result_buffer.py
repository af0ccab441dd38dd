"""A FIFO of TLMM result rows between the TLMM and the Dequant: the MATMUL path's elastic buffer."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .tlmm import ACC_BITS, result_layout

__all__ = ["ResultBuffer"]

#: The members of a result row that are the same on every row of a command, kept once per command.
PER_COMMAND = ("d_x", "w_mult", "tokens")


class ResultBuffer(wiring.Component):
    """Holds up to ``depth`` TLMM result rows (:func:`~tellme.hw.tlmm.result_layout` of T
    tokens) and passes them on unchanged, in order.

    Why: a tile pass's rows all leave the TLMM during its last block, one per lane word, while
    the narrowed Dequant behind it takes one row per T / ``dequant_lanes`` cycles; without room
    for them the TLMM waits in every last block (at the kv260 settings 4 cycles per row instead
    of 1: three quarters of a pass's last block lost). With a tile's rows buffered the Dequant
    drains them while the TLMM runs the next pass's first blocks.

    Storage: per row only what varies within a command: each token's accumulator in
    ``acc_bits`` bits (the TLMM's own accumulator width; rows leave sign-extended to ACC_BITS)
    and ``last``, in one memory of ``depth`` words (block RAM); ``d_x``, ``w_mult`` and ``tokens``, the same
    for every row of a command, in a second FIFO of ``commands`` entries, written with a
    command's first row and read with its last. The input takes a command's first row only
    while that FIFO has room, so at most ``commands`` commands are inside at once.

    Ports: ``i`` (In stream), ``o`` (Out stream), both ``result_layout(tokens)``. The input's
    ``d_x``, ``w_mult`` and ``tokens`` must be the same on every row of a command (rows up to and including
    the one with ``last``), and its accumulators must fit ``acc_bits`` signed bits.

    Latency: a row taken at an edge is offered on ``o`` two cycles later (the FIFO's read
    register). Throughput: one row per cycle on each side. Cost: ``depth`` x (T x acc_bits + 1)
    bits of memory, ``commands`` x the per-command members' bits (``PER_COMMAND``: (T + 1) x 32
    + the token count's) of registers.

    Parameters (keyword-only): ``tokens`` T, ``acc_bits`` (at most ACC_BITS), ``depth``,
    ``commands`` (default 4).
    """

    def __init__(self, *, tokens: int, acc_bits: int, depth: int, commands: int = 4):
        for name, value in (("tokens", tokens), ("acc_bits", acc_bits), ("depth", depth), ("commands", commands)):
            check_positive_int(name, value)
        if acc_bits > ACC_BITS:
            raise ValueError(f"acc_bits must be at most {ACC_BITS}, got {acc_bits}")
        self.tokens, self.acc_bits, self.depth, self.commands = tokens, acc_bits, depth, commands
        super().__init__({"i": In(stream.Signature(result_layout(tokens))),
                          "o": Out(stream.Signature(result_layout(tokens)))})

    def elaborate(self, platform):
        m = Module()
        T, A = self.tokens, self.acc_bits
        m.submodules.rows = rows = fifo.SyncFIFOBuffered(width=T * A + 1, depth=self.depth)
        row_layout = result_layout(T)
        per_command = data.StructLayout({name: row_layout[name].shape for name in PER_COMMAND})
        m.submodules.scales = scales = fifo.SyncFIFOBuffered(width=per_command.size, depth=self.commands)
        scales_in, scales_out = Signal(per_command), Signal(per_command)

        i, o = self.i, self.o
        first = Signal(init=1)                   # the next input row starts a command
        room = rows.w_rdy & (~first | scales.w_rdy)
        m.d.comb += [
            i.ready.eq(room),
            rows.w_en.eq(i.valid & room),
            rows.w_data.eq(Cat(*(i.payload.acc[t][:A] for t in range(T)), i.payload.last)),
            scales.w_en.eq(i.valid & room & first),
            *(scales_in[name].eq(i.payload[name]) for name in PER_COMMAND),
            scales.w_data.eq(scales_in),
        ]
        with m.If(i.valid & i.ready):
            m.d.sync += first.eq(i.payload.last)

        # out: a row with its command's scales (the scales FIFO's head belongs to the oldest
        # command with rows inside, written with that command's first row)
        out_last = rows.r_data[T * A]
        m.d.comb += [
            o.valid.eq(rows.r_rdy & scales.r_rdy),
            *(o.payload.acc[t].eq(rows.r_data[t * A:(t + 1) * A].as_signed()) for t in range(T)),
            o.payload.last.eq(out_last),
            scales_out.eq(scales.r_data),
            *(o.payload[name].eq(scales_out[name]) for name in PER_COMMAND),
            rows.r_en.eq(o.valid & o.ready),
            scales.r_en.eq(o.valid & o.ready & out_last),
        ]
        return m
