"""metrics.txt: the OpenMetrics text exposition of a summary's pass rates and trial counts.

:func:`render_openmetrics` is a pure function over the dict :func:`.summary.build_summary`
returns (so it also works on a summary.json read back from disk).

Every name starts with ``evalrun_`` (so it cannot collide with another exporter's in a shared
Prometheus), and per-cell and per-variant numbers are separate families
(``evalrun_cell_*`` with labels experiment, variant, task; ``evalrun_variant_*`` with
experiment, variant), so ``sum(evalrun_cell_trials)`` counts every trial once. The counts are
gauges: they describe one run, they do not grow over time, so none ends in ``_total``
(``promtool check metrics`` accepts the file).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PREFIX", "render_openmetrics"]

#: The start of every metric name.
PREFIX = "evalrun_"


def _om_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _om_labels(labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_om_escape(v)}"' for k, v in labels) + "}"


def _om_number(value: float) -> str:
    """A count as an integer, a rate as Python's shortest round-trip float (``0.5``, ``1.0``)."""
    return str(value) if isinstance(value, int) else repr(float(value))


#: (name after ``evalrun_<level>_``, summary key, help text).
_OM_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("pass_rate", "pass_rate", "Fraction of judged trials (passed, failed, timeout) that passed"),
    ("trials", "trials", "Trials recorded, including errors"),
    ("trials_judged", "n", "Trials judged (passed, failed or timeout)"),
    ("trials_passed", "passed", "Trials that passed"),
    ("trials_errors", "errors", "Trials that could not be judged (errors)"),
)

_LEVELS: tuple[tuple[str, str], ...] = (
    ("cell", "per variant x task"),
    ("variant", "per variant, over all its tasks"),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def render_openmetrics(summary: Mapping[str, Any]) -> str:
    """OpenMetrics text exposition of the pass rates and trial counts (see the module
    docstring). A pass rate with no judged trial is left out rather than written as NaN."""
    lines: list[str] = []
    for level, scope in _LEVELS:
        for name, key, help_text in _OM_FAMILIES:
            family = f"{PREFIX}{level}_{name}"
            lines.append(f"# HELP {family} {help_text}, {scope}.")
            lines.append(f"# TYPE {family} gauge")
            for exp in summary.get("experiments", []):
                rows = exp.get("cells", []) if level == "cell" else exp.get("variants", [])
                for row in rows:
                    value = _number(row.get(key))
                    if value is None:
                        continue
                    labels = [("experiment", str(exp["name"]))]
                    if level == "cell":
                        labels += [("variant", str(row["variant"])), ("task", str(row["task"]))]
                    else:
                        labels.append(("variant", str(row["name"])))
                    lines.append(f"{family}{_om_labels(labels)} {_om_number(value)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
