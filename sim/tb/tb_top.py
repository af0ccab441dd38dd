"""The generated top level end to end (:mod:`tellme.sim.top_harness` builds it): the host driver,
:class:`tellme.runtime.Accelerator`, runs a script of calls through :class:`RtlTransport` on the
top and its DDR model, as it would on the board, and records every call.

Configuration: ``image``, ``model``, ``hardware``, ``memory_base``, ``memory_bytes``,
``clock_hz``, ``script`` (``{"op": "prefill", "ids": [...]}``, ``{"op": "decode", "id": i}``,
``{"op": "reset"}``, ``{"op": "bases", "bases": {"image": addr}}`` / ``{"op": "restore_bases"}``,
``{"op": "soft_reset_during", "call": {"seq_pos", "token_count", "decode"}, "after": seconds}``
(and ``system_reset_during``: the system reset instead of SOFT_RESET; both record BUSY before
and STATUS, ERR_CODE, WATCHDOG after), ``{"op": "write", "register": name, "fields": {...}}``,
``{"op": "stall", "mask": m}`` (hold the HP channels of the stall bits in ``m`` from now on: a
starved unit; needs ``hp_pauses`` off), ``{"op": "start_while_busy", "call": {...}, "after":
seconds}`` (start a call, write START again ``after`` later, wait for the end; records BUSY
then, the driver's error, ERR_CODE, STATUS and CYCLES after),
``{"op": "generate", "ids": [...], "max_new_tokens": k}`` (greedy: prefill,
then decode the token the hardware chose, k tokens in all), ``{"op": "expect_error", "call": {...}}``; a ``start`` call may give ``ids``, written into the
I/O region as they are, past the driver's checks), ``results`` (JSON
path: ``calls``, one ``{kind, tokens, token, cycles, stall_cycles, logits (uint32 bits)}`` per
call; ``errors``; ``register_writes``, every (offset, value) the driver wrote; ``op_cycles``,
at each end-of-call pulse the harness's per-op cycle counters, ``op_counter_bits`` wide each;
``longest_quiet``, at each end-of-call pulse the call's longest stretch without an HP handshake;
``step_ends``, [step index, cycles] at each step-end pulse of the harness),
``axi_pauses`` (random pauses on the AXI4-Lite port), ``hp_pauses`` (probability that a
channel of an HP port is held in a cycle, each channel of each port drawn apart; 0: none),
``pause_seed`` (seed of both pause patterns; absent: fixed patterns),
``trace`` (an .npz path: the KV, scratch and I/O regions after every step,
:func:`record_steps`).
"""

from __future__ import annotations

import sys

import cocotb
import numpy as np
from cocotb.task import resume
from cocotb.triggers import RisingEdge

from ...config import HardwareConfig
from ...runtime import Accelerator, AcceleratorError
from . import record_result
from .ddr import read_ddr
from .host import RtlTransport, run_host
from .streams import random_pause
from .testbench import Testbench

#: Simulated seconds a call may take before the driver gives up (a hang ends as an error),
#: unless the configuration gives ``call_timeout`` (run_calls does, scaled to the model).
CALL_TIMEOUT = 5e-3


