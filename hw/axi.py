"""AXI4 and AXI4-Lite interface signatures (AMBA AXI, as on the Zynq UltraScale+ HP/HPM ports).

Members are named as in the AMBA specification, lower case (``awvalid``, ``rdata``, ...), so a
port ``s_axil: In(axi_lite_signature(...))`` becomes Verilog ``s_axil__awvalid`` etc., which
cocotbext-axi finds with ``AxiLiteBus.from_prefix(dut, "s_axil_")``. The signatures are seen
from the manager (master) side: a subordinate takes them flipped (``In``).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["axi_lite_signature", "axi_read_signature", "axi_write_signature", "axi_signature", "RESP_OKAY", "RESP_SLVERR",
           "RESP_DECERR", "BURST_INCR", "LEN_WIDTH", "DATA_WIDTHS", "check_data_width"]

RESP_OKAY, RESP_EXOKAY, RESP_SLVERR, RESP_DECERR = 0, 1, 2, 3
BURST_INCR = 1
#: Width of AxLEN (a burst of AxLEN + 1 beats: 1..256).
LEN_WIDTH = 8
#: The AXI4 data widths the masters, movers and the DDR model support.
DATA_WIDTHS = (32, 64, 128, 256, 512)


def check_data_width(data_width, name: str = "data_width") -> int:
    """Return ``data_width`` if it is one of :data:`DATA_WIDTHS`; else raise ``ValueError``."""
    if data_width not in DATA_WIDTHS:
        raise ValueError(f"{name} must be 32..512 bits (power of two), got {data_width!r}")
    return data_width


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
    check_data_width(data_width)
    if not isinstance(addr_width, int) or not 12 <= addr_width <= 64:
        raise ValueError(f"addr_width must be an integer in 12..64, got {addr_width!r}")
    if not isinstance(id_width, int) or not 1 <= id_width <= 16:
        raise ValueError(f"id_width must be an integer in 1..16, got {id_width!r}")


def _address_channel(ax: str, addr_width: int, id_width: int) -> dict:
    """The members of the AR (``ax="ar"``) or AW (``"aw"``) channel of an AXI4 manager."""
    return {
        f"{ax}valid": Out(1), f"{ax}ready": In(1), f"{ax}addr": Out(addr_width), f"{ax}id": Out(id_width),
        f"{ax}len": Out(LEN_WIDTH), f"{ax}size": Out(3), f"{ax}burst": Out(2), f"{ax}cache": Out(4),
        f"{ax}prot": Out(3), f"{ax}lock": Out(1), f"{ax}qos": Out(4),
    }


def axi_read_signature(*, addr_width: int = 40, data_width: int = 128, id_width: int = 4) -> wiring.Signature:
    """The AR and R channels of an AXI4 manager."""
    _check(addr_width, data_width, id_width)
    return wiring.Signature({
        **_address_channel("ar", addr_width, id_width),
        "rvalid": In(1), "rready": Out(1), "rdata": In(data_width), "rid": In(id_width), "rresp": In(2),
        "rlast": In(1),
    })


def axi_write_signature(*, addr_width: int = 40, data_width: int = 128, id_width: int = 4) -> wiring.Signature:
    """The AW, W and B channels of an AXI4 manager."""
    _check(addr_width, data_width, id_width)
    return wiring.Signature({
        **_address_channel("aw", addr_width, id_width),
        "wvalid": Out(1), "wready": In(1), "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
        "bvalid": In(1), "bready": Out(1), "bid": In(id_width), "bresp": In(2),
    })


def axi_signature(*, addr_width: int = 40, data_width: int = 128, id_width: int = 4) -> wiring.Signature:
    """A whole AXI4 manager port (AR, R, AW, W, B): one HP port of the top level."""
    return wiring.Signature({**axi_read_signature(addr_width=addr_width, data_width=data_width,
                                                   id_width=id_width).members,
                             **axi_write_signature(addr_width=addr_width, data_width=data_width,
                                                   id_width=id_width).members})
