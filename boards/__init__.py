"""tellme.boards: one file per supported board (``boards/<name>.py``), each an Amaranth
``XilinxPlatform`` with the facts the generator, the estimator, the Vivado build and the docs
read (:class:`~tellme.boards._zynqmp.ZynqMPPlatform`).

Adding a board is writing one file here that subclasses ``ZynqMPPlatform`` and adding its
module name to :data:`BOARD_MODULES` (README, "Adding a board").
"""

from __future__ import annotations

import importlib

from ..config import ConfigError, HardwareConfig
from ._zynqmp import PL_RESOURCE_KEYS, ZynqMPPlatform

__all__ = ["BOARD_MODULES", "DEFAULT_BOARD", "SIMULATION_BOARD", "ZynqMPPlatform", "PL_RESOURCE_KEYS",
           "board_names", "board_class", "get_board", "board_of", "weight_ram_style"]

#: The board modules, in the order ``tellme info`` and the docs list them.
BOARD_MODULES = ("kv260", "kr260", "zcu104", "zcu102", "ultra96v2")
DEFAULT_BOARD = "kv260"
#: The ``board`` of hardware configurations made only for simulation (``sim-small``): no
#: device, URAM-style weight buffer.
SIMULATION_BOARD = "sim"


def board_class(name: str) -> type[ZynqMPPlatform]:
    if name not in BOARD_MODULES:
        raise ConfigError(f"board: unknown board {name!r}; known: {', '.join(BOARD_MODULES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    classes = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, ZynqMPPlatform) and obj is not ZynqMPPlatform]
    if len(classes) != 1 or classes[0].name != name:
        raise ConfigError(f"board: boards/{name}.py must define exactly one ZynqMPPlatform named {name!r}")
    return classes[0]


def board_names() -> tuple[str, ...]:
    return BOARD_MODULES


def get_board(name: str) -> ZynqMPPlatform:
    """A fresh platform instance of board ``name`` (a platform collects files and requests, so
    each build takes its own)."""
    return board_class(name)()


def board_of(hw: HardwareConfig) -> ZynqMPPlatform | None:
    """The board ``hw`` was made for, or ``None`` for the simulation-only board ``sim``."""
    return None if hw.board == SIMULATION_BOARD else get_board(hw.board)


def weight_ram_style(hw: HardwareConfig) -> str:
    """The weight buffer's RAM style on ``hw``'s board (URAM on ``sim``)."""
    board = board_of(hw)
    return "ultra" if board is None else board.weight_ram_style
