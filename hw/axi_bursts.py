"""What the AXI4 read and write masters share: their parameters, command stream and common
ports (:class:`AxiMaster`), and the logic that cuts byte-range commands into INCR bursts on the
AR or AW channel (at most ``max_burst`` beats, never across 4 KiB)."""

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract.layouts import PAGE
from .axi import BURST_INCR, RESP_OKAY, check_data_width

__all__ = ["BEAT_COUNT", "command_layout", "check_master_parameters", "AxiMaster", "IncrBursts"]

#: Shape of a master command's beat count: up to 2^24 - 1 beats (256 MiB at 128 bits) per
#: command.
BEAT_COUNT = unsigned(24)

#: Address bits within a 4 KiB page (bursts never cross one).
PAGE_BITS = PAGE.bit_length() - 1


def command_layout(addr_width: int) -> data.StructLayout:
    """Move ``beats`` beats starting at ``addr`` (aligned to the beat size)."""
    return data.StructLayout({"addr": unsigned(addr_width), "beats": BEAT_COUNT})


def check_master_parameters(data_width, max_burst, max_outstanding) -> None:
    check_data_width(data_width)
    if not isinstance(max_burst, int) or not 1 <= max_burst <= 256:
        raise ValueError(f"max_burst must be 1..256 beats, got {max_burst!r}")
    if max_burst * data_width // 8 > PAGE:
        raise ValueError(f"a burst of {max_burst} x {data_width // 8} bytes exceeds 4 KiB")
    if not isinstance(max_outstanding, int) or not 1 <= max_outstanding <= 64:
        raise ValueError(f"max_outstanding must be 1..64, got {max_outstanding!r}")


class AxiMaster(wiring.Component):
    """Parameters and common ports of the AXI4 masters: ``cmd`` (In stream,
    :func:`command_layout`), the subclass's data stream (and ``done``; :meth:`_own_members`),
    ``axi`` (Out, the subclass's ``_axi_signature``), ``error`` (Out 1, sticky), ``clear_error``
    (In 1) and ``busy`` (Out 1)."""

    def __init__(self, *, data_width: int = 128, addr_width: int = 40, id_width: int = 4,
                 max_burst: int = 256, max_outstanding: int = 4):
        check_master_parameters(data_width, max_burst, max_outstanding)
        self.data_width, self.addr_width, self.id_width = data_width, addr_width, id_width
        self.max_burst, self.max_outstanding = max_burst, max_outstanding
        self.beat_bytes = data_width // 8
        super().__init__({
            "cmd": In(stream.Signature(command_layout(addr_width))),
            **self._own_members(data_width),
            "axi": Out(self._axi_signature(addr_width=addr_width, data_width=data_width, id_width=id_width)),
            "error": Out(1),
            "clear_error": In(1),
            "busy": Out(1),
        })

    def _track_errors(self, m: Module, response, resp) -> None:
        """The sticky ``error``: set by a response (``response``: R beat or B handshake) whose
        ``resp`` is not OKAY, cleared by ``clear_error`` (a new error wins)."""
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        with m.If(response & (resp != RESP_OKAY)):
            m.d.sync += self.error.eq(1)


class IncrBursts:
    """Builds, into ``m``, the burst generator of an AXI master and drives the address channel
    ``channel`` (``"ar"`` or ``"aw"``) of ``axi`` with it: it takes a command {addr, beats} from
    the ``cmd`` stream when idle and presents its bursts one after another (``addr``,
    ``length``, ``final``: the burst ends the command) with ``valid`` - AxVALID, raised from a
    register once ``room`` allows another burst in flight and held until AxREADY, never derived
    from READY itself. ``issue`` is high in the handshake cycle. ``active``: a command is being
    split; ``remaining``: its beats not yet in an issued burst. ``shift``: log2 of the beat
    bytes. The burst fields change only at a handshake, so they are stable while ``valid``
    waits. Every burst is INCR with ID 0, AxCACHE 0b0011 (normal non-cacheable bufferable),
    unprivileged, unlocked, no QoS."""

    def __init__(self, m: Module, cmd, axi, channel: str, *, addr_width: int, beat_bytes: int, max_burst: int,
                 room):
        ready = getattr(axi, f"{channel}ready")
        self.shift = shift = beat_bytes.bit_length() - 1
        page_beats = PAGE // beat_bytes
        self.active = active = Signal(name="active")
        self.addr = addr = Signal(addr_width, name="addr")
        self.remaining = remaining = Signal(BEAT_COUNT, name="remaining")
        m.d.comb += cmd.ready.eq(~active)
        with m.If(cmd.valid & cmd.ready & (cmd.payload.beats != 0)):
            m.d.sync += [active.eq(1), addr.eq(cmd.payload.addr), remaining.eq(cmd.payload.beats)]
        # Beats to the next 4 KiB boundary, then the burst length.
        to_page = Signal(range(page_beats + 1), name="to_page")
        m.d.comb += to_page.eq(page_beats - addr[shift:PAGE_BITS])
        self.length = length = Signal(range(max_burst + 1), name="length")
        limit = Mux(to_page < max_burst, to_page, max_burst)
        m.d.comb += length.eq(Mux(remaining < limit, remaining, limit))
        self.final = final = Signal(name="final")
        m.d.comb += final.eq(remaining == length)
        self.valid = valid = Signal(name=f"{channel}valid")
        self.issue = issue = Signal(name="issue")
        with m.If(~valid):
            with m.If(active & room):
                m.d.sync += valid.eq(1)
        with m.Elif(ready):
            m.d.comb += issue.eq(1)
            m.d.sync += [valid.eq(0), addr.eq(addr + (length << shift)), remaining.eq(remaining - length)]
            with m.If(final):
                m.d.sync += active.eq(0)

        def ax(name):
            return getattr(axi, channel + name)
        m.d.comb += [
            ax("valid").eq(valid), ax("addr").eq(addr), ax("len").eq(length - 1),
            ax("size").eq(shift), ax("burst").eq(BURST_INCR),
            ax("id").eq(0), ax("cache").eq(0b0011), ax("prot").eq(0), ax("lock").eq(0), ax("qos").eq(0),
        ]
