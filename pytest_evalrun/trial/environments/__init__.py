"""Where a trial's steps run: the :class:`~.base.Environment` interface (base.py) and the
local implementations (local.py: ``bwrap`` and ``none``), the registry by name
(registry.py)."""

from .base import (
    AUTO,
    Environment,
    EnvironmentFactory,
    EnvironmentUnavailable,
    StepCall,
    StepPaths,
    TrialPlace,
)
from .registry import Environments

__all__ = [
    "AUTO",
    "Environment",
    "EnvironmentFactory",
    "EnvironmentUnavailable",
    "Environments",
    "StepCall",
    "StepPaths",
    "TrialPlace",
]
