"""Weight decode: per-port DDR weight streams -> TLMM lane words."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.formats import code_bits
from .axi import check_data_width

__all__ = ["TlmmWeightDecode", "codes_layout"]


def codes_layout(group: int, lanes: int) -> data.ArrayLayout:
    """One lane word: the code of every lane for one (block, row)."""
    return data.ArrayLayout(code_bits(group), lanes)


class TlmmWeightDecode(wiring.Component):
    """Joins the per-port weight streams of the DDR image into lane words.

    The image stores a projection as ``ports`` sub-streams (docs/architecture.md, section 5):
    port i carries, for each (block, row), the codes of lanes [i*P/ports, (i+1)*P/ports), packed
    little-endian at code_bits(G) bits and padded to whole ``beat_bits`` beats. This unit gathers
    each port's beats of one lane word, then emits the word with lane j's code in element j.

    Latency 1 cycle after the last beat of a word; throughput one lane word per
    ``beats_per_word`` cycles (1 for the KV260 default: G=5, P=64, 4 ports of 128 bits), with no
    bubble between words. Ports may deliver at different times; each is held (ready low) once it
    has delivered its share of the next word.

    Parameters (keyword-only): ``group`` (G), ``lanes`` (P), ``ports``, ``beat_bits``.

    Ports: ``beats[i]`` (``In(stream.Signature(beat_bits))`` for each port i); ``codes``
    (``Out(stream.Signature(codes_layout(group, lanes)))``).

    Cost: per port a gather register of ``beats_per_word`` beats (less the last, which passes
    straight through) and a beat counter; the lane word is a rewiring of those bits.
    """

    def __init__(self, *, group: int, lanes: int, ports: int, beat_bits: int = 128):
        if group not in (2, 3, 4, 5):
            raise ValueError(f"group must be 2, 3, 4 or 5, got {group!r}")
        check_positive_int("lanes", lanes)
        if not isinstance(ports, int) or ports < 1 or lanes % ports:
            raise ValueError(f"ports must be a positive divisor of lanes ({lanes}), got {ports!r}")
        check_data_width(beat_bits, "beat_bits")
        self.group, self.lanes, self.ports, self.beat_bits = group, lanes, ports, beat_bits
        self.lanes_per_port = lanes // ports
        self.bits = code_bits(group)
        self.beats_per_word = -(-self.lanes_per_port * self.bits // beat_bits)
        super().__init__({
            "beats": In(stream.Signature(beat_bits)).array(ports),
            "codes": Out(stream.Signature(codes_layout(group, lanes))),
        })

    def elaborate(self, platform):
        m = Module()
        bpw, lpp, bits = self.beats_per_word, self.lanes_per_port, self.bits

        gathered = [Signal(bpw * self.beat_bits, name=f"gathered{i}") for i in range(self.ports)]
        count = [Signal(range(bpw + 1), name=f"count{i}") for i in range(self.ports)]
        complete = [c == bpw for c in count]
        out_free = ~self.codes.valid | self.codes.ready
        # All shares present and the output register can take the word: hand it over this
        # cycle, and let every port start on the next word in the same cycle (no bubble).
        transfer = Signal()
        all_complete = complete[0]
        for c in complete[1:]:
            all_complete = all_complete & c
        m.d.comb += transfer.eq(all_complete & out_free)

        for i in range(self.ports):
            beat = self.beats[i]
            m.d.comb += beat.ready.eq(~complete[i] | transfer)
            with m.If(beat.valid & beat.ready):
                # Beats arrive oldest first: shift in at the top so beat k ends at bits k*beat_bits.
                if bpw == 1:
                    m.d.sync += gathered[i].eq(beat.payload)
                else:
                    m.d.sync += gathered[i].eq(
                        (gathered[i] >> self.beat_bits) | (beat.payload << ((bpw - 1) * self.beat_bits)))
                m.d.sync += count[i].eq(count[i] + 1)
                with m.If(transfer):
                    m.d.sync += count[i].eq(1)
            with m.Elif(transfer):
                m.d.sync += count[i].eq(0)

        with m.If(transfer):
            m.d.sync += self.codes.valid.eq(1)
            for i in range(self.ports):
                for j in range(lpp):
                    m.d.sync += self.codes.payload[i * lpp + j].eq(gathered[i][j * bits:(j + 1) * bits])
        with m.Elif(self.codes.ready):
            m.d.sync += self.codes.valid.eq(0)
        return m
