"""Activation movers: float32 rows between the DDR scratch region and the element-wise streams.

The prefill schedule (docs/architecture.md 6 and 8) keeps a chunk's activations in the scratch
region as float32 rows, token-major: row ``t`` of a C x N buffer starts at ``base + t *
row_stride`` bytes. :class:`ScratchReader` streams such rows out of DDR as
:func:`~tellme.hw.pipeline.f32_vec` beats; :class:`ScratchWriter` writes an ``f32_vec`` stream
back. A stride larger than the row lets a unit address a column block of a buffer: the attention
unit writes one head's output (hd floats) into row ``t`` at byte offset ``head * hd * 4`` with
``base = buffer + head * hd * 4``, ``row_bytes = hd * 4``, ``row_stride = N * 4``.

Beats and bytes: element ``j`` of a row is the float32 at byte ``4 j`` of the row (little-endian,
as the AXI data bus carries it); a beat of ``lanes`` elements holds elements ``lanes * i ..
lanes * i + lanes - 1`` with element ``lanes * i`` in lane 0. The beat width ``lanes * 32`` and
the AXI data width must divide one another (``lanes * 32 = k * data_width`` or ``data_width = k
* lanes * 32``); the movers split or gather AXI beats accordingly.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .axi import axi_read_signature, axi_write_signature, check_data_width
from .axi_read import AxiReadMaster
from .axi_write import AxiWriteMaster
from .pipeline import f32_vec

__all__ = ["ScratchReader", "ScratchWriter", "scratch_command_layout",
           "ROWS_WIDTH", "ROW_BYTES_WIDTH", "ROW_STRIDE_WIDTH"]

#: Widths of the command fields ``rows``, ``row_bytes`` and ``row_stride``.
ROWS_WIDTH = 16
ROW_BYTES_WIDTH = 24
ROW_STRIDE_WIDTH = 24


def scratch_command_layout(addr_width: int) -> data.StructLayout:
    """``rows`` rows of ``row_bytes`` bytes, row ``t`` at byte address ``base + t * row_stride``."""
    return data.StructLayout({"base": unsigned(addr_width), "rows": unsigned(ROWS_WIDTH),
                              "row_bytes": unsigned(ROW_BYTES_WIDTH),
                              "row_stride": unsigned(ROW_STRIDE_WIDTH)})


class _Mover(wiring.Component):
    """Parameter checks, ports and command helpers shared by the reader and the writer: the
    ports are ``cmd``, the subclass's stream (and ``done``, :meth:`_own_members`), ``axi``,
    ``error``, ``clear_error`` and ``busy``."""

    def __init__(self, *, lanes: int = 8, data_width: int = 128, addr_width: int = 40,
                 max_burst: int = 256, max_outstanding: int = 4):
        try:
            self._check(lanes=lanes, data_width=data_width, addr_width=addr_width)
            # The master checks max_burst/max_outstanding now rather than at elaboration.
            self.master = self._master_class(data_width=data_width, addr_width=addr_width,
                                             max_burst=max_burst, max_outstanding=max_outstanding)
            self.master._MustUse__silence = True   # elaborated with this unit (which warns if not)
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused object
            raise
        self.lanes, self.data_width, self.addr_width = lanes, data_width, addr_width
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.beat_bytes = data_width // 8
        self.vec_bytes = lanes * 4
        #: The granule of ``row_bytes``: one AXI beat or one stream beat, whichever is larger.
        self.row_unit = max(self.beat_bytes, self.vec_bytes)
        super().__init__({
            "cmd": In(stream.Signature(scratch_command_layout(addr_width))),
            **self._own_members(lanes),
            "axi": Out(self._axi_signature(addr_width=addr_width, data_width=data_width)),
            "error": Out(1), "clear_error": In(1), "busy": Out(1),
        })

    @staticmethod
    def _check(*, lanes, data_width, addr_width):
        check_data_width(data_width)
        check_positive_int("lanes", lanes)
        bits = lanes * 32
        if bits % data_width and data_width % bits:
            raise ValueError(f"lanes * 32 ({bits} bits) and data_width ({data_width} bits) must divide "
                             f"one another (e.g. lanes {data_width // 32 or 1} or a multiple of it, or a "
                             f"power of two below it)")
        if not isinstance(addr_width, int) or not 13 <= addr_width <= 64:
            raise ValueError(f"addr_width must be 13..64 bits, got {addr_width!r}")

    @property
    def ratio(self) -> int:
        """``data_width / (32 lanes)`` when the AXI beat is at least as wide as a stream beat (it
        carries that many stream beats), else ``-(32 lanes / data_width)`` (a stream beat spans
        that many AXI beats)."""
        bits = self.lanes * 32
        return self.data_width // bits if self.data_width >= bits else -(bits // self.data_width)

    def command(self, *, base: int, rows: int, row_bytes: int, row_stride: int) -> dict:
        """Return the command payload (a dict of the :func:`scratch_command_layout` fields) after
        checking it: ``base`` and ``row_stride`` aligned to the AXI beat, ``row_bytes`` whole
        beats of both widths (a multiple of :attr:`row_unit`), every field in range and the rows
        inside the address space. The hardware does not check commands: the low bits of a
        misaligned ``base``/``row_stride`` are dropped by the AXI master, and a ``row_bytes``
        that is not a multiple of :attr:`row_unit` misframes the stream."""
        values = dict(base=base, rows=rows, row_bytes=row_bytes, row_stride=row_stride)
        for name, value in values.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        limits = {"base": self.addr_width, "rows": ROWS_WIDTH, "row_bytes": ROW_BYTES_WIDTH,
                  "row_stride": ROW_STRIDE_WIDTH}
        for name, width in limits.items():
            if values[name] >> width:
                raise ValueError(f"{name} {values[name]:#x} does not fit its {width}-bit field")
        if base % self.beat_bytes or row_stride % self.beat_bytes:
            raise ValueError(f"base {base:#x} and row_stride {row_stride:#x} must be multiples of the "
                             f"{self.beat_bytes}-byte AXI beat")
        if row_bytes % self.row_unit:
            raise ValueError(f"row_bytes ({row_bytes}) must be whole beats: a multiple of {self.row_unit} "
                             f"bytes ({self.lanes} lanes of float32, {self.data_width}-bit AXI data)")
        if rows and row_bytes and base + (rows - 1) * row_stride + row_bytes > 1 << self.addr_width:
            raise ValueError(f"the rows end beyond the {self.addr_width}-bit address space")
        return values

    def _row_walker(self, m, master):
        """The AXI master (a submodule, its AXI port and error bits wired to this mover's) and
        the command register and row loop shared by both movers: in state ``ISSUE`` one
        master command per row (``addr``, ``row_bytes / beat_bytes`` beats), ``addr`` stepping by
        ``row_stride``. Returns the signals the FSM uses: ``start`` (to drive: latch ``cmd``'s
        payload now), ``empty`` (the offered command moves no byte), ``issue`` (a row command
        handshake with the master), ``final`` (the row being offered is the command's last)."""
        m.submodules.master = master
        wiring.connect(m, master.axi, wiring.flipped(self.axi))
        m.d.comb += [self.error.eq(master.error), master.clear_error.eq(self.clear_error)]
        master_cmd = master.cmd
        shift = self.beat_bytes.bit_length() - 1
        addr = Signal(self.addr_width)
        rows_left = Signal(ROWS_WIDTH)
        beats = Signal(ROW_BYTES_WIDTH)
        stride = Signal(ROW_STRIDE_WIDTH)
        start, issue, final, empty = Signal(), Signal(), Signal(), Signal()
        p = self.cmd.payload
        m.d.comb += empty.eq((p.rows == 0) | (p.row_bytes[shift:] == 0))
        with m.If(start):
            m.d.sync += [addr.eq(p.base), rows_left.eq(p.rows), beats.eq(p.row_bytes[shift:]),
                         stride.eq(p.row_stride)]
        m.d.comb += [master_cmd.payload.addr.eq(addr), master_cmd.payload.beats.eq(beats),
                     issue.eq(master_cmd.valid & master_cmd.ready), final.eq(rows_left == 1)]
        with m.If(issue):
            m.d.sync += [addr.eq(addr + stride), rows_left.eq(rows_left - 1)]
        return start, empty, issue, final

    def _issue_rows(self, m, master, start, empty, issue, final, *, name, room=None, on_take=()):
        """The command loop of a mover that takes its next command as soon as the current one's
        rows are all handed to the master (and ``room``, if given, allows): ``IDLE`` offers
        ``cmd.ready`` and latches a command (``start``, and the statements ``on_take``), ``ISSUE``
        gives the master one command per row. Returns the FSM."""
        with m.FSM(name=name) as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1 if room is None else room)
                with m.If(self.cmd.valid if room is None else self.cmd.valid & room):
                    m.d.comb += [start.eq(1), *on_take]
                    with m.If(~empty):
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += master.cmd.valid.eq(1)
                with m.If(issue & final):
                    m.next = "IDLE"
        return fsm


class ScratchReader(_Mover):
    """Reads float32 rows from DDR and streams them as ``f32_vec(lanes)`` beats, ``last`` on
    each row's final beat.

    A command ``{base, rows, row_bytes, row_stride}`` (:func:`scratch_command_layout`) reads
    rows ``t = 0 .. rows-1``, row ``t`` being the ``row_bytes`` bytes at ``base + t *
    row_stride`` (rows may overlap or repeat: ``row_stride`` 0 reads one row ``rows`` times).
    Each row is one command of an :class:`~tellme.hw.axi_read.AxiReadMaster` (INCR bursts of at
    most ``max_burst`` beats, cut at 4 KiB boundaries, up to ``max_outstanding`` in flight), so
    every byte of every row is read exactly once per command and nothing else is read. A
    command with ``rows`` or ``row_bytes`` zero is taken and does nothing. ``base`` and
    ``row_stride`` must be aligned to the AXI beat and ``row_bytes`` a multiple of
    :attr:`row_unit` (see :meth:`command`, which checks a command in Python).

    The next command is taken as soon as the last row of the current one has been handed to
    the master, so consecutive commands stream back to back.

    Latency: a command taken at cycle c puts its first AR on the bus at c + 3 (when the master
    is idle); R beats reach ``o`` without a register (``o.valid`` is the R channel's valid
    gated by the split/gather counter, never a function of ``o.ready``). Throughput, when the
    subordinate and the consumer never stall: one beat per cycle on the narrower side, i.e. one
    stream beat per cycle when the AXI beat is wider (the R channel then runs at ``32 lanes /
    data_width`` beats per cycle), one AXI beat per cycle otherwise (a stream beat every ``32
    lanes / data_width`` cycles). A row costs about 3 cycles of AR issue, so rows of fewer than
    ~3 beats, or more rows of one burst than ``max_outstanding`` within the read latency, lose
    rate.

    Ports: ``cmd`` (In stream, scratch_command_layout), ``o`` (Out stream, f32_vec(lanes)),
    ``axi`` (Out, AXI4 read manager), ``error`` (Out 1, sticky: an R beat came back with
    SLVERR/DECERR; its data are still delivered), ``clear_error`` (In 1), ``busy`` (Out 1: a
    command is being issued or read data are still owed).

    Cost: an :class:`~tellme.hw.axi_read.AxiReadMaster`, the row walker (row counter, row
    address), a part counter and, when an AXI beat is narrower than a stream beat, a gather
    register of the first k-1 AXI beats.

    Parameters (keyword only): ``lanes`` (float32 elements per stream beat), ``data_width``
    (AXI data bits), ``addr_width``, ``max_burst``, ``max_outstanding`` (the AXI master's).
    """

    _master_class = AxiReadMaster
    _axi_signature = staticmethod(axi_read_signature)

    @staticmethod
    def _own_members(lanes):
        return {"o": Out(stream.Signature(f32_vec(lanes)))}

    def elaborate(self, platform):
        m = Module()
        dw, vw = self.data_width, self.lanes * 32
        master = self.master
        start, empty, issue, final = self._row_walker(m, master)
        fsm = self._issue_rows(m, master, start, empty, issue, final, name="reader")
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | master.busy)

        # -- AXI beats -> stream beats
        beat, out = master.rdata.payload, self.o.payload
        ratio = self.ratio
        if ratio == 1:
            m.d.comb += [self.o.valid.eq(master.rdata.valid), master.rdata.ready.eq(self.o.ready),
                         out.data.eq(beat.data), out.last.eq(beat.last)]
        elif ratio > 1:
            # split: the AXI beat stays on R until its last part has moved
            part = Signal(range(ratio))
            at_end = part == ratio - 1
            m.d.comb += [self.o.valid.eq(master.rdata.valid),
                         master.rdata.ready.eq(self.o.ready & at_end),
                         out.data.eq(beat.data.word_select(part, vw)),
                         out.last.eq(beat.last & at_end)]
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += part.eq(Mux(at_end, 0, part + 1))
        else:
            # gather: the first k-1 AXI beats go to a register, the k-th completes the output beat
            k = -ratio
            part = Signal(range(k))
            at_end = part == k - 1
            gather = Signal((k - 1) * dw)
            m.d.comb += [self.o.valid.eq(master.rdata.valid & at_end),
                         master.rdata.ready.eq(~at_end | self.o.ready),
                         out.data.eq(Cat(gather, beat.data)),
                         out.last.eq(beat.last)]
            with m.If(master.rdata.valid & master.rdata.ready):
                with m.If(at_end):
                    m.d.sync += part.eq(0)
                with m.Else():
                    m.d.sync += [part.eq(part + 1), gather.eq(Cat(gather[dw:], beat.data))]
        return m


