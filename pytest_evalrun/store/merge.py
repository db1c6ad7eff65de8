"""``evalrun merge``: combine the shards of a run into the run one machine would have produced.

Each shard is a directory holding one ``--eval-shard K/N`` session's ``results/`` and ``jobs/``
(where it ran, or its unpacked CI artifact). For every experiment run found in the shards (the
same run id on every machine: give the shards a common ``--eval-run-id``), the merged run gets:

- every trial directory, moved out of the shard (one rename each; the shard is used up and
  says so in ``merged-into.json``), or with ``keep`` linked (hard links where possible, else
  copies; links the agent made are recreated as links, never followed). Files are not
  rewritten: meta.json's ``trial_dir`` and ``pier_trial_dir`` keep saying where the trial
  was written; readers take a trial's place from where its meta.json is;
- variant.json and task.json; run.json with every shard's sessions;
- summary.json, summary.md and metrics.txt recomputed from the merged trials by
  :func:`pytest_evalrun.finish.finish_run`, as a session finishes a run, with the gates' inputs
  the shards recorded in run.json's ``gates`` (min pass rates, the regression gate's baseline
  run and its counts, alpha, the error and retry policies): the merged run reaches the verdict
  the same run done on one machine reaches;
- the index rows (``results/index.db``);
- one Pier job (``jobs/<run-id>__<experiment>/``) with every trial, its result recomputed.

A run that every shard holding it holds as the same copy (the same trials, byte for byte, and
the same run.json: e.g. the baseline run restored into each shard's ``results/`` so that the
shard's regression gate finds it), and that is not itself an unmerged shard, is not a shard of
anything: it is placed once into DIR as it
is (linked, never moved; the shards keep their copies), so DIR holds what one machine's
``results/`` would.

Two shards holding the same trial (of a run that is not such a copy), a shard's trial that
differs from the one an earlier merge put in the target, one experiment defined differently in
two shards, shards run with different gates, or a shard whose trials an earlier merge moved
elsewhere, is a conflict: nothing is written, and the error names them. Merging the same shards
again changes nothing: a run that gains no trial and whose run.json would stay the same is left
alone.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..finish import Gates, GatesError, Plan, finish_run, gates_differences
from ..layoutjson import MergedFrom, RunGates, RunJson, RunSession, Summary, Verdict
from . import runs
from .atomic import dumps, write_bytes_if_changed, write_json_atomic
from .index import record_run, record_trials
from .layout import META, finished_outcome, iter_runs, read_object, read_run_json, read_summary
from .paths import RunPaths, index_db
from .pier.job import PierJob
from .pier.jobnames import safe_job_name
from .pier.recorder import pier_job_id
from .pier.relocate import Relocation, relocate_job_config, relocate_trials
from .standard import write_summaries
from .walk import iter_trial_rels
from .walk import subdirs as _subdirs

#: run.json's lifecycle, worst first: the merged run takes the worst of its shards.
_WORST_FIRST = (runs.FAILED, runs.INTERRUPTED, runs.RUNNING, runs.COMPLETED)

#: In a shard's run directory once a merge has started moving its trials out: where to.
MOVED_MARKER = "merged-into.json"

TrialKey = tuple[str, str, int]


class MergeError(Exception):
    """The shards cannot be merged (conflicts, or not shards at all); nothing was written."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass
class _Shard:
    root: Path
    run: RunJson
    run_dir: Path
    summary: Summary
    #: (variant slug, task slug, trial number) -> trial directory, relative to run_dir
    trials: dict[TrialKey, str] = field(default_factory=dict)
    #: variant.json and task.json files, relative to run_dir
    definitions: list[str] = field(default_factory=list)


