"""Pipelined binary32 primitives of the element-wise path (docs/architecture.md, section 3).

Format: IEEE binary32, round to nearest even, subnormals flushed to zero on input and output
(an output is flushed when its IEEE result with gradual underflow is below 2^-126), NaN results
are the quiet NaN 0x7FC00000. Each unit matches its function in ``tellme.contract.fp32`` bit for bit.

Every unit is a fixed-latency pipeline: operands are taken from the input ports in a cycle with
``en`` high and the result appears on ``o`` exactly ``latency`` cycles with ``en`` high later;
when ``en`` is low every stage holds. One operation per cycle. Wrap a unit in
:class:`FixedLatencyStream` to give it stream ports.

The unit docstrings give what a unit computes and its latency; the ports are those of
``_Binary`` (``a``, ``b``, ``en`` in, ``o`` out) or ``_Unary`` (``a``, ``en``, ``o``), the
throughput is the one above. Cost: registers for every stage (data registers without reset,
so long delays become shift-register LUTs), DSP48E2 slices for the significand products of
FMul and of the units built from it (Recip, Rsqrt, Exp, Silu, Relu2) and small ROMs for their
seeds and coefficients; the element-wise pipelines' measured totals are in
``bench/results/elementwise.json``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..contract import fp32 as golden

__all__ = ["FAdd", "FMul", "FromInt", "ToInt", "ToInt8", "FMax", "FAbs", "Recip", "Rsqrt", "Exp", "Silu",
           "Relu2", "FixedLatencyStream", "QNAN", "leading_zeros", "Stages", "add_unit"]

QNAN = 0x7FC00000
BIAS = 127


class Stages:
    """Registers for a fixed-latency pipeline: ``stages.reg(value)`` is ``value`` one stage later,
    updated only while ``en`` is high."""

    def __init__(self, m: Module, en):
        self.m, self.en = m, en
        self.count = 0

    def reg(self, value, *, name=None, shape=None, valid=False):
        """``valid=True`` for a validity bit: it is reset, so nothing stale fires after a reset.
        Data registers need no reset (validity travels separately), which also lets long delay
        lines map to shift-register LUTs."""
        self.count += 1
        sig = Signal(shape if shape is not None else value.shape(), name=name or f"stage_{self.count}",
                     reset_less=not valid)
        with self.m.If(self.en):
            self.m.d.sync += sig.eq(value)
        return sig

    def regs(self, *values):
        return [self.reg(v) for v in values]


def add_unit(m: Module, name: str, unit, en=1, **inputs):
    """Add the fixed-latency ``unit`` to ``m`` as submodule ``name``, enabled by ``en`` and its
    inputs driven by ``inputs`` (port name: value); return it."""
    m.submodules[name] = unit
    m.d.comb += unit.en.eq(en)
    for port, value in inputs.items():
        m.d.comb += getattr(unit, port).eq(value)
    return unit


def leading_zeros(m: Module, value, name: str):
    """Count of leading zeros of ``value`` (its width when zero), as a combinational signal.

    A tree over pairs of bits (log2 levels of 2:1 muxes, about width LUTs) rather than a
    priority chain: ``value`` is padded below with ones to a power of two, each half reports
    (all zero, its count) and a pair of halves takes the upper one's count unless it is all
    zero."""
    width = len(value)
    count = Signal(range(width + 1), name=name)
    if width == 1:
        m.d.comb += count.eq(~value[0])
        return count
    size = 1 << (width - 1).bit_length()
    padded = Cat(Const((1 << (size - width)) - 1, size - width), value)

    def half(lo: int, length: int):
        if length == 2:
            return ~(padded[lo + 1] | padded[lo]), ~padded[lo + 1]
        zero_lo, count_lo = half(lo, length // 2)
        zero_hi, count_hi = half(lo + length // 2, length // 2)
        return zero_hi & zero_lo, Mux(zero_hi, Cat(count_lo, Const(1, 1)), Cat(count_hi, Const(0, 1)))

    all_zero, tree_count = half(0, size)
    m.d.comb += count.eq(Mux(all_zero, width, tree_count))
    return count


def _unpack(x):
    """(sign, biased exponent, fraction, is_zero_after_ftz, is_inf, is_nan) of a binary32 value."""
    sign, exp, frac = x[31], x[23:31], x[:23]
    return sign, exp, frac, exp == 0, (exp == 0xFF) & (frac == 0), (exp == 0xFF) & (frac != 0)


def _inf(sign):
    """Infinity of the given sign bit."""
    return Cat(Const(0, 23), Const(0xFF, 8), sign)


def _zero(sign):
    """Zero of the given sign bit."""
    return Cat(Const(0, 31), sign)


def _round(m: Module, mant, up):
    """Round the 24-bit significand ``mant`` (1.23) up by ``up``: (the carry out, the 23
    fraction bits, renormalised after a carry)."""
    rounded = Signal(25)
    m.d.comb += rounded.eq(mant + up)
    carry = rounded[24]
    # A carry out leaves rounded = 2^24, whose fraction is 0 on either alignment: no mux.
    return carry, rounded[:23]


def _registered_result(m: Module, unit, cases, normal) -> None:
    """The output stage of an arithmetic unit: ``unit.o`` takes (while ``unit.en``) the value of
    the first ``(condition, value)`` of ``cases`` that holds (NaN, infinities, zeros, overflow,
    underflow), else ``normal``."""
    result = Signal(32)
    for i, (condition, value) in enumerate(cases):
        with (m.If if i == 0 else m.Elif)(condition):
            m.d.comb += result.eq(value)
    with m.Else():
        m.d.comb += result.eq(normal)
    with m.If(unit.en):
        m.d.sync += unit.o.eq(result)


def _signed(m: Module, value):
    """``value`` (unsigned) zero-extended into a signed 11-bit signal, for exponent arithmetic."""
    sig = Signal(signed(11))
    m.d.comb += sig.eq(value)
    return sig


class _Binary(wiring.Component):
    """Ports of a two-operand unit: ``a``, ``b`` (In 32), ``en`` (In 1), ``o`` (Out 32)."""

    def __init__(self):
        super().__init__({"a": In(32), "b": In(32), "en": In(1), "o": Out(32)})


class FAdd(_Binary):
    """o = a + b (or a - b with ``subtract=True``). Latency 4.

    Stages: (1) unpack, order by magnitude, the alignment distance; (2) align the smaller
    operand (3 guard bits + sticky) and add or subtract the significands (one adder: a - b as
    a + ~b + 1); (3) count the leading zeros, the exponent; (4) normalise (the shift), round to
    nearest even, pack (the exponent's increment and range checks beside the rounding, selected
    by its carry). 525 LUT-eq, 174 FF, no DSP; longest register-to-register path 8 LUT levels +
    one carry chain (Yosys ``synth_xilinx -family xcup``, ``gen.levels``; 571 LUT-eq before the
    single adder and the tree, 11 levels + a chain with the count and the shift in one stage).
    A result below 2^-126 is exact in IEEE (sums of normal numbers are multiples of 2^-149), so
    it is flushed to zero with its sign; x - x is +0; (-0) + (-0) is -0.
    """

    latency = 4

    def __init__(self, *, subtract: bool = False):
        self.subtract = bool(subtract)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        st = Stages(m, self.en)
        b_in = self.b ^ (1 << 31) if self.subtract else self.b
        sa, ea, fa, za, ia, na = _unpack(self.a)
        sb, eb, fb, zb, ib, nb = _unpack(b_in)

        # -- stage 1: order by magnitude (flushed operands count as zero), specials
        mag_a = Mux(za, 0, self.a[:31])
        mag_b = Mux(zb, 0, b_in[:31])
        swap = mag_b > mag_a
        big_s = Mux(swap, sb, sa)
        big_e = Mux(swap, eb, ea)
        # 24-bit significands; a flushed operand (zero or subnormal) has none.
        sig_a = Mux(za, 0, Cat(fa, Const(1, 1)))
        sig_b = Mux(zb, 0, Cat(fb, Const(1, 1)))
        big_m = Mux(swap, sig_b, sig_a)
        small_e = Mux(swap, ea, eb)
        small_m = Mux(swap, sig_a, sig_b)
        small_zero = Mux(swap, za, zb)
        is_nan = na | nb | (ia & ib & (sa != sb))
        is_inf = ia | ib
        inf_sign = Mux(ia, sa, sb)
        both_zero = za & zb
        zero_sign = sa & sb
        effective_sub = sa != sb
        diff = Mux(small_zero, 0, (big_e - small_e)[:8])   # big_e >= small_e
        # (clamped here, not in stage 2, to keep the alignment stage shallow)
        shift = Signal(5)
        m.d.comb += shift.eq(Mux(diff > 27, 27, diff))

        s1 = st.regs(big_s, big_e, big_m, small_m, small_zero, is_nan, is_inf, inf_sign, both_zero,
                     zero_sign, effective_sub, shift)
        (big_s, big_e, big_m, small_m, small_zero, is_nan, is_inf, inf_sign, both_zero,
         zero_sign, effective_sub, shift) = s1

        # -- stage 2: align the smaller significand: 24 bits + guard, round, sticky
        small_ext = Cat(Const(0, 3), small_m)                       # 27 bits
        aligned = Signal(27)
        m.d.comb += aligned.eq(small_ext >> shift)
        lost = Signal()
        m.d.comb += lost.eq((small_ext & ((Const(1, 28) << shift) - 1)[:27]) != 0)
        aligned_sticky = Cat(aligned[0] | lost, aligned[1:])
        big_ext = Cat(Const(0, 3), big_m)
        total = Signal(28)
        # One adder for both: big - a = big + ~a + 1 (the XOR maps into the adder's LUTs).
        # (28 bits: the complement of the zero-extended operand, so that the sum wraps to big - a)
        m.d.comb += total.eq(big_ext + (Cat(aligned_sticky, Const(0, 1)) ^ effective_sub.replicate(28))
                             + effective_sub)

        s2 = st.regs(big_s, big_e, total, is_nan, is_inf, inf_sign, both_zero, zero_sign)
        big_s, big_e, total, is_nan, is_inf, inf_sign, both_zero, zero_sign = s2

        # -- stage 3: count the leading zeros. total is 1x.xxx (carry) or 0x.xxx with leading zeros.
        lz = leading_zeros(m, total, "add_lz")                   # 0 means a carry out
        exp = Signal(signed(11))
        m.d.comb += exp.eq(_signed(m, big_e) + 1 - lz)
        exact_zero = total == 0

        s3 = st.regs(big_s, exp, total, lz, exact_zero, is_nan, is_inf, inf_sign, both_zero, zero_sign)
        big_s, exp, total, lz, exact_zero, is_nan, is_inf, inf_sign, both_zero, zero_sign = s3

        # -- stage 4: normalise (the shift by the registered count: the count and the shift in one
        # stage made it the deepest of the unit), round to nearest even (norm: 1.23 bits | guard |
        # round | sticky), pack. A carry out (lz 0) shifts right by one, keeping the bit shifted
        # out as sticky; otherwise left by lz - 1: both are bits 1.. of total << lz.
        shifted = Signal(28)
        m.d.comb += shifted.eq((total << lz) >> 1)
        norm = Cat(shifted[0] | ((lz == 0) & total[0]), shifted[1:])
        mant = norm[3:27]
        guard, rest = norm[2], norm[:2] != 0
        up = guard & (rest | mant[0])
        carry, frac = _round(m, mant, up)
        # exp + carry, and its range checks, from exp alone beside the rounding: the carry only
        # selects (no second carry chain behind the rounding's).
        exp_up = Signal(signed(11))
        m.d.comb += exp_up.eq(exp + 1)
        final_e = Mux(carry, exp_up, exp)
        overflow = Mux(carry, exp >= 0xFE, exp >= 0xFF)
        underflow = Mux(carry, exp <= -1, exp <= 0)
        _registered_result(m, self, [
            (is_nan, QNAN), (is_inf, _inf(inf_sign)), (both_zero, _zero(zero_sign)), (exact_zero, 0),
            (overflow, _inf(big_s)), (underflow, _zero(big_s)),
        ], Cat(frac, final_e[:8], big_s))
        return m


class FMul(_Binary):
    """o = a * b. Latency 4: unpack; 24x24 significand product (DSP48E2); normalise; round.

    Underflow follows IEEE gradual underflow, then flushes: a product whose normalised exponent
    is -127 is rounded on the subnormal grid (one bit coarser) and becomes 2^-126 if that rounds
    up to it, zero otherwise; anything smaller is zero. Signs are kept on zero and infinity.
    """

    latency = 4

    def elaborate(self, platform):
        m = Module()
        st = Stages(m, self.en)
        sa, ea, fa, za, ia, na = _unpack(self.a)
        sb, eb, fb, zb, ib, nb = _unpack(self.b)

        # -- stage 1: specials, exponent sum, significands
        sign = sa ^ sb
        is_nan = na | nb | (ia & zb) | (ib & za)
        is_inf = ia | ib
        is_zero = za | zb
        exp = Signal(signed(11))
        m.d.comb += exp.eq(_signed(m, ea) + _signed(m, eb) - BIAS)
        sig_a, sig_b = Cat(fa, Const(1, 1)), Cat(fb, Const(1, 1))
        sign, is_nan, is_inf, is_zero, exp, sig_a, sig_b = st.regs(sign, is_nan, is_inf, is_zero, exp, sig_a, sig_b)

        # -- stage 2: the product
        product = Signal(48)
        m.d.comb += product.eq(sig_a * sig_b)
        sign, is_nan, is_inf, is_zero, exp, product = st.regs(sign, is_nan, is_inf, is_zero, exp, product)

        # -- stage 3: normalise to 1.23 + guard + sticky
        high = product[47]
        mant = Mux(high, product[24:48], product[23:47])
        guard = Mux(high, product[23], product[22])
        sticky = Mux(high, product[:23] != 0, product[:22] != 0)
        nexp = Signal(signed(11))
        m.d.comb += nexp.eq(exp + high)
        sign, is_nan, is_inf, is_zero, nexp, mant, guard, sticky = st.regs(
            sign, is_nan, is_inf, is_zero, nexp, mant, guard, sticky)

        # -- stage 4: round (normal grid, and the subnormal grid for exponent -127), pack
        up = guard & (sticky | mant[0])
        carry, frac = _round(m, mant, up)
        final_e = Signal(signed(11))
        m.d.comb += final_e.eq(nexp + carry)
        # On the subnormal grid the value 1.m x 2^-127 keeps 22 fraction bits.
        sub_up = mant[0] & (guard | sticky | mant[1])
        to_min_normal = (nexp == 0) & (mant[1:] == (1 << 23) - 1) & sub_up
        _registered_result(m, self, [
            (is_nan, QNAN), (is_inf, _inf(sign)), (is_zero, _zero(sign)),
            (to_min_normal, Cat(Const(0, 23), Const(1, 8), sign)),
            (final_e >= 0xFF, _inf(sign)), (nexp <= 0, _zero(sign)),
        ], Cat(frac, final_e[:8], sign))
        return m


class FromInt(wiring.Component):
    """o = binary32(a) for signed 32-bit a, round to nearest even. Latency 3."""

    a: In(signed(32))
    en: In(1)
    o: Out(32)
    latency = 3

    def elaborate(self, platform):
        m = Module()
        st = Stages(m, self.en)
        sign = self.a[31]
        magnitude = Signal(32)
        m.d.comb += magnitude.eq(Mux(sign, -self.a, self.a))
        sign, magnitude = st.regs(sign, magnitude)

        lz = leading_zeros(m, magnitude, "int_lz")
        shifted = Signal(32)
        m.d.comb += shifted.eq(magnitude << lz)
        sign, lz, shifted = st.regs(sign, lz, shifted)

        mant = shifted[8:32]
        guard, sticky = shifted[7], shifted[:7] != 0
        carry, frac = _round(m, mant, guard & (sticky | mant[0]))
        exp = Signal(9)
        m.d.comb += exp.eq(BIAS + 31 - lz + carry)
        with m.If(self.en):
            m.d.sync += self.o.eq(Mux(lz == 32, 0, Cat(frac, exp[:8], sign)))
        return m


class ToInt(wiring.Component):
    """o = clamp(round_half_even(a), -2^(w-1), 2^(w-1)-1) for ``width`` w; NaN gives 0,
    infinities saturate. Latency 2."""

    latency = 2

    def __init__(self, *, width: int = 8):
        if not isinstance(width, int) or not 2 <= width <= 24:
            raise ValueError(f"width must be an integer in 2..24, got {width!r}")
        self.width = width
        super().__init__({"a": In(32), "en": In(1), "o": Out(signed(width))})

    def elaborate(self, platform):
        m = Module()
        st = Stages(m, self.en)
        w = self.width
        sign, exp, frac, zero, inf, nan = _unpack(self.a)
        # |a| = sig x 2^(exp-150) with sig = 1.frac x 2^23: the integer part is sig >> (150 - exp).
        sig = Cat(frac, Const(1, 1))
        big = exp >= BIAS + w          # |a| >= 2^w: saturate whatever the rounding
        shift = Signal(range(32))
        m.d.comb += shift.eq(Mux(exp < 150 - 26, 26, 150 - exp))
        sig_ext = Cat(Const(0, 2), sig)                                # 2 extra low bits
        shifted = Signal(26)
        m.d.comb += shifted.eq(sig_ext >> shift)
        lost = Signal()
        m.d.comb += lost.eq((sig_ext & ((Const(1, 27) << shift) - 1)[:26]) != 0)
        integer = shifted[2:3 + w]
        guard = shifted[1]
        sticky = shifted[0] | lost
        sign, big, zero, nan, integer, guard, sticky = st.regs(sign, big | inf, zero, nan, integer, guard, sticky)

        rounded = Signal(w + 2)
        m.d.comb += rounded.eq(integer + (guard & (sticky | integer[0])))
        value = Signal(signed(w))
        with m.If(nan | zero):
            m.d.comb += value.eq(0)
        with m.Elif(sign):
            m.d.comb += value.eq(Mux(big | (rounded > (1 << (w - 1))), -(1 << (w - 1)), -rounded))
        with m.Else():
            m.d.comb += value.eq(Mux(big | (rounded > (1 << (w - 1)) - 1), (1 << (w - 1)) - 1, rounded))
        with m.If(self.en):
            m.d.sync += self.o.eq(value)
        return m


class ToInt8(ToInt):
    """binary32 -> int8 (``fp32.to_int8``). Latency 2."""

    def __init__(self):
        super().__init__(width=8)


class FMax(_Binary):
    """o = max(a, b) as ``fp32.fmax``: NaN if either is NaN, max(-0, +0) = +0. Latency 1."""

    latency = 1

    def elaborate(self, platform):
        m = Module()
        sa, ea, fa, za, ia, na = _unpack(self.a)
        sb, eb, fb, zb, ib, nb = _unpack(self.b)
        # Order-preserving integer keys of the flushed values.
        def key(x, s, z):
            mag = Mux(z, 0, x[:31])
            return Mux(s & ~z, Cat(~mag, Const(0, 1)), Cat(mag, Const(1, 1)))
        ka, kb = key(self.a, sa, za), key(self.b, sb, zb)
        flushed_a = Mux(za, _zero(sa), self.a)
        flushed_b = Mux(zb, _zero(sb), self.b)
        both_zero = za & zb
        result = Mux(na | nb, QNAN,
                     Mux(both_zero, _zero(sa & sb),
                         Mux(ka >= kb, flushed_a, flushed_b)))
        with m.If(self.en):
            m.d.sync += self.o.eq(result)
        return m


class FAbs(wiring.Component):
    """o = |a| (flushed; NaN stays the canonical NaN). Latency 1."""

    a: In(32)
    en: In(1)
    o: Out(32)
    latency = 1

    def elaborate(self, platform):
        m = Module()
        sign, exp, frac, zero, inf, nan = _unpack(self.a)
        with m.If(self.en):
            m.d.sync += self.o.eq(Mux(nan, QNAN, Mux(zero, 0, self.a[:31])))
        return m


def _bits(value) -> int:
    """Bit pattern of a Python/numpy float as binary32."""
    return int(golden.bits(value))


def _float(sign, exp, frac):
    return Cat(frac, exp, sign)


class _Unary(wiring.Component):
    """Ports of a one-operand unit: ``a`` (In 32), ``en`` (In 1), ``o`` (Out 32)."""

    def __init__(self):
        super().__init__({"a": In(32), "en": In(1), "o": Out(32)})


class _Composite(_Unary):
    """Helpers to chain fixed-latency units inside one pipeline."""

    def _setup(self, m):
        self._m, self._st, self._n = m, Stages(m, self.en), 0

    def _unit(self, unit, **inputs):
        self._n += 1
        return add_unit(self._m, f"u{self._n}", unit, self.en, **inputs).o

    def _delay(self, value, cycles):
        for _ in range(cycles):
            value = self._st.reg(value)
        return value

    def _rom(self, table, addr):
        """Registered read of a constant table (one pipeline stage)."""
        self._n += 1
        rom = memory.Memory(shape=32, depth=len(table), init=[_bits(v) for v in table])
        self._m.submodules[f"rom{self._n}"] = rom
        port = rom.read_port(domain="sync")
        self._m.d.comb += [port.addr.eq(addr), port.en.eq(self.en)]
        return port.data

    def _scale(self, y, shift):
        """y * 2^shift for a normal positive y: (exponent, zero) with the FTZ rule."""
        e = Signal(signed(11))
        self._m.d.comb += e.eq(_signed(self._m, y[23:31]) + shift)
        return e


class Recip(_Composite):
    """o = ``fp32.recip(a)``: seed table (7 fraction bits), two Newton steps on the mantissa,
    exponent applied last. Latency 26 (seed 1, Newton 2 x 12, scale 1)."""

    latency = 26

    def elaborate(self, platform):
        m = Module()
        self._setup(m)
        st = self._st
        sign, exp, frac, zero, inf, nan = _unpack(self.a)
        mant = _float(Const(0, 1), Const(BIAS, 8), frac)                 # m in [1, 2)
        y0 = self._rom(golden.recip_seed_table(), frac[23 - golden.SEED_BITS:])
        mant, side = st.regs(mant, Cat(sign, exp, zero, inf, nan))
        two = Const(_bits(2.0), 32)
        y = y0
        for step in range(golden.NEWTON_STEPS):
            t = self._unit(FMul(), a=self._delay(mant, 12 * step), b=y)
            u = self._unit(FAdd(subtract=True), a=two, b=t)
            y = self._unit(FMul(), a=self._delay(y, 8), b=u)
        side = self._delay(side, 12 * golden.NEWTON_STEPS)
        sign, exp, zero, inf, nan = side[0], side[1:9], side[9], side[10], side[11]
        e = self._scale(y, BIAS - _signed(m, exp))
        _registered_result(m, self, [(nan, QNAN), (zero, _inf(sign)), (inf | (e <= 0), _zero(sign))],
                           Cat(y[:23], e[:8], sign))
        return m


class Rsqrt(_Composite):
    """o = ``fp32.rsqrt(a)``: the exponent made even, seed table (parity, 6 fraction bits), two
    Newton steps y = y*(1.5 - h*(y*y)) with h = m'/2, exponent applied last.
    Latency 34 (seed 1, Newton 2 x 16, scale 1)."""

    latency = 34

    def elaborate(self, platform):
        m = Module()
        self._setup(m)
        st = self._st
        sign, exp, frac, zero, inf, nan = _unpack(self.a)
        odd = ~exp[0]                        # the unbiased exponent exp-127 is odd
        # h = m'/2 with m' = m (even exponent) or 2m (odd): exponent 126 or 127.
        h = _float(Const(0, 1), Mux(odd, BIAS, BIAS - 1), frac)
        seeds = golden.rsqrt_seed_table().reshape(-1)
        y0 = self._rom(seeds, Cat(frac[23 - golden.RSQRT_SEED_BITS:], odd))
        h, side = st.regs(h, Cat(sign, exp, odd, zero, inf, nan))
        three_halves = Const(_bits(1.5), 32)
        y = y0
        for step in range(golden.NEWTON_STEPS):
            yy = self._unit(FMul(), a=y, b=y)
            hyy = self._unit(FMul(), a=self._delay(h, 16 * step + 4), b=yy)
            u = self._unit(FAdd(subtract=True), a=three_halves, b=hyy)
            y = self._unit(FMul(), a=self._delay(y, 12), b=u)
        side = self._delay(side, 16 * golden.NEWTON_STEPS)
        sign, exp, odd, zero, inf, nan = side[0], side[1:9], side[9], side[10], side[11], side[12]
        # shift = -(e - odd)/2 with e = exp - 127
        half = Signal(signed(11))
        m.d.comb += half.eq((_signed(m, exp) - BIAS - odd) >> 1)
        e = self._scale(y, -half)
        _registered_result(m, self, [
            (nan | (sign & ~zero), QNAN), (zero, _inf(Const(0, 1))), (inf | (e <= 0), 0),
            (e >= 0xFF, _inf(Const(0, 1))),
        ], Cat(y[:23], e[:8], Const(0, 1)))
        return m


def _less_than(m: Module, a, b_bits: int):
    """a < b for a binary32 signal (flushed, not NaN) and a constant b (normal)."""
    sign, exp, frac, zero, inf, nan = _unpack(a)
    mag = Mux(zero, 0, a[:31])
    b_sign, b_mag = b_bits >> 31, b_bits & 0x7FFFFFFF
    if b_sign:       # b negative: a < b iff a negative and |a| > |b|
        return sign & ~zero & (mag > b_mag)
    return (sign & ~zero) | zero | (mag < b_mag)


class Exp(_Composite):
    """o = ``fp32.exp(a)``: t = x*log2(e); n = rint(t); f = t - n; degree-6 Horner polynomial of
    2^f; exponent n applied last. Latency 63 (clamp 1, t 4, n 2, float(n) 3, f 4, Horner 6 x 8,
    scale 1)."""

    latency = 63

    def elaborate(self, platform):
        m = Module()
        self._setup(m)
        st = self._st
        sign, exp, frac, zero, inf, nan = _unpack(self.a)
        over = ~nan & ~_less_than(m, self.a, _bits(golden.EXP_OVERFLOW))
        under = ~nan & _less_than(m, self.a, _bits(golden.EXP_UNDERFLOW))
        flushed = Mux(zero, _zero(sign), self.a)
        clamped = Mux(nan, 0, Mux(over, _bits(golden.EXP_OVERFLOW),
                                  Mux(under, _bits(golden.EXP_UNDERFLOW), flushed)))
        clamped, side = st.regs(clamped, Cat(nan, over, under))
        t = self._unit(FMul(), a=clamped, b=Const(_bits(golden.LOG2E), 32))
        n = self._unit(ToInt(width=9), a=t)
        n_float = self._unit(FromInt(), a=n)
        f = self._unit(FAdd(subtract=True), a=self._delay(t, 5), b=n_float)
        n = self._delay(n, 3 + 4)
        coeffs = golden.EXP2_COEFFS
        p = Const(_bits(coeffs[-1]), 32)
        for i, c in enumerate(coeffs[-2::-1]):
            prod = self._unit(FMul(), a=p, b=self._delay(f, 8 * i))
            p = self._unit(FAdd(), a=prod, b=Const(_bits(c), 32))
        n = self._delay(n, 8 * (len(coeffs) - 1))
        side = self._delay(side, 4 + 2 + 3 + 4 + 8 * (len(coeffs) - 1))
        nan, over, under = side[0], side[1], side[2]
        e = self._scale(p, n)
        _registered_result(m, self, [(nan, QNAN), (over | (e >= 0xFF), _inf(Const(0, 1))), (under | (e <= 0), 0)],
                           Cat(p[:23], e[:8], Const(0, 1)))
        return m


class Silu(_Composite):
    """o = ``fp32.silu(a)`` = a * recip(1 + exp(-a)). Latency 97 (exp 63, add 4, recip 26, mul 4)."""

    latency = Exp.latency + FAdd.latency + Recip.latency + FMul.latency

    def elaborate(self, platform):
        m = Module()
        self._setup(m)
        e = self._unit(Exp(), a=self.a ^ (1 << 31))
        d = self._unit(FAdd(), a=Const(_bits(1.0), 32), b=e)
        r = self._unit(Recip(), a=d)
        x = self._delay(self.a, Exp.latency + FAdd.latency + Recip.latency)
        m.d.comb += self.o.eq(self._unit(FMul(), a=x, b=r))
        return m


class Relu2(_Composite):
    """o = ``fp32.relu2(a)`` = max(a, 0)^2 (NaN gives 0). Latency 4."""

    latency = FMul.latency

    def elaborate(self, platform):
        m = Module()
        self._setup(m)
        sign, exp, frac, zero, inf, nan = _unpack(self.a)
        r = Mux(sign | zero | nan, 0, self.a)
        m.d.comb += self.o.eq(self._unit(FMul(), a=r, b=r))
        return m


class FixedLatencyStream(wiring.Component):
    """Stream ports around a fixed-latency unit: operands in, results out, in order.

    ``i`` carries the unit's input ports as a struct (``a`` and ``b`` as present), ``o`` its
    result. The unit advances when the output register is free or being read, so a stalled
    ``o`` holds every stage; latency the unit's, throughput one operation per cycle.

    Cost: the unit, a valid bit per stage and the output register.
    """

    def __init__(self, unit):
        self.unit = unit
        inputs = {name: port.shape for name, port in unit.signature.members.items()
                  if name in ("a", "b") and port.flow == wiring.In}
        self._inputs = list(inputs)
        out_shape = unit.signature.members["o"].shape
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(inputs))),
            "o": Out(stream.Signature(out_shape)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit
        latency = unit.latency
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), unit.en.eq(advance), self.i.ready.eq(advance)]
        for name in self._inputs:
            m.d.comb += getattr(unit, name).eq(getattr(self.i.payload, name))
        valid = Signal(latency)
        with m.If(advance):
            m.d.sync += valid.eq(Cat(self.i.valid, valid[:-1]))
        m.d.comb += [self.o.valid.eq(valid[-1]), self.o.payload.eq(unit.o)]
        return m
