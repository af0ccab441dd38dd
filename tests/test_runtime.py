"""The host driver (tellme.runtime.Accelerator) on the behavioural model of the accelerator
(sim/board_model.py), directly and through the pynq transport over a fake ``pynq`` module:
generation equals the golden model's, identity checks refuse a wrong design or image, hardware
errors and hangs come back as AcceleratorError messages that name the call."""

import sys

import numpy as np
import pytest

from tellme.config import hardware_preset, model_preset
from tellme.contract.regmap import REGISTER_MAP
from tellme.gen.image import write_image
from tellme.runtime import Accelerator, AcceleratorError, PynqTransport, Registers
from tellme.sim.backends import generate
from tellme.sim.board_model import BoardModel, ModelTransport, fake_pynq_module
from tellme.sim.golden import GoldenModel
from tellme.weights import random_weights

HW = hardware_preset("sim-small").replace(prefill_chunk=8)
CONFIG = model_preset("tiny")


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    weights = random_weights(CONFIG, seed=5)
    path = tmp_path_factory.mktemp("img") / "tiny.img"
    write_image(weights, HW, path)
    return weights, path


class RecordingTransport(ModelTransport):
    def __init__(self, *args):
        super().__init__(*args)
        self.writes = []

    def write32(self, offset, value):
        self.writes.append((offset, value))
        super().write32(offset, value)


def test_generation_equals_the_golden_model(image):
    weights, path = image
    acc = Accelerator(ModelTransport(CONFIG, HW), path, HW)
    prompt = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]           # longer than the chunk of 8: two calls
    got_ids, got_logits = generate(acc, prompt, 5)
    want_ids, want_logits = generate(GoldenModel(weights, HW), prompt, 5)
    assert got_ids == want_ids
    for a, b in zip(got_logits, want_logits):
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    assert [(r.kind, r.tokens) for r in acc.results] == [("prefill", 8), ("prefill", 3)] + [("decode", 1)] * 4
    assert [r.token for r in acc.results[1:]] == got_ids[:5]
    assert acc.position == len(prompt) + 4


def test_identity_checks(image, tmp_path):
    _, path = image
    # A design generated for another hardware configuration: CONFIG_HASH differs.
    with pytest.raises(AcceleratorError, match="CONFIG_HASH"):
        Accelerator(ModelTransport(CONFIG, HW.replace(attn_tile=16)), path, HW)
    # An image converted for other hardware (G=3) than the hardware file says.
    other = tmp_path / "g3.img"
    write_image(random_weights(CONFIG, seed=5), HW.replace(tlmm_group=3), other)
    with pytest.raises(AcceleratorError, match="tlmm_group 3"):
        Accelerator(ModelTransport(CONFIG, HW), other, HW)
    # Not an accelerator at all.
    transport = ModelTransport(CONFIG, HW)
    transport.board.words[REGISTER_MAP["ID"].offset] = 0xDEADBEEF
    with pytest.raises(AcceleratorError, match="no tellme accelerator"):
        Accelerator(transport, path, HW)


def test_bases_and_registers(image):
    _, path = image
    transport = RecordingTransport(CONFIG, HW)
    acc = Accelerator(transport, path, HW)
    regs = Registers(transport)
    for name, buffer in acc.buffers.items():
        assert regs.read64(f"{name.upper()}_BASE") == buffer.physical_address
    with pytest.raises(ValueError, match="aligned"):
        acc.set_bases(image=0x1001, kv=0, scratch=0, io=0)
    acc.prefill([1, 2, 3])
    control = REGISTER_MAP["CONTROL"].offset
    assert transport.writes[-1] == (control, 1)                      # START last
    assert regs.read("SEQ_POS") == {"POS": 0} and regs.read("TOKEN_COUNT") == {"COUNT": 3}


