"""What the AXI4 read and write masters share: their parameter checks and the logic that cuts
byte-range commands into INCR bursts (at most ``max_burst`` beats, never across 4 KiB)."""

from amaranth.hdl import Module, Mux, Signal

__all__ = ["PAGE", "check_master_parameters", "IncrBursts"]

PAGE = 4096


def check_master_parameters(data_width, max_burst, max_outstanding) -> None:
    if data_width not in (32, 64, 128, 256, 512):
        raise ValueError(f"data_width must be 32..512 bits (power of two), got {data_width!r}")
    if not isinstance(max_burst, int) or not 1 <= max_burst <= 256:
        raise ValueError(f"max_burst must be 1..256 beats, got {max_burst!r}")
    if max_burst * data_width // 8 > PAGE:
        raise ValueError(f"a burst of {max_burst} x {data_width // 8} bytes exceeds 4 KiB")
    if not isinstance(max_outstanding, int) or not 1 <= max_outstanding <= 64:
        raise ValueError(f"max_outstanding must be 1..64, got {max_outstanding!r}")


class IncrBursts:
    """Builds, into ``m``, the burst generator of an AXI master: it takes a command
    {addr, beats} from the ``cmd`` stream when idle and presents its bursts one after another
    on (``addr``, ``length``, ``final``: the burst ends the command) with ``valid`` - the
    AR/AW VALID, raised from a register once ``room`` allows another burst in flight and held
    until ``ready`` (AR/AW READY), never derived from READY itself. ``issue`` is high in the
    handshake cycle. ``active``: a command is being split. ``shift``: log2 of the beat bytes.
    The burst fields change only at a handshake, so they are stable while ``valid`` waits."""

    def __init__(self, m: Module, cmd, *, addr_width: int, beat_bytes: int, max_burst: int, room, ready,
                 valid_name: str):
        self.shift = shift = beat_bytes.bit_length() - 1
        page_beats = PAGE // beat_bytes
        self.active = active = Signal(name="active")
        self.addr = addr = Signal(addr_width, name="addr")
        remaining = Signal(24, name="remaining")
        m.d.comb += cmd.ready.eq(~active)
        with m.If(cmd.valid & cmd.ready & (cmd.payload.beats != 0)):
            m.d.sync += [active.eq(1), addr.eq(cmd.payload.addr), remaining.eq(cmd.payload.beats)]
        # Beats to the next 4 KiB boundary, then the burst length.
        to_page = Signal(range(page_beats + 1), name="to_page")
        m.d.comb += to_page.eq(page_beats - addr[shift:12])
        self.length = length = Signal(range(max_burst + 1), name="length")
        limit = Mux(to_page < max_burst, to_page, max_burst)
        m.d.comb += length.eq(Mux(remaining < limit, remaining, limit))
        self.final = final = Signal(name="final")
        m.d.comb += final.eq(remaining == length)
        self.valid = valid = Signal(name=valid_name)
        self.issue = issue = Signal(name="issue")
        with m.If(~valid):
            with m.If(active & room):
                m.d.sync += valid.eq(1)
        with m.Elif(ready):
            m.d.comb += issue.eq(1)
            m.d.sync += [valid.eq(0), addr.eq(addr + (length << shift)), remaining.eq(remaining - length)]
            with m.If(final):
                m.d.sync += active.eq(0)
