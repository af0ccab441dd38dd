"""The sequencer: the program of ``gen/program.py`` as a ROM of step words, walked once per call
(docs/architecture.md sections 8 and 9)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.layouts import PAGE
from .act_mover import ScratchReader
from .axi import axi_read_signature
from .matmul_path import weights_command_layout

__all__ = ["Sequencer", "OPS", "REGIONS", "RELOCATIONS", "RUNTIME_FIELDS", "step_layout", "FAIL_CODES"]

#: The step operations, in the order of their ``op`` code.
OPS = ("EMBED", "NORM_QUANT", "MATMUL", "ATTENTION", "LM_HEAD")
#: The DDR regions whose bases the host writes (docs section 6), in ``bases`` order.
REGIONS = ("image", "kv", "scratch", "io")
#: Address fields of each op's command and the region their ROM value is an offset into: the
#: sequencer adds the region's base at run time, so one design serves any buffer placement.
RELOCATIONS = {
    "EMBED": {"ids": "io", "table": "image", "dst": "scratch"},
    "NORM_QUANT": {"src": "scratch", "gain": "image"},
    "MATMUL": {"base": "image", "dst": "scratch", "res": "scratch"},
    "ATTENTION": {"q": "scratch", "k": "scratch", "v": "scratch", "attn": "scratch", "rope_cos": "image",
                  "rope_sin": "image", "k_base": "kv", "v_base": "kv", "s_base": "kv"},
    "LM_HEAD": {"stripe_base": "image", "logits": "io"},
}
#: Command fields the sequencer fills from the call: ``tokens`` = ``TOKEN_COUNT`` (1 for the LM
#: head's last-row NORM_QUANT), ``pos0`` = ``SEQ_POS``.
RUNTIME_FIELDS = ("tokens", "pos0")
#: The ``fail_code`` bits of a call refused at START.
FAIL_CODES = ("BAD_TOKEN_COUNT", "CONTEXT_OVERFLOW", "MISALIGNED_BASE")

#: Width of the MATMUL step word's ``scale`` (image offset of the projection's w_mult).
SCALE_OFFSET = unsigned(32)


def step_layout(commands: dict[str, data.StructLayout]) -> data.StructLayout:
    """One ROM word: ``op`` (index in :data:`OPS`), the NORM_QUANT flags ``last_row`` (quantise
    only the call's last token, for the LM head) and ``to_head`` (route the result to the LM head
    instead of the act buffer), ``scale`` (MATMUL: image offset of w_mult, fetched before the
    command goes out), and ``cmd``, the op's command with region offsets in its address fields."""
    return data.StructLayout({
        "op": unsigned(3), "last_row": unsigned(1), "to_head": unsigned(1), "scale": SCALE_OFFSET,
        "cmd": data.UnionLayout({op.lower(): commands[op] for op in OPS}),
    })


