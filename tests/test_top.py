"""The generated top level (gen/top.py): the sequencer ROM encodes the program, and BitNet
generation on the Verilog under Verilator, driven by the host driver through the register map,
equals the golden model bit for bit (tokens and every step's logits), with the call errors of
the register map reported as messages."""

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest
from amaranth.lib import data

from tellme.config import ConfigError, hardware_preset, model_preset
from tellme.contract.regmap import ERROR_BITS, WATCHDOG_CYCLES
from tellme.gen.checkpoint import load_checkpoint
from tellme.gen.image import write_image
from tellme.gen.program import build_program
from tellme.gen.synthetic import write_checkpoint
from tellme.gen.top import TellmeTop, encode_program
from tellme.hw.sequencer import OPS, RELOCATIONS, step_layout
from tellme.sim.axi_stall import STALL_CHANNELS
from tellme.sim.backends import generate, make_backend
from tellme.weights import random_weights

from helpers import ODD_SILU

# Chunks of 12 tokens with attention tiles of 8: the second chunk starts inside a tile.
HW = hardware_preset("sim-small").replace(prefill_chunk=12, max_context=64)


def _decode(word: int, layout: data.StructLayout, commands) -> tuple[str, dict]:
    op = OPS[word & 0b111]
    cmd_bits = word >> layout["cmd"].offset
    cmd_layout = commands[op]
    view = data.Const(cmd_layout, cmd_bits & ((1 << cmd_layout.size) - 1))
    return op, {name: view[name] for name, _ in cmd_layout}


def test_program_rom_encodes_every_step():
    model = model_preset("tiny")
    top = TellmeTop(model, HW)
    program = top.program
    commands = {op: path.cmd.payload.shape() for op, path in top.paths.items()}
    words = encode_program(program, commands)
    # One word per step, and the LM head's last-row NORM_QUANT before it.
    assert len(words) == len(program.steps) + 1
    layout = step_layout(commands)
    ops = [_decode(w, layout, commands)[0] for w in words]
    assert ops[0] == "EMBED" and ops[-2:] == ["NORM_QUANT", "LM_HEAD"]
    assert ops.count("MATMUL") == 7 * model.num_layers
    # Address fields hold offsets into their region: the first MATMUL's weights are q_proj's
    # section of the image, its destination the q array of the scratch region.
    first = next(w for w in words if _decode(w, layout, commands)[0] == "MATMUL")
    _, fields = _decode(first, layout, commands)
    assert int(fields["base"][0]) == program.image["layers.0.q_proj"].offset
    assert int(fields["dst"]) == program.scratch["q"].offset
    assert set(RELOCATIONS) == set(OPS)


def test_top_refuses_a_model_the_hardware_cannot_run():
    model = dataclasses.replace(model_preset("tiny"), hidden_size=66)
    with pytest.raises(ConfigError, match="hidden_size"):
        TellmeTop(model, HW)
    with pytest.raises(ConfigError, match="attn_heads_parallel"):
        TellmeTop(model_preset("tiny"), HW.replace(attn_heads_parallel=3))
    # the fp16 head takes ew_lanes binary16 weights from whole beats: 8 lanes need 128-bit beats
    with pytest.raises(ConfigError, match=r"lm_head_format.*128 bits.*axi_data_width \(64\)"):
        TellmeTop(model_preset("tiny"), HW.replace(lm_head_format="fp16", ew_lanes=8, axi_data_width=64))


