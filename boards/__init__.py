"""tellme.boards: one file per supported board (``boards/<name>.py``), each an Amaranth
``XilinxPlatform`` with the facts the generator, the estimator, the Vivado build and the docs
read (:class:`~tellme.boards._zynqmp.ZynqMPPlatform`).

Adding a board is writing one file here that subclasses ``ZynqMPPlatform`` (README, "Adding a
board"): every module of this package whose name does not start with ``_`` is a board, listed
in the order of the platforms' ``rank`` (the default board first), then by name.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..config import ConfigError, HardwareConfig
from ._zynqmp import PL_RESOURCE_KEYS, ZynqMPPlatform

__all__ = ["BOARD_MODULES", "DEFAULT_BOARD", "SIMULATION_BOARD", "ZynqMPPlatform", "PL_RESOURCE_KEYS",
           "board_names", "board_class", "get_board", "board_of", "weight_ram_style"]

DEFAULT_BOARD = "kv260"
#: The ``board`` of hardware configurations made only for simulation (``sim-small``): no
#: device, URAM-style weight buffer.
SIMULATION_BOARD = "sim"


def _load(name: str) -> type[ZynqMPPlatform]:
    module = importlib.import_module(f"{__name__}.{name}")
    classes = [obj for obj in vars(module).values()
               if isinstance(obj, type) and issubclass(obj, ZynqMPPlatform) and obj is not ZynqMPPlatform]
    if len(classes) != 1 or classes[0].name != name:
        raise ConfigError(f"board: boards/{name}.py must define exactly one ZynqMPPlatform named {name!r}")
    return classes[0]


_CLASSES = {name: _load(name) for _, name, _ in pkgutil.iter_modules(__path__) if not name.startswith("_")}
#: The board names (= module names), in the order ``tellme info`` and the docs list them.
BOARD_MODULES = tuple(sorted(_CLASSES, key=lambda n: (_CLASSES[n].rank, n)))


def board_class(name: str) -> type[ZynqMPPlatform]:
    if name not in _CLASSES:
        raise ConfigError(f"board: unknown board {name!r}; known: {', '.join(BOARD_MODULES)}")
    return _CLASSES[name]


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
