"""The contract between host, hardware and golden model (docs/architecture.md sections 3-7).

Everything the RTL, the generator, the image writer and the golden model must agree on bit for
bit is defined once here, and this package imports nothing of ``tellme`` but
:mod:`tellme.config`:

- :mod:`~tellme.contract.fp32`: binary32 primitives (FTZ, round to nearest even), the
  approximations (reciprocal, rsqrt, exp, SiLU) with their seed tables, and the reduction order
  of every floating-point sum;
- :mod:`~tellme.contract.formats`: TLMM weight codes and tables, the lane order of the weight
  stream and its bit packing, and the host-computed tables (RoPE, weight multipliers, int8 LM
  head);
- :mod:`~tellme.contract.layouts`: the DDR image format, the URAM weight-buffer geometry and the
  KV-cache layout;
- :mod:`~tellme.contract.regmap`: the AXI4-Lite register map and its field encoding.

Import direction (checked by ``tests/test_imports.py``): the contract at the bottom, then
``tellme.hw`` and the numpy models (``tellme.sim.golden``, ``tellme.sim.reference``), then
``tellme.gen``, then the host driver (``tellme.runtime``), then the simulation harness
(``tellme.sim.rtl``, ``tellme.sim.tb``, ``tellme.sim.backends``), then the command line
(``tellme.cli``, ``tellme.demo``).
"""
