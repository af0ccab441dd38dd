"""cocotb tests of :class:`tellme.hw.attn_load.AttentionLoad`: random int8 head vectors (with
extremes) and scales arrive on ``q``/``scale`` under random stalls on all three streams; every
token's load beat must hold exactly the vectors and scales sent, in order. In the fp32 format
the vectors are float32 bit patterns (extremes: infinities, NaN, -0, subnormals) and there is
no ``scale`` stream.

Configuration (``run_cocotb(parameters=...)``): ``head_dim``, ``heads``, ``lanes``, ``tokens``,
``attn_format``.
"""

from __future__ import annotations

import random

import cocotb

from . import tb_config
from .streams import StreamSink, StreamSource, random_pause, reset_dut, start_clock, start_watchdog, with_timeout

STALLS = [(0.0, 0.0, 0.0), (0.5, 0.2, 0.3), (0.1, 0.8, 0.6), (0.7, 0.7, 0.0)]


def pack(values, width: int = 8) -> int:
    mask = (1 << width) - 1
    return sum((v & mask) << (width * i) for i, v in enumerate(values))


def random_vector(rng: random.Random, n: int) -> list[int]:
    pick = rng.random()
    if pick < 0.1:
        return [rng.choice([-128, 127]) for _ in range(n)]
    if pick < 0.15:
        return [0] * n
    return [rng.randint(-128, 127) for _ in range(n)]


F32_EXTREMES = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x00000001, 0x807FFFFF, 0x7F7FFFFF]


def random_f32_vector(rng: random.Random, n: int) -> list[int]:
    if rng.random() < 0.2:
        return [rng.choice(F32_EXTREMES) for _ in range(n)]
    return [rng.getrandbits(32) for _ in range(n)]


@cocotb.test()
async def test_tokens_under_stalls(dut):
    cfg = tb_config()
    hd, heads, lanes, tokens = cfg["head_dim"], cfg["heads"], cfg["lanes"], cfg["tokens"]
    scaled = cfg.get("attn_format", "int8") == "int8"
    width = 8 if scaled else 32
    rng = random.Random(cocotb.RANDOM_SEED)
    clock = start_clock(dut)
    q_fields = [("q" if scaled else "data", width * lanes, False), ("last", 1, False)]
    query_bits = width * hd + (32 if scaled else 0)
    out_fields = ([("q", heads * query_bits, False), ("k", width * hd, False)]
                  + ([("k_scale", 32, False)] if scaled else []) + [("v", width * hd, False)]
                  + ([("v_scale", 32, False)] if scaled else []))
    watchdog = start_watchdog(clock, 400 * tokens * len(STALLS) * (heads + 2) * hd, "attention load")
    q = StreamSource(dut, "q", clock, fields=q_fields)
    scale = StreamSource(dut, "scale", clock) if scaled else None
    out = StreamSink(dut, "o", clock, fields=out_fields)
    await reset_dut(dut, clock)
    for case, (p_q, p_scale, p_out) in enumerate(STALLS):
        q.set_pause_generator(random_pause(p_q, rng.getrandbits(32)))
        if scaled:
            scale.set_pause_generator(random_pause(p_scale, rng.getrandbits(32)))
        out.set_pause_generator(random_pause(p_out, rng.getrandbits(32)))
        expected = []
        for _ in range(tokens):
            vectors = [(random_vector if scaled else random_f32_vector)(rng, hd) for _ in range(heads + 2)]
            scales = [rng.choice([0, 0xFFFFFFFF, rng.getrandbits(32)]) for _ in range(heads + 2)]
            for vector in vectors:
                for b in range(hd // lanes):
                    q.send_nowait({q_fields[0][0]: pack(vector[b * lanes:(b + 1) * lanes], width),
                                   "last": int(b == hd // lanes - 1)})
            if scaled:
                for s in scales:
                    scale.send_nowait(s)
                query = sum((pack(vectors[h]) | (scales[h] << (8 * hd))) << (h * query_bits) for h in range(heads))
                expected.append({"q": query, "k": pack(vectors[heads]), "k_scale": scales[heads],
                                 "v": pack(vectors[heads + 1]), "v_scale": scales[heads + 1]})
            else:
                query = sum(pack(vectors[h], 32) << (h * query_bits) for h in range(heads))
                expected.append({"q": query, "k": pack(vectors[heads], 32), "v": pack(vectors[heads + 1], 32)})
        for t, want in enumerate(expected):
            got = await with_timeout(out.recv(), clock, 200 * (heads + 2) * hd, f"token {t} of case {case}")
            assert got == want, f"case {case} token {t}: load beat differs"
        assert out.empty(), "more load beats than tokens"
    watchdog.cancel()
