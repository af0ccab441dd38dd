"""Refactored units are proven unchanged: each case's current design is formally equivalent
(Yosys equiv_make/equiv_simple/equiv_induct, :mod:`tellme.gen.equiv`) to the Verilog of the
design before the refactor, committed under ``tests/equiv/<case>.v.gz`` (gzip-compressed: the
netlists are large and repeat one another).

The parameter sets are small (memories become flip-flops in the proof) but take every
generate-time branch of the unit that the refactor touched (lane splits and gathers, odd adder
trees, one and several tokens, ...). A case's ``renames`` map the current netlist's names to
the reference's where a refactor moved state into a submodule or renamed a port. The units with
floating-point datapaths (AttentionCore, NormQuant), whose SAT proofs take too long, must keep
their netlist identical to the reference instead (Verilog equal but for source locations).

A new reference is written from the design *before* a refactor, with
``python tests/test_equivalence.py <case>...`` (or ``all``); then the refactor follows and
this test proves it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tellme.gen.equiv import IDENTICAL, prove_equivalent, write_reference
from tellme.hw import fp32
from tellme.hw.act_mover import ScratchReader, ScratchWriter
from tellme.hw.attention import AttentionCore
from tellme.hw.attention_path import AttentionPath
from tellme.hw.attn_decode import KvWriter
from tellme.hw.axi_arbiter import AxiReadArbiter, AxiWriteArbiter
from tellme.hw.axi_read import AxiReadMaster
from tellme.hw.axi_write import AxiWriteMaster
from tellme.hw.embed_path import EmbedPath
from tellme.hw.kv_reader import KvReader
from tellme.hw.lm_head_path import LmHeadPath
from tellme.hw.norm_quant import NormQuant
from tellme.hw.result_buffer import ResultBuffer
from tellme.hw.tlmm import TlmmEngine, TlmmTables
from tellme.hw.weight_buffer import WeightBuffer

REFERENCES = Path(__file__).resolve().parent / "equiv"

AXI = dict(addr_width=16, max_burst=4, max_outstanding=2)

#: case -> (factory of the current design, renames current -> reference)
CASES = {
    "tlmm_tables-g3p2t1": (lambda: TlmmTables(group=3, lanes=2, tokens=1), {}),
    "tlmm-g2p3t2r3b2s1": (lambda: TlmmEngine(group=2, lanes=3, tokens=2, max_rows=3, max_blocks=2,
                                             tree_levels_per_stage=1), {}),
    "tlmm-g2p5t1r4b3s2": (lambda: TlmmEngine(group=2, lanes=5, tokens=1, max_rows=4, max_blocks=3,
                                             tree_levels_per_stage=2), {}),
    # the per-command scales FIFO's word packed from a layout instead of by hand
    "result_buffer-t2a6d4": (lambda: ResultBuffer(tokens=2, acc_bits=6, depth=4, commands=2), {}),
    "weight_buffer-w8d4": (lambda: WeightBuffer(shape=8, depth=4, ram_style="block"), {}),
    "axi_read-w32": (lambda: AxiReadMaster(data_width=32, **AXI), {}),
    "axi_write-w32": (lambda: AxiWriteMaster(data_width=32, **AXI), {}),
    # lanes * 32 == data_width (pass-through), < (split on read, gather on write), > (the reverse)
    "scratch_reader-l1w32": (lambda: ScratchReader(lanes=1, data_width=32, **AXI), {}),
    "scratch_reader-l1w64": (lambda: ScratchReader(lanes=1, data_width=64, **AXI), {}),
    "scratch_reader-l2w32": (lambda: ScratchReader(lanes=2, data_width=32, **AXI), {}),
    "scratch_writer-l1w32": (lambda: ScratchWriter(lanes=1, data_width=32, **AXI), {}),
    "scratch_writer-l1w64": (lambda: ScratchWriter(lanes=1, data_width=64, **AXI), {}),
    "scratch_writer-l2w32": (lambda: ScratchWriter(lanes=2, data_width=32, **AXI), {}),
    "kv_reader-hd32t2": (lambda: KvReader(head_dim=32, tile=2, addr_width=16), {}),
    "kv_writer-hd32": (lambda: KvWriter(head_dim=32, addr_width=16), {}),
    "axi_read_arbiter-m2": (lambda: AxiReadArbiter(managers=2, data_width=32, addr_width=16, id_width=2,
                                                   max_outstanding=2), {}),
    "axi_write_arbiter-m3": (lambda: AxiWriteArbiter(managers=3, data_width=32, addr_width=16, id_width=2,
                                                     max_outstanding=2), {}),
    # the float32 primitives (the composites take about a minute each: slow set)
    "fp32_fadd": (fp32.FAdd, {}),
    "fp32_fmul": (fp32.FMul, {}),
    "fp32_from_int": (fp32.FromInt, {}),
    "fp32_recip": (fp32.Recip, {}),
    "fp32_rsqrt": (fp32.Rsqrt, {}),
    "fp32_exp": (fp32.Exp, {}),
}
SLOW_CASES = {"fp32_recip", "fp32_rsqrt", "fp32_exp"}

#: Units whose floating-point datapaths make a SAT proof too slow (over 10 minutes for
#: AttentionCore at hd 4): their refactors must leave the netlist identical to the reference.
IDENTICAL_CASES = {
    "attention_core-hd4t2l2": lambda: AttentionCore(head_dim=4, tile=2, dot_lanes=2, pv_lanes=2, out_lanes=2),
    "norm_quant-l2d4": lambda: NormQuant(lanes=2, max_dim=4),
    # the step paths, whose command issue and AXI ports were folded into hw/compose helpers
    # (identical: the folds keep the order in which Amaranth numbers the unnamed flags)
    "embed_path-l2": lambda: EmbedPath(lanes=2, row_bytes=64, vocab=16, max_tokens=4, addr_width=16),
    "lm_head_path-l2": lambda: LmHeadPath(lanes=2, max_rows=16, max_cols=8, addr_width=16),
    "attention_path-hd16": lambda: AttentionPath(head_dim=16, heads=1, lanes=2, tile=2, chunk=4, addr_width=16,
                                                dot_lanes=2, pv_lanes=2),
}


@pytest.mark.parametrize("case", [pytest.param(case, marks=[pytest.mark.slow] if case in SLOW_CASES else [])
                                  for case in sorted(CASES)])
def test_equivalent_to_reference(case):
    factory, renames = CASES[case]
    reference = REFERENCES / f"{case}.v.gz"
    if not reference.exists():
        pytest.fail(f"no reference {reference}: write it from the design before the refactor")
    log = prove_equivalent(factory(), reference, renames=renames)
    assert "Equivalence successfully proven!" in log


@pytest.mark.parametrize("case", sorted(IDENTICAL_CASES))
def test_identical_to_reference(case):
    reference = REFERENCES / f"{case}.v.gz"
    assert prove_equivalent(IDENTICAL_CASES[case](), reference, identical=True) == IDENTICAL, (
        f"the netlist of {case} changed: prove it equivalent to {reference} (or keep it identical)")


def test_a_change_is_caught(tmp_path):
    """The proof fails when the behaviour differs: a weight buffer of depth 5 (same ports) is not
    the one of depth 4."""
    from tellme.gen.equiv import EquivalenceError
    reference = write_reference(WeightBuffer(shape=8, depth=4, ram_style="block"), tmp_path / "wb.v")
    with pytest.raises(EquivalenceError):
        prove_equivalent(WeightBuffer(shape=8, depth=5, ram_style="block"), reference)


if __name__ == "__main__":
    factories = {**{name: case[0] for name, case in CASES.items()}, **IDENTICAL_CASES}
    names = sorted(factories) if sys.argv[1:] == ["all"] else sys.argv[1:]
    if not names or any(n not in factories for n in names):
        sys.exit(f"usage: python {sys.argv[0]} all | <case>...   (cases: {', '.join(sorted(factories))})")
    for name in names:
        print(write_reference(factories[name](), REFERENCES / f"{name}.v.gz"))
