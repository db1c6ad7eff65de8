"""Which recorded trials still stand for ``--eval-resume``.

A trial recorded ``passed``, ``failed`` or ``timeout`` stands when its fingerprint (a hash of the
resolved variant, task, prompt, fixture contents and trial number) is unchanged; it is then
reported again, marked resumed, without running anything. ``error`` trials, crashed and missing
ones, and trials whose definition changed run again.
"""

from __future__ import annotations

import json
from pathlib import Path

from .outcome import JUDGED, TrialOutcome


def recorded_outcome(trial_dir: Path, fingerprint: str) -> TrialOutcome | None:
    try:
        with open(f"{trial_dir}/meta.json", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    if fingerprint.encode() not in raw:
        return None  # changed definition (or no fingerprint): no need to parse it
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("status") not in JUDGED:
        return None
    if data.get("fingerprint") != fingerprint:
        return None
    try:
        outcome = TrialOutcome.from_dict(data)
    except TypeError:
        return None
    outcome.resumed = True
    return outcome
