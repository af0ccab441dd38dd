"""The AXI4 read/write masters under Verilator: cocotb tests in ``sim/tb/tb_axi.py``.

One build per parameter set holds a read and a write master side by side (:class:`AxiMasters`),
so each configuration costs one Verilator build. The four default configurations form a
two-level orthogonal array over data width (128/64), max_burst (256/16) and max_outstanding
(4/1): every pair of values appears together once.
"""

import json

import pytest
from helpers import ReadWritePair

from tellme.hw.axi_read import AxiReadMaster
from tellme.hw.axi_write import AxiWriteMaster
from tellme.sim.rtl import run_cocotb


class AxiMasters(ReadWritePair):
    """An AxiReadMaster (ports ``rd_*``) and an AxiWriteMaster (ports ``wr_*``) with the same
    parameters, for testing both with one build."""

    def __init__(self, **params):
        super().__init__(AxiReadMaster(**params), AxiWriteMaster(**params))


#: (data_width, max_burst, max_outstanding)
CONFIGS = [(128, 256, 4), (128, 16, 1), (64, 256, 1), (64, 16, 4)]
SLOW_CONFIGS = [(128, 256, 1), (128, 16, 4), (64, 256, 4), (64, 16, 1), (128, 64, 2)]


def _run(data_width, max_burst, max_outstanding, *, seed, commands, testcase=None, results=None):
    return run_cocotb(
        AxiMasters(data_width=data_width, max_burst=max_burst, max_outstanding=max_outstanding),
        name="axi_masters", test_module="tellme.sim.tb.tb_axi", testcase=testcase,
        parameters={"data_width": data_width, "max_burst": max_burst, "max_outstanding": max_outstanding,
                    "seed": seed, "commands": commands, "full_rate_beats": 4096,
                    "results": str(results) if results else ""})


@pytest.mark.rtl
@pytest.mark.parametrize("data_width,max_burst,max_outstanding", CONFIGS,
                         ids=[f"w{w}-b{b}-o{o}" for w, b, o in CONFIGS])
def test_axi_masters(data_width, max_burst, max_outstanding, tmp_path):
    results = tmp_path / "results.json"
    _run(data_width, max_burst, max_outstanding, seed=data_width + max_burst + max_outstanding,
         commands=24, results=results)
    full_rate = json.loads(results.read_text())
    print(json.dumps(full_rate))
    # one beat per cycle but for the first AR round trip (and, with one burst in flight, a short
    # gap per burst)
    assert full_rate["read_full_rate"]["beats_per_cycle"] >= (0.9 if max_outstanding > 1 or max_burst >= 64 else 0.8)


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("data_width,max_burst,max_outstanding", CONFIGS + SLOW_CONFIGS,
                         ids=[f"w{w}-b{b}-o{o}" for w, b, o in CONFIGS + SLOW_CONFIGS])
@pytest.mark.parametrize("seed", [101, 202])
def test_axi_masters_sweep(data_width, max_burst, max_outstanding, seed):
    _run(data_width, max_burst, max_outstanding, seed=seed, commands=80,
         testcase=["read_random", "write_random", "read_errors", "write_errors"])
