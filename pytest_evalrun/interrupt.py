"""An interrupted session (Ctrl-C): which trials it interrupted, and the command that finishes
its runs.

A trial running when Ctrl-C arrives is stopped and recorded by its process as ``error``
(``error_kind: interrupted``) in its meta.json, but its report never reaches the controller
(the KeyboardInterrupt ends the session first, in the worker and the controller alike).
:func:`recover_interrupted` reads those outcomes back, so the summary counts them as errors
of kind ``interrupted`` rather than among the trials not run.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence

from .collect import TrialId
from .experiment.model import Experiment
from .outcome import ERROR, TrialOutcome
from .store.paths import RunPaths
from .store.trialdir import TrialDir

__all__ = ["INTERRUPTED_KIND", "recover_interrupted", "resume_command"]

#: The error kind of a trial stopped by an interrupt (trial/run.py).
INTERRUPTED_KIND = "interrupted"


def recover_interrupted(
    collected: Iterable[str],
    outcomes: Mapping[str, TrialOutcome],
    experiment_of: Callable[[str], Experiment | None],
    run_paths: Callable[[Experiment], RunPaths],
    session_id: str,
) -> dict[str, TrialOutcome]:
    """The outcomes, by node id, of the collected trials without a reported outcome that this
    session (``session_id``) recorded as interrupted."""
    found: dict[str, TrialOutcome] = {}
    for nodeid in collected:
        if nodeid in outcomes:
            continue
        tid = TrialId.parse(nodeid)
        exp = experiment_of(nodeid) if tid is not None else None
        if tid is None or exp is None:
            continue
        files = TrialDir(run_paths(exp).trial_dir(tid.variant, tid.task, tid.trial))
        meta = files.read_meta()
        if meta.get("status") != ERROR or meta.get("error_kind") != INTERRUPTED_KIND:
            continue
        if meta.get("session_id") not in (None, session_id):
            continue  # an earlier session's: this one did not get to run it
        try:
            outcome = TrialOutcome.from_dict(meta)
        except (TypeError, ValueError):
            continue
        outcome.nodeid = nodeid
        found[nodeid] = outcome
    return found


def _without(
    args: Sequence[str], options: tuple[str, ...], with_value: tuple[str, ...]
) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in options:
            continue
        if arg in with_value:
            skip = True
            continue
        if arg.startswith(tuple(f"{o}=" for o in with_value)):
            continue
        out.append(arg)
    return out


def resume_command(args: Sequence[str], run_ids: Iterable[str]) -> str:
    """``pytest <the session's arguments> --eval-resume --eval-run-id ID``: the command that
    runs what the interrupted session did not (the run id is left out when the session's
    experiments had several: then ``--eval-resume`` takes each one's latest run)."""
    kept = _without(args, ("--eval-resume",), ("--eval-run-id",))
    ids = sorted(set(run_ids))
    tail = ["--eval-resume", *(["--eval-run-id", ids[0]] if len(ids) == 1 else [])]
    return shlex.join(["pytest", *kept, *tail])
