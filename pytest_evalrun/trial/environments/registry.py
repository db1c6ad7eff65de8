"""The environments known in one process, by name: the built-in ``bwrap`` and ``none``
(:mod:`.local`) and what plugins add with the ``pytest_evalrun_environments`` hook."""

from __future__ import annotations

from collections.abc import Mapping

from ...sandboxkind import EnvironmentKind
from ..bwrapprobe import probe
from .base import Environment, EnvironmentFactory, EnvironmentUnavailable, TrialPlace
from .local import LOCAL

__all__ = ["Environments"]


class Environments:
    """The environments known in this process, by name (built-ins plus what plugins added
    through ``pytest_evalrun_environments``)."""

    def __init__(self, table: Mapping[str, EnvironmentFactory] | None = None) -> None:
        self._table: dict[str, EnvironmentFactory] = dict(table or {})

    @classmethod
    def builtin(cls) -> Environments:
        return cls(LOCAL)

    def add(self, table: Mapping[str, EnvironmentFactory] | None) -> None:
        """Add (or replace) environments by name."""
        for name, factory in (table or {}).items():
            self._table[str(name)] = factory

    def names(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, name: object) -> bool:
        return name == EnvironmentKind.AUTO or name in self._table

    def choose(self, name: str) -> str:
        """The environment ``name`` stands for: ``auto`` is ``bwrap`` where bubblewrap
        works, else ``none``."""
        if name != EnvironmentKind.AUTO:
            return name
        return "bwrap" if probe().available and "bwrap" in self._table else "none"

    def open(self, name: str, place: TrialPlace) -> Environment:
        """A new environment ``name`` for one trial (:class:`EnvironmentUnavailable` when it
        is unknown or cannot run here)."""
        chosen = self.choose(name)
        factory = self._table.get(chosen)
        if factory is None:
            known = ", ".join([EnvironmentKind.AUTO.value, *self.names()])
            raise EnvironmentUnavailable(f"unknown environment {name!r} (known: {known})")
        return factory(place)
