"""cocotb tests of :func:`tellme.sim.rtl.run_cocotb` itself, used only by tests/test_rtl_smoke.py.

They check nothing of the design (any ``dut`` will do): ``runner_passes`` passes, the other two
are skipped (one marked ``skip=True``, one skipping itself at run time), which run_cocotb must
report as a failure. So this module never passes as a whole; the tests request its tests by name.
"""

from __future__ import annotations

import cocotb
import pytest
from cocotb.triggers import Timer


@cocotb.test()
async def runner_passes(dut):
    """Passes after 10 ns of simulated time."""
    await Timer(10, "ns")


@cocotb.test()
async def runner_skips_itself(dut):
    """Skipped at run time (cocotb counts ``pytest.skip`` as a skip, even when requested)."""
    await Timer(10, "ns")
    pytest.skip("tb_runner_checks: this test skips itself")


@cocotb.test(skip=True)
async def runner_marked_skip(dut):
    """Marked skipped: a run of the whole module skips it (a request by name would run it)."""
    raise AssertionError("runner_marked_skip ran although it is marked skip=True")
