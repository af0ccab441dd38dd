"""A fast, simulation-only model of the PS DDR behind the AXI4 HP ports (docs/architecture.md 6, 9).

Not for synthesis: it exists so that Verilator simulations of the accelerator (and of its AXI
masters) see a DDR with realistic latency and a shared bandwidth limit, without a Python model
in the per-beat loop.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In

from ..contract.layouts import PAGE
from .axi import LEN_WIDTH, RESP_DECERR, RESP_OKAY, axi_read_signature, axi_write_signature, check_data_width
from .compose import forward, prefixed_members

__all__ = ["DdrModel", "DdrSystem", "RATE_FRAC_BITS", "MIN_LATENCY", "STORAGE_MODULE", "STORAGE_SOURCE",
           "rate_fixed"]

#: Fractional bits of the fixed-point bandwidth (bytes per cycle) of the token bucket.
RATE_FRAC_BITS = 16
#: Width of the ``cfg_rate`` port / the credit register (16 integer + 16 fractional bits).
RATE_WIDTH = 32
#: Width of the ``cfg_latency`` port (cycles).
LATENCY_WIDTH = 16
#: Smallest latency the model's pipeline can give (AR handshake to first R beat, in cycles).
MIN_LATENCY = 3
_PIPE = 2          # cycles from a beat's grant to its RVALID (memory read + R FIFO)
_R_FIFO_DEPTH = 4


def rate_fixed(bytes_per_cycle) -> int:
    """``bytes_per_cycle`` (int, float or Fraction) as the model's fixed-point rate (rounded to
    the nearest 1/2**RATE_FRAC_BITS byte per cycle)."""
    value = round(Fraction(bytes_per_cycle) * (1 << RATE_FRAC_BITS))
    if not 0 < value < 1 << RATE_WIDTH:
        raise ValueError(f"bytes_per_cycle must be in (0, {1 << (RATE_WIDTH - RATE_FRAC_BITS)}), "
                         f"got {bytes_per_cycle!r}")
    return value


#: The hand-written Verilog module holding the memory (``hw/verilog/tellme_ddr_mem.v``).
STORAGE_MODULE = "tellme_ddr_mem"
#: Its source file; :func:`tellme.sim.rtl.run_cocotb` adds it to the Verilator build of any
#: design instantiating the module.
STORAGE_SOURCE = Path(__file__).resolve().parent / "verilog" / f"{STORAGE_MODULE}.v"


class DdrModel(wiring.Component):
    """Simulation-only DDR: one memory behind ``ports`` AXI4 read subordinates and one AXI4
    write subordinate, with a fixed latency and a bandwidth limit shared by all of them.

    Ports (subordinate side, i.e. ``In`` of the manager signatures of :mod:`tellme.hw.axi`):
    ``rd0`` .. ``rd{ports-1}``: ``In(axi_read_signature(...))``; ``wr``:
    ``In(axi_write_signature(...))``; with ``configurable=True`` also ``cfg_latency``
    (``In(LATENCY_WIDTH)``, cycles) and ``cfg_rate`` (``In(32)``, bytes per cycle in fixed point with
    :data:`RATE_FRAC_BITS` fractional bits, see :func:`rate_fixed`), which the testbench must
    drive and which then replace ``latency`` and ``bytes_per_cycle`` (one build, many settings).

    **Memory.** ``size_bytes`` (a multiple of 4 KiB) of ``data_width``-bit words at byte
    addresses ``[base, base + size_bytes)``, held by an instance ``mem`` of the hand-written
    Verilog module :data:`STORAGE_MODULE` (``hw/verilog/tellme_ddr_mem.v``: a plain
    ``reg [data_width-1:0] mem [depth-1:0]``, so ``dut.mem.mem`` in cocotb; word ``i`` holds
    bytes ``base + i*B .. base + i*B + B - 1``, little-endian, ``B = data_width/8``), starting at
    zero. It has no initial contents, which Amaranth would emit bit by bit for an
    :class:`amaranth.lib.memory.Memory` (~30 s of conversion per MiB, on every ``run_cocotb``
    call): the design converts in milliseconds at any size. Load it through Verilator's public
    access with :func:`tellme.sim.tb.ddr.load_ddr_image` (which takes ``dut.mem`` or the array).
    :func:`tellme.sim.rtl.run_cocotb` adds the module's source to the Verilator build. A beat
    whose address lies outside the memory gets a DECERR response (reads return zeros, writes
    are dropped); everything else is OKAY.

    **Bursts.** INCR bursts of ``xxLEN + 1`` full-width beats (``xxSIZE`` must equal the bus
    width; FIXED/WRAP and narrow transfers are not modelled: every beat advances by ``B``
    bytes). Write strobes are honoured per byte. W beats are taken only for an AW already
    accepted (in order); IDs are returned as given, responses stay in order per port. Each
    port accepts up to ``queue_depth`` address requests ahead (``xxREADY`` low when full).

    **Latency.** A read burst whose AR handshake happens in cycle *c* can send its first beat
    (RVALID high) in cycle *c* + ``latency`` at the earliest, and its further beats one per
    cycle after that; later bursts of a port queue behind earlier ones, each with its own
    earliest start *c_i* + ``latency``, so back-to-back bursts stream without gaps when they
    were requested early enough. Beats may come later when the bandwidth limit, the
    round-robin arbiter or RREADY hold them back. ``latency`` >= :data:`MIN_LATENCY` (a
    ``cfg_latency`` below it acts as MIN_LATENCY). Writes have no extra latency: a W beat is
    taken as soon as bandwidth allows, the B response follows 1 cycle after the last beat.

    **Bandwidth.** A token bucket shared by all ports: each cycle ``bytes_per_cycle`` of credit
    is added (fixed point, :data:`RATE_FRAC_BITS` fractional bits: fractional rates such as
    51.2 B/cycle are allowed), and each beat that is granted (a read beat entering the R
    pipeline, or a W beat taken) costs ``B`` bytes; a beat is granted only while the credit,
    including this cycle's addition, covers it. Unused credit saturates at ``bucket_bytes``
    (default: one beat per port, ``(ports + 1) * B``), so an idle model banks at most that.
    Requests are served round-robin (the pointer moves past the last port granted), the write
    port being port number ``ports``. Each port moves at most one beat per cycle, so the peak
    is ``min(bytes_per_cycle, active ports * B)``. KV260: 19.2 GB/s at 300 MHz is 64 B/cycle
    peak, i.e. exactly four 128-bit HP ports; ~50 B/cycle models ~80 % DDR efficiency.

    Parameters
    ----------
    size_bytes : int
        Memory size, a multiple of 4096.
    ports : int
        Number of read ports (1..8).
    data_width, addr_width, id_width : int
        AXI4 geometry (as :func:`tellme.hw.axi.axi_read_signature`).
    base : int
        Byte address of the first memory word (4 KiB aligned).
    latency : int
        AR handshake to first R beat, cycles (>= MIN_LATENCY).
    bytes_per_cycle : int, float or Fraction
        Shared bandwidth limit.
    queue_depth : int
        Address requests a port accepts ahead (outstanding bursts per port).
    bucket_bytes : int, optional
        Saturation of the token bucket.
    configurable : bool
        Take latency and rate from the ``cfg_latency``/``cfg_rate`` inputs instead.
    """

    def __init__(self, *, size_bytes: int, ports: int = 4, data_width: int = 128, addr_width: int = 40,
                 id_width: int = 4, base: int = 0, latency: int = 40, bytes_per_cycle=64,
                 queue_depth: int = 8, bucket_bytes: int | None = None, configurable: bool = False):
        try:
            self._check(size_bytes=size_bytes, ports=ports, data_width=data_width, addr_width=addr_width,
                        base=base, latency=latency, queue_depth=queue_depth, bytes_per_cycle=bytes_per_cycle,
                        bucket_bytes=bucket_bytes)
        except ValueError:
            self._MustUse__silence = True      # no "never elaborated" warning for a refused object
            raise
        self.rate = rate_fixed(bytes_per_cycle)
        beat_bytes = data_width // 8
        if bucket_bytes is None:
            bucket_bytes = (ports + 1) * beat_bytes
        self.size_bytes, self.ports, self.base = size_bytes, ports, base
        self.data_width, self.addr_width, self.id_width = data_width, addr_width, id_width
        self.beat_bytes, self.latency, self.bytes_per_cycle = beat_bytes, latency, bytes_per_cycle
        self.queue_depth, self.bucket_bytes, self.configurable = queue_depth, bucket_bytes, configurable
        geometry = dict(addr_width=addr_width, data_width=data_width, id_width=id_width)
        members = {f"rd{i}": In(axi_read_signature(**geometry)) for i in range(ports)}
        members["wr"] = In(axi_write_signature(**geometry))
        if configurable:
            members["cfg_latency"] = In(LATENCY_WIDTH, init=latency)
            members["cfg_rate"] = In(RATE_WIDTH, init=self.rate)
        super().__init__(members)

    @staticmethod
    def _check(*, size_bytes, ports, data_width, addr_width, base, latency, queue_depth, bytes_per_cycle,
               bucket_bytes):
        if not isinstance(ports, int) or not 1 <= ports <= 8:
            raise ValueError(f"ports must be 1..8, got {ports!r}")
        check_data_width(data_width)
        if not isinstance(size_bytes, int) or size_bytes <= 0 or size_bytes % PAGE:
            raise ValueError(f"size_bytes must be a positive multiple of {PAGE}, got {size_bytes!r}")
        if not isinstance(base, int) or base < 0 or base % PAGE:
            raise ValueError(f"base must be a 4 KiB aligned address, got {base!r}")
        if base + size_bytes > 1 << addr_width:
            raise ValueError(f"memory [{base:#x}, {base + size_bytes:#x}) exceeds the "
                             f"{addr_width}-bit address space")
        if not isinstance(latency, int) or not MIN_LATENCY <= latency < 1 << 15:
            raise ValueError(f"latency must be an integer in {MIN_LATENCY}..32767, got {latency!r}")
        if not isinstance(queue_depth, int) or not 1 <= queue_depth <= 64:
            raise ValueError(f"queue_depth must be 1..64, got {queue_depth!r}")
        rate_fixed(bytes_per_cycle)
        beat_bytes = data_width // 8
        if bucket_bytes is not None and (not isinstance(bucket_bytes, int)
                                         or not beat_bytes <= bucket_bytes < 1 << 15):
            raise ValueError(f"bucket_bytes must be an integer in {beat_bytes}..32767, got {bucket_bytes!r}")

    @property
    def depth(self) -> int:
        """Memory words."""
        return self.size_bytes // self.beat_bytes

    def elaborate(self, platform):
        m = Module()
        bb, aw = self.beat_bytes, self.addr_width
        shift = bb.bit_length() - 1
        depth = self.depth
        n = self.ports + 1                       # requesters: read ports, then the write port

        # The storage: synchronous, non-transparent read ports with enable, one write port with
        # byte enables (what amaranth.lib.memory.Memory gave, without its initial contents).
        abits = max(1, (depth - 1).bit_length())
        rd_addr = [Signal(abits, name=f"rd{i}_word") for i in range(self.ports)]
        rd_en = [Signal(name=f"rd{i}_en") for i in range(self.ports)]
        rd_data = Signal(self.ports * self.data_width)
        wr_addr = Signal(abits)
        wr_data = Signal(self.data_width)
        wr_en = Signal(bb)
        m.submodules.mem = Instance(
            STORAGE_MODULE,
            p_WIDTH=self.data_width, p_DEPTH=depth, p_ABITS=abits, p_RD_PORTS=self.ports,
            i_clk=ClockSignal(), i_rd_addr=Cat(*rd_addr), i_rd_en=Cat(*rd_en), o_rd_data=rd_data,
            i_wr_addr=wr_addr, i_wr_data=wr_data, i_wr_en=wr_en)
        now = Signal(32)
        m.d.sync += now.eq(now + 1)
        if self.configurable:
            latency, rate = self.cfg_latency, self.cfg_rate
        else:
            latency, rate = self.latency, self.rate

        def locate(address):
            """(in range, word index) of a byte address."""
            offset = Signal(aw)
            m.d.comb += offset.eq(address - self.base)
            inside = (address >= self.base) & (offset < self.size_bytes)
            return inside, offset[shift:shift + max(1, (depth - 1).bit_length())]

        # -- token bucket and round-robin arbiter
        req = Signal(n)
        grant = Signal(n)
        credit = Signal(RATE_WIDTH)
        avail = Signal(RATE_WIDTH + 1)
        m.d.comb += avail.eq(credit + rate)
        unit = bb << RATE_FRAC_BITS
        rr = Signal(range(n))
        next_rr = Signal(range(n))
        m.d.comb += next_rr.eq(rr)
        for start in range(n):
            with m.If(rr == start):
                count = 0
                for j in range(n):
                    p = (start + j) % n
                    g = Signal(name=f"grant_s{start}_p{p}")
                    m.d.comb += g.eq(req[p] & (avail >= (count + 1) * unit))
                    m.d.comb += grant[p].eq(g)
                    with m.If(g):
                        m.d.comb += next_rr.eq((p + 1) % n)
                    count = count + g
        spent = Signal(range(n + 1))
        m.d.comb += spent.eq(sum(grant[p] for p in range(n)))
        left = Signal(RATE_WIDTH + 1)
        m.d.comb += left.eq(avail - spent * unit)
        cap = self.bucket_bytes << RATE_FRAC_BITS
        m.d.sync += [credit.eq(Mux(left > cap, cap, left)), rr.eq(next_rr)]

        # -- read ports
        ar_layout = data.StructLayout({"addr": aw, "len": 8, "id": self.id_width, "start": 32})
        r_layout = data.StructLayout({"data": self.data_width, "id": self.id_width, "resp": 2, "last": 1})
        for i in range(self.ports):
            axi = getattr(self, f"rd{i}")
            ar_q = fifo.SyncFIFO(width=ar_layout.size, depth=self.queue_depth)
            r_q = fifo.SyncFIFO(width=r_layout.size, depth=_R_FIFO_DEPTH)
            m.submodules[f"rd{i}_ar"], m.submodules[f"rd{i}_r"] = ar_q, r_q
            entry = Signal(ar_layout)
            head = Signal(ar_layout)
            m.d.comb += [
                axi.arready.eq(ar_q.w_rdy),
                ar_q.w_en.eq(axi.arvalid),
                entry.addr.eq(axi.araddr), entry.len.eq(axi.arlen), entry.id.eq(axi.arid),
                entry.start.eq(now + latency - _PIPE),
                ar_q.w_data.eq(entry),
                head.eq(ar_q.r_data),
            ]
            beat = Signal(LEN_WIDTH)
            address = Signal(aw)
            m.d.comb += address.eq(head.addr + (beat << shift))
            inside, word = locate(address)
            due = Signal()
            m.d.comb += due.eq(~(now - head.start)[31])
            # one beat may be between grant and the R FIFO
            pending = Signal()
            pending_r = Signal(r_layout)
            room = Signal()
            m.d.comb += [room.eq(r_q.level + pending < _R_FIFO_DEPTH),
                         req[i].eq(ar_q.r_rdy & due & room)]
            m.d.comb += [rd_addr[i].eq(word), rd_en[i].eq(grant[i])]
            m.d.sync += pending.eq(grant[i])
            with m.If(grant[i]):
                m.d.sync += [pending_r.id.eq(head.id), pending_r.last.eq(beat == head.len),
                             pending_r.resp.eq(Mux(inside, RESP_OKAY, RESP_DECERR))]
                with m.If(beat == head.len):
                    m.d.sync += beat.eq(0)
                    m.d.comb += ar_q.r_en.eq(1)
                with m.Else():
                    m.d.sync += beat.eq(beat + 1)
            beat_out = Signal(r_layout)
            m.d.comb += [
                beat_out.eq(pending_r),
                beat_out.data.eq(Mux(pending_r.resp == RESP_OKAY, rd_data.word_select(i, self.data_width), 0)),
                r_q.w_en.eq(pending), r_q.w_data.eq(beat_out),
            ]
            out = Signal(r_layout)
            m.d.comb += [
                out.eq(r_q.r_data),
                axi.rvalid.eq(r_q.r_rdy), axi.rdata.eq(out.data), axi.rid.eq(out.id),
                axi.rresp.eq(out.resp), axi.rlast.eq(out.last),
                r_q.r_en.eq(axi.rready),
            ]

        # -- write port
        axi = self.wr
        w = self.ports
        aw_layout = data.StructLayout({"addr": aw, "len": 8, "id": self.id_width})
        b_layout = data.StructLayout({"id": self.id_width, "resp": 2})
        aw_q = fifo.SyncFIFO(width=aw_layout.size, depth=self.queue_depth)
        b_q = fifo.SyncFIFO(width=b_layout.size, depth=self.queue_depth)
        m.submodules.wr_aw, m.submodules.wr_b = aw_q, b_q
        entry = Signal(aw_layout)
        head = Signal(aw_layout)
        m.d.comb += [
            axi.awready.eq(aw_q.w_rdy), aw_q.w_en.eq(axi.awvalid),
            entry.addr.eq(axi.awaddr), entry.len.eq(axi.awlen), entry.id.eq(axi.awid),
            aw_q.w_data.eq(entry), head.eq(aw_q.r_data),
        ]
        beat = Signal(LEN_WIDTH)
        failed = Signal()          # a beat of the current burst was outside the memory
        address = Signal(aw)
        m.d.comb += address.eq(head.addr + (beat << shift))
        inside, word = locate(address)
        m.d.comb += [
            req[w].eq(axi.wvalid & aw_q.r_rdy & b_q.w_rdy),
            axi.wready.eq(grant[w]),
            wr_addr.eq(word), wr_data.eq(axi.wdata),
            wr_en.eq(Mux(grant[w] & inside, axi.wstrb, 0)),
        ]
        response = Signal(b_layout)
        m.d.comb += [response.id.eq(head.id),
                     response.resp.eq(Mux(failed | ~inside, RESP_DECERR, RESP_OKAY)),
                     b_q.w_data.eq(response)]
        with m.If(grant[w]):
            with m.If(beat == head.len):
                m.d.sync += [beat.eq(0), failed.eq(0)]
                m.d.comb += [aw_q.r_en.eq(1), b_q.w_en.eq(1)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), failed.eq(failed | ~inside)]
        out = Signal(b_layout)
        m.d.comb += [out.eq(b_q.r_data), axi.bvalid.eq(b_q.r_rdy), axi.bid.eq(out.id),
                     axi.bresp.eq(out.resp), b_q.r_en.eq(axi.bready)]
        return m


def _all_but_axi(master) -> list[str]:
    """A master's ports other than its AXI interface (which the DDR system wires inside)."""
    return [n for n in master.signature.members if n != "axi"]


