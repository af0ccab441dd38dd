"""cocotbext-axi set-up shared by the testbenches.

AXI ports of an Amaranth component flatten to ``<prefix>__arvalid``, ``<prefix>__araddr``, ...
(the ``axi`` member of a unit: prefix ``axi``); cocotbext-axi finds them from the prefix with
a trailing ``_`` (``AxiReadBus.from_prefix(dut, "axi_")``). The functions here take the member
prefix without it:

- :func:`axi_ram_read` / :func:`axi_ram_write`: cocotbext-axi's RAM subordinates on a port, its
  log quiet, optionally filled with an image or sharing another RAM's memory;
- :func:`axi_master_read` / :func:`axi_master_write`: cocotbext-axi's managers, log quiet;
- :func:`random_pauses`: a random pause generator on every channel of such models, each with
  its own seed drawn from one ``random.Random``; :func:`set_pauses`: one channel's generator,
  or none (and then really none);
- :func:`axi_channel`: an AXI channel as a :data:`~.streams.Channel` for
  :class:`~.streams.HandshakeMonitor` (address fields recorded per handshake).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from .streams import Channel, random_pause

__all__ = ["axi_ram_read", "axi_ram_write", "axi_master_read", "axi_master_write", "random_pauses",
           "set_pauses", "axi_channel", "ADDRESS_FIELDS"]

#: Address channel fields a monitor usually records (``addr``, ``len``, ``size``, ``burst``).
ADDRESS_FIELDS = ("addr", "len", "size", "burst")
#: Channels of a read and of a write model, in the order :func:`random_pauses` seeds them.
_CHANNELS = ("ar_channel", "r_channel", "aw_channel", "w_channel", "b_channel")


def _quiet(model):
    model.log.setLevel("WARNING")
    return model


def axi_ram_read(dut, prefix: str, clock, size: int, *, reset=None, image: bytes | None = None, mem=None):
    """An ``AxiRamRead`` of ``size`` bytes on the read channels ``<prefix>__ar*``/``r*`` (reset
    ``dut.rst`` unless given), ``image`` written at address 0, or sharing ``mem`` (another RAM's
    ``mem``)."""
    from cocotbext.axi import AxiRamRead, AxiReadBus

    kwargs = {} if mem is None else {"mem": mem}
    ram = _quiet(AxiRamRead(AxiReadBus.from_prefix(dut, f"{prefix}_"), clock,
                            dut.rst if reset is None else reset, size=size, **kwargs))
    if image is not None:
        ram.write(0, bytes(image))
    return ram


def axi_ram_write(dut, prefix: str, clock, size: int, *, reset=None, image: bytes | None = None):
    """An ``AxiRamWrite`` of ``size`` bytes on ``<prefix>__aw*``/``w*``/``b*``, ``image`` written
    at address 0 (its initial contents)."""
    from cocotbext.axi import AxiRamWrite, AxiWriteBus

    ram = _quiet(AxiRamWrite(AxiWriteBus.from_prefix(dut, f"{prefix}_"), clock,
                             dut.rst if reset is None else reset, size=size))
    if image is not None:
        ram.write(0, bytes(image))
    return ram


def axi_master_read(dut, prefix: str, clock, *, reset=None):
    """An ``AxiMasterRead`` driving the read channels ``<prefix>__ar*``/``r*``."""
    from cocotbext.axi import AxiMasterRead, AxiReadBus

    return _quiet(AxiMasterRead(AxiReadBus.from_prefix(dut, f"{prefix}_"), clock,
                                dut.rst if reset is None else reset))


def axi_master_write(dut, prefix: str, clock, *, reset=None):
    """An ``AxiMasterWrite`` driving the write channels ``<prefix>__aw*``/``w*``/``b*``."""
    from cocotbext.axi import AxiMasterWrite, AxiWriteBus

    return _quiet(AxiMasterWrite(AxiWriteBus.from_prefix(dut, f"{prefix}_"), clock,
                                 dut.rst if reset is None else reset))


def random_pauses(models: Iterable, probability: float, rng: random.Random) -> None:
    """Pause every channel of the cocotbext-axi ``models`` (RAMs or managers) at random with
    ``probability``; the seeds are drawn from ``rng`` model by model, channel by channel in the
    order AR, R, AW, W, B (so the same ``rng`` gives the same pauses)."""
    for model in models:
        for name in _CHANNELS:
            channel = getattr(model, name, None)
            if channel is not None:
                channel.set_pause_generator(random_pause(probability, rng.randrange(1 << 30)))


def set_pauses(channel, generator: Iterable[bool] | None) -> None:
    """Pause the cocotbext-axi ``channel`` by ``generator`` (one truth value per cycle), or not
    at all (``None``). (cocotbext-axi's own ``set_pause_generator(None)`` stops the old generator
    but keeps the last value it set: a channel stopped mid-pause would stay paused for good.)"""
    channel.set_pause_generator(generator)
    if generator is None:
        channel.pause = False


def axi_channel(dut, prefix: str, channel: str, fields: Sequence[str] = ()) -> Channel:
    """The AXI channel ``channel`` (``"ar"``, ``"r"``, ``"aw"``, ``"w"``, ``"b"``) of the port
    ``prefix`` of ``dut`` as a monitor channel recording the payload ``fields`` (``"addr"`` is
    ``<prefix>__<channel>addr``)."""
    def get(name):
        return getattr(dut, f"{prefix}__{channel}{name}")
    return get("valid"), get("ready"), ({name: get(name) for name in fields} if fields else None)
