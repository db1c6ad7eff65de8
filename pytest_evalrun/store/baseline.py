"""``--eval-baseline-run RUN``: which run is the baseline, and the regression gate's data.

The baseline run of an experiment is found from the run directories and their run.json (the
index gives start times where it has them): a pinned baseline (``baseline``,
``baseline:NAME``, see :mod:`.pins`), ``last-passing``, ``latest``, ``latest~N``, a run id or
a unique prefix, never the run being written. ``latest``, ``latest~N`` and ``last-passing``
skip runs that are partial or did not complete; a run found that would make an unfair
comparison is refused (:func:`find_baseline`). The comparison itself is
:func:`pytest_evalrun.report.regression.compare_variant`, the same code ``evalrun compare``
uses: per variant, pass rates paired by task, one-sided.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..outcome import JUDGED, PASSED
from ..report.regression import TaskCounts
from . import runs
from .layout import read_summary
from .paths import RunPaths, index_db
from .pins import DEFAULT_PIN, PinsError, find_pin, read_pins
from .query import IndexMissing, open_index, task_counts
from .walk import subdirs

#: The judged statuses whose rerun (``--eval-retry``) changes what a pass rate means: a trial
#: that may fail twice before it counts passes more often. Rerunning ``error`` (unjudged)
#: trials changes nothing the gates count.
JUDGED_RETRY = JUDGED - {PASSED}

#: ``--eval-baseline-run`` keywords (besides a run id or prefix).
PINNED, LAST_PASSING, LATEST = "baseline", "last-passing", "latest"


class BaselineError(LookupError):
    """The baseline run cannot be used (one line, naming the experiment and the reference)."""


class BaselineNotFound(BaselineError):
    """The reference names no run of the experiment (``--eval-baseline-optional`` turns this
    into a note and an ungated run)."""


class NoEarlierRun(BaselineNotFound):
    """The experiment has no earlier run at all (a new experiment, or no results/ here)."""


class BaselineRefused(BaselineError):
    """The run found would make an unfair comparison (another retry policy, or a part of the
    experiment while this session runs all of it): always a usage error."""


# -- what run.json says about a run ------------------------------------------------------------
def _plan_total(plan: Any) -> int:
    if not isinstance(plan, Mapping):
        return 0
    per_task = plan.get("trials_per_task") or {}
    variants = plan.get("variants") or []
    if not isinstance(per_task, Mapping) or not isinstance(variants, list):
        return 0
    return len(variants) * sum(int(n) for n in per_task.values() if isinstance(n, int))


def _shard(text: Any) -> tuple[int, int] | None:
    k, _, n = str(text or "").partition("/")
    return (int(k), int(n)) if k.isdigit() and n.isdigit() and int(n) > 0 else None


def partial_reason(run: Mapping[str, Any]) -> str:
    """Why ``run`` (run.json) holds only a part of its experiment's trials; "" when it holds
    them all. Each session records how many of the experiment's trials it selected
    (``sessions[].selection``: after -k/-m/node ids/--lf and --eval-shard). The run is
    complete when one session without a shard selected every trial, or when the sessions of
    every shard K/N of one N (a merged run) selected every trial between them. A run
    recorded before sessions kept their selection is judged by its last session's trial count
    against its plan."""
    sessions = [s for s in run.get("sessions") or [] if isinstance(s, Mapping)]
    chosen = [(s.get("shard"), s["selection"]) for s in sessions
              if isinstance(s.get("selection"), Mapping)]  # fmt: skip
    if not chosen:
        total = _plan_total(run.get("plan"))
        n = int((run.get("counts") or {}).get("total") or 0)
        if total and 0 < n < total:
            return f"selected {n} of its {total} trials"
        return ""
    of = max(int(sel.get("of") or 0) for _, sel in chosen)
    whole = 0
    shards: dict[int, dict[int, int]] = {}
    for shard, sel in chosen:
        n = int(sel.get("trials") or 0)
        kn = _shard(shard)
        if kn is None:
            whole = max(whole, n)
        else:
            per = shards.setdefault(kn[1], {})
            per[kn[0]] = max(per.get(kn[0], 0), n)
    if whole >= of:
        return ""
    for n_shards, per in sorted(shards.items()):
        if len(per) == n_shards and sum(per.values()) >= of:
            return ""
    if shards and not whole:
        n_shards, per = max(shards.items(), key=lambda item: len(item[1]))
        have = ", ".join(f"{k}/{n_shards}" for k in sorted(per))
        if len(per) < n_shards:
            return f"shard {have} of {n_shards}, not merged with the others"
        return f"its shards selected {sum(per.values())} of its {of} trials (-k/-m/node ids/--lf)"
    return f"selected {whole} of its {of} trials (-k/-m/node ids/--lf)"


def _args_retry(args: Any) -> set[str]:
    """--eval-retry from a recorded command line (runs recorded before sessions kept it)."""
    args = [str(a) for a in args] if isinstance(args, list) else []
    found: set[str] = set()
    for i, arg in enumerate(args):
        value = None
        if arg == "--eval-retry" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith("--eval-retry="):
            value = arg.partition("=")[2]
        if value:
            found.update(v.strip() for v in value.split(","))
    return found


def retry_policy(run: Mapping[str, Any]) -> frozenset[str]:
    """The judged statuses some session of ``run`` ran again (``--eval-retry``): each
    session's ``retry`` (or, recorded before sessions kept it, its command line) and the
    ``retry`` of run.json's ``gates``."""
    found: set[str] = set()
    gates = run.get("gates")
    if isinstance(gates, Mapping) and isinstance(gates.get("retry"), list):
        found.update(str(x) for x in gates["retry"])
    for s in run.get("sessions") or []:
        if not isinstance(s, Mapping):
            continue
        retry = s.get("retry")
        found.update(retry if isinstance(retry, list) else _args_retry(s.get("pytest_args")))
    return frozenset(str(x) for x in found) & JUDGED_RETRY


