"""Run one trial: workspace, setup, agent, verify -> files on disk and a TrialOutcome.

Knows nothing of pytest or xdist. The trial directory it fills is the standard layout's
``trials/<NNN>/``; every JSON file is written atomically and secrets are masked in every file
it writes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outcome import ERROR, FAILED, PASSED, TIMEOUT, Metrics, TrialOutcome
from ..secrets import Redactor
from ..spec.model import Experiment, Step, Task, Variant
from ..store.atomic import write_json_atomic, write_text_atomic
from ..store.runs import utc_now
from . import metrics as metrics_mod
from .process import ProcessResult, kill_all_running
from .steps import PYCALL_CRASHED, StepContext, StepKinds, missing
from .workspace import Snapshot, WorkspaceError, prepare_workspace, workspace_diff

SCHEMA_VERSION = 1
TAIL_LINES = 30
#: Files the agent may leave in EVALRUN_ARTIFACTS_DIR that the layout keeps at the trial root.
PROMOTED = ("events.jsonl", "session.md", "analysis.json")


@dataclass
class TrialSpec:
    """Everything that identifies and configures one trial."""

    experiment: Experiment
    variant: Variant
    task: Task
    trial: int
    run_id: str
    trial_dir: Path
    seed: int
    fingerprint: str
    nodeid: str = ""
    worker: str | None = None
    pier_trial_dir: str | None = None
    redactor: Redactor = field(default_factory=lambda: Redactor(()))
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    kinds: StepKinds = field(default_factory=StepKinds.builtin)
    env_hook: Callable[[dict[str, str]], None] | None = None
    #: fixture templates shared by the session's processes (trial/workspace.py)
    templates: Path | None = None


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _redact_file(path: Path, redactor: Redactor) -> None:
    if not redactor or not path.is_file():
        return
    data = path.read_bytes()
    masked = redactor.redact_bytes(data)
    if masked != data:
        tmp = path.with_name(f".{path.name}.redact")
        tmp.write_bytes(masked)
        os.replace(tmp, path)


def _redact_tree(directory: Path, redactor: Redactor) -> None:
    if redactor:
        for path in directory.rglob("*"):
            if path.is_file():
                _redact_file(path, redactor)


def read_reward(verifier_dir: Path) -> tuple[float | None, dict[str, float], str | None]:
    """``(reward, rewards, problem)`` from ``reward.json`` or ``reward.txt`` in verifier_dir."""
    rj, rt = verifier_dir / "reward.json", verifier_dir / "reward.txt"
    if rj.is_file():
        try:
            data = json.loads(rj.read_text(encoding="utf-8"))
        except ValueError as exc:
            return None, {}, f"reward.json is not valid JSON: {exc}"
        if not isinstance(data, dict) or not data:
            return None, {}, "reward.json must be a non-empty flat object of numbers"
        rewards: dict[str, float] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None, {}, f"reward.json: {key!r} is not a number"
            rewards[str(key)] = float(value)
        main = rewards.get("reward")
        if main is None:
            if len(rewards) != 1:
                return None, rewards, "reward.json has several numbers but no 'reward' key"
            main = next(iter(rewards.values()))
        return main, rewards, None
    if rt.is_file():
        text = rt.read_text(encoding="utf-8").strip()
        try:
            value = float(text)
        except ValueError:
            return None, {}, f"reward.txt must hold one number, found {text[:40]!r}"
        return value, {"reward": value}, None
    return None, {}, None


class _Trial:
    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec
        self.dir = spec.trial_dir
        self.workspace = self.dir / "workspace"
        self.artifacts = self.dir / "artifacts"
        self.verifier = self.dir / "verifier"
        self.prompt_file = self.dir / "prompt.md"
        self.snapshot: Snapshot | None = None
        self.steps: dict[str, dict[str, Any]] = {}
        self.started = time.monotonic()
        e, v, t = spec.experiment, spec.variant, spec.task
        self.outcome = TrialOutcome(
            experiment=e.name,
            variant=v.name,
            task=t.name,
            trial=spec.trial,
            status=ERROR,
            experiment_slug=e.slug,
            variant_slug=v.slug,
            task_slug=t.slug,
            nodeid=spec.nodeid,
            run_id=spec.run_id,
            pass_threshold=t.pass_threshold,
            trial_dir=str(self.dir),
            started_at=utc_now(),
            seed=spec.seed,
            model=v.model,
            fingerprint=spec.fingerprint,
            worker=spec.worker,
            pier_trial_dir=spec.pier_trial_dir,
        )

    # -- files ---------------------------------------------------------------------------
    def write_meta(self, status: str | None = None) -> None:
        data = self.outcome.to_dict()
        if status is not None:
            data["status"] = status
        data["schema_version"] = SCHEMA_VERSION
        data["success"] = data["status"] == PASSED
        data["steps"] = self.steps
        write_json_atomic(self.dir / "meta.json", self.spec.redactor.redact_obj(data))

    def prepare(self) -> None:
        if self.dir.exists():  # an earlier attempt (error, crash, changed definition)
            shutil.rmtree(self.dir, ignore_errors=True)
        self.artifacts.mkdir(parents=True)
        self.write_meta(status="running")
        write_text_atomic(
            self.prompt_file, self.spec.redactor.redact(self.spec.task.prompt), fsync=False
        )

    def values(self) -> dict[str, str]:
        s = self.spec
        return {
            "prompt": s.task.prompt,
            "prompt_file": str(self.prompt_file),
            "workspace": str(self.workspace),
            "trial_dir": str(self.dir),
            "artifacts_dir": str(self.artifacts),
            "verifier_dir": str(self.verifier),
            "experiment_dir": str(s.experiment.directory),
            "seed": str(s.seed),
            "trial": str(s.trial),
            "variant": s.variant.name,
            "task": s.task.name,
            "model": s.variant.model or "",
            "run_id": s.run_id,
            "python": sys.executable,
        }

    def env(self) -> dict[str, str]:
        s = self.spec
        env = dict(s.base_env)
        env.update(s.variant.env)
        env.update(s.task.env)
        env.update(
            {
                "EVALRUN_RUN_ID": s.run_id,
                "EVALRUN_EXPERIMENT": s.experiment.name,
                "EVALRUN_VARIANT": s.variant.name,
                "EVALRUN_TASK": s.task.name,
                "EVALRUN_EXPERIMENT_DIR": str(s.experiment.directory),
                "EVALRUN_TRIAL": str(s.trial),
                "EVALRUN_SEED": str(s.seed),
                "EVALRUN_PROMPT_FILE": str(self.prompt_file),
                "EVALRUN_WORKSPACE": str(self.workspace),
                "EVALRUN_TRIAL_DIR": str(self.dir),
                "EVALRUN_ARTIFACTS_DIR": str(self.artifacts),
            }
        )
        if s.variant.model:
            env["EVALRUN_MODEL"] = s.variant.model
        else:
            env.pop("EVALRUN_MODEL", None)
        env.pop("EVALRUN_VERIFIER_DIR", None)
        if s.env_hook is not None:
            s.env_hook(env)
        return env

    # -- steps ---------------------------------------------------------------------------
    def step(
        self, role: str, step: Step, env: Mapping[str, str], timeout: float, output: Path
    ) -> ProcessResult:
        ctx = StepContext(
            role=role,
            cwd=self.workspace,
            env=env,
            timeout=timeout,
            output=output,
            values=self.values(),
            experiment_dir=self.spec.experiment.directory,
        )
        runner = self.spec.kinds.runner(role, step.kind)
        result = runner(step, ctx)
        self.steps[role] = {
            "kind": step.kind,
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "duration": round(result.duration, 4),
            "start_error": result.start_error,
            "timeout": timeout,
        }
        _redact_file(output, self.spec.redactor)
        return result

    def error(self, kind: str, message: str) -> None:
        self.outcome.status = ERROR
        self.outcome.error_kind = kind
        self.outcome.message = self.spec.redactor.redact(message)

    def run(self) -> TrialOutcome:
        s, o = self.spec, self.outcome
        self.prepare()
        try:
            self.snapshot = prepare_workspace(
                s.task.fixture, self.workspace, templates=s.templates
            )
        except (WorkspaceError, OSError) as exc:
            self.error("workspace", f"could not prepare the workspace: {exc}")
            return self.finish()
        env = self.env()
        if s.variant.setup is not None:
            r = self.step(
                "setup", s.variant.setup, env, s.task.setup_timeout, self.dir / "setup-output.txt"
            )
            o.setup_exit, o.setup_duration = r.exit_code, r.duration
            if r.start_error or r.timed_out or r.exit_code != 0:
                why = r.start_error or (
                    f"timed out after {s.task.setup_timeout:g}s"
                    if r.timed_out
                    else f"exited with status {r.exit_code}"
                )
                self.error("setup_failed", f"setup failed: {why}")
                o.verify_tail = self.spec.redactor.redact(
                    tail(_read(self.dir / "setup-output.txt"))
                )
                return self.finish()
        r = self.step("agent", s.variant.agent, env, s.task.timeout, self.dir / "stdout.txt")
        o.agent_exit, o.agent_duration = r.exit_code, r.duration
        self.collect_artifacts()
        if r.start_error:
            self.error("agent_missing", f"the agent could not start: {r.start_error}")
            return self.finish()
        if missing(s.variant.agent, r.exit_code):
            self.error("agent_missing", f"the agent was not found (exit status {r.exit_code})")
            o.verify_tail = self.spec.redactor.redact(tail(_read(self.dir / "stdout.txt")))
            return self.finish()
        if r.timed_out:
            o.status, o.reward = TIMEOUT, 0.0
            o.message = f"the agent ran out of time ({s.task.timeout:g}s)"
            return self.finish()
        self.verify(env)
        return self.finish()

    def collect_artifacts(self) -> None:
        redactor = self.spec.redactor
        try:
            diff = workspace_diff(self.workspace, self.snapshot)
        except (WorkspaceError, OSError) as exc:
            diff = f"# workspace diff unavailable: {exc}\n"
        write_text_atomic(self.dir / "workspace.diff", redactor.redact(diff), fsync=False)
        _redact_tree(self.artifacts, redactor)
        for name in PROMOTED:
            src = self.artifacts / name
            if src.is_file():
                _link_or_copy(src, self.dir / name)
        for src in metrics_mod.otel_files(self.artifacts):
            _link_or_copy(src, self.dir / src.name)
        self.outcome.metrics = metrics_mod.collect(self.artifacts)
        if self.outcome.metrics.model is None and self.spec.variant.model:
            self.outcome.metrics.model = self.spec.variant.model

    def verify(self, env: Mapping[str, str]) -> None:
        s, o = self.spec, self.outcome
        venv = dict(env)
        venv["EVALRUN_VERIFIER_DIR"] = str(self.verifier)
        # Only verify writes here: whatever the agent may have put there goes first.
        shutil.rmtree(self.verifier, ignore_errors=True)
        self.verifier.mkdir()
        output = self.verifier / "verify-output.txt"
        r = self.step("verify", s.task.verify, venv, s.task.verify_timeout, output)
        _redact_tree(self.verifier, s.redactor)
        o.verify_exit, o.verify_duration = r.exit_code, r.duration
        o.verify_tail = tail(_read(output))
        reward, rewards, problem = read_reward(self.verifier)
        o.rewards = rewards
        crashed = (
            (r.exit_code is not None and r.exit_code < 0)
            or (s.task.verify.kind == "python" and r.exit_code == PYCALL_CRASHED)
            or missing(s.task.verify, r.exit_code)
        )
        if r.start_error:
            self.error("verify_crashed", f"verify could not start: {r.start_error}")
        elif r.timed_out:
            self.error("verify_timeout", f"verify timed out after {s.task.verify_timeout:g}s")
        elif crashed:
            self.error("verify_crashed", f"verify crashed (exit status {r.exit_code})")
        elif problem is not None:
            self.error("verify_crashed", f"verify wrote a bad reward: {problem}")
        elif r.exit_code != 0:
            o.status, o.reward = FAILED, reward if reward is not None else 0.0
            o.message = f"verify rejected the result (exit status {r.exit_code})"
        else:
            o.reward = reward if reward is not None else 1.0
            if o.reward >= s.task.pass_threshold:
                o.status = PASSED
            else:
                o.status = FAILED
                o.message = (
                    f"reward {o.reward:g} is below the pass threshold {s.task.pass_threshold:g}"
                )
        write_json_atomic(
            self.dir / "verify.json",
            s.redactor.redact_obj(
                {
                    "status": o.status,
                    "exit_code": r.exit_code,
                    "timed_out": r.timed_out,
                    "duration": round(r.duration, 4),
                    "reward": o.reward,
                    "rewards": rewards,
                    "pass_threshold": s.task.pass_threshold,
                    "passed": o.status == PASSED,
                    "command": s.task.verify.describe(),
                    "stdout_tail": o.verify_tail,
                    "error": o.message if o.status == ERROR else None,
                }
            ),
            fsync=False,
        )

    def finish(self) -> TrialOutcome:
        o = self.outcome
        o.finished_at = utc_now()
        o.duration = round(time.monotonic() - self.started, 4)
        m = o.metrics
        write_json_atomic(
            self.dir / "metrics.json",
            {
                "duration": o.duration,
                "setup_duration": o.setup_duration,
                "agent_duration": o.agent_duration,
                "verify_duration": o.verify_duration,
                "input_tokens": m.input_tokens,
                "output_tokens": m.output_tokens,
                "cache_tokens": m.cache_tokens,
                "cost_usd": m.cost_usd,
                "model": m.model or self.spec.variant.model,
                "source": m.source,
            },
            fsync=False,
        )
        for name in ("stdout.txt", "workspace.diff"):
            if not (self.dir / name).exists():
                write_text_atomic(self.dir / name, "", fsync=False)
        if not (self.dir / "verify.json").exists():
            write_json_atomic(
                self.dir / "verify.json",
                {
                    "status": o.status,
                    "exit_code": None,
                    "reward": None,
                    "rewards": {},
                    "passed": False,
                    "command": self.spec.task.verify.describe(),
                    "stdout_tail": "",
                    "error": o.message or None,
                    "skipped": True,
                },
                fsync=False,
            )
        self.write_meta()
        return o


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Run one trial to its outcome. Ctrl-C kills the running step's process tree, records the
    trial as ``error`` (interrupted), and re-raises."""
    trial = _Trial(spec)
    try:
        return trial.run()
    except KeyboardInterrupt:
        kill_all_running()
        trial.error("interrupted", "the run was interrupted while this trial ran")
        try:
            trial.finish()
        finally:
            raise
    except Exception as exc:  # our own bug: record it rather than lose the trial
        kill_all_running()
        trial.error("internal", f"pytest-evalrun internal error: {type(exc).__name__}: {exc}")
        trial.finish()
        return trial.outcome


def resumed_copy(data: dict[str, Any]) -> TrialOutcome:
    outcome = TrialOutcome.from_dict(data)
    outcome.resumed = True
    if outcome.metrics is None:
        outcome.metrics = Metrics()
    return outcome
