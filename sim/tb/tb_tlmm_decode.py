"""cocotb tests of :class:`tellme.hw.tlmm_decode.TlmmWeightDecode`: per-port DDR weight streams
in the layout of the DDR image (``gen/image.py``) -> TLMM lane words.

For random ternary weights the per-port beats are cut from ``image.encode_projection`` (the
real image writer, at the beat width under test; cross-checked against ``formats.pack_codes``
of each port's lanes); the expected lane words are ``formats.tlmm_weight_stream`` of the
codes, lane p in element p.

Configuration (``run_cocotb(parameters=...)``):

``group``, ``lanes``, ``ports``, ``beat_bits``, ``beats_per_word``
    The unit's parameters (``beats_per_word`` as the unit computes it, cross-checked here).
``shapes``
    List of ``[rows, k]`` projections to stream (one after another, no gap).
``stalls``
    List of stall settings, each ``[p_in, p_out]`` (every port stalls with ``p_in``, from its own
    seed) or ``[p_port0, ..., p_port{ports-1}, p_out]``.
"""

from __future__ import annotations

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ...contract import formats
from ...contract.formats import code_bits
from ...contract.layouts import ImageFormat
from ...gen import image
from ...weights import TernaryTensor
from . import tb_config
from .streams import StreamSink, StreamSource, expect_beats, random_pause, reset_dut, start_clock, start_watchdog

RESET_CYCLES = 2
DEFAULT_STALLS = [[0.0, 0.0], [0.3, 0.3], [0.7, 0.1], [0.1, 0.7], [0.0, 0.5, 0.9]]


def port_beats(cfg: dict, trits: np.ndarray) -> tuple[list[list[int]], list[int]]:
    """(beats per port, expected lane words) of one projection."""
    g, p_count, ports = cfg["group"], cfg["lanes"], cfg["ports"]
    beat_bits, bpw = cfg["beat_bits"], cfg["beats_per_word"]
    bits = code_bits(g)
    lpp = p_count // ports
    assert bpw == -(-lpp * bits // beat_bits), "beats_per_word disagrees with the layout"
    codes = formats.tlmm_encode(trits, g)
    stream = formats.tlmm_weight_stream(codes, p_count)             # (B, N, P)
    blocks, rows, _ = stream.shape
    beat_bytes = beat_bits // 8
    word_bytes = bpw * beat_bytes
    per_port = []
    # The image writer itself (any beat width): each port's region starts at a 4 KiB stride.
    fmt = ImageFormat(g, p_count, ports, "int8", 128, beat_bytes)
    assert fmt.subword_bytes == word_bytes, (fmt.subword_bytes, word_bytes)
    raw = image.encode_projection(TernaryTensor(trits, np.float32(1.0)), fmt)
    stride = image.projection_port_stride(trits.shape, fmt)
    assert len(raw) == ports * stride
    for port in range(ports):
        region = raw[port * stride:port * stride + blocks * rows * word_bytes]
        # The same bytes as pack_codes of this port's lanes (the layout under test).
        packed = formats.pack_codes(stream[:, :, port * lpp:(port + 1) * lpp], bits, word_bytes)
        assert region == packed.tobytes()
        per_port.append(region)
    beats = [[int.from_bytes(region[i:i + beat_bytes], "little")
              for i in range(0, len(region), beat_bytes)] for region in per_port]
    words = []
    for b in range(blocks):
        for r in range(rows):
            word = 0
            for p in range(p_count):
                word |= int(stream[b, r, p]) << (p * bits)
            words.append(word)
    for port_list in beats:
        assert len(port_list) == len(words) * bpw
    return beats, words


@cocotb.test(timeout_time=1000, timeout_unit="ms")
async def test_decode(dut):
    """Random projections streamed on every port with independent random stalls (and stalls on
    ``codes``) come out as the golden lane words, in order, once each."""
    cfg = tb_config()
    ports, bpw = cfg["ports"], cfg["beats_per_word"]
    rng = np.random.default_rng([cocotb.RANDOM_SEED, 1])
    clock = start_clock(dut)
    sources = [StreamSource(dut, f"beats__{i}", clock) for i in range(ports)]
    assert all(s.width == cfg["beat_bits"] for s in sources)
    sink = StreamSink(dut, "codes", clock)
    stalls = cfg.get("stalls", DEFAULT_STALLS)
    shapes = cfg.get("shapes", [[7, 100], [1, 3], [33, 2 * cfg["lanes"] * cfg["group"] + 1]])
    plans = []
    for s in stalls:
        beats = [[] for _ in range(ports)]
        words = []
        for rows, k in shapes:
            zero = rng.choice([0.0, 0.3, 0.8])
            trits = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(rows, k),
                               p=[(1 - zero) / 2, zero, (1 - zero) / 2])
            pb, pw = port_beats(cfg, trits)
            for i in range(ports):
                beats[i] += pb[i]
            words += pw
        plans.append((s, beats, words))
    worst = max(max(s) for s in stalls)
    slow = 1 / max((1 - worst) ** 2, 0.01)
    budget = sum(int(4 * slow * len(w) * bpw) + 200 for _, _, w in plans)
    start_watchdog(clock, budget + 500, "test_decode")
    await reset_dut(dut, clock, RESET_CYCLES)
    for s, beats, words in plans:
        p_in = s[:-1] if len(s) == ports + 1 else [s[0]] * ports
        p_out = s[-1]
        for i, src in enumerate(sources):
            src.set_pause_generator(random_pause(p_in[i], int(rng.integers(1 << 31))) if p_in[i] else None)
        sink.set_pause_generator(random_pause(p_out, int(rng.integers(1 << 31))) if p_out else None)
        start_count = sink.received
        for i, src in enumerate(sources):
            for beat in beats[i]:
                src.send_nowait(beat)
        what = f"stalls={s}"

        def mismatch(index, word, want, what=what):
            bits = code_bits(cfg["group"])
            mask = (1 << bits) - 1
            bad = [p for p in range(cfg["lanes"]) if (word >> (p * bits)) & mask != (want >> (p * bits)) & mask]
            return f"{what}: lane word {index} is {word:#x}, expected {want:#x} (wrong lanes {bad})"

        bound = int(4 * slow * len(words) * bpw) + 200
        await expect_beats(sink, words, clock, bound, what, mismatch=mismatch,
                           waiting=lambda: f"beats left per port {[s.count() for s in sources]}")
        await ClockCycles(clock, 6)
        assert sink.count() == 0, f"{what}: extra lane words"
        assert all(src.idle() for src in sources), f"{what}: beats left {[s.count() for s in sources]}"
        cycles = sink.beat_cycles[-1] - sink.beat_cycles[start_count] + 1
        dut._log.info("%s: %d lane words (%d beats per port each) ok, %d cycles first to last "
                      "(%.3f words/cycle)", what, len(words), bpw, cycles, len(words) / cycles)
        if not any(s):
            # Full rate: one lane word every beats_per_word cycles, no bubble between words.
            expected = (len(words) - 1) * bpw + 1
            assert cycles == expected, (f"{len(words)} lane words took {cycles} cycles without "
                                        f"stalls, expected {expected} (one per {bpw} cycles)")
    assert not sink.protocol_errors, sink.protocol_errors
