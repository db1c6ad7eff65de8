"""Harbor's names for a Pier job and its trials: safe job directory names, trial names.

A trial name is ``<task slug, first 32 chars>__<7 chars>``, the suffix hashed from the trial's
identity (run, experiment, variant, task, trial), so the same trial always gets the same name.
"""

from __future__ import annotations

import hashlib
import json
import re

#: shortuuid's default alphabet (what Harbor's ``ShortUUID().random(7)`` draws from): a subset
#: of [A-Za-z0-9] without look-alikes (0, 1, I, O, l).
TRIAL_SUFFIX_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
TRIAL_SUFFIX_LENGTH = 7
TRIAL_STEM_LENGTH = 32

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(1, 10)}
    | {f"LPT{i}" for i in range(1, 10)}
)


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def safe_job_name(name: str) -> str:
    """A directory name Harbor and every OS accept: ``[A-Za-z0-9._-]``, not hidden.

    A name that is already safe is returned unchanged; otherwise the unsafe runs become ``-``
    and a short hash of the original is appended, so two different names never share a job.
    """
    cleaned = _UNSAFE.sub("-", name).strip(".-")[:100] or "job"
    if cleaned.split(".")[0].upper() in _WINDOWS_RESERVED:
        cleaned = f"job-{cleaned}"
    return cleaned if cleaned == name else f"{cleaned}-{_short_hash(name)}"


def _trial_stem(task_slug: str) -> str:
    stem = _UNSAFE.sub("-", task_slug).strip(".")[:TRIAL_STEM_LENGTH]
    return stem or "task"


def trial_suffix(
    run_id: str, experiment: str, variant: str, task: str, trial: int, attempt: int = 0
) -> str:
    """The 7-character suffix of a trial name, hashed from the trial's identity."""
    seed = json.dumps([run_id, experiment, variant, task, trial, attempt], ensure_ascii=False)
    number = int.from_bytes(hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest(), "big")
    chars = []
    base = len(TRIAL_SUFFIX_ALPHABET)
    for _ in range(TRIAL_SUFFIX_LENGTH):
        number, rem = divmod(number, base)
        chars.append(TRIAL_SUFFIX_ALPHABET[rem])
    return "".join(chars)


def trial_name_for(
    run_id: str,
    experiment: str,
    variant: str,
    task: str,
    trial: int,
    *,
    task_slug: str | None = None,
    attempt: int = 0,
) -> str:
    """Harbor's trial name ``<task[:32]>__<7 chars>``, the suffix hashed from the trial's identity.

    The same (run, experiment, variant, task, trial) always gives the same name, so a resumed
    run or a re-write finds its directory. ``attempt`` > 0 gives the alternatives used when a
    name is already owned by another trial (a collision: about one chance in 10^12).
    """
    stem = _trial_stem(task_slug if task_slug is not None else task)
    return f"{stem}__{trial_suffix(run_id, experiment, variant, task, trial, attempt)}"
