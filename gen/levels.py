"""Logic levels of a mapped UltraScale+ netlist: the longest register-to-register path of each
unit, counted in LUTs and carry chains (docs/architecture.md, section 11).

Yosys has no timing model for ``synth_xilinx``'s cells, so this counts what sets the clock of a
LUT-based design to first order: the LUTs a signal passes between two registers (one level
each, about 0.3-0.5 ns with its routing on a -1 UltraScale+ part) and the carry chains it
enters (one each, however long the chain: the in-chain delay is a few tens of ps per bit).
:func:`longest_paths` reads a *flattened* netlist as Yosys' ``write_json`` writes it after
``synth_xilinx`` and returns, for every instance of the design hierarchy (the ``$flatten``
prefixes of its cell names: Amaranth's submodule paths), the worst path ending in a register or
output of that instance: its LUT levels, carry chains, combinational DSP48E2 slices, and the
cells it starts and ends at.

How cells count (the assumptions, also in :data:`RULES`):

- ``LUT1``..``LUT6``, ``LUT6_2``, ``INV``: one LUT level from every input to the output;
- ``MUXF7``/``MUXF8``/``MUXF9``: no level (the slice's wide-function muxes right after a LUT);
- ``CARRY4``/``CARRY8``: ``CI``/``CI_TOP`` to the outputs costs nothing (the chain continues);
  any other input (``S``, ``DI``, ``CYINIT``) enters a chain: one carry chain;
- distributed RAM (``RAM*``): address inputs (``A*``, ``ADDR*``, ``DPRA*``) to the outputs is one
  LUT level (the asynchronous read); data and write-enable inputs end a path (synchronous write);
- ``SRL16E``/``SRLC32E``: the output starts a path (a register) and its address inputs reach it
  through one LUT level;
- flip-flops, block RAM, URAM: outputs start a path, inputs end one;
- ``DSP48E2``: with ``PREG`` the outputs start a path; with no pipeline register at all
  (``AREG = BREG = MREG = PREG = 0``) it is combinational and counted as one DSP level;
  otherwise its inputs end a path and its outputs start one after a DSP level;
- top-level inputs start a path, outputs end one; constant drivers (``GND``/``VCC``) and clock
  buffers are not paths.

A path's cost is ``luts + carry_chains + 3 x dsp`` (a combinational DSP48E2 is about three LUT
levels of delay); the worst path of an instance is the one of highest cost.
"""

from __future__ import annotations

import re
from collections import defaultdict, deque
from collections.abc import Mapping

__all__ = ["RULES", "DSP_LEVEL_COST", "longest_paths", "instance_of", "CombinationalLoopError"]

RULES = (
    "LUT1..LUT6, LUT6_2 and INV: one LUT level; MUXF7/8/9: none",
    "CARRY4/CARRY8: entering a chain (S, DI, CYINIT) is one carry chain, CI to the outputs nothing",
    "distributed RAM: address to output one LUT level (asynchronous read); writes end a path",
    "SRL16E/SRLC32E: output starts a path; address to output one LUT level",
    "flip-flops, RAMB18E2/RAMB36E2, URAM288: outputs start, inputs end a path",
    "DSP48E2: PREG=1 outputs start a path; no register at all: combinational, one DSP level; "
    "otherwise inputs end a path and the outputs start one after a DSP level",
    "cost of a path = LUT levels + carry chains + 3 x DSP levels; the worst path of an instance "
    "is the costliest one ending in a register or output of that instance",
)

#: A combinational DSP48E2 counted as this many LUT levels in a path's cost.
DSP_LEVEL_COST = 3

_LUTS = {"LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6", "LUT6_2", "INV"}
_WIDE_MUXES = {"MUXF7", "MUXF8", "MUXF9"}
_CARRIES = {"CARRY4", "CARRY8"}
_SRLS = {"SRL16E", "SRLC16E", "SRLC32E", "SRL16"}
_IGNORED = {"GND", "VCC", "BUFG", "BUFGCE", "BUFG_PS", "$scopeinfo"}
_RAM_ADDRESS = re.compile(r"(A\d*|ADDR[A-H]|DPRA\d*)\Z")
_FLATTEN = re.compile(r"\$flatten((?:\\[^.]+\.)+)")


