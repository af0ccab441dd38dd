"""AXI4 arbiters: several AXI4 managers share one AXI4 port (one HP port of the PS DDR).

Every manager of the datapath (the AXI read and write masters of :mod:`tellme.hw.axi_read` and
:mod:`tellme.hw.axi_write`) uses ID 0, and the subordinate returns the bursts of one ID in
order, so an arbiter needs no ID remapping: it grants whole bursts round robin on the address
channel and routes the data and responses back by a FIFO of the grants it made
(docs/architecture.md section 9, "AXI arbiters").
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .axi import axi_read_signature, axi_write_signature
from .compose import silence_refused

__all__ = ["AxiReadArbiter", "AxiWriteArbiter", "MAX_MANAGERS", "MAX_OUTSTANDING"]

#: Most managers one arbiter takes (the round-robin logic grows with the square of the count).
MAX_MANAGERS = 32
#: Deepest grant FIFO (bursts in flight through one arbiter).
MAX_OUTSTANDING = 256


class _AxiArbiter(wiring.Component):
    """The keyword parameters and ports shared by both arbiters (``_signature``: the AXI
    half they arbitrate); each subclass elaborates its channels."""

    _signature = None

    def __init__(self, *, managers: int, data_width: int = 128, addr_width: int = 40, id_width: int = 4,
                 max_outstanding: int = 8):
        try:
            check_positive_int("managers", managers)
            check_positive_int("data_width", data_width)
            check_positive_int("addr_width", addr_width)
            check_positive_int("id_width", id_width)
            check_positive_int("max_outstanding", max_outstanding)
            if managers > MAX_MANAGERS:
                raise ValueError(f"managers must be at most {MAX_MANAGERS}, got {managers}")
            if max_outstanding > MAX_OUTSTANDING:
                raise ValueError(f"max_outstanding must be at most {MAX_OUTSTANDING}, got {max_outstanding}")
            # The signature checks the AXI widths (data 32..512, a power of two; address 12..64; ID 1..16).
            signature = type(self)._signature(addr_width=addr_width, data_width=data_width, id_width=id_width)
        except ValueError:
            silence_refused(self)
            raise
        self.managers, self.max_outstanding = managers, max_outstanding
        self.data_width, self.addr_width, self.id_width = data_width, addr_width, id_width
        super().__init__({"mgr": In(signature).array(managers), "axi": Out(signature)})


def _index_width(managers: int) -> int:
    return max(1, (managers - 1).bit_length())


def _round_robin(m: Module, requests, last, name: str):
    """Round-robin choice among ``requests`` (1-bit signals): the first requester after
    ``last`` (the index granted last), cyclically. Returns (index, any): the chosen index and
    whether anyone requests. Purely combinational; ``last`` is the caller's register."""
    count = len(requests)
    index = Signal(len(last), name=f"{name}_choice")
    any_request = Signal(name=f"{name}_any")
    m.d.comb += any_request.eq(Cat(*requests).any())
    if count == 1:
        return index, any_request
    with m.Switch(last):
        for previous in range(count):
            with m.Case(previous):
                order = [(previous + k) % count for k in range(1, count + 1)]
                with m.If(requests[order[0]]):
                    m.d.comb += index.eq(order[0])
                for candidate in order[1:]:
                    with m.Elif(requests[candidate]):
                        m.d.comb += index.eq(candidate)
    return index, any_request


def _address_channel(m: Module, managers, port, prefix: str, room):
    """Arbitrate the address channel ``prefix`` ("ar" or "aw") of ``managers`` (the arbiter's
    flipped manager ports) onto ``port``: one grant per handshake, round robin, while ``room``
    (the grant FIFOs have space). The granted address is registered: the port's VALID and
    payload come from flip-flops, and a register that is empty or being taken accepts the next
    grant in the same cycle. Returns (issue, index): a grant happens this cycle, to ``index``."""
    valid, ready = f"{prefix}valid", f"{prefix}ready"
    fields = [name for name in port.signature.members
              if name.startswith(prefix) and name not in (valid, ready)]
    count = len(managers)
    last = Signal(_index_width(count), name=f"{prefix}_last", init=count - 1)
    index, any_request = _round_robin(m, [getattr(p, valid) for p in managers], last, prefix)
    port_valid, port_ready = getattr(port, valid), getattr(port, ready)
    accept = Signal(name=f"{prefix}_accept")
    issue = Signal(name=f"{prefix}_issue")
    m.d.comb += [accept.eq(~port_valid | port_ready), issue.eq(accept & room & any_request)]
    for i, manager in enumerate(managers):
        m.d.comb += getattr(manager, ready).eq(issue & (index == i))
    with m.If(issue):
        m.d.sync += [port_valid.eq(1), last.eq(index)]
        with m.Switch(index):
            for i, manager in enumerate(managers):
                with m.Case(i):
                    m.d.sync += [getattr(port, f).eq(getattr(manager, f)) for f in fields]
    with m.Elif(port_ready):
        m.d.sync += port_valid.eq(0)
    return issue, index


