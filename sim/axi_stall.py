"""Random stalls on AXI channels, for simulation harnesses: a manager port connected to a
subordinate port through a gate that a testbench drives, one bit per channel.

While a channel's bit is set, neither side sees the other's valid or ready, so nothing moves on
that channel that cycle; payloads pass through unchanged. A testbench setting the bits at
random every cycle (:meth:`tellme.sim.tb.testbench.Testbench.random_bits`) puts pauses on every
channel independently, which AXI allows on either side of every handshake.
"""

from __future__ import annotations

from amaranth.lib import wiring

__all__ = ["STALL_CHANNELS", "connect_stalled"]

#: The channels a stall gate holds, in the order of its bits: (name, valid, ready).
STALL_CHANNELS = (("ar", "arvalid", "arready"), ("r", "rvalid", "rready"), ("aw", "awvalid", "awready"),
                  ("w", "wvalid", "wready"), ("b", "bvalid", "bready"))


def connect_stalled(m, manager, subordinate, stall=None) -> None:
    """Connect the members of ``subordinate`` (an AXI read, write or whole port, subordinate
    side) to the same-named members of ``manager``, gating each channel's valid and ready with
    its bit of ``stall`` (a value of ``len(STALL_CHANNELS)`` bits, see :data:`STALL_CHANNELS`;
    ``None``: a plain connection)."""
    gated = {}
    if stall is not None:
        for i, (_, valid, ready) in enumerate(STALL_CHANNELS):
            gated[valid] = gated[ready] = stall[i]
    for name in subordinate.signature.members:
        src, dst = (manager, subordinate) if manager.signature.members[name].flow == wiring.Out \
            else (subordinate, manager)
        value = getattr(src, name)
        if name in gated:
            value = value & ~gated[name]
        m.d.comb += getattr(dst, name).eq(value)
