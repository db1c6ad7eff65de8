"""One run directory read back for a report: run.json, summary.json, variant.json / task.json
and every trial's files, with each trial's texts cut to a budget.

The result is plain JSON-able data (:class:`RunView`), so the HTML renderer
(:mod:`pytest_evalrun.report.html`) needs no file access. Nothing outside the run directory is
read: symbolic links (to files or directories) are never followed.

Texts are cut so that a report of a large run stays bounded: a prompt and a diff keep their
head, the agent's output and verify's output their tail (where the error usually is). The
limits shrink when a run has many trials (:meth:`TextLimits.for_trials`).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..layoutjson import ExperimentSummary, MetaJson, RunJson, Summary
from .atomic import finite
from .layout import META, read_object
from .paths import RunPaths
from .trialdir import DIFF, METRICS, STDOUT, VERIFY, TrialDir
from .walk import TrialPath, iter_trial_dirs, subdirs

#: The meta.json fields shown with a trial (when present), in this order.
META_FIELDS = (
    "status",
    "error_kind",
    "message",
    "reward",
    "rewards",
    "pass_threshold",
    "duration",
    "setup_duration",
    "agent_duration",
    "verify_duration",
    "setup_exit",
    "agent_exit",
    "verify_exit",
    "model",
    "seed",
    "worker",
    "resumed",
    "crashed",
    "attempt",
    "attempts",
    "started_at",
    "finished_at",
    "nodeid",
    "pier_trial_dir",
)
#: Columns of :attr:`RunView.rows` (one list per trial, compact for large runs).
ROW_COLUMNS = (
    "variant",  # index into RunView.variants
    "task",  # index into RunView.tasks
    "trial",
    "status",
    "reward",
    "duration",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "message",
)
_MESSAGE_LIMIT = 240


@dataclass(frozen=True)
class TextLimits:
    """Bytes kept of each trial text: heads of the prompt and the diff, tails of outputs."""

    prompt: int = 8_000
    output: int = 12_000
    diff: int = 24_000
    verify: int = 6_000

    @property
    def per_trial(self) -> int:
        return self.prompt + self.output + self.diff + self.verify

    @classmethod
    def for_trials(cls, n_trials: int, budget: int = 24 * 1024 * 1024) -> TextLimits:
        """The default limits, scaled down so that ``n_trials`` trials fit in ``budget`` bytes
        (never below 256 bytes a text)."""
        full = cls()
        if n_trials <= 0 or n_trials * full.per_trial <= budget:
            return full
        scale = budget / (n_trials * full.per_trial)
        return cls(
            *(max(256, int(v * scale)) for v in (full.prompt, full.output, full.diff, full.verify))
        )


@dataclass
class Text:
    """A piece of a file: ``text`` is its head (``keep="head"``) or tail, ``size`` the file's
    whole size in bytes and ``cut`` whether ``text`` is shorter than the file."""

    text: str
    size: int
    cut: bool
    keep: str

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "size": self.size, "cut": self.cut, "keep": self.keep}


@dataclass
class RunView:
    """Everything a report shows of one run."""

    run_dir: str
    run: RunJson
    summary: Summary
    #: This run's entry of summary.json's ``experiments`` ({} without a summary).
    experiment: ExperimentSummary
    limits: TextLimits
    #: Variant / task names in summary order (then any found only on disk).
    variants: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    variant_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: One list per trial, columns :data:`ROW_COLUMNS`.
    rows: list[list[Any]] = field(default_factory=list)
    #: One dict per trial (same order as rows): texts, meta fields, paths.
    details: list[dict[str, Any]] = field(default_factory=list)
    #: Distinct prompts (trials point into this list: most trials of a task share one).
    prompts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The view as plain data, the input of :func:`pytest_evalrun.report.html.render_html`."""
        data = {k: v for k, v in self.__dict__.items() if k != "limits"}
        data["limits"] = dict(self.limits.__dict__)
        data["columns"] = list(ROW_COLUMNS)
        return data


