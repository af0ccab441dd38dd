"""cocotb tests of the element-wise pipelines, bit for bit against :mod:`tellme.sim.golden`:
:class:`tellme.hw.norm_quant.NormQuant`, :class:`tellme.hw.dequant.Dequant`,
:class:`tellme.hw.gating.Gating` and :class:`tellme.hw.rope.Rope`.

One module serves every unit: the configuration's ``unit`` picks the :class:`UnitModel` that
knows the unit's streams, builds its stimuli with numpy and computes the expected output beats
with the golden model (``rmsnorm_quantize``/``quantize``, ``dequantize``/``residual_add``,
``gated_activation``, ``rope`` with ``rope_table``). Each job (one vector, one TLMM result
command, one head vector) becomes input beats queued on the unit's input streams and expected
beats on its output streams; a scoreboard per output stream compares every beat as it moves (all
lanes, bit for bit, NaNs canonical on both sides, and ``last``), and reports the first mismatch
with the job, the element, its inputs, the simulation time (for the waveform) and the cycle.

Tests (every one arms a watchdog):

``test_random``
    Per entry of ``stalls`` (random valid/ready stalls on every input and output stream), a
    batch of jobs queued back to back: the unit's configured real sizes plus random ones.
``test_extremes``
    Hand-made corner jobs (zeros, -0, subnormals, huge values, overflow, NaN/inf, rounding ties,
    the quantiser's 1e-5 clamp, ...) under no stalls and under the last ``stalls`` entry.
``test_reset``
    Short resets (``reset_cycles``, default 2, as every bench uses) in the middle of busy
    batches under stalls, each followed by jobs that must come out exactly. (The other tests
    start with a 64-cycle reset, so that a test that stopped mid-job cannot disturb the next.)
``test_throughput``
    No stalls: latency (edges from the first input beat moving to the first output beat
    moving) and steady-state throughput (output beats and elements per cycle), logged, checked
    against lower bounds and, with ``report`` set, written to that JSON file.

Configuration (``run_cocotb(parameters=...)``, read with :func:`tellme.sim.tb.tb_config`):

``unit``
    ``"norm_quant"``, ``"dequant"``, ``"gating"`` or ``"rope"``.
``lanes``
    L (norm_quant, gating, rope) or T (dequant: ``tokens``).
``fields``
    ``{stream: Field list}`` of the struct payloads (``struct_fields`` of the unit's layouts);
    arrays inside are one unsigned field, packed lane 0 first.
``latency``
    The unit's ``latency`` attribute, where it has one (dequant, gating, rope).
``stalls``
    List of stall-probability lists, one probability per stream in the order of the unit's
    ``STREAMS`` (inputs, then outputs).
``seed``
    Seed of the stimulus generator (numpy); stall patterns follow cocotb's seed.
``reset_cuts``
    Number of resets in ``test_reset`` (default 6).
``reset_cycles``
    Length of the resets of ``test_reset`` (default :data:`RESET_CYCLES`).
``check_bounds``
    ``test_throughput`` asserts its bounds (default true; the benchmark only measures).
``min_beats_per_cycle``
    Steady-state bound of dequant, gating and rope (default 1).
``report``
    Path of a JSON file ``test_throughput`` writes its measurements to.

Per unit:

- norm_quant: ``max_dim``; ``widths`` (list of ``[d, mode]`` with mode ``"norm"``, ``"quant"``:
  the vectors of every ``test_random`` batch, shuffled), ``random_vectors`` (extra random
  vectors per batch, random width up to ``random_max_dim`` and mode), ``eps``,
  ``throughput_dim`` and ``throughput_vectors``; ``max_norm_cycles_per_vector`` and
  ``max_quant_cycles_per_vector``: bounds on the steady-state interval between vectors of
  ``throughput_dim`` (defaults 2n + 120 and n + 60 for n beats: the unit's documented cost with slack).
  Streams: cmd, x, gain, q, scale.
- dequant: ``residual``; ``commands`` (random commands per batch), ``max_rows``. Streams: acc,
  [res,] o.
- gating: ``act``; ``vectors`` per batch, ``max_dim``. Streams: gate, up, o.
- rope: ``head_dim``, ``thetas``, ``positions`` (table rows), ``heads`` per batch. Streams: x,
  cs, o.
"""

from __future__ import annotations

import collections
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge
from cocotb.utils import get_sim_time

from ...contract import fp32 as f
from ...contract.formats import rope_table
from .. import golden
from .streams import (CycleTimeout, HandshakeMonitor, StreamSink, StreamSource, pack_struct, random_pause,
                      start_watchdog, unpack_struct, with_timeout)
from .testbench import Testbench

#: Reset length of test_reset (the usual reset_dut length, as in the other benches).
RESET_CYCLES = 2
#: Reset at the start of every other test: long enough to flush every pipeline even if the
#: previous test stopped in the middle of a job (test_reset checks short resets on purpose).
CLEAN_RESET_CYCLES = 64
U32 = np.dtype("<u4")
I8 = np.dtype("<i1")
I32 = np.dtype("<i4")
QNAN = np.uint32(0x7FC00000)
FLT_MAX = np.finfo(np.float32).max
MIN_NORMAL = np.float32(2.0 ** -126)


# -- bits and lanes ---------------------------------------------------------------------------------

def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def bits_of(x) -> np.ndarray:
    """Raw binary32 patterns (uint32) of x, same shape (0-d stays 0-d)."""
    a = f32(x)
    return a.reshape(-1).view(U32).reshape(a.shape) if a.flags.c_contiguous else np.ascontiguousarray(a).view(U32)


def bits32(x) -> int:
    """Raw binary32 pattern of one scalar."""
    return int(f32(x).reshape(-1).view(U32)[0])


def from_bits(b) -> np.ndarray:
    return np.asarray(b, dtype=U32).view(np.float32)


def pack_lanes(values: np.ndarray) -> int:
    """Lanes of a numpy array as one integer, lane 0 in the least significant bits."""
    values = np.ascontiguousarray(values)
    return int.from_bytes(values.astype(values.dtype.newbyteorder("<")).tobytes(), "little")


def unpack_lanes(raw: int, dtype: np.dtype, count: int) -> np.ndarray:
    return np.frombuffer(int(raw).to_bytes(count * dtype.itemsize, "little"), dtype=dtype).copy()


def show(value, dtype: np.dtype) -> str:
    if dtype == U32:
        b = int(value)
        return f"{b:#010x} ({float(from_bits(np.uint32(b))):.9g})"
    return str(int(value))


def show_f32(x) -> str:
    return show(bits32(x), U32)


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """x moved by k ulps along the bit pattern (same sign)."""
    return from_bits((bits_of(x).astype(np.int64) + k).astype(U32))


