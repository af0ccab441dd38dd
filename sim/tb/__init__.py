"""cocotb testbenches for the units in :mod:`tellme.hw`.

Each ``tb_<unit>.py`` module here holds the cocotb tests of one unit (the benchmarks' own
testbenches too: ``tb_tlmm_bench``, ``tb_weight_buffer_bench``); pytest or a benchmark starts
them through :func:`tellme.sim.rtl.run_cocotb`, which builds the unit under Verilator and runs
the module inside the simulator. What they share:

- :mod:`~tellme.sim.tb.streams`: stream sources and sinks, pause generators, clock, reset and
  timeouts, :class:`~tellme.sim.tb.streams.HandshakeMonitor` (cycle and payload of every beat on
  any valid/ready channel), :class:`~tellme.sim.tb.streams.DoneCounter`, the scoreboard
  :func:`~tellme.sim.tb.streams.expect_beats`;
- :mod:`~tellme.sim.tb.testbench`: :class:`~tellme.sim.tb.testbench.Testbench`, the base of the
  per-test objects (``tb = UnitTB(dut)``: clock, reset, watchdog, configuration, results);
- :mod:`~tellme.sim.tb.axi`: cocotbext-axi RAMs and managers with random pauses, AXI channels
  for the monitor; :mod:`~tellme.sim.tb.ddr`: the DDR model's memory through VPI;
- :mod:`~tellme.sim.tb.attention_common`: KV-cache layout, stimulus and output checks of the
  attention testbenches.

Configuration travels from pytest to the testbench as one JSON object in the environment variable
:data:`CONFIG_ENV`; a test reads it with :func:`tb_config`. This module imports neither cocotb
nor Amaranth, so both sides can use it.
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["CONFIG_ENV", "tb_config", "record_result"]

#: Environment variable holding the JSON configuration that ``run_cocotb(parameters=...)`` sends.
CONFIG_ENV = "TELLME_TB_CONFIG"


def tb_config() -> dict[str, Any]:
    """Return the configuration the pytest side passed to this simulation (``{}`` if none)."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        return {}
    config = json.loads(text)
    if not isinstance(config, dict):
        raise ValueError(f"{CONFIG_ENV} must hold a JSON object, got {type(config).__name__}")
    return config


def record_result(path: str | os.PathLike | None, key: str, value: Any) -> None:
    """Merge ``{key: value}`` into the JSON results file ``path`` (a test's measurements for
    the pytest side or a benchmark); nothing when ``path`` is empty or None."""
    if not path:
        return
    try:
        with open(path) as f:
            results = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        results = {}
    results[key] = value
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
