"""Analytic weight tiling for the URAM weight buffer (docs/architecture.md, section 4).

A projection's weight stream is (block, row, lane) ordered; a tile is a range of rows across
all blocks. The buffer bank holds ``entries_per_bank`` lane words, so at most
``floor(entries_per_bank / B)`` rows fit; ``tiles = ceil(N / that)`` and the rows are spread
evenly, ``tile_rows = ceil(N / tiles)`` (a short last tile would leave the DDR idle while the
long one before it drains: bench/results/weight_buffer.json). The DDR reads of a tile are, for
each port and each block, one run of ``tile_rows`` sub-words (fewer in the last tile).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, ModelConfig
from ..contract.formats import tlmm_groups
from ..contract.layouts import BufferGeometry


@dataclass(frozen=True)
class Tile:
    row0: int
    rows: int
    blocks: int

    @property
    def entries(self) -> int:
        return self.rows * self.blocks


@dataclass(frozen=True)
class ProjectionTiling:
    name: str
    rows: int             # N
    inputs: int           # K
    blocks: int           # B
    tile_rows: int        # N_t
    tiles: tuple[Tile, ...]
    subword_bytes: int

    def port_runs(self, tile: Tile) -> list[tuple[int, int]]:
        """(byte offset within a port's sub-stream, bytes) of each DDR run of ``tile``."""
        return [((b * self.rows + tile.row0) * self.subword_bytes, tile.rows * self.subword_bytes)
                for b in range(self.blocks)]

    @property
    def bytes_per_port(self) -> int:
        return self.blocks * self.rows * self.subword_bytes


def tile_projection(name: str, rows: int, inputs: int, geometry: BufferGeometry, row_unit: int = 1
                    ) -> ProjectionTiling:
    """The tiling of one projection. ``row_unit``: tiles (all but the last) are whole multiples
    of it (the MATMUL path's transpose blocks and beats: ``max(ew_lanes, beat floats)``)."""
    blocks = -(-tlmm_groups(inputs, geometry.group) // geometry.lanes)
    fit = min(rows, geometry.entries_per_bank // blocks)
    if fit < rows:
        fit -= fit % row_unit
    if fit < 1:
        raise ConfigError(f"{name}: {blocks} lane blocks do not fit one bank of "
                          f"{geometry.entries_per_bank} lane words (in tiles of {row_unit} rows)")
    count = -(-rows // fit)
    tile_rows = -(-rows // count)
    if count > 1:
        tile_rows = min(fit, -(-tile_rows // row_unit) * row_unit)
        count = -(-rows // tile_rows)
    tiles = tuple(Tile(r0, min(tile_rows, rows - r0), blocks) for r0 in range(0, rows, tile_rows))
    return ProjectionTiling(name, rows, inputs, blocks, tile_rows, tiles, geometry.subword_bytes)


def tile_model(model: ModelConfig, geometry: BufferGeometry, row_unit: int = 1) -> dict[str, ProjectionTiling]:
    return {name: tile_projection(name, n, k, geometry, row_unit) for name, (n, k) in model.projections().items()}


@dataclass(frozen=True)
class MatmulRates:
    """Units of the MATMUL path that need only the TLMM's output rate: a result row of T
    tokens comes at most once per B cycles (B blocks, one lane word each), B least for the
    projection with the fewest inputs, so T / B elements per cycle at most.

    ``dequant_lanes``: tokens dequantised per cycle, the least divisor of T with a row in at
    most B cycles; ``add_lanes``: residual adders, the least power of two dividing the
    element-wise lanes L with at least T / B elements per cycle."""
    min_blocks: int
    dequant_lanes: int
    add_lanes: int

    @classmethod
    def of(cls, model: ModelConfig, group: int, tlmm_lanes: int, tokens: int, ew_lanes: int) -> "MatmulRates":
        b = min(-(-tlmm_groups(inputs, group) // tlmm_lanes) for _, inputs in model.projections().values())
        dequant = min(d for d in range(1, tokens + 1) if tokens % d == 0 and d * b >= tokens)
        add = min(a for a in (1 << k for k in range(ew_lanes.bit_length())) if ew_lanes % a == 0
                  and (a * b >= tokens or a == ew_lanes))
        return cls(b, dequant, add)


def kv_history_slots(hw) -> int:
    """History tile slots of ``TiledAttention``: three where the history streams over several
    ports (a decode step reads at the DDR's rate only if the next tile's request does not wait
    for the accumulate side to finish the tile two before: about 65 cycles per tile with two),
    else two; the int8 format's ``PrefillAttention`` has two."""
    return 3 if kv_history_ports(hw) > 1 else 2


def kv_history_ports(hw) -> int:
    """Read managers of the K/V history in the fp32 attention format (``TiledAttention``'s
    ``history_ports``, one per HP port: K rows in halves on the first half of the ports, V rows
    on the others): the most of 1, 2, 4, 8 the board's ``hp_ports`` hold. The int8 format's
    ``PrefillAttention`` reads its history through one port."""
    if hw.attn_format != "fp32":
        return 1
    ports = 1
    while ports * 2 <= hw.hp_ports:
        ports *= 2
    return ports
