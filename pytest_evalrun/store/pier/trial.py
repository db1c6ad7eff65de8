"""One Pier trial directory: ``config.json``, ``trial.log``, ``exception.txt``, ``agent/``,
``verifier/`` and ``artifacts/``, from a trial's outcome and its standard trial directory.

:func:`write_trial_dir` writes everything but the trial's ``result.json`` and returns it: the
job (:mod:`.job`) writes it under its lock, with the trial's stats delta.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_evalrun.experiment.model import Experiment, Task, Variant
from pytest_evalrun.outcome import TrialOutcome
from pytest_evalrun.secrets import Redactor
from pytest_evalrun.store.atomic import write_json_atomic, write_text_atomic
from pytest_evalrun.store.pier.config import agent_version, split_model
from pytest_evalrun.store.pier.files import json_or_none
from pytest_evalrun.store.pier.links import LinkMode, link_file, mirror_tree
from pytest_evalrun.store.pier.records import TrialContext, trial_config, trial_log, trial_result
from pytest_evalrun.store.pier.trajectory import events_to_trajectory, read_events

#: Standard-layout files that are the agent's own logs: they go to ``agent/``.
AGENT_LOG_NAMES = ("events.jsonl", "session.md", "metrics.json", "analysis.json")
#: An ATIF trajectory the agent wrote itself (a preset's, from the CLI's own transcript): used
#: as ``agent/trajectory.json`` instead of converting ``events.jsonl``.
TRAJECTORY_NAME = "trajectory.json"


def _is_otel(name: str) -> bool:
    return name.endswith(".jsonl") and "otel" in name.lower()


def _is_agent_log(name: str) -> bool:
    return name in AGENT_LOG_NAMES or name == TRAJECTORY_NAME or _is_otel(name)


def write_trial_dir(
    path: Path,
    outcome: TrialOutcome,
    *,
    job_dir: Path,
    job_id: str,
    run_id: str,
    trial_dir: Path | None,
    experiment: Experiment | None,
    variant: Variant | None,
    task: Task | None,
    secrets: Iterable[str],
    link_mode: LinkMode,
) -> dict[str, Any]:
    """Write the claimed trial directory ``path``; return its TrialResult (not yet written)."""
    src = Path(trial_dir) if trial_dir is not None else None
    if src is not None and not src.is_dir():
        src = None
    ctx = TrialContext(
        name=path.name,
        path=path,
        job_dir=job_dir,
        job_id=job_id,
        run_id=run_id,
        experiment=experiment,
        variant=variant,
        task=task,
        src=src,
        redactor=Redactor([*secrets, *(experiment.secret_values if experiment else ())]),
        version=agent_version(variant, _cli_version(variant, src)),
        model_info=split_model((variant.model if variant else None) or outcome.model),
    )
    # A re-write starts from a clean directory (result/config/marker stay until replaced).
    for child in ("agent", "verifier", "artifacts"):
        shutil.rmtree(path / child, ignore_errors=True)
    for child in ("exception.txt", "trial.log"):
        with contextlib.suppress(FileNotFoundError):
            (path / child).unlink()
    verify_json = json_or_none(src / "verify.json") if src else None
    if not isinstance(verify_json, dict):
        verify_json = {}

    _write_agent_dir(ctx, outcome, path / "agent", link_mode)
    _write_verifier_dir(ctx, outcome, path / "verifier", verify_json, link_mode)
    _write_artifacts_dir(path / "artifacts", src, link_mode)

    config = trial_config(ctx, outcome)
    result = trial_result(ctx, outcome, config, verify_json)
    exception = result.get("exception_info")
    if exception:
        write_text_atomic(path / "exception.txt", exception["exception_traceback"] + "\n")
    write_text_atomic(path / "trial.log", trial_log(ctx, outcome, result))
    write_json_atomic(path / "config.json", config)
    return result


def _cli_version(variant: Variant | None, src: Path | None) -> str | None:
    """The agent CLI's version a preset read from the CLI's own records: the ``agent.version``
    of the trajectory it wrote (``artifacts/trajectory.json``); read for preset variants only,
    a plain agent may write that file itself."""
    if src is None or variant is None or variant.agent.kind != "preset":
        return None
    path = src / "artifacts" / TRAJECTORY_NAME
    if path.is_symlink():
        return None
    doc = json_or_none(path)
    agent = doc.get("agent") if isinstance(doc, dict) else None
    version = agent.get("version") if isinstance(agent, dict) else None
    return version if isinstance(version, str) else None


def _command_text(variant: Variant) -> str:
    described = variant.agent.describe()
    value = described.get("command", described)
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _write_agent_dir(
    ctx: TrialContext, outcome: TrialOutcome, agent_dir: Path, link_mode: LinkMode
) -> None:
    """``agent/``: the command as Harbor's installed agents lay it out, the agent's logs and
    its ATIF ``trajectory.json``: the agent's own (``artifacts/trajectory.json``) when there is
    one, else its ``events.jsonl`` converted."""
    command_dir = agent_dir / "command-0"
    command_dir.mkdir(parents=True, exist_ok=True)
    if ctx.variant is not None:
        text = _command_text(ctx.variant)
        write_text_atomic(command_dir / "command.txt", ctx.redactor.redact(text) + "\n")
    if outcome.agent_exit is not None:
        write_text_atomic(command_dir / "return-code.txt", f"{outcome.agent_exit}\n")
    src = ctx.src
    if src is None:
        return
    if (src / "stdout.txt").is_file():
        link_file(src / "stdout.txt", command_dir / "stdout.txt", link_mode)
    if (src / "prompt.md").is_file():
        link_file(src / "prompt.md", agent_dir / "prompt.md", link_mode)
    events_path: Path | None = None
    for base in (src, src / "artifacts"):
        if not base.is_dir() or base.is_symlink():  # never through a link the agent made
            continue
        for entry in sorted(base.iterdir()):
            if not entry.is_file() or entry.is_symlink() or not _is_agent_log(entry.name):
                continue
            if not (agent_dir / entry.name).exists():
                link_file(entry, agent_dir / entry.name, link_mode)
            if entry.name == "events.jsonl" and events_path is None:
                events_path = entry
    if (agent_dir / TRAJECTORY_NAME).exists() or events_path is None:
        return
    events = read_events(events_path)
    if events is None:
        return
    trajectory = events_to_trajectory(
        events,
        agent_name=outcome.variant,
        agent_version=ctx.version,
        model_name=ctx.model_info["name"] if ctx.model_info else None,
        session_id=ctx.name,
    )
    if trajectory is not None:
        write_json_atomic(agent_dir / "trajectory.json", ctx.redactor.redact_obj(trajectory))


def _write_verifier_dir(
    ctx: TrialContext,
    outcome: TrialOutcome,
    verifier_dir: Path,
    verify_json: Mapping[str, Any],
    link_mode: LinkMode,
) -> None:
    """``verifier/``: what verify wrote, its output as ``test-stdout.txt``, and a
    ``reward.txt`` when the reward came from verify's exit code."""
    verifier_dir.mkdir(parents=True, exist_ok=True)
    src = ctx.src
    std_verifier = src / "verifier" if src is not None else None
    if std_verifier is not None and std_verifier.is_dir() and not std_verifier.is_symlink():
        mirror_tree(std_verifier, verifier_dir, link_mode, skip=frozenset({"verify-output.txt"}))
        if (std_verifier / "verify-output.txt").is_file():
            link_file(
                std_verifier / "verify-output.txt", verifier_dir / "test-stdout.txt", link_mode
            )
    if src is not None and (src / "verify.json").is_file():
        link_file(src / "verify.json", verifier_dir / "verify.json", link_mode)
    if not (verifier_dir / "test-stdout.txt").exists():
        tail = verify_json.get("stdout_tail") or outcome.verify_tail
        if isinstance(tail, str) and tail:
            write_text_atomic(verifier_dir / "test-stdout.txt", ctx.redactor.redact(tail))
    has_reward_file = (verifier_dir / "reward.txt").exists() or (
        verifier_dir / "reward.json"
    ).exists()
    if not has_reward_file and outcome.reward is not None:
        # Reward from verify's exit code: written as Harbor's verifier would have.
        write_text_atomic(verifier_dir / "reward.txt", f"{float(outcome.reward)}\n")


def _write_artifacts_dir(artifacts_dir: Path, src: Path | None, link_mode: LinkMode) -> None:
    """``artifacts/``: the workspace diff and what the agent left (its logs go to agent/)."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    if src is None:
        return
    if (src / "workspace.diff").is_file():
        link_file(src / "workspace.diff", artifacts_dir / "workspace.diff", link_mode)
    std_artifacts = src / "artifacts"
    if std_artifacts.is_dir() and not std_artifacts.is_symlink():  # never follow the agent's link
        skip = frozenset(
            p.name for p in std_artifacts.iterdir() if p.is_file() and _is_agent_log(p.name)
        )
        mirror_tree(std_artifacts, artifacts_dir, link_mode, skip=skip)
