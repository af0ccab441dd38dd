"""The LM head with argmax, int8 or binary16 rows (docs/architecture.md 3.9 and 9, "LM head")."""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.fp32 import ACC_INTERLEAVE
from .axi import axi_read_signature
from .striped_read import StripedReadMaster
from .fp32 import FAdd, FMul, FromInt, Stages, leading_zeros
from .pipeline import f32_tree, f32_vec, q8_vec

__all__ = ["LmHead", "lm_head_command_layout", "MAX_COLS", "WEIGHT_FORMATS"]

#: Widest row: |x_q . row| <= 128 * 128 * cols must fit the int32 accumulator.
MAX_COLS = (2 ** 31 - 1) // (128 * 128)
#: The head formats of docs 3.9: int8 rows with a float32 scale per row, or binary16 rows.
WEIGHT_FORMATS = ("int8", "fp16")
#: Depth of the FIFO of issued read commands (scales or rows) whose data are still owed.
_KIND_DEPTH = 4


def _bits(limit: int) -> int:
    """Bits of an unsigned field holding 0 .. ``limit``."""
    return max(1, limit.bit_length())


def widen_f16(m: Module, h, name: str):
    """binary16 bits ``h`` -> the same value as binary32 bits (exact: every binary16 value, its
    subnormals included, is a normal binary32 or zero; infinities stay infinite and a NaN keeps
    its payload, as ``numpy.float16.astype(numpy.float32)`` has it). Combinational."""
    sign, exp, frac = h[15], h[10:15], h[:10]
    out = Signal(32, name=name)
    lz = leading_zeros(m, frac, f"{name}_lz")
    with m.If(exp == 31):
        m.d.comb += out.eq(Cat(Const(0, 13), frac, Const(0xFF, 8), sign))
    with m.Elif(exp != 0):
        m.d.comb += out.eq(Cat(Const(0, 13), frac, exp + 112, sign))
    with m.Elif(frac != 0):
        # frac x 2^-24 with its top set bit at 9 - lz: exponent 2^(9 - lz - 24), bias 127
        normalised = Signal(10, name=f"{name}_norm")
        m.d.comb += [normalised.eq(frac << (lz + 1)),
                     out.eq(Cat(Const(0, 13), normalised, (112 - lz)[:8], sign))]
    with m.Else():
        m.d.comb += out.eq(Cat(Const(0, 31), sign))
    return out


def lm_head_command_layout(*, addr_width: int, max_rows: int, max_cols: int) -> data.StructLayout:
    """One call: ``rows`` (vocab) rows of ``cols`` (hidden) int8 at logical byte ``rows_base``
    (row ``r`` at ``rows_base + r * cols``) and ``rows`` float32 scales at logical byte
    ``scales_base`` of a byte stream striped over the unit's ports (one port: the stream itself)
    from ``stripe_base``, ``stripe_bytes`` apart (the image section ``lm_head``:
    :class:`~tellme.hw.striped_read.StripedReadMaster`)."""
    return data.StructLayout({"stripe_base": unsigned(addr_width), "stripe_bytes": unsigned(addr_width),
                              "rows_base": unsigned(addr_width), "scales_base": unsigned(addr_width),
                              "rows": unsigned(_bits(max_rows)), "cols": unsigned(_bits(max_cols))})