class ScratchWriter(_Mover):
    """Writes an ``f32_vec(lanes)`` stream into float32 rows in DDR.

    A command ``{base, rows, row_bytes, row_stride}`` (:func:`scratch_command_layout`) writes
    rows ``t = 0 .. rows-1``, row ``t`` being the ``row_bytes`` bytes at ``base + t *
    row_stride``, from the next ``rows * row_bytes / (4 lanes)`` beats of ``i`` in order (the
    beats' ``last`` bit is not used: the command alone decides where rows end). Each row is one
    command of an :class:`~tellme.hw.axi_write.AxiWriteMaster` (INCR bursts, cut at 4 KiB, all
    byte strobes set), so exactly the bytes of the rows are written, once each. ``base`` and
    ``row_stride`` must be aligned to the AXI beat, ``row_bytes`` a multiple of :attr:`row_unit`
    (:meth:`command` checks a command in Python); rows should not overlap (overlapping bytes end
    up with the later row's data only if the subordinate keeps write order).

    ``done`` pulses for one cycle when every write of the command has been acknowledged (its
    last B response), after which the next command is taken (the writer handles one command at
    a time, so ``done`` always belongs to the command taken last). A command with ``rows`` or
    ``row_bytes`` zero is taken and signals ``done`` one cycle later.

    With ``max_commands`` k > 1 the next command is taken as soon as the current one's rows are
    all handed to the master, while up to k commands await their responses; ``done`` then
    pulses once per command, in the order they were taken, when its last row is acknowledged
    (an empty command's ``done`` follows those of the commands before it). A producer whose
    commands are short (a few beats each) then keeps the W channel busy instead of waiting one
    write-response latency per command.

    Latency: a command taken at cycle c puts its first AW on the bus at c + 3; W beats come
    straight from ``i`` (no register; ``i.ready`` follows WREADY and the master's burst
    queue). Throughput, when neither the subordinate nor the producer stalls: one beat per cycle
    on the narrower side (as :class:`ScratchReader`); between commands the pipeline drains for
    the write-response latency.

    Ports: ``cmd`` (In stream, scratch_command_layout), ``i`` (In stream, f32_vec(lanes)),
    ``axi`` (Out, AXI4 write manager), ``done`` (Out 1), ``busy`` (Out 1: a command is taken
    and not yet done), ``error`` (Out 1, sticky: a B response was SLVERR/DECERR),
    ``clear_error`` (In 1).

    Cost: an :class:`~tellme.hw.axi_write.AxiWriteMaster`, the row walker, a count of row
    commands awaiting their responses, a part counter and, when a stream beat is narrower than
    an AXI beat, a gather register of the first k-1 stream beats.

    Parameters (keyword only): as :class:`ScratchReader`, and ``max_commands`` (default 1).
    """

    _master_class = AxiWriteMaster
    _axi_signature = staticmethod(axi_write_signature)

    def __init__(self, *, max_commands: int = 1, **kwargs):
        try:
            check_positive_int("max_commands", max_commands)
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused object
            raise
        self.max_commands = max_commands
        super().__init__(**kwargs)

    @staticmethod
    def _own_members(lanes):
        return {"i": In(stream.Signature(f32_vec(lanes))), "done": Out(1)}

    def elaborate(self, platform):
        m = Module()
        master = self.master
        start, empty, issue, final = self._row_walker(m, master)
        if self.max_commands > 1:
            self._pipelined_commands(m, master, start, empty, issue, final)
        else:
            self._one_command(m, master, start, empty, issue, final)
        self._stream_to_axi(m, master)
        return m

    def _pipelined_commands(self, m, master, start, empty, issue, final):
        """Commands back to back: each command's row count in a FIFO, taken off (with a
        ``done`` pulse) once that many row commands have been acknowledged."""
        m.submodules.counts = counts = fifo.SyncFIFOBuffered(width=ROWS_WIDTH + 1, depth=self.max_commands)
        p = self.cmd.payload
        m.d.comb += counts.w_data.eq(Mux(empty, 0, p.rows))
        fsm = self._issue_rows(m, master, start, empty, issue, final, name="writer", room=counts.w_rdy,
                               on_take=[counts.w_en.eq(1)])
        acked = Signal(ROWS_WIDTH + 1)           # rows of the oldest command acknowledged
        head = counts.r_data
        with m.If(counts.r_rdy & (head == 0)):   # an empty command: done in its turn
            m.d.comb += [self.done.eq(1), counts.r_en.eq(1)]
            m.d.sync += acked.eq(acked + master.done)
        with m.Elif(counts.r_rdy & (acked + master.done == head)):
            m.d.comb += [self.done.eq(1), counts.r_en.eq(1)]
            m.d.sync += acked.eq(0)
        with m.Else():
            m.d.sync += acked.eq(acked + master.done)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE") | counts.r_rdy)

    def _one_command(self, m, master, start, empty, issue, final):
        # Row commands handed to the master and not yet acknowledged (the master's ``done``
        # pulses once per row command, after its final B response).
        pending = Signal(ROWS_WIDTH + 1)
        m.d.sync += pending.eq(pending + issue - master.done)
        with m.FSM(name="writer") as fsm:
            with m.State("IDLE"):
                m.d.comb += self.cmd.ready.eq(1)
                with m.If(self.cmd.valid):
                    m.d.comb += start.eq(1)
                    m.next = "ISSUE"
                    with m.If(empty):
                        m.next = "FINISH"
            with m.State("ISSUE"):
                m.d.comb += master.cmd.valid.eq(1)
                with m.If(issue & final):
                    m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(pending == 0):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))

    def _stream_to_axi(self, m, master):
        """Stream beats -> AXI W beats (gathered or split to the bus width)."""
        dw, vw = self.data_width, self.lanes * 32
        vec, word = self.i.payload, master.wdata
        ratio = self.ratio
        if ratio == 1:
            m.d.comb += [word.valid.eq(self.i.valid), self.i.ready.eq(word.ready),
                         word.payload.eq(vec.data)]
        elif ratio > 1:
            # gather: the first k-1 stream beats go to a register, the k-th completes the AXI beat
            part = Signal(range(ratio))
            at_end = part == ratio - 1
            gather = Signal((ratio - 1) * vw)
            m.d.comb += [word.valid.eq(self.i.valid & at_end),
                         self.i.ready.eq(~at_end | word.ready),
                         word.payload.eq(Cat(gather, vec.data))]
            with m.If(self.i.valid & self.i.ready):
                with m.If(at_end):
                    m.d.sync += part.eq(0)
                with m.Else():
                    m.d.sync += [part.eq(part + 1), gather.eq(Cat(gather[vw:], vec.data))]
        else:
            # split: the stream beat stays until its last part has gone out on W
            k = -ratio
            part = Signal(range(k))
            at_end = part == k - 1
            m.d.comb += [word.valid.eq(self.i.valid),
                         self.i.ready.eq(word.ready & at_end),
                         word.payload.eq(vec.data.as_value().word_select(part, dw))]
            with m.If(word.valid & word.ready):
                m.d.sync += part.eq(Mux(at_end, 0, part + 1))
