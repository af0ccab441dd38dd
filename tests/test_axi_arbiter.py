"""The AXI4 read and write arbiters: parameter checks, and under Verilator the cocotb tests in
``sim/tb/tb_axi_arbiter.py``.

One build per parameter set holds a read and a write arbiter side by side
(:class:`AxiArbiters`), their manager ports driven by cocotbext-axi managers and their shared
ports ending in a cocotbext-axi RAM with error pages.
"""

import inspect
import json

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment
from helpers import ReadWritePair, kwargs_id

from tellme.config import ConfigError
from tellme.hw.axi_arbiter import AxiReadArbiter, AxiWriteArbiter
from tellme.sim.rtl import run_cocotb


class AxiArbiters(ReadWritePair):
    """An AxiReadArbiter (ports ``rd_mgr``, ``rd_axi``) and an AxiWriteArbiter (``wr_mgr``,
    ``wr_axi``) with the same parameters, for testing both with one build."""

    def __init__(self, **params):
        super().__init__(AxiReadArbiter(**params), AxiWriteArbiter(**params))


def _run(managers, data_width, max_outstanding, *, seed, transfers, testcase=None, results=None):
    return run_cocotb(
        AxiArbiters(managers=managers, data_width=data_width, max_outstanding=max_outstanding),
        name="axi_arbiters", test_module="tellme.sim.tb.tb_axi_arbiter", testcase=testcase,
        parameters={"managers": managers, "data_width": data_width, "max_outstanding": max_outstanding,
                    "seed": seed, "transfers": transfers, "results": str(results) if results else ""})


@pytest.mark.rtl
def test_axi_arbiters(tmp_path):
    results = tmp_path / "results.json"
    result = _run(3, 128, 4, seed=11, transfers=24, results=results)
    assert set(result.tests.values()) == {"passed"}, result.tests
    print(results.read_text())
    fairness = json.loads(results.read_text())["fairness"]
    for side in ("read", "write"):
        counts = fairness["rd" if side == "read" else "wr"]
        assert counts["beats"] > 0, (side, counts)


#: (managers, data_width, max_outstanding)
SLOW_CONFIGS = [(2, 64, 1), (4, 128, 8), (2, 256, 2), (4, 32, 3), (3, 512, 5), (1, 128, 2)]


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("managers,data_width,max_outstanding", SLOW_CONFIGS,
                         ids=[f"m{m}-w{w}-o{o}" for m, w, o in SLOW_CONFIGS])
@pytest.mark.parametrize("seed", [101, 202])
def test_axi_arbiters_sweep(managers, data_width, max_outstanding, seed):
    result = _run(managers, data_width, max_outstanding, seed=seed, transfers=24)
    assert set(result.tests.values()) == {"passed"}, result.tests


@pytest.mark.parametrize("cls", [AxiReadArbiter, AxiWriteArbiter])
def test_parameters(cls):
    arbiter = cls(managers=2)
    assert (arbiter.managers, arbiter.max_outstanding, arbiter.data_width) == (2, 8, 128)
    assert len(arbiter.mgr) == 2
    Fragment.get(arbiter, None)
    assert all(p.kind == p.KEYWORD_ONLY for p in inspect.signature(cls).parameters.values())


#: (keyword arguments, error, message pattern): a value of the wrong kind is named first
REFUSED = [({"managers": 2, name: value}, ConfigError, f"^{name}:")
           for name, value in [("managers", 0), ("managers", True), ("managers", 2.0), ("max_outstanding", 0),
                               ("max_outstanding", -3), ("data_width", None), ("addr_width", "40"),
                               ("id_width", 0)]]
REFUSED += [
    (dict(managers=33), ValueError, "managers must be at most"),
    (dict(managers=2, max_outstanding=257), ValueError, "max_outstanding must be at most"),
    (dict(managers=2, data_width=100), ValueError, "data_width"),
    (dict(managers=2, addr_width=8), ValueError, "addr_width"),
]


@pytest.mark.parametrize("cls", [AxiReadArbiter, AxiWriteArbiter])
@pytest.mark.parametrize("kwargs,error,match", REFUSED, ids=kwargs_id)
def test_parameters_are_checked(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [AxiReadArbiter, AxiWriteArbiter])
@pytest.mark.parametrize("managers", [1, 2, 5])
def test_converts(cls, managers):
    text = verilog.convert(cls(managers=managers, data_width=64, addr_width=32, max_outstanding=3), name="arbiter")
    assert f"mgr__{managers - 1}__{'ar' if cls is AxiReadArbiter else 'aw'}valid" in text
