"""Formal properties of the stream stages, lane converters, AXI masters and register file
(:mod:`tellme.sim.formal`, docs/architecture.md section 12), proven with YoWASP Yosys's SAT
solver: each proof of :data:`~tellme.sim.formal.PROOFS` must hold (induction, or bounded at the
depth it states), every deliberately broken variant of :data:`~tellme.sim.formal.BROKEN` must
fail with the assertion it breaks and write its counterexample waveform, and a proof that
proves nothing must fail.
"""

from __future__ import annotations

import pytest
from amaranth.hdl import Signal

from tellme.sim.formal import BROKEN, PROOFS, FormalError, Harness, broken, failed_assertions, past, prove

#: The property families each proof must state (so a proof cannot quietly lose one).
FAMILIES = {
    "stream_buffer-held": {"held"}, "stream_buffer": {"order", "live"},
    "credit_fifo-held": {"held"}, "credit_fifo": {"order", "live"},
    "vec_narrow-held": {"held"}, "vec_narrow": {"order", "live"},
    "vec_widen": {"held", "order", "live"},
    "row_narrow-held": {"held"}, "row_narrow": {"order", "live"},
    "skip_parts": {"held", "order", "live"},
    "incr_bursts-w128": {"held", "burst", "split", "inv"}, "incr_bursts-w32": {"held", "burst", "split", "inv"},
    "axi_read": {"held", "burst", "order", "live"}, "axi_write": {"held", "burst", "order", "live"},
    "regfile": {"held", "reserved", "live"},
}


def test_every_proof_is_listed():
    assert set(FAMILIES) == set(PROOFS)


@pytest.mark.parametrize("name", sorted(PROOFS))
def test_property_holds(name):
    proof = prove(PROOFS[name]())
    families = {assertion.split("_")[0] for assertion in proof.asserts}
    assert families == FAMILIES[name], f"{name} states {sorted(families)}"
    print(f"{name}: {len(proof.asserts)} assertions, {proof.method} at depth {proof.depth}, {proof.seconds:.1f} s")


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_variant_fails(name):
    expected = BROKEN[name][2]
    with pytest.raises(FormalError) as failure:
        prove(broken(name))
    error = failure.value
    assert set(error.failed) & expected, f"{name} failed, but not by {sorted(expected)}: {error}"
    assert error.vcd is not None and error.vcd.exists() and str(error.vcd) in str(error)
    assert {failed for failed, _ in failed_assertions(error.vcd.read_text())} & expected


class _Silent(Harness):
    """A harness that states no assertion at all."""

    def build(self, m):
        pass


class _Phantom(Harness):
    """A harness that claims one assertion more than it gives Yosys."""

    def build(self, m):
        toggle = Signal()
        m.d.sync += toggle.eq(~toggle)
        self.check(m, "toggles", toggle != past(m, toggle, "before"), when=past(m, 1, "started"))

    def elaborate(self, platform):
        m = super().elaborate(platform)
        self.asserts.append("phantom")
        return m


class _Dead(Harness):
    """A harness whose only assertion checks in cycles that never come."""

    def build(self, m):
        never = Signal()
        m.d.sync += never.eq(never)
        self.check(m, "dead", 0, when=never)


def test_a_proof_of_nothing_fails():
    with pytest.raises(FormalError, match="states no assertion"):
        prove(_Silent("silent", method="bounded", depth=2))


def test_an_assertion_yosys_did_not_import_fails():
    with pytest.raises(FormalError, match="imported 1 assertions"):
        prove(_Phantom("phantom", method="induction", depth=2))


def test_an_assertion_that_never_checks_fails():
    with pytest.raises(FormalError, match="vacuous.*dead") as failure:
        prove(_Dead("dead", method="induction", depth=1))
    assert failure.value.failed == ["dead"]
