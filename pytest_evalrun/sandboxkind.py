"""How a trial is isolated, named once: the ``sandbox:`` modes a user asks for (``auto``,
``bwrap``, ``none``) and what a trial ran in (``bwrap`` or ``none``); the environments a trial
can run in (``--eval-environment``: those two, or a container runtime). ``trial/sandbox.py``
and ``trial/environments/`` decide which; everything else compares against these values,
never against strings. What is recorded or carried (an isolation record, an environment's
name, a trial's place) holds the member's ``.value``, a plain ``str``: execnet (xdist's
reports) and YAML serialize no enum."""

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


class EnvironmentKind(str, Enum):
    """Where a trial runs (``--eval-environment``; ``auto`` is only ever requested): on the
    host in the bubblewrap sandbox or unsandboxed, or in a container of a runtime."""

    AUTO = "auto"
    BWRAP = "bwrap"
    NONE = "none"
    PODMAN = "podman"
    DOCKER = "docker"

    def __str__(self) -> str:
        return self.value


#: The ``--eval-environment`` values, in the order the docs list them.
ENVIRONMENT_CHOICES: tuple[str, ...] = tuple(kind.value for kind in EnvironmentKind)
#: The environments that run a trial in a container: the runtimes' names.
CONTAINER_RUNTIMES: tuple[str, ...] = (EnvironmentKind.PODMAN.value, EnvironmentKind.DOCKER.value)
#: The environments on the host (no container).
LOCAL_ENVIRONMENTS: tuple[str, ...] = (EnvironmentKind.BWRAP.value, EnvironmentKind.NONE.value)
