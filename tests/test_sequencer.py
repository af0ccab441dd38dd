"""The sequencer (hw/sequencer.py) alone, cycle by cycle in Amaranth's simulator, on the tiny
model's program: a NORM_QUANT step into the act buffer completes only once the act buffer,
having taken the step's write command in an earlier cycle, holds the step's tokens; never on
the count the buffer still shows for the previous step in the cycle it takes the command."""

from amaranth.sim import Simulator

from tellme.config import hardware_preset, model_preset
from tellme.gen.top import TellmeTop

HW = hardware_preset("sim-small").replace(prefill_chunk=12, max_context=64)
TOKENS = 3


def _sequencer():
    top = TellmeTop(model_preset("tiny"), HW)
    return top.sequencer, [type(s).__name__ for s in top.program.steps]


async def _taken(ctx, port):
    """Until ``port`` (ready held high) offers its command, then the cycle it is taken."""
    while not ctx.get(port.valid):
        await ctx.tick()
    await ctx.tick()


async def _pulse(ctx, signal):
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


def test_norm_quant_completes_on_the_new_count_only():
    seq, steps = _sequencer()
    assert steps[:2] == ["Embed", "NormQuant"]
    log = []

    async def bench(ctx):
        ctx.set(seq.token_count, TOKENS)
        ctx.set(seq.seq_pos, 0)
        for p in (seq.embed_cmd, seq.norm_quant_cmd):
            ctx.set(p.ready, 1)
        # The act buffer shows the previous NORM_QUANT's tokens (a step of the last call).
        ctx.set(seq.act_written, TOKENS)
        ctx.set(seq.start, 1)
        await ctx.tick()
        ctx.set(seq.start, 0)
        # EMBED: wait for its command, then its done.
        await _taken(ctx, seq.embed_cmd)
        await _pulse(ctx, seq.embed_done)
        # NORM_QUANT: its command goes out; the act buffer takes the write command a few cycles
        # later, while its count still shows the old TOKENS.
        await _taken(ctx, seq.norm_quant_cmd)
        for _ in range(3):
            await ctx.tick()
        await _pulse(ctx, seq.act_cmd_taken)
        ctx.set(seq.act_written, 0)          # the buffer restarts its count the cycle after
        for written in [0, 0, 1, 1, 2, 2]:
            ctx.set(seq.act_written, written)
            log.append(ctx.get(seq.step))
            await ctx.tick()
        assert set(log) == {1}, f"the NORM_QUANT step ended before its tokens were written: steps {log}"
        ctx.set(seq.act_written, TOKENS)
        await ctx.tick()
        for _ in range(4):
            await ctx.tick()
        assert ctx.get(seq.step) == 2, "the NORM_QUANT step did not end once its tokens were written"

    sim = Simulator(seq)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