class CombinationalLoopError(ValueError):
    """The netlist has a combinational loop (no longest path exists)."""


def instance_of(cell_name: str) -> str:
    """The hierarchy path of a flattened cell (``"$flatten\\\\a.\\\\b.$abc$1$lut"`` -> ``"a.b"``;
    ``""`` for a cell of the top module itself)."""
    match = _FLATTEN.match(cell_name)
    if not match:
        return ""
    return ".".join(part.lstrip("\\") for part in match.group(1).rstrip(".").split("."))


def _param(cell: Mapping, name: str) -> int:
    value = cell.get("parameters", {}).get(name, "0")
    try:
        return int(value, 2) if isinstance(value, str) else int(value)
    except ValueError:
        return 0


_NO_LEVELS = (0, 0, 0)


def _arcs(cell: Mapping):
    """(input ports, output ports, cost tuple) of the cell's combinational arcs, the levels a
    path starting at its outputs begins with (``None``: its outputs start no path), and whether
    its inputs end one."""
    kind = cell["type"]
    dirs = cell.get("port_directions", {})
    ins = [p for p, d in dirs.items() if d == "input"]
    outs = [p for p, d in dirs.items() if d == "output"]
    if kind in _LUTS:
        return [(ins, outs, (1, 0, 0))], None, False
    if kind in _WIDE_MUXES:
        return [(ins, outs, (0, 0, 0))], None, False
    if kind in _CARRIES:
        chain = [p for p in ins if p in ("CI", "CI_TOP")]
        enter = [p for p in ins if p not in chain]
        return [(chain, outs, (0, 0, 0)), (enter, outs, (0, 1, 0))], None, False
    if kind.startswith("RAM") and not kind.startswith("RAMB"):
        return [([p for p in ins if _RAM_ADDRESS.match(p)], outs, (1, 0, 0))], None, True
    if kind in _SRLS:
        return [([p for p in ins if _RAM_ADDRESS.match(p)], outs, (1, 0, 0))], _NO_LEVELS, True
    if kind == "DSP48E2":
        if _param(cell, "PREG"):
            return [], _NO_LEVELS, True
        if not any(_param(cell, r) for r in ("AREG", "BREG", "MREG", "CREG", "ADREG", "DREG")):
            return [(ins, outs, (0, 0, 1))], None, False
        return [], (0, 0, 1), True
    return [], _NO_LEVELS, True      # registers, block RAM, URAM, anything unknown


