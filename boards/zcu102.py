"""AMD Zynq UltraScale+ MPSoC ZCU102 evaluation kit (xczu9eg-ffvb1156-2-e): no URAM, so the
weight buffer is built from block RAM."""

from ._zynqmp import ZynqMPPlatform

__all__ = ["ZCU102Platform"]


class ZCU102Platform(ZynqMPPlatform):
    name = "zcu102"
    rank = 3
    title = "ZCU102"
    device, package, speed = "xczu9eg", "ffvb1156", "2-e"
    board_part = "xilinx.com:zcu102:part0:3.4"
    board_part_pattern = "*:zcu102:part0:*"
    pl_resources = {"lut": 274080, "ff": 548160, "dsp": 2520, "bram36": 912, "uram": 0}
    ddr_bytes = 4 << 30
    ddr_peak_bytes_per_s = 17.1e9          # DDR4-2133, 64 bits (PS side)
    ddr_type = "DDR4-2133 x64"
    openfpgaloader_board = "zcu102"
    # Banks of 4 K lane words (512 bits) in block RAM: 2 x 2 Mbit (the KV260's are 2 x 4 Mbit of URAM).
    hardware = {"urams_per_bank": 8}
