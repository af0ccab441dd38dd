"""AXI4-Lite register file generated from the register map (``tellme.contract.regmap``)."""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..contract.regmap import REGISTER_MAP, RegisterMap
from .axi import RESP_OKAY, axi_lite_signature

__all__ = ["RegisterFile", "field_port_names"]


def field_port_names(reg, fld) -> dict[str, str]:
    """Core-side port names of a field: {'value': ..., 'set': ...} as they apply."""
    base = f"{reg.name.lower()}_{fld.name.lower()}"
    if fld.access == "w1c":
        return {"value": base, "set": base + "_set"}
    return {"value": base}


class RegisterFile(wiring.Component):
    """The register map behind an AXI4-Lite subordinate port ``bus``.

    Core side, per field (``<register>_<field>`` in lower case): ``rw`` fields are outputs
    holding the written value (reset value after reset); ``ro`` fields are inputs read back as
    they are; ``w1c`` fields are outputs, set by a pulse on input ``<name>_set`` (bit-wise) and
    cleared by writing 1 (set wins over a clear in the same cycle); ``sc`` fields are outputs
    pulsing for one cycle when 1 is written. Writes honour ``wstrb`` per byte. Reserved bits and
    unmapped addresses read 0 and ignore writes; every access gets an OKAY response.

    ``constants`` maps ``"REGISTER.FIELD"`` to a value for read-only fields fixed at generation
    (capabilities, sizes, the configuration hash): those read the constant and have no port.
    ``ID.ID`` is always the map's ``id_value``.

    Timing: a write completes (B response) one cycle after both its AW and W are valid; a read
    answers one cycle after AR. One access of each kind in flight.

    Cost: a flip-flop per ``rw``/``w1c`` bit, the read multiplexer over the map and the
    address/response registers of the two channels.
    """

    def __init__(self, regmap: RegisterMap = REGISTER_MAP, *, addr_width: int = 12, constants=None):
        if (1 << addr_width) < regmap.size:
            raise ValueError(f"addr_width {addr_width} cannot address the map's {regmap.size:#x} bytes")
        self.regmap = regmap
        self.constants = {"ID.ID": regmap.id_value, **(constants or {})}
        for key, value in self.constants.items():
            reg_name, _, fld_name = key.partition(".")
            try:
                fld = regmap[reg_name].field(fld_name)
            except KeyError:
                raise ValueError(f"constants: no field {key}") from None
            if fld.access != "ro":
                raise ValueError(f"constants: {key} is not read-only")
            if not 0 <= value < (1 << fld.width):
                raise ValueError(f"constants: {key} = {value} does not fit {fld.width} bits")
        members = {"bus": In(axi_lite_signature(addr_width=addr_width, data_width=32))}
        for reg in regmap.registers:
            for fld in reg.fields:
                if f"{reg.name}.{fld.name}" in self.constants:
                    continue
                names = field_port_names(reg, fld)
                if fld.access == "ro":
                    members[names["value"]] = In(fld.width)
                else:
                    members[names["value"]] = Out(fld.width, init=fld.reset)
                if fld.access == "w1c":
                    members[names["set"]] = In(fld.width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus

        # -- writes: take AW and W together
        write = Signal()
        m.d.comb += write.eq(bus.awvalid & bus.wvalid & ~bus.bvalid)
        m.d.comb += [bus.awready.eq(write), bus.wready.eq(write)]
        with m.If(write):
            m.d.sync += [bus.bvalid.eq(1), bus.bresp.eq(RESP_OKAY)]
        with m.Elif(bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        word = bus.awaddr[2:]
        strobe_mask = Cat(*[bus.wstrb[i].replicate(8) for i in range(4)])

        for reg in self.regmap.registers:
            hit = write & (word == reg.offset // 4)
            for fld in reg.fields:
                if fld.access == "ro":
                    continue
                names = field_port_names(reg, fld)
                bits = slice(fld.lsb, fld.lsb + fld.width)
                wdata, wmask = bus.wdata[bits], strobe_mask[bits]
                value = getattr(self, names["value"])
                if fld.access == "rw":
                    with m.If(hit):
                        m.d.sync += value.eq((value & ~wmask) | (wdata & wmask))
                elif fld.access == "sc":
                    m.d.sync += value.eq(Mux_hit(hit, wdata & wmask))
                elif fld.access == "w1c":
                    clear = Signal(fld.width, name=f"{names['value']}_clear")
                    with m.If(hit):
                        m.d.comb += clear.eq(wdata & wmask)
                    m.d.sync += value.eq((value & ~clear) | getattr(self, names["set"]))

        # -- reads
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(RESP_OKAY), bus.rdata.eq(0)]
            with m.Switch(bus.araddr[2:]):
                for reg in self.regmap.registers:
                    with m.Case(reg.offset // 4):
                        parts = []
                        for fld in reg.fields:
                            key = f"{reg.name}.{fld.name}"
                            if key in self.constants:
                                value = Const(self.constants[key], fld.width)
                            elif fld.access == "sc":
                                value = Const(0, fld.width)
                            else:
                                value = getattr(self, field_port_names(reg, fld)["value"])
                            parts.append((fld.lsb, value))
                        word_value = 0
                        for lsb, v in parts:
                            word_value = word_value | (v.as_unsigned() << lsb if lsb else v.as_unsigned())
                        m.d.sync += bus.rdata.eq(word_value)
        with m.Elif(bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        m.d.comb += bus.arready.eq(~bus.rvalid)
        return m


def Mux_hit(hit, value):
    """value where the register is written this cycle, else 0 (a one-cycle pulse)."""
    return value & hit.replicate(len(value))
