"""AxiQuiesce (hw/axi_quiesce.py): a wire outside ``drain``; in ``drain`` it finishes what is in
flight (owed W beats sent with WSTRB 0 and WLAST on each burst's last, R and B taken) and reports
``idle`` only when nothing is left. Amaranth's simulator, cycle by cycle."""

import pytest
from amaranth.sim import Simulator

from tellme.hw.axi_quiesce import AxiQuiesce


def _run(bench):
    dut = AxiQuiesce(data_width=32, addr_width=32, max_outstanding=4)
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    async def testbench(ctx):
        await bench(ctx, dut)
    sim.add_testbench(testbench)
    sim.run()


def test_pass_through_and_drain():
    async def bench(ctx, dut):
        i, o = dut.i, dut.o
        # Outside drain: a wire in both directions.
        ctx.set(i.awvalid, 1)
        ctx.set(i.awlen, 3)
        ctx.set(o.awready, 1)
        assert ctx.get(o.awvalid) == 1 and ctx.get(i.awready) == 1
        ctx.set(i.arvalid, 1)
        ctx.set(i.arlen, 1)
        ctx.set(o.arready, 1)
        await ctx.tick()
        ctx.set(i.awvalid, 0)
        ctx.set(i.arvalid, 0)
        # One W beat of the 4-beat burst goes through normally.
        ctx.set(i.wvalid, 1)
        ctx.set(i.wstrb, 0xF)
        ctx.set(i.wdata, 0x1234)
        ctx.set(o.wready, 1)
        assert ctx.get(o.wdata) == 0x1234 and ctx.get(o.wstrb) == 0xF
        await ctx.tick()
        ctx.set(i.wvalid, 0)
        assert ctx.get(dut.idle) == 0
        # Drain: the managers are cut off, the 3 owed beats leave empty, WLAST on the last.
        ctx.set(dut.drain, 1)
        ctx.set(i.arvalid, 1)                   # a new request is not let through
        assert ctx.get(o.arvalid) == 0 and ctx.get(i.arready) == 0
        lasts = []
        for _ in range(3):
            assert ctx.get(o.wvalid) == 1 and ctx.get(o.wstrb) == 0
            lasts.append(ctx.get(o.wlast))
            await ctx.tick()
        assert lasts == [0, 0, 1]
        assert ctx.get(o.wvalid) == 0
        # R beats and the B response are taken and not shown to the managers.
        assert ctx.get(o.rready) == 1 and ctx.get(o.bready) == 1
        ctx.set(o.rvalid, 1)
        assert ctx.get(i.rvalid) == 0
        await ctx.tick()
        ctx.set(o.rlast, 1)
        await ctx.tick()
        ctx.set(o.rvalid, 0)
        assert ctx.get(dut.idle) == 0            # the B response is still owed
        ctx.set(o.bvalid, 1)
        await ctx.tick()
        ctx.set(o.bvalid, 0)
        assert ctx.get(dut.idle) == 1
    _run(bench)


def test_refuses_bad_parameters():
    with pytest.raises(ValueError, match="max_outstanding"):
        AxiQuiesce(max_outstanding=0)
