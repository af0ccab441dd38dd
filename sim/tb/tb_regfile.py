"""cocotb tests of :class:`tellme.hw.regfile.RegisterFile` through cocotbext-axi's AxiLiteMaster,
with random pauses on every AXI4-Lite channel. Expectations come from the same register map
description (``tellme.contract.regmap``) and the host's field logic (``RegisterMap.decode``/``encode_write``)."""

import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from ...contract.regmap import REGISTER_MAP
from ...hw.regfile import field_port_names
from .axi import random_pauses
from .streams import DoneCounter
from .testbench import Testbench

MAP = REGISTER_MAP


class RegfileTB(Testbench):
    """The register file behind cocotbext-axi's AxiLiteMaster (``master``) with random pauses on
    every channel, seeded (``rng``) from the configuration's ``seed`` (``default_seed`` if none),
    its core-side inputs quiet; ``constants``: the fields the design ties to constants (ID and
    the configuration's ``constants``). :meth:`start` resets it."""

    def __init__(self, dut, default_seed: int):
        super().__init__(dut)
        self.constants = {"ID.ID": MAP.id_value, **self.cfg.get("constants", {})}
        self.watchdog(200_000, "register file test")
        self.master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "bus_"), dut.clk, dut.rst)
        self.rng = random.Random(self.cfg.get("seed", default_seed))
        random_pauses([self.master.write_if, self.master.read_if], 0.3, self.rng)
        for reg in MAP.registers:                  # quiet core-side inputs
            for fld in reg.fields:
                if f"{reg.name}.{fld.name}" in self.constants:
                    continue
                names = field_port_names(reg, fld)
                if fld.access == "ro":
                    getattr(dut, names["value"]).value = 0
                if fld.access == "w1c":
                    getattr(dut, names["set"]).value = 0

    async def start(self):
        await self.reset()
        return self.master, self.rng


async def read32(master, offset):
    return int.from_bytes((await master.read(offset, 4)).data, "little")


async def write32(master, offset, value, strobe_bytes=None):
    data = value.to_bytes(4, "little")
    if strobe_bytes is None:
        await master.write(offset, data)
    else:                                          # one byte lane at a time
        for i in strobe_bytes:
            await master.write(offset + i, data[i:i + 1])


@cocotb.test()
async def rw_ro_reserved_and_unmapped(dut):
    """RW fields hold what was written (per byte strobe), RO fields read the core, reserved
    bits and unmapped words read 0."""
    tb = RegfileTB(dut, 1)
    master, rng = await tb.start()
    assert await read32(master, MAP["ID"].offset) == MAP.id_value
    for reg in MAP.registers:
        # RO inputs from the core
        expect_ro = 0
        for fld in reg.fields:
            key = f"{reg.name}.{fld.name}"
            if key in tb.constants:
                expect_ro |= tb.constants[key] << fld.lsb
            elif fld.access == "ro":
                v = rng.getrandbits(fld.width)
                getattr(dut, field_port_names(reg, fld)["value"]).value = v
                expect_ro |= v << fld.lsb
        # write all ones: only writable RW bits stick (W1C/SC bits are not RW state)
        await write32(master, reg.offset, 0xFFFFFFFF)
        await ClockCycles(dut.clk, 2)
        rw_mask = sum(f.mask for f in reg.fields if f.access == "rw")
        w1c_mask = sum(f.mask for f in reg.fields if f.access == "w1c")
        got = await read32(master, reg.offset)
        assert got & ~reg.defined_mask == 0, f"{reg.name}: reserved bits read {got:#x}"
        assert got & rw_mask == rw_mask, f"{reg.name}: RW bits {got:#x} after writing all ones"
        assert got & w1c_mask == 0
        ro_mask = sum(f.mask for f in reg.fields if f.access == "ro")
        assert got & ro_mask == expect_ro, f"{reg.name}: RO bits {got & ro_mask:#x}, core drives {expect_ro:#x}"
        # random value through byte strobes, in a random byte order
        if rw_mask:
            value = rng.getrandbits(32)
            lanes = list(range(4))
            rng.shuffle(lanes)
            await write32(master, reg.offset, value, strobe_bytes=lanes)
            got = await read32(master, reg.offset)
            assert got & rw_mask == value & rw_mask, f"{reg.name}: {got:#x} after writing {value:#x}"
            # the core sees exactly the fields the host wrote
            fields = MAP.decode(reg.name, got)
            for fld in reg.fields:
                if fld.access == "rw":
                    port = getattr(dut, field_port_names(reg, fld)["value"])
                    assert int(port.value) == fields[fld.name], f"{reg.name}.{fld.name} on the core side"
    used = {r.offset for r in MAP.registers}
    for offset in range(0, 0x100, 4):
        if offset not in used:
            await write32(master, offset, 0xFFFFFFFF)
            assert await read32(master, offset) == 0, f"unmapped {offset:#x} reads non-zero"


@cocotb.test()
async def w1c_and_self_clearing(dut):
    """DONE/ERROR are set by the core and cleared by writing 1 (set wins); START pulses once."""
    master, rng = await RegfileTB(dut, 2).start()
    status = MAP["STATUS"]
    done = status.field("DONE")
    set_port = getattr(dut, field_port_names(status, done)["set"])
    set_port.value = 1
    await RisingEdge(dut.clk)
    set_port.value = 0
    assert MAP.decode("STATUS", await read32(master, status.offset))["DONE"] == 1
    # writing 0 leaves it, writing 1 clears it
    await write32(master, status.offset, 0)
    assert MAP.decode("STATUS", await read32(master, status.offset))["DONE"] == 1
    await write32(master, status.offset, MAP.encode_write("STATUS", {"DONE": 1}))
    assert MAP.decode("STATUS", await read32(master, status.offset))["DONE"] == 0

    # START: count pulses on the core side while the host writes CONTROL
    control = MAP["CONTROL"]
    start = getattr(dut, field_port_names(control, control.field("START"))["value"])
    pulses = DoneCounter(dut.clk, start)
    for i in range(5):
        await write32(master, control.offset, MAP.encode_write("CONTROL", {"START": 1}, current=0))
    await write32(master, control.offset, MAP.encode_write("CONTROL", {"IRQ_ENABLE": 1}))
    await ClockCycles(dut.clk, 5)
    pulses.stop()
    assert len(pulses.cycles) == 5, f"{len(pulses.cycles)} START pulses for 5 writes"
    word = await read32(master, control.offset)
    assert MAP.decode("CONTROL", word) == {"START": 0, "SOFT_RESET": 0, "IRQ_ENABLE": 1}