@dataclass
class MergedRun:
    experiment: str  # slug
    run_id: str
    shards: int
    trials: int
    #: trial directories newly placed
    added: int
    run_dir: Path
    #: False when the merged run was already as it is (merging again changed nothing)
    changed: bool = True
    #: The merged run's verdict (its experiment's ``verdict`` in summary.json).
    verdict: Verdict = field(default_factory=lambda: Verdict())
    #: The merged run's summary (summary.json's content; {} when unreadable).
    summary: Summary = field(default_factory=lambda: Summary())
    #: True for a run every shard held the same copy of (placed once, as it is).
    copy: bool = False


def _trial_dirs(run_dir: Path) -> dict[TrialKey, str]:
    """The run's trial directories, relative to it."""
    return {(v, t, n): rel for v, t, n, rel in iter_trial_rels(run_dir)}


def _read_dict(path: Path) -> dict[str, Any]:
    return read_object(path) or {}


def _scan(shards: Sequence[Path]) -> dict[tuple[str, str], list[_Shard]]:
    problems = []
    groups: dict[tuple[str, str], list[_Shard]] = {}
    for root in shards:
        results = root / "results"
        if not results.is_dir():
            problems.append(f"{root} holds no results/ directory (is it a shard?)")
            continue
        for experiment, run_id, run in iter_runs(results):
            run_dir = results / experiment / run_id
            shard = _Shard(root, run, run_dir, read_summary(run_dir) or {})
            shard.trials = _trial_dirs(run_dir)
            shard.definitions = _definition_files(run_dir)
            groups.setdefault((experiment, run_id), []).append(shard)
    if problems:
        raise MergeError(problems)
    if not groups:
        raise MergeError([f"no runs found in {', '.join(str(s) for s in shards)}"])
    return groups


def _conflicts(experiment: str, run_id: str, shards: Sequence[_Shard]) -> list[str]:
    problems: list[str] = []
    where = f"experiment {experiment!r} run {run_id!r}"
    owner: dict[TrialKey, Path] = {}
    for shard in shards:
        for key in sorted(shard.trials):
            if key in owner:
                v, t, n = key
                problems.append(
                    f"{where}: trial {v}/{t}/{n:03d} is in two shards: {owner[key]} and "
                    f"{shard.root}"
                )
            else:
                owner[key] = shard.root
    first = shards[0]
    for shard in shards[1:]:
        if shard.run.get("plan") != first.run.get("plan"):
            problems.append(
                f"{where} is defined differently in {first.root} and {shard.root} "
                "(variants, tasks or gates)"
            )
        for option, flag in (
            ("cli_min_pass_rate", "--eval-min-pass-rate"),
            ("baseline", "--eval-baseline"),
        ):
            if shard.summary.get(option) != first.summary.get(option):
                problems.append(
                    f"{where}: {first.root} and {shard.root} were run with different {flag}"
                )
    problems += _gate_conflicts(where, shards)
    definitions: dict[str, tuple[Path, bytes]] = {}
    for shard in shards:
        for rel in shard.definitions:
            if not rel.endswith("/task.json"):
                continue
            content = _definition(shard.run_dir / rel)
            if rel in definitions and definitions[rel][1] != content:
                problems.append(
                    f"{where}: {rel} differs between {definitions[rel][0]} and {shard.root}"
                )
            definitions.setdefault(rel, (shard.root, content))
    return problems


def _recorded_gates(shards: Sequence[_Shard]) -> list[tuple[_Shard, RunGates]]:
    """The gates' inputs each shard recorded (shards whose session never finished, or that an
    older pytest-evalrun wrote, have none)."""
    return [(s, s.run["gates"]) for s in shards if isinstance(s.run.get("gates"), dict)]


def _gate_conflicts(where: str, shards: Sequence[_Shard]) -> list[str]:
    """Shards whose recorded gates' inputs differ, or cannot be read."""
    problems: list[str] = []
    recorded = _recorded_gates(shards)
    for shard, gates in recorded:
        try:
            Gates.from_json(gates)
        except GatesError as exc:
            problems.append(f"{where}: {shard.run_dir / 'run.json'}: {exc}")
    if problems or not recorded:
        return problems
    first_shard, first = recorded[0]
    for shard, gates in recorded[1:]:
        differ = gates_differences(first, gates)
        if differ:
            problems.append(
                f"{where}: {first_shard.root} and {shard.root} were run with different gates: "
                + ", ".join(f"{flag} ({_shown(first, flag)} vs {_shown(gates, flag)})"
                            for flag in differ)
            )  # fmt: skip
    return problems