def test_hardware_errors_name_the_call(image):
    _, path = image
    transport = ModelTransport(CONFIG, HW)
    acc = Accelerator(transport, path, HW)
    # The driver refuses what it can see before starting the hardware.
    with pytest.raises(AcceleratorError, match="prefill of 257 tokens at position 0: 0 \\+ 257 tokens exceed"):
        acc.prefill([1] * (HW.max_context + 1))
    assert acc.results == [] and transport.board.calls == 0
    with pytest.raises(AcceleratorError, match="token ids must be"):
        acc.decode(CONFIG.vocab_size)
    # The hardware's own checks, reached by starting it directly.
    acc.start(decode=False, seq_pos=0, token_count=0)
    with pytest.raises(AcceleratorError, match="BAD_TOKEN_COUNT"):
        acc.poll()
    acc.start(decode=False, seq_pos=HW.max_context - 1, token_count=2)
    with pytest.raises(AcceleratorError, match="CONTEXT_OVERFLOW"):
        acc.poll()
    acc.start(decode=True, seq_pos=0, token_count=2)
    with pytest.raises(AcceleratorError, match="BAD_TOKEN_COUNT"):
        acc.poll()
    # A token id the driver would refuse, written straight into the I/O region.
    ids_at = acc.program.io.ids_offset
    acc.buffers["io"][ids_at:ids_at + 8] = np.array([1, CONFIG.vocab_size], dtype="<u4").view(np.uint8)
    acc.start(decode=False, seq_pos=0, token_count=2)
    with pytest.raises(AcceleratorError, match="BAD_TOKEN_ID"):
        acc.poll()
    # Another host's START landing while this call ran: the call ends with DONE and the flag
    # beside it; the driver does not take the result for this call's.
    real_start = transport.board._start

    def start_then_another_start():
        real_start()
        transport.board.words[REGISTER_MAP["ERR_CODE"].offset] |= REGISTER_MAP["ERR_CODE"].field("START_WHILE_BUSY").mask
    transport.board._start = start_then_another_start
    with pytest.raises(AcceleratorError, match=r"decode call at position 0 \(1 token\): the accelerator ignored a "
                                               r"START while this call ran \(ERR_CODE.START_WHILE_BUSY\)"):
        acc.decode(1)
    assert acc.results == []
    transport.board._start = real_start
    # A call that never finishes ends in a timeout that names it.
    transport.board._start = lambda: transport.board._set_status(busy=1)
    acc.timeout, acc.poll_interval = 0.01, 0.001
    with pytest.raises(AcceleratorError, match=r"prefill call at position 0 \(2 tokens\): no DONE after 0.01 s"):
        acc.prefill([1, 2])
    # ... and the hardware still busy with it: the next call is refused, the I/O region untouched
    io = acc.buffers["io"].copy()
    with pytest.raises(AcceleratorError, match=r"prefill call at position 0 \(1 token\): the accelerator is busy "
                                               r"with another call \(STATUS.BUSY\)"):
        acc.prefill([3])
    with pytest.raises(AcceleratorError, match=r"decode call at position 0: the accelerator is busy"):
        acc.start(decode=True, seq_pos=0, token_count=1)
    assert np.array_equal(acc.buffers["io"], io)


def test_a_misplaced_buffer_is_an_axi_error(image):
    _, path = image
    acc = Accelerator(ModelTransport(CONFIG, HW), path, HW)
    acc.set_bases(image=0x7000_0000, kv=acc.buffers["kv"].physical_address,
                  scratch=acc.buffers["scratch"].physical_address, io=acc.buffers["io"].physical_address)
    with pytest.raises(AcceleratorError, match="prefill call at position 0 .*AXI_READ"):
        acc.prefill([1])


def test_pynq_transport_drives_the_same_calls(image, monkeypatch):
    weights, path = image
    fake = fake_pynq_module(CONFIG, HW)
    monkeypatch.setitem(sys.modules, "pynq", fake)
    acc = Accelerator(PynqTransport("tellme.bit"), path, HW)
    prompt = [7, 7, 2, 9, 4]
    ids, logits = generate(acc, prompt, 3)
    assert ids == generate(GoldenModel(weights, HW), prompt, 3)[0]
    assert fake.calls[0] == ("Overlay", "tellme.bit")
    assert fake.calls[1] == ("mmio.read", REGISTER_MAP["ID"].offset, REGISTER_MAP.id_value)
    assert sum(1 for c in fake.calls if c[0] == "allocate") == 4
    # The same register writes as the model transport's, for the same call sequence.
    model = RecordingTransport(CONFIG, HW)
    generate(Accelerator(model, path, HW), prompt, 3)
    pynq_writes = [(c[1], c[2]) for c in fake.calls if c[0] == "mmio.write"]
    assert pynq_writes == model.writes
    syncs = fake.transport.memory.syncs
    assert ("to_device", acc.buffers["image"].physical_address) in syncs
    assert sum(1 for s in syncs if s == ("from_device", acc.buffers["io"].physical_address)) == len(acc.results)


def test_board_model_register_semantics():
    board = BoardModel(ModelTransport(CONFIG, HW).board.program, ModelTransport(CONFIG, HW).memory)
    status = REGISTER_MAP["STATUS"].offset
    board.words[status] = 0b110
    board.write32(status, 0b010)                  # W1C: clears DONE only
    assert board.read32(status) == 0b100
    board.write32(REGISTER_MAP["ID"].offset, 0)   # RO: ignored
    assert board.read32(REGISTER_MAP["ID"].offset) == REGISTER_MAP.id_value
    board.write32(0xFFC, 5)                       # unmapped: ignored, reads 0
    assert board.read32(0xFFC) == 0