class DdrSystem(wiring.Component):
    """Simulation-only test harness: ``ports`` :class:`~tellme.hw.axi_read.AxiReadMaster` and one
    :class:`~tellme.hw.axi_write.AxiWriteMaster` on a :class:`DdrModel` (``ddr``, so its memory
    is ``dut.ddr.mem`` in cocotb: the storage instance, whose array is ``dut.ddr.mem.mem``).

    Ports: ``rd<i>_cmd``, ``rd<i>_rdata``, ``rd<i>_error``, ``rd<i>_clear_error``, ``rd<i>_busy``
    (the read masters' ``cmd``, ``rdata``, ...), ``wr_cmd``, ``wr_wdata``, ``wr_done``,
    ``wr_error``, ``wr_clear_error``, ``wr_busy``, and with ``configurable=True`` (the default
    here) the model's ``cfg_latency``/``cfg_rate``. ``max_burst``/``max_outstanding`` go to the
    masters, every other keyword to :class:`DdrModel`.
    """

    def __init__(self, *, ports: int = 4, data_width: int = 128, addr_width: int = 40,
                 max_burst: int = 256, max_outstanding: int = 4, configurable: bool = True, **ddr):
        from .axi_read import AxiReadMaster
        from .axi_write import AxiWriteMaster
        master = dict(data_width=data_width, addr_width=addr_width, max_burst=max_burst,
                      max_outstanding=max_outstanding)
        self.ddr = DdrModel(ports=ports, data_width=data_width, addr_width=addr_width,
                            configurable=configurable, **ddr)
        self.readers = [AxiReadMaster(**master) for _ in range(ports)]
        self.writer = AxiWriteMaster(**master)
        self.ports, self.max_burst, self.max_outstanding = ports, max_burst, max_outstanding
        members = {}
        for i, reader in enumerate(self.readers):
            members.update(prefixed_members(reader, f"rd{i}_", _all_but_axi(reader)))
        members.update(prefixed_members(self.writer, "wr_", _all_but_axi(self.writer)))
        if configurable:
            members["cfg_latency"] = self.ddr.signature.members["cfg_latency"]
            members["cfg_rate"] = self.ddr.signature.members["cfg_rate"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ddr = self.ddr
        for i, reader in enumerate(self.readers):
            m.submodules[f"rd{i}"] = reader
            wiring.connect(m, reader.axi, getattr(self.ddr, f"rd{i}"))
            forward(m, self, f"rd{i}_", reader, _all_but_axi(reader))
        m.submodules.wr = self.writer
        wiring.connect(m, self.writer.axi, self.ddr.wr)
        forward(m, self, "wr_", self.writer, _all_but_axi(self.writer))
        if self.ddr.configurable:
            m.d.comb += [self.ddr.cfg_latency.eq(self.cfg_latency), self.ddr.cfg_rate.eq(self.cfg_rate)]
        return m
