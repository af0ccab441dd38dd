"""TLMM engine: ternary weights x int8 activations by table lookup (docs/architecture.md 3.2, 4)."""

from __future__ import annotations

import functools
from types import SimpleNamespace

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from ..contract.formats import code_bits, table_entries, tlmm_digits
from .ping_pong import PingPong
from .tlmm_decode import codes_layout

__all__ = ["TlmmEngine", "TlmmTables", "build_order", "entry_bits", "command_layout", "act_layout", "result_layout"]

ACC_BITS = 32


def entry_bits(group: int) -> int:
    """Signed width of a table entry: sums of G int8 values lie in [-128 G, 127 G]."""
    return 8 + (group - 1).bit_length()


def command_layout(tokens: int, max_blocks: int, max_rows: int) -> data.StructLayout:
    """One TLMM command: ``blocks`` lane blocks of ``rows`` rows, plus what is passed along to
    its result rows: the scales and ``tokens``, how many of the T tokens are used (1..T, 0 for
    all T; the engine computes all T either way, units behind it may skip the rest)."""
    return data.StructLayout({
        "blocks": unsigned((max_blocks).bit_length()),
        "rows": unsigned((max_rows).bit_length()),
        "w_mult": unsigned(32),
        "d_x": data.ArrayLayout(unsigned(32), tokens),
        "tokens": unsigned(tokens.bit_length()),
    })


def act_layout(group: int) -> data.StructLayout:
    """One activation group (G int8 values); ``last`` marks the final group of a block."""
    return data.StructLayout({"x": data.ArrayLayout(signed(8), group), "last": unsigned(1)})


def result_layout(tokens: int) -> data.StructLayout:
    """One output row: a dot product per token, the command's scales and used ``tokens`` (0:
    all), and the command's last row."""
    return data.StructLayout({
        "acc": data.ArrayLayout(signed(ACC_BITS), tokens),
        "d_x": data.ArrayLayout(unsigned(32), tokens),
        "w_mult": unsigned(32),
        "tokens": unsigned(tokens.bit_length()),
        "last": unsigned(1),
    })


def _check_params(group, lanes, tokens):
    if group not in (2, 3, 4, 5):
        raise ValueError(f"group must be 2, 3, 4 or 5, got {group!r}")
    check_positive_int("lanes", lanes)
    check_positive_int("tokens", tokens)


@functools.cache
def build_order(group: int) -> tuple[tuple[int, int | None, int | None], ...]:
    """The order in which :class:`TlmmTables` builds a table: every magnitude 0 .. E-1 once,
    starting at 0, each differing from the one before in a single balanced-ternary digit by
    +-1, so that entry(next) = entry(previous) +- x_i. Returns ``(magnitude, digit i, sign)``
    per step (``None`` for the first). Found by a depth-first search that tries the neighbour
    with the fewest unvisited neighbours first (Warnsdorff's rule: no backtracking is needed for
    G <= 5); deterministic."""
    digits = tlmm_digits(group)
    index = {tuple(int(v) for v in row): mag for mag, row in enumerate(digits)}

    def neighbours(mag):
        out = []
        for i in range(group):
            for sign in (1, -1):
                row = [int(v) for v in digits[mag]]
                row[i] += sign
                if -1 <= row[i] <= 1 and tuple(row) in index:
                    out.append((index[tuple(row)], i, sign))
        return out

    links = {mag: neighbours(mag) for mag in range(len(digits))}
    path, seen = [(0, None, None)], {0}

    def extend():
        if len(path) == len(digits):
            return True
        options = [step for step in links[path[-1][0]] if step[0] not in seen]
        options.sort(key=lambda step: (sum(n[0] not in seen for n in links[step[0]]), step))
        for step in options:
            path.append(step)
            seen.add(step[0])
            if extend():
                return True
            path.pop()
            seen.discard(step[0])
        return False

    if not extend():
        raise ValueError(f"no single-digit build order for G = {group}")
    return tuple(path)


def _check_build_tokens(build_tokens, tokens):
    check_positive_int("build_tokens", build_tokens)
    if build_tokens > tokens:
        raise ValueError(f"build_tokens ({build_tokens}) must not exceed tokens ({tokens})")


