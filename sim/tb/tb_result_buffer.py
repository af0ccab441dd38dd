"""cocotb tests of :class:`tellme.hw.result_buffer.ResultBuffer`: TLMM result rows in, the same
rows out, under random stalls.

Configuration: ``tokens``, ``acc_bits``, ``depth``, ``commands`` (the unit's), ``fields`` (the
struct fields of ``result_layout(tokens)``), ``rows`` (rows per stall setting).
"""

from __future__ import annotations

import random

import cocotb
from cocotb.triggers import ClockCycles

from . import tb_config
from .streams import StreamSink, StreamSource, expect_beats, random_pause, reset_dut, start_clock

STALLS = [[0.0, 0.0], [0.0, 0.6], [0.6, 0.0], [0.4, 0.4], [0.1, 0.9]]


def random_rows(rng: random.Random, count: int, cfg: dict) -> list[dict]:
    """Commands of 1 .. 2 x depth rows (some short, some longer than the buffer), each with its
    own d_x and w_mult; accumulators random in acc_bits signed bits, one in five extreme."""
    tokens, bits = cfg["tokens"], cfg["acc_bits"]
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    rows = []
    while len(rows) < count:
        n = rng.choice([1, 2, 3, rng.randint(1, 2 * cfg["depth"])])
        d_x, w_mult = rng.getrandbits(32 * tokens), rng.getrandbits(32)
        used = rng.randint(0, tokens)
        for k in range(n):
            accs = [rng.choice([lo, hi, 0, -1]) if rng.random() < 0.2 else rng.randint(lo, hi) for _ in range(tokens)]
            packed = 0
            for t, a in enumerate(accs):
                packed |= (a & 0xFFFF_FFFF) << (32 * t)          # sign-extended to ACC_BITS (32)
            rows.append({"acc": packed, "d_x": d_x, "w_mult": w_mult, "tokens": used, "last": int(k == n - 1)})
    # the stream ends on a command's last row
    while not rows[-1]["last"]:
        rows.pop()
    return rows


def _sign_extended_mask(cfg) -> int:
    """Accumulators of zero in their high bits (non-negative values within acc_bits)."""
    lane = (1 << (cfg["acc_bits"] - 1)) - 1
    return sum(lane << (32 * t) for t in range(cfg["tokens"]))


@cocotb.test(timeout_time=50, timeout_unit="ms")
async def rows_pass_unchanged(dut):
    """Every row arrives once, in order, bit for bit, with its command's scales, whatever the
    stalls on either side; ``o`` obeys the handshake rules."""
    cfg = tb_config()
    clock = start_clock(dut)
    fields = cfg["fields"]
    source = StreamSource(dut, "i", clock, fields=fields)
    sink = StreamSink(dut, "o", clock, fields=fields)
    await reset_dut(dut, clock, 2)
    rng = random.Random(cocotb.RANDOM_SEED)
    for p_in, p_out in STALLS:
        what = f"stalls in={p_in} out={p_out}"
        source.set_pause_generator(random_pause(p_in, rng.getrandbits(32)))
        sink.set_pause_generator(random_pause(p_out, rng.getrandbits(32)))
        rows = random_rows(rng, int(cfg.get("rows", 600)), cfg)
        for row in rows:
            source.send_nowait(row)
        rate = max((1 - p_in) * (1 - p_out), 0.05)
        await expect_beats(sink, rows, clock, int(4 * len(rows) / rate) + 200, what)
        sink.clear_pause_generator()
        await ClockCycles(clock, 10)
        assert sink.count() == 0, f"{what}: {sink.count()} extra rows"
        dut._log.info("%s: %d rows ok", what, len(rows))
    assert not sink.protocol_errors, sink.protocol_errors


@cocotb.test(timeout_time=5, timeout_unit="ms")
async def takes_a_burst_at_full_rate(dut):
    """With ``o`` stalled the buffer takes ``depth`` rows of a few long commands one per cycle
    (what the TLMM's last block needs: a tile pass is one command), then holds ``i.ready`` low;
    released, it delivers them all."""
    cfg = tb_config()
    clock = start_clock(dut)
    fields = cfg["fields"]
    source = StreamSource(dut, "i", clock, fields=fields)
    sink = StreamSink(dut, "o", clock, fields=fields)
    sink.set_pause_generator(iter(lambda: True, None))        # o never ready
    await reset_dut(dut, clock, 2)
    rng = random.Random(cocotb.RANDOM_SEED + 1)
    depth = cfg["depth"]
    rows = []
    while len(rows) < depth + 8:                 # commands of depth / 2 rows
        d_x, w_mult = rng.getrandbits(32 * cfg["tokens"]), rng.getrandbits(32)
        rows += [{"acc": rng.getrandbits(32 * cfg["tokens"]) & _sign_extended_mask(cfg), "d_x": d_x,
                  "w_mult": w_mult, "tokens": 0, "last": int(k == depth // 2 - 1)} for k in range(depth // 2)]
    for row in rows:
        source.send_nowait(row)
    await ClockCycles(clock, depth + 40)
    taken = len(rows) - source.count()
    # SyncFIFOBuffered: depth rows in its memory and read register
    assert taken >= depth, f"took {taken} rows with o stalled, expected at least {depth}"
    assert taken <= depth + 1, f"took {taken} rows into a buffer of {depth}"
    sink.clear_pause_generator()
    await expect_beats(sink, rows, clock, 4 * len(rows) + 100, "after the stall")
