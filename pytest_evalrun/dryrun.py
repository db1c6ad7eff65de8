"""``--eval-dry-run``: what a run would cost, before anything is spent.

The session collects as ``--collect-only`` does (no trial runs, nothing is written, no xdist
worker starts: :func:`enable` turns collect-only on before pytest configures), then
:class:`DryRunPlugin` prints, per variant, the trials selected and their estimated cost from
the index's history (:mod:`pytest_evalrun.store.costhistory`), and the total against
``--eval-budget-usd`` when one is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .collect import TrialItem
from .report.fmt import fmt_cost as usd
from .store.costhistory import Estimate, estimate, read_history
from .store.paths import index_db

__all__ = ["DryRunPlugin", "enable", "lines"]


def enable(config: pytest.Config) -> bool:
    """Turn a ``--eval-dry-run`` session into a collect-only one (before pytest configures,
    so xdist starts no worker); returns whether this session is a dry run."""
    if not config.getoption("eval_dry_run", False):
        return False
    config.option.collectonly = True
    if config.option.verbose == 0:  # one line per file, not every trial
        config.option.verbose = -2
    return True


def lines(found: Estimate, budget_usd: float | None, index: Path) -> list[str]:
    """The dry run's report."""
    if not found.variants:
        return ["no trial selected: nothing would be spent"]
    out = []
    width = max(len(f"{v.experiment}/{v.variant}") for v in found.variants)
    for v in found.variants:
        basis = [f"{v.from_cell} from their task's history ({v.history} trials)"]
        if v.from_variant:
            basis.append(f"{v.from_variant} from the variant's mean over other tasks")
        if v.unknown:
            basis.append(f"{v.unknown} not estimated (no history)")
        name = f"{v.experiment}/{v.variant}".ljust(width)
        cost = "~" + usd(v.cost_usd)
        out.append(f"{name}  {v.trials:>5} trials  {cost:>10}  ({'; '.join(basis)})")
    total = f"total: {found.trials} trials, estimated ~{usd(found.cost_usd)}"
    if found.unknown:
        total += f" plus {found.unknown} trials with no cost history"
    out.append(total)
    if budget_usd is not None:
        verdict = "within" if found.cost_usd <= budget_usd else "OVER"
        out.append(f"--eval-budget-usd {budget_usd:g}: the estimate is {verdict} the budget")
    if not any(v.history for v in found.variants) and not any(
        v.from_variant for v in found.variants
    ):
        out.append(f"no measured cost of these variants and tasks in {index}")
    out.append("dry run: no trial was run, nothing was written")
    return out


class DryRunPlugin:
    """Prints the estimate once collection is done (the controller process only)."""

    def __init__(self, results: Path, budget_usd: float | None) -> None:
        self.results = results
        self.budget_usd = budget_usd
        self.estimate: Estimate | None = None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        planned = [
            (item.experiment.slug, item.variant.slug, item.task.slug)
            for item in session.items
            if isinstance(item, TrialItem)
        ]
        self.estimate = estimate(planned, read_history(index_db(self.results)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.estimate is None:
            return
        terminalreporter.section("evalrun dry run")
        for line in lines(self.estimate, self.budget_usd, index_db(self.results)):
            terminalreporter.write_line(line)