def _shown(gates: Mapping[str, Any], flag: str) -> str:
    """A recorded gate input, short, for a conflict message."""
    from ..finish import GATE_OPTIONS

    key = next(k for k, f in GATE_OPTIONS.items() if f == flag)
    value = gates.get(key)
    if key == "baseline_run" and isinstance(value, dict):
        return f"{value.get('ref')} = run {value.get('run_id')}"
    return json.dumps(value)


def _against_target(
    experiment: str,
    run_id: str,
    shards: Sequence[_Shard],
    into: Path,
    target: Path,
    merged: Mapping[TrialKey, str],
) -> list[str]:
    """Problems between the shards and what ``into`` holds already (``merged``: the trial
    directories of ``target``, the merged run): a shard an earlier merge moved elsewhere, or
    a trial of a shard that differs from the one already merged."""
    problems: list[str] = []
    where = f"experiment {experiment!r} run {run_id!r}"
    for shard in shards:
        moved_to = _read_dict(shard.run_dir / MOVED_MARKER).get("into")
        if moved_to is not None and moved_to != str(into):
            problems.append(
                f"{where}: the trials of {shard.root} were moved into {moved_to} by an "
                f"earlier evalrun merge: merge into {moved_to} again, or merge a fresh copy "
                "of the shard"
            )
    old_gates = (read_run_json(target) or {}).get("gates")
    recorded = _recorded_gates(shards)
    if isinstance(old_gates, dict) and recorded:
        differ = gates_differences(old_gates, recorded[0][1])
        if differ:
            problems.append(
                f"{where}: {recorded[0][0].root} was run with other gates than the run an earlier "
                f"merge put in {into}: {', '.join(differ)}"
            )
    for shard in shards:
        for key in sorted(merged.keys() & shard.trials.keys()):
            mine = f"{shard.run_dir}/{shard.trials[key]}/{META}"
            if not _same_file(mine, f"{target}/{merged[key]}/{META}"):
                v, t, n = key
                problems.append(
                    f"{where}: trial {v}/{t}/{n:03d} of {shard.root} differs from the one "
                    f"an earlier merge put in {into}"
                )
    return problems


def _same_file(a: str, b: str) -> bool:
    """The same meta.json: one file (hard links) or the same bytes."""
    try:
        if os.path.samefile(a, b):
            return True
        with open(a, "rb") as fa, open(b, "rb") as fb:
            return fa.read() == fb.read()
    except OSError:
        return False


def _definition(path: Path) -> bytes:
    """A task.json's definition digest (location-independent: see
    ``spec.identity.definition_digest``); for a run written before it existed, the file
    without its absolute paths."""
    data = _read_dict(path)
    if "definition" in data:
        return str(data["definition"]).encode()
    for key in ("fixture", "prompt_file"):
        data.pop(key, None)
    return json.dumps(data, sort_keys=True).encode()


