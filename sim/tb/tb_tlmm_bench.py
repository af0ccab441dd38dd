"""cocotb bench of the TLMM engine: cycle counts of whole mat-vec / mat-mat jobs at full rate.

Runs inside the simulator (started by ``bench/tlmm.py`` through
:func:`tellme.sim.rtl.run_cocotb`). The host writes every stimulus and the golden result into
an ``.npz`` file and names it, with the other settings, in the testbench configuration
(:func:`tellme.sim.tb.tb_config`):

- ``stim``: path of the ``.npz`` (arrays listed in :func:`_load`);
- ``fields``: ``{"cmd": [...], "out": [...]}``, the (name, width, signed) field lists of the
  command and result payloads (``tellme.sim.tb.streams.struct_fields``);
- ``group``, ``lanes``, ``tokens``, ``code_bits``: the engine's parameters;
- ``results``: path of the JSON file this bench writes its measurements to;
- ``progress``: path of a text file it appends a line to every ``progress_every`` cycles (the
  host prints them while the simulation runs);
- ``max_cycles``: watchdog bound.

Every input stream offers a beat in every cycle from the first one on (all commands, activation
groups and lane words are queued at once, no random stalls) and ``out`` is always ready, so the
measured cycles are the engine's own. A per-cycle monitor records when each command is
accepted, when each lane word is taken and when each result leaves; results are checked
against the golden model (``golden.tlmm``) for the tokens each command supplied, and the
command's scales must pass through unchanged.
"""

from __future__ import annotations

import json
import time

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from . import tb_config
from .streams import (StreamSink, StreamSource, pack_struct, reset_dut, start_clock, start_watchdog, unpack_struct,
                      with_timeout)

RESET_CYCLES = 4


