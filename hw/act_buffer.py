"""The act buffer: int8 activations x_q and scales d_x of a prefill chunk, replayed to the TLMM
(docs/architecture.md sections 3.1, 3.2, 4 and 9, "Act buffer")."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ..config import check_positive_int
from .pipeline import q8_vec
from .tlmm import act_layout

__all__ = ["ActBuffer", "write_command_layout", "read_command_layout", "scales_layout"]


def write_command_layout(max_inputs: int, max_tokens: int) -> data.StructLayout:
    """Start of a NORM_QUANT step: ``inputs`` K (elements per token), ``tokens`` n (tokens
    that follow, in order t = 0 .. n-1)."""
    return data.StructLayout({"inputs": unsigned(max_inputs.bit_length()),
                              "tokens": unsigned(max_tokens.bit_length())})


def read_command_layout(max_blocks: int, max_tokens: int, max_tiles: int) -> data.StructLayout:
    """One projection's replay: ``blocks`` B lane blocks (the TLMM command's), ``tokens`` n
    (tokens 0 .. n-1, in passes of T), ``tiles`` (the replay repeats per tile)."""
    return data.StructLayout({"blocks": unsigned(max_blocks.bit_length()),
                              "tokens": unsigned(max_tokens.bit_length()),
                              "tiles": unsigned(max_tiles.bit_length())})


def scales_layout(tokens: int) -> data.StructLayout:
    """One (tile, pass): ``d_x`` of the pass's T token slots (0 past n), ``tokens`` the pass's
    real token count (1..T), ``last`` on the read command's final (tile, pass)."""
    return data.StructLayout({"d_x": data.ArrayLayout(unsigned(32), tokens),
                              "tokens": unsigned(tokens.bit_length()),
                              "last": unsigned(1)})


