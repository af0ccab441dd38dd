"""The striped read master (hw/striped_read.py): its stripe/unstripe byte layout in pure Python,
its parameter checks, and the unit under Verilator with the cocotb tests in
``sim/tb/tb_striped_read.py`` (random layouts and commands against cocotbext-axi RAMs with
random pauses on every port, error responses, full rate).

Default configurations, one Verilator build each: the product's 4 ports of 128 bits (bursts of
256, 4 in flight) and 2 ports of 64 bits with short bursts and one burst in flight. The slow
sweep adds 1 port (the degenerate case) and other burst/outstanding/width combinations. That one
port is a plain AxiReadMaster is checked cycle by cycle in Amaranth's simulator (no build).
"""

import json
import random

import pytest
from amaranth.back import verilog
from amaranth.hdl import Fragment, Module
from amaranth.lib import wiring
from amaranth.sim import Simulator
from helpers import kwargs_id

from tellme.contract.layouts import stripe, unstripe
from tellme.hw.axi_read import AxiReadMaster
from tellme.hw.striped_read import StripedReadMaster
from tellme.sim.rtl import run_cocotb

TB = "tellme.sim.tb.tb_striped_read"


# -- stripe / unstripe ----------------------------------------------------------------------------

def _stripes_by_hand(stream: bytes, ports: int, beat: int) -> list[bytes]:
    """Stripe k: bytes [k B, (k+1) B) of every P x B word, the stream zero-padded to whole words
    (the docstring, written out byte by byte)."""
    word = ports * beat
    padded = stream + bytes((word - len(stream) % word) % word)
    out = [bytearray() for _ in range(ports)]
    for i, byte in enumerate(padded):
        out[i % word // beat].append(byte)
    return [bytes(s) for s in out]


@pytest.mark.parametrize("ports,beat", [(1, 16), (2, 8), (4, 16), (8, 4), (16, 64)])
@pytest.mark.parametrize("words,extra", [(0, 0), (1, 0), (5, 0), (3, 1), (7, -1), (0, 5), (40, 17)])
def test_stripe_round_trip(ports, beat, words, extra):
    word = ports * beat
    length = max(0, words * word + extra)
    stream = random.Random(ports * 1000 + beat * 10 + words).randbytes(length)
    stripes = stripe(stream, ports=ports, beat_bytes=beat)
    assert stripes == _stripes_by_hand(stream, ports, beat)
    assert len(stripes) == ports
    assert all(len(s) == -(-length // word) * beat for s in stripes)
    back = unstripe(stripes, beat_bytes=beat)
    assert len(back) % word == 0 and len(back) - length < word
    assert back[:length] == stream and back[length:] == bytes(len(back) - length)   # the padding is zero


def test_stripe_small_example():
    stream = bytes(range(11))          # P = 2, B = 2: words of 4 bytes, one byte of padding
    assert stripe(stream, ports=2, beat_bytes=2) == [bytes([0, 1, 4, 5, 8, 9]), bytes([2, 3, 6, 7, 10, 0])]
    assert unstripe([bytes([0, 1, 4, 5]), bytes([2, 3, 6, 7])], beat_bytes=2) == bytes(range(8))


# -- parameters -----------------------------------------------------------------------------------

@pytest.mark.parametrize("ports", [0, 3, 17, 32, True, 2.0, None])
def test_ports_checked(ports):
    with pytest.raises(ValueError, match="ports"):
        StripedReadMaster(ports=ports)


@pytest.mark.parametrize("kwargs,match", [(dict(data_width=100), "data_width"), (dict(max_burst=0), "max_burst"),
                                          (dict(max_outstanding=0), "max_outstanding")])
def test_master_parameters_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        StripedReadMaster(ports=2, **kwargs)


@pytest.mark.parametrize("ports", [1, 4])
def test_converts(ports):
    unit = StripedReadMaster(ports=ports, data_width=64, addr_width=32)
    assert (unit.ports, unit.beat_bytes, len(unit.axi)) == (ports, 8, ports)
    Fragment.get(unit, None)
    text = verilog.convert(StripedReadMaster(ports=ports, data_width=64, addr_width=32), name="striped")
    assert f"axi__{ports - 1}__arvalid" in text and f"[{ports * 64}:0] rdata__payload" in text


# -- under Verilator ------------------------------------------------------------------------------

#: (ports, data_width, max_burst, max_outstanding)
CONFIGS = [(4, 128, 256, 4), (2, 64, 16, 1)]
SLOW_CONFIGS = [(1, 128, 256, 4), (1, 64, 16, 1), (4, 128, 16, 1), (4, 64, 64, 2), (2, 128, 256, 2),
                (8, 32, 32, 3)]


def _run(ports, data_width, max_burst, max_outstanding, *, seed, commands, testcase=None, results=None):
    return run_cocotb(
        StripedReadMaster(ports=ports, data_width=data_width, max_burst=max_burst, max_outstanding=max_outstanding),
        name="striped_read", test_module=TB, testcase=testcase,
        parameters={"ports": ports, "data_width": data_width, "max_burst": max_burst,
                    "max_outstanding": max_outstanding, "seed": seed, "commands": commands,
                    "full_rate_beats": 2048, "results": str(results) if results else ""})


def _ids(configs):
    return [f"p{p}-w{w}-b{b}-o{o}" for p, w, b, o in configs]


@pytest.mark.rtl
@pytest.mark.parametrize("ports,data_width,max_burst,max_outstanding", CONFIGS, ids=_ids(CONFIGS))
def test_striped_read(ports, data_width, max_burst, max_outstanding, tmp_path):
    results = tmp_path / "results.json"
    result = _run(ports, data_width, max_burst, max_outstanding, seed=ports + data_width + max_burst, commands=16,
                  results=results)
    assert set(result.tests.values()) == {"passed"} and len(result.tests) == 3, result.tests
    print(json.dumps(json.loads(results.read_text())))


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("ports,data_width,max_burst,max_outstanding", CONFIGS + SLOW_CONFIGS,
                         ids=_ids(CONFIGS + SLOW_CONFIGS))
@pytest.mark.parametrize("seed", [101, 202])
def test_striped_read_sweep(ports, data_width, max_burst, max_outstanding, seed):
    _run(ports, data_width, max_burst, max_outstanding, seed=seed, commands=48)


# -- one port: a plain master -----------------------------------------------------------------------

class _OneAndPlain(wiring.Component):
    """A one-port StripedReadMaster and a plain AxiReadMaster with the same parameters, for
    driving both with the same inputs (the plain one's command at ``stripe_base + addr``)."""

    def __init__(self, **params):
        self.one = StripedReadMaster(ports=1, **params)
        self.plain = AxiReadMaster(**params)
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.one, m.submodules.plain = self.one, self.plain
        return m


@pytest.mark.parametrize("params", [dict(data_width=64, max_burst=16, max_outstanding=2),
                                    dict(data_width=128, max_burst=256, max_outstanding=4)], ids=kwargs_id)
def test_one_port_is_a_plain_master(params):
    """Random inputs (any values, protocol or not) on both, every cycle: every output of the
    one-port unit equals the plain master's (the command address offset by ``stripe_base``,
    which is stable from before the first command on; RREADY compared while RVALID is high).
    Amaranth's simulator, no Verilator build."""
    dut = _OneAndPlain(addr_width=32, **params)
    one, plain = dut.one, dut.plain
    beat = params["data_width"] // 8
    rng = random.Random(7)
    base = rng.randrange(1 << 19) * 4096
    moved = {"cmd": 0, "ar": 0, "r": 0, "error_set": 0}

    def outputs(ctx, unit, axi, rvalid):
        values = {"cmd_ready": ctx.get(unit.cmd.ready), "rdata_valid": ctx.get(unit.rdata.valid),
                  "data": ctx.get(unit.rdata.payload.data), "last": ctx.get(unit.rdata.payload.last),
                  "error": ctx.get(unit.error), "busy": ctx.get(unit.busy),
                  **{name: ctx.get(getattr(axi, name)) for name in _MANAGER_OUTPUTS}}
        values["rready"] &= rvalid          # RREADY is gated by RVALID (AXI allows it)
        return values

    async def bench(ctx):
        ctx.set(one.stripe_base, base)
        ctx.set(one.stripe_bytes, rng.randrange(1 << 8) * 4096)
        await ctx.tick()                    # the layout one cycle before the first command
        error = 0
        for cycle in range(2000):
            cmd = {"valid": rng.random() < 0.3, "addr": rng.randrange(1 << 24) * beat,
                   "beats": rng.choice([1, 2, 3, rng.randrange(1, 40), rng.randrange(1, 600)])}
            axi_in = {"arready": rng.random() < 0.6, "rvalid": rng.random() < 0.5, "rlast": rng.random() < 0.3,
                      "rdata": rng.getrandbits(8 * beat), "rresp": rng.choice([0] * 30 + [2, 3]), "rid": 0}
            ready, clear = rng.random() < 0.7, rng.random() < 0.05
            for unit, axi, offset in ((one, one.axi[0], 0), (plain, plain.axi, base)):
                ctx.set(unit.cmd.valid, cmd["valid"])
                ctx.set(unit.cmd.payload.addr, offset + cmd["addr"])
                ctx.set(unit.cmd.payload.beats, cmd["beats"])
                ctx.set(unit.rdata.ready, ready)
                ctx.set(unit.clear_error, clear)
                for name, value in axi_in.items():
                    ctx.set(getattr(axi, name), value)
            got = outputs(ctx, one, one.axi[0], axi_in["rvalid"])
            want = outputs(ctx, plain, plain.axi, axi_in["rvalid"])
            assert got == want, f"cycle {cycle}: one-port unit {got}, plain master {want}"
            moved["cmd"] += want["cmd_ready"] and cmd["valid"]
            moved["ar"] += want["arvalid"] and axi_in["arready"]
            moved["r"] += want["rdata_valid"] and ready
            moved["error_set"] += want["error"] and not error
            error = want["error"]
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert all(n > 20 for n in moved.values()), moved      # the stimulus moved everything


_MANAGER_OUTPUTS = ("arvalid", "araddr", "arlen", "arsize", "arburst", "arid", "arcache", "arprot", "arlock",
                    "arqos", "rready")
