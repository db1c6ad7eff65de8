"""How a step is isolated, named once: the ``sandbox:`` modes a user asks for (``auto``,
``bwrap``, ``none``) and what a trial ran in (``bwrap`` or ``none``). ``trial/sandbox.py``
decides which; everything else compares against these values, never against strings."""

from __future__ import annotations

from enum import Enum


class SandboxKind(str, Enum):
    """A sandbox mode (``auto`` is only ever requested: it resolves to one of the others)."""

    AUTO = "auto"
    BWRAP = "bwrap"
    NONE = "none"

    def __str__(self) -> str:
        return self.value


#: The ``sandbox:`` / ``--eval-sandbox`` modes, in the order the docs list them.
SANDBOX_MODES: tuple[str, ...] = tuple(kind.value for kind in SandboxKind)
