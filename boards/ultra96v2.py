"""Avnet Ultra96-V2 (xczu3eg-sbva484-1-i): no URAM, a small PL and 32-bit LPDDR4."""

from ._zynqmp import ZynqMPPlatform

__all__ = ["Ultra96V2Platform"]


class Ultra96V2Platform(ZynqMPPlatform):
    name = "ultra96v2"
    rank = 4
    title = "Ultra96-V2"
    device, package, speed = "xczu3eg", "sbva484", "1-i"
    board_part = "avnet.com:ultra96v2:part0:1.2"
    board_part_pattern = "*:ultra96v2:part0:*"      # later board files rename the vendor
    pl_resources = {"lut": 70560, "ff": 141120, "dsp": 360, "bram36": 216, "uram": 0}
    ddr_bytes = 2 << 30
    ddr_peak_bytes_per_s = 8.5e9           # LPDDR4-2133, 32 bits
    ddr_type = "LPDDR4-2133 x32"
    pl_clock_max_mhz = 250.0               # -1 speed grade
    # The smallest instance of every unit short of the simulation-only sim-small: a quarter of
    # the KV260's TLMM lanes, 4 element-wise lanes, one SiLU lane; a bank of 4 K lane words
    # (128 bits) in block RAM.
    hardware = {"clock_mhz": 200.0, "tlmm_lanes": 16, "tlmm_tokens": 2, "ew_lanes": 4, "gating_lanes": 1,
                "attn_tile": 16, "prefill_chunk": 64, "urams_per_bank": 2}