def _open(path: Path) -> int | None:
    """A descriptor of ``path`` when it is a regular file and not a link (a link could point
    outside the run); None otherwise. The directories above it were checked while walking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None


def read_part(path: Path, limit: int, keep: str) -> Text:
    """The head or tail of a file, at most ``limit`` bytes (cut at a line break when one is
    near), decoded as UTF-8 with replacement characters; empty when missing or a link."""
    fd = _open(path)
    if fd is None:
        return Text("", 0, False, keep)
    try:
        with open(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= limit:
                data = fh.read()
            elif keep == "head":
                data = fh.read(limit)
            else:
                fh.seek(size - limit)
                data = fh.read(limit)
    except OSError:
        return Text("", 0, False, keep)
    cut = len(data) < size
    if cut:
        data = _at_line(data, keep)
    return Text(data.decode("utf-8", errors="replace"), size, cut, keep)


def _at_line(data: bytes, keep: str) -> bytes:
    """Drop the partial line at the cut (when a line break is within the last quarter)."""
    if keep == "head":
        nl = data.rfind(b"\n")
        return data[: nl + 1] if nl >= len(data) * 3 // 4 else data
    nl = data.find(b"\n")
    return data[nl + 1 :] if 0 <= nl <= len(data) // 4 else data


def _cut_text(text: str, limit: int, keep: str) -> Text:
    """A string cut like a file (verify's output tail is stored inside verify.json)."""
    raw = text.encode("utf-8", errors="replace")
    if len(raw) <= limit:
        return Text(text, len(raw), False, keep)
    part = raw[:limit] if keep == "head" else raw[-limit:]
    return Text(_at_line(part, keep).decode("utf-8", errors="replace"), len(raw), True, keep)


def _json_obj(path: Path) -> dict[str, Any]:
    # a NaN an old run wrote shows as none
    data: dict[str, Any] = finite(read_object(path, follow_links=False) or {})
    return data


def _children(directory: Path) -> list[Path]:
    """Sub-directories of ``directory`` as :mod:`.walk` lists them (hidden ones and links
    left out; none when ``directory`` is a link)."""
    if directory.is_symlink():
        return []
    return [directory / name for name in subdirs(directory)]


def _experiment(summary: Summary, run: RunJson, run_dir: Path) -> ExperimentSummary:
    """This run's entry of summary.json's ``experiments`` (a session may run several)."""
    exps = [e for e in summary.get("experiments") or [] if isinstance(e, dict)]
    for exp in exps:
        if exp.get("run_id") == run_dir.name and exp.get("name") == run.get("experiment"):
            return exp
    for exp in exps:
        if exp.get("results_dir") == str(run_dir):
            return exp
    return exps[0] if len(exps) == 1 else {}


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def load_run(run_dir: Path, limits: TextLimits | None = None) -> RunView:
    """Read one run directory (``results/<experiment>/<run-id>/``)."""
    run_dir = Path(os.path.realpath(run_dir))
    paths = RunPaths(run_dir.parent.parent, run_dir.parent.name, run_dir.name)
    run = cast(RunJson, _json_obj(paths.run_json))
    summary = cast(Summary, _json_obj(paths.summary_json))
    exp = _experiment(summary, run, run_dir)
    found = list(iter_trial_dirs(paths.run_dir))
    view = RunView(
        str(run_dir),
        run,
        summary,
        exp,
        limits or TextLimits.for_trials(len(found)),
        variants=[v["name"] for v in exp.get("variants") or [] if isinstance(v, dict)],
        tasks=[t["name"] for t in exp.get("tasks") or [] if isinstance(t, dict)],
    )
    slug_names: dict[tuple[str, str], tuple[str, str]] = {}
    for vdir in _children(paths.run_dir / "variants"):  # variants/<slug>/variant.json
        info = _json_obj(vdir / "variant.json")
        name = str(info.get("name") or vdir.name)
        view.variant_info[name] = {
            k: info.get(k) for k in ("model", "description", "agent", "setup") if info.get(k)
        }
        for tdir in _children(paths.variant_dir(vdir.name) / "tasks"):
            tinfo = _json_obj(tdir / "task.json")
            tname = str(tinfo.get("name") or tdir.name)
            slug_names[(vdir.name, tdir.name)] = (name, tname)
            view.task_info.setdefault(
                tname,
                {k: tinfo.get(k) for k in ("description", "tags", "verify") if tinfo.get(k)},
            )
    prompt_ids: dict[str, int] = {}
    for tf in found:
        _add_trial(view, tf, slug_names, prompt_ids)
    vorder = {v: i for i, v in enumerate(view.variants)}
    torder = {t: i for i, t in enumerate(view.tasks)}
    order = sorted(
        range(len(view.rows)),
        key=lambda i: (
            vorder.get(view.variants[view.rows[i][0]], 0),
            torder.get(view.tasks[view.rows[i][1]], 0),
            view.rows[i][2],
        ),
    )
    view.rows = [view.rows[i] for i in order]
    view.details = [view.details[i] for i in order]
    return view


def _index(names: list[str], name: str) -> int:
    try:
        return names.index(name)
    except ValueError:
        names.append(name)
        return len(names) - 1


def _add_trial(
    view: RunView,
    tf: TrialPath,
    slug_names: dict[tuple[str, str], tuple[str, str]],
    prompt_ids: dict[str, int],
) -> None:
    trial, limits = TrialDir(tf.path), view.limits
    meta = cast(MetaJson, _json_obj(trial.file(META)))
    verify = _json_obj(trial.file(VERIFY))
    metrics = _json_obj(trial.file(METRICS)) or dict(meta.get("metrics") or {})
    vname, tname = slug_names.get((tf.variant, tf.task), (tf.variant, tf.task))
    vname = str(meta.get("variant") or vname)
    tname = str(meta.get("task") or tname)
    status = str(meta.get("status") or "unknown")
    message = str(meta.get("message") or "")
    if len(message) > _MESSAGE_LIMIT:
        message = message[: _MESSAGE_LIMIT - 1] + "\u2026"
    view.rows.append(
        [
            _index(view.variants, vname),
            _index(view.tasks, tname),
            tf.trial,
            status,
            _num(meta.get("reward")),
            _num(meta.get("duration")),
            _num(metrics.get("input_tokens")),
            _num(metrics.get("output_tokens")),
            _num(metrics.get("cost_usd")),
            message,
        ]
    )
    prompt = read_part(trial.prompt, limits.prompt, "head").to_json()
    key = json.dumps(prompt, sort_keys=True)
    if key not in prompt_ids:
        prompt_ids[key] = len(view.prompts)
        view.prompts.append(prompt)
    tail = verify.get("stdout_tail")
    if not isinstance(tail, str):
        tail = meta.get("verify_tail") if isinstance(meta.get("verify_tail"), str) else ""
    # a preset's transcript (session.md, promoted to the trial root) reads better than the
    # CLI's raw stream (stdout.txt, still in the trial directory)
    output = read_part(trial.file(SESSION_MD), limits.output, "tail")
    output_file = SESSION_MD
    if not output.text:
        output, output_file = read_part(trial.file(STDOUT), limits.output, "tail"), STDOUT
    view.details.append(
        {
            "prompt": prompt_ids[key],
            "output": output.to_json(),
            "output_file": output_file,
            "diff": read_part(trial.file(DIFF), limits.diff, "head").to_json(),
            "verify": _cut_text(str(tail), limits.verify, "tail").to_json(),
            "verify_exit": verify.get("exit_code"),
            "meta": _shown_meta(meta),
            "metrics": {
                k: metrics.get(k)
                for k in ("input_tokens", "output_tokens", "cache_tokens", "cost_usd", "model")
                if metrics.get(k) is not None
            },
            "dir": str(trial.path),  # where it was read (meta.json's trial_dir may be older)
        }
    )


#: The agent's transcript a preset writes (agents/evidence.py), shown instead of stdout.txt.
SESSION_MD = "session.md"


def _shown_meta(meta: MetaJson) -> dict[str, Any]:
    """meta.json's fields for the trial's detail; its Harbor directory relative to the jobs
    directory (meta.json says where it was written: another machine's path after a merge)."""
    record: Mapping[str, Any] = meta  # META_FIELDS are keys of MetaJson
    shown = {k: record[k] for k in META_FIELDS if record.get(k) not in (None, "", {})}
    pier = shown.get("pier_trial_dir")
    if isinstance(pier, str):
        job, name = os.path.split(pier.rstrip("/"))
        shown["pier_trial_dir"] = f"jobs/{os.path.basename(job)}/{name}"
    return shown


__all__ = ["ROW_COLUMNS", "RunView", "Text", "TextLimits", "load_run"]
