"""Activation movers (hw/act_mover.py): parameter and command checks, and cocotb tests under
Verilator (sim/tb/tb_act_mover.py, whose docstring lists what each covers).

One build holds two readers and two writers (:class:`ScratchMovers`) on a 128-bit bus whose
lanes cover all four width conversions: reader lanes 2 (an AXI beat split into 2 stream beats)
and 12 (3 AXI beats gathered into a stream beat of 12 floats), writer lanes 12 (split into 3
AXI beats) and 2 (2 stream beats gathered). The slow set adds equal widths and a 64-bit bus.
"""

import json

import pytest
from amaranth.back import verilog
from amaranth.hdl import Module
from amaranth.lib import wiring
from helpers import kwargs_id

from tellme.hw.act_mover import ScratchReader, ScratchWriter
from tellme.hw.compose import forward, prefixed_members
from tellme.sim.rtl import run_cocotb

TB = "tellme.sim.tb.tb_act_mover"


class ScratchMovers(wiring.Component):
    """Readers (ports ``r<i>_*``) and writers (``w<i>_*``) side by side, one build for all."""

    def __init__(self, *, readers, writers, data_width=128, writer_commands=None, **params):
        self.readers = [ScratchReader(lanes=n, data_width=data_width, **params) for n in readers]
        commands = writer_commands or [1] * len(writers)
        self.writers = [ScratchWriter(lanes=n, data_width=data_width, max_commands=k, **params)
                        for n, k in zip(writers, commands, strict=True)]
        members = {}
        for prefix, units in (("r", self.readers), ("w", self.writers)):
            for i, unit in enumerate(units):
                members.update(prefixed_members(unit, f"{prefix}{i}_"))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for prefix, units in (("r", self.readers), ("w", self.writers)):
            for i, unit in enumerate(units):
                m.submodules[f"{prefix}{i}"] = unit
                forward(m, self, f"{prefix}{i}_", unit)
        return m


@pytest.mark.parametrize("cls", [ScratchReader, ScratchWriter])
@pytest.mark.parametrize("kwargs,match", [
    (dict(lanes=3), "divide one another"),
    (dict(lanes=5, data_width=64), "divide one another"),
    (dict(lanes=0), "lanes: must be a positive integer"),
    (dict(lanes=4, data_width=96), "data_width"),
    (dict(lanes=4, max_burst=300), "max_burst"),
], ids=kwargs_id)
def test_parameters_are_checked(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [ScratchReader, ScratchWriter])
def test_parameters_are_keyword_only(cls):
    with pytest.raises(TypeError):
        cls(4)


def test_widths_and_commands():
    r = ScratchReader(lanes=12)                      # 384-bit beats on a 128-bit bus
    assert (r.ratio, r.row_unit) == (-3, 48)
    w = ScratchWriter(lanes=2, data_width=128)
    assert (w.ratio, w.row_unit) == (2, 16)
    same = ScratchReader(lanes=4)
    assert same.ratio == 1
    # one head's output (hd 96) into row t of a C x N buffer (N = 20 heads x 96)
    cmd = r.command(base=0x10_0000 + 3 * 96 * 4, rows=128, row_bytes=96 * 4, row_stride=20 * 96 * 4)
    assert cmd == {"base": 0x10_0000 + 1152, "rows": 128, "row_bytes": 384, "row_stride": 7680}
    for unit in (r, w, same):
        verilog.convert(unit, name="mover")            # elaborate them (and silence the warning)


#: (unit, its parameters, a command it refuses, message pattern)
REFUSED_COMMANDS = [
    (ScratchReader, dict(lanes=12), dict(base=0, rows=1, row_bytes=40, row_stride=0), "whole beats"),
    (ScratchWriter, dict(lanes=2, data_width=128), dict(base=8, rows=1, row_bytes=16, row_stride=16), "AXI beat"),
    (ScratchWriter, dict(lanes=2, data_width=128), dict(base=0, rows=2, row_bytes=16, row_stride=24), "AXI beat"),
    (ScratchWriter, dict(lanes=2, data_width=128), dict(base=0, rows=1 << 16, row_bytes=16, row_stride=16), "field"),
    (ScratchWriter, dict(lanes=4, addr_width=16), dict(base=0xFF00, rows=2, row_bytes=256, row_stride=256),
     "address space"),
]


@pytest.mark.parametrize("cls,params,command,match", REFUSED_COMMANDS, ids=kwargs_id)
def test_commands_are_checked(cls, params, command, match):
    unit = cls(**params)
    with pytest.raises(ValueError, match=match):
        unit.command(**command)
    verilog.convert(unit, name="mover")                # elaborates (and silences the warning)


#: w2 takes commands back to back (max_commands 4, as the MATMUL path's writer), beside w1 of
#: the same lanes one at a time.
DEFAULT = dict(readers=[2, 12], writers=[12, 2, 2], writer_commands=[1, 1, 4], data_width=128)
SLOW = [dict(readers=[4, 8], writers=[4, 8], data_width=128),
        dict(readers=[1, 4], writers=[4, 1], data_width=64, max_burst=16, max_outstanding=2)]


def _run(config, *, seed, commands, results=None):
    params = {k: v for k, v in config.items() if k in ("max_burst", "max_outstanding")}
    return run_cocotb(
        ScratchMovers(readers=config["readers"], writers=config["writers"],
                      writer_commands=config.get("writer_commands"), data_width=config["data_width"], **params),
        name="act_movers", test_module=TB,
        parameters={"readers": config["readers"], "writers": config["writers"],
                    "writer_commands": config.get("writer_commands", [1] * len(config["writers"])),
                    "data_width": config["data_width"], "seed": seed, "commands": commands,
                    "results": str(results) if results else ""})


@pytest.mark.rtl
def test_act_movers_rtl(tmp_path):
    results = tmp_path / "results.json"
    _run(DEFAULT, seed=5, commands=10, results=results)
    rate = json.loads(results.read_text())["full_rate"]
    print(json.dumps(rate, indent=1))
    # one beat per cycle on the narrower side (AxiRam never stalling): a few cycles of latency
    # and one AR/AW per row at most on top
    read, write = rate["read"], rate["write"]
    assert read["cycles_first_to_last"] <= max(read["axi_beats"], read["stream_beats"]) + 8
    assert write["cycles_cmd_to_done"] <= max(write["axi_beats"], write["stream_beats"]) + 40
    # back to back, 32 one-beat commands take far fewer cycles than one at a time
    short = json.loads(results.read_text())["full_rate"]["short_commands"]
    assert short["w2"]["cycles"] < 0.6 * short["w1"]["cycles"], short


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("config", SLOW, ids=["w128-eq", "w64-b16-o2"])
@pytest.mark.parametrize("seed", [11, 12])
def test_act_movers_sweep_rtl(config, seed):
    _run(config, seed=seed, commands=30)
