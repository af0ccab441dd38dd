"""The base class of tellme's own user-facing errors.

Every error the project raises on purpose to tell a user what is wrong (a bad configuration,
checkpoint, image, register map, a missing tool, a failed synthesis, an accelerator fault, a bad
command line) subclasses :class:`TellmeError`, besides the built-in class it always had
(``ConfigError`` is still a ``ValueError``, ``YosysError`` a ``RuntimeError``, ...). The command
line reports a ``TellmeError`` as one ``tellme: error: ...`` line; any other exception is a bug.

This module imports nothing, so every layer (the contract and the tools included) may use it.
"""

from __future__ import annotations

__all__ = ["TellmeError"]


class TellmeError(Exception):
    """A problem with the user's input or environment, explained by the message."""
