"""AMD Kria KR260 Robotics Starter Kit: the K26 SOM (xck26-sfvc784-2LV-c) on the KR260 carrier."""

from ._zynqmp import KRIA_FAN, ZynqMPPlatform

__all__ = ["KR260Platform"]


class KR260Platform(ZynqMPPlatform):
    name = "kr260"
    rank = 1
    title = "Kria KR260"
    device, package, speed = "xck26", "sfvc784", "2LV-c"
    board_part = "xilinx.com:kr260_som:part0:1.1"
    board_part_pattern = "*:kr260_som:part0:*"
    board_connections = (("som240_1_connector", "*:kr260_carrier:part0:*"),
                         ("som240_2_connector", "*:kr260_carrier:part0:*"))
    pl_resources = {"lut": 117120, "ff": 234240, "dsp": 1248, "bram36": 144, "uram": 64}
    ddr_bytes = 4 << 30
    ddr_peak_bytes_per_s = 19.2e9
    ddr_type = "DDR4-2400 x64"
    kria = True
    hardware = {}

    resources = [KRIA_FAN]
