"""cocotb test of :class:`tellme.hw.attn_score.DotScore`: every score bit for bit against 3.8's
fp32 score, ``fp32.vector_sum(k * q, lanes) * fp32(1/sqrt(hd))`` (``golden.attention_scores``).

Configuration (``tb_config()``): ``head_dim``, ``lanes``, ``seed``, ``pairs`` (random pairs per
schedule, default 1500).

- ``scores``: pairs of random rows (normal values over several magnitudes) and extreme ones
  (products overflowing to inf, underflowing to subnormals, subnormal inputs, +-0, NaN, inf,
  cancelling sums), driven with their beats back to back, then with random gaps between pairs
  (the score pipeline must not depend on the spacing); each score compared at the cycle its
  ``o_valid`` rises, in order, and the count of scores checked.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from ...contract import fp32 as f
from .testbench import Testbench


def pair_rows(rng: np.random.Generator, count: int, hd: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` random (q, k) pairs, then the extreme ones."""
    pairs = []
    for _ in range(count):
        scale = np.float32(10.0) ** rng.integers(-6, 7)
        pairs.append(((rng.standard_normal(hd) * scale).astype(np.float32),
                      (rng.standard_normal(hd) * scale).astype(np.float32)))
    big, tiny = np.float32(3e38), np.float32(1e-38)
    sub = np.frombuffer(np.uint32(0x00000123).tobytes(), np.float32)[0]
    special = [np.float32(np.inf), np.float32(-np.inf), np.float32(np.nan), np.float32(0.0), np.float32(-0.0), sub]
    for q, k in [
        (np.full(hd, big), np.full(hd, big)),                      # products overflow
        (np.full(hd, tiny), np.full(hd, tiny)),                    # products underflow (flushed)
        (np.full(hd, sub), rng.standard_normal(hd)),               # subnormal inputs
        (np.zeros(hd), -np.zeros(hd)),                             # +-0
        (np.ones(hd), np.tile([1.0, -1.0], hd // 2 + 1)[:hd]),     # exact cancellation
        (rng.choice(special, hd), rng.standard_normal(hd)),        # specials in random lanes
        (rng.standard_normal(hd) * 1e20, rng.standard_normal(hd) * 1e18),   # near overflow
    ]:
        pairs.append((np.asarray(q, np.float32), np.asarray(k, np.float32)))
    return pairs


def expected(q: np.ndarray, k: np.ndarray, lanes: int) -> int:
    hd = q.shape[0]
    s = f.mul(f.vector_sum(f.mul(k[None, :], q[None, :]), lanes), np.float32(1.0 / np.sqrt(hd)))
    return int(np.asarray(s, np.float32).view(np.uint32)[0])


def beat_int(row: np.ndarray, step: int, lanes: int) -> int:
    words = row[step * lanes:(step + 1) * lanes].astype(np.float32).view(np.uint32)
    return sum(int(w) << (32 * i) for i, w in enumerate(words))


class ScoreTB(Testbench):
    def __init__(self, dut):
        super().__init__(dut)
        self.hd = int(self.cfg["head_dim"])
        self.lanes = int(self.cfg["lanes"])
        self.steps = self.hd // self.lanes
        self.seed = int(self.cfg.get("seed", 1))

    async def drive(self, pairs, rng: np.random.Generator, gaps: bool) -> None:
        dut = self.dut
        for q, k in pairs:
            for step in range(self.steps):
                dut.valid.value = 1
                dut.step.value = step
                dut.q.value = beat_int(q, step, self.lanes)
                dut.k.value = beat_int(k, step, self.lanes)
                await RisingEdge(self.clock)
            dut.valid.value = 0
            if gaps:
                for _ in range(int(rng.integers(0, 4))):
                    await RisingEdge(self.clock)
        dut.valid.value = 0

    async def collect(self, count: int, got: list[int]) -> None:
        while len(got) < count:
            await RisingEdge(self.clock)
            await ReadOnly()
            if int(self.dut.o_valid.value):
                got.append(int(self.dut.o.value))


@cocotb.test()
async def scores(dut):
    tb = ScoreTB(dut)
    rng = np.random.default_rng(tb.seed)
    dut.valid.value = 0
    await tb.reset()
    total = 0
    for gaps in (False, True):
        pairs = pair_rows(rng, int(tb.cfg.get("pairs", 1500)), tb.hd)
        want = [expected(q, k, tb.lanes) for q, k in pairs]
        got: list[int] = []
        watchdog = tb.watchdog(len(pairs) * (tb.steps + 4) + 400, "scores")
        collector = cocotb.start_soon(tb.collect(len(pairs), got))
        await tb.drive(pairs, rng, gaps)
        await collector
        await RisingEdge(tb.clock)                 # out of the collector's read-only phase
        watchdog.cancel()
        bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
        assert not bad, (f"{len(bad)} of {len(pairs)} scores differ (gaps {gaps}); first: pair {bad[0]} "
                         f"got {got[bad[0]]:#010x} want {want[bad[0]]:#010x}")
        total += len(pairs)
    tb.log.info("%d scores bit-exact", total)
    tb.record("scores_checked", total)