class LmHead(wiring.Component):
    """The LM head: logits of one token and their argmax, from int8 rows (``weight_format``
    "int8", the default) or binary16 rows ("fp16"; see "The fp16 format" below).

    Per call (one ``cmd`` beat ``{stripe_base, stripe_bytes, rows_base, scales_base, rows,
    cols}``, see :func:`lm_head_command_layout`), with R = ``rows`` (vocab) and C = ``cols``
    (hidden), reading a byte stream striped over P = ``ports`` HP ports (logical byte a on port
    k = (a / AXI beat) mod P at ``stripe_base + k * stripe_bytes + a / P``, see
    :class:`~tellme.hw.striped_read.StripedReadMaster`; one port: at ``stripe_base + a``), one
    logical beat of B = P x ``data_width / 8`` bytes per cycle:

    - takes the token's x_q on ``x`` (``q8_vec(lanes)`` beats, ceil(C / lanes) of them, ``last``
      on the final one; values beyond C in a partial final beat are ignored) and its d_x on
      ``scale`` (one beat, binary32 bits), in any order, into an on-chip buffer of C int8 (AXI
      beat-wide words, zero beyond C);
    - then reads, through its own :class:`~tellme.hw.striped_read.StripedReadMaster`, the R x C int8 rows
      at ``rows_base`` as one contiguous byte stream (row r at ``rows_base + r C``; C need not
      be a multiple of the beat: the stream is cut into rows on chip, ceil(R C / beat) beats
      read in all, each once) and the R float32 scales at ``scales_base``, the scales in chunks
      of ``scale_beats`` beats (``scale_beats * beat / 4`` rows) each read just before the
      rows they belong to (so a FIFO of 2 chunks holds them), every AXI command in order on
      the one read master;
    - per row r: acc = sum_j x_q[j] head_q[r, j] exactly in int32 (one logical beat of row bytes,
      B int8 x int8 products, per cycle; a beat holding the end of one row
      and the start of the next takes one cycle per row), then ``logit[r] = mul(from_int(acc),
      mul(d_x, scale_r))`` in binary32 with subnormals flushed, round to nearest even
      (``golden.lm_head`` bit for bit, :mod:`tellme.hw.fp32` units);
    - ``logits``: the R logits in row order, ``lanes`` per beat (logit r in lane r mod
      ``lanes``), ``last`` on the final beat, lanes beyond R +0;
    - ``token``: one beat per call, the argmax: the first (lowest) index of the maximum logit
      in binary32 order (-0 equals +0; NaN cannot come from finite image data and ``d_x``
      unless the scale product overflows, and the canonical NaN 0x7FC00000 orders above +inf,
      so a NaN logit wins at its first index, as ``numpy.argmax`` has it), offered after the
      final logit has been formed.

    One call at a time: ``cmd`` is taken when the unit is idle, and the unit is idle again once
    ``token`` has moved (the final ``logits`` beat may still wait; the next call's logits queue
    behind it). The head is read only once x_q and d_x are in, so the read channel never waits
    on the activation.

    Ports: ``cmd`` (In stream, :func:`lm_head_command_layout`), ``x`` (In stream,
    ``q8_vec(lanes)``), ``scale`` (In stream, ``unsigned(32)``), ``logits`` (Out stream,
    ``f32_vec(lanes)``), ``token`` (Out stream, ``unsigned(32)``), ``axi`` (Out,
    ``axi_read_signature(addr_width, data_width)``), ``error`` (Out 1, sticky: an R beat came
    back SLVERR/DECERR; its data are still used, so the call completes), ``clear_error`` (In 1),
    ``busy`` (Out 1: a call is in progress, a logits beat waits or the read master owes data).

    The fp16 format (``golden.lm_head_fp16`` bit for bit): ``x`` carries the normalised float32
    vector (``f32_vec(lanes)`` beats; values beyond C in the final beat are ignored) and there is
    no ``scale`` port; the R x C binary16 head at ``rows_base`` is read as one contiguous byte
    stream (row r at ``rows_base + 2 r C``, no scale reads: ``scales_base`` is ignored), cut
    into rows by the same realigner, and each AXI word of a row is taken in ``beat / (2 lanes)``
    groups of ``lanes`` weights, one group per cycle (the ``vector_sum`` beats of
    ``tellme.contract.fp32``): widened exactly to binary32, multiplied by x (``lanes`` FMul),
    summed by a pairwise tree, accumulated into partial (group index mod 4) with one FAdd whose
    pipeline holds the four partials (a group's partial comes back from the adder, or from its
    register, by the time the group four later enters), then the four partials summed by a
    pairwise tree. Weights and x beyond C count as +0 (a group entirely beyond C, in the final
    word of a row, adds +0 to a partial that can never be -0, which changes nothing). Latency
    from a row's final group to its logit: 1 + 4 + 4 log2(lanes) + 4 + 1 + 8 + 1 cycles;
    throughput ``lanes`` weights per cycle, so R ceil(2C / beat) beat / (2 lanes) cycles a call
    (plus a cycle per row whose words straddle beats). Cost: ``lanes`` FMul and widening
    units, ``lanes`` + 3 FAdd, the x buffer of ceil(``max_cols`` / lanes) float32 words of a
    ``lanes`` beat. Requires ``lanes * 16`` to divide ``data_width``.

    Requirements (:meth:`command` checks them; the hardware does not): ``rows_base`` and
    ``scales_base`` aligned to the logical beat B, ``stripe_base`` to the AXI beat (the image
    section starts on a 4 KiB page), stripes that do not overlap, 1 <= R <= ``max_rows``, 1 <= C
    <= ``max_cols``, with ``aligned_rows`` a row of a whole number of logical beats; the x vector
    has ceil(C / lanes) beats.

    Latency: from the edge where a row's final word is taken to its logit being in the
    ``logits`` output register: :attr:`latency` cycles (``3 + tree_stages + 9``: word and x
    register, products, ``tree_stages`` = ceil(log2(beat) / 2) adder-tree registers,
    accumulator, FromInt / FMul 8, packing); ``token`` is offered in the same cycle as the final
    logits beat. A call costs about C / lanes cycles of x intake, then the AXI read latency,
    then the head.

    Throughput: one AXI beat of head bytes per cycle while the subordinate and the ``logits``
    consumer keep up: R ceil(C / beat) cycles when C is a multiple of the beat, at most R
    (ceil(C / beat) + 1) otherwise (a beat shared by two rows costs one extra cycle), plus the
    scale reads (one short burst per ``scale_beats * beat / 4`` rows). The datapath stalls as a
    whole while a full ``logits`` beat is not taken.

    Cost: B int8 multipliers and their adder tree, a 32-bit accumulator, one FromInt and two
    FMul, a byte realigner (B byte multiplexers of B inputs; none with ``aligned_rows``), the x
    buffer (ceil(``max_cols`` / B) words of B bytes), a scale FIFO (2 ``scale_beats`` logical
    beats), the P read masters, and ``lanes`` x 32 output bits.

    Parameters (keyword only): ``weight_format`` ("int8" or "fp16"), ``lanes`` (L, values per
    ``x`` beat and float32 per ``logits`` beat; int8: L bytes and the AXI beat must divide one
    another; fp16: 2L bytes must divide the AXI beat), ``data_width`` (AXI data bits,
    32..512), ``addr_width`` (13..64), ``max_cols`` (widest hidden size, at most
    :data:`MAX_COLS`), ``max_rows`` (largest vocab, below 2^32), ``scale_beats`` (logical beats
    of scales per read chunk), ``max_burst``, ``max_outstanding`` (each read master's),
    ``ports`` (P, HP ports read in lockstep, a power of two; ``axi`` is then an array of P
    ports; one port: a single ``axi``), ``aligned_rows`` (every row starts on a logical beat:
    the realigner is left out, which at P x 16 bytes a beat would cost thousands of LUTs).
    """

    def __init__(self, *, weight_format: str = "int8", lanes: int = 8, data_width: int = 128,
                 addr_width: int = 40, max_cols: int = 4096, max_rows: int = 1 << 17, scale_beats: int = 16,
                 max_burst: int = 256, max_outstanding: int = 4, ports: int = 1, aligned_rows: bool = False):
        try:
            if weight_format not in WEIGHT_FORMATS:
                raise ValueError(f"weight_format must be one of {', '.join(WEIGHT_FORMATS)}, got {weight_format!r}")
            for name, value in (("lanes", lanes), ("data_width", data_width), ("addr_width", addr_width),
                                ("max_cols", max_cols), ("max_rows", max_rows), ("scale_beats", scale_beats)):
                check_positive_int(name, value)
            if data_width not in (32, 64, 128, 256, 512):
                raise ValueError(f"data_width must be 32..512 bits (power of two), got {data_width!r}")
            # the ports' masters check ``ports`` (and max_burst, max_outstanding) now
            self.master = StripedReadMaster(ports=ports, data_width=data_width, addr_width=addr_width,
                                            max_burst=max_burst, max_outstanding=max_outstanding)
            self.master._MustUse__silence = True      # elaborated with this unit
            width = ports * data_width                 # the logical beat
            if width > 512:
                raise ValueError(f"ports x data_width must be at most 512 bits (the logical beat), "
                                 f"got {ports} x {data_width}")
            if weight_format == "fp16":
                if width % (lanes * 16) or lanes & (lanes - 1):
                    raise ValueError(f"fp16 rows: {lanes} lanes of binary16 ({lanes * 16} bits) must divide "
                                     f"ports x data_width ({width} bits), lanes a power of two")
            elif (lanes * 8) % width and width % (lanes * 8):
                raise ValueError(f"lanes int8 ({lanes * 8} bits) and ports x data_width ({width} bits) must "
                                 f"divide one another (lanes a power of two)")
            if not 13 <= addr_width <= 64:
                raise ValueError(f"addr_width must be 13..64 bits, got {addr_width!r}")
            if weight_format == "int8" and max_cols > MAX_COLS:
                raise ValueError(f"max_cols must be at most {MAX_COLS} (the int32 accumulator of "
                                 f"128 x 128 x cols), got {max_cols}")
            if max_rows >= 1 << 32:
                raise ValueError(f"max_rows must be below 2^32 (the token is 32 bits), got {max_rows}")
            beat = width // 8
            esize = 1 if weight_format == "int8" else 2
            if scale_beats * beat // 4 * esize * max_cols // beat + 2 >= 1 << 24:
                raise ValueError(f"scale_beats {scale_beats} makes a row chunk of more than 2^24 beats "
                                 f"at max_cols {max_cols}")
        except ValueError:
            # The object exists already; keep Amaranth from also warning that it was never elaborated.
            self._MustUse__silence = True
            raise
        self.weight_format, self.fp16 = weight_format, weight_format == "fp16"
        #: Bytes of one head weight.
        self.weight_bytes = esize
        self.lanes, self.data_width, self.addr_width = lanes, data_width, addr_width
        self.max_cols, self.max_rows, self.scale_beats = max_cols, max_rows, scale_beats
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.ports, self.aligned_rows = ports, bool(aligned_rows)
        #: Bytes of a logical beat (P AXI beats).
        self.beat_bytes = beat
        #: Rows per scale chunk (fp16: per read command).
        self.chunk_rows = scale_beats * beat // 4
        self.command_layout = lm_head_command_layout(addr_width=addr_width, max_rows=max_rows, max_cols=max_cols)
        super().__init__({
            "cmd": In(stream.Signature(self.command_layout)),
            "x": In(stream.Signature(f32_vec(lanes) if self.fp16 else q8_vec(lanes))),
            **({} if self.fp16 else {"scale": In(stream.Signature(unsigned(32)))}),
            "logits": Out(stream.Signature(f32_vec(lanes))),
            "token": Out(stream.Signature(unsigned(32))),
            "axi": (Out(axi_read_signature(addr_width=addr_width, data_width=data_width)) if ports == 1 else
                    Out(axi_read_signature(addr_width=addr_width, data_width=data_width)).array(ports)),
            "error": Out(1), "clear_error": In(1), "busy": Out(1),
        })

    @property
    def tree_stages(self) -> int:
        """Registers of the adder tree (one every two levels)."""
        levels = (self.beat_bytes - 1).bit_length()
        return -(-levels // 2)

    @property
    def latency(self) -> int:
        if self.fp16:
            levels = (self.lanes - 1).bit_length()
            return 1 + FMul.latency + levels * FAdd.latency + FAdd.latency + 1 + 2 * FAdd.latency + 1
        return 3 + self.tree_stages + FromInt.latency + 1 + FMul.latency + 1

    def command(self, *, rows_base: int, scales_base: int, rows: int, cols: int, stripe_base: int = 0,
                stripe_bytes: int = 0) -> dict:
        """The ``cmd`` payload (a dict of the :func:`lm_head_command_layout` fields) after checking
        the requirements of the class docstring; :class:`ValueError` names what is wrong."""
        values = dict(stripe_base=stripe_base, stripe_bytes=stripe_bytes, rows_base=rows_base,
                      scales_base=scales_base, rows=rows, cols=cols)
        for name, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if not 1 <= rows <= self.max_rows:
            raise ValueError(f"rows must be 1..{self.max_rows} (max_rows), got {rows}")
        if not 1 <= cols <= self.max_cols:
            raise ValueError(f"cols must be 1..{self.max_cols} (max_cols), got {cols}")
        beat, P = self.beat_bytes, self.ports
        if self.aligned_rows and (self.weight_bytes * cols) % beat:
            raise ValueError(f"cols: a row of {self.weight_bytes * cols} bytes is not a whole number of "
                             f"{beat}-byte logical beats (aligned_rows)")
        if stripe_base % (beat // P):
            raise ValueError(f"stripe_base {stripe_base:#x} must be a multiple of the {beat // P}-byte AXI beat")
        sections = [("rows_base", rows_base, self.weight_bytes * rows * cols)]
        if not self.fp16:                              # fp16 has no scales; scales_base is ignored
            sections.append(("scales_base", scales_base, 4 * rows))
        end = 0                                        # logical bytes read
        for name, base, size in sections:
            if base % beat:
                raise ValueError(f"{name} {base:#x} must be a multiple of the {beat}-byte logical beat")
            end = max(end, base + -(-size // beat) * beat)
        if P > 1 and stripe_bytes < end // P:
            raise ValueError(f"stripe_bytes {stripe_bytes:#x}: the stripes of {end // P:#x} bytes would overlap")
        if stripe_base + (P - 1) * stripe_bytes + end // P > 1 << self.addr_width:
            raise ValueError(f"the stripes end beyond the {self.addr_width}-bit address space")
        return values

    def elaborate(self, platform):
        m = Module()
        B, L = self.beat_bytes, self.lanes
        dw = 8 * B                                     # the logical beat's bits
        shift = B.bit_length() - 1
        n = self.scale_beats
        per_scale_beat = B // 4
        max_cols, max_rows = self.max_cols, self.max_rows
        fp16, esize = self.fp16, self.weight_bytes
        words = -(-max_cols * esize // B)              # realigned words a row uses at most
        if fp16:
            groups = B // (2 * L)                      # lanes-wide weight groups per word
            x_depth = words * groups
        elif L <= B:
            x_depth = words
        else:
            x_depth = -(-max_cols // L) * (L // B)
        # (at least two words: a one-word memory has a zero-width address, which lints as [-1:0])
        x_depth = max(x_depth, 2)
        total_width = _bits(max_rows * max_cols * esize)

        master = self.master
        m.submodules.master = master
        if self.ports == 1:
            wiring.connect(m, master.axi[0], wiring.flipped(self.axi))
        else:
            for port in range(self.ports):
                wiring.connect(m, master.axi[port], wiring.flipped(self.axi[port]))
        m.d.comb += [self.error.eq(master.error), master.clear_error.eq(self.clear_error)]

        # -- the pipeline enable: everything holds while a full logits beat is not taken
        advance = Signal()
        m.d.comb += advance.eq(~self.logits.valid | self.logits.ready)
        st = Stages(m, advance)

        # -- command registers
        p = self.cmd.payload
        rows = Signal.like(p.rows, name="rows")
        cols = Signal.like(p.cols, name="cols")
        rows_base = Signal(self.addr_width, name="rows_base")
        scales_base = Signal(self.addr_width, name="scales_base")
        stripe_base = Signal(self.addr_width, name="stripe_base")
        stripe_bytes = Signal(self.addr_width, name="stripe_bytes")
        # (held from the call's command on: the read master's stripes, stable before its first read)
        m.d.comb += [master.stripe_base.eq(stripe_base), master.stripe_bytes.eq(stripe_bytes)]
        total = Signal(total_width, name="total_bytes")
        row_bytes = cols if esize == 1 else Cat(Const(0, 1), cols)
        m.d.sync += total.eq(rows * row_bytes)         # valid from the second cycle of LOAD

        # -- x buffer state of both formats
        x_done = Signal()
        x_widx = Signal(range(x_depth + 1))
        x_left = Signal(signed(_bits(max_cols) + 2))   # cols - elements taken so far
        loading = Signal()
        start_run = Signal()
        if fp16:
            # -- x buffer: one float32 x beat of L lanes per word, +0 beyond cols
            xmem = memory.Memory(shape=data.ArrayLayout(unsigned(32), L), depth=x_depth, init=[])
            m.submodules.xmem = xmem
            x_wp, x_rp = xmem.write_port(), xmem.read_port(domain="sync")
            x_take = Signal()
            m.d.comb += [self.x.ready.eq(loading & ~x_done), x_take.eq(self.x.valid & self.x.ready),
                         x_wp.addr.eq(x_widx), x_wp.en.eq(x_take)]
            for j in range(L):
                m.d.comb += x_wp.data[j].eq(Mux(Const(j, x_left.shape()) < x_left, self.x.payload.data[j], 0))
            with m.If(x_take):
                m.d.sync += [x_widx.eq(x_widx + 1), x_left.eq(x_left - L)]
                with m.If(self.x.payload.last):
                    m.d.sync += x_done.eq(1)
        else:
            # -- x buffer: words of B int8, zero beyond cols
            xmem = memory.Memory(shape=data.ArrayLayout(signed(8), B), depth=x_depth, init=[])
            m.submodules.xmem = xmem
            x_wp = xmem.write_port(granularity=L) if L < B else xmem.write_port()
            x_rp = xmem.read_port(domain="sync")
            d_x = Signal(32, name="d_x")
            d_x_done = Signal()

            x_beat = self.x.payload
            masked = [Mux(Const(j, x_left.shape()) < x_left, x_beat.q[j], 0) for j in range(L)]

            m.d.comb += self.scale.ready.eq(loading & ~d_x_done)
            with m.If(self.scale.valid & self.scale.ready):
                m.d.sync += [d_x.eq(self.scale.payload), d_x_done.eq(1)]

            if L <= B:
                q = B // L
                x_take = Signal()
                m.d.comb += [self.x.ready.eq(loading & ~x_done), x_take.eq(self.x.valid & self.x.ready),
                             x_wp.addr.eq(x_widx)]
                if q == 1:
                    m.d.comb += x_wp.en.eq(x_take)
                    for j in range(L):
                        m.d.comb += x_wp.data[j].eq(masked[j])
                    with m.If(x_take):
                        m.d.sync += x_widx.eq(x_widx + 1)
                else:
                    part = Signal(range(q))
                    for g in range(q):
                        m.d.comb += x_wp.en[g].eq(x_take & ((part == g) | (x_beat.last & (part < g))))
                        for j in range(L):
                            m.d.comb += x_wp.data[g * L + j].eq(Mux(part == g, masked[j], 0))
                    with m.If(x_take):
                        m.d.sync += part.eq(Mux(x_beat.last | (part == q - 1), 0, part + 1))
                        with m.If(part == q - 1):
                            m.d.sync += x_widx.eq(x_widx + 1)
                with m.If(x_take):
                    m.d.sync += x_left.eq(x_left - L)
                    with m.If(x_beat.last):
                        m.d.sync += x_done.eq(1)
            else:
                q = L // B
                part = Signal(range(q))
                moving = Signal()
                m.d.comb += [moving.eq(loading & ~x_done & self.x.valid),
                             self.x.ready.eq(loading & ~x_done & (part == q - 1)),
                             x_wp.en.eq(moving), x_wp.addr.eq(x_widx)]
                beat_bytes = Cat(*[v[:8] for v in masked])
                piece = beat_bytes.word_select(part, 8 * B)
                for j in range(B):
                    m.d.comb += x_wp.data[j].eq(piece[8 * j:8 * j + 8])
                with m.If(moving):
                    m.d.sync += [x_widx.eq(x_widx + 1), part.eq(Mux(part == q - 1, 0, part + 1))]
                    with m.If(part == q - 1):
                        m.d.sync += x_left.eq(x_left - L)
                        with m.If(x_beat.last):
                            m.d.sync += x_done.eq(1)

        # -- the call
        with m.FSM(name="call") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.sync += [rows.eq(p.rows), cols.eq(p.cols), rows_base.eq(p.rows_base),
                                 scales_base.eq(p.scales_base), stripe_base.eq(p.stripe_base),
                                 stripe_bytes.eq(p.stripe_bytes), x_done.eq(0),
                                 *([] if fp16 else [d_x_done.eq(0)]), x_widx.eq(0), x_left.eq(p.cols)]
                    if L < B and not fp16:
                        m.d.sync += part.eq(0)
                    m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += loading.eq(1)
                with m.If(x_done if fp16 else x_done & d_x_done):
                    m.d.comb += start_run.eq(1)
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.token.valid & self.token.ready):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | self.logits.valid | master.busy)

        # -- read commands: scale chunk j, then the row beats up to the end of its rows
        kinds = fifo.SyncFIFO(width=1, depth=_KIND_DEPTH)      # 1: scales, 0: rows
        m.submodules.kinds = kinds
        mc = master.cmd
        scale_addr = Signal(self.addr_width)
        scale_left = Signal(_bits(-(-4 * max_rows // B)))
        rows_addr = Signal(self.addr_width)
        end_bytes = Signal(total_width)
        issued = Signal(total_width)                            # row beats issued so far
        chunk_bytes = Signal(max(total_width, _bits(esize * max_cols * self.chunk_rows)) + 1)
        m.d.comb += chunk_bytes.eq(end_bytes + row_bytes * self.chunk_rows)
        end_beats = Signal(total_width)
        m.d.comb += end_beats.eq((end_bytes + (B - 1)) >> shift)
        row_beats = Signal(total_width)
        m.d.comb += row_beats.eq(end_beats - issued)
        scale_now = Signal(range(n + 1))
        m.d.comb += scale_now.eq(Mux(scale_left < n, scale_left, n))
        with m.If(start_run):
            m.d.sync += [scale_addr.eq(scales_base), scale_left.eq((4 * rows + (B - 1)) >> shift),
                         rows_addr.eq(rows_base), end_bytes.eq(0), issued.eq(0)]
        issue = Signal()
        m.d.comb += [issue.eq(mc.valid & mc.ready), kinds.w_en.eq(issue)]
        with m.FSM(name="issue"):
            with m.State("IDLE"):
                with m.If(start_run):
                    m.next = "SCALES"
            with m.State("SCALES"):
                if fp16:
                    # no scales: the state only moves the end of the next row read a chunk on
                    chunk_done = 1
                else:
                    m.d.comb += [mc.valid.eq(kinds.w_rdy), mc.payload.addr.eq(scale_addr),
                                 mc.payload.beats.eq(scale_now), kinds.w_data.eq(1)]
                    chunk_done = issue
                with m.If(chunk_done):
                    m.d.sync += [scale_addr.eq(scale_addr + n * B), scale_left.eq(scale_left - scale_now),
                                 end_bytes.eq(Mux(chunk_bytes >= total, total, chunk_bytes))]
                    m.next = "ROWS"
            with m.State("ROWS"):
                m.d.comb += [mc.payload.addr.eq(rows_addr), mc.payload.beats.eq(row_beats), kinds.w_data.eq(0),
                             mc.valid.eq((row_beats != 0) & kinds.w_rdy)]
                with m.If(issue | (row_beats == 0)):
                    with m.If(issue):
                        m.d.sync += [rows_addr.eq(rows_addr + (row_beats << shift)), issued.eq(end_beats)]
                    with m.If(scale_left == 0):
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "SCALES"

        # -- read data: scales to their FIFO, row beats to the realigner
        if not fp16:
            scales = fifo.SyncFIFO(width=dw, depth=2 * n)
            m.submodules.scales = scales
        rd = master.rdata
        row_valid, row_ready = Signal(), Signal()
        if fp16:
            m.d.comb += [row_valid.eq(rd.valid & kinds.r_rdy), rd.ready.eq(kinds.r_rdy & row_ready),
                         kinds.r_en.eq(rd.valid & rd.ready & rd.payload.last)]
        else:
            kind = kinds.r_data[0]
            m.d.comb += [
                row_valid.eq(rd.valid & kinds.r_rdy & ~kind),
                scales.w_data.eq(rd.payload.data),
                scales.w_en.eq(rd.valid & kinds.r_rdy & kind),
                rd.ready.eq(kinds.r_rdy & Mux(kind, scales.w_rdy, row_ready)),
                kinds.r_en.eq(rd.valid & rd.ready & rd.payload.last),
            ]

        # -- realigner: row words (word k of a row = its bytes kB .. kB+B-1, from two beats)
        hold = Signal(dw, name="hold")                 # the beat holding the word's first byte
        hold_valid = Signal()
        off = Signal(range(B), name="off")             # byte of the row's start in its first beat
        rem = Signal(len(row_bytes), name="rem")       # bytes of the row from this word on
        k = Signal(range(max(words, 2)), name="word")
        rows_left = Signal.like(rows, name="rows_left")
        sub = Signal(range(max(per_scale_beat, 2)), name="scale_sub")
        cur = rd.payload.data
        length = Signal(shift + 1)
        m.d.comb += length.eq(Mux(rem < B, rem, B))
        last_word, final_row, need_cur, fire = Signal(), Signal(), Signal(), Signal()
        end_off = Signal(shift + 2)
        m.d.comb += [
            last_word.eq(rem <= B),
            final_row.eq(rows_left == 1),
            need_cur.eq(off + length > B),
            end_off.eq(off + rem),
        ]
        if fp16:
            # a word moves on after its last group of L weights (``group``) has gone in
            step = Signal()
            group = Signal(range(max(groups, 2)), name="group")
            m.d.comb += [step.eq((rows_left != 0) & hold_valid & (~need_cur | row_valid) & advance),
                         fire.eq(step & (group == groups - 1))]
        else:
            m.d.comb += fire.eq((rows_left != 0) & hold_valid & (~need_cur | row_valid) & advance
                                & (~last_word | scales.r_rdy))
        advance_hold = Signal()
        m.d.comb += advance_hold.eq(~last_word | (~final_row & (end_off >= B)))
        m.d.comb += row_ready.eq((rows_left != 0)
                                 & (~hold_valid | (fire & (advance_hold | (last_word & final_row & need_cur)))))
        taken = Signal()
        m.d.comb += taken.eq(row_valid & row_ready)
        with m.If(taken):
            m.d.sync += [hold.eq(cur), hold_valid.eq(1)]
        with m.If(fire):
            with m.If(last_word):
                m.d.sync += [rows_left.eq(rows_left - 1), rem.eq(row_bytes), k.eq(0), off.eq(end_off[:shift])]
                with m.If(advance_hold & ~taken):
                    m.d.sync += hold_valid.eq(0)
                with m.If(final_row):
                    m.d.sync += hold_valid.eq(0)
            with m.Else():
                m.d.sync += [rem.eq(rem - B), k.eq(k + 1)]
                with m.If(~taken):
                    m.d.sync += hold_valid.eq(0)
        with m.If(start_run):
            m.d.sync += [rows_left.eq(rows), rem.eq(row_bytes), k.eq(0), off.eq(0), hold_valid.eq(0), sub.eq(0)]

        if not fp16:
            # the row's scale: lane ``sub`` of the FIFO's head beat, popped after its last lane
            scale_word = scales.r_data
            if per_scale_beat == 1:
                row_scale = scale_word[:32]
                pop = fire & last_word
            else:
                row_scale = scale_word.word_select(sub, 32)
                pop = fire & last_word & ((sub == per_scale_beat - 1) | final_row)
                with m.If(fire & last_word):
                    m.d.sync += sub.eq(Mux(pop, 0, sub + 1))
            m.d.comb += scales.r_en.eq(pop)

        aligned = Signal(dw)
        if self.aligned_rows:
            m.d.comb += aligned.eq(hold)               # rows start on a beat: off stays 0
        else:
            m.d.comb += aligned.eq(Cat(hold, cur).bit_select(Cat(Const(0, 3), off), dw))

        if fp16:
            logit, row_v, final = self._fp16_logits(m, st, advance, aligned=aligned, x=x_rp, group=group,
                                                     step=step, fire=fire, k=k, rem=rem, last_word=last_word,
                                                     final_row=final_row, start_run=start_run, cols=cols)
        else:
            logit, row_v, final = self._int8_logits(m, st, advance, aligned=aligned, x_rp=x_rp, fire=fire, k=k,
                                                     last_word=last_word, final_row=final_row,
                                                     row_scale=row_scale, d_x=d_x)

        # -- output: pack logits into beats; argmax
        out = self.logits.payload
        count = Signal(range(max(L, 2)), name="lane")
        with m.If(self.logits.valid & self.logits.ready):
            m.d.sync += self.logits.valid.eq(0)
        with m.If(advance & row_v):
            with m.If(count == 0):
                m.d.sync += [out.data[j].eq(logit if j == 0 else 0) for j in range(L)]
            for j in range(1, L):
                with m.If(count == j):
                    m.d.sync += out.data[j].eq(logit)
            with m.If((count == L - 1) | final):
                m.d.sync += [self.logits.valid.eq(1), out.last.eq(final), count.eq(0)]
            with m.Else():
                m.d.sync += count.eq(count + 1)

        def key(x):
            """Integer key of binary32 order (-0 as +0; NaN above +inf when positive)."""
            mag = x[:31]
            return Mux(x[31] & (mag != 0), Cat(~mag, Const(0, 1)), Cat(mag, Const(1, 1)))

        index = Signal(32, name="row_index")
        best_key = Signal(32, name="best_key")
        best = Signal(32, name="best_index")
        new_key = Signal(32)
        better = Signal()
        m.d.comb += [new_key.eq(key(logit)), better.eq((index == 0) | (new_key > best_key))]
        with m.If(self.token.valid & self.token.ready):
            m.d.sync += self.token.valid.eq(0)
        with m.If(advance & row_v):
            with m.If(better):
                m.d.sync += [best_key.eq(new_key), best.eq(index)]
            m.d.sync += index.eq(Mux(final, 0, index + 1))
            with m.If(final):
                m.d.sync += [self.token.valid.eq(1), self.token.payload.eq(Mux(better, index, best))]
        return m

    def _int8_logits(self, m, st, advance, *, aligned, x_rp, fire, k, last_word, final_row, row_scale, d_x):
        """The int8 datapath from the realigned row words to the logits: (logit, its valid, final row)."""
        B = self.beat_bytes
        # -- stage 1: the word, its x word (memory read), flags
        m.d.comb += [x_rp.addr.eq(k), x_rp.en.eq(advance)]
        v1 = st.reg(fire, valid=True, name="s1_valid")
        head1 = st.reg(aligned, name="s1_head")
        first1 = st.reg(k == 0, name="s1_first")
        last1 = st.reg(last_word, name="s1_last")
        final1 = st.reg(final_row & last_word, name="s1_final")
        scale1 = st.reg(row_scale, name="s1_scale")

        # -- stage 2: products
        products = []
        for j in range(B):
            prod = Signal(signed(16), name=f"prod{j}")
            m.d.comb += prod.eq(head1[8 * j:8 * j + 8].as_signed() * x_rp.data[j])
            products.append(st.reg(prod, name=f"s2_prod{j}"))
        v, first, last, final, scl = v1, first1, last1, final1, scale1
        v, first, last, final, scl = (st.reg(v, valid=True), st.reg(first), st.reg(last), st.reg(final),
                                      st.reg(scl))

        # -- adder tree, a register every two levels
        level, depth = products, 0
        while len(level) > 1:
            if len(level) % 2:
                level = level + [Const(0, signed(2))]
            level = [level[i] + level[i + 1] for i in range(0, len(level), 2)]
            depth += 1
            if depth % 2 == 0 or len(level) == 1:
                level = [st.reg(x) for x in level]
                v, first, last, final, scl = (st.reg(v, valid=True), st.reg(first), st.reg(last), st.reg(final),
                                              st.reg(scl))
        word_sum = level[0]

        # -- accumulator: the row's int32 sum after its last word
        acc = Signal(signed(32), name="acc")
        with m.If(advance & v):
            m.d.sync += acc.eq(Mux(first, 0, acc) + word_sum)
        row_v = st.reg(v & last, valid=True, name="row_valid")
        final, scl = st.reg(final), st.reg(scl)

        # -- binary32: from_int(acc) * (d_x * scale)
        conv, comb, mul = FromInt(), FMul(), FMul()
        m.submodules.from_int, m.submodules.comb, m.submodules.mul = conv, comb, mul
        m.d.comb += [conv.en.eq(advance), comb.en.eq(advance), mul.en.eq(advance),
                     conv.a.eq(acc), comb.a.eq(d_x), comb.b.eq(scl),
                     # from_int takes 3 cycles and the scale product 4: one stage evens them out
                     mul.a.eq(st.reg(conv.o)), mul.b.eq(comb.o)]
        for _ in range(FromInt.latency + 1 + FMul.latency):
            row_v, final = st.reg(row_v, valid=True), st.reg(final)
        logit = mul.o
        return logit, row_v, final

    def _fp16_logits(self, m, st, advance, *, aligned, x, group, step, fire, k, rem, last_word, final_row,
                     start_run, cols):
        """The fp16 datapath from the realigned row words to the logits: (logit, its valid, final
        row). A word's ``groups`` groups of L weights enter one per ``step``."""
        L, B = self.lanes, self.beat_bytes
        groups = B // (2 * L)
        zero32 = Const(0, 32)
        P = ACC_INTERLEAVE                              # partials (fp32.vector_sum), a power of two

        # -- the group in the row (its index mod P picks the partial), and the x word it uses
        index = Signal(range(max(-(-self.max_cols // L) + groups, P + 1)), name="group_index")
        with m.If(step):
            m.d.sync += group.eq(Mux(group == groups - 1, 0, group + 1))
            m.d.sync += index.eq(Mux(fire & last_word, 0, index + 1))
        with m.If(start_run):
            m.d.sync += [group.eq(0), index.eq(0)]
        # groups of a row (the same for every row: cols holds for the call), so partials no row
        # reaches read +0
        row_groups = Signal(range(self.max_cols * 2 // B * groups + groups + 1))
        m.d.comb += row_groups.eq(((Cat(Const(0, 1), cols) + (B - 1)) >> (B.bit_length() - 1)) * groups)
        used = [row_groups > i for i in range(P)]
        m.d.comb += [x.addr.eq(k * groups + group), x.en.eq(advance)]
        weights = aligned.word_select(group, 16 * L) if groups > 1 else aligned
        # element j of the group lies in the row when 2 (group L + j) < rem (bytes from this word on)
        inside = [group * L + j < (rem >> 1) for j in range(L)]

        # -- stage 1: the group's weights (+0 outside the row), the x word read alongside
        v = st.reg(step, valid=True, name="g1_valid")
        w16 = [st.reg(Mux(inside[j], weights[16 * j:16 * j + 16], 0), name=f"g1_w{j}") for j in range(L)]
        live = st.reg(Cat(*inside), name="g1_inside")
        phase = st.reg(index[:P.bit_length() - 1], name="g1_phase")
        first = st.reg(index < P, name="g1_first")       # the row's first P groups start from +0
        last, final = st.reg(fire & last_word, name="g1_last"), st.reg(fire & last_word & final_row, name="g1_final")

        # -- products fp32(w) * x, then the pairwise tree of the group
        products = []
        for j in range(L):
            mul = FMul()
            m.submodules[f"wx{j}"] = mul
            m.d.comb += [mul.en.eq(advance), mul.a.eq(widen_f16(m, w16[j], f"w32_{j}")),
                         mul.b.eq(Mux(live[j], x.data[j], zero32))]
            products.append(mul.o)
        group_sum, tree_latency = f32_tree(m, products, FAdd, advance, "group_tree")
        for _ in range(FMul.latency + tree_latency):
            v, phase, first, last, final = st.reg(v, valid=True), *st.regs(phase, first, last, final)

        # -- P partials in the accumulator's pipeline (P = its latency): a group adds to what the
        # group P before left (+0 for the row's first P); that sum is leaving the adder now or
        # sits in its partial register
        assert FAdd.latency == P
        partials = [Signal(32, name=f"partial{i}") for i in range(P)]
        acc = FAdd()
        m.submodules.accumulator = acc
        out_v, out_phase, out_last, out_final = v, phase, last, final
        for _ in range(FAdd.latency):
            out_v, out_phase, out_last, out_final = (st.reg(out_v, valid=True), *st.regs(out_phase, out_last,
                                                                                          out_final))
        stored = Array(partials)[phase]
        m.d.comb += [acc.en.eq(advance), acc.a.eq(group_sum),
                     acc.b.eq(Mux(first, zero32, Mux(out_v & (out_phase == phase), acc.o, stored)))]
        with m.If(advance & out_v):
            m.d.sync += Array(partials)[out_phase].eq(acc.o)

        # -- after the row's last group: its P partials, then their pairwise tree
        finals = [st.reg(Mux(used[i], Mux(out_phase == i, acc.o, partials[i]), zero32), name=f"row_partial{i}")
                  for i in range(P)]
        row_v, final = st.reg(out_v & out_last, valid=True, name="row_valid"), st.reg(out_final)
        logit, final_latency = f32_tree(m, finals, FAdd, advance, "partial_tree")
        for _ in range(final_latency):
            row_v, final = st.reg(row_v, valid=True), st.reg(final)
        return logit, row_v, final
