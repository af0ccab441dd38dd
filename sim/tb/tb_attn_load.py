"""cocotb tests of :class:`tellme.hw.attn_load.AttentionLoad`: random int8 head vectors (with
extremes) and scales arrive on ``q``/``scale`` under random stalls on all three streams; every
token's load beat must hold exactly the vectors and scales sent, in order.

Configuration (``run_cocotb(parameters=...)``): ``head_dim``, ``heads``, ``lanes``, ``tokens``.
"""

from __future__ import annotations

import random

import cocotb

from . import tb_config
from .streams import StreamSink, StreamSource, random_pause, reset_dut, start_clock, start_watchdog, with_timeout

STALLS = [(0.0, 0.0, 0.0), (0.5, 0.2, 0.3), (0.1, 0.8, 0.6), (0.7, 0.7, 0.0)]


def pack_int8(values) -> int:
    return sum((v & 0xFF) << (8 * i) for i, v in enumerate(values))


def random_vector(rng: random.Random, n: int) -> list[int]:
    pick = rng.random()
    if pick < 0.1:
        return [rng.choice([-128, 127]) for _ in range(n)]
    if pick < 0.15:
        return [0] * n
    return [rng.randint(-128, 127) for _ in range(n)]


@cocotb.test()
async def test_tokens_under_stalls(dut):
    cfg = tb_config()
    hd, heads, lanes, tokens = cfg["head_dim"], cfg["heads"], cfg["lanes"], cfg["tokens"]
    rng = random.Random(cocotb.RANDOM_SEED)
    clock = start_clock(dut)
    q_fields = [("q", 8 * lanes, False), ("last", 1, False)]
    out_fields = [("q", heads * (8 * hd + 32), False), ("k", 8 * hd, False), ("k_scale", 32, False),
                  ("v", 8 * hd, False), ("v_scale", 32, False)]
    watchdog = start_watchdog(clock, 400 * tokens * len(STALLS) * (heads + 2) * hd, "attention load")
    q = StreamSource(dut, "q", clock, fields=q_fields)
    scale = StreamSource(dut, "scale", clock)
    out = StreamSink(dut, "o", clock, fields=out_fields)
    await reset_dut(dut, clock)
    for case, (p_q, p_scale, p_out) in enumerate(STALLS):
        q.set_pause_generator(random_pause(p_q, rng.getrandbits(32)))
        scale.set_pause_generator(random_pause(p_scale, rng.getrandbits(32)))
        out.set_pause_generator(random_pause(p_out, rng.getrandbits(32)))
        expected = []
        for _ in range(tokens):
            vectors = [random_vector(rng, hd) for _ in range(heads + 2)]
            scales = [rng.choice([0, 0xFFFFFFFF, rng.getrandbits(32)]) for _ in range(heads + 2)]
            for vector in vectors:
                for b in range(hd // lanes):
                    q.send_nowait({"q": pack_int8(vector[b * lanes:(b + 1) * lanes]),
                                   "last": int(b == hd // lanes - 1)})
            for s in scales:
                scale.send_nowait(s)
            query = sum((pack_int8(vectors[h]) | (scales[h] << (8 * hd))) << (h * (8 * hd + 32)) for h in range(heads))
            expected.append({"q": query, "k": pack_int8(vectors[heads]), "k_scale": scales[heads],
                             "v": pack_int8(vectors[heads + 1]), "v_scale": scales[heads + 1]})
        for t, want in enumerate(expected):
            got = await with_timeout(out.recv(), clock, 200 * (heads + 2) * hd, f"token {t} of case {case}")
            assert got == want, f"case {case} token {t}: load beat differs"
        assert out.empty(), "more load beats than tokens"
    watchdog.cancel()