@cocotb.test()
async def test_script(dut):
    tb = Testbench(dut)
    cfg, clock = tb.cfg, tb.clock
    dut.fault_step.value = cfg["fault_step"]
    pause_seed = cfg.get("pause_seed")           # None: the fixed patterns of seeds 21-24
    if cfg.get("hp_pauses"):
        cocotb.start_soon(tb.random_bits("stall", cfg["hp_pauses"], 24 if pause_seed is None else 4 * pause_seed + 3))
    else:
        tb.hold_low("stall")
    await tb.reset()
    hw = HardwareConfig.from_dict(cfg["hardware"])
    transport = RtlTransport(dut, axil_prefix="s_axil_", clock=clock, reset=dut.rst, memory=dut.ddr.mem,
                             memory_base=cfg["memory_base"], memory_bytes=cfg["memory_bytes"],
                             clock_hz=cfg["clock_hz"])
    if cfg.get("axi_pauses"):
        base = 21 if pause_seed is None else 4 * pause_seed
        transport.axil.write_if.aw_channel.set_pause_generator(random_pause(0.3, base))
        transport.axil.write_if.w_channel.set_pause_generator(random_pause(0.3, base + 1))
        transport.axil.read_if.ar_channel.set_pause_generator(random_pause(0.3, base + 2))
    progress = cfg.get("progress")
    snapshots: list[dict] = []
    regions: dict[str, tuple[int, int]] = {}

    @resume
    async def set_stall(mask: int) -> None:
        dut.stall.value = mask
        await RisingEdge(clock)

    @resume
    async def pulse_reset() -> None:
        await tb.reset(4)

    def host():
        acc = Accelerator(transport, cfg["image"], hw, timeout=cfg.get("call_timeout", CALL_TIMEOUT),
                          poll_interval=2e-6)
        regions.update({name: (buf.physical_address - cfg["memory_base"], buf.size)
                        for name, buf in acc.buffers.items() if name != "image"})
        calls, errors = [], []
        for item in cfg["script"]:
            before = len(acc.results)
            op = item["op"]
            if op == "reset":
                acc.reset()
                continue
            if op == "bases":                       # move a region's base (e.g. off the memory)
                acc.set_bases(**{**{k: b.physical_address for k, b in acc.buffers.items()}, **item["bases"]})
                continue
            if op == "restore_bases":
                acc.set_bases(**{k: b.physical_address for k, b in acc.buffers.items()})
                continue
            if op in ("soft_reset_during", "system_reset_during"):
                # start a call, reset it midway (SOFT_RESET, or the system reset that also
                # clears the register file), forget it; record the state before and after
                call = item["call"]
                acc.start(decode=call.get("decode", False), seq_pos=call["seq_pos"], token_count=call["token_count"])
                acc.transport.wait(item["after"])
                busy = acc.regs.read("STATUS")["BUSY"]
                if op == "soft_reset_during":
                    acc.regs.write("CONTROL", SOFT_RESET=1)
                else:
                    pulse_reset()
                errors.append({"busy_when_reset": busy, "status_after": acc.regs.read("STATUS"),
                               "err_code_after": acc.regs.read_word("ERR_CODE"),
                               "watchdog_after": acc.regs.read_word("WATCHDOG")})
                continue
            if op == "start_while_busy":            # a second START (another host's) during a call
                call = item["call"]
                acc.start(decode=call.get("decode", False), seq_pos=call["seq_pos"], token_count=call["token_count"])
                acc.transport.wait(item["after"])
                busy = acc.regs.read("STATUS")["BUSY"]
                acc.regs.write("CONTROL", START=1)
                message = None
                try:
                    while acc.poll() is None:
                        acc.transport.wait(acc.poll_interval)
                except AcceleratorError as error:
                    message = str(error)
                errors.append({"busy_when_started": busy, "error": message, "status_after": acc.regs.read("STATUS"),
                               "err_code_after": acc.regs.read_word("ERR_CODE"), "cycles": acc.regs.read64("CYCLES")})
                continue
            if op == "write":                       # a register write, e.g. the watchdog's limit
                acc.regs.write(item["register"], **item["fields"])
                continue
            if op == "stall":                       # hold the HP ports' channels of these stall bits
                set_stall(item["mask"])
                continue
            if op == "expect_error":
                try:
                    _call(acc, item["call"])
                except AcceleratorError as error:
                    errors.append(str(error))
                else:
                    errors.append(None)
                continue
            if op == "generate":
                acc.reset()
                acc.prefill(item["ids"])
                for step in range(item["max_new_tokens"] - 1):
                    # The token the hardware chose (RESULT_TOKEN: the first index of the maximum).
                    acc.decode(acc.results[-1].token)
                before = 0
            else:
                _call(acc, item)
            for r in acc.results[before:]:
                calls.append({"kind": r.kind, "tokens": r.tokens, "token": r.token, "cycles": r.cycles,
                              "stall_cycles": r.stall_cycles,
                              "logits": r.logits.view(np.uint32).tolist()})
                if progress:
                    print(f"rtl: {r.kind} of {r.tokens} token(s): {r.cycles} cycles, token {r.token}",
                          file=sys.stderr, flush=True)
        return calls, errors

    if cfg.get("trace"):
        cocotb.start_soon(record_steps(dut, regions, snapshots))
    op_cycles: list[list[int]] = []
    longest_quiet: list[int] = []
    cocotb.start_soon(record_op_cycles(dut, cfg["op_counter_bits"], op_cycles, longest_quiet))
    step_ends: list[list[int]] = []
    cocotb.start_soon(record_step_ends(dut, step_ends))
    try:
        calls, errors = await run_host(host)
    except AcceleratorError as error:
        raise AssertionError(f"{error}; {where(dut, cfg.get('probe_names', []))}") from None
    record_result(cfg.get("results"), "calls", calls)
    record_result(cfg.get("results"), "errors", errors)
    record_result(cfg.get("results"), "register_writes", transport.writes)
    record_result(cfg.get("results"), "op_cycles", op_cycles)
    record_result(cfg.get("results"), "longest_quiet", longest_quiet)
    record_result(cfg.get("results"), "step_ends", step_ends)
    if cfg.get("trace"):
        np.savez(cfg["trace"], steps=np.array([s["step"] for s in snapshots], dtype=np.int64),
                 **{f"{name}_{i}": s[name] for i, s in enumerate(snapshots) for name in ("kv", "scratch", "io")})