def longest_paths(netlist: Mapping, top: str) -> dict[str, dict]:
    """The worst path ending in each instance of module ``top`` of a flattened Yosys JSON
    netlist: ``{instance: {"cost", "lut_levels", "carry_chains", "dsp_levels", "from", "to"}}``
    (``from``/``to``: the cells the path starts and ends at; instance ``""`` is the top module's
    own logic and outputs). Raises :class:`CombinationalLoopError` if the combinational cells
    form a loop."""
    module = netlist["modules"][top]
    zero = _NO_LEVELS

    def cost(levels):
        return levels[0] + levels[1] + DSP_LEVEL_COST * levels[2]

    # seed[bit]: a path start (register output, top input) driving bit
    seed: dict[int, tuple] = {}
    endpoints: list[tuple[str, int, str]] = []    # (instance, bit, cell) ending a path
    arcs: list[tuple[list, list, tuple]] = []     # (input bits, output bits, weight)
    for port_name, port in module["ports"].items():
        bits = [b for b in port["bits"] if isinstance(b, int)]
        if port["direction"] == "input":
            for b in bits:
                seed[b] = (0, zero, f"<input {port_name}>")
        else:
            endpoints += [("", b, f"<output {port_name}>") for b in bits]
    for name, cell in module["cells"].items():
        if cell["type"] in _IGNORED:
            continue
        cell_arcs, levels, ends = _arcs(cell)
        conns, dirs = cell["connections"], cell.get("port_directions", {})
        if levels is not None:
            for port, d in dirs.items():
                if d == "output":
                    for b in conns.get(port, []):
                        if isinstance(b, int):
                            seed[b] = (cost(levels), levels, name)
        if ends:
            inst = instance_of(name)
            arc_inputs = {p for ins, _, _ in cell_arcs for p in ins}
            for port, d in dirs.items():
                if d == "input" and port not in arc_inputs:
                    endpoints += [(inst, b, name) for b in conns.get(port, []) if isinstance(b, int)]
        for ins, outs, weight in cell_arcs:
            out_bits = [b for p in outs for b in conns.get(p, []) if isinstance(b, int)]
            if out_bits:
                arcs.append(([b for p in ins for b in conns.get(p, []) if isinstance(b, int)], out_bits, weight))

    # Kahn's order: a bit is final once every arc driving it has fired; an arc fires once all of
    # its input bits are final.
    drivers: dict[int, int] = defaultdict(int)
    fanout: dict[int, list[int]] = defaultdict(list)
    waiting = []
    for index, (in_bits, out_bits, _) in enumerate(arcs):
        for b in out_bits:
            drivers[b] += 1
        for b in in_bits:
            fanout[b].append(index)
        waiting.append(len(in_bits))
    arrival: dict[int, tuple] = dict(seed)
    arc_worst: list[tuple | None] = [None] * len(arcs)
    ready = deque(index for index, count in enumerate(waiting) if count == 0)
    final_bits = deque(b for b in set(fanout) | set(seed) if drivers.get(b, 0) == 0)
    fired = 0
    while ready or final_bits:
        while final_bits:
            b = final_bits.popleft()
            value = arrival.setdefault(b, (0, zero, "<undriven>"))
            for index in fanout.get(b, ()):
                worst = arc_worst[index]
                if worst is None or value[0] > worst[0]:
                    arc_worst[index] = value
                waiting[index] -= 1
                if waiting[index] == 0:
                    ready.append(index)
        if ready:
            index = ready.popleft()
            fired += 1
            _, out_bits, weight = arcs[index]
            worst = arc_worst[index] or (0, zero, "<constant>")
            levels = tuple(a + w for a, w in zip(worst[1], weight))
            value = (cost(levels), levels, worst[2])
            for b in out_bits:
                old = arrival.get(b)
                if old is None or value[0] > old[0]:
                    arrival[b] = value
                drivers[b] -= 1
                if drivers[b] == 0:
                    final_bits.append(b)
    if fired < len(arcs):
        raise CombinationalLoopError(f"{len(arcs) - fired} combinational arcs never became ready: "
                                     "a combinational loop")
    names = _bit_names(module)

    def describe(cell: str) -> str:
        """A register by the public name of its output (``a.b.count[3]``), else the cell."""
        if cell.startswith("<"):
            return cell
        conns = module["cells"][cell]["connections"]
        dirs = module["cells"][cell].get("port_directions", {})
        inst = instance_of(cell)
        for port, d in dirs.items():
            if d == "output":
                for b in conns.get(port, []):
                    candidates = names.get(b, [])
                    own = [n for n in candidates if n.startswith(inst + ".")] if inst else candidates
                    if own or candidates:
                        return (own or candidates)[0]
        return cell

    worst_of: dict[str, dict] = {}
    for inst, bit, cell in endpoints:
        value = arrival.get(bit)
        if value is None:
            continue
        current = worst_of.get(inst)
        if current is None or value[0] > current["cost"]:
            worst_of[inst] = {"cost": value[0], "lut_levels": value[1][0], "carry_chains": value[1][1],
                              "dsp_levels": value[1][2], "from": value[2], "to": cell}
    for entry in worst_of.values():
        entry["from"], entry["to"] = describe(entry["from"]), describe(entry["to"])
    return worst_of


def _bit_names(module: Mapping) -> dict[int, list[str]]:
    """Bit -> ``name[index]`` of every public (non-hidden) net holding it, shortest first."""
    names: dict[int, list[str]] = defaultdict(list)
    for name, net in sorted(module.get("netnames", {}).items(), key=lambda item: len(item[0])):
        if net.get("hide_name"):
            continue
        readable = ".".join(part.lstrip("\\") for part in name.split("."))
        bits = net["bits"]
        for index, b in enumerate(bits):
            if isinstance(b, int):
                names[b].append(readable if len(bits) == 1 else f"{readable}[{index}]")
    return names
