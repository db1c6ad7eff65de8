"""metrics.txt: the OpenMetrics text exposition of a summary's pass rates and trial counts.

:func:`render_openmetrics` is a pure function over the dict :func:`.summary.build_summary`
returns (so it also works on a summary.json read back from disk).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["render_openmetrics"]


def _om_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _om_labels(labels: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_om_escape(v)}"' for k, v in labels) + "}"


def _om_number(value: float) -> str:
    """A count as an integer, a rate as Python's shortest round-trip float (``0.5``, ``1.0``)."""
    return str(value) if isinstance(value, int) else repr(float(value))


_OM_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("pass_rate", "pass_rate", "Fraction of judged trials (passed, failed, timeout) that passed."),
    ("trials_total", "trials", "Trials recorded, including errors."),
    ("trials_judged", "n", "Trials judged (passed, failed or timeout)."),
    ("trials_passed", "passed", "Trials that passed."),
    ("trials_errors", "errors", "Trials that could not be judged (errors)."),
)


def render_openmetrics(summary: Mapping[str, Any]) -> str:
    """OpenMetrics text exposition of the pass rates and trial counts.

    One sample per variant x task (labels experiment, variant, task) and one per variant
    (no task label). A pass rate with no judged trial is left out rather than written as NaN.
    """
    lines: list[str] = []
    for family, key, help_text in _OM_FAMILIES:
        lines.append(f"# HELP {family} {help_text}")
        lines.append(f"# TYPE {family} gauge")
        for exp in summary["experiments"]:
            by_variant: dict[str, list[Mapping[str, Any]]] = {}
            for c in exp["cells"]:
                by_variant.setdefault(c["variant"], []).append(c)
            for v in exp["variants"]:
                for c in by_variant.get(v["name"], []):
                    value = c[key]
                    if value is None:
                        continue
                    labels = [
                        ("experiment", exp["name"]),
                        ("variant", v["name"]),
                        ("task", c["task"]),
                    ]
                    lines.append(f"{family}{_om_labels(labels)} {_om_number(value)}")
                value = v[key]
                if value is None:
                    continue
                labels = [("experiment", exp["name"]), ("variant", v["name"])]
                lines.append(f"{family}{_om_labels(labels)} {_om_number(value)}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"
