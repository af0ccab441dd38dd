"""Composition helpers: expose a submodule's ports as prefixed ports of the component that
holds it (test harnesses and simulation systems put several units behind one Verilog top), and
the pieces every step path repeats (its AXI manager ports, a command issued once per call)."""

from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from .axi import axi_read_signature, axi_write_signature

__all__ = ["prefixed_members", "forward", "silence_refused", "axi_ports", "issue_once"]


def axi_ports(*, reads=(), writes=(), addr_width: int, data_width: int) -> dict:
    """Signature members of a component's AXI managers, in this order: an
    ``Out(axi_read_signature(...))`` per name in ``reads``, then an
    ``Out(axi_write_signature(...))`` per name in ``writes``."""
    widths = dict(addr_width=addr_width, data_width=data_width)
    return {**{name: Out(axi_read_signature(**widths)) for name in reads},
            **{name: Out(axi_write_signature(**widths)) for name in writes}}


def issue_once(m, port, *, offer, sent) -> None:
    """Issue the command on stream ``port`` once per call: valid while ``offer`` and not yet
    ``sent``; ``sent`` (a 1-bit register the caller clears when a call starts) is set by the
    handshake, so the command is not offered again."""
    m.d.comb += port.valid.eq(offer & ~sent)
    with m.If(port.valid & port.ready):
        m.d.sync += sent.eq(1)


def silence_refused(owner) -> None:
    """For a component whose parameter checks refused it (call in the ``except`` before
    re-raising): Amaranth would also warn that it, and the units it had already made, were
    never elaborated; the error is the message that matters."""
    from amaranth.hdl import Elaboratable
    for unit in (owner, *vars(owner).values()):
        if isinstance(unit, Elaboratable):
            unit._MustUse__silence = True


def prefixed_members(inner: wiring.Component, prefix: str, names=None) -> dict:
    """``{prefix + name: member}`` for the members of ``inner`` (only ``names`` if given), for
    building the outer component's signature."""
    return {prefix + n: member for n, member in inner.signature.members.items() if names is None or n in names}


def forward(m, owner: wiring.Component, prefix: str, inner: wiring.Component, names=None) -> None:
    """Connect each member of ``inner`` (only ``names`` if given) to ``owner``'s member
    ``prefix + name``: interfaces with ``wiring.connect``, plain ports by assignment in the
    direction of their flow."""
    for name, member in inner.signature.members.items():
        if names is not None and name not in names:
            continue
        outer, sub = getattr(owner, prefix + name), getattr(inner, name)
        # An array member (``.array(n)``) is forwarded element by element.
        for o, s in (zip(outer, sub) if member.dimensions else [(outer, sub)]):
            if member.is_signature:
                if member.flow == Out:
                    wiring.connect(m, s, wiring.flipped(o))
                else:
                    wiring.connect(m, wiring.flipped(o), s)
            elif member.flow == Out:
                m.d.comb += o.eq(s)
            else:
                m.d.comb += s.eq(o)
