"""cocotb tests of :class:`tellme.hw.lm_head.LmHead`, bit for bit against ``golden.lm_head``.

DDR is a cocotbext-axi ``AxiRamRead`` on the unit's ``axi`` port. Each call places its head
(``rows`` x ``cols`` int8, row-major, the image section ``lm_head.q``) and its float32 scales
(``lm_head.scale``) at random beat-aligned addresses (some sections crossing 4 KiB pages), queues
the command, the x_q beats (pad values of a partial final beat random: they must be ignored) and
d_x, and expects every logit bit for bit (uint32 views of ``golden.lm_head``), the padding
lanes +0, ``last`` on the final beat, and the token ``int(numpy.argmax(logits))``. Calls are
queued back to back. The AR bursts of a batch must read every beat of every section exactly
once and nothing else; ``error`` stays low and ``busy`` falls at the end.

Tests (each under a watchdog):

``random_calls``
    Per entry of ``stalls`` (pause probabilities ``[axi, cmd, x, scale, logits, token]``),
    one batch of calls of every shape in ``shapes``: random int8 heads with random scales, and
    heads quantised from random float weights with ``formats.lm_head_int8`` (with an all-zero
    row, scale 1.0).
``extreme_calls``
    Corner calls of the first shape (at most 64 rows) under the last ``stalls`` entry: rows of
    +127 and -127 against x_q of -128 and 127 (the largest accumulators), a zero row, ties (the
    maximum row repeated later: the first index wins), d_x so small that every scale product
    flushes to zero (logits +0 and -0, which are equal: token 0), d_x * scale around 2^-126 (the
    flush boundary), and huge scales (logits overflowing to infinity).
``throughput``
    No pauses: cycles from the command to the token for calls of ``throughput_shapes``,
    recorded (``results``) and checked against ``rows * (ceil(cols / beat) + 1) + slack``
    (fp16: ``rows * (ceil(2 cols / beat) + 1) * beat / (2 lanes) + slack``).

With ``weight_format`` "fp16" the same tests run the binary16 head against
``golden.lm_head_fp16``: float32 x beats (pads random), no d_x, a contiguous binary16 head and
no scale section. Random calls: normal(0, 0.05) weights with a zero row, normal x. Extreme
calls: binary16 subnormal weights (2^-24 and others); +-65504 rows against x near 3e38
(products overflowing: logits +-inf, -inf before the first +inf) and +-1.0 rows (finite
products, the sum overflowing); products flushing to zero beside +0/-0 and binary32-subnormal
x (flushed on input), a zero row, opposite rows, a row cancelling exactly to +0 and a row of
only -0 products (+0: the partials start from +0, so no logit is -0); ties (the first index
wins); and a head whose every product flushes (all logits +0, token 0).

With ``ports`` P > 1 the unit reads over P ports (``axi__k``, an ``AxiRamRead`` each on one
shared memory, each port's channels paused apart): each call's rows and scales form one
logical byte stream (rows from logical byte 0 or one word in, the scales a random number of
words after them; a word is P AXI beats), striped with ``contract.layouts.stripe`` at a random
``stripe_base`` (some stripes starting just before a 4 KiB boundary) and ``stripe_bytes``
apart (at least a stripe, plus a random gap); the beats read are checked per port address.

Configuration: ``weight_format`` (default "int8"), ``lanes``, ``data_width`` (one port's),
``ports`` (default 1), ``scale_beats``, ``fields`` (``cmd``, ``x``,
``logits``: :func:`~tellme.sim.tb.streams.struct_fields` of the unit's layouts), ``shapes``
(list of ``[rows, cols]``), ``stalls``, ``throughput_shapes``, ``seed``, ``results``.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles

from ...contract import formats
from ...contract.layouts import PAGE, stripe
from .. import golden
from .axi import ADDRESS_FIELDS, axi_channel, axi_ram_read, set_pauses
from .streams import HandshakeMonitor, StreamSink, StreamSource, random_pause, with_timeout
from .testbench import Testbench

MEM_SIZE = 1 << 21
U32 = np.dtype("<u4")


@dataclass
class Call:
    """One LM-head call: its inputs, where its sections lie and what must come out. An int8
    call has ``x_q``, ``d_x``, ``head_q``, ``scale``; an fp16 call ``x`` (float32) and
    ``head_f16`` (and the ``lanes`` of the golden sum order)."""
    name: str
    x_q: np.ndarray | None = None        # int8 (cols,)
    d_x: np.float32 | None = None
    head_q: np.ndarray | None = None     # int8 (rows, cols)
    scale: np.ndarray | None = None      # float32 (rows,)
    x: np.ndarray | None = None          # float32 (cols,), fp16 head
    head_f16: np.ndarray | None = None   # float16 (rows, cols)
    lanes: int = 0
    rows_base: int = 0
    scales_base: int = 0
    stripe_base: int = 0
    stripe_bytes: int = 0

    @property
    def fp16(self) -> bool:
        return self.head_f16 is not None

    @property
    def head(self) -> np.ndarray:
        return self.head_f16 if self.fp16 else self.head_q

    @property
    def rows(self) -> int:
        return self.head.shape[0]

    @property
    def cols(self) -> int:
        return self.head.shape[1]

    def logits(self) -> np.ndarray:
        if self.fp16:
            return golden.lm_head_fp16(self.x[None, :], self.head_f16, self.lanes)[0].astype(np.float32)
        return golden.lm_head(self.x_q[None, :], np.array([self.d_x], dtype=np.float32), self.head_q,
                              self.scale)[0].astype(np.float32)


def show(bits: int) -> str:
    return f"{bits:#010x} ({float(np.uint32(bits).view(np.float32)):.9g})"


class LmHeadTB(Testbench):
    def __init__(self, dut, watchdog_cycles: int, what: str):
        super().__init__(dut)
        cfg = self.cfg
        self.lanes = int(cfg["lanes"])
        self.ports = int(cfg.get("ports", 1))
        self.port_beat = int(cfg["data_width"]) // 8
        self.beat = self.ports * self.port_beat         # the unit's logical beat
        self.fp16 = cfg.get("weight_format", "int8") == "fp16"
        self.fields = cfg["fields"]
        self.seed = int(cfg.get("seed", 1))
        self.np_rng = np.random.default_rng(self.seed)
        self.rng = random.Random(self.seed)
        self.watchdog(watchdog_cycles, what)
        #: the unit's AXI ports: ``axi`` or ``axi__0`` .. ``axi__{P-1}``
        self.axi_names = ["axi"] if self.ports == 1 else [f"axi__{k}" for k in range(self.ports)]
        self.hold_low("cmd__valid", "x__valid", *([] if self.fp16 else ["scale__valid"]), "logits__ready",
                      "token__ready", "clear_error", *[f"{a}__{s}" for a in self.axi_names for s in ("arready", "rvalid")])
        self.rams = [axi_ram_read(dut, self.axi_names[0], self.clock, MEM_SIZE)]
        self.rams += [axi_ram_read(dut, name, self.clock, MEM_SIZE, mem=self.rams[0].mem) for name in self.axi_names[1:]]
        self.ram = self.rams[0]
        self.cursor = 0
        clock, fields = self.clock, self.fields
        self.cmd = StreamSource(dut, "cmd", clock, fields=fields["cmd"])
        self.xs = StreamSource(dut, "x", clock, fields=fields["x"])
        self.scale = None if self.fp16 else StreamSource(dut, "scale", clock)
        self.out = StreamSink(dut, "logits", clock, fields=fields["logits"])
        self.token = StreamSink(dut, "token", clock)

    # -- stimuli -----------------------------------------------------------------------------------

    def random_call(self, rows: int, cols: int, name: str) -> Call:
        r = self.np_rng
        x_q = r.integers(-128, 128, cols).astype(np.int8)
        head = r.integers(-127, 128, (rows, cols)).astype(np.int8)
        scale = (np.exp(r.uniform(np.log(1e-4), np.log(1e-1), rows))).astype(np.float32)
        d_x = np.float32(np.exp(r.uniform(np.log(1e-3), np.log(1.0))))
        return Call(name, x_q, d_x, head, scale)

    def quantised_call(self, rows: int, cols: int, name: str) -> Call:
        r = self.np_rng
        w = (r.standard_normal((rows, cols)) * 0.05).astype(np.float32)
        w[r.integers(rows)] = 0.0                       # an all-zero row: scale 1.0
        head, scale = formats.lm_head_int8(w)
        x = r.standard_normal(cols).astype(np.float32)
        m = np.float32(max(float(np.max(np.abs(x))), 1e-5))
        d_x = np.float32(m / np.float32(127.0))
        x_q = np.clip(np.rint(x / d_x), -128, 127).astype(np.int8)
        return Call(name, x_q, d_x, head, scale)

    def extreme_calls(self, rows: int, cols: int) -> list[Call]:
        r = self.np_rng
        rows = min(max(rows, 6), 64)
        calls = []
        # largest accumulators: +-127 rows against x_q of -128 / 127
        head = np.where(r.random((rows, cols)) < 0.5, 127, -127).astype(np.int8)
        head[0], head[1], head[2] = 127, -127, 0
        x_q = np.where(r.random(cols) < 0.5, -128, 127).astype(np.int8)
        scale = np.ones(rows, dtype=np.float32)
        scale[3:] = r.uniform(0.5, 2.0, rows - 3).astype(np.float32)
        calls.append(Call("extremes +-127 x -128/127", x_q, np.float32(0.75), head, scale))
        calls.append(Call("all -128 x_q", np.full(cols, -128, np.int8), np.float32(1.0), head.copy(), scale.copy()))
        # ties: the maximum row repeated later (and an equal logit from a different row)
        call = self.random_call(rows, cols, "ties")
        logits = call.logits()
        top = int(np.argmax(logits))
        first = r.integers(1, rows // 2)
        for at in (first, rows - 1, (first + rows) // 2):
            call.head_q[at] = call.head_q[top]
            call.scale[at] = call.scale[top]
        assert int(np.argmax(call.logits())) == min(first, top)
        calls.append(call)
        # every scale product flushes to zero: logits +0 / -0 (equal), the token is 0
        call = self.random_call(rows, cols, "d_x * scale underflows (FTZ)")
        call.d_x = np.float32(1e-30)
        call.scale[:] = np.float32(1e-12)
        call.head_q[0] = np.where(call.x_q >= 0, -1, 1)          # row 0: a negative accumulator: -0
        call.head_q[0][call.x_q == 0] = 0
        if not np.any(call.x_q):
            call.x_q[0] = 1
            call.head_q[0][0] = -1
        calls.append(call)
        # the flush boundary: d_x * scale around 2^-126
        call = self.random_call(rows, cols, "flush boundary")
        call.d_x = np.float32(2.0 ** -63)
        call.scale = (2.0 ** -63 * r.uniform(0.999, 1.001, rows)).astype(np.float32)
        call.scale[:3] = [np.float32(2.0 ** -63), np.nextafter(np.float32(2.0 ** -63), np.float32(0)),
                          np.float32(2.0 ** -64)]
        calls.append(call)
        # overflow to infinity
        call = self.random_call(rows, cols, "huge scales")
        call.d_x = np.float32(1e20)
        call.scale[:] = np.float32(1e19)
        calls.append(call)
        return calls

    def f16_call(self, rows: int, cols: int, name: str) -> Call:
        r = self.np_rng
        head = (r.standard_normal((rows, cols)) * 0.05).astype(np.float16)
        head[r.integers(rows)] = 0                     # an all-zero row: logit +0
        x = r.standard_normal(cols).astype(np.float32)
        return Call(name, x=x, head_f16=head, lanes=self.lanes)

    def f16_extreme_calls(self, rows: int, cols: int) -> list[Call]:
        r = self.np_rng
        rows = min(max(rows, 8), 64)
        calls = []
        # binary16 subnormals (2^-24 and others) widen to normal binary32
        call = self.f16_call(rows, cols, "fp16 subnormal weights")
        sub = (r.integers(1, 1024, (rows, cols)).astype(np.uint16) | (r.integers(0, 2, (rows, cols)) << 15)
               .astype(np.uint16)).view(np.float16)
        call.head_f16[:rows // 2] = sub[:rows // 2]
        call.head_f16[0] = np.float16(2.0 ** -24)
        call.x = (r.standard_normal(cols) * 1e3).astype(np.float32)
        calls.append(call)
        # 65504 against huge x: overflow to +-inf (no inf x 0: x has no zeros)
        call = self.f16_call(rows, cols, "fp16 max x huge x (overflow)")
        # (one sign per row: +inf and -inf in one sum would make a NaN)
        call.head_f16[:] = np.where(r.random((rows, 1)) < 0.5, 65504, -65504).astype(np.float16)
        call.head_f16[0] = -65504                        # -inf first: the token is row 1, the first +inf
        call.head_f16[1] = 65504
        call.head_f16[2] = 1.0                           # finite products, the sum overflows: +inf
        call.head_f16[3] = -1.0                          # -inf
        call.x = np.where(r.random(cols) < 0.5, 3e38, 2e38).astype(np.float32)
        if cols == 1:
            call.x[0] = np.float32(3.4e38)               # one product: 3.4e38 (finite)
        assert int(np.argmax(call.logits())) == 1
        calls.append(call)
        # products flushing to zero, +0/-0 and binary32-subnormal x (flushed on input), a zero
        # row, opposite rows, a row cancelling exactly and a row of only -0 products (logit +0:
        # the partials start from +0)
        call = self.f16_call(rows, cols, "fp16 flushes, signed zeros, cancellation")
        i = np.arange(cols)
        tiny = (r.standard_normal(cols) * 1e-36).astype(np.float32)          # x w: some flush
        subnormal = (r.integers(1, 1 << 23, cols).astype(np.uint32)
                     | (r.integers(0, 2, cols).astype(np.uint32) << 31)).view(np.float32)
        call.x = np.where(i % 2 == 0, np.float32(1.5),
                          np.select([i % 6 == 1, i % 6 == 3], [np.float32(-0.0), np.float32(0.0)],
                                    np.where(i % 12 == 5, subnormal, tiny))).astype(np.float32)
        call.head_f16[2] = 0
        call.head_f16[3] = -call.head_f16[4]
        ones = i[i % 2 == 0][:(cols + 1) // 4 * 2]        # an even number of the 1.5 lanes
        call.head_f16[5] = 0                             # +0.375 on half of them, -0.375 on the rest
        call.head_f16[5][ones[:len(ones) // 2]] = np.float16(0.25)
        call.head_f16[5][ones[len(ones) // 2:]] = np.float16(-0.25)
        # row 6: every product -0 (-0 x 1.5, -w x +0, w x -0, -w x tiny (flushed), w x subnormal x)
        neg_sign = np.where(np.signbit(call.x), 1.0, -1.0)
        call.head_f16[6] = np.where(i % 2 == 0, -0.0, neg_sign * 2.0 ** -24).astype(np.float16)
        with np.errstate(all="ignore"):
            products = call.head_f16[6].astype(np.float32) * call.x
        assert np.all(np.abs(products) < np.float32(2.0 ** -126)), "row 6 products must all flush"
        logits = call.logits()
        assert logits.view(U32)[5] == 0 and logits.view(U32)[6] == 0 and logits[3] == -logits[4]
        calls.append(call)
        # ties: the maximum row repeated later
        call = self.f16_call(rows, cols, "fp16 ties")
        top = int(np.argmax(call.logits()))
        first = int(r.integers(1, rows // 2))
        for at in (first, rows - 1):
            call.head_f16[at] = call.head_f16[top]
        assert int(np.argmax(call.logits())) == min(first, top)
        calls.append(call)
        # every product flushed (|x w| < 2^-126, both signs): all logits +0, the token is 0
        call = self.f16_call(rows, cols, "fp16 all flushed")
        call.head_f16[:] = np.where(r.random((rows, cols)) < 0.5, 2.0 ** -24, -(2.0 ** -24)).astype(np.float16)
        call.head_f16[:, ::5] = np.float16(6e-5)         # the largest binary16 subnormal region
        call.head_f16[0] = -(2.0 ** -24)
        call.x = np.where(r.random(cols) < 0.5, 1e-34, -1e-34).astype(np.float32)
        assert not np.any(call.logits()), "every product must flush"
        calls.append(call)
        return calls

    def place(self, call: Call) -> None:
        """Write the call's sections to memory at fresh beat-aligned addresses (every other one
        starting just before a 4 KiB boundary); with several ports, as stripes of one logical
        stream (:meth:`place_striped`)."""
        if self.ports > 1:
            return self.place_striped(call)
        beat, rng = self.beat, self.rng
        head_bytes = call.head.nbytes
        for which in (("rows",) if call.fp16 else ("rows", "scales")):
            size = head_bytes if which == "rows" else 4 * call.rows
            if rng.random() < 0.5:
                base = (self.cursor // PAGE + 1) * PAGE - beat * rng.randrange(1, 8)
                base = max(base, self.cursor)
            else:
                base = self.cursor + beat * rng.randrange(0, 16)
            if base + size > MEM_SIZE:
                raise ValueError(f"the calls of one batch need more than the {MEM_SIZE}-byte memory")
            self.cursor = base + -(-size // beat) * beat
            if which == "rows":
                call.rows_base = base
                self.ram.write(base, call.head.astype(call.head.dtype.newbyteorder("<")).tobytes())
            else:
                call.scales_base = base
                self.ram.write(base, call.scale.astype("<f4").tobytes())

    def place_striped(self, call: Call) -> None:
        word, rng, P = self.beat, self.rng, self.ports
        head = call.head.astype(call.head.dtype.newbyteorder("<")).tobytes()
        call.rows_base = word * rng.randrange(0, 2)
        end = call.rows_base + -(-len(head) // word) * word
        logical = bytearray(end)
        logical[call.rows_base:call.rows_base + len(head)] = head
        if not call.fp16:
            call.scales_base = end + word * rng.randrange(0, 3)
            scales = call.scale.astype("<f4").tobytes()
            logical += bytes(call.scales_base - len(logical)) + scales
        stripes = stripe(bytes(logical), ports=P, beat_bytes=self.port_beat)
        n = len(stripes[0])
        call.stripe_bytes = n + self.port_beat * rng.randrange(0, 8)
        if rng.random() < 0.5:
            base = (self.cursor // PAGE + 1) * PAGE - self.port_beat * rng.randrange(1, 8)
            call.stripe_base = max(base, self.cursor)
        else:
            call.stripe_base = self.cursor + self.port_beat * rng.randrange(0, 16)
        self.cursor = call.stripe_base + (P - 1) * call.stripe_bytes + n
        if self.cursor > MEM_SIZE:
            raise ValueError(f"the calls of one batch need more than the {MEM_SIZE}-byte memory")
        for k, data in enumerate(stripes):
            self.ram.write(call.stripe_base + k * call.stripe_bytes, data)

    def section_beats(self, call: Call) -> list[int]:
        """The memory beats (addresses of AXI beats, over every port) the call must read."""
        beat = self.beat
        out = []
        sections = [(call.rows_base, call.head.nbytes)] + ([] if call.fp16 else [(call.scales_base, 4 * call.rows)])
        for base, size in sections:
            words = [base + beat * i for i in range(-(-size // beat))]
            if self.ports == 1:
                out += words
            else:                           # word a: beat a / P of each stripe
                out += [call.stripe_base + k * call.stripe_bytes + a // self.ports
                        for a in words for k in range(self.ports)]
        return out

    # -- running calls -----------------------------------------------------------------------------

    def x_beats(self, call: Call) -> list[dict]:
        lanes = self.lanes
        n = -(-call.cols // lanes)
        if call.fp16:
            padded = np.frombuffer(self.rng.randbytes(4 * n * lanes), dtype=U32).copy()   # pads: random
            padded[:call.cols] = call.x.view(U32)
            return [{"data": sum(int(v) << (32 * j) for j, v in enumerate(padded[i * lanes:(i + 1) * lanes])),
                     "last": int(i == n - 1)} for i in range(n)]
        padded = np.frombuffer(self.rng.randbytes(n * lanes), dtype=np.int8).copy()   # pads: random
        padded[:call.cols] = call.x_q
        return [{"q": int.from_bytes(padded[i * lanes:(i + 1) * lanes].tobytes(), "little"), "last": int(i == n - 1)}
                for i in range(n)]

    def expected_beats(self, call: Call) -> tuple[list[list[int]], int]:
        lanes = self.lanes
        bits = call.logits().view(U32)
        n = -(-call.rows // lanes)
        padded = np.zeros(n * lanes, dtype=U32)
        padded[:call.rows] = bits
        return [[int(v) for v in padded[i * lanes:(i + 1) * lanes]] for i in range(n)], int(np.argmax(call.logits()))

    async def run_calls(self, calls: list[Call], stalls, what: str) -> list[int]:
        """Queue ``calls`` back to back, check every output; returns the cycles from the first
        command to each token."""
        dut, clock, lanes = self.dut, self.clock, self.lanes
        rng = self.rng
        p_axi, p_cmd, p_x, p_scale, p_logits, p_token = stalls

        def pause(prob):
            return random_pause(prob, rng.randrange(1 << 30)) if prob else None

        for ram in self.rams:
            for model_channel in ("ar_channel", "r_channel"):
                set_pauses(getattr(ram, model_channel), pause(p_axi))
        cmd, xs, scale, out, token = self.cmd, self.xs, self.scale, self.out, self.token
        for port, prob in ((cmd, p_cmd), (xs, p_x), (scale, p_scale), (out, p_logits), (token, p_token)):
            if port is not None:
                port.set_pause_generator(pause(prob))
        mon = HandshakeMonitor(dut, clock, {name: axi_channel(dut, name, "ar", ADDRESS_FIELDS)
                                            for name in self.axi_names})
        self.cursor = 0                     # the previous batch is done: its memory is free
        for call in calls:
            self.place(call)
        start = self.cycle()
        for call in calls:
            cmd.send_nowait({"stripe_base": call.stripe_base, "stripe_bytes": call.stripe_bytes,
                             "rows_base": call.rows_base, "scales_base": call.scales_base, "rows": call.rows,
                             "cols": call.cols})
            for beat in self.x_beats(call):
                xs.send_nowait(beat)
            if not call.fp16:
                scale.send_nowait(int(np.float32(call.d_x).view(U32)))
        token_cycles = []
        for c, call in enumerate(calls):
            beats, want_token = self.expected_beats(call)
            bound = 2000 + 40 * call.rows * (-(-call.head.itemsize * call.cols // self.beat) + 1) * (
                2 if call.fp16 else 1)
            label = f"{what}: call {c} ({call.name}, {call.rows} x {call.cols})"
            for i, want in enumerate(beats):
                got = await with_timeout(out.recv(), clock, bound, f"{label}: logits beat {i} of {len(beats)}")
                words = [(got["data"] >> (32 * j)) & 0xFFFF_FFFF for j in range(lanes)]
                last = int(i == len(beats) - 1)
                if words != want or got["last"] != last:
                    bad = [j for j in range(lanes) if words[j] != want[j]]
                    rows = [i * lanes + j for j in bad]
                    detail = "; ".join(
                        f"row {r}: got {show(words[j])}, expected {show(want[j])}" +
                        ("" if call.fp16 else
                         f" (acc {int(call.x_q.astype(np.int64) @ call.head_q[r].astype(np.int64))}, "
                         f"scale {show(int(call.scale[r:r + 1].view(U32)[0]))})" if r < call.rows else " (pad)")
                        for j, r in zip(bad[:4], rows[:4]))
                    raise AssertionError(f"{label}: logits beat {i}: last {got['last']} (expected {last}); {detail}")
            got_token = await with_timeout(token.recv(), clock, bound, f"{label}: token")
            if got_token != want_token:
                logits = call.logits()
                got_logit = logits[got_token] if got_token < call.rows else "beyond the rows"
                raise AssertionError(f"{label}: token {got_token} (logit {got_logit}), expected {want_token} "
                                     f"(logit {logits[want_token]})")
            token_cycles.append(self.cycle() - start)
        await ClockCycles(clock, 20)
        assert out.empty() and token.empty(), f"{what}: {out.count()} logits and {token.count()} tokens too many"
        assert xs.idle() and (scale is None or scale.idle()) and cmd.idle(), f"{what}: inputs left untaken"
        assert not int(dut.error.value), f"{what}: error raised"
        assert not int(dut.busy.value), f"{what}: busy still high"
        mon.stop()
        read = Counter()
        port_beat = self.port_beat
        for burst in (b for name in self.axi_names for b in mon.values[name]):
            assert (1 << burst["size"]) == port_beat and burst["burst"] == 1, f"{what}: burst {burst}"
            start_addr = burst["addr"]
            assert start_addr // PAGE == (start_addr + (burst["len"] + 1) * port_beat - 1) // PAGE, \
                f"{what}: burst at {start_addr:#x} crosses 4 KiB"
            for i in range(burst["len"] + 1):
                read[start_addr + i * port_beat] += 1
        expected = Counter(a for call in calls for a in self.section_beats(call))
        if read != expected:
            extra = sorted((read - expected).elements())[:6]
            missing = sorted((expected - read).elements())[:6]
            raise AssertionError(f"{what}: beats read differ from the sections: extra {[hex(a) for a in extra]}, "
                                 f"missing {[hex(a) for a in missing]}")
        return token_cycles


@cocotb.test()
async def random_calls(dut):
    tb = LmHeadTB(dut, 2_000_000, "random_calls")
    await tb.reset()
    for s, stalls in enumerate(tb.cfg["stalls"]):
        calls = []
        for i, (rows, cols) in enumerate(tb.cfg["shapes"]):
            make = tb.f16_call if tb.fp16 else tb.quantised_call if (i + s) % 2 else tb.random_call
            calls.append(make(rows, cols, f"{make.__name__.split('_')[0]} {rows}x{cols}"))
        await tb.run_calls(calls, stalls, f"random_calls stalls {stalls}")
        tb.log.info("stalls %s: %d calls exact (%s)", stalls, len(calls),
                    ", ".join(f"{c.rows}x{c.cols}" for c in calls))


@cocotb.test()
async def extreme_calls(dut):
    tb = LmHeadTB(dut, 2_000_000, "extreme_calls")
    await tb.reset()
    rows, cols = tb.cfg["shapes"][0]
    calls = tb.f16_extreme_calls(rows, cols) if tb.fp16 else tb.extreme_calls(rows, cols)
    await tb.run_calls(calls, tb.cfg["stalls"][-1], "extreme_calls")
    tb.log.info("%d extreme calls exact: %s", len(calls), ", ".join(c.name for c in calls))


@cocotb.test()
async def throughput(dut):
    tb = LmHeadTB(dut, 2_000_000, "throughput")
    await tb.reset()
    results = []
    for rows, cols in tb.cfg["throughput_shapes"]:
        make = tb.f16_call if tb.fp16 else tb.random_call
        call = make(rows, cols, f"throughput {rows}x{cols}")
        cycles = (await tb.run_calls([call], [0.0] * 6, f"throughput {rows}x{cols}"))[0]
        row_bytes = call.head.itemsize * cols
        words = -(-row_bytes // tb.beat)
        # fp16: a word takes beat / (2 lanes) cycles, one group of lanes weights each
        per_word = tb.beat // (2 * tb.lanes) if tb.fp16 else 1
        bound = rows * (words + (1 if row_bytes % tb.beat else 0)) * per_word + 2 * -(-cols // tb.lanes) + 120
        results.append({"rows": rows, "cols": cols, "cycles_cmd_to_token": cycles,
                        "head_beats": -(-call.head.nbytes // tb.beat), "bound": bound})
        tb.log.info("throughput %dx%d: %d cycles for %d head beats (bound %d)", rows, cols, cycles,
                    -(-call.head.nbytes // tb.beat), bound)
        assert cycles <= bound, f"throughput {rows}x{cols}: {cycles} cycles, bound {bound}"
    tb.record("throughput", results)