def policy_text(retry: frozenset[str]) -> str:
    if not retry:
        return "no --eval-retry of judged trials"
    return "--eval-retry " + ",".join(sorted(retry))


@dataclass(frozen=True)
class RunFacts:
    """One stored run, as the baseline lookup sees it."""

    run_id: str
    started_at: str
    status: str
    #: Why it holds a part of the experiment's trials ("" when all).
    partial: str
    #: The judged statuses it reran (--eval-retry).
    retry: frozenset[str]
    #: Its gate: True (gated, passed), False (gated, failed), None (not gated, or unknown).
    gate: bool | None

    @property
    def complete(self) -> bool:
        return self.status == runs.COMPLETED and not self.partial

    @property
    def incomplete_reason(self) -> str:
        if self.status != runs.COMPLETED:
            return f"it is {self.status or 'of unknown status'}"
        return f"it is partial: {self.partial}" if self.partial else ""


def _gate(run_dir: Path, name: str) -> bool | None:
    summary = read_summary(run_dir)
    if summary is None:
        return None
    verdict: Any = summary.get("verdict")
    for exp in summary.get("experiments") or []:
        if isinstance(exp, Mapping) and exp.get("name") == name:
            verdict = exp.get("verdict", verdict)
    if not isinstance(verdict, Mapping) or not verdict.get("gated"):
        return None
    return bool(verdict.get("passed"))


def run_facts(results: Path, experiment: str, run_id: str) -> RunFacts | None:
    """The facts of a stored run (None when its run.json cannot be read)."""
    paths = RunPaths(results, experiment, run_id)
    data = runs.read_run(paths)
    if data is None:
        return None
    return RunFacts(
        run_id=run_id,
        started_at=str(data.get("started_at") or ""),
        status=str(data.get("status") or ""),
        partial=partial_reason(data),
        retry=retry_policy(data),
        gate=_gate(paths.run_dir, str(data.get("experiment") or experiment)),
    )


# -- finding the baseline ----------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """This session's run of the experiment, for the fairness checks."""

    run_id: str
    #: The judged statuses it reruns (this session's --eval-retry, and earlier sessions' of a
    #: resumed run).
    retry: frozenset[str] = frozenset()
    #: How this session selects a part of the experiment's trials ("" when it runs them all).
    selective: str = ""