#: Trial directories per ``cp`` process (well under the argument-length limit).
_CP_BATCH = 500


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` becomes a copy of ``src``: files hard-linked (else copied), links re-made."""
    dst.mkdir(parents=True, exist_ok=True)
    with os.scandir(src) as entries:
        for entry in entries:
            target = dst / entry.name
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                if not os.path.lexists(target):
                    os.symlink(os.readlink(entry.path), target)
            elif stat.S_ISDIR(mode):
                _link_tree(Path(entry.path), target)
            elif stat.S_ISREG(mode) and not os.path.lexists(target):
                try:
                    os.link(entry.path, target)
                except OSError:
                    shutil.copy2(entry.path, target, follow_symlinks=False)


@functools.lru_cache(maxsize=1)
def _gnu_cp() -> str | None:
    """GNU cp, which links whole trees in one process (``cp -al``); None elsewhere (macOS)."""
    cp = shutil.which("cp")
    if cp is None:
        return None
    try:
        version = subprocess.run([cp, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return cp if "GNU coreutils" in version.stdout else None


def _link_trees(base: Path, names: Sequence[str], dest: Path) -> None:
    """``dest/<name>`` becomes a copy of ``base/<name>`` for each name (relative paths, kept
    as they are): files hard-linked, links re-made, never followed. GNU cp does it in a few
    processes; elsewhere :func:`_link_tree` does it in Python."""
    cp = _gnu_cp()
    if cp is None:
        for name in names:
            _link_tree(base / name, dest / name)
        return
    dest.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(names), _CP_BATCH):
        batch = list(names[start : start + _CP_BATCH])
        done = subprocess.run(
            [cp, "-a", "-l", "--no-clobber", "--parents", "-t", str(dest), "--", *batch],
            cwd=base,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:  # e.g. across file systems: copy what is left in Python
            for name in batch:
                _link_tree(base / name, dest / name)


def _place(base: Path, names: Sequence[str], dest: Path, keep: bool) -> None:
    """``dest/<name>`` for each ``base/<name>``: moved (one rename; linked instead across
    file systems, leaving the source as it is) or, with ``keep``, linked
    (:func:`_link_trees`)."""
    if keep:
        _link_trees(base, names, dest)
        return
    left = []
    made: set[str] = set()
    src, dst = str(base), str(dest)
    for name in names:
        target = f"{dst}/{name}"
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        try:
            os.rename(f"{src}/{name}", target)
        except OSError:
            left.append(name)
    _link_trees(base, left, dest)


def _json_bytes(obj: Any) -> bytes:
    return dumps(obj).encode("utf-8")


def _merged_from(shards: Sequence[_Shard], old: RunJson) -> list[MergedFrom]:
    """Which directory gave which shards and how many selected trials: an earlier merge's
    entries and this merge's, one per shard (the same shard merged again counts once)."""
    entries: dict[str, MergedFrom] = {}

    def add(entry: MergedFrom) -> None:
        key = ",".join(entry["shards"]) or entry["source"]
        entries[key] = entry

    for entry in old.get("merged_from") or []:
        if isinstance(entry, dict) and isinstance(entry.get("shards"), list):
            add(
                {
                    "source": str(entry.get("source")),
                    "shards": entry["shards"],
                    "total": int(entry.get("total") or 0),
                }
            )
    for s in shards:
        add(
            {
                "source": str(s.root),
                "shards": sorted(
                    {str(x.get("shard")) for x in s.run.get("sessions") or [] if x.get("shard")}
                ),
                "total": int((s.run.get("counts") or {}).get("total") or 0),
            }
        )
    return sorted(entries.values(), key=lambda e: (e["shards"], e["source"]))


def _merged_run_json(
    shards: Sequence[_Shard],
    counts: dict[str, int],
    old: RunJson,
    merged_from: list[MergedFrom],
) -> RunJson:
    """run.json of the merged run: this merge's shards and what an earlier merge into the
    same directory recorded (``old``, {} when none; ``merged_from`` from both)."""
    runs_json = [s.run for s in shards] + ([old.copy()] if old else [])
    base = old.copy() if old else shards[0].run.copy()  # an earlier merge's stays the base
    sessions: dict[str, RunSession] = {}
    for run in runs_json:
        for session in run.get("sessions") or []:
            if isinstance(session, dict):
                sessions.setdefault(str(session.get("id")), session)
    base["sessions"] = sorted(sessions.values(), key=lambda s: str(s.get("started_at") or ""))
    starts = [str(r["started_at"]) for r in runs_json if r.get("started_at")]
    ends = [r.get("finished_at") for r in runs_json]
    if starts:  # (every run.json has one: start_run and finish_run write it)
        base["started_at"] = min(starts)
    base["finished_at"] = None if None in ends else max(str(e) for e in ends)
    statuses = {str(r.get("status")) for r in runs_json}
    base["status"] = next((st for st in _WORST_FIRST if st in statuses), runs.COMPLETED)
    base["counts"] = counts
    hosts = {str(s.run.get("host")) for s in shards if s.run.get("host")}
    hosts.update(str(h) for h in old.get("hosts") or [])
    base["hosts"] = sorted(hosts)
    base["merged_from"] = merged_from
    base.pop("updated_at", None)
    return base


def _gates(shards: Sequence[_Shard], old: RunJson) -> tuple[Gates, list[str]]:
    """The gates' inputs of the merged run, and notes: those the shards recorded (checked to
    agree), else an earlier merge's, else (shards an older pytest-evalrun wrote) the min pass
    rate and the baseline variant their summaries state."""
    recorded = _recorded_gates(shards)
    if recorded:
        return Gates.from_json(recorded[0][1]), []
    if isinstance(old.get("gates"), dict):
        return Gates.from_json(old["gates"]), []
    first = shards[0].summary
    notes = []
    regressions = {
        str((e.get("regression") or {}).get("baseline_run"))
        for s in shards
        for e in s.summary.get("experiments") or []
        if e.get("regression")
    }
    if regressions:
        notes.append(
            "regression gate: the shards' run.json do not record the gates' inputs (written "
            "by an older pytest-evalrun): the regression gate against run "
            f"{', '.join(sorted(regressions))} could not be recomputed for the merged run"
        )
    rate = first.get("cli_min_pass_rate")
    base = first.get("baseline")
    return (
        Gates(
            min_pass_rate=float(rate) if isinstance(rate, (int, float)) else None,
            baseline_variant=str(base) if base is not None else None,
        ),
        notes,
    )


def _selected(shards: Sequence[_Shard], old_summary: Summary) -> tuple[set[str], set[str]]:
    """The variant and task names the shards (and an earlier merge) selected."""
    variants: set[str] = set()
    tasks: set[str] = set()
    for summary in [*(s.summary for s in shards), old_summary]:
        for exp in summary.get("experiments") or []:
            variants.update(str(v.get("name")) for v in exp.get("variants") or [])
            tasks.update(str(t.get("name")) for t in exp.get("tasks") or [])
    return variants, tasks


def merge(shards: Sequence[Path], into: Path, *, keep: bool = False) -> list[MergedRun]:
    """Merge the shards' runs into ``into/results`` and ``into/jobs`` (see the module doc).
    Raises :class:`MergeError` (nothing written) on conflicts. The trial directories are
    moved out of the shards (one rename each), or with ``keep`` linked."""
    shards = [Path(s).resolve() for s in shards]
    into = Path(into).resolve()
    for shard in shards:
        if into == shard or shard in into.parents or into in shard.parents:
            raise MergeError([f"--into {into} must lie outside every shard ({shard})"])
    groups = _scan(shards)
    results = into / "results"
    problems = []
    already: dict[tuple[str, str], dict[TrialKey, str]] = {}
    copies = {key for key, group in groups.items() if _same_copy(group)}
    for (experiment, run_id), group in sorted(groups.items()):
        target = RunPaths(results, experiment, run_id).run_dir
        already[experiment, run_id] = _trial_dirs(target)
        if (experiment, run_id) in copies:
            problems += _copy_against_target(experiment, run_id, group[0], into, target)
            continue
        problems += _conflicts(experiment, run_id, group)
        problems += _against_target(
            experiment, run_id, group, into, target, already[experiment, run_id]
        )
    if problems:
        raise MergeError(problems)
    return [
        _place_copy(experiment, run_id, group, into)
        if (experiment, run_id) in copies
        else _merge_run(experiment, run_id, group, into, keep, set(already[experiment, run_id]))
        for (experiment, run_id), group in sorted(groups.items())
    ]


def _same_copy(shards: Sequence[_Shard]) -> bool:
    """Every shard holds the same copy of the run: the same trials (meta.json byte for byte)
    and the same run.json, and the run is not itself a shard waiting to be merged (the same
    shard given twice stays a conflict); a run in one shard only is not a copy."""
    if len(shards) < 2:
        return False
    first = shards[0]
    sessions = first.run.get("sessions") or []
    if "merged_from" not in first.run and any(
        isinstance(x, dict) and x.get("shard") for x in sessions
    ):
        return False
    for shard in shards[1:]:
        if shard.run != first.run or shard.trials.keys() != first.trials.keys():
            return False
        for key, rel in first.trials.items():
            mine = f"{shard.run_dir}/{shard.trials[key]}/{META}"
            if not _same_file(f"{first.run_dir}/{rel}/{META}", mine):
                return False
    return True


def _copy_against_target(
    experiment: str, run_id: str, shard: _Shard, into: Path, target: Path
) -> list[str]:
    """A copied run (see :func:`_same_copy`) conflicts with another run of its id in DIR."""
    old = read_run_json(target)
    if not old:
        return []
    theirs = _trial_dirs(target)
    same = old == shard.run and theirs.keys() == shard.trials.keys() and all(
        _same_file(f"{target}/{theirs[k]}/{META}", f"{shard.run_dir}/{rel}/{META}")
        for k, rel in shard.trials.items()
    )
    if same:
        return []
    return [
        f"experiment {experiment!r} run {run_id!r}: every shard holds the same copy of it "
        f"(e.g. a restored baseline run), but {into} holds another run of that id"
    ]


def _place_copy(experiment: str, run_id: str, shards: Sequence[_Shard], into: Path) -> MergedRun:
    """A run every shard holds the same copy of: placed once into DIR as it is (linked, the
    shards keep theirs), and indexed."""
    shard = shards[0]
    results, jobs = into / "results", into / "jobs"
    paths = RunPaths(results, experiment, run_id)
    job_dir = jobs / safe_job_name(f"{run_id}__{experiment}")
    summary = shard.summary
    existed = paths.run_json.exists()
    if not existed:
        names = sorted(os.listdir(shard.run_dir))
        # run.json last: a merge interrupted before it places the copy again
        _link_trees(shard.run_dir, [n for n in names if n != "run.json"], paths.run_dir)
        src_job = shard.root / "jobs" / job_dir.name
        if src_job.is_dir():
            _link_trees(src_job.parent, [src_job.name], jobs)
        run_dir = str(paths.run_dir)
        outcomes = [
            o
            for *_, rel in iter_trial_rels(paths.run_dir)
            if (o := finished_outcome(f"{run_dir}/{rel}", str(job_dir))) is not None
        ]
        db = index_db(results)
        record_trials(db, outcomes)
        record_run(db, experiment, shard.run, paths.run_dir, summary or None)
        shutil.copyfile(shard.run_dir / "run.json", paths.run_json)
    return MergedRun(
        experiment,
        run_id,
        len(shards),
        len(shard.trials),
        0 if existed else len(shard.trials),
        paths.run_dir,
        changed=not existed,
        verdict=_verdict(summary),
        summary=summary,
        copy=True,
    )


def _copy_definitions(shards: Sequence[_Shard], run_dir: Path) -> None:
    """variant.json and task.json, as the shards wrote them (the same in every shard)."""
    made: set[str] = set()
    for shard in shards:
        base = str(shard.run_dir)
        for rel in shard.definitions:
            dst = f"{run_dir}/{rel}"
            if rel in made or os.path.exists(dst):
                continue
            parent = os.path.dirname(dst)
            os.makedirs(parent, exist_ok=True)
            shutil.copyfile(f"{base}/{rel}", dst)
            made.add(rel)


def _definition_files(run_dir: Path) -> list[str]:
    """A run's variant.json and task.json files, relative to it."""
    found = []
    for v in _subdirs(run_dir / "variants"):
        found.append(f"variants/{v}/variant.json")
        found += [
            f"variants/{v}/tasks/{t}/task.json"
            for t in _subdirs(run_dir / "variants" / v / "tasks")
        ]
    return [rel for rel in found if os.path.isfile(f"{run_dir}/{rel}")]


def _merge_run(
    experiment: str,
    run_id: str,
    shards: Sequence[_Shard],
    into: Path,
    keep: bool,
    merged_keys: set[TrialKey],
) -> MergedRun:
    """Place the shards' new trials (``merged_keys``: those the merged run holds already),
    then recompute the run's files from what it holds."""
    results, jobs = into / "results", into / "jobs"
    paths = RunPaths(results, experiment, run_id)
    job_name = f"{run_id}__{experiment}"
    job_dir = jobs / safe_job_name(job_name)
    _copy_definitions(shards, paths.run_dir)
    added = pier_added = 0
    for shard in shards:
        new = sorted(rel for key, rel in shard.trials.items() if key not in merged_keys)
        src_job = shard.root / "jobs" / job_dir.name
        pier_new: list[str] = []
        if src_job.is_dir():
            have = set(os.listdir(job_dir)) if job_dir.is_dir() else set()
            with os.scandir(src_job) as entries:
                pier_new = sorted(
                    e.name
                    for e in entries
                    if e.name not in have
                    and e.is_dir(follow_symlinks=False)
                    and os.path.exists(f"{e.path}/config.json")
                )
        if not keep and (new or pier_new):
            _mark_moved(shard, into)
        _place(shard.run_dir, new, paths.run_dir, keep)
        added += len(new)
        if pier_new:
            _place(src_job, pier_new, job_dir, keep)
            pier_added += len(pier_new)
            # their records name where they are now, not the shard
            relocate_trials(job_dir, pier_new, [_relocation(shard, job_dir, paths.run_dir)])
    old: RunJson = read_run_json(paths.run_dir) or {}
    old.pop("updated_at", None)
    merged_from = _merged_from(shards, old)
    recorded = _recorded_gates(shards)
    if not (added or pier_added) and old:
        # merged before, from the same shards: nothing to do if run.json would stay the same
        counts = old.get("counts") or {}
        if _run_json(shards, counts, old, merged_from, recorded) == old:
            n = int(counts.get("total") or 0) - int(counts.get("not_run") or 0)
            return _unchanged(experiment, run_id, len(shards), n, paths)
    # The merged run is what its directory holds now: this merge's trials and an earlier
    # merge's (moved, the shards no longer hold them).
    run_dir = str(paths.run_dir)
    outcomes = [
        o
        for *_, rel in iter_trial_rels(paths.run_dir)
        if (o := finished_outcome(f"{run_dir}/{rel}", str(job_dir))) is not None
    ]
    total = sum(e["total"] for e in merged_from)
    gates, notes = _gates(shards, old)
    old_summary = read_summary(paths.run_dir) or {}
    variants, tasks = _selected(shards, old_summary)
    first = shards[0].run
    done = finish_run(
        outcomes,
        Plan.from_json((old or first).get("plan")),
        gates,
        experiment=str(first.get("experiment") or experiment),
        variants=variants,
        tasks=tasks,
        total=total,
        run_id=run_id,
        results_dir=run_dir,
        jobs_dir=str(jobs),
    )
    run_json = _run_json(shards, done.counts, old, merged_from, recorded)
    if not (added or pier_added) and old == run_json:
        return _unchanged(experiment, run_id, len(shards), len(outcomes), paths)
    run_json["updated_at"] = runs.utc_now()
    summary = done.summary
    summary["experiments"][0]["notes"].extend(notes)
    write_summaries(paths, summary)
    db = index_db(results)
    record_trials(db, outcomes)
    record_run(db, experiment, run_json, paths.run_dir, summary)
    if job_dir.is_dir():
        task_names = [str(t["name"]) for t in summary["experiments"][0]["tasks"]]
        _merge_pier_job(shards, job_name, job_dir, done.counts["total"], run_json, task_names)
        relocate_job_config(job_dir, [_relocation(s, job_dir, paths.run_dir) for s in shards])
    # last: a merge interrupted before this point leaves run.json as it was, so running it
    # again recomputes everything above
    write_json_atomic(paths.run_json, run_json, fsync=True)
    return MergedRun(
        experiment,
        run_id,
        len(shards),
        len(outcomes),
        added,
        paths.run_dir,
        verdict=_verdict(summary),
        summary=summary,
    )


def _run_json(
    shards: Sequence[_Shard],
    counts: Mapping[str, int],
    old: RunJson,
    merged_from: list[MergedFrom],
    recorded: Sequence[tuple[_Shard, RunGates]],
) -> RunJson:
    """:func:`_merged_run_json` with the gates' inputs the shards recorded."""
    data = _merged_run_json(shards, dict(counts), old, merged_from)
    if recorded:
        data["gates"] = recorded[0][1]
    return data


def _unchanged(experiment: str, run_id: str, n_shards: int, n: int, paths: RunPaths) -> MergedRun:
    summary = read_summary(paths.run_dir) or {}
    return MergedRun(
        experiment,
        run_id,
        n_shards,
        n,
        0,
        paths.run_dir,
        False,
        verdict=_verdict(summary),
        summary=summary,
    )


def _verdict(summary: Summary) -> Verdict:
    """The verdict of a run's (one experiment's) summary; {} when it has none."""
    experiments = summary.get("experiments")
    if isinstance(experiments, list) and experiments and isinstance(experiments[0], dict):
        verdict = experiments[0].get("verdict")
        if isinstance(verdict, dict):
            return verdict.copy()
    return {}


def _relocation(shard: _Shard, job_dir: Path, run_dir: Path) -> Relocation:
    """Where the shard's job and run directories were, and where they are merged."""
    old_job = shard.root / "jobs" / job_dir.name
    return Relocation(shard.root, old_job, job_dir, shard.run_dir, run_dir)


def _mark_moved(shard: _Shard, into: Path) -> None:
    """Say in the shard, before its first trial leaves, where its trials go (a merge into
    another directory would find the shard used up)."""
    marker = shard.run_dir / MOVED_MARKER
    if not marker.exists():
        write_json_atomic(marker, {"into": str(into), "at": runs.utc_now()}, fsync=True)


def _merge_pier_job(
    shards: Sequence[_Shard],
    job_name: str,
    job_dir: Path,
    total: int,
    run_json: RunJson,
    tasks: Sequence[str],
) -> None:
    # an earlier merge's config first: merging more shards later keeps it (but the tasks)
    configs = [
        _read_dict(path)
        for path in [job_dir / "config.json"]
        + [s.root / "jobs" / job_dir.name / "config.json" for s in shards]
        if path.exists()
    ]
    if configs:
        config = dict(configs[0])
        datasets = config.get("datasets")
        if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
            dataset = dict(datasets[0])
            dataset["task_names"] = list(tasks)
            config["datasets"] = [dataset, *datasets[1:]]
        concurrent = [c.get("n_concurrent_trials") for c in configs]
        if all(isinstance(c, int) for c in concurrent):
            config["n_concurrent_trials"] = max(concurrent)  # type: ignore[type-var]
        write_bytes_if_changed(job_dir / "config.json", _json_bytes(config))
    if not (job_dir / "result.json").exists():
        firsts = [_read_dict(s.root / "jobs" / job_dir.name / "result.json") for s in shards]
        started = sorted(str(r["started_at"]) for r in firsts if r.get("started_at"))
        if started:
            first = next(r for r in firsts if r.get("started_at") == started[0])
            write_json_atomic(job_dir / "result.json", first)
    job = PierJob(
        job_dir.parent, job_name, job_id=pier_job_id(job_name), run_id=str(run_json["run_id"])
    )
    finished = str(run_json.get("finished_at") or runs.utc_now())
    # every trial directory of the merged job, read once (they came from the shards)
    job.finalize([], n_total_trials=total, finished_at=finished, include_existing=True)
