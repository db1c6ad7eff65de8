"""``evalrun merge``: combine the shards of a run into the run one machine would have produced.

Each shard is a directory holding one ``--eval-shard K/N`` session's ``results/`` and ``jobs/``
(where it ran, or its unpacked CI artifact). For every experiment run found in the shards (the
same run id on every machine: give the shards a common ``--eval-run-id``), the merged run gets:

- every trial directory (hard links where possible, else copies; links the agent made are
  recreated as links, never followed), with its paths in meta.json pointing to the new place;
- variant.json and task.json; run.json with every shard's sessions;
- summary.json, summary.md and metrics.txt recomputed from the merged trials;
- the index rows (``results/index.db``);
- one Pier job (``jobs/<run-id>__<experiment>/``) with every trial, its result recomputed.

Two shards holding the same trial, or one experiment defined differently in two shards, is a
conflict: nothing is written, and the error names them. Merging the same shards again changes
nothing: a run that gains no trial and whose run.json would stay the same is left alone.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outcome import TrialOutcome
from ..report.summary import ExperimentMeta, build_summary
from . import runs
from .atomic import dumps, read_json, write_bytes_if_changed, write_json_atomic
from .index import record_run, record_trials
from .paths import RunPaths, index_db
from .pier.job import PierJob
from .pier.names import safe_job_name
from .pier.recorder import pier_job_id
from .standard import write_summaries
from .trialdir import META

#: run.json's lifecycle, worst first: the merged run takes the worst of its shards.
_WORST_FIRST = (runs.FAILED, runs.INTERRUPTED, runs.RUNNING, runs.COMPLETED)


class MergeError(Exception):
    """The shards cannot be merged (conflicts, or not shards at all); nothing was written."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass
class _Shard:
    root: Path
    run: dict[str, Any]
    run_dir: Path
    summary: dict[str, Any]
    #: (variant slug, task slug, trial number) -> trial directory
    trials: dict[tuple[str, str, int], Path] = field(default_factory=dict)


@dataclass
class MergedRun:
    experiment: str  # slug
    run_id: str
    shards: int
    trials: int
    #: trial directories newly placed (0 when merging again changed nothing)
    added: int
    run_dir: Path


def _trial_dirs(run_dir: Path) -> dict[tuple[str, str, int], Path]:
    found: dict[tuple[str, str, int], Path] = {}
    variants = run_dir / "variants"
    if not variants.is_dir():
        return found
    for vdir in sorted(variants.iterdir()):
        tasks = vdir / "tasks"
        if not tasks.is_dir():
            continue
        for tdir in sorted(tasks.iterdir()):
            trials = tdir / "trials"
            if not trials.is_dir():
                continue
            for trial in trials.iterdir():
                if trial.name.isdigit() and trial.is_dir() and not trial.is_symlink():
                    found[(vdir.name, tdir.name, int(trial.name))] = trial
    return found