@dataclass(frozen=True)
class Baseline:
    run_id: str
    #: How it was found: "pin 'baseline'", "latest", "latest~1", "last-passing", "run id".
    found_as: str
    #: What the reports name about it (a partial baseline compared with a partial run).
    notes: tuple[str, ...] = ()


def _ordered(results: Path, experiment: str, exclude: str) -> list[str]:
    """The experiment's stored runs, newest first (by start time, then run id), from the run
    directories on disk; start times from the index where it has them, else run.json."""
    names = set(subdirs(results / experiment))  # no link followed, as every walk
    if not names:
        return []
    names.discard(exclude)
    started: dict[str, str] = {}
    db = index_db(results)
    if db.is_file():
        try:
            conn = open_index(db)
            try:
                for rid, when in conn.execute(
                    "SELECT run_id, started_at FROM runs WHERE experiment = ?", (experiment,)
                ):
                    if rid in names and when:
                        started[rid] = str(when)
            finally:
                conn.close()
        except (sqlite3.Error, IndexMissing):
            started = {}
    for rid in names - started.keys():
        data = runs.read_run(RunPaths(results, experiment, rid))
        if data is not None:
            started[rid] = str(data.get("started_at") or "")
    return sorted(started, key=lambda rid: (started[rid], rid), reverse=True)


def _latest_offset(ref: str) -> int | None:
    if ref == LATEST:
        return 0
    head, sep, tail = ref.partition("~")
    return int(tail) if head == LATEST and sep and tail.isdigit() else None


def _skipped_text(skipped: list[RunFacts]) -> str:
    if not skipped:
        return ""
    kinds: dict[str, int] = {}
    for f in skipped:
        kind = "partial" if f.partial else (f.status or "unknown")
        if f.status == runs.COMPLETED and not f.partial:
            kind = "not passing its gate" if f.gate is False else "not gated"
        kinds[kind] = kinds.get(kind, 0) + 1
    return " (skipped: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) + ")"


def _pick(
    results: Path, ref: str, experiment: str, candidate: Candidate
) -> tuple[RunFacts, str]:
    """The run ``ref`` names, and how it was found; raises :class:`BaselineNotFound`."""
    where = f"experiment {experiment!r}"
    if "/" in ref:
        exp, _, rest = ref.partition("/")
        if exp != experiment:
            raise BaselineNotFound(
                f"--eval-baseline-run {ref}: names experiment {exp!r}, not {experiment!r}"
            )
        ref = rest
    ordered = _ordered(results, experiment, candidate.run_id)
    if ref == PINNED or ref.startswith(PINNED + ":"):
        name = ref.partition(":")[2] or DEFAULT_PIN
        try:
            pin = find_pin(read_pins(results), experiment, name)
        except PinsError as exc:
            raise BaselineNotFound(f"--eval-baseline-run {ref}: {exc}") from None
        if pin is None:
            hint = "" if name == DEFAULT_PIN else f" --name {name}"
            raise BaselineNotFound(
                f"--eval-baseline-run {ref}: {where} has no pinned baseline {name!r} in "
                f"{results} (pin one with: evalrun baseline set RUN -e {experiment}{hint})"
            )
        if pin.run_id == candidate.run_id:
            raise BaselineRefused(
                f"--eval-baseline-run {ref}: the pinned run {pin.run_id} of {where} is the run "
                "this session writes"
            )
        facts = run_facts(results, experiment, pin.run_id)
        if facts is None:
            raise BaselineNotFound(
                f"--eval-baseline-run {ref}: the pinned baseline {name!r} of {where} is run "
                f"{pin.run_id}, which is not in {results} (deleted, or not restored)"
            )
        return facts, f"pin {name!r}"
    if not ordered:
        raise NoEarlierRun(
            f"--eval-baseline-run {ref}: {where} has no earlier run in {results}"
        )
    offset = _latest_offset(ref)
    if offset is not None or ref == LAST_PASSING:
        wanted, skipped, complete = offset or 0, [], 0
        for rid in ordered:
            facts = run_facts(results, experiment, rid)
            if facts is None:
                continue
            if not facts.complete or (ref == LAST_PASSING and facts.gate is not True):
                skipped.append(facts)
                continue
            if complete == wanted:
                return facts, ref
            complete += 1
        if ref == LAST_PASSING:
            what = "no complete earlier run whose gate passed"
        elif not complete:
            what = "no complete earlier run"
        else:
            s = "s" if complete != 1 else ""
            what = f"{complete} complete earlier run{s} ({ref} needs {wanted + 1})"
        raise BaselineNotFound(
            f"--eval-baseline-run {ref}: {where} has {what} in {results}" + _skipped_text(skipped)
        )
    if ref in ordered:
        matches = [ref]
    else:
        matches = sorted(rid for rid in ordered if ref and rid.startswith(ref))
    if ref == candidate.run_id:
        raise BaselineRefused(
            f"--eval-baseline-run {ref} is the run this session writes; name an earlier one"
        )
    if len(matches) > 1:
        raise BaselineNotFound(
            f"--eval-baseline-run {ref}: ambiguous for {where}: {', '.join(matches[:5])}"
        )
    facts = run_facts(results, experiment, matches[0]) if matches else None
    if facts is None:
        raise BaselineNotFound(f"--eval-baseline-run {ref}: no run of {where} matches {ref!r}")
    return facts, "run id"


