"""AXI4 and AXI4-Lite interface signatures (AMBA AXI, as on the Zynq UltraScale+ HP/HPM ports).

Members are named as in the AMBA specification, lower case (``awvalid``, ``rdata``, ...), so a
port ``s_axil: In(axi_lite_signature(...))`` becomes Verilog ``s_axil__awvalid`` etc., which
cocotbext-axi finds with ``AxiLiteBus.from_prefix(dut, "s_axil_")``. The signatures are seen
from the manager (master) side: a subordinate takes them flipped (``In``).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["axi_lite_signature", "axi_read_signature", "axi_write_signature", "RESP_OKAY", "RESP_SLVERR",
           "RESP_DECERR", "BURST_INCR"]

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
BURST_INCR = 1


def axi_lite_signature(*, addr_width: int = 12, data_width: int = 32) -> wiring.Signature:
    if data_width not in (32, 64):
        raise ValueError(f"AXI4-Lite data_width must be 32 or 64, got {data_width!r}")
    if not isinstance(addr_width, int) or addr_width < 2:
        raise ValueError(f"addr_width must be an integer >= 2, got {addr_width!r}")
    return wiring.Signature({
        "awvalid": Out(1), "awready": In(1), "awaddr": Out(addr_width), "awprot": Out(3),
        "wvalid": Out(1), "wready": In(1), "wdata": Out(data_width), "wstrb": Out(data_width // 8),
        "bvalid": In(1), "bready": Out(1), "bresp": In(2),
        "arvalid": Out(1), "arready": In(1), "araddr": Out(addr_width), "arprot": Out(3),
        "rvalid": In(1), "rready": Out(1), "rdata": In(data_width), "rresp": In(2),
    })


def _check(addr_width, data_width, id_width):
    if data_width not in (32, 64, 128, 256, 512):
        raise ValueError(f"AXI4 data_width must be 32..512 (power of two), got {data_width!r}")
    if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
        raise ValueError(f"addr_width must be an integer in 12..64, got {addr_width!r}")
    if not isinstance(id_width, int) or not 1 <= id_width <= 16:
        raise ValueError(f"id_width must be an integer in 1..16, got {id_width!r}")


def axi_read_signature(*, addr_width: int = 40, data_width: int = 128, id_width: int = 4) -> wiring.Signature:
    """The AR and R channels of an AXI4 manager."""
    _check(addr_width, data_width, id_width)
    return wiring.Signature({
        "arvalid": Out(1), "arready": In(1), "araddr": Out(addr_width), "arid": Out(id_width),
        "arlen": Out(8), "arsize": Out(3), "arburst": Out(2), "arcache": Out(4), "arprot": Out(3),
        "arlock": Out(1), "arqos": Out(4),
        "rvalid": In(1), "rready": Out(1), "rdata": In(data_width), "rid": In(id_width), "rresp": In(2),
        "rlast": In(1),
    })


def axi_write_signature(*, addr_width: int = 40, data_width: int = 128, id_width: int = 4) -> wiring.Signature:
    """The AW, W and B channels of an AXI4 manager."""
    _check(addr_width, data_width, id_width)
    return wiring.Signature({
        "awvalid": Out(1), "awready": In(1), "awaddr": Out(addr_width), "awid": Out(id_width),
        "awlen": Out(8), "awsize": Out(3), "awburst": Out(2), "awcache": Out(4), "awprot": Out(3),
        "awlock": Out(1), "awqos": Out(4),
        "wvalid": Out(1), "wready": In(1), "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "bvalid": In(1), "bready": Out(1), "bid": In(id_width), "bresp": In(2),
    })