def _read_dict(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _scan(shards: Sequence[Path]) -> dict[tuple[str, str], list[_Shard]]:
    problems = []
    groups: dict[tuple[str, str], list[_Shard]] = {}
    for root in shards:
        results = root / "results"
        if not results.is_dir():
            problems.append(f"{root} holds no results/ directory (is it a shard?)")
            continue
        for experiment, run_id, run in runs.iter_runs(results):
            run_dir = results / experiment / run_id
            shard = _Shard(root, run, run_dir, _read_dict(run_dir / "summary.json"))
            shard.trials = _trial_dirs(run_dir)
            groups.setdefault((experiment, run_id), []).append(shard)
    if problems:
        raise MergeError(problems)
    if not groups:
        raise MergeError([f"no runs found in {', '.join(str(s) for s in shards)}"])
    return groups


def _conflicts(experiment: str, run_id: str, shards: Sequence[_Shard]) -> list[str]:
    problems: list[str] = []
    where = f"experiment {experiment!r} run {run_id!r}"
    owner: dict[tuple[str, str, int], Path] = {}
    for shard in shards:
        for key, _ in sorted(shard.trials.items()):
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
    definitions: dict[Path, tuple[Path, bytes]] = {}
    for shard in shards:
        for path in sorted(shard.run_dir.glob("variants/*/tasks/*/task.json")):
            rel = path.relative_to(shard.run_dir)
            content = _definition(path)
            if rel in definitions and definitions[rel][1] != content:
                problems.append(
                    f"{where}: {rel} differs between {definitions[rel][0]} and {shard.root}"
                )
            definitions.setdefault(rel, (shard.root, content))
    return problems


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


def _place(base: Path, names: Sequence[str], dest: Path, move: bool) -> None:
    """``dest/<name>`` for each ``base/<name>``: moved (one rename; falls back to linking
    across file systems) or linked (:func:`_link_trees`)."""
    if not move:
        _link_trees(base, names, dest)
        return
    left = []
    made: set[str] = set()
    for name in names:
        target = os.path.join(dest, name)
        parent = os.path.dirname(target)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        try:
            os.rename(os.path.join(base, name), target)
        except OSError:
            left.append(name)
    _link_trees(base, left, dest)


def _json_bytes(obj: Any) -> bytes:
    return dumps(obj).encode("utf-8")


def _relocate(meta: dict[str, Any], trial_dir: Path, pier_job_dir: Path) -> dict[str, Any]:
    meta = dict(meta)
    meta["trial_dir"] = str(trial_dir)
    if meta.get("pier_trial_dir"):
        meta["pier_trial_dir"] = str(pier_job_dir / Path(meta["pier_trial_dir"]).name)
    return meta


def _relocated_bytes(raw: bytes, old: dict[str, Any], new: dict[str, Any]) -> bytes:
    """meta.json with its paths changed: the two values replaced in the text as written
    (fast: no re-encoding), else the whole record encoded again."""
    out = raw
    for key in ("trial_dir", "pier_trial_dir"):
        if old.get(key) == new.get(key):
            continue
        before = f'"{key}": {json.dumps(old.get(key), ensure_ascii=False)}'.encode()
        after = f'"{key}": {json.dumps(new.get(key), ensure_ascii=False)}'.encode()
        if out.count(before) != 1:
            return _json_bytes(new)
        out = out.replace(before, after)
    return out


def _merged_run_json(shards: Sequence[_Shard], counts: dict[str, int]) -> dict[str, Any]:
    base = dict(shards[0].run)
    sessions: dict[str, dict[str, Any]] = {}
    for shard in shards:
        for session in shard.run.get("sessions") or []:
            if isinstance(session, dict):
                sessions.setdefault(str(session.get("id")), session)
    base["sessions"] = sorted(sessions.values(), key=lambda s: str(s.get("started_at") or ""))
    starts = [str(s.run["started_at"]) for s in shards if s.run.get("started_at")]
    ends = [s.run.get("finished_at") for s in shards]
    base["started_at"] = min(starts) if starts else base.get("started_at")
    base["finished_at"] = None if None in ends else max(str(e) for e in ends)
    statuses = {str(s.run.get("status")) for s in shards}
    base["status"] = next((st for st in _WORST_FIRST if st in statuses), runs.COMPLETED)
    base["counts"] = counts
    base["hosts"] = sorted({str(s.run.get("host")) for s in shards if s.run.get("host")})
    base["merged_from"] = [
        {
            "source": str(s.root),
            "shards": sorted(
                {str(x.get("shard")) for x in s.run.get("sessions") or [] if x.get("shard")}
            ),
        }
        for s in shards
    ]
    base.pop("updated_at", None)
    return base


def _counts(outcomes: Iterable[TrialOutcome], total: int) -> dict[str, int]:
    counts = {k: 0 for k in ("passed", "failed", "timeout", "error", "resumed", "crashed")}
    n = 0
    for o in outcomes:
        n += 1
        counts[o.status if o.status in counts else "error"] += 1
        counts["resumed"] += int(o.resumed)
        counts["crashed"] += int(o.crashed)
    total = max(total, n)
    return {"total": total, **counts, "not_run": total - n}


def _meta(
    shards: Sequence[_Shard], outcomes: Sequence[TrialOutcome], run_dir: Path, jobs: Path
) -> tuple[ExperimentMeta, dict[str, Any]]:
    run = shards[0].run
    plan = run.get("plan") or {}
    seen_v = {o.variant for o in outcomes}
    seen_t = {o.task for o in outcomes}
    for shard in shards:
        for exp in shard.summary.get("experiments") or []:
            seen_v.update(str(v.get("name")) for v in exp.get("variants") or [])
            seen_t.update(str(t.get("name")) for t in exp.get("tasks") or [])
    variants = [v for v in plan.get("variants", []) if v in seen_v]
    tasks = [t for t in plan.get("tasks", []) if t in seen_t]
    meta = ExperimentMeta(
        name=str(run.get("experiment") or run_dir.parent.name),
        variants=variants + sorted(seen_v - set(variants)),
        tasks=tasks + sorted(seen_t - set(tasks)),
        min_pass_rate=plan.get("min_pass_rate"),
        task_min_pass_rate=plan.get("task_min_pass_rate") or {},
        trials_per_task=plan.get("trials_per_task") or {},
        run_id=run_dir.name,
        results_dir=str(run_dir),
        jobs_dir=str(jobs),
    )
    first = shards[0].summary
    return meta, {
        "cli_min_pass_rate": first.get("cli_min_pass_rate"),
        "baseline": first.get("baseline"),
    }


def merge(shards: Sequence[Path], into: Path, *, move: bool = False) -> list[MergedRun]:
    """Merge the shards' runs into ``into/results`` and ``into/jobs`` (see the module doc).
    Raises :class:`MergeError` (nothing written) on conflicts. ``move``: move the trial
    directories out of the shards (one rename each) instead of linking their files."""
    shards = [Path(s).resolve() for s in shards]
    into = Path(into).resolve()
    for shard in shards:
        if into == shard or shard in into.parents or into in shard.parents:
            raise MergeError([f"--into {into} must lie outside every shard ({shard})"])
    groups = _scan(shards)
    problems = [p for (e, r), g in sorted(groups.items()) for p in _conflicts(e, r, g)]
    if problems:
        raise MergeError(problems)
    results, jobs = into / "results", into / "jobs"
    merged = []
    for (experiment, run_id), group in sorted(groups.items()):
        merged.append(_merge_run(experiment, run_id, group, results, jobs, move))
    return merged


def _merge_run(
    experiment: str,
    run_id: str,
    shards: Sequence[_Shard],
    results: Path,
    jobs: Path,
    move: bool,
) -> MergedRun:
    paths = RunPaths(results, experiment, run_id)
    job_name = f"{run_id}__{experiment}"
    job_dir = jobs / safe_job_name(job_name)
    added = pier_added = 0
    for shard in shards:
        for rel in sorted(shard.run_dir.glob("variants/*/variant.json")) + sorted(
            shard.run_dir.glob("variants/*/tasks/*/task.json")
        ):
            dst = paths.run_dir / rel.relative_to(shard.run_dir)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(rel, dst)
    for shard in shards:
        run_dir = str(paths.run_dir)
        new = [
            rel
            for rel in sorted(os.path.relpath(src, shard.run_dir) for src in shard.trials.values())
            if not os.path.exists(os.path.join(run_dir, rel, META))
        ]
        _place(shard.run_dir, new, paths.run_dir, move)
        added += len(new)
        src_job = shard.root / "jobs" / job_dir.name
        if src_job.is_dir():
            names = [
                entry.name
                for entry in sorted(os.scandir(src_job), key=lambda e: e.name)
                if entry.is_dir(follow_symlinks=False)
                and os.path.exists(os.path.join(entry.path, "config.json"))
                and not os.path.lexists(job_dir / entry.name)
            ]
            _place(src_job, names, job_dir, move)
            pier_added += len(names)
    # The merged run is what its directory holds now: this merge's trials and an earlier
    # merge's (with --move, the shards no longer hold them).
    outcomes: list[TrialOutcome] = []
    for _key, dst in sorted(_trial_dirs(paths.run_dir).items()):
        raw = (dst / META).read_bytes() if (dst / META).is_file() else b"{}"
        data = json.loads(raw)
        record = _relocate(data, dst, job_dir)
        if record != data:  # our own directory: a fixed temporary name is enough
            tmp = f"{dst}/.{META}.merge"
            with open(tmp, "wb") as fh:
                fh.write(_relocated_bytes(raw, data, record))
            os.replace(tmp, f"{dst}/{META}")
        outcomes.append(TrialOutcome.from_dict(record))
    total = sum(int((s.run.get("counts") or {}).get("total") or 0) for s in shards)
    counts = _counts(outcomes, total)
    run_json = _merged_run_json(shards, counts)
    old = _read_dict(paths.run_json)
    old.pop("updated_at", None)
    changed = added > 0 or pier_added > 0 or old != run_json
    if not changed:  # merged before, from the same shards: nothing to do
        return MergedRun(experiment, run_id, len(shards), len(outcomes), 0, paths.run_dir)
    run_json["updated_at"] = runs.utc_now()
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(paths.run_json, run_json, fsync=True)
    meta, inputs = _meta(shards, outcomes, paths.run_dir, jobs)
    summary = build_summary(
        outcomes,
        experiments_meta={meta.name: meta},
        cli_min_pass_rate=inputs["cli_min_pass_rate"],
        baseline=inputs["baseline"],
        not_run={meta.name: counts["not_run"]},
    )
    write_summaries(paths, summary)
    db = index_db(results)
    record_trials(db, outcomes)
    record_run(db, experiment, run_json, paths.run_dir, summary)
    if job_dir.is_dir():
        _merge_pier_job(shards, job_name, job_dir, counts["total"], run_json, meta)
    return MergedRun(experiment, run_id, len(shards), len(outcomes), added, paths.run_dir)


def _merge_pier_job(
    shards: Sequence[_Shard],
    job_name: str,
    job_dir: Path,
    total: int,
    run_json: Mapping[str, Any],
    meta: ExperimentMeta,
) -> None:
    configs = [
        _read_dict(s.root / "jobs" / job_dir.name / "config.json")
        for s in shards
        if (s.root / "jobs" / job_dir.name / "config.json").exists()
    ]
    if configs:
        config = dict(configs[0])
        datasets = config.get("datasets")
        if isinstance(datasets, list) and datasets and isinstance(datasets[0], dict):
            dataset = dict(datasets[0])
            dataset["task_names"] = list(meta.tasks)
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
