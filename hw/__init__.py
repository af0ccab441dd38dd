"""tellme.hw: the accelerator's units, Amaranth components verified bit for bit against the
numpy golden model (docs/architecture.md).

Conventions every unit follows:

* Streams are :mod:`amaranth.lib.stream` ports. A unit's main input stream is ``i`` and its main
  output ``o`` (as in Amaranth's ``lib`` and Glasgow); other streams have descriptive names
  (``cmd``, ``keys``, ``codes``, ...). The AXI masters' data streams say their direction:
  ``rdata`` (out of :class:`~tellme.hw.axi_read.AxiReadMaster`) and ``wdata`` (into
  :class:`~tellme.hw.axi_write.AxiWriteMaster`).
* Parameters are checked at construction (``tellme.config.check_positive_int`` and the checks
  in :mod:`tellme.hw.axi`), so a bad value fails where it is given, not at elaboration.
* Widths that are not derived from parameters are named once (``POSITION``, ``BEAT_COUNT``,
  ``PASSES``, ``BLOCKS``, ``ROWS``, ``LEN_WIDTH``, ...); sizes of the DDR layout come from
  :mod:`tellme.contract.layouts` (``PAGE``, ``KV_RECORD_BYTES``), the AXI beat from the data
  width.
* A unit's docstring follows :class:`~tellme.hw.stream_buffer.StreamBuffer`'s: what it computes;
  its ports (or members); latency; throughput; cost.
* A refactor that must not change behaviour is proven by formal equivalence with the netlist
  before it (:mod:`tellme.gen.equiv`, ``tests/test_equivalence.py``).
"""
