"""Run one trial: workspace, setup, agent, verify -> files on disk and a TrialOutcome.

Knows nothing of pytest, xdist or the Pier layout. The directory it fills is the standard
layout's ``trials/<NNN>/``, through :class:`~pytest_evalrun.store.trialdir.TrialDir` (which
writes every file atomically, with secrets masked).

Isolation (contract section 6): each step runs in a :class:`~.sandbox.Sandbox` of its own
(bubblewrap where it works: the host read-only, the workspace at ``/tmp/workspace``, the
artifacts directory, and for verify the verifier directory, writable, the results and jobs
roots hidden but for the trial's own directory), with the clean environment of
:func:`~.environment.step_environment`.  Unsandboxed, the workspace lives in a temporary
directory outside the suite while the trial runs (so tools run in it never find the suite's
``pytest.ini``, ``conftest.py`` or ``.git``), and is moved into the trial directory at the end.
After the trial every file of the trial directory is masked (also after Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..outcome import ERROR, FAILED, PASSED, TIMEOUT, TrialOutcome
from ..secrets import Redactor
from ..spec.model import Experiment, Step, Task, Variant
from ..store import trialdir
from ..store.runs import utc_now
from ..store.trialdir import TrialDir
from . import metrics as metrics_mod
from .environment import step_environment
from .phases import phase_view
from .process import ProcessResult, kill_all_running
from .sandbox import WORKSPACE_INSIDE, Isolation, Sandbox, SandboxError, SandboxPolicy, resolve
from .steps import PYCALL_CRASHED, StepContext, StepKinds, missing
from .workspace import Snapshot, WorkspaceError, prepare_workspace, workspace_diff

TAIL_LINES = 30
#: Appended to "the agent was not found" in a sandbox: how to make a program visible.
NOT_VISIBLE = (
    "; in its sandbox the agent sees the system's directories, its own program and the paths "
    "listed under 'sandbox: read:' (docs/isolation.md): if the program (or one it runs) is "
    "installed elsewhere, list its directory under 'sandbox: read:' in {file}"
)
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
    #: TrialOutcome fields the caller records with the trial (its node id, worker, the other
    #: layouts' names for it); the runner passes them through without reading them.
    labels: Mapping[str, Any] = field(default_factory=dict)
    redactor: Redactor = field(default_factory=lambda: Redactor(()))
    #: The evaluator's environment: a step gets only its base, ``env_passthrough`` names and
    #: the declared ``env`` (:func:`~.environment.step_environment`).
    base_env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    kinds: StepKinds = field(default_factory=StepKinds.builtin)
    env_hook: Callable[[dict[str, str]], None] | None = None
    #: fixture templates shared by the session's processes (trial/workspace.py)
    templates: Path | None = None
    #: How often an ``error`` outcome is run again inside the trial (``retries:``).
    retries: int = 0
    #: Why the trial runs again when its directory holds an earlier attempt.
    rerun_reason: str = "rerun"
    #: ``--eval-sandbox`` (None: the variant's ``sandbox:`` mode).
    sandbox_mode: str | None = None
    #: Directories no sandboxed step may see (the results and jobs roots), but for the
    #: trial's own directory.
    hide: tuple[Path, ...] = ()
    #: Directories setup may read besides the experiment directory (pytest's rootdir); the
    #: agent and verify do not see them (trial/phases.py).
    read: tuple[Path, ...] = ()


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


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
    def __init__(self, spec: TrialSpec, rerun_reason: str) -> None:
        self.spec = spec
        self.rerun_reason = rerun_reason
        self.files = TrialDir(spec.trial_dir, spec.redactor)
        self.dir = spec.trial_dir
        #: The workspace while the trial runs (unsandboxed: in :attr:`scratch`).
        self.workspace = self.files.workspace
        #: Unsandboxed: a temporary directory outside the suite (workspace, private homes).
        self.scratch: Path | None = None
        self.isolation: Isolation | None = None
        self.trial_env: dict[str, str] = {}
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
            run_id=spec.run_id,
            pass_threshold=t.pass_threshold,
            trial_dir=str(self.dir),
            started_at=utc_now(),
            seed=spec.seed,
            model=v.model,
            fingerprint=spec.fingerprint,
            **spec.labels,
        )

    @property
    def sandboxed(self) -> bool:
        return self.isolation is not None and self.isolation.sandbox == "bwrap"

    def inside(self, path: Path) -> str:
        """``path`` as a step sees it (the workspace moves to ``/tmp/workspace`` when
        sandboxed; every other path is bound at its own)."""
        text = os.path.abspath(path)
        root = os.path.abspath(self.workspace)
        if self.sandboxed and (text == root or text.startswith(root + os.sep)):
            return WORKSPACE_INSIDE + text[len(root) :]
        return text

    def values(self) -> dict[str, str]:
        s, f = self.spec, self.files
        return {
            "prompt": s.task.prompt,
            "prompt_file": str(f.prompt),
            "workspace": self.inside(self.workspace),
            "trial_dir": str(self.dir),
            "artifacts_dir": str(f.artifacts),
            "verifier_dir": str(f.verifier),
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
        """The trial's own variables: the declared ``env`` (variant, then task), the
        ``EVALRUN_*`` variables, and what ``pytest_evalrun_trial_env`` hooks changed.  Each
        step adds the clean base to it (:meth:`step`)."""
        s, f = self.spec, self.files
        env: dict[str, str] = {}
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
                "EVALRUN_PROMPT_FILE": str(f.prompt),
                "EVALRUN_WORKSPACE": self.inside(self.workspace),
                "EVALRUN_TRIAL_DIR": str(self.dir),
                "EVALRUN_ARTIFACTS_DIR": str(f.artifacts),
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

    def sandbox(self, role: str, writable: tuple[Path, ...]) -> Sandbox:
        """The isolation of one step (:class:`SandboxError` when it cannot be had)."""
        s = self.spec
        assert self.isolation is not None
        user = s.variant.sandbox
        view = phase_view(
            role,
            trial_dir=self.dir,
            prompt_file=self.files.prompt,
            artifacts=self.files.artifacts,
            experiment_dir=s.experiment.directory,
            rootdirs=s.read,
            hide=s.hide,
        )
        policy = SandboxPolicy(
            mode=self.isolation.requested,
            workspace=self.workspace,
            writable=tuple(dict.fromkeys((*view.writable, *writable))),
            read=(*view.read, *user.read),
            write=user.write,
            hide=view.hide,
            network=s.variant.network,
            protect=(s.experiment.directory, *s.read),
        )
        private = self.scratch / "steps" / role if self.scratch is not None else None
        if private is not None and private.exists():
            shutil.rmtree(private, ignore_errors=True)
        return Sandbox(policy, private=private, isolation=self.isolation)

    # -- steps ---------------------------------------------------------------------------
    def step(
        self,
        role: str,
        step: Step,
        env: Mapping[str, str],
        timeout: float,
        output: Path,
        writable: tuple[Path, ...] = (),
    ) -> ProcessResult:
        s = self.spec
        try:
            box = self.sandbox(role, (self.files.artifacts, *writable))
        except (SandboxError, OSError) as exc:
            message = f"cannot isolate the {role} step: {exc}"
            self.files.write_text(output.relative_to(self.dir).as_posix(), f"evalrun: {message}\n")
            result = ProcessResult(None, False, 0.0, start_error=message)
        else:
            step_env = step_environment(
                inherited=s.base_env,
                declared=env,
                env_passthrough=s.variant.env_passthrough,
                home=box.home,
                cwd=self.inside(self.workspace),
                tmpdir=box.tmp,
            )
            ctx = StepContext(
                role=role,
                cwd=self.workspace,
                env=step_env,
                timeout=timeout,
                output=output,
                values=self.values(),
                experiment_dir=s.experiment.directory,
                sandbox=box,
                pricing=s.variant.pricing,
            )
            runner = s.kinds.runner(role, step.kind)
            result = runner(step, ctx)
        self.steps[role] = {
            "kind": step.kind,
            "exit_code": result.exit_code,
            "timed_out": result.timed_out,
            "duration": round(result.duration, 4),
            "start_error": result.start_error,
            "timeout": timeout,
        }
        self.files.redact_file(output)
        return result

    def error(self, kind: str, message: str) -> None:
        self.outcome.status = ERROR
        self.outcome.error_kind = kind
        self.outcome.message = self.spec.redactor.redact(message)

    def isolate(self) -> bool:
        """Decide the trial's isolation (False, and an ``error`` outcome, when it cannot
        have the one asked for); unsandboxed, the workspace goes to a temporary directory."""
        s, o = self.spec, self.outcome
        mode = s.sandbox_mode or s.variant.sandbox.mode
        try:
            self.isolation = resolve(mode)
        except SandboxError as exc:
            o.isolation = {"sandbox": "none", "requested": mode, "reason": str(exc)}
            self.error("sandbox", str(exc))
            return False
        o.isolation = {**self.isolation.to_dict(), "network": s.variant.network}
        if not self.sandboxed:
            self.scratch = Path(tempfile.mkdtemp(prefix="evalrun-trial-"))
            self.workspace = self.scratch / "workspace"
        return True

    def run(self) -> TrialOutcome:
        s, o, f = self.spec, self.outcome, self.files
        f.start(o, s.task.prompt, self.rerun_reason)
        if not self.isolate():
            return self.finish()
        try:
            self.snapshot = prepare_workspace(s.task.fixture, self.workspace, templates=s.templates)
        except (WorkspaceError, OSError) as exc:
            self.error("workspace", f"could not prepare the workspace: {exc}")
            return self.finish()
        env = self.env()
        if s.variant.setup is not None:
            output = f.file(trialdir.SETUP_OUTPUT)
            r = self.step("setup", s.variant.setup, env, s.task.setup_timeout, output)
            o.setup_exit, o.setup_duration = r.exit_code, r.duration
            if r.start_error or r.timed_out or r.exit_code != 0:
                why = r.start_error or (
                    f"timed out after {s.task.setup_timeout:g}s"
                    if r.timed_out
                    else f"exited with status {r.exit_code}"
                )
                self.error("setup_failed", f"setup failed: {why}")
                o.verify_tail = s.redactor.redact(tail(f.read_text(trialdir.SETUP_OUTPUT)))
                return self.finish()
        r = self.step("agent", s.variant.agent, env, s.task.timeout, f.file(trialdir.STDOUT))
        o.agent_exit, o.agent_duration = r.exit_code, r.duration
        self.collect_artifacts()
        if r.start_error:
            self.error("agent_missing", f"the agent could not start: {r.start_error}")
            return self.finish()
        if missing(s.variant.agent, r.exit_code):
            hint = NOT_VISIBLE.format(file=s.experiment.path) if self.sandboxed else ""
            self.error(
                "agent_missing", f"the agent was not found (exit status {r.exit_code}){hint}"
            )
            o.verify_tail = s.redactor.redact(tail(f.read_text(trialdir.STDOUT)))
            return self.finish()
        if r.timed_out:
            o.status, o.reward = TIMEOUT, 0.0
            o.message = f"the agent ran out of time ({s.task.timeout:g}s)"
            return self.finish()
        self.verify(env)
        return self.finish()

    def collect_artifacts(self) -> None:
        f = self.files
        self.secure_artifacts()
        try:
            diff = workspace_diff(self.workspace, self.snapshot, redactor=self.spec.redactor)
        except (WorkspaceError, OSError) as exc:
            diff = f"# workspace diff unavailable: {exc}\n"
        f.write_text(trialdir.DIFF, diff)
        f.redact_tree(f.artifacts)
        for name in PROMOTED:
            src = f.artifacts / name
            if src.is_file() and not src.is_symlink():
                _link_or_copy(src, f.file(name))
        for src in metrics_mod.otel_files(f.artifacts):
            _link_or_copy(src, f.file(src.name))
        self.outcome.metrics = metrics_mod.collect(f.artifacts)
        self.outcome.session_id = metrics_mod.session_id(f.artifacts)
        if self.outcome.metrics.model is None and self.spec.variant.model:
            self.outcome.metrics.model = self.spec.variant.model

    def secure_artifacts(self) -> None:
        """An artifacts directory the agent replaced (by a symlink to a directory outside, or
        a file) is replaced by an empty one: nothing later follows the agent's link."""
        art = self.files.artifacts
        if art.is_dir() and not art.is_symlink():
            return
        with contextlib.suppress(OSError):
            if art.is_symlink() or not art.is_dir():
                art.unlink()
        art.mkdir(exist_ok=True)
        (art / "evalrun-note.txt").write_text(
            "evalrun: the agent replaced this directory (by a link or a file); "
            "its content was not kept\n"
        )

    def verify(self, env: Mapping[str, str]) -> None:
        s, o, f = self.spec, self.outcome, self.files
        venv = dict(env)
        verifier = f.fresh_verifier()
        venv["EVALRUN_VERIFIER_DIR"] = str(verifier)
        output = verifier / trialdir.VERIFY_OUTPUT
        r = self.step(
            "verify", s.task.verify, venv, s.task.verify_timeout, output, writable=(verifier,)
        )
        f.redact_tree(verifier)
        o.verify_exit, o.verify_duration = r.exit_code, r.duration
        o.verify_tail = tail(f.read_text(f"verifier/{trialdir.VERIFY_OUTPUT}"))
        reward, rewards, problem = read_reward(verifier)
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
        f.write_json(
            trialdir.VERIFY,
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
            },
        )

    def settle(self) -> None:
        """Unsandboxed: move the workspace into the trial directory and remove the temporary
        directory; then mask every file of the trial (its own JSON files are masked as they
        are written)."""
        f = self.files
        if self.scratch is not None:
            scratch, self.scratch = self.scratch, None
            try:
                if os.path.lexists(self.workspace) and not os.path.lexists(f.workspace):
                    shutil.move(str(self.workspace), str(f.workspace))
                    self.workspace = f.workspace
            except OSError as exc:
                self.outcome.message = self.outcome.message or f"workspace not kept: {exc}"
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        f.redact_all()

    def finish(self) -> TrialOutcome:
        o, f = self.outcome, self.files
        self.settle()
        o.finished_at = utc_now()
        o.duration = round(time.monotonic() - self.started, 4)
        m = o.metrics
        f.write_json(
            trialdir.METRICS,
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
        )
        f.ensure_files(
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
            }
        )
        f.write_meta(o, self.steps)
        return o


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        if dst.exists():
            dst.unlink()
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


#: Seconds to wait before retry k (1-based) of an ``error`` outcome: 0.5, 1, 2, ... at most 8.
def retry_backoff(k: int) -> float:
    return float(min(0.5 * 2 ** (k - 1), 8.0))


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Run one trial to its outcome, retrying an ``error`` outcome up to ``spec.retries``
    times (every attempt's files kept in ``attempts/<k>/``). Ctrl-C kills the running step's
    process tree, records the trial as ``error`` (interrupted), and re-raises."""
    outcome = _attempt(spec, spec.rerun_reason)
    for k in range(1, spec.retries + 1):
        if outcome.status != ERROR or outcome.error_kind == "interrupted":
            break
        time.sleep(retry_backoff(k))
        outcome = _attempt(spec, "retries")
    return outcome


def _attempt(spec: TrialSpec, rerun_reason: str) -> TrialOutcome:
    trial = _Trial(spec, rerun_reason)
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
