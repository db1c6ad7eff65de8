"""Where a trial's steps run: the :class:`~.base.Environment` interface (base.py) and the
local implementations (local.py: ``bwrap`` and ``none``), the containers (container.py:
``podman`` and ``docker``), the registry by name (registry.py)."""

from .base import (
    Environment,
    EnvironmentFactory,
    EnvironmentUnavailable,
    StepCall,
    StepPaths,
    TrialPlace,
)
from .registry import Environments

__all__ = [
    "Environment",
    "EnvironmentFactory",
    "EnvironmentUnavailable",
    "Environments",
    "StepCall",
    "StepPaths",
    "TrialPlace",
]