def _load(path):
    """Arrays of the stimulus file:

    cmd_blocks, cmd_rows, cmd_w_mult (per command), cmd_d_x (commands, T);
    act_x (beats, G) int8, act_last (beats,); codes (words, P) lane words in stream order;
    words_per_cmd (commands,); exp_acc (rows, T), exp_tokens (rows,) meaningful tokens of each
    result, exp_cmd (rows,) command of each result, exp_last (rows,).
    """
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def _pack_lanes(codes: np.ndarray, bits: int) -> list[int]:
    """Lane words (words, P) -> flat payload integers, lane j at bits [j*bits, (j+1)*bits)."""
    words, lanes = codes.shape
    shifts = np.arange(bits, dtype=np.uint16)
    bitmat = ((codes.astype(np.uint16)[:, :, None] >> shifts) & 1).astype(np.uint8)
    packed = np.packbits(bitmat.reshape(words, lanes * bits), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _pack_act(x: np.ndarray, last: np.ndarray) -> list[int]:
    """Activation groups (beats, G) int8 + last -> payload integers (x[i] at bits 8i, last on top)."""
    beats, group = x.shape
    raw = x.astype(np.int64) & 0xFF
    out = []
    for k in range(beats):
        value = 0
        for i in range(group):
            value |= int(raw[k, i]) << (8 * i)
        out.append(value | (int(last[k]) << (8 * group)))
    return out


@cocotb.test()
async def bench_tlmm(dut):
    """All commands of the job back to back at full rate; measure cycles, check every result."""
    config = tb_config()
    stim = _load(config["stim"])
    fields_cmd = [tuple(f) for f in config["fields"]["cmd"]]
    fields_out = [tuple(f) for f in config["fields"]["out"]]
    tokens = int(config["tokens"])
    bits = int(config["code_bits"])
    progress_path = config.get("progress")
    progress_every = int(config.get("progress_every", 20000))
    wall_start = time.monotonic()

    def progress(line: str) -> None:
        if progress_path:
            with open(progress_path, "a") as f:
                f.write(line + "\n")

    clock = start_clock(dut)
    cmd = StreamSource(dut, "cmd", clock)
    act = StreamSource(dut, "act", clock)
    codes = StreamSource(dut, "codes", clock)
    out = StreamSink(dut, "o", clock)
    await reset_dut(dut, clock, RESET_CYCLES)
    watchdog = start_watchdog(clock, int(config["max_cycles"]), "TLMM bench")

    # -- queue everything (payloads packed up front, so the queues hold plain ints)
    commands = len(stim["cmd_rows"])
    d_x_width = 32 * tokens
    for c in range(commands):
        d_x = 0
        for t in range(tokens):
            d_x |= int(stim["cmd_d_x"][c, t]) << (32 * t)
        cmd.send_nowait(pack_struct(fields_cmd, {
            "blocks": int(stim["cmd_blocks"][c]), "rows": int(stim["cmd_rows"][c]),
            "w_mult": int(stim["cmd_w_mult"][c]), "d_x": d_x, "tokens": 0}))
    for beat in _pack_act(stim["act_x"], stim["act_last"]):
        act.send_nowait(beat)
    words = _pack_lanes(stim["codes"], bits)
    for word in words:
        codes.send_nowait(word)
    assert d_x_width == dict((n, w) for n, w, _ in fields_cmd)["d_x"]
    progress(f"queued {commands} command(s), {len(stim['act_x'])} activation groups, "
             f"{len(words)} lane words ({time.monotonic() - wall_start:.1f} s)")

    # -- per-cycle monitor of the handshakes. Cycle 0 is the first cycle out of reset, in which
    # every source offers its first beat.
    words_per_cmd = [int(n) for n in stim["words_per_cmd"]]
    bounds = np.cumsum([0] + words_per_cmd)
    total_words = int(bounds[-1])
    expected_rows = len(stim["exp_acc"])
    # tables_wait: cycles, after the first lane word was taken, in which a lane word was offered
    # but not taken (the engine waiting for tables or for the next command).
    record = {"offer_first": None, "cmd_accept": [], "take_first": [None] * commands,
              "take_last": [None] * commands, "act_first": None, "act_last": None,
              "out_first": [None] * commands, "out_last": [None] * commands, "takes": 0,
              "outs": 0, "tables_wait": 0}
    done_cycle = None

    async def monitor():
        nonlocal done_cycle
        cycle = 0
        cmd_index = 0
        out_cmd = 0
        edge = RisingEdge(clock)
        next_report = progress_every
        while True:
            await edge
            # Values sampled here are those of the cycle that just ended (number `cycle`).
            if record["offer_first"] is None and (cmd.valid.value or act.valid.value
                                                  or codes.valid.value):
                record["offer_first"] = cycle
            if cmd.valid.value and cmd.ready.value:
                record["cmd_accept"].append(cycle)
            if act.valid.value and act.ready.value:
                if record["act_first"] is None:
                    record["act_first"] = cycle
                record["act_last"] = cycle
            if codes.valid.value:
                if codes.ready.value:
                    k = record["takes"]
                    while cmd_index < commands and k >= bounds[cmd_index + 1]:
                        cmd_index += 1
                    if record["take_first"][cmd_index] is None:
                        record["take_first"][cmd_index] = cycle
                    record["take_last"][cmd_index] = cycle
                    record["takes"] = k + 1
                elif record["takes"]:
                    record["tables_wait"] += 1   # offered but not taken after the first take
            if out.valid.value and out.ready.value:
                k = record["outs"]
                while out_cmd < commands and stim["exp_cmd"][k] != out_cmd:
                    out_cmd += 1
                if record["out_first"][out_cmd] is None:
                    record["out_first"][out_cmd] = cycle
                record["out_last"][out_cmd] = cycle
                record["outs"] = k + 1
                if k + 1 == expected_rows:
                    done_cycle = cycle
            cycle += 1
            if cycle >= next_report:
                next_report += progress_every
                progress(f"cycle {cycle}: lane words {record['takes']}/{total_words}, results "
                         f"{record['outs']}/{expected_rows} ({time.monotonic() - wall_start:.0f} s)")

    cocotb.start_soon(monitor())

    # -- collect the results
    received = []

    async def collect():
        for _ in range(expected_rows):
            received.append(await out.recv())

    await with_timeout(collect(), clock, int(config["max_cycles"]), "TLMM results")
    # Nothing more may come out.
    await ClockCycles(clock, 50)
    watchdog.cancel()
    extra = out.count()

    # -- check against the golden model
    errors = []
    for k, raw in enumerate(received):
        got = unpack_struct(fields_out, raw)
        c = int(stim["exp_cmd"][k])
        n_tok = int(stim["exp_tokens"][k])
        acc = [((got["acc"] >> (32 * t)) & 0xFFFFFFFF) for t in range(tokens)]
        acc = [a - (1 << 32) if a >> 31 else a for a in acc]
        want = [int(v) for v in stim["exp_acc"][k, :n_tok]]
        if acc[:n_tok] != want:
            errors.append(f"result {k} (command {c}): acc {acc[:n_tok]} != golden {want}")
        d_x = [((got["d_x"] >> (32 * t)) & 0xFFFFFFFF) for t in range(tokens)]
        if d_x != [int(v) for v in stim["cmd_d_x"][c]] or got["w_mult"] != int(stim["cmd_w_mult"][c]):
            errors.append(f"result {k} (command {c}): scales not passed through")
        if got["last"] != int(stim["exp_last"][k]):
            errors.append(f"result {k} (command {c}): last={got['last']}, expected {stim['exp_last'][k]}")
        if len(errors) >= 10:
            break
    if extra:
        errors.append(f"{extra} result(s) beyond the {expected_rows} expected")
    if out.protocol_errors:
        errors += out.protocol_errors[:5]

    record.update(done_cycle=done_cycle, words=total_words, rows=expected_rows, errors=errors,
                  sim_wall_seconds=round(time.monotonic() - wall_start, 1))
    with open(config["results"], "w") as f:
        json.dump(record, f, indent=1)
    progress(f"done at cycle {done_cycle}, {len(errors)} error(s) "
             f"({time.monotonic() - wall_start:.0f} s)")
    assert not errors, "TLMM results differ from the golden model:\n" + "\n".join(errors)
