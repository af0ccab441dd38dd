"""The sequencer (hw/sequencer.py) alone, cycle by cycle in Amaranth's simulator, on the tiny
model's program: a NORM_QUANT step into the act buffer completes only once the act buffer,
having taken the step's write command in an earlier cycle, holds the step's tokens; never on
the count the buffer still shows for the previous step in the cycle it takes the command. The
weight walker sends every MATMUL's weight command ahead, in order."""

import random

from amaranth.lib import data
from amaranth.sim import Simulator

from tellme.config import hardware_preset, model_preset
from tellme.gen.top import TellmeTop
from tellme.hw.sequencer import OPS, REGIONS

HW = hardware_preset("sim-small").replace(prefill_chunk=12, max_context=64)
TOKENS = 3


def _sequencer():
    top = TellmeTop(model_preset("tiny"), HW)
    return top.sequencer, [type(s).__name__ for s in top.program.steps]


def _simulate(seq, bench):
    sim = Simulator(seq)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


async def _taken(ctx, port):
    """Until ``port`` (ready held high) offers its command, then the cycle it is taken."""
    while not ctx.get(port.valid):
        await ctx.tick()
    await ctx.tick()


async def _pulse(ctx, signal):
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


def test_norm_quant_completes_when_the_act_buffer_takes_its_command():
    """A NORM_QUANT into the act buffer ends once the buffer has taken its write command, not
    before (however long that takes) and without waiting for the tokens: the MATMUL after it
    replays them behind the writes, so its command goes out while the quantiser still runs."""
    seq, steps = _sequencer()
    assert steps[:3] == ["Embed", "NormQuant", "MatMul"]
    log = []

    async def bench(ctx):
        ctx.set(seq.token_count, TOKENS)
        ctx.set(seq.seq_pos, 0)
        for p in (seq.embed_cmd, seq.norm_quant_cmd):
            ctx.set(p.ready, 1)
        ctx.set(seq.start, 1)
        await ctx.tick()
        ctx.set(seq.start, 0)
        # EMBED: wait for its command, then its done.
        await _taken(ctx, seq.embed_cmd)
        await _pulse(ctx, seq.embed_done)
        # NORM_QUANT: its command goes out; the act buffer takes the write command later.
        await _taken(ctx, seq.norm_quant_cmd)
        for _ in range(12):
            log.append(ctx.get(seq.step))
            await ctx.tick()
        assert set(log) == {1}, f"the NORM_QUANT step ended before the act buffer took its command: {log}"
        await _pulse(ctx, seq.act_cmd_taken)
        for _ in range(4):
            await ctx.tick()
        assert ctx.get(seq.step) == 2, "the NORM_QUANT step did not end once the act buffer took its command"
        # The MATMUL fetches its w_mult (the scalar reader's AXI read), then offers its command.
        for _ in range(400):
            if ctx.get(seq.scalar_axi.arvalid):
                break
            await ctx.tick()
        else:
            raise AssertionError("the MATMUL after the NORM_QUANT did not start")

    _simulate(seq, bench)


def test_weight_walker_sends_every_matmul_ahead_in_order():
    """From START the walker offers the weight command of every MATMUL step of the program, in
    order (bases relocated by the image base, shape, tiling, the call's tokens), under random
    ready stalls, while the first step (EMBED) has not even completed: loading runs ahead of
    the steps; nothing more is offered after the last."""
    top = TellmeTop(model_preset("tiny"), HW)
    seq = top.sequencer
    image_base = 0x4000_0000
    matmul = OPS.index("MATMUL")
    want = []
    for word in top.words:
        step = data.Const(seq.layout, word)
        if step.op == matmul:
            mm = step.cmd.matmul
            want.append({"base": [mm.base[k] + image_base for k in range(HW.hp_ports)], "blocks": mm.blocks,
                         "rows": mm.rows, "tile_rows": mm.tile_rows, "tokens": TOKENS})
    assert len(want) == 7 * model_preset("tiny").num_layers
    got = []

    async def bench(ctx):
        rng = random.Random(5)
        ctx.set(seq.token_count, TOKENS)
        ctx.set(seq.bases[REGIONS.index("image")], image_base)
        ctx.set(seq.start, 1)
        await ctx.tick()
        ctx.set(seq.start, 0)
        for _ in range(8 * len(top.words) + 200):
            ready = rng.random() < 0.6
            ctx.set(seq.weights_cmd.ready, ready)
            if ready and ctx.get(seq.weights_cmd.valid):
                p = ctx.get(seq.weights_cmd.payload)
                got.append({"base": [p.base[k] for k in range(HW.hp_ports)], "blocks": p.blocks,
                            "rows": p.rows, "tile_rows": p.tile_rows, "tokens": p.tokens})
            await ctx.tick()
        assert ctx.get(seq.step) == 0, "the EMBED step completed without its done"

    _simulate(seq, bench)
    assert got == want