class Sequencer(wiring.Component):
    """Runs a call: the ROM's steps in order, each sent as one command to the datapath of its op,
    the next step once that one is complete.

    ``start`` (with ``decode``, ``seq_pos``, ``token_count`` and the region ``bases`` held by
    the register file) begins a call. A call that cannot run ends at once with a ``fail`` pulse
    and its ``fail_code`` (:data:`FAIL_CODES`: ``TOKEN_COUNT`` 0, above ``max_tokens`` or not 1
    in decode; ``SEQ_POS + TOKEN_COUNT`` above ``max_context``; a base not 4 KiB aligned),
    before any memory access. Otherwise, per step: the ROM word is read, its address fields are
    relocated by the region bases (:data:`RELOCATIONS`), ``tokens`` and ``pos0`` filled in, and
    the command offered on ``<op>_cmd``. A MATMUL step first fetches its w_mult (one read of
    the image through ``scalar_axi``). Completion: ``<op>_done`` pulses; a NORM_QUANT into
    the act buffer completes once the act buffer has taken the step's write command
    (``act_cmd_taken``), not once its tokens are in: the MATMUL that always follows it
    (``build_program`` checks) replays each token only after that token is stored, so its
    TLMM starts on the first pass while the quantiser still works on the later tokens (the
    element-wise step hides behind the projection instead of running before it); a
    NORM_QUANT ``to_head`` completes with the
    LM_HEAD step after it (``to_head`` stays high until then, for the stream switch). The
    LM_HEAD step's ``lm_token`` is latched into ``result_token``. After the last step ``done``
    pulses.

    Weights run ahead: from ``start`` a second walker reads the ROM through its own port and
    offers, for each MATMUL step in program order, its weight command on ``weights_cmd``
    (:func:`~tellme.hw.matmul_path.weights_command_layout`: the step's bases relocated, shape,
    tiling, ``tokens``) as soon as the previous one is taken, so the weight streamer loads a
    projection's tiles while the steps before it run (across layers, as far as the two banks
    of the weight buffer allow). Four cycles per ROM word; it finishes long before the call. A call is aborted (on an AXI error response or a soft reset) by resetting the
    sequencer with the datapaths (the top level's ``ResetInserter``).

    Ports: ``start``, ``decode``, ``seq_pos``, ``token_count``, ``bases`` (In, array in
    :data:`REGIONS` order), ``busy``, ``done``, ``fail`` (Out), ``fail_code``
    (Out, valid with ``fail``), ``result_token`` (Out 32), ``step`` (Out: the index of the
    running step), per op ``<op>_cmd`` (Out stream) and ``<op>_done`` (In; none for
    NORM_QUANT), ``weights_cmd`` (Out stream), ``act_cmd_taken`` (In),
    ``to_head`` (Out), ``lm_token`` (In 32), ``scalar_axi`` (AXI4 read manager).

    Latency: three cycles per step between one step's completion and the next command (ROM
    read, word register, command), plus the w_mult read of a MATMUL (one DDR round trip).
    Throughput: one step at a time, except that weight loading runs ahead across steps and a
    NORM_QUANT into the act buffer overlaps the MATMUL after it.
    Cost: the ROM (steps x word bits, block RAM), the relocation adders (one per address field,
    ``addr_width`` bits), a ScratchReader for w_mult and the call's registers.

    Parameters (keyword-only): ``commands`` (op -> its command layout), ``words`` (the ROM
    contents, integers of :func:`step_layout`), ``max_tokens``, ``max_context``, ``lanes`` (of
    the w_mult reader), ``data_width``, ``addr_width``.
    """

    def __init__(self, *, commands: dict[str, data.StructLayout], words: list[int], max_tokens: int,
                 max_context: int, lanes: int, data_width: int = 128, addr_width: int = 40):
        check_positive_int("max_tokens", max_tokens)
        check_positive_int("max_context", max_context)
        check_positive_int("lanes", lanes)
        if set(commands) != set(OPS):
            raise ValueError(f"commands: need a layout for each of {', '.join(OPS)}")
        if not words:
            raise ValueError("words: the program has no steps")
        self.commands, self.layout = commands, step_layout(commands)
        for index, word in enumerate(words):
            if not 0 <= word < (1 << self.layout.size):
                raise ValueError(f"words[{index}] does not fit the {self.layout.size}-bit step word")
        self.words, self.max_tokens, self.max_context = list(words), max_tokens, max_context
        self.lanes, self.data_width, self.addr_width = lanes, data_width, addr_width
        self.scalar = ScratchReader(lanes=lanes, data_width=data_width, addr_width=addr_width)
        members = {
            "start": In(1), "decode": In(1), "seq_pos": In(32), "token_count": In(32),
            "bases": In(unsigned(addr_width)).array(len(REGIONS)),
            "busy": Out(1), "done": Out(1), "fail": Out(1), "fail_code": Out(len(FAIL_CODES)),
            "result_token": Out(32), "step": Out(range(len(words))),
            "act_cmd_taken": In(1), "to_head": Out(1),
            "lm_token": In(32), "scalar_axi": Out(axi_read_signature(addr_width=addr_width, data_width=data_width)),
        }
        for op in OPS:
            members[f"{op.lower()}_cmd"] = Out(stream.Signature(commands[op]))
            if op != "NORM_QUANT":
                members[f"{op.lower()}_done"] = In(1)
        members["weights_cmd"] = Out(stream.Signature(weights_command_layout(commands["MATMUL"])))
        super().__init__(members)

    @property
    def unit_bytes(self) -> int:
        """Bytes the w_mult read fetches: one output beat of the reader, whole AXI beats."""
        return max(4 * self.lanes, self.data_width // 8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.scalar = scalar = self.scalar
        wiring.connect(m, scalar.axi, wiring.flipped(self.scalar_axi))

        rom = memory.Memory(shape=unsigned(self.layout.size), depth=len(self.words), init=self.words)
        m.submodules.rom = rom
        rom_read = rom.read_port()
        pc = Signal(range(len(self.words)))
        m.d.comb += [rom_read.addr.eq(pc), self.step.eq(pc)]
        word = Signal(self.layout)            # the running step

        # The call, latched at START.
        n = Signal(range(self.max_tokens + 1))
        pos = Signal(32)
        bases = Signal(data.ArrayLayout(unsigned(self.addr_width), len(REGIONS)))
        base = {region: bases[i] for i, region in enumerate(REGIONS)}

        # -- the commands: the word's fields, relocated and filled in ------------------------------
        ops = {op: i for i, op in enumerate(OPS)}

        def fill(payload, step_word, op):
            """``payload`` (a view of ``op``'s command layout) = ``step_word``'s command, relocated."""
            rom_cmd = step_word.cmd[op.lower()]
            m.d.comb += payload.eq(rom_cmd)
            fields = dict(self.commands[op])
            for name, region in RELOCATIONS[op].items():
                shape = fields[name].shape
                if isinstance(shape, data.ArrayLayout):
                    for k in range(shape.length):
                        m.d.comb += payload[name][k].eq(rom_cmd[name][k] + base[region])
                else:
                    m.d.comb += payload[name].eq(rom_cmd[name] + base[region])
            if "tokens" in fields:
                m.d.comb += payload.tokens.eq(n)
            if "pos0" in fields:
                m.d.comb += payload.pos0.eq(pos)

        for op in OPS:
            fill(getattr(self, f"{op.lower()}_cmd").payload, word, op)
        nq = self.norm_quant_cmd.payload
        with m.If(word.last_row):
            m.d.comb += [nq.tokens.eq(1),
                         nq.src.eq(word.cmd.norm_quant.src + base["scratch"] + (n - 1) * word.cmd.norm_quant.row_stride)]

        # -- w_mult of a MATMUL: one reader beat holding the word ----------------------------------
        unit = self.unit_bytes
        scale_addr = Signal(self.addr_width)
        m.d.comb += scale_addr.eq(word.scale + base["image"])
        m.d.comb += [scalar.cmd.payload.base.eq(scale_addr & ~(unit - 1)), scalar.cmd.payload.rows.eq(1),
                     scalar.cmd.payload.row_bytes.eq(unit), scalar.cmd.payload.row_stride.eq(0)]
        beat_want = Signal(range(max(2, unit // (4 * self.lanes))))
        lane = Signal(range(max(2, self.lanes)))
        m.d.comb += [beat_want.eq((scale_addr % unit) // (4 * self.lanes)), lane.eq((scale_addr // 4) % self.lanes)]
        beat_seen = Signal.like(beat_want)
        w_mult = Signal(32)
        m.d.comb += self.matmul_cmd.payload.w_mult.eq(w_mult)

        # -- the call's checks at START -------------------------------------------------------------
        count, seq = self.token_count, self.seq_pos
        codes = Signal(len(FAIL_CODES))
        m.d.comb += [
            codes[0].eq((count == 0) | (count > self.max_tokens) | (self.decode & (count != 1))),
            codes[1].eq((seq >= self.max_context) | (count > self.max_context - seq)),
            codes[2].eq(0),
        ]
        for i in range(len(REGIONS)):
            with m.If(self.bases[i] % PAGE != 0):
                m.d.comb += codes[2].eq(1)

        # The NORM_QUANT results go to the LM head from its ``to_head`` step until the LM_HEAD
        # step is done (the stream switch must hold while their beats flow).
        route_head = Signal()
        m.d.comb += self.to_head.eq(route_head)
        act_taken = Signal()
        with m.If(self.act_cmd_taken):
            m.d.sync += act_taken.eq(1)

        call_start = Signal()
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    with m.If(codes.any()):
                        m.d.comb += [self.fail.eq(1), self.fail_code.eq(codes)]
                    with m.Else():
                        m.d.comb += call_start.eq(1)
                        m.d.sync += [n.eq(count), pos.eq(seq), pc.eq(0)]
                        m.d.sync += [bases[i].eq(self.bases[i]) for i in range(len(REGIONS))]
                        m.next = "READ"
            with m.State("READ"):                 # the ROM answers in the next cycle
                m.d.comb += self.busy.eq(1)
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [word.eq(rom_read.data), act_taken.eq(0), beat_seen.eq(0)]
                m.next = "DISPATCH"
            with m.State("DISPATCH"):
                m.d.comb += self.busy.eq(1)
                with m.If(word.op == ops["MATMUL"]):
                    m.next = "SCALE_CMD"
                with m.Else():
                    m.next = "ISSUE"
            with m.State("SCALE_CMD"):
                m.d.comb += [self.busy.eq(1), scalar.cmd.valid.eq(1)]
                with m.If(scalar.cmd.ready):
                    m.next = "SCALE_DATA"
            with m.State("SCALE_DATA"):
                m.d.comb += [self.busy.eq(1), scalar.o.ready.eq(1)]
                with m.If(scalar.o.valid):
                    m.d.sync += beat_seen.eq(beat_seen + 1)
                    with m.If(beat_seen == beat_want):
                        m.d.sync += w_mult.eq(scalar.o.payload.data[lane])
                    with m.If(scalar.o.payload.last):
                        m.next = "ISSUE"
            with m.State("ISSUE"):
                m.d.comb += self.busy.eq(1)
                for op in OPS:
                    port = getattr(self, f"{op.lower()}_cmd")
                    with m.If(word.op == ops[op]):
                        m.d.comb += port.valid.eq(1)
                        with m.If(port.ready):
                            m.next = "WAIT"
                with m.If((word.op == ops["NORM_QUANT"]) & word.to_head):
                    m.d.sync += route_head.eq(1)
            with m.State("WAIT"):
                m.d.comb += self.busy.eq(1)
                complete = Signal()
                for op in OPS:
                    with m.If(word.op == ops[op]):
                        if op == "NORM_QUANT":
                            # The next step (a MATMUL) reads the act buffer behind its writes.
                            m.d.comb += complete.eq(word.to_head | act_taken)
                        else:
                            m.d.comb += complete.eq(getattr(self, f"{op.lower()}_done"))
                        if op == "LM_HEAD":
                            with m.If(self.lm_head_done):
                                m.d.sync += [self.result_token.eq(self.lm_token), route_head.eq(0)]
                with m.If(complete):
                    with m.If(pc == len(self.words) - 1):
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += pc.eq(pc + 1)
                        m.next = "READ"

        # -- the weight walker: every MATMUL's weight command, in order, from the call's start -----
        walk_read = rom.read_port()
        wpc = Signal(range(len(self.words)))
        walk_word = Signal(self.layout)
        m.d.comb += walk_read.addr.eq(wpc)
        walk_cmd = Signal(self.commands["MATMUL"])      # the walked MATMUL command, relocated
        fill(walk_cmd, walk_word, "MATMUL")
        wc = self.weights_cmd.payload
        for name in wc.shape().members:
            m.d.comb += wc[name].eq(walk_cmd[name])

        def restart_on_call():
            # Every state (not only IDLE): the walk ends within a few cycles of the call's last
            # MATMUL, long before the call, but should a call still start first, it restarts.
            with m.If(call_start):
                m.d.sync += wpc.eq(0)
                m.next = "READ"

        with m.FSM(name="walker"):
            with m.State("IDLE"):
                restart_on_call()
            with m.State("READ"):                 # n and the bases are latched by now
                m.next = "LOAD"
                restart_on_call()
            with m.State("LOAD"):
                m.d.sync += walk_word.eq(walk_read.data)
                m.next = "OFFER"
                restart_on_call()
            with m.State("OFFER"):
                m.d.comb += self.weights_cmd.valid.eq(walk_word.op == ops["MATMUL"])
                with m.If((walk_word.op != ops["MATMUL"]) | self.weights_cmd.ready):
                    with m.If(wpc == len(self.words) - 1):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += wpc.eq(wpc + 1)
                        m.next = "READ"
                restart_on_call()
        return m