async def record_op_cycles(dut, bits: int, out: list, quiet: list) -> None:
    """At every end-of-call pulse (``call_done``), the per-op cycle counters of the harness
    (``op_cycles``, ``bits`` each), appended to ``out``, and the call's longest stretch without
    an HP handshake (``longest_quiet``) to ``quiet``."""
    mask = (1 << bits) - 1
    count = len(dut.op_cycles) // bits
    while True:
        await RisingEdge(dut.call_done)
        value = int(dut.op_cycles.value)
        out.append([(value >> (bits * k)) & mask for k in range(count)])
        quiet.append(int(dut.longest_quiet.value))


async def record_step_ends(dut, out: list) -> None:
    """At every step-end pulse of the harness (``step_end``), [step index, its cycles]."""
    while True:
        await RisingEdge(dut.step_end)
        out.append([int(dut.step_end_index.value), int(dut.step_end_cycles.value)])


async def record_steps(dut, regions: dict, snapshots: list) -> None:
    """The trace monitor (simulation only): each time the sequencer moves from step k to k+1,
    step k's writes are all acknowledged; the KV, scratch and I/O regions are copied then, as
    ``{"step": k, "kv", "scratch", "io"}`` (byte arrays)."""
    memory = dut.ddr.mem
    previous = int(dut.step.value)
    while True:
        await dut.step.value_change
        now = int(dut.step.value)
        if now == previous + 1 and regions:
            snapshots.append({"step": previous, **{name: np.frombuffer(read_ddr(memory, *regions[name]), np.uint8)
                                                   for name in ("kv", "scratch", "io")}})
        previous = now


def where(dut, probe_names: list[str]) -> str:
    """Where the sequencer stands (for a call that never finished): its step index and the
    streams of the datapaths that hold a beat nobody takes (valid without ready), from the
    harness's ``step`` and ``probe`` outputs."""
    try:
        step = int(dut.step.value)
        bits = int(dut.probe.value)
    except (AttributeError, ValueError) as error:
        return f"sequencer state unreadable ({error})"
    value = {name: (bits >> i) & 1 for i, name in enumerate(probe_names)}
    stuck = [name[:-len(".valid")] for name in probe_names
             if name.endswith(".valid") and value[name] and not value[name[:-len("valid")] + "ready"]]
    waiting = [name[:-len(".ready")] for name in probe_names
               if name.endswith(".ready") and value[name] and not value[name[:-len("ready")] + "valid"]]
    return (f"sequencer at step {step}; streams holding a beat (valid, not ready): {', '.join(stuck) or 'none'}; "
            f"waiting for a beat (ready, not valid): {', '.join(waiting) or 'none'}")


def _call(acc: Accelerator, item: dict) -> None:
    if item["op"] == "prefill":
        acc.prefill(item["ids"])
    elif item["op"] == "decode":
        acc.decode(item["id"])
    elif item["op"] == "start":                 # a raw call, past the driver's own checks
        if "ids" in item:
            io, at = acc.buffers["io"], acc.program.io.ids_offset
            io[at:at + 4 * len(item["ids"])] = np.asarray(item["ids"], dtype="<u4").view(np.uint8)
            io.sync_to_device()
        acc.start(decode=bool(item.get("decode")), seq_pos=item["seq_pos"], token_count=item["token_count"])
        while acc.poll() is None:
            acc.transport.wait(acc.poll_interval)
    else:
        raise ValueError(f"unknown script op {item['op']!r}")