class ActBuffer(wiring.Component):
    """Holds x_q (int8) and d_x (binary32) of up to ``max_tokens`` tokens and replays them to
    the TLMM engine, once per tile and token pass, in :class:`~tellme.hw.tlmm.TlmmTables` order.

    **Write side** (a NORM_QUANT step, from :class:`~tellme.hw.norm_quant.NormQuant`). A
    ``wr_cmd`` beat ``{inputs K, tokens n}`` starts a step; then tokens t = 0 .. n-1 arrive in
    order: per token ceil(K/L) beats on ``q`` (``last`` on the final one; lanes of a partial
    final beat past K are ignored, whatever they hold) and one d_x on ``scale`` (the two streams
    are independent: a token's scale may come before, during or after its beats). The bytes are
    regrouped into G-groups: memory word t * Kmax_g + g holds inputs gG .. gG+G-1 of token t
    (Kmax_g = ceil(max_inputs / G)), the last group zero-filled past K. ``q`` and ``scale`` are
    closed (ready low) once n tokens have arrived on each; ``wr_cmd`` is taken only when the
    previous step's n tokens are all in and no read command is running (so a step replaces the
    previous step's data only after its replays, and the next step's beats wait for their
    command). K must be the length of the vectors and at most ``max_inputs``, n at most
    ``max_tokens`` (neither is checked). ``written`` counts the step's tokens with both x_q and
    d_x stored.

    **Read side** (a MATMUL step). A ``rd_cmd`` beat ``{blocks B, tokens n, tiles}``; for each
    tile, for each pass of tokens pT .. min(pT+T, n)-1 (p = 0, 1, ...), the unit emits

    * on ``scales`` one beat ``{d_x[T], tokens, last}``: the pass's scales (slots past n are 0),
      its token count, ``last`` on the command's final beat; the sequencer joins it with the
      tile's ``rows`` and ``w_mult`` into the TLMM command (``command_layout``'s ``d_x``);
    * on ``act`` (:func:`~tellme.hw.tlmm.act_layout`, to ``TlmmEngine.act``), for each block b,
      for each token of the pass, for each TLMM lane q: group bP + q of that token, a zero group
      for groups at or past ceil(K/G) (K of the last write command), ``last`` on the block's
      final group.

    A group (a scale) of token t is read only once token t's x_q (d_x) has been stored, so a
    read command may follow its write command at once and the replay runs behind the writes.
    Commands are taken in the order issued: the sequencer issues a command after the previous
    one (of either kind) has been taken. A read command with ``blocks``, ``tokens`` or ``tiles``
    0 emits nothing. n must not exceed the tokens written (else the replay waits for ever).

    Timing:

    * read latency: the first group is offered on ``act`` two cycles after the edge at which
      ``rd_cmd`` moves (when its token is stored); the first ``scales`` beat T + 1 cycles after;
    * read throughput: one group per cycle on ``act`` while it is not stalled, across blocks,
      tokens, passes and tiles. The next ``rd_cmd`` is taken in the cycle after the last group's
      read was issued (once the last ``scales`` beat has moved too), so back-to-back read
      commands leave one idle cycle on ``act``. ``scales`` needs T + 1 cycles per beat
      (gathering the T scales one by one), far less than a pass's groups take (B P n_pass);
    * write throughput: one memory word per cycle, so ``q`` takes one beat per cycle when
      L <= G and on average G/L beats per cycle when L > G (5/8 for L=8, G=5); after a token's
      final beat, 1 .. ceil((G-1+L)/G) cycles flush its last group(s) (``q`` waits meanwhile);
    * write to read: a token's groups may be read from the cycle after its final group is
      written; ``written`` counts it from then (once its scale is in too).

    Stream rules: ``act.valid``, ``scales.valid`` and ``scales.payload`` come from registers;
    ``act.payload`` from the memory's read register (a zero group by a registered flag), held
    while stalled. ``q.ready``, ``scale.ready``, ``wr_cmd.ready`` and ``rd_cmd.ready`` come from
    registers only. ``act.ready`` reaches the read address counters and the memory read enable
    combinationally (put a :class:`~tellme.hw.stream_buffer.StreamBuffer` in front of the TLMM
    if that path is too long).

    Cost: one x_q memory of max_tokens * ceil(max_inputs/G) words of 8G bits (BRAM or URAM, one
    write port, one synchronous read port: 104,960 x 40 bits = 26 URAM for C = 128, K = 4096,
    G = 5), a d_x memory of max_tokens x 32 bits (LUTRAM, asynchronous read), the G-1+L byte
    regrouping register with a G:1 byte multiplexer per byte, a T x 32-bit scale register, and
    address counters.

    Parameters (keyword-only)
    -------------------------
    group : int
        G, int8 activations per memory word and TLMM act group (2..5).
    lanes : int
        L, int8 values per ``q`` beat (NormQuant's lanes).
    tlmm_lanes : int
        P, the TLMM's lanes (groups per block).
    tokens : int
        T, tokens per TLMM pass.
    max_tokens : int
        C, tokens per write command at most (the prefill chunk).
    max_inputs : int
        K at most (the widest projection input).
    max_tiles : int
        Tiles per read command at most (sets the field's width; default 255).

    Attributes
    ----------
    wr_cmd : ``In(stream.Signature(write_command_layout(max_inputs, max_tokens)))``
    q : ``In(stream.Signature(q8_vec(L)))``
    scale : ``In(stream.Signature(unsigned(32)))``
    rd_cmd : ``In(stream.Signature(read_command_layout(max_blocks, max_tokens, max_tiles)))``
        ``max_blocks`` = ceil(ceil(max_inputs/G)/P).
    act : ``Out(stream.Signature(act_layout(G)))``
    scales : ``Out(stream.Signature(scales_layout(T)))``
    written : ``Out(range(max_tokens + 1))``
    """

    #: Cycles from the edge at which ``rd_cmd`` moves to the first group offered on ``act``.
    read_latency = 2

    def __init__(self, *, group: int, lanes: int, tlmm_lanes: int, tokens: int, max_tokens: int,
                 max_inputs: int, max_tiles: int = 255):
        try:
            if group not in (2, 3, 4, 5) or isinstance(group, bool):
                raise ValueError(f"group must be 2, 3, 4 or 5, got {group!r}")
            for name, value in (("lanes", lanes), ("tlmm_lanes", tlmm_lanes), ("tokens", tokens),
                                ("max_tokens", max_tokens), ("max_inputs", max_inputs),
                                ("max_tiles", max_tiles)):
                check_positive_int(name, value)
        except ValueError:
            # The object exists already; keep Amaranth from also warning that it was never elaborated.
            self._MustUse__silence = True
            raise
        self.group, self.lanes, self.tlmm_lanes, self.tokens = group, lanes, tlmm_lanes, tokens
        self.max_tokens, self.max_inputs, self.max_tiles = max_tokens, max_inputs, max_tiles
        #: Memory words per token: ceil(max_inputs / G).
        self.max_groups = -(-max_inputs // group)
        #: Lane blocks of the widest input: ceil(max_groups / P).
        self.max_blocks = -(-self.max_groups // tlmm_lanes)
        #: Words of the x_q memory.
        self.depth = max_tokens * self.max_groups
        super().__init__({
            "wr_cmd": In(stream.Signature(write_command_layout(max_inputs, max_tokens))),
            "q": In(stream.Signature(q8_vec(lanes))),
            "scale": In(stream.Signature(unsigned(32))),
            "rd_cmd": In(stream.Signature(read_command_layout(self.max_blocks, max_tokens, max_tiles))),
            "act": Out(stream.Signature(act_layout(group))),
            "scales": Out(stream.Signature(scales_layout(tokens))),
            "written": Out(range(max_tokens + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        G, L, P, T = self.group, self.lanes, self.tlmm_lanes, self.tokens
        C, MG = self.max_tokens, self.max_groups

        m.submodules.xq = xq = memory.Memory(shape=unsigned(8 * G), depth=self.depth, init=[])
        xq_w = xq.write_port()
        xq_r = xq.read_port(domain="sync")
        m.submodules.dx = dx = memory.Memory(shape=unsigned(32), depth=C, init=[])
        dx_w = dx.write_port()
        dx_r = dx.read_port(domain="comb")

        addr_width = max(1, (self.depth - 1).bit_length())
        token_range = range(C + 1)

        # ---- shared state -----------------------------------------------------------------
        k_in = Signal(unsigned(self.max_inputs.bit_length()))   # K of the last write command
        n_wr = Signal(token_range)                             # n of the last write command
        q_tokens = Signal(token_range)                         # tokens whose x_q is stored
        s_tokens = Signal(token_range)                         # tokens whose d_x is stored
        act_busy = Signal()
        sc_busy = Signal()
        m.d.comb += self.written.eq(Mux(q_tokens < s_tokens, q_tokens, s_tokens))

        # ---- write side: commands ---------------------------------------------------------
        m.d.comb += self.wr_cmd.ready.eq(~act_busy & ~sc_busy & (q_tokens == n_wr) & (s_tokens == n_wr))
        take_wr = self.wr_cmd.valid & self.wr_cmd.ready

        # ---- write side: scales -----------------------------------------------------------
        m.d.comb += [
            self.scale.ready.eq(s_tokens != n_wr),
            dx_w.addr.eq(s_tokens),
            dx_w.data.eq(self.scale.payload),
            dx_w.en.eq(self.scale.valid & self.scale.ready),
        ]
        with m.If(self.scale.valid & self.scale.ready):
            m.d.sync += s_tokens.eq(s_tokens + 1)

        # ---- write side: regrouping L-byte beats into G-byte words ------------------------
        # `pend` holds `cnt` bytes not yet written (pend[0] oldest). Every cycle with cnt >= G
        # (or a token's tail while flushing) writes pend[0..G-1] as one word and shifts it out;
        # a q beat's new bytes are appended behind what remains. A beat is taken only if that
        # leaves room: cnt - G * write + L <= G - 1 + L, i.e. cnt <= 2G - 1.
        cap = G - 1 + L
        pend = [Signal(8, name=f"pend{j}") for j in range(cap)]
        cnt = Signal(range(cap + 1))
        remain = Signal.like(k_in)                 # bytes of K the current token still owes
        flushing = Signal()                        # the token's final beat is in; write its tail
        waddr = Signal(addr_width)
        tbase = Signal(addr_width)                 # word address of the current token

        full = cnt >= G
        write = Signal()
        base = Signal(range(cap + 1))              # bytes kept after this cycle's write
        m.d.comb += [
            write.eq(full | (flushing & (cnt != 0))),
            base.eq(Mux(full, cnt - G, Mux(flushing, 0, cnt))),
        ]
        room = Const(1) if cap <= 2 * G - 1 else (cnt <= 2 * G - 1)
        m.d.comb += self.q.ready.eq((q_tokens != n_wr) & ~flushing & room)
        take_q = self.q.valid & self.q.ready
        nv = Signal(range(L + 1))                  # bytes of this beat that are inputs < K
        m.d.comb += nv.eq(Mux(remain < L, remain, L))

        m.d.comb += [
            xq_w.addr.eq(waddr),
            xq_w.data.eq(Cat(*[Mux(cnt > j, pend[j], 0) for j in range(G)])),
            xq_w.en.eq(write),
        ]
        beat = [self.q.payload.q[i] for i in range(L)]
        for j in range(cap):
            kept = Mux(write, pend[j + G] if j + G < cap else Const(0, 8), pend[j])
            appended = Signal(8, name=f"append{j}")
            with m.Switch(base):
                for b in range(G):
                    if 0 <= j - b < L:
                        with m.Case(b):
                            m.d.comb += appended.eq(beat[j - b])
            m.d.sync += pend[j].eq(Mux(j < base, kept, appended))

        token_done = flushing & (cnt <= G)
        with m.If(take_q):
            m.d.sync += remain.eq(remain - nv)
            with m.If(self.q.payload.last):
                m.d.sync += flushing.eq(1)
        m.d.sync += cnt.eq(base + Mux(take_q, nv, 0))
        with m.If(token_done):
            m.d.sync += [flushing.eq(0), cnt.eq(0), q_tokens.eq(q_tokens + 1), remain.eq(k_in),
                         tbase.eq(tbase + MG), waddr.eq(tbase + MG)]
        with m.Elif(write):
            m.d.sync += waddr.eq(waddr + 1)

        with m.If(take_wr):
            m.d.sync += [k_in.eq(self.wr_cmd.payload.inputs), n_wr.eq(self.wr_cmd.payload.tokens),
                         q_tokens.eq(0), s_tokens.eq(0), remain.eq(self.wr_cmd.payload.inputs),
                         tbase.eq(0), waddr.eq(0), cnt.eq(0), flushing.eq(0)]

        # ---- read side: commands ----------------------------------------------------------
        cmd = self.rd_cmd.payload
        m.d.comb += self.rd_cmd.ready.eq(~act_busy & ~sc_busy)
        take_rd = self.rd_cmd.valid & self.rd_cmd.ready
        nonempty = (cmd.blocks != 0) & (cmd.tokens != 0) & (cmd.tiles != 0)

        # ---- read side: act groups ----------------------------------------------------------
        blocks = Signal.like(cmd.blocks)
        n_rd = Signal.like(cmd.tokens)
        tiles = Signal.like(cmd.tiles)
        tile = Signal.like(cmd.tiles)
        t = Signal(range(C + T))                   # token of the next group
        i = Signal(range(T))                       # its index within the pass
        pt = Signal(range(C + T))                  # first token of the pass
        ta = Signal(addr_width + 1)                # t * MG
        pa = Signal(addr_width + 1)                # pt * MG
        b = Signal.like(cmd.blocks)
        gb = Signal(range(self.max_blocks * P + 1))          # b * P
        bx = Signal(range(self.max_blocks * P * G + 1))      # b * P * G
        lane = Signal(range(P))
        px = Signal(range(P * G + 1))              # lane * G

        advance = ~self.act.valid | self.act.ready
        issue = Signal()
        m.d.comb += issue.eq(act_busy & advance & (t < q_tokens))
        zero = bx + px >= k_in
        last_lane = lane == P - 1
        last_tok = (i == T - 1) | (t == n_rd - 1)
        m.d.comb += [
            xq_r.addr.eq(Mux(zero, 0, ta + gb + lane)),
            xq_r.en.eq(advance),
        ]
        s1_zero = Signal()
        with m.If(advance):
            m.d.sync += self.act.valid.eq(issue)
            with m.If(issue):
                m.d.sync += [s1_zero.eq(zero), self.act.payload.last.eq(last_lane & last_tok)]
        m.d.comb += self.act.payload.x.eq(Mux(s1_zero, 0, xq_r.data))

        with m.If(issue):
            with m.If(~last_lane):
                m.d.sync += [lane.eq(lane + 1), px.eq(px + G)]
            with m.Else():
                m.d.sync += [lane.eq(0), px.eq(0)]
                with m.If(~last_tok):
                    m.d.sync += [t.eq(t + 1), ta.eq(ta + MG), i.eq(i + 1)]
                with m.Else():
                    # The block's groups of this pass are out.
                    m.d.sync += [t.eq(pt), ta.eq(pa), i.eq(0)]
                    with m.If(b != blocks - 1):
                        m.d.sync += [b.eq(b + 1), gb.eq(gb + P), bx.eq(bx + P * G)]
                    with m.Else():
                        m.d.sync += [b.eq(0), gb.eq(0), bx.eq(0)]
                        with m.If(t != n_rd - 1):
                            # Next pass.
                            m.d.sync += [pt.eq(pt + T), pa.eq(pa + T * MG),
                                         t.eq(pt + T), ta.eq(pa + T * MG)]
                        with m.Else():
                            # Tile done: replay from token 0, or finish.
                            m.d.sync += [pt.eq(0), pa.eq(0), t.eq(0), ta.eq(0)]
                            with m.If(tile == tiles - 1):
                                m.d.sync += act_busy.eq(0)
                            with m.Else():
                                m.d.sync += tile.eq(tile + 1)

        with m.If(take_rd & nonempty):
            m.d.sync += [act_busy.eq(1), blocks.eq(cmd.blocks), n_rd.eq(cmd.tokens),
                         tiles.eq(cmd.tiles), tile.eq(0), t.eq(0), i.eq(0), pt.eq(0), ta.eq(0),
                         pa.eq(0), b.eq(0), gb.eq(0), bx.eq(0), lane.eq(0), px.eq(0)]

        # ---- read side: scales, one beat per (tile, pass) -----------------------------------
        sc_n = Signal.like(cmd.tokens)
        sc_tiles = Signal.like(cmd.tiles)
        sc_tile = Signal.like(cmd.tiles)
        sc_pt = Signal(range(C + T))
        sc_t = Signal(range(C + 2 * T))
        sc_j = Signal(range(T))
        sc_count = Signal(range(T + 1))
        gathering = Signal()
        d_reg = Signal(32 * T)
        past_n = sc_t >= sc_n
        have = past_n | (sc_t < s_tokens)
        m.d.comb += dx_r.addr.eq(Mux(past_n, 0, sc_t))
        value = Mux(past_n, 0, dx_r.data)
        pass_last = sc_pt + T >= sc_n
        with m.If(gathering & have):
            m.d.sync += [d_reg.eq(Cat(d_reg[32:], value) if T > 1 else value),
                         sc_t.eq(sc_t + 1), sc_j.eq(sc_j + 1)]
            with m.If(~past_n):
                m.d.sync += sc_count.eq(sc_count + 1)
            with m.If(sc_j == T - 1):
                m.d.sync += [gathering.eq(0), self.scales.valid.eq(1),
                             self.scales.payload.tokens.eq(sc_count + ~past_n),
                             self.scales.payload.last.eq(pass_last & (sc_tile == sc_tiles - 1))]
        m.d.comb += self.scales.payload.d_x.eq(d_reg)
        with m.If(self.scales.valid & self.scales.ready):
            m.d.sync += [self.scales.valid.eq(0), sc_j.eq(0), sc_count.eq(0)]
            with m.If(~pass_last):
                m.d.sync += [sc_pt.eq(sc_pt + T), sc_t.eq(sc_pt + T), gathering.eq(1)]
            with m.Elif(sc_tile != sc_tiles - 1):
                m.d.sync += [sc_pt.eq(0), sc_t.eq(0), sc_tile.eq(sc_tile + 1), gathering.eq(1)]
            with m.Else():
                m.d.sync += sc_busy.eq(0)

        with m.If(take_rd & nonempty):
            m.d.sync += [sc_busy.eq(1), gathering.eq(1), sc_n.eq(cmd.tokens), sc_tiles.eq(cmd.tiles),
                         sc_tile.eq(0), sc_pt.eq(0), sc_t.eq(0), sc_j.eq(0), sc_count.eq(0)]
        return m