def _route_response(m: Module, managers, port, fifo_unit, *, valid: str, ready: str, fields, pop):
    """Route the response channel (``valid``/``ready``, payload ``fields``) of ``port`` to the
    manager at the head of ``fifo_unit``: payload broadcast to all, VALID only to the head
    (from the port's VALID and the FIFO, never from any READY), the port's READY from the head
    manager's READY. The head entry is popped on the handshake where ``pop`` (a signal of the
    port, or None for every handshake) is high."""
    head = fifo_unit.r_data
    port_valid, port_ready = getattr(port, valid), getattr(port, ready)
    head_ready = Signal(name=f"{valid[0]}_head_ready")
    for i, manager in enumerate(managers):
        m.d.comb += [getattr(manager, valid).eq(port_valid & fifo_unit.r_rdy & (head == i))]
        m.d.comb += [getattr(manager, f).eq(getattr(port, f)) for f in fields]
    with m.Switch(head):
        for i, manager in enumerate(managers):
            with m.Case(i):
                m.d.comb += head_ready.eq(getattr(manager, ready))
    handshake = port_valid & port_ready
    m.d.comb += [port_ready.eq(fifo_unit.r_rdy & head_ready),
                 fifo_unit.r_en.eq(handshake if pop is None else handshake & pop)]


