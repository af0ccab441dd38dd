"""The base of the testbench objects: one per cocotb test, owning the clock, the reset and the
configuration (cocotbext-axi's own test pattern, ``class TB: def __init__(self, dut): ...``).

A testbench module ``tb_<unit>.py`` subclasses :class:`Testbench` with what its tests share
(stream sources and sinks, AXI models, monitors, the configuration read into attributes), and
every test starts with ``tb = UnitTB(dut, ...)``. Nothing is read from the environment at import
time except what ``cocotb.test(skip=...)`` needs (:func:`config_value`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from cocotb.triggers import RisingEdge

from . import record_result, tb_config
from .streams import PERIOD_NS, cycle_now, reset_dut, start_clock, start_watchdog, with_timeout

__all__ = ["Testbench", "config_value"]


def config_value(key: str, default: Any = None) -> Any:
    """One value of the test configuration (for decorators such as ``cocotb.test(skip=...)``,
    which run at import time; everything else reads ``Testbench.cfg``)."""
    return tb_config().get(key, default)


class Testbench:
    """A design under test with its clock started (``clk``, :data:`~.streams.PERIOD_NS`) and
    the configuration the pytest side passed (``cfg``, :func:`tellme.sim.tb.tb_config`, or
    ``config`` when given).

    :meth:`reset` holds the reset, :meth:`watchdog` bounds the whole test, :meth:`wait_until`
    waits for a condition with a bound, :meth:`record` writes a measurement to the
    configuration's ``results`` file, :meth:`hold_low` drives idle inputs.
    """

    def __init__(self, dut, *, config: dict | None = None, period_ns: int = PERIOD_NS):
        self.dut = dut
        self.log = dut._log
        self.cfg = dict(tb_config() if config is None else config)
        self.period_ns = period_ns
        self.clock = start_clock(dut, period_ns)

    def cycle(self) -> int:
        """The current cycle (:func:`~.streams.cycle_now`)."""
        return cycle_now(self.period_ns)

    async def reset(self, cycles: int = 2) -> None:
        """Hold ``rst`` for ``cycles`` cycles (:func:`~.streams.reset_dut`)."""
        await reset_dut(self.dut, self.clock, cycles)

    def watchdog(self, cycles: int, what: str = "test"):
        """Fail the test once ``cycles`` cycles pass (:func:`~.streams.start_watchdog`)."""
        return start_watchdog(self.clock, cycles, what)

    async def wait_until(self, condition: Callable[[], bool], cycles: int, what: str) -> None:
        """Return right after the first rising edge after the call at which ``condition()`` holds
        (first sampled at the next edge, so a ``done`` pulse the caller already saw does not
        count); :class:`~.streams.CycleTimeout` naming ``what`` after ``cycles`` cycles."""
        async def edges():
            while True:
                await RisingEdge(self.clock)
                if condition():
                    return
        await with_timeout(edges(), self.clock, cycles, what)

    def record(self, key: str, value: Any) -> None:
        """Merge ``{key: value}`` into the results file of the configuration (if any)."""
        record_result(self.cfg.get("results"), key, value)

    async def random_bits(self, name: str, probability: float, seed: int) -> None:
        """Forever: every cycle, each bit of the input ``dut.<name>`` set with ``probability``
        (random stalls of :mod:`tellme.sim.axi_stall` gates); start with ``cocotb.start_soon``."""
        signal = getattr(self.dut, name)
        rng, width = random.Random(seed), len(signal)
        while True:
            await RisingEdge(self.clock)
            signal.value = sum(1 << i for i in range(width) if rng.random() < probability)

    def hold_low(self, *names: str) -> None:
        """Drive the inputs ``dut.<name>`` to 0 (the idle state of valid, ready, strobes)."""
        for name in names:
            getattr(self.dut, name).value = 0