def beats_of(values: np.ndarray, lanes: int) -> tuple[int, np.ndarray]:
    """Zero-pad a 1-d array to whole beats; returns (beats, padded array)."""
    n = max(1, -(-len(values) // lanes))
    padded = np.zeros(n * lanes, dtype=values.dtype)
    padded[:len(values)] = values
    return n, padded


# -- expected beats ---------------------------------------------------------------------------------

@dataclass
class Expect:
    """One expected output beat: field -> value (numpy lane array or int), and where it comes
    from (job and beat index) for the mismatch report."""
    values: dict
    job: Any
    beat: int


@dataclass
class Job:
    name: str
    inputs: dict = field(default_factory=dict)      # stream -> list of raw payload ints
    expected: dict = field(default_factory=dict)    # stream -> list of Expect
    cycles: int = 0                                  # stall-free estimate
    elements: int = 0                                # output elements (throughput)
    info: dict = field(default_factory=dict)         # anything describe() needs

    def finished(self, *, cycles: int, elements: int, **info) -> "Job":
        """Set the stall-free cycle estimate, the output elements and what describe() needs;
        returns the job (once its beats are in)."""
        self.cycles, self.elements, self.info = cycles, elements, info
        return self


class UnitModel:
    """Streams, stimuli and expected results of one unit. Subclasses fill in STREAMS (inputs
    then outputs), OUTPUTS, the lane dtypes of the output array fields and the job makers."""

    STREAMS: tuple = ()
    OUTPUTS: tuple = ()
    #: the main data input: test_reset cuts a batch after a random beat of it moved
    PRIMARY: str = ""
    #: output stream -> {array field: dtype}
    ARRAYS: dict = {}

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.fields = cfg.get("fields", {})

    def pack(self, stream: str, values) -> int:
        fields = self.fields.get(stream)
        if fields is None:
            return int(values)
        return pack_struct(fields, values)

    def decode(self, stream: str, raw: int) -> dict:
        fields = self.fields.get(stream)
        if fields is None:
            return {"value": int(raw)}
        out = unpack_struct(fields, raw)
        for name, dtype in self.ARRAYS.get(stream, {}).items():
            width = next(w for n, w, _ in fields if n == name)
            out[name] = unpack_lanes(out[name], dtype, width // (8 * dtype.itemsize))
        return out

    def describe(self, job: Job, stream: str, beat: int, lane: int | None) -> str:
        return ""

    def random_jobs(self, rng, batch: int) -> list[Job]:
        raise NotImplementedError

    def extreme_jobs(self, rng) -> list[Job]:
        raise NotImplementedError

    def throughput_jobs(self, rng) -> list[Job]:
        raise NotImplementedError

    def analyse(self, jobs, monitor: HandshakeMonitor, start: dict) -> dict:
        raise NotImplementedError


class PipeModel(UnitModel):
    """A unit with one output stream ``o`` of ``lanes`` binary32 lanes (``data``, ``last``),
    one beat per beat of its PRIMARY input (dequant, gating, rope)."""

    OUTPUTS = ("o",)
    ARRAYS = {"o": {"data": U32}}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.lanes = int(cfg["lanes"])

    def analyse(self, jobs, monitor, start):
        return stream_pipe_analysis(monitor, start, self.PRIMARY, "o", jobs, self.lanes)


# -- NormQuant ----------------------------------------------------------------------------------------

REAL_WIDTHS = (1536, 2560, 4096, 6912)


class NormQuantModel(UnitModel):
    STREAMS = ("cmd", "x", "gain", "q", "scale")
    PRIMARY = "x"
    OUTPUTS = ("q", "scale")
    ARRAYS = {"q": {"q": I8}}

    def __init__(self, cfg):
        super().__init__(cfg)
        self.lanes = int(cfg["lanes"])
        self.max_dim = int(cfg["max_dim"])
        self.eps = np.float32(cfg.get("eps", 1e-5))

    def job(self, name, x, gain=None, eps=None) -> Job:
        """One vector: quantise-only when ``gain`` is None, else RMSNorm + quantise."""
        L = self.lanes
        x = f32(x)
        d = len(x)
        assert 1 <= d <= self.max_dim, (d, self.max_dim)
        eps = self.eps if eps is None else np.float32(eps)
        norm = gain is not None
        n, xp = beats_of(x, L)
        inv_dim = np.float32(1.0 / d)
        job = Job(name=name)
        job.inputs["cmd"] = [self.pack("cmd", {"norm": int(norm), "inv_dim": bits32(inv_dim),
                                               "eps": bits32(eps)})]
        xb = bits_of(xp)
        job.inputs["x"] = [self.pack("x", {"data": pack_lanes(xb[b * L:(b + 1) * L]), "last": int(b == n - 1)})
                           for b in range(n)]
        if norm:
            gain = f32(gain)
            assert gain.shape == x.shape
            _, gp = beats_of(gain, L)
            gb = bits_of(gp)
            job.inputs["gain"] = [pack_lanes(gb[b * L:(b + 1) * L]) for b in range(n)]
            q, scale = golden.rmsnorm_quantize(x[None], gain, eps, L)
        else:
            job.inputs["gain"] = []
            q, scale = golden.quantize(x[None])
        # Padding lanes hold +0 (and gain 0): they quantise to 0 whatever the scale.
        _, qp = beats_of(q[0].astype(np.int8), L)
        job.expected["q"] = [Expect({"q": qp[b * L:(b + 1) * L], "last": int(b == n - 1)}, job, b)
                             for b in range(n)]
        job.expected["scale"] = [Expect({"value": bits32(scale)}, job, 0)]
        return job.finished(cycles=(3 * n + 200) if norm else (2 * n + 150), elements=d, x=x, gain=gain, norm=norm,
                            eps=eps, beats=n, q=q[0], scale=scale.reshape(()))

    def describe(self, job, stream, beat, lane):
        x, gain, info = job.info["x"], job.info["gain"], job.info
        head = (f"vector {job.name!r} (d={len(x)}, {'norm' if info['norm'] else 'quantise only'}, "
                f"{info['beats']} beats, max|x|={show_f32(np.max(np.abs(f.ftz(x))))}, "
                f"expected scale {show_f32(info['scale'])})")
        if stream == "scale" or lane is None:
            return head
        i = beat * self.lanes + lane
        if i >= len(x):
            return f"{head}; padding element {i}"
        g = f", gain[{i}]={show_f32(gain[i])}" if gain is not None else ""
        return f"{head}; x[{i}]={show_f32(x[i])}{g}"

    # stimuli
    def hidden(self, rng, d) -> np.ndarray:
        """A hidden-state-like vector: normal at a random scale, sometimes with outliers."""
        scale = 10.0 ** rng.uniform(-4, 4)
        x = rng.standard_normal(d) * scale
        if rng.random() < 0.5:
            idx = rng.integers(0, d, size=max(1, d // 200))
            x[idx] *= rng.uniform(5, 200, size=len(idx))
        if rng.random() < 0.2:
            x[rng.integers(0, d, size=max(1, d // 50))] = 0.0
        return f32(x)

    def gains(self, rng, d) -> np.ndarray:
        kind = rng.integers(3)
        if kind == 0:
            g = rng.normal(1.0, 0.3, d)
        elif kind == 1:
            g = rng.uniform(0.01, 8.0, d) * rng.choice([-1.0, 1.0], d)
        else:
            g = np.exp(rng.normal(0.0, 2.0, d))
        return f32(g)

    def vector(self, rng, d, mode, name) -> Job:
        x = self.hidden(rng, d)
        eps = np.float32(rng.choice([1e-5, 1e-6])) if rng.random() < 0.2 else None
        return self.job(name, x, self.gains(rng, d) if mode == "norm" else None, eps)

    def random_jobs(self, rng, batch):
        widths = [tuple(w) for w in self.cfg.get("widths", [])]
        jobs = [self.vector(rng, int(d), mode, f"{mode}{d}#{batch}") for d, mode in widths]
        limit = int(self.cfg.get("random_max_dim", min(self.max_dim, 1024)))
        for i in range(int(self.cfg.get("random_vectors", 4))):
            d = int(rng.integers(1, limit + 1))
            mode = "norm" if rng.random() < 0.5 else "quant"
            jobs.append(self.vector(rng, d, mode, f"random{mode}{d}#{batch}.{i}"))
        order = rng.permutation(len(jobs))
        return [jobs[i] for i in order]

    def tie_vector(self, rng, d, top, norm: bool) -> tuple[np.ndarray, np.ndarray | None, int]:
        """A vector of d elements whose largest magnitude is ``top`` (in y = rmsnorm(x) when
        ``norm``), and whose other elements scale (v * s) to exact half-integers k + 0.5 (round
        half to even) or land within an ulp of them. Returns (x, gain or None, ties hit)."""
        L = self.lanes
        targets = f32(rng.integers(-127, 127, size=d) + 0.5)
        targets[:4] = [126.5, -126.5, 0.5, -0.5]
        x = self.hidden(rng, d) if norm else np.zeros(d, np.float32)
        if norm:
            x[x == 0] = 1.0
            ss = f.vector_sum(f.mul(x, x), L)
            r = f.rsqrt(f.add(f.mul(ss, np.float32(1.0 / d)), self.eps))
            xr = f.mul(x, r)
            # element 0 carries the maximum |y| = top: gain = top / xr0 (close enough; the max is
            # whatever y0 turns out to be).
            g = np.zeros(d, np.float32)
            g[0] = f32(abs(float(top) / float(xr[0])))
            m = np.abs(f.mul(xr[0], g[0]))
        else:
            x[0] = top
            m = np.abs(f32(top))
        s = f.recip(f.mul(f.fmax(m, golden.ACT_CLAMP), golden.INV_127))
        hits = 0
        for i in range(1, d):
            t = targets[i]
            base = f32(np.float64(t) / np.float64(s))
            if norm:
                base = f32(np.float64(base) / np.float64(xr[i]))        # the gain to find
            cands = neighbours(np.full(7, base, np.float32), np.arange(-3, 4))
            vals = f.mul(f.mul(xr[i], cands), s) if norm else f.mul(cands, s)
            ok = np.nonzero(vals == t)[0]
            pick = cands[ok[0]] if len(ok) else np.float32(base)
            hits += bool(len(ok))
            if norm:
                g[i] = pick
            else:
                x[i] = pick
        return x, (g if norm else None), hits

    def extreme_jobs(self, rng):
        L, jobs = self.lanes, []
        d = min(1536, self.max_dim)
        ones = np.ones(d, np.float32)

        def both(name, x, gain=None):
            jobs.append(self.job(f"{name}/quant", x))
            jobs.append(self.job(f"{name}/norm", x, ones[:len(x)] if gain is None else gain))

        both("zeros", np.zeros(d, np.float32))
        both("negzeros", np.full(d, -0.0, np.float32))
        mixed_zero = self.hidden(rng, d)
        mixed_zero[::3] = -0.0
        both("some-negzeros", mixed_zero)
        for big in (3e38, -3e38, FLT_MAX, 1e30, 1.8446743e19, 1e19, 1e18):
            x = self.hidden(rng, d)
            x /= np.max(np.abs(x))
            x[rng.integers(d)] = big
            both(f"outlier{big:g}", x, self.gains(rng, d))
        both("all1e18", np.full(d, 1e18, np.float32))           # sum of squares overflows
        both("all-maxfloat", np.full(d, -FLT_MAX, np.float32))
        # near the 1e-5 clamp and the bottom of the normal range
        clamp = golden.ACT_CLAMP
        for label, top in (("clamp", clamp), ("clamp+1ulp", neighbours(clamp, 1)),
                           ("clamp-1ulp", neighbours(clamp, -1)), ("1e-6", 1e-6), ("2e-5", 2e-5)):
            top = float(np.asarray(top, np.float32).reshape(-1)[0])
            x = self.hidden(rng, d)
            x = f32(x / np.max(np.abs(x)) * top)
            x[rng.integers(d)] = f32(top) * rng.choice([-1, 1])
            both(f"tiny-{label}", x)
        sub = f32(rng.uniform(-1, 1, d) * 2.0 ** -127)          # subnormals: flushed to 0
        both("subnormals", sub)
        edge = f32(rng.choice([1.0, -1.0], d)) * MIN_NORMAL * f32(rng.uniform(1, 4, d))
        both("min-normal", edge)                                # squares underflow (FTZ)
        sq_edge = f32(rng.uniform(1, 2, d) * 2.0 ** -63)         # squares near 2^-126
        both("square-underflow-edge", sq_edge)
        # rounding ties of the quantiser: x*s = k + 0.5 exactly
        for top in (1.0, 3.0e38, 1e-5, 7.25):
            x, _, hits = self.tie_vector(rng, 256, f32(top), norm=False)
            job = self.job(f"ties-quant(max={top:g},hits={hits})", x)
            jobs.append(job)
        for top in (1.0, 100.0):
            x, g, hits = self.tie_vector(rng, 256, f32(top), norm=True)
            jobs.append(self.job(f"ties-norm(max~{top:g},hits={hits})", x, g))
        # values right at the ends of the int8 range: +-max gives +-127
        x = self.hidden(rng, 64)
        m = np.max(np.abs(x))
        below = float(neighbours(m, -1))
        x[:4] = [m, -m, below, -below]
        both("int8-ends", x)
        # gains: zero, -0, huge (y overflows), subnormal, negative
        x = self.hidden(rng, d)
        for label, gv in (("zero", 0.0), ("negzero", -0.0), ("huge", 3e38), ("subnormal", 1e-40),
                          ("negative", -2.0)):
            g = self.gains(rng, d)
            g[rng.integers(0, d, size=8)] = gv
            jobs.append(self.job(f"gain-{label}", x, g))
        jobs.append(self.job("gain-all-huge", x, np.full(d, 3e38, np.float32)))
        # NaN and infinities
        for label, v in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
            xs = self.hidden(rng, 96)
            xs[rng.integers(96)] = v
            both(label, xs, ones[:96] if len(ones) >= 96 else np.ones(96, np.float32))
        nan_payload = self.hidden(rng, 128)
        nan_payload[5] = from_bits(np.uint32(0xFF812345))                  # non-canonical NaN
        both("nan-payload", nan_payload, np.ones(128, np.float32))
        # short and odd widths: one element, one beat, partial final beats
        for dd in sorted({1, L - 1 if L > 1 else 1, L, L + 1, 2 * L + 3, 96, 128, 97}):
            if dd <= self.max_dim:
                both(f"d{dd}", self.hidden(rng, dd), self.gains(rng, dd))
        # eps variants
        x = self.hidden(rng, d) * f32(1e-3)
        jobs.append(self.job("eps1e-6", x, self.gains(rng, d), eps=1e-6))
        jobs.append(self.job("eps-large", x, self.gains(rng, d), eps=0.5))
        if self.max_dim >= max(REAL_WIDTHS):
            jobs.append(self.job("max-width-zeros", np.zeros(self.max_dim, np.float32),
                                 np.ones(self.max_dim, np.float32)))
        return jobs

    def throughput_jobs(self, rng):
        d = int(self.cfg.get("throughput_dim", 1536))
        count = int(self.cfg.get("throughput_vectors", 8))
        norm = [self.vector(rng, d, "norm", f"tp-norm{d}.{i}") for i in range(count)]
        quant = [self.vector(rng, d, "quant", f"tp-quant{d}.{i}") for i in range(count)]
        return [norm, quant]

    def analyse(self, jobs, monitor, start):
        """Latency of the first vector and the steady-state interval between the first q beats
        of consecutive vectors (median over the second half of the run)."""
        moves = monitor.moves
        x0, q0, s0 = start["x"], start["q"], start["scale"]
        first_q = []
        q_index = q0
        for job in jobs:
            first_q.append(moves["q"][q_index])
            q_index += len(job.expected["q"])
        intervals = np.diff(first_q)
        steady = float(np.median(intervals[len(intervals) // 2:])) if len(intervals) else float("nan")
        n = len(jobs[0].expected["q"])
        d = jobs[0].elements
        return {
            "mode": "norm" if jobs[0].info["norm"] else "quant",
            "dim": d,
            "vectors": len(jobs),
            "beats_per_vector": n,
            "latency_first_x_to_first_q": moves["q"][q0] - moves["x"][x0],
            "latency_first_x_to_scale": moves["scale"][s0] - moves["x"][x0],
            "latency_last_x_to_first_q": moves["q"][q0] - moves["x"][x0 + n - 1],
            "cycles_per_vector_steady": steady,
            "intervals": [int(i) for i in intervals],
            "beats_per_cycle_steady": n / steady,
            "elements_per_cycle_steady": d / steady,
            "total_cycles": moves["q"][q_index - 1] - moves["x"][x0] + 1,
        }


# -- Dequant ------------------------------------------------------------------------------------------

ACC_EXTREMES = [0, 1, -1, 2 ** 31 - 1, -2 ** 31, -2 ** 31 + 1, 2 ** 24, 2 ** 24 + 1, 2 ** 24 + 3,
                -(2 ** 24 + 1), 2 ** 31 - 64, 2 ** 31 - 65, -(2 ** 31 - 64), 2 ** 25 + 2, 2 ** 25 + 6,
                (1 << 21) - 1, -(1 << 21)]


class DequantModel(PipeModel):
    PRIMARY = "acc"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.tokens = self.lanes
        self.residual = bool(cfg["residual"])
        self.STREAMS = ("acc", "res", "o") if self.residual else ("acc", "o")

    def job(self, name, acc, d_x, w_mult, res=None, used=0) -> Job:
        """One TLMM command: acc (rows, T) int32, d_x (T,) and w_mult float32 scalars for all
        rows, res (rows, T) float32 with the residual; ``used`` tokens of the T (0: all), whose
        outputs alone are checked."""
        T = self.tokens
        acc = np.asarray(acc, dtype=np.int64)
        rows = acc.shape[0]
        assert acc.shape == (rows, T)
        d_x, w_mult = f32(d_x).reshape(T), f32(w_mult).reshape(())
        y = golden.dequantize(acc.T.astype(np.int32), d_x, w_mult[()]).T          # (rows, T)
        if self.residual:
            res = f32(res).reshape(rows, T)
            y = golden.residual_add(res, y)
        job = Job(name=name)
        dxw, wmw = pack_lanes(bits_of(d_x)), bits32(w_mult)
        job.inputs["acc"] = [self.pack("acc", {"acc": pack_lanes(acc[r].astype(I32)), "d_x": dxw,
                                               "w_mult": wmw, "tokens": used, "last": int(r == rows - 1)})
                             for r in range(rows)]
        if self.residual:
            rb = bits_of(res)
            job.inputs["res"] = [self.pack("res", {"data": pack_lanes(rb[r]), "last": int(r == rows - 1)})
                                 for r in range(rows)]
        yb = bits_of(y)
        checked = used or T
        job.expected["o"] = [Expect({"data": yb[r][:checked].copy(), "last": int(r == rows - 1)}, job, r)
                             for r in range(rows)]
        return job.finished(cycles=rows + 20, elements=rows * checked, acc=acc, d_x=d_x, w_mult=w_mult,
                            res=res, used=used)

    def describe(self, job, stream, beat, lane):
        i = job.info
        text = f"command {job.name!r} row {beat}: w_mult={show_f32(i['w_mult'])}"
        if lane is None:
            return text
        text += f", token {lane}: acc={int(i['acc'][beat, lane])}, d_x={show_f32(i['d_x'][lane])}"
        if self.residual:
            text += f", res={show_f32(i['res'][beat, lane])}"
        return text

    def scales(self, rng):
        d_x = f32(10.0 ** rng.uniform(-6, 1, self.tokens))
        w_mult = f32(10.0 ** rng.uniform(-1, 1.5))
        return d_x, w_mult

    def accs(self, rng, rows) -> np.ndarray:
        T = self.tokens
        kind = rng.integers(4)
        if kind == 0:
            acc = rng.integers(-(1 << 21), 1 << 21, size=(rows, T))           # realistic |acc| < 2^21
        elif kind == 1:
            acc = rng.integers(-(1 << 31), 1 << 31, size=(rows, T))          # full range
        elif kind == 2:
            acc = rng.integers(-200, 200, size=(rows, T))
        else:
            acc = (rng.integers(-(1 << 7), 1 << 7, size=(rows, T))
                   << rng.integers(0, 24, size=(rows, T)))                 # few significant bits
        mask = rng.random((rows, T)) < 0.05
        acc[mask] = rng.choice(ACC_EXTREMES, size=int(mask.sum()))
        return np.clip(acc, -(1 << 31), (1 << 31) - 1)

    def residuals(self, rng, rows, y=None) -> np.ndarray:
        T = self.tokens
        h = f32(rng.standard_normal((rows, T)) * 10.0 ** rng.uniform(-3, 3))
        return h

    def command(self, rng, name, rows=None, extremes=False, used=None) -> Job:
        T = self.tokens
        rows = int(rows or rng.integers(1, int(self.cfg.get("max_rows", 64)) + 1))
        acc = self.accs(rng, rows)
        d_x, w_mult = self.scales(rng)
        res = None
        if self.residual:
            res = self.residuals(rng, rows)
            # some exact cancellations: h = -y gives +0
            y = golden.dequantize(acc.T.astype(np.int32), d_x, w_mult).T
            mask = rng.random((rows, T)) < 0.05
            res[mask] = -y[mask]
        # rows of a pass of fewer tokens (a decode step: 1): a narrowed Dequant without the
        # residual skips the parts past them (0: all T)
        if used is None:
            used = int(rng.integers(0, T + 1)) if rng.random() < 0.5 else 0
        return self.job(name, acc, d_x, w_mult, res, used=used)

    def random_jobs(self, rng, batch):
        return [self.command(rng, f"cmd#{batch}.{i}") for i in range(int(self.cfg.get("commands", 12)))]

    def extreme_jobs(self, rng):
        T, jobs = self.tokens, []
        acc_all = np.array(ACC_EXTREMES, dtype=np.int64)
        rows = -(-len(acc_all) // T) * 2
        # every extreme on every token: the list in order, then reversed (and shifted by a lane)
        grid = np.concatenate([np.resize(acc_all, (rows // 2) * T),
                               np.resize(acc_all[::-1], (rows - rows // 2) * T)]).reshape(rows, T)
        specials = f32([0.0, -0.0, 1e-40, -1e-40, MIN_NORMAL, 3e38, FLT_MAX, np.inf, -np.inf, np.nan,
                        -1.5, 1e-30, 1e-20, 1.0, 2.0 ** -100, 1e20])
        # scales: each special as d_x (on one token) and as w_mult
        for i, v in enumerate(specials):
            d_x, w_mult = self.scales(rng)
            d_x[i % T] = v
            res = self.residuals(rng, rows) if self.residual else None
            jobs.append(self.job(f"d_x[{i % T}]={v!r}", grid, d_x, w_mult, res))
            d_x, _ = self.scales(rng)
            jobs.append(self.job(f"w_mult={v!r}", grid, d_x, v, res))
        # product of scales underflows / overflows
        jobs.append(self.job("scales-underflow", grid, np.full(T, 1e-20, np.float32), f32(1e-20),
                             self.residuals(rng, rows) if self.residual else None))
        jobs.append(self.job("scales-overflow", grid, np.full(T, 1e20, np.float32), f32(1e20),
                             self.residuals(rng, rows) if self.residual else None))
        jobs.append(self.job("product-overflow", grid, np.full(T, 1e28, np.float32), f32(1.0),
                             self.residuals(rng, rows) if self.residual else None))
        if self.residual:
            # residual specials crossed with the accumulators, and exact cancellation
            res_specials = np.resize(specials, rows * T).reshape(rows, T)
            d_x, w_mult = self.scales(rng)
            jobs.append(self.job("res-specials", grid, d_x, w_mult, res_specials))
            y = golden.dequantize(grid.T.astype(np.int32), d_x, w_mult).T
            jobs.append(self.job("res-cancel", grid, d_x, w_mult, f.neg(y)))
            jobs.append(self.job("res-equal", grid, d_x, w_mult, y))
            jobs.append(self.job("res-tiny", grid, d_x, f32(1e-37),
                                 f32(rng.uniform(-1, 1, (rows, T)) * 1e-37)))
        jobs.append(self.job("one-row", grid[:1], *self.scales(rng),
                             self.residuals(rng, 1) if self.residual else None))
        return jobs

    def throughput_jobs(self, rng):
        rows = int(self.cfg.get("throughput_rows", 128))
        count = int(self.cfg.get("throughput_commands", 12))
        used = int(self.cfg.get("throughput_used", 0))
        return [[self.command(rng, f"tp{i}", rows=rows, used=used) for i in range(count)]]



def stream_pipe_analysis(monitor, start, inp, out, jobs, lanes) -> dict:
    moves = monitor.moves
    beats = sum(len(j.expected[out]) for j in jobs)
    first_in, first_out = moves[inp][start[inp]], moves[out][start[out]]
    last_out = moves[out][start[out] + beats - 1]
    span = last_out - first_out + 1
    return {
        "beats": beats,
        "latency_first_in_to_first_out": first_out - first_in,
        "output_span_cycles": span,
        "beats_per_cycle_steady": beats / span,
        "elements_per_cycle_steady": beats * lanes / span,
        "total_cycles": last_out - first_in + 1,
    }


# -- Gating -------------------------------------------------------------------------------------------

GATE_SPECIALS = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e38, -1e38, FLT_MAX, -FLT_MAX, 88.72283935546875,
                 88.7228, -88.72283935546875, 87.33654022216797, -87.33654022216797, -87.3365, -87.34,
                 100.0, -100.0, 20.0, -20.0, 1e-40, -1e-40, float(MIN_NORMAL), -float(MIN_NORMAL), 1e-30,
                 -1e-30, 1.0, -1.0, 0.5, -0.5, 1e19, 1.8446743e19, 2.0 ** 64, -2.0 ** 64, 1e-20, 15.9, -15.9]


class GatingModel(PipeModel):
    STREAMS = ("gate", "up", "o")
    PRIMARY = "gate"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.act = cfg["act"]

    def job(self, name, gate, up) -> Job:
        L = self.lanes
        gate, up = f32(gate), f32(up)
        n, gp = beats_of(gate, L)
        _, upp = beats_of(up, L)
        out = golden.gated_activation(gp, upp, self.act)
        job = Job(name=name)
        gb, ub, ob = bits_of(gp), bits_of(upp), bits_of(out)
        job.inputs["gate"] = [self.pack("gate", {"data": pack_lanes(gb[b * L:(b + 1) * L]), "last": int(b == n - 1)})
                              for b in range(n)]
        job.inputs["up"] = [self.pack("up", {"data": pack_lanes(ub[b * L:(b + 1) * L]), "last": 0})
                            for b in range(n)]
        job.expected["o"] = [Expect({"data": ob[b * L:(b + 1) * L].copy(), "last": int(b == n - 1)}, job, b)
                             for b in range(n)]
        return job.finished(cycles=n + 10, elements=n * L, gate=gp, up=upp)

    def describe(self, job, stream, beat, lane):
        text = f"vector {job.name!r} ({self.act}) beat {beat}"
        if lane is None:
            return text
        i = beat * self.lanes + lane
        return f"{text}, element {i}: gate={show_f32(job.info['gate'][i])}, up={show_f32(job.info['up'][i])}"

    def vector(self, rng, d, name) -> Job:
        gate = f32(rng.standard_normal(d) * 10.0 ** rng.uniform(-2, 1.3))
        up = f32(rng.standard_normal(d) * 10.0 ** rng.uniform(-2, 1))
        mask = rng.random(d) < 0.02
        gate[mask] = rng.choice(f32(GATE_SPECIALS), size=int(mask.sum()))
        return self.job(name, gate, up)

    def random_jobs(self, rng, batch):
        limit = int(self.cfg.get("max_dim", 512))
        return [self.vector(rng, int(rng.integers(1, limit + 1)), f"vec#{batch}.{i}")
                for i in range(int(self.cfg.get("vectors", 8)))]

    def extreme_jobs(self, rng):
        specials = f32(GATE_SPECIALS)
        ups = f32([1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38, 1e-40, 1e-20, 2.5])
        g, u = np.meshgrid(specials, ups, indexing="ij")
        jobs = [self.job("specials-x-ups", g.reshape(-1), u.reshape(-1))]
        # every gate range densely, up = 1 so act(gate) shows directly
        dense = f32(np.concatenate([np.linspace(-100, 100, 801), np.linspace(-1, 1, 257),
                                    -np.logspace(-38, 38, 128), np.logspace(-38, 38, 128)]))
        jobs.append(self.job("dense-gate-up1", dense, np.ones_like(dense)))
        # random bit patterns (any exponent, subnormals and NaN payloads included)
        raw = from_bits(rng.integers(0, 1 << 32, size=512, dtype=np.uint64).astype(U32))
        raw_up = from_bits(rng.integers(0, 1 << 32, size=512, dtype=np.uint64).astype(U32))
        jobs.append(self.job("random-bits", raw, raw_up))
        # products that overflow / underflow
        big = f32(rng.uniform(1e18, 1e19, 64))
        jobs.append(self.job("product-overflow", big, f32(rng.uniform(1e18, 1e20, 64))))
        jobs.append(self.job("product-underflow", f32(rng.uniform(1e-19, 1e-18, 64)),
                             f32(rng.uniform(1e-20, 1e-19, 64))))
        jobs.append(self.job("one-element", f32([3.0]), f32([2.0])))
        return jobs

    def throughput_jobs(self, rng):
        d = int(self.cfg.get("throughput_dim", 4096))
        return [[self.vector(rng, d, f"tp{i}") for i in range(int(self.cfg.get("throughput_vectors", 2)))]]


# -- Rope ---------------------------------------------------------------------------------------------

class RopeModel(PipeModel):
    STREAMS = ("x", "cs", "o")
    PRIMARY = "x"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.head_dim = int(cfg["head_dim"])
        self.positions = int(cfg.get("positions", 2048))
        self.tables = {float(theta): rope_table(float(theta), self.head_dim, self.positions)
                       for theta in cfg.get("thetas", [10000.0, 500000.0])}

    def job(self, name, x, pos, theta, table=None) -> Job:
        L, hd = self.lanes, self.head_dim
        half = hd // 2
        x = f32(x).reshape(hd)
        cos, sin = table if table is not None else self.tables[float(theta)]
        out = golden.rope(x[None, None, :], np.array([pos]), cos, sin)[0, 0]
        c, s = cos[pos], sin[pos]
        n = hd // L
        xb, cb, sb, ob = bits_of(x), bits_of(c), bits_of(s), bits_of(out)
        job = Job(name=name)
        job.inputs["x"] = [self.pack("x", {"data": pack_lanes(xb[b * L:(b + 1) * L]), "last": int(b == n - 1)})
                           for b in range(n)]
        job.inputs["cs"] = [self.pack("cs", {"cos": pack_lanes(cb[b * L:(b + 1) * L]),
                                             "sin": pack_lanes(sb[b * L:(b + 1) * L])})
                            for b in range(half // L)]
        job.expected["o"] = [Expect({"data": ob[b * L:(b + 1) * L].copy(), "last": int(b == n - 1)}, job, b)
                             for b in range(n)]
        return job.finished(cycles=n + 20, elements=hd, x=x, pos=pos, theta=theta, cos=c, sin=s)

    def describe(self, job, stream, beat, lane):
        i = job.info
        text = f"head {job.name!r} (pos {i['pos']}, theta {i['theta']:g}) beat {beat}"
        if lane is None:
            return text
        e = beat * self.lanes + lane
        half = self.head_dim // 2
        k = e % half
        return (f"{text}, element {e}: x1={show_f32(i['x'][k])}, x2={show_f32(i['x'][k + half])}, "
                f"cos={show_f32(i['cos'][k])}, sin={show_f32(i['sin'][k])}")

    def head(self, rng, name, pos=None, theta=None) -> Job:
        thetas = list(self.tables)
        theta = thetas[int(rng.integers(len(thetas)))] if theta is None else theta
        pos = int(rng.integers(self.positions)) if pos is None else pos
        x = f32(rng.standard_normal(self.head_dim) * 10.0 ** rng.uniform(-3, 3))
        return self.job(name, x, pos, theta)

    def random_jobs(self, rng, batch):
        jobs = [self.head(rng, f"head#{batch}.{i}") for i in range(int(self.cfg.get("heads", 24)))]
        jobs.append(self.head(rng, f"pos0#{batch}", pos=0))
        jobs.append(self.head(rng, f"poslast#{batch}", pos=self.positions - 1))
        return jobs

    def extreme_jobs(self, rng):
        hd, jobs = self.head_dim, []
        specials = f32([0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38, FLT_MAX, 1e-40, -1e-40,
                        float(MIN_NORMAL), 1e-38, 1.0, -1.0, 1e20, 2.0 ** 64])
        for theta in self.tables:
            for pos in (0, 1, 2, 7, self.positions // 2, self.positions - 1):
                x = np.resize(specials, hd)
                rng.shuffle(x)
                jobs.append(self.job(f"specials(pos={pos},theta={theta:g})", x, pos, theta))
            # the two halves equal / opposite: cancellation in x1*c - x2*s
            x1 = f32(rng.standard_normal(hd // 2))
            jobs.append(self.job(f"equal-halves(theta={theta:g})", np.concatenate([x1, x1]), 1, theta))
            jobs.append(self.job(f"opposite-halves(theta={theta:g})", np.concatenate([x1, -x1]), 3, theta))
            raw = from_bits(rng.integers(0, 1 << 32, size=hd, dtype=np.uint64).astype(U32))
            jobs.append(self.job(f"random-bits(theta={theta:g})", raw, int(rng.integers(self.positions)), theta))
        # a synthetic table with exact angles 0, 90, 180, 270 degrees and cos = sin (ties)
        half = hd // 2
        cos = np.zeros((4, half), np.float32)
        sin = np.zeros((4, half), np.float32)
        cos[0], sin[1], cos[2], sin[3] = 1.0, 1.0, -1.0, -1.0
        cos[:, ::2] = f32(np.sqrt(0.5))
        sin[:, ::2] = f32(np.sqrt(0.5))
        for pos in range(4):
            x = f32(rng.standard_normal(hd))
            jobs.append(self.job(f"synthetic-table-row{pos}", x, pos, 0.0, table=(cos, sin)))
        return jobs

    def throughput_jobs(self, rng):
        return [[self.head(rng, f"tp{i}") for i in range(int(self.cfg.get("throughput_heads", 64)))]]


MODELS = {"norm_quant": NormQuantModel, "dequant": DequantModel, "gating": GatingModel, "rope": RopeModel}


# -- the bench ----------------------------------------------------------------------------------------

class Bench(Testbench):
    """The unit of the configuration's ``unit`` (its :class:`UnitModel`), a source per input
    stream, a sink per output stream and a monitor of every stream."""

    def __init__(self, dut):
        super().__init__(dut)
        self.model: UnitModel = MODELS[self.cfg["unit"]](self.cfg)
        self.seed = int(self.cfg.get("seed", 0))
        self._make_ports()

    def _make_ports(self):
        dut, streams = self.dut, self.model.STREAMS
        self.sources = {s: StreamSource(dut, s, self.clock) for s in streams if s not in self.model.OUTPUTS}
        self.sinks = {s: StreamSink(dut, s, self.clock) for s in self.model.OUTPUTS}
        self.monitor = HandshakeMonitor(dut, self.clock, streams)
        self.expected = {s: collections.deque() for s in self.model.OUTPUTS}

    def abandon(self):
        """Drop every queued input beat and expected output beat: stop the stream drivers and the
        monitor (their tasks; the streams module has no other way to empty a source) and start
        fresh ones. Use around a reset that cuts jobs short."""
        for port in [*self.sources.values(), *self.sinks.values()]:
            port._task.cancel()
        self.monitor.task.cancel()
        self._make_ports()

    def rng(self, offset: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(cocotb.RANDOM_SEED) & 0x7FFFFFFF, offset])

    async def reset(self, cycles: int = CLEAN_RESET_CYCLES):
        await super().reset(cycles)

    def set_stalls(self, probs, rng):
        streams = self.model.STREAMS
        if len(probs) != len(streams):
            raise ValueError(f"stall setting {probs} needs one probability per stream {streams}")
        for name, p in zip(streams, probs):
            port = self.sources.get(name) or self.sinks[name]
            port.set_pause_generator(random_pause(float(p), int(rng.integers(1 << 31))) if p else None)

    def queue(self, job: Job):
        for stream, beats in job.inputs.items():
            if stream in self.sources:
                for raw in beats:
                    self.sources[stream].send_nowait(raw)
            else:
                assert not beats, (stream, job.name)
        for stream, beats in job.expected.items():
            self.expected[stream].extend(beats)

    def mark(self) -> dict:
        return self.monitor.mark()

    def check(self, stream: str, want: Expect, raw: int, index: int, what: str):
        got = self.model.decode(stream, raw)
        problems = []
        for name, value in want.values.items():
            g = got[name]
            if isinstance(value, np.ndarray):
                # an expected array shorter than the beat's checks only its first lanes
                bad = np.nonzero(g[:len(value)] != value)[0]
                if len(bad):
                    lane = int(bad[0])
                    problems.append(
                        f"{name}[{lane}] = {show(g[lane], value.dtype)}, expected "
                        f"{show(value[lane], value.dtype)} ({len(bad)} of {len(value)} lanes wrong: "
                        f"{[int(b) for b in bad[:16]]}); {self.model.describe(want.job, stream, want.beat, lane)}")
            elif int(g) != int(value):
                fmt = U32 if stream == "scale" else None
                shown = (show(g, fmt), show(value, fmt)) if fmt is not None else (g, value)
                problems.append(f"{name} = {shown[0]}, expected {shown[1]}; "
                                f"{self.model.describe(want.job, stream, want.beat, None)}")
        if problems:
            cycle = self.monitor.moves[stream][-1] if self.monitor.moves[stream] else -1
            raise AssertionError(
                f"{what}: {stream} beat {index} (beat {want.beat} of {want.job.name!r}) moved at cycle "
                f"{cycle} (sim time {get_sim_time('ns'):.0f} ns): " + " | ".join(problems))

    async def drain(self, what: str, bound: int):
        counts = {s: 0 for s in self.expected}
        totals = {s: len(q) for s, q in self.expected.items()}

        async def scoreboard(stream):
            sink, queue = self.sinks[stream], self.expected[stream]
            while queue:
                raw = await sink.recv()
                self.check(stream, queue[0], raw, counts[stream], what)
                queue.popleft()
                counts[stream] += 1

        async def all_streams():
            tasks = [cocotb.start_soon(scoreboard(s)) for s in self.expected]
            for task in tasks:
                await task

        try:
            await with_timeout(all_streams(), self.clock, bound, what)
        except CycleTimeout:
            waiting = {s: (f"{counts[s]}/{totals[s]}, next {q[0].job.name!r} beat {q[0].beat}" if q else "done")
                       for s, q in self.expected.items()}
            left = {s: src.count() for s, src in self.sources.items()}
            raise CycleTimeout(f"{what}: outputs incomplete after {bound} cycles: {waiting}; input beats "
                               f"not taken: {left}") from None
        for sink in self.sinks.values():
            sink.clear_pause_generator()
        await ClockCycles(self.clock, 12)
        for name, sink in self.sinks.items():
            assert sink.count() == 0, f"{what}: {sink.count()} extra beat(s) on {name}: {sink.recv_nowait()!r}"
            assert not sink.protocol_errors, sink.protocol_errors
        for name, src in self.sources.items():
            assert src.idle(), f"{what}: {src.count()} beat(s) on {name} never taken"

    @staticmethod
    def slowdown(probs) -> float:
        worst = max([0.0, *probs])
        return 1.0 / max((1.0 - worst) ** 2, 0.01)

    def bound(self, jobs, probs) -> int:
        return int(4 * self.slowdown(probs) * sum(j.cycles for j in jobs)) + 500

    async def run(self, jobs, probs, rng, what: str) -> int:
        self.set_stalls(probs, rng)
        start = self.monitor.cycle
        for job in jobs:
            self.queue(job)
        await self.drain(f"{what} stalls={list(probs)}", self.bound(jobs, probs))
        cycles = self.monitor.cycle - start
        elements = sum(j.elements for j in jobs)
        self.log.info("%s stalls=%s: %d jobs, %d elements, %d cycles", what, list(probs), len(jobs),
                      elements, cycles)
        return cycles


def _stalls(bench: Bench) -> list:
    n = len(bench.model.STREAMS)
    default = [[0.0] * n, [0.3] * n, [0.0] * (n - len(bench.model.OUTPUTS)) + [0.6] * len(bench.model.OUTPUTS),
               [0.6] * (n - len(bench.model.OUTPUTS)) + [0.1] * len(bench.model.OUTPUTS)]
    return bench.cfg.get("stalls", default)


# -- tests ----------------------------------------------------------------------------------------------

@cocotb.test(timeout_time=100, timeout_unit="sec")
async def test_random(dut):
    """Random jobs (with the configured real sizes) back to back, one batch per stall setting."""
    bench = Bench(dut)
    rng = bench.rng(1)
    stalls = _stalls(bench)
    batches = [bench.model.random_jobs(rng, i) for i in range(len(stalls))]
    budget = sum(bench.bound(b, s) for b, s in zip(batches, stalls)) + 1000
    start_watchdog(bench.clock, budget, "test_random")
    await bench.reset()
    for batch, probs in zip(batches, stalls):
        await bench.run(batch, probs, rng, "random")


@cocotb.test(timeout_time=100, timeout_unit="sec")
async def test_extremes(dut):
    """Corner-case jobs, once without stalls and once under the last stall setting."""
    bench = Bench(dut)
    rng = bench.rng(2)
    stalls = _stalls(bench)
    jobs = bench.model.extreme_jobs(rng)
    n = len(bench.model.STREAMS)
    passes = [[0.0] * n, stalls[-1]]
    budget = sum(bench.bound(jobs, s) for s in passes) + 1000
    start_watchdog(bench.clock, budget, "test_extremes")
    await bench.reset()
    for probs in passes:
        await bench.run(jobs, probs, rng, "extremes")


@cocotb.test(timeout_time=100, timeout_unit="sec")
async def test_throughput(dut):
    """No stalls: latency and steady-state rate, checked against the unit's bounds."""
    bench = Bench(dut)
    cfg, model = bench.cfg, bench.model
    rng = bench.rng(3)
    groups = model.throughput_jobs(rng)
    n = len(model.STREAMS)
    budget = sum(bench.bound(g, [0.0]) for g in groups) + 1000
    start_watchdog(bench.clock, budget, "test_throughput")
    await bench.reset()
    results = []
    for jobs in groups:
        start = bench.mark()
        await bench.run(jobs, [0.0] * n, rng, "throughput")
        result = model.analyse(jobs, bench.monitor, start)
        results.append(result)
        bench.log.info("throughput %s: %s", cfg["unit"],
                       {k: v for k, v in result.items() if k != "intervals"})
    report = {"unit": cfg["unit"], "config": {k: v for k, v in cfg.items() if k not in ("fields", "report")},
              "results": results}
    if cfg.get("report"):
        Path(cfg["report"]).write_text(json.dumps(report, indent=1) + "\n")
    if not cfg.get("check_bounds", True):
        return
    unit = cfg["unit"]
    if unit == "norm_quant":
        # The unit's cost model (hw/norm_quant.py): about n + 30 cycles in front and 2n + 90
        # behind per vector of n beats, the front overlapped with the back of the previous vector.
        for r, key, default in ((results[0], "max_norm_cycles_per_vector", lambda n: 2 * n + 120),
                                (results[1], "max_quant_cycles_per_vector", lambda n: n + 60)):
            n = r["beats_per_vector"]
            bound = float(cfg.get(key, default(n)))
            assert r["cycles_per_vector_steady"] <= bound, (
                f"{r['mode']} vectors of {r['dim']} ({n} beats): {r['cycles_per_vector_steady']:g} "
                f"cycles per vector ({r['elements_per_cycle_steady']:.3f} elements/cycle, "
                f"{r['cycles_per_vector_steady'] / n:.3f} cycles per beat) > bound {bound:g}")
    else:
        r = results[0]
        assert r["beats_per_cycle_steady"] >= float(cfg.get("min_beats_per_cycle", 1.0)), (
            f"{unit}: {r['beats']} output beats took {r['output_span_cycles']} cycles "
            f"({r['beats_per_cycle_steady']:.4f} beats/cycle, expected 1 beat/cycle in steady state)")
        if "latency" in cfg and unit in ("dequant", "gating"):
            assert r["latency_first_in_to_first_out"] == int(cfg["latency"]), (
                f"{unit}: first output beat {r['latency_first_in_to_first_out']} cycles after the first "
                f"input beat, expected the unit's latency {cfg['latency']}")
        if unit == "rope":
            # one whole head is taken, rotated (latency) and written to a bank before it drains
            # (with rotate_lanes < lanes the head goes through the rotation in narrower parts)
            bound = model.head_dim // int(cfg.get("rotate_lanes", model.lanes)) + int(cfg["latency"]) + 4
            assert r["latency_first_in_to_first_out"] <= bound, (
                f"rope: latency {r['latency_first_in_to_first_out']} > {bound}")


@cocotb.test(timeout_time=100, timeout_unit="sec")
async def test_reset(dut):
    """A short reset (RESET_CYCLES) in the middle of a busy batch (under stalls) returns the unit to
    a clean state: the jobs sent afterwards come out exactly, with nothing left over from the jobs
    that were cut short. ``reset_cuts`` (6) resets at random points, each followed by a checked
    run (three jobs; a whole batch after the last)."""
    bench = Bench(dut)
    rng = bench.rng(4)
    cycles = int(bench.cfg.get("reset_cycles", RESET_CYCLES))
    stalls = _stalls(bench)
    probs = stalls[min(1, len(stalls) - 1)]
    cuts = [bench.model.random_jobs(rng, 100 + i) for i in range(int(bench.cfg.get("reset_cuts", 6)))]
    # after every reset a few jobs are checked (whatever the cut left behind shows up there);
    # after the last one a whole batch
    checks = [bench.model.random_jobs(rng, 150 + i)[:3] for i in range(len(cuts) - 1)]
    checks.append(bench.model.random_jobs(rng, 200))
    budget = sum(bench.bound(b, probs) for b in cuts + checks) + 2000 * len(cuts)
    start_watchdog(bench.clock, budget, "test_reset")
    await bench.reset()
    for i, (batch, check) in enumerate(zip(cuts, checks)):
        bench.set_stalls(probs, rng)
        for job in batch:
            bench.queue(job)
        # cut 1-3 cycles after a data beat of the batch moved, so that beats are in flight in the
        # pipelines: the final beat of one of the first jobs (even cuts), or a random beat of them
        primary = bench.model.PRIMARY
        ends = np.cumsum([len(j.inputs[primary]) for j in batch[:4]])
        target = int(ends[rng.integers(len(ends))]) if i % 2 == 0 else int(rng.integers(1, ends[-1] + 1))
        limit = bench.bound(batch, probs)
        for _ in range(limit):
            if len(bench.monitor.moves[primary]) >= target:
                break
            await RisingEdge(bench.clock)
        await ClockCycles(bench.clock, int(rng.integers(1, 4)))
        bench.log.info("reset %d (%d cycles) at cycle %d", i, cycles, bench.monitor.cycle)
        bench.abandon()
        await bench.reset(cycles)
        await bench.run(check, probs, rng, f"after reset {i} ({cycles} cycles)")