def _ensure_indexed(results: Path, experiment: str, run_id: str) -> None:
    """The gate reads the baseline's counts from the index: rebuild it from the files when it
    is missing (a CI cache of the run directories without index.db) or lacks the run."""
    db = index_db(results)
    if db.is_file():
        try:
            conn = open_index(db)
            try:
                row = conn.execute(
                    "SELECT 1 FROM runs WHERE experiment = ? AND run_id = ?", (experiment, run_id)
                ).fetchone()
            finally:
                conn.close()
            if row is not None:
                return
        except sqlite3.Error:
            pass
    from .rebuild import rebuild_index

    rebuild_index(results)


def find_baseline(results: Path, ref: str, experiment: str, candidate: Candidate) -> Baseline:
    """``experiment``'s baseline run for ``--eval-baseline-run ref`` (docs/regression.md,
    "Which run is the baseline"), never the candidate's own run. Raises
    :class:`BaselineNotFound` (or :class:`NoEarlierRun`) when ``ref`` names no run, and
    :class:`BaselineRefused` when the run found would make an unfair comparison: another
    retry policy, or a partial or unfinished run while this session runs every trial."""
    facts, found_as = _pick(results, ref, experiment, candidate)
    head = f"--eval-baseline-run {ref}: baseline run {facts.run_id} of experiment {experiment!r}"
    if facts.retry != candidate.retry:
        raise BaselineRefused(
            f"{head} was run with {policy_text(facts.retry)}, this run with "
            f"{policy_text(candidate.retry)}: rerunning judged trials raises pass rates, so the "
            "gate would compare two different things; compare runs with the same retry policy"
        )
    notes = []
    why = facts.incomplete_reason
    if why and not candidate.selective:
        raise BaselineRefused(
            f"{head}: {why}, while this session runs every trial: the gate would judge only "
            "what it holds; name a complete run, or select the same part here"
        )
    if why:
        notes.append(
            f"regression gate: baseline run {facts.run_id} is not a complete run ({why}); "
            f"this session also runs a part ({candidate.selective}): only the tasks both hold "
            "are compared"
        )
    _ensure_indexed(results, experiment, facts.run_id)
    return Baseline(facts.run_id, found_as, tuple(notes))


def rerun_judged(summary_json: Path) -> int | None:
    """Judged trials a stored run ran again (``--eval-retry``), from its summary.json's
    totals; None when unknown (no summary, or not a count)."""
    totals = (read_summary(summary_json.parent) or {}).get("totals", {})
    value = totals.get("rerun_judged") if isinstance(totals, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def baseline_counts(
    results: Path, experiment: str, baseline_run: str
) -> dict[str, dict[str, TaskCounts]]:
    """The baseline run's counts, variant slug -> task slug -> counts, from the index."""
    conn = open_index(index_db(results))
    try:
        return task_counts(conn, (experiment, baseline_run))
    finally:
        conn.close()
