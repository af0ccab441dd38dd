"""AMD Kria KV260 Vision AI Starter Kit: K26 SOM (xck26-sfvc784-2LV-c) on the KV260 carrier."""

from ._zynqmp import KRIA_FAN, ZynqMPPlatform

__all__ = ["KV260Platform"]


class KV260Platform(ZynqMPPlatform):
    name = "kv260"
    rank = 0
    title = "Kria KV260"
    device, package, speed = "xck26", "sfvc784", "2LV-c"
    board_part = "xilinx.com:kv260_som:part0:1.4"
    board_part_pattern = "*:kv260_som:part0:*"
    board_connections = (("som240_1_connector", "*:kv260_carrier:part0:*"),)
    pl_resources = {"lut": 117120, "ff": 234240, "dsp": 1248, "bram36": 144, "uram": 64}
    ddr_bytes = 4 << 30
    ddr_peak_bytes_per_s = 19.2e9          # DDR4-2400, 64 bits
    ddr_type = "DDR4-2400 x64"
    kria = True
    hardware = {}                          # the defaults of HardwareConfig are the KV260's

    resources = [KRIA_FAN]