def _balanced_sum(values):
    """The sum of ``values`` as a balanced tree of adders (depth log2 of their count)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class TlmmTables(wiring.Component):
    """Online table precompute into ping-pong lookup tables (one pair of banks per lane).

    Activation groups arrive on ``act`` in the order: for each block, for each token t, for each
    lane p, the group of lane p (inputs (bP+p)G .. (bP+p)G+G-1 of token t); ``last`` is set on
    the block's final group. Once the groups of K = ``build_tokens`` tokens (fewer at the end of
    a block) have arrived for all P lanes, every lane builds those tokens' table columns in lock
    step, one entry of each per cycle: entry(m) = sum_i d_i(m) x_i with d(m) the balanced-ternary
    digits of m, the magnitudes visited in :func:`build_order` so that each entry is the one
    before plus or minus a single x_i (one adder per column, starting from entry(0) = 0). A bank
    is filled K tokens at a time; after the group marked ``last`` it is handed to the lookup side
    (``full[bank]``) and the other bank is filled next, once the lookup side has released it.

    Ports: ``act`` (In stream, act_layout); ``rd_mag[p]`` (In, magnitude read address of lane
    p), ``rd_bank`` (In), ``rd_data[p][t]`` (Out, combinational entry of token t in lane p);
    ``full`` (Out(2)); ``release`` (In(2): one-cycle pulse per bank the lookup side is done with).

    Latency: ``full`` rises E + 2 cycles after a block's last group is taken (bank free, builder
    idle); a lookup is combinational (``rd_data`` follows ``rd_mag``/``rd_bank``).

    Throughput: collecting K tokens' groups takes K P cycles and building them E = (3^G+1)/2
    cycles; the two overlap, so a block of n tokens costs about ceil(n/K) max(K P, E) cycles of
    precompute (K = 2, P = 64, G = 5, n = 8: 512 instead of 976 with K = 1), hidden behind the
    lookups of the previous block when its rows take at least as long.

    Cost: 2 banks x P lanes of E x T entries of ``entry_bits(G)`` bits in single-ported LUTRAM
    (a bank is built or read, never both; K token columns written per cycle through one port),
    K entry accumulators (an adder with a G:1 mux) and a shadow register of K x G int8 per lane;
    the :class:`PingPong` state. Measured inside :class:`TlmmEngine`.
    """

    def __init__(self, *, group: int, lanes: int, tokens: int, build_tokens: int = 1):
        _check_params(group, lanes, tokens)
        _check_build_tokens(build_tokens, tokens)
        self.group, self.lanes, self.tokens, self.build_tokens = group, lanes, tokens, build_tokens
        self.entries = table_entries(group)
        self.width = entry_bits(group)
        mag_bits = code_bits(group) - 1
        super().__init__({
            "act": In(stream.Signature(act_layout(group))),
            "rd_mag": In(unsigned(mag_bits)).array(lanes),
            "rd_bank": In(1),
            "rd_data": Out(data.ArrayLayout(signed(self.width), tokens)).array(lanes),
            "full": Out(2),
            "release": In(2),
        })

    def elaborate(self, platform):
        m = Module()
        g, p_count, t_count, e_count, w = self.group, self.lanes, self.tokens, self.entries, self.width
        k_count = self.build_tokens

        # -- collection: K tokens' groups for all lanes, into the shadow registers; ``slots``
        # counts the tokens collected (fewer than K when the block's last group ends them)
        shadow = [[Signal(data.ArrayLayout(signed(8), g), name=f"shadow{p}" if k_count == 1 else f"shadow{p}_{k}")
                   for k in range(k_count)] for p in range(p_count)]
        shadow_full = Signal()
        shadow_last = Signal()
        lane = Signal(range(p_count))
        slot = Signal(range(k_count))
        slots = Signal(range(k_count + 1))

        # -- build: all lanes in lock step, entry m of token columns token..token+K-1 of bank wbank
        building = Signal()
        build_last = Signal()
        entry = Signal(range(e_count))
        token = Signal(range(t_count))
        valid = Signal(range(k_count + 1))       # token columns being built
        x = [[Signal(data.ArrayLayout(signed(8), g), name=f"x{p}" if k_count == 1 else f"x{p}_{k}")
              for k in range(k_count)] for p in range(p_count)]
        m.submodules.ping_pong = ping_pong = PingPong()
        wbank = ping_pong.wbank
        m.d.comb += [self.full.eq(ping_pong.full), ping_pong.release.eq(self.release)]

        # A new block may start only into a bank the lookup side has released; later tokens of
        # the same block go into the bank already being filled.
        start = Signal()
        m.d.comb += start.eq(shadow_full & ~building & ((token != 0) | ping_pong.wfree))
        # The shadow takes groups while empty, and also in the cycle its contents move on.
        m.d.comb += self.act.ready.eq(~shadow_full | start)
        accept = self.act.valid & self.act.ready
        lane_done = accept & (lane == p_count - 1)
        completes = lane_done & ((slot == k_count - 1) | self.act.payload.last) if k_count > 1 else lane_done
        with m.If(accept):
            for p in range(p_count):
                for k in range(k_count):
                    with m.If((lane == p) & (slot == k)):
                        m.d.sync += shadow[p][k].eq(self.act.payload.x)
            with m.If(lane_done):
                m.d.sync += lane.eq(0)
            with m.Else():
                m.d.sync += lane.eq(lane + 1)
            with m.If(completes):
                m.d.sync += shadow_last.eq(self.act.payload.last)
                if k_count > 1:
                    m.d.sync += [slot.eq(0), slots.eq(slot + 1)]
            if k_count > 1:
                with m.Elif(lane_done):
                    m.d.sync += slot.eq(slot + 1)
        with m.If(completes):
            m.d.sync += shadow_full.eq(1)
        with m.Elif(start):
            m.d.sync += shadow_full.eq(0)
        with m.If(start):
            m.d.sync += [building.eq(1), entry.eq(0), build_last.eq(shadow_last)]
            if k_count > 1:
                m.d.sync += valid.eq(slots)
            for p in range(p_count):
                for k in range(k_count):
                    m.d.sync += x[p][k].eq(shadow[p][k])

        with m.If(building):
            with m.If(entry == e_count - 1):
                m.d.sync += building.eq(0)
                with m.If(build_last | (token + k_count >= t_count)):
                    m.d.sync += token.eq(0)
                    m.d.comb += ping_pong.filled.eq(1)
                with m.Else():
                    m.d.sync += token.eq(token + k_count)
            with m.Else():
                m.d.sync += entry.eq(entry + 1)

        # The build visits the magnitudes in build_order(G): step c writes the entry of magnitude
        # address[c], and the entry of step c+1 is that of step c plus or minus one activation
        # x_i (one balanced-ternary digit changes by one), so each lane needs one adder per
        # token column instead of a G-term sum. A small ROM shared by all lanes gives step c's
        # address and the digit and sign of step c+1.
        order = build_order(g)
        address = Signal(range(e_count), name="build_address")
        next_digit = Signal(range(g), name="build_next_digit")
        next_neg = Signal(name="build_next_neg")
        with m.Switch(entry):
            for step in range(e_count):
                with m.Case(step):
                    digit, sign = order[step + 1][1:] if step + 1 < e_count else (0, 1)
                    m.d.comb += [address.eq(order[step][0]), next_digit.eq(digit), next_neg.eq(sign < 0)]

        # Token column token+k is written while it is one of the ``valid`` columns being built.
        column_en = Signal(t_count)
        if k_count == 1:
            m.d.comb += column_en.eq(1 << token)
        else:
            for t in range(t_count):
                m.d.comb += column_en[t].eq(Cat(*((token + k == t) & (valid > k) for k in range(k_count))).any())

        for p in range(p_count):
            entry_values = []
            for k in range(k_count):
                # The running entry: 0 at the first step, then +-x_i per step (a subtraction as
                # + ~x + 1: the XOR maps into the adder's LUTs).
                entry_value = Signal(signed(w), name=f"entry_value{p}" if k_count == 1 else f"entry_value{p}_{k}")
                step_x = Array(x[p][k][i] for i in range(g))[next_digit]
                with m.If(start):
                    m.d.sync += entry_value.eq(0)
                with m.Elif(building):
                    m.d.sync += entry_value.eq(entry_value + (step_x ^ next_neg.replicate(8).as_signed()) + next_neg)
                entry_values.append(entry_value)
            # Column t takes the value of the slot t falls in: (t - token) mod K, K dividing
            # the token positions a build starts at (0, K, 2K, ...).
            column_data = [entry_values[t % k_count] for t in range(t_count)]

            for bank in range(2):
                mem = memory.Memory(shape=unsigned(t_count * w), depth=e_count, init=[])
                m.submodules[f"table{p}_{bank}"] = mem
                wp = mem.write_port(granularity=w)
                rp = mem.read_port(domain="comb")
                # One address per bank: a bank is either being built or being read, never both,
                # so the LUTRAM can be single-ported.
                writing = building & (wbank == bank)
                addr = Signal(range(e_count), name=f"addr{p}_{bank}")
                m.d.comb += [
                    addr.eq(Mux(writing, address, self.rd_mag[p])),
                    wp.addr.eq(addr),
                    rp.addr.eq(addr),
                    wp.data.eq(Cat(*column_data)),
                ]
                with m.If(writing):
                    m.d.comb += wp.en.eq(column_en)
                if bank == 0:
                    bank0_data = rp.data
                else:
                    m.d.comb += self.rd_data[p].eq(Mux(self.rd_bank, rp.data, bank0_data))
        return m


class TlmmEngine(wiring.Component):
    """Lookup-accumulate lanes with their tables: int32 dot products of ternary rows with up to
    T tokens' int8 activations.

    A command (``cmd``) asks for ``rows`` outputs over ``blocks`` lane blocks. Codes arrive on
    ``codes`` as lane words in (block, row) order (``contract.formats.tlmm_weight_stream``); activation
    groups on ``act`` as :class:`TlmmTables` describes, one table set per block. For every lane
    word the P lanes look up their entries in the current block's tables and an adder tree per
    token sums the P values signed by the codes (a negative lane's entry as its one's
    complement, the count of negative lanes added to the tree's sum); the sum is added to the
    row's accumulator (zero in block 0; ``bits(max_blocks P G 128) + 1`` bits wide, results
    sign-extended to ACC_BITS). During the last block each row leaves on ``o`` with the
    command's ``d_x``/``w_mult``/``tokens`` passed along and ``last`` on the command's final row.
    Results for tokens beyond those the act stream supplied are meaningless.

    Ports: ``cmd`` (In stream, command_layout), ``act`` (In stream, act_layout), ``codes`` (In
    stream, ``tlmm_decode.codes_layout``), ``o`` (Out stream, result_layout).

    Latency from a lane word to its result: 4 + ceil(log2(P) / tree_levels_per_stage) cycles
    (:attr:`latency`).

    Throughput: one lane word (P x T lookups) per cycle when tables are ready and ``o`` is not
    stalled. Precompute of block b+1 overlaps the rows of block b (ping-pong banks): it takes
    about ceil(T/K) max(K P, E) cycles (:class:`TlmmTables`), so blocks of fewer rows than that
    wait for their tables (at the kv260 settings 512 cycles against down_proj's 630-row tiles).

    Cost: at the KV260 default (G 5, P 64, T 8, 4096 rows, 16 blocks, K 2) 41.7 K LUT-eq (22.7 K
    of them the LUTRAM tables), 21.6 K FF, 19 BRAM36 (the accumulators), no DSP (Yosys
    ``synth_xilinx``). Before the session of #14's first changes: 49.6 K, 15.6 K FF, 29 BRAM36
    (a negation per entry, 32-bit accumulators, one column per build, G-term build adders).

    Parameters (keyword-only): ``group`` G, ``lanes`` P, ``tokens`` T, ``max_rows``,
    ``max_blocks``, ``tree_levels_per_stage`` (adder-tree levels between pipeline registers),
    ``build_tokens`` K (token columns the tables build at once; default min(2, T)).
    """

    def __init__(self, *, group: int, lanes: int, tokens: int, max_rows: int, max_blocks: int,
                 tree_levels_per_stage: int = 2, build_tokens: int | None = None):
        _check_params(group, lanes, tokens)
        build_tokens = min(2, tokens) if build_tokens is None else build_tokens
        for name, value in (("max_rows", max_rows), ("max_blocks", max_blocks),
                            ("tree_levels_per_stage", tree_levels_per_stage)):
            check_positive_int(name, value)
        self.group, self.lanes, self.tokens = group, lanes, tokens
        self.max_rows, self.max_blocks = max_rows, max_blocks
        self.tree_levels_per_stage = tree_levels_per_stage
        _check_build_tokens(build_tokens, tokens)
        self.build_tokens = build_tokens
        super().__init__({
            "cmd": In(stream.Signature(command_layout(tokens, max_blocks, max_rows))),
            "act": In(stream.Signature(act_layout(group))),
            "codes": In(stream.Signature(codes_layout(group, lanes))),
            "o": Out(stream.Signature(result_layout(tokens))),
        })

    @property
    def acc_bits(self) -> int:
        """Width of the accumulators: as wide as the largest sum needs (max_blocks x P x G int8
        values of magnitude <= 128), at most ACC_BITS; results leave sign-extended to ACC_BITS."""
        return min((self.max_blocks * self.lanes * self.group * 128).bit_length() + 1, ACC_BITS)

    @property
    def latency(self) -> int:
        levels = (self.lanes - 1).bit_length()
        return 4 + -(-levels // self.tree_levels_per_stage)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tables = tables = TlmmTables(group=self.group, lanes=self.lanes, tokens=self.tokens,
                                                  build_tokens=self.build_tokens)
        wiring.connect(m, wiring.flipped(self.act), tables.act)

        # Scales travel beside the pipeline in a FIFO: pushed when a command starts, popped with
        # its last output row. Commands are accepted only while the FIFO has room.
        meta_layout = data.StructLayout({"w_mult": unsigned(32), "d_x": data.ArrayLayout(unsigned(32), self.tokens),
                                         "tokens": unsigned(self.tokens.bit_length())})
        m.submodules.meta = meta = fifo.SyncFIFOBuffered(width=meta_layout.size, depth=4)

        # Global pipeline advance: everything moves unless the output register holds a beat
        # that is not being taken.
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        seq = self._sequence(m, meta, tables, advance)
        s2_vals, s2 = self._read_tables(m, seq, tables, advance)
        sums, ctrl = self._adder_trees(m, s2_vals, s2, advance)
        sa, new_acc = self._accumulate(m, sums, ctrl, advance)
        self._output(m, sa, new_acc, meta, meta_layout, advance)
        return m

    def _sequence(self, m, meta, tables, advance) -> SimpleNamespace:
        """Command sequencing: take a command (its scales into ``meta``), then walk its (block,
        row) pairs, one per lane word taken from ``codes`` while the block's tables are ready and
        the pipeline advances. Returns the lane word handshake (``take``) and where it falls."""
        running = Signal()
        blocks = Signal.like(self.cmd.payload.blocks)
        rows = Signal.like(self.cmd.payload.rows)
        block = Signal.like(blocks)
        row = Signal.like(rows)
        rbank = Signal()
        m.d.comb += [
            self.cmd.ready.eq(~running & meta.w_rdy),
            meta.w_data.eq(Cat(self.cmd.payload.w_mult, self.cmd.payload.d_x, self.cmd.payload.tokens)),
            meta.w_en.eq(self.cmd.valid & self.cmd.ready),
        ]
        with m.If(self.cmd.valid & self.cmd.ready):
            # A command with no rows or blocks produces nothing; it is dropped whole (and its
            # scales with it: the FIFO write is cancelled).
            with m.If((self.cmd.payload.rows == 0) | (self.cmd.payload.blocks == 0)):
                m.d.comb += meta.w_en.eq(0)
            with m.Else():
                m.d.sync += [running.eq(1), blocks.eq(self.cmd.payload.blocks), rows.eq(self.cmd.payload.rows),
                             block.eq(0), row.eq(0)]

        tables_ready = Mux(rbank, tables.full[1], tables.full[0])
        take = Signal()
        m.d.comb += [
            self.codes.ready.eq(running & tables_ready & advance),
            take.eq(self.codes.valid & self.codes.ready),
        ]
        last_row = row == rows - 1
        last_block = block == blocks - 1
        with m.If(take):
            with m.If(last_row):
                m.d.sync += [row.eq(0), rbank.eq(~rbank)]
                with m.If(last_block):
                    m.d.sync += running.eq(0)
                with m.Else():
                    m.d.sync += block.eq(block + 1)
            with m.Else():
                m.d.sync += row.eq(row + 1)
        return SimpleNamespace(take=take, bank=rbank, row=row, first=block == 0, last_block=last_block,
                               last_row=last_row)

    def _read_tables(self, m, seq, tables, advance):
        """Table read, two stages: stage 1 registers the lane word taken and addresses the
        tables (releasing a bank once its last row's entries are read); stage 2 registers the
        entries, the lanes' signs and the number of negative lanes. Returns the entries per
        (lane, token) and stage 2's control."""
        p_count, t_count = self.lanes, self.tokens
        mag_bits = code_bits(self.group) - 1
        row_shape = unsigned(seq.row.shape().width)

        # -- stage 1: the lane word, registered; table read addresses
        s1 = Signal(data.StructLayout({
            "valid": 1, "mag": data.ArrayLayout(mag_bits, p_count), "neg": p_count, "bank": 1,
            "row": row_shape, "first": 1, "last_block": 1, "last_row": 1, "release": 1,
        }))
        with m.If(advance):
            m.d.sync += s1.valid.eq(seq.take)
            with m.If(seq.take):
                for p in range(p_count):
                    code = self.codes.payload[p]
                    m.d.sync += [s1.mag[p].eq(code[:mag_bits]), s1.neg[p].eq(code[mag_bits])]
                m.d.sync += [s1.bank.eq(seq.bank), s1.row.eq(seq.row), s1.first.eq(seq.first),
                             s1.last_block.eq(seq.last_block), s1.last_row.eq(seq.last_block & seq.last_row),
                             s1.release.eq(seq.last_row)]
        for p in range(p_count):
            m.d.comb += tables.rd_mag[p].eq(s1.mag[p])
        m.d.comb += tables.rd_bank.eq(s1.bank)
        # The bank is free once its last row's entries have been read (they move to stage 2).
        with m.If(advance & s1.valid & s1.release):
            m.d.comb += tables.release.eq(Mux(s1.bank, 0b10, 0b01))

        # -- stage 2: the entries per (lane, token), their lanes' signs, and how many lanes
        # negate. A negated entry enters the adder tree as its one's complement (~e = -e - 1, an
        # XOR that maps into the first adder level's LUTs) and the tree's sum is corrected by
        # adding the number of negated lanes once per token: the same sums as negating every
        # entry (P x T negations, each a carry chain) at the cost of one popcount per lane word.
        w = entry_bits(self.group)
        s2_vals = [[Signal(signed(w), name=f"s2_e{p}_{t}") for t in range(t_count)] for p in range(p_count)]
        s2 = Signal(data.StructLayout({"valid": 1, "row": row_shape, "first": 1,
                                       "last_block": 1, "last_row": 1, "neg": p_count,
                                       "negated": range(p_count + 1)}))
        with m.If(advance):
            m.d.sync += [s2.valid.eq(s1.valid), s2.row.eq(s1.row), s2.first.eq(s1.first),
                         s2.last_block.eq(s1.last_block), s2.last_row.eq(s1.last_row),
                         s2.neg.eq(s1.neg), s2.negated.eq(_balanced_sum([s1.neg[p] for p in range(p_count)]))]
            for p in range(p_count):
                for t in range(t_count):
                    m.d.sync += s2_vals[p][t].eq(tables.rd_data[p][t])
        return s2_vals, s2

    def _adder_trees(self, m, s2_vals, s2, advance):
        """One adder tree per token over the P lane values, a register every
        ``tree_levels_per_stage`` levels (and after the last), the control delayed alongside.
        Returns the per-token sums and their control."""
        vw = entry_bits(self.group) + 1   # ~e of the most negative entry needs one more bit
        level_vals = [[s2_vals[p][t] ^ s2.neg[p].replicate(vw).as_signed() for p in range(self.lanes)]
                      for t in range(self.tokens)]
        # the control the tree stages carry: s2's but the signs, used up at the leaves
        ctrl = Signal(data.StructLayout({name: field.shape for name, field in s2.shape()
                                         if name != "neg"}), name="tree0_ctrl")
        m.d.comb += [getattr(ctrl, name).eq(getattr(s2, name)) for name, _ in ctrl.shape()]
        depth = 0
        stage_index = 0
        while len(level_vals[0]) > 1:
            nxt = []
            for vals in level_vals:
                pairs = [vals[i] + vals[i + 1] for i in range(0, len(vals) - 1, 2)]
                if len(vals) % 2:
                    pairs.append(vals[-1])
                nxt.append(pairs)
            level_vals = nxt
            depth += 1
            if depth % self.tree_levels_per_stage == 0 or len(level_vals[0]) == 1:
                stage_index += 1
                regs = []
                for t, vals in enumerate(level_vals):
                    row_regs = []
                    for i, v in enumerate(vals):
                        r = Signal(signed(vw + depth), name=f"tree{stage_index}_{t}_{i}")
                        with m.If(advance):
                            m.d.sync += r.eq(v)
                        row_regs.append(r)
                    regs.append(row_regs)
                level_vals = regs
                new_ctrl = Signal.like(ctrl, name=f"tree{stage_index}_ctrl")
                with m.If(advance):
                    m.d.sync += new_ctrl.eq(ctrl)
                ctrl = new_ctrl
        return [vals[0] for vals in level_vals], ctrl

    def _accumulate(self, m, sums, ctrl, advance):
        """Accumulators: read the row's partial sum (transparent to the write of the previous
        lane word, which may be the same row when rows == 1), add (to zero in block 0), write
        back. Returns the registered control and the new sums."""
        t_count = self.tokens
        acc_layout = data.ArrayLayout(signed(self.acc_bits), t_count)
        acc_mem = memory.Memory(shape=acc_layout, depth=self.max_rows, init=[])
        m.submodules.acc = acc_mem
        acc_wp = acc_mem.write_port()
        acc_rp = acc_mem.read_port(domain="sync", transparent_for=(acc_wp,))
        m.d.comb += [acc_rp.addr.eq(ctrl.row), acc_rp.en.eq(advance)]

        sa = Signal.like(ctrl, name="sa_ctrl")
        sa_sums = [Signal(acc_layout.elem_shape, name=f"sa_sum{t}") for t in range(t_count)]
        with m.If(advance):
            m.d.sync += sa.eq(ctrl)
            for t in range(t_count):
                m.d.sync += sa_sums[t].eq(sums[t] + ctrl.negated)   # the one's complements' correction
        new_acc = Signal(acc_layout)
        for t in range(t_count):
            m.d.comb += new_acc[t].eq(Mux(sa.first, 0, acc_rp.data[t]) + sa_sums[t])
        m.d.comb += [acc_wp.addr.eq(sa.row), acc_wp.data.eq(new_acc),
                     acc_wp.en.eq(advance & sa.valid)]
        return sa, new_acc

    def _output(self, m, sa, new_acc, meta, meta_layout, advance):
        """Output register: a row's sums in the last block, with the command's scales (popped
        from ``meta`` with the command's last row)."""
        meta_data = Signal(meta_layout)
        m.d.comb += meta_data.eq(meta.r_data)
        with m.If(advance):
            m.d.sync += self.o.valid.eq(sa.valid & sa.last_block)
            with m.If(sa.valid & sa.last_block):
                m.d.sync += [*(self.o.payload.acc[t].eq(new_acc[t]) for t in range(self.tokens)),   # sign-extended
                             self.o.payload.last.eq(sa.last_row),
                             self.o.payload.w_mult.eq(meta_data.w_mult), self.o.payload.d_x.eq(meta_data.d_x),
                             self.o.payload.tokens.eq(meta_data.tokens)]
                with m.If(sa.last_row):
                    m.d.comb += meta.r_en.eq(1)
