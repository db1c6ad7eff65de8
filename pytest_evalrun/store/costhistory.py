"""What trials cost before: the index's history, for ``--eval-dry-run``'s estimate.

:func:`estimate` answers "what would these trials cost?" from the cost the index recorded for
earlier trials of the same experiment, variant and task (its mean over those trials); a cell
with no such history takes its variant's mean over the experiment's other tasks (marked so);
a variant with no history at all is not estimated (named).  Only measured costs count (from the
model gateway or the agent CLI's own records); an agent's self-reported figures are left out.
Nothing is written: the index is opened read-only, and a missing index is an empty history.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..outcome import MEASURED_SOURCES

__all__ = ["CellKey", "Estimate", "VariantEstimate", "estimate", "read_history"]

#: (experiment slug, variant slug, task slug)
CellKey = tuple[str, str, str]
#: Cost sources that were measured, not claimed.
MEASURED = MEASURED_SOURCES


@dataclass
class VariantEstimate:
    experiment: str
    variant: str
    trials: int = 0
    cost_usd: float = 0.0
    #: trials estimated from their own cell's history / from the variant's mean / not at all
    from_cell: int = 0
    from_variant: int = 0
    unknown: int = 0
    #: recorded trials the estimate rests on
    history: int = 0


@dataclass
class Estimate:
    variants: list[VariantEstimate] = field(default_factory=list)

    @property
    def trials(self) -> int:
        return sum(v.trials for v in self.variants)

    @property
    def cost_usd(self) -> float:
        return sum(v.cost_usd for v in self.variants)

    @property
    def unknown(self) -> int:
        return sum(v.unknown for v in self.variants)


def read_history(db: Path) -> dict[CellKey, list[float]]:
    """Every measured, finite, non-negative trial cost in the index, by cell."""
    if not db.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return {}
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(trials)")}
        if "cost_usd" not in columns:
            return {}
        query = "SELECT experiment, variant, task, cost_usd FROM trials WHERE cost_usd IS NOT NULL"
        params: tuple[str, ...] = ()
        if "metrics_source" in columns:
            query += f" AND metrics_source IN ({', '.join('?' for _ in MEASURED)})"
            params = MEASURED
        history: dict[CellKey, list[float]] = defaultdict(list)
        for experiment, variant, task, cost in conn.execute(query, params):
            if isinstance(cost, (int, float)) and 0.0 <= float(cost) < float("inf"):
                history[str(experiment), str(variant), str(task)].append(float(cost))
        return dict(history)
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def estimate(
    planned: Iterable[CellKey], history: Mapping[CellKey, list[float]]
) -> Estimate:
    """The estimated cost of ``planned`` trials (one key per trial) from ``history``."""
    by_variant: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (experiment, variant, _task), costs in history.items():
        by_variant[experiment, variant].extend(costs)
    rows: dict[tuple[str, str], VariantEstimate] = {}
    used: set[CellKey] = set()
    for key in planned:
        experiment, variant, _task = key
        row = rows.setdefault((experiment, variant), VariantEstimate(experiment, variant))
        row.trials += 1
        own = history.get(key)
        if own:
            row.cost_usd += sum(own) / len(own)
            row.from_cell += 1
            if key not in used:
                used.add(key)
                row.history += len(own)
            continue
        pooled = by_variant.get((experiment, variant))
        if pooled:
            row.cost_usd += sum(pooled) / len(pooled)
            row.from_variant += 1
        else:
            row.unknown += 1
    return Estimate(sorted(rows.values(), key=lambda r: (r.experiment, r.variant)))
