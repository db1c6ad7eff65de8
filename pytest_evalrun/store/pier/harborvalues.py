"""Loose JSON values as Harbor's models take them: UTC timestamps and finite numbers.

Timestamps are read from ISO 8601 strings or epoch numbers and written as ISO 8601 UTC with
milliseconds and ``Z``; numbers that are bools, NaN or infinite count as absent.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

_FRACTION = re.compile(r"\.(\d+)(?=[+-]\d{2}:?\d{2}$|$)")


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from ISO 8601 text or epoch seconds; None when neither."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return datetime.fromtimestamp(float(value), timezone.utc)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Python 3.10's fromisoformat wants 3 or 6 fractional digits: pad/cut to 6.
    text = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def fmt_time(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and ``Z`` (None stays None)."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def int_or_none(value: Any) -> int | None:
    """An int, or a float with an integral value, as int; anything else (bools too) None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def float_or_none(value: Any) -> float | None:
    """A finite int or float as float; anything else (bools too) None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def reward_number(value: Any) -> float | int | None:
    """A finite int or float unchanged; anything else (bools too) None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None
