"""The common base of tellme's boards: a Zynq UltraScale+ MPSoC board as an Amaranth
:class:`~amaranth.vendor.XilinxPlatform` with what the generator, the estimator, the Vivado
build and the docs need to know about it.

A board file (``boards/kv260.py`` and its neighbours) subclasses :class:`ZynqMPPlatform` in the
style of amaranth-boards: the FPGA part (``device``, ``package``, ``speed``), the PL pins the
design drives (``resources``; the PS has no pins of its own here), and the facts below as class
attributes. :mod:`tellme.boards` collects them by :attr:`ZynqMPPlatform.name`; nothing else
has to change to add a board.

The PL clock and reset come from the PS (``pl_clk0`` from the IOPLL, ``pl_resetn0``) through
the block design, so a board has no ``default_clk``: the Vivado flow is Amaranth's own
(``XilinxPlatform.build``), with the PS block design entering through its ``script_after_read``
hook (``tellme.gen.build``).
"""

from __future__ import annotations

from amaranth.build import Attrs, PinsN, Resource
from amaranth.vendor import XilinxPlatform

from ..config import ConfigError, HardwareConfig

__all__ = ["ZynqMPPlatform", "PL_RESOURCE_KEYS", "KRIA_FAN"]

#: The PL resources a board budget is written in (the keys of :attr:`ZynqMPPlatform.pl_resources`).
PL_RESOURCE_KEYS = ("lut", "ff", "dsp", "bram36", "uram")


#: The K26 SOM's heatsink fan on the Kria carriers: fan_en_b on HDA20 (bank 45, SOM240_1 C24),
#: active low. Left undriven the fan stops under a PL design; the build drives it on (full speed).
KRIA_FAN = Resource("fan", 0, PinsN("A12", dir="o"), Attrs(IOSTANDARD="LVCMOS33", SLEW="SLOW", DRIVE="4"))


class ZynqMPPlatform(XilinxPlatform):
    """A Zynq UltraScale+ MPSoC board.

    Class attributes every board sets:

    - ``name``: the board's name on the command line (``--board``);
    - ``title``: its name for people;
    - ``device``, ``package``, ``speed``: the FPGA part (``xck26-sfvc784-2LV-c``);
    - ``board_part``: the Vivado board part as its board files name it today, for messages; the
      build looks the installed version up with ``get_board_parts -latest_file_version`` on
      ``board_part_pattern`` (board-file versions drift);
    - ``board_connections``: ``(connector, board-part pattern)`` pairs of a carrier (Kria), the
      carrier's installed version also looked up;
    - ``pl_resources``: LUT, FF, DSP48E2, BRAM36 and URAM288 of the device;
    - ``ddr_bytes``, ``ddr_peak_bytes_per_s``, ``ddr_type``: the PS DDR the PL reaches;
    - ``hp_ports``, ``hp_data_width``: the S_AXI_HP ports (S_AXI_GP2..5 in the PS IP) and
      their widest data bus;
    - ``ps_type``: the Vivado IP of the PS; ``pl_clock_max_mhz``: the fastest ``pl_clk0`` the
      build accepts for this speed grade (the DPU's figure on -2 parts);
    - ``kria``: a Kria SOM (the build also writes the ``xmutil loadapp`` firmware folder);
    - ``openfpgaloader_board``: the ``openFPGALoader --board`` name where it can load the PL
      over JTAG (``tellme deploy --jtag``), else ``None``;
    - ``hardware``: the :class:`~tellme.config.HardwareConfig` fields this board changes from
      the defaults (the KV260's), so ``tellme build --board B`` has a sensible instance;
    - ``rank``: where ``tellme info`` and the docs list the board (lower first).
    """

    name: str = None
    title: str = None
    board_part: str = None
    board_part_pattern: str = None
    board_connections: tuple[tuple[str, str], ...] = ()
    pl_resources: dict[str, int] = None
    ddr_bytes: int = None
    ddr_peak_bytes_per_s: float = None
    ddr_type: str = None
    hp_ports: int = 4
    hp_data_width: int = 128
    ps_type: str = "zynq_ultra_ps_e"
    pl_clock_max_mhz: float = 300.0
    kria: bool = False
    openfpgaloader_board: str | None = None
    hardware: dict = {}
    rank: int = 100

    default_clk = None
    default_rst = None
    resources = []
    connectors = []

    def __init__(self, *, toolchain: str = "Vivado"):
        super().__init__(toolchain=toolchain)

    # -- what the generator asks ----------------------------------------------------------------

    @property
    def part(self) -> str:
        """The FPGA part as Vivado names it."""
        return self._part

    @property
    def has_uram(self) -> bool:
        return self.pl_resources["uram"] > 0

    @property
    def weight_ram_style(self) -> str:
        """Where the weight buffer goes: ``"ultra"`` (URAM288) or ``"block"`` (BRAM36) on a
        device without URAM."""
        return "ultra" if self.has_uram else "block"

    def default_hardware(self) -> HardwareConfig:
        """The accelerator instance ``tellme build --board NAME`` uses without ``--hardware``."""
        return HardwareConfig(board=self.name, **self.hardware)

    def check_hardware(self, hw: HardwareConfig) -> None:
        """Raise :class:`ConfigError` if this board cannot host ``hw`` at all (resources aside:
        those are the estimate's to judge)."""
        if hw.clock_mhz > self.pl_clock_max_mhz:
            raise ConfigError(f"clock_mhz: {hw.clock_mhz:g} MHz is above what {self.title} gives the PL "
                              f"(pl_clk0 up to {self.pl_clock_max_mhz:g} MHz on {self.part})")
        if hw.hp_ports > self.hp_ports:
            raise ConfigError(f"hp_ports: {hw.hp_ports} ports, {self.title} has {self.hp_ports} S_AXI_HP ports")
        if hw.axi_data_width > self.hp_data_width:
            raise ConfigError(f"axi_data_width: {hw.axi_data_width} bits, the S_AXI_HP ports of {self.title} "
                              f"are at most {self.hp_data_width} bits wide")

    def describe(self) -> dict:
        """The board's facts as a JSON-able dict (``tellme info``, build plans, docs)."""
        return {
            "name": self.name, "title": self.title, "part": self.part, "board_part": self.board_part,
            "board_connections": [list(c) for c in self.board_connections],
            "pl_resources": dict(self.pl_resources), "ddr_bytes": self.ddr_bytes,
            "ddr_peak_gb_per_s": self.ddr_peak_bytes_per_s / 1e9, "ddr_type": self.ddr_type,
            "hp_ports": self.hp_ports, "hp_data_width": self.hp_data_width, "ps_type": self.ps_type,
            "pl_clock_max_mhz": self.pl_clock_max_mhz, "kria": self.kria,
            "openfpgaloader_board": self.openfpgaloader_board, "weight_ram_style": self.weight_ram_style,
        }
