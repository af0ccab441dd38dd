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
