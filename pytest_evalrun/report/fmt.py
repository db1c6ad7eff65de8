"""Number formatting shared by the renderers (markdown, terminal): pure ``value -> str``.

Every function returns ``"-"`` for a value that is not known (None).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "fmt_cost",
    "fmt_count",
    "fmt_duration",
    "fmt_interval",
    "fmt_p",
    "fmt_pct",
    "fmt_pp",
    "fmt_source",
    "fmt_tokens",
    "plural",
]


def plural(count: int, word: str) -> str:
    """``1 error``, ``2 errors``."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def fmt_pct(rate: float | None, digits: int = 0) -> str:
    """``0.6667 -> "67%"``."""
    if rate is None:
        return "-"
    return f"{rate * 100:.{digits}f}%"


def fmt_interval(ci: Sequence[float] | None, digits: int = 0) -> str:
    """``[0.215, 0.785] -> "[21.5, 78.5]%"`` (with ``digits=1``)."""
    if ci is None:
        return "-"
    return f"[{ci[0] * 100:.{digits}f}, {ci[1] * 100:.{digits}f}]%"


def fmt_pp(diff: float | None, digits: int = 1) -> str:
    """A difference of pass rates in percentage points, signed: ``0.222 -> "+22.2 pp"``."""
    if diff is None:
        return "-"
    value = diff * 100
    if abs(value) < 0.5 * 10**-digits:
        value = 0.0
    return f"{value:+.{digits}f} pp"


def fmt_p(p: float | None) -> str:
    """A p-value with 3 decimals, ``<0.001`` below that."""
    if p is None:
        return "-"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def fmt_duration(seconds: float | None) -> str:
    """``12.3s``, ``4m05s``, ``2h03m``."""
    if seconds is None:
        return "-"
    if seconds < 59.95:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)  # rounded first: 119.6 s is 2m00s, not 1m60s
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def fmt_count(value: int | None) -> str:
    """``999``, ``1.2k``, ``12k``, ``1.2M``, ``12M``."""
    if value is None:
        return "-"
    if value >= 10_000_000:
        return f"{value / 1_000_000:.0f}M"
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return str(value)


def fmt_tokens(tokens: Mapping[str, int | None]) -> str:
    """Input/output tokens, ``4.9k/1.0k``; ``-`` when neither is known."""
    tin, tout = tokens.get("input"), tokens.get("output")
    if tin is None and tout is None:
        return "-"
    return f"{fmt_count(tin)}/{fmt_count(tout)}"


def fmt_cost(cost: float | None) -> str:
    """US dollars: cents from $0.10 up, two significant digits below, ``<$0.0001`` at the end;
    ``invalid`` for a negative or not finite amount (never shown as a tiny one)."""
    if cost is None:
        return "-"
    if not math.isfinite(cost) or cost < 0:
        return "invalid"
    if cost == 0 or cost >= 0.1:
        return f"${cost:.2f}"
    if cost < 0.0001:
        return "<$0.0001"
    return f"${cost:.2g}"


#: How a report names each source of tokens and cost (summary.json's ``metrics_source``).
SOURCE_NAMES = {"gateway": "gateway", "cli": "CLI records", "self_reported": "self-reported"}


def fmt_source(group: Mapping[str, Any]) -> str:
    """Where a group's tokens and cost came from: ``gateway`` (counted by the plugin's model
    gateway), ``CLI records`` (a preset CLI's own, read by the plugin), ``self-reported`` (the
    agent's word), joined by ``+``; with ``+N self-reported apart`` when some trials' own
    figures were kept out of the totals; ``-`` when there are none."""
    source = group.get("metrics_source")
    if not source:
        return "-"
    text = "+".join(SOURCE_NAMES.get(s, s) for s in str(source).split("+"))
    apart = group.get("self_reported")
    if isinstance(apart, Mapping) and apart.get("trials_with_metrics"):
        text += f" ({apart['trials_with_metrics']} self-reported apart)"
    return text


def totals_text(tot: Mapping[str, Any], *, sep: str, plural_trials: bool) -> str:
    """"12 trials: 8 passed, 3 failed, 0 timed out, 1 error" and, when any, "; 2 resumed",
    "; 1 retried", "; 3 not run" (``sep`` between the extras: "; " or ", ")."""
    trials = plural(tot["trials"], "trial") if plural_trials else f"{tot['trials']} trials"
    text = (
        f"{trials}: {tot['passed']} passed, {tot['failed']} failed, "
        f"{tot['timeout']} timed out, {plural(tot['errors'], 'error')}"
    )
    for key, word in (("resumed", "resumed"), ("retried", "retried"), ("not_run", "not run")):
        if tot.get(key):
            text += f"{sep}{tot[key]} {word}"
    return text
