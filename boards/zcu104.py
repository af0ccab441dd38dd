"""AMD Zynq UltraScale+ MPSoC ZCU104 evaluation kit (xczu7ev-ffvc1156-2-e)."""

from ._zynqmp import ZynqMPPlatform

__all__ = ["ZCU104Platform"]


class ZCU104Platform(ZynqMPPlatform):
    name = "zcu104"
    rank = 2
    title = "ZCU104"
    device, package, speed = "xczu7ev", "ffvc1156", "2-e"
    board_part = "xilinx.com:zcu104:part0:1.1"
    board_part_pattern = "*:zcu104:part0:*"
    pl_resources = {"lut": 230400, "ff": 460800, "dsp": 1728, "bram36": 312, "uram": 96}
    ddr_bytes = 2 << 30
    ddr_peak_bytes_per_s = 17.1e9          # DDR4-2133, 64 bits
    ddr_type = "DDR4-2133 x64"
    hardware = {}