def _golden(weights, hw, prompt, new_tokens):
    return generate(make_backend("golden", weights, hw), prompt, new_tokens)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Hugging Face checkpoints of both styles, written by the synthetic writer and loaded back
    through the loader a user's checkpoint goes through: ReLU^2 + GQA with packed 2-bit
    weights; SiLU + MHA in full precision (quantised at load)."""
    root = tmp_path_factory.mktemp("ckpt")
    made = {}
    for key, model, style in (("tiny", model_preset("tiny"), "packed"), ("odd-silu", ODD_SILU, "full")):
        path = write_checkpoint(random_weights(model, seed=5), root / key, style=style)
        made[key] = load_checkpoint(path)
    return made


def _assert_same_generation(got_ids, got_logits, want_ids, want_logits):
    assert got_ids == want_ids
    for step, (got, want) in enumerate(zip(got_logits, want_logits)):
        got_bits, want_bits = got.view(np.uint32), np.asarray(want, np.float32).view(np.uint32)
        assert np.array_equal(got_bits, want_bits), \
            f"step {step}: logits differ at {np.flatnonzero(got_bits != want_bits)[:8]}"


def _rtl_equals_golden(weights, hw, prompt, new_tokens):
    """Greedy generation on the RTL equals the golden backend's, ids and every step's logits bit
    for bit; returns the RTL run."""
    from tellme.sim.top_harness import rtl_generate
    want_ids, want_logits = _golden(weights, hw, prompt, new_tokens)
    got_ids, got_logits, run = rtl_generate(weights, hw, prompt, new_tokens)
    _assert_same_generation(got_ids, got_logits, want_ids, want_logits)
    return run


def _prompt(weights, n=20):
    rng = np.random.default_rng(7)
    return [int(i) for i in rng.integers(0, weights.config.vocab_size, size=n)]


@pytest.mark.rtl
def test_generation_on_the_rtl_equals_golden(checkpoints):
    """ReLU^2 + GQA, packed checkpoint: a 20-token prompt in chunks of 12 (the second starts
    inside an attention tile of 8) and 17 tokens decoded across the tiles at 24 and 32 equal
    the golden backend bit for bit. Before it, on the same design: calls the hardware must
    refuse (TOKEN_COUNT 0, above the chunk, 2 in decode; SEQ_POS + TOKEN_COUNT beyond the
    context), an AXI error on the first weight read and on the first read of all, a SOFT_RESET
    in the middle of a prefill and of a decode, the system reset in the middle of each, and a
    starved unit (one HP port's read data held back) ended by the watchdog with
    ERR_CODE.WATCHDOG, a second START during a prefill (ignored, flagged START_WHILE_BUSY),
    a token id past the vocabulary (BAD_TOKEN_ID); the generation after them is still exact."""
    from tellme.sim.top_harness import MEMORY_BASE, ddr_bytes, rtl_generate
    weights = checkpoints["tiny"]
    prompt, new_tokens = _prompt(weights), 17
    want_ids, want_logits = _golden(weights, HW, prompt, new_tokens)
    program = build_program(weights.config, HW)
    # The image placed so that everything up to layer 0's q_proj lies in the DDR and q_proj
    # itself just past its end: the first weight read of the call gets DECERR.
    q_proj = program.image["layers.0.q_proj"]
    # (what the steps before it read: the embedding table, the first norm, the w_mult scales)
    assert all(program.image[name].offset + program.image[name].size <= q_proj.offset
               for name in ("embed", "layers.0.input_norm", "layers.0.scales"))
    weights_off_the_end = MEMORY_BASE + ddr_bytes(program) - q_proj.offset
    errors = [
        {"op": "expect_error", "call": {"op": "start", "seq_pos": 0, "token_count": 0}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": 0, "token_count": HW.prefill_chunk + 1}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": 0, "token_count": 2, "decode": True}},
        {"op": "expect_error", "call": {"op": "start", "seq_pos": HW.max_context - 3, "token_count": 5}},
        {"op": "bases", "bases": {"image": 0x1000_0000}},          # below the DDR model: DECERR
        {"op": "expect_error", "call": {"op": "prefill", "ids": prompt[:3]}},
        {"op": "bases", "bases": {"image": weights_off_the_end}},
        {"op": "expect_error", "call": {"op": "prefill", "ids": prompt[:3]}},
        {"op": "restore_bases"},
        {"op": "soft_reset_during", "call": {"seq_pos": 0, "token_count": 12}, "after": 20e-6},
        # a starved unit: HP0's read data held back from the start of a call (stall bit 1 of
        # port 0: its R channel), the watchdog at 2,000 quiet cycles
        {"op": "write", "register": "WATCHDOG", "fields": {"CYCLES": 2000}},
        {"op": "stall", "mask": 1 << STALL_CHANNELS.index(("r", "rvalid", "rready"))},
        {"op": "expect_error", "call": {"op": "prefill", "ids": prompt[:3]}},
        {"op": "stall", "mask": 0},
        {"op": "soft_reset_during", "call": {"seq_pos": 5, "token_count": 1, "decode": True}, "after": 4e-6},
        {"op": "system_reset_during", "call": {"seq_pos": 0, "token_count": 12}, "after": 20e-6},
        {"op": "restore_bases"},                                    # the system reset cleared them
        {"op": "system_reset_during", "call": {"seq_pos": 5, "token_count": 1, "decode": True}, "after": 4e-6},
        {"op": "restore_bases"},
        # another host's START in the middle of a prefill: ignored and flagged
        {"op": "start_while_busy", "call": {"seq_pos": 0, "token_count": 12}, "after": 20e-6},
        # a token id past the vocabulary, past the driver's checks: the hardware ends the call
        {"op": "expect_error", "call": {"op": "start", "seq_pos": 0, "token_count": 3,
                                        "ids": [prompt[0], weights.config.vocab_size, prompt[1]]}},
    ]
    got_ids, got_logits, run = rtl_generate(weights, HW, prompt, new_tokens, before=errors)
    messages = run.errors
    for message, code in zip(messages[:4], ["BAD_TOKEN_COUNT"] * 3 + ["CONTEXT_OVERFLOW"]):
        assert message is not None and code in message, (code, message)
    for message in messages[4:6]:
        assert message is not None and "AXI_READ" in message, message
        assert message.startswith("prefill call at position 0 (3 tokens)"), message
    idle = {"BUSY": 0, "DONE": 0, "ERROR": 0}
    # SOFT_RESET: back to idle; the call's flags stay cleared, the register file keeps its values
    assert messages[6] == {"busy_when_reset": 1, "status_after": idle, "err_code_after": 0,
                           "watchdog_after": WATCHDOG_CYCLES}, messages[6]
    assert messages[7] is not None and "WATCHDOG (no AXI handshake for 2000 cycles" in messages[7], messages[7]
    assert messages[8] == {"busy_when_reset": 1, "status_after": idle, "err_code_after": 0,
                           "watchdog_after": 2000}, messages[8]
    # the system reset: idle, and the register file back to its reset values
    for message in messages[9:11]:
        assert message == {"busy_when_reset": 1, "status_after": idle, "err_code_after": 0,
                           "watchdog_after": WATCHDOG_CYCLES}, message
    # START while busy: the running call went on to DONE (no ERROR), its CYCLES counted from its
    # own START (past the 20 us of the second one), ERR_CODE holds only the flag, the driver
    # refuses the result
    busy_start = messages[11]
    assert busy_start["busy_when_started"] == 1 and busy_start["status_after"] == {"BUSY": 0, "DONE": 1, "ERROR": 0}
    assert busy_start["err_code_after"] == 1 << ERROR_BITS.index("START_WHILE_BUSY"), busy_start
    assert "ERR_CODE.START_WHILE_BUSY" in busy_start["error"], busy_start
    assert busy_start["cycles"] > 20e-6 * HW.clock_mhz * 1e6, busy_start
    assert messages[12] is not None and "BAD_TOKEN_ID" in messages[12], messages[12]
    _assert_same_generation(got_ids, got_logits, want_ids, want_logits)
    kinds = [c["kind"] for c in run.calls]
    assert kinds == ["prefill", "prefill"] + ["decode"] * (new_tokens - 1)
    assert all(c["cycles"] > 0 for c in run.calls)
    # the harness measures the watchdog's margin: every completed call (the generation's and
    # the one beside the ignored START) had quiet stretches, all far below the 2,000-cycle limit
    # the starved call above was ended by
    assert len(run.longest_quiet) == len(run.calls) + 1, run.longest_quiet
    assert all(0 < q < 1000 for q in run.longest_quiet), run.longest_quiet


@pytest.mark.rtl
def test_odd_shapes_under_random_pauses_equal_golden(checkpoints, monkeypatch):
    """SiLU + MHA from a full-precision checkpoint, with shapes that divide nothing evenly
    (ODD_SILU), under random pauses on every AXI channel of every HP port and on the AXI4-Lite
    port: 16 generated tokens and their logits equal the golden backend bit for bit; and the
    pynq transport, driving the same calls against a fake ``pynq``, writes exactly the same
    registers with the same values in the same order."""
    import sys

    from tellme.runtime import Accelerator, PynqTransport
    from tellme.sim.board_model import fake_pynq_module
    from tellme.sim.top_harness import rtl_generate
    weights = checkpoints["odd-silu"]
    prompt, new_tokens = _prompt(weights), 16
    want_ids, want_logits = _golden(weights, HW, prompt, new_tokens)
    got_ids, got_logits, run = rtl_generate(weights, HW, prompt, new_tokens, axi_pauses=True, hp_pauses=0.2)
    _assert_same_generation(got_ids, got_logits, want_ids, want_logits)

    fake = fake_pynq_module(weights.config, HW)
    monkeypatch.setitem(sys.modules, "pynq", fake)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "model.img"
        write_image(weights, HW, image)
        pynq_ids, _ = generate(Accelerator(PynqTransport("tellme.bit"), image, HW), prompt, new_tokens)
    assert pynq_ids == want_ids
    pynq_writes = [(c[1], c[2]) for c in fake.calls if c[0] == "mmio.write"]
    assert pynq_writes == run.register_writes


@pytest.mark.rtl
def test_trace_names_the_broken_unit(checkpoints):
    """The trace monitor compares every step with the step machine: clean, it reports bit-exact;
    with one step's writes broken (bit 0 flipped, same build), it names that unit and layer."""
    from tellme.sim.trace import trace_generation
    weights = checkpoints["tiny"]
    prompt = [3, 14, 15, 92, 65]
    clean = trace_generation(weights, HW, prompt, 2)
    assert clean.mismatch is None and clean.values_compared > 0, str(clean)
    program = build_program(weights.config, HW)
    broken = next(i for i, s in enumerate(program.steps)
                  if getattr(s, "proj", None) == "o_proj" and s.layer == 1)
    report = trace_generation(weights, HW, prompt, 2, fault_step=broken)
    assert report.mismatch is not None, str(report)
    assert report.mismatch.unit.startswith("MATMUL o_proj") and report.mismatch.layer == 1, str(report)
    assert report.mismatch.call == 0 and report.mismatch.element == 0, str(report)


def test_generate_writes_the_verilog_and_its_description(tmp_path, capsys):
    """`tellme generate`: the top level's Verilog, the hand-written Verilog it needs (none
    here: the DDR model is the testbench's), a JSON of ports and parameters, and a summary."""
    import json

    from tellme.cli import main
    out = tmp_path / "gen"
    assert main(["generate", "--preset", "tiny", "--hardware", "sim-small", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "tellme generate: tiny on sim hardware" in text and str(out / "tellme_top.v") in text
    verilog = (out / "tellme_top.v").read_text()
    assert "module tellme_top(" in verilog and "tellme_ddr_mem" not in verilog
    info = json.loads((out / "tellme_top.json").read_text())
    assert set(info["ports"]) >= {"s_axil", "m_axi_hp0", "m_axi_hp3", "irq"}
    assert info["program"]["rom_words"] == info["program"]["steps"] + 1
    assert [r["name"] for r in info["register_map"]][:3] == ["ID", "VERSION", "CONFIG_HASH"]
    for port in ("s_axil__awvalid", "m_axi_hp0__araddr", "m_axi_hp0__wdata", "irq"):
        assert port in verilog
    assert not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_kv260_accelerator_converts_to_verilog(tmp_path):
    """bitnet-b1.58-large on the kv260 hardware settings: the generator elaborates the whole
    top level and writes its Verilog and description (several minutes: a large netlist)."""
    from tellme.gen.top import write_top
    model, hw = model_preset("bitnet-b1.58-large"), hardware_preset("kv260")
    info = write_top(model, hw, tmp_path)
    verilog = (tmp_path / "tellme_top.v").read_text()
    assert "module tellme_top(" in verilog and "m_axi_hp3__araddr" in verilog
    assert info["program"]["rom_words"] == len(build_program(model, hw).steps) + 1
    assert not list(tmp_path.glob(".*.tmp"))


#: A mid-size model: 4 layers, hidden 256, head_dim 64, GQA 2:1, an FFN (688) and a vocabulary
#: (1000) that are no multiple of the TLMM's group x lanes or the LM head's beat.
MID_RELU2 = dataclasses.replace(model_preset("tiny"), name="mid-relu2", hidden_size=256, intermediate_size=688,
                                num_layers=4, num_heads=4, num_kv_heads=2, head_dim=64, vocab_size=1000)


@pytest.mark.slow
@pytest.mark.rtl
def test_mid_size_model_equals_golden():
    """A mid-size model (MID_RELU2) on the end-to-end settings (chunks of 12, tiles of 8): a
    20-token prompt in two chunks and 6 generated tokens equal the golden backend bit for bit."""
    weights = random_weights(MID_RELU2, seed=5)
    prompt, new_tokens = _prompt(weights), 6
    run = _rtl_equals_golden(weights, HW, prompt, new_tokens)
    assert [c["kind"] for c in run.calls] == ["prefill", "prefill"] + ["decode"] * (new_tokens - 1)


@pytest.mark.slow
@pytest.mark.rtl
def test_int8_attention_equals_golden(checkpoints):
    """The int8 attention format (``attn_format``: int8 K/V rows with scale records, int8 queries
    through the quantiser; the default is fp32) end to end on the ReLU^2 + GQA checkpoint: a
    20-token prompt in chunks of 12 (the second inside a tile) and 10 generated tokens across
    the tile at 24 equal the golden backend bit for bit. (Slow: the int8 units run in `make
    test` at unit and step level, test_attention_path.py.)"""
    weights, hw = checkpoints["tiny"], HW.replace(attn_format="int8")
    prompt, new_tokens = _prompt(weights), 10
    run = _rtl_equals_golden(weights, hw, prompt, new_tokens)
    assert [c["kind"] for c in run.calls] == ["prefill", "prefill"] + ["decode"] * (new_tokens - 1)


@pytest.mark.slow
@pytest.mark.rtl
def test_fp16_lm_head_equals_golden(checkpoints):
    """The fp16 LM head (docs 3.9) end to end on the odd shapes (hidden 160 = 40 beats of 4
    lanes, two groups of 4 binary16 per 128-bit beat, rows straddling beats; vocab 288): the
    final norm's float vector goes to the head beside x_q; a 20-token prompt in two chunks and 8
    generated tokens equal the golden backend bit for bit."""
    weights, hw = checkpoints["odd-silu"], HW.replace(lm_head_format="fp16")
    prompt, new_tokens = _prompt(weights), 8
    run = _rtl_equals_golden(weights, hw, prompt, new_tokens)
    assert [c["kind"] for c in run.calls] == ["prefill", "prefill"] + ["decode"] * (new_tokens - 1)


@pytest.mark.slow
@pytest.mark.rtl
def test_tiny_model_on_kv260_settings_equals_golden():
    """The kv260 hardware settings (64 TLMM lanes, 8 tokens, tiles of 32, chunks of 128, 16
    URAMs per bank; context cut to the tiny model's) under Verilator: one prefill and a decode
    step of the tiny model equal the golden backend bit for bit."""
    hw = hardware_preset("kv260").replace(max_context=256)
    weights = random_weights(model_preset("tiny"), seed=3)
    _rtl_equals_golden(weights, hw, _prompt(weights, 10), 2)