class AxiReadArbiter(_AxiArbiter):
    """Shares one AXI4 read port among ``managers`` AXI4 read managers.

    AR: burst-granular round robin. Each AR handshake on a manager port is one grant; the
    manager after the one granted last (cyclically) that has ARVALID high wins, so a waiting
    manager is granted after at most ``managers - 1`` grants to others. The granted AR (every
    field: address, ID, length, size, burst, cache, prot, lock, QoS) is registered and offered
    on ``axi``; the granted manager's index enters a FIFO of ``max_outstanding`` entries.
    While the FIFO is full (``max_outstanding`` bursts granted and not finished) no AR is
    granted, which bounds the bursts in flight on ``axi``.

    R: beats are routed to the manager at the head of the grant FIFO, popped on the beat with
    RLAST. This is correct because every manager uses one ID (0) and the subordinate returns
    the bursts of one ID in AR order (AXI4); IDs pass through unchanged. RDATA, RID, RRESP
    (OKAY, SLVERR, DECERR alike) and RLAST reach every manager port; RVALID only the head's.

    Ports: ``mgr`` (``In(axi_read_signature(...)).array(managers)``: the manager ports, the
    arbiter is their subordinate; Verilog ``mgr__<i>__arvalid`` ...), ``axi``
    (``Out(axi_read_signature(...))``: the shared port, towards the DDR).

    Timing:

    * latency: 1 cycle from a manager's AR handshake to ARVALID on ``axi`` (the address
      register); 0 cycles on R (routing is combinational: a beat on ``axi`` is on the manager
      port in the same cycle);
    * throughput: one AR per cycle (the address register takes a new grant in the cycle its
      AR moves), and one R beat per cycle while the head manager keeps RREADY high, with no
      bubble between bursts of different managers.

    Stream rules: ARVALID on ``axi`` comes from a flip-flop and the AR payload holds until
    ARREADY; a manager's RVALID depends only on ``axi.rvalid`` and the grant FIFO, never on any
    RREADY; ``axi.rready`` is the head manager's RREADY (ready may depend on valid).
    ``axi.arready`` reaches the managers' ARREADY combinationally (through one AND).

    Cost: one AR register (``addr_width + id_width + 25`` bits and ARVALID) behind a
    ``managers``:1 multiplexer, the round-robin logic (about ``managers**2`` LUTs), a grant
    FIFO of ``max_outstanding`` x ceil(log2(``managers``)) bits, and a ``managers``:1 RREADY
    multiplexer; R data are wires. Synthesised (``synth_xilinx -family xcup``, 128-bit data,
    40-bit address, ``max_outstanding=8``): 98 LUT-eq / 81 FF with 2 managers, 104 / 82 with 4.

    Parameters
    ----------
    managers : int
        Number of manager ports, 1..:data:`MAX_MANAGERS`.
    data_width, addr_width, id_width : int
        AXI widths of every port (as :func:`~tellme.hw.axi.axi_read_signature`).
    max_outstanding : int
        Depth of the grant FIFO: bursts granted and not yet finished, 1..:data:`MAX_OUTSTANDING`.
    """

    _signature = staticmethod(axi_read_signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.grants = grants = fifo.SyncFIFO(width=_index_width(self.managers), depth=self.max_outstanding)
        issue, index = _address_channel(m, self.mgr, self.axi, "ar", grants.w_rdy)
        m.d.comb += [grants.w_en.eq(issue), grants.w_data.eq(index)]
        _route_response(m, self.mgr, self.axi, grants, valid="rvalid", ready="rready",
                        fields=("rdata", "rid", "rresp", "rlast"), pop=self.axi.rlast)
        return m


class AxiWriteArbiter(_AxiArbiter):
    """Shares one AXI4 write port among ``managers`` AXI4 write managers.

    AW: burst-granular round robin, as :class:`AxiReadArbiter`'s AR (registered, every field
    passed through). Each grant enters two FIFOs of ``max_outstanding`` entries: the W FIFO
    (popped on the W beat with WLAST) and the B FIFO (popped on the B handshake); while either
    is full no AW is granted, so at most ``max_outstanding`` bursts await their response.

    W: only the manager at the head of the W FIFO is connected to ``axi``'s W channel (WDATA,
    WSTRB, WLAST, WVALID; its WREADY from ``axi.wready``); the others' WREADY stays low. So the
    W beats on ``axi`` follow the AW order, as AXI4 requires, and a manager may offer its W
    beats before or after its AW is granted: they wait until its burst is at the head.
    Managers must mark each burst's final beat with WLAST (the arbiter does not count beats).

    B: responses are routed to the manager at the head of the B FIFO (AW order; one ID per
    manager as for reads): BRESP (OKAY, SLVERR, DECERR alike) and BID reach every manager
    port, BVALID only the head's.

    Ports: ``mgr`` (``In(axi_write_signature(...)).array(managers)``, Verilog
    ``mgr__<i>__awvalid`` ...), ``axi`` (``Out(axi_write_signature(...))``).

    Timing:

    * latency: 1 cycle from a manager's AW handshake to AWVALID on ``axi``; W and B are
      combinational (0 cycles); a granted burst's W beats can move in the cycle after its AW
      grant;
    * throughput: one AW per cycle, and one W beat per cycle while the head manager keeps
      WVALID high, with no bubble between bursts of different managers.

    Stream rules: AWVALID and the AW payload come from flip-flops; ``axi.wvalid`` is the head
    manager's WVALID (and the FIFO's not-empty), a manager's BVALID is ``axi.bvalid`` and the
    FIFO head, neither depends on any READY. The managers' AWREADY and WREADY follow
    ``axi.awready`` and ``axi.wready`` combinationally.

    Cost: one AW register (``addr_width + id_width + 25`` bits) behind a ``managers``:1
    multiplexer, the round-robin logic, a ``managers``:1 multiplexer of ``data_width +
    data_width/8 + 2`` bits for W, two FIFOs of ``max_outstanding`` x ceil(log2(``managers``))
    bits, and a ``managers``:1 BREADY multiplexer. Synthesised (``synth_xilinx -family xcup``,
    128-bit data, 40-bit address, ``max_outstanding=8``): 264 LUT-eq / 91 FF with 2 managers,
    272 / 92 with 4 (mostly the W multiplexer, one LUT per bit up to 4 managers).

    Parameters
    ----------
    managers : int
        Number of manager ports, 1..:data:`MAX_MANAGERS`.
    data_width, addr_width, id_width : int
        AXI widths of every port (as :func:`~tellme.hw.axi.axi_write_signature`).
    max_outstanding : int
        Depth of the grant FIFOs: bursts granted and not yet answered on B,
        1..:data:`MAX_OUTSTANDING`.
    """

    _signature = staticmethod(axi_write_signature)

    def elaborate(self, platform):
        m = Module()
        width = _index_width(self.managers)
        m.submodules.w_grants = w_grants = fifo.SyncFIFO(width=width, depth=self.max_outstanding)
        m.submodules.b_grants = b_grants = fifo.SyncFIFO(width=width, depth=self.max_outstanding)
        issue, index = _address_channel(m, self.mgr, self.axi, "aw", w_grants.w_rdy & b_grants.w_rdy)
        m.d.comb += [w_grants.w_en.eq(issue), w_grants.w_data.eq(index),
                     b_grants.w_en.eq(issue), b_grants.w_data.eq(index)]

        # W: the head manager's channel, the others held off.
        axi, head = self.axi, w_grants.r_data
        head_valid = Signal()
        with m.Switch(head):
            for i, manager in enumerate(self.mgr):
                with m.Case(i):
                    m.d.comb += [head_valid.eq(manager.wvalid), axi.wdata.eq(manager.wdata),
                                 axi.wstrb.eq(manager.wstrb), axi.wlast.eq(manager.wlast)]
        m.d.comb += [axi.wvalid.eq(w_grants.r_rdy & head_valid),
                     w_grants.r_en.eq(axi.wvalid & axi.wready & axi.wlast)]
        for i, manager in enumerate(self.mgr):
            m.d.comb += manager.wready.eq(axi.wready & w_grants.r_rdy & (head == i))

        _route_response(m, self.mgr, axi, b_grants, valid="bvalid", ready="bready",
                        fields=("bid", "bresp"), pop=None)
        return m
