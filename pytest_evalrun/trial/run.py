"""Run one trial: workspace, setup, agent, verify -> files on disk and a TrialOutcome.

Knows nothing of pytest, xdist or the Pier layout. The directory it fills is the standard
layout's ``trials/<NNN>/``, through :class:`~pytest_evalrun.store.trialdir.TrialDir` (which
writes every file atomically, with secrets masked).

Where the steps run is the trial's *environment* (:mod:`.environments`: the local bubblewrap
sandbox, unsandboxed, or a plugin's): it prepares the workspace from the fixture, runs every
process of every step with the view of the step's phase (:mod:`.phases`), diffs the agent's
change and is torn down at the end; each step gets the clean environment of
:func:`~.stepenv.step_environment`, and a step runner can start processes only through it
(:meth:`~.steps.StepContext.run`). After the trial every file of the trial directory is
masked (also after Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..experiment.allowlist import Allow, combined
from ..experiment.model import Experiment, Step, Task, Variant
from ..layoutjson import StepRecord
from ..outcome import ERROR, FAILED, PASSED, TIMEOUT, TrialOutcome
from ..secrets import Redactor
from ..store import trialdir
from ..store.atomic import read_regular
from ..store.linksafe import defuse_links
from ..store.runs import utc_now
from ..store.trialdir import TrialDir
from . import metrics as metrics_mod
from .environments import Environment, Environments, EnvironmentUnavailable, TrialPlace
from .network import upstream_proxy
from .phases import View, phase_view
from .placeholders import pytest_words, render_command
from .process import ProcessResult, kill_all_running, steps_only_through
from .sandbox import SandboxError
from .stepenv import step_environment
from .steps import PYCALL_CRASHED, PYCALL_NOT_FOUND, StepContext, StepKinds, missing
from .workspace import Snapshot, WorkspaceError, conftest_blobs, release_snapshot

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
    #: The environments known in this process (built-ins and ``pytest_evalrun_environments``).
    environments: Environments = field(default_factory=Environments.builtin)
    #: The environment the trial runs in, by name (None: the sandbox mode: ``auto``,
    #: ``bwrap`` or ``none``), and its settings from the experiment.
    environment: str | None = None
    environment_options: Mapping[str, Any] = field(default_factory=dict)
    #: Directories no sandboxed step may see (the results and jobs roots), but for the
    #: trial's own directory.
    hide: tuple[Path, ...] = ()
    #: Directories setup may read besides the experiment directory (pytest's rootdir); the
    #: agent and verify do not see them (trial/phases.py).
    read: tuple[Path, ...] = ()
    #: The model gateway's settings (``budget``, ``record_dir``, ``replay_dir``): see
    #: :mod:`pytest_evalrun.agents.route`.
    gateway: Mapping[str, Any] = field(default_factory=dict)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


#: Largest reward file read (bytes): a reward is a number, or a flat object of them.
MAX_REWARD_BYTES = 1024 * 1024


def _finite(value: Any) -> float | None:
    """A finite number as float (never a bool); None for anything else (NaN, 1e309, a
    400-digit integer, a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def read_reward(verifier_dir: Path) -> tuple[float | None, dict[str, float], str | None]:
    """``(reward, rewards, problem)`` from ``reward.json`` or ``reward.txt`` in verifier_dir.

    Rewards are finite numbers (as Harbor requires): ``NaN``, ``Infinity``, ``1e309``, a
    400-digit integer, JSON nested too deep, text that is not UTF-8, or a reward file that is
    not a regular file give ``problem`` (and no reward), never an exception."""
    rj, rt = verifier_dir / "reward.json", verifier_dir / "reward.txt"
    if os.path.lexists(rj):
        try:
            raw = read_regular(rj, MAX_REWARD_BYTES)
            data = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)
        except UnicodeDecodeError:
            return None, {}, "reward.json is not UTF-8"
        except RecursionError:
            return None, {}, "reward.json is nested too deep"
        except ValueError as exc:
            return None, {}, f"reward.json is not valid JSON: {exc}"
        except OSError as exc:
            return None, {}, f"reward.json cannot be read: {exc.strerror or exc}"
        if not isinstance(data, dict) or not data:
            return None, {}, "reward.json must be a non-empty flat object of numbers"
        rewards: dict[str, float] = {}
        for key, value in data.items():
            number = _finite(value)
            if number is None:
                shown = repr(value) if isinstance(value, (int, float, str)) else "not a number"
                return None, {}, (f"reward.json: {str(key)[:40]!r} is not a finite number "
                                  f"({shown[:40]})")
            rewards[str(key)] = number
        main = rewards.get("reward")
        if main is None:
            if len(rewards) != 1:
                return None, rewards, "reward.json has several numbers but no 'reward' key"
            main = next(iter(rewards.values()))
        return main, rewards, None
    if os.path.lexists(rt):
        try:
            text = read_regular(rt, MAX_REWARD_BYTES).decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, {}, "reward.txt is not UTF-8"
        except OSError as exc:
            return None, {}, f"reward.txt cannot be read: {exc.strerror or exc}"
        try:
            value = _finite(float(text))
        except (ValueError, OverflowError):
            value = None
        if value is None:
            return None, {}, f"reward.txt must hold one finite number, found {text[:40]!r}"
        return value, {"reward": value}, None
    return None, {}, None


class _Trial:
    def __init__(self, spec: TrialSpec, rerun_reason: str) -> None:
        self.spec = spec
        self.rerun_reason = rerun_reason
        self.files = TrialDir(spec.trial_dir, spec.redactor)
        self.dir = spec.trial_dir
        #: The workspace on the host while the trial runs (the environment's).
        self.workspace = self.files.workspace
        #: Where the steps run (None until :meth:`isolate`, and after :meth:`settle`).
        self.environment: Environment | None = None
        self.snapshot: Snapshot | None = None
        self.steps: dict[str, StepRecord] = {}
        #: Each step's environment, as it got it (the verify step's PATH decides whether its
        #: program is missing).
        self.step_env: dict[str, Mapping[str, str]] = {}
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
        return self.environment is not None and self.environment.sandboxed

    def inside(self, path: Path) -> str:
        """``path`` as a step sees it (the environment's mapping: the sandbox shows the
        workspace at ``/tmp/workspace`` and every other path at its own)."""
        if self.environment is None:
            return os.path.abspath(path)
        return self.environment.inside(path)

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
            "python": self.environment.python() if self.environment else sys.executable,
            "pytest": shlex.join(
                pytest_words(
                    self.environment.python() if self.environment else sys.executable,
                    self.inside(self.workspace), conftest_blobs(self.snapshot),
                    self.environment.pytest_runner() if self.environment else None,
                )
            ),
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

    def view(self, role: str, verifier: Path | None = None) -> View:
        """What the ``role`` step may see besides the system (trial/phases.py)."""
        s = self.spec
        return phase_view(
            role,
            trial_dir=self.dir,
            prompt_file=self.files.prompt,
            artifacts=self.files.artifacts,
            experiment_dir=s.experiment.directory,
            rootdirs=s.read,
            verifier=verifier,
            hide=s.hide,
        )

    # -- steps ---------------------------------------------------------------------------
    def step(
        self,
        role: str,
        step: Step,
        env: Mapping[str, str],
        timeout: float,
        output: Path,
        verifier: Path | None = None,
    ) -> ProcessResult:
        s = self.spec
        isolation_failed = False
        assert self.environment is not None
        try:
            paths = self.environment.step_paths(role)
        except (EnvironmentUnavailable, SandboxError, OSError) as exc:
            message = f"cannot isolate the {role} step: {exc}"
            self.files.write_text(output.relative_to(self.dir).as_posix(), f"evalrun: {message}\n")
            result = ProcessResult(None, False, 0.0, start_error=message,
                                   infra_error=("sandbox", message))
        else:
            step_env = step_environment(
                inherited=s.base_env,
                declared=env,
                env_passthrough=s.variant.env_passthrough,
                home=paths.home,
                cwd=paths.workspace,
                tmpdir=paths.tmp,
            )
            if paths.env:
                step_env = {**step_env, **paths.env}
            self.step_env[role] = step_env
            ctx = StepContext(
                role=role,
                cwd=self.workspace,
                env=step_env,
                timeout=timeout,
                output=output,
                values=self.values(),
                experiment_dir=s.experiment.directory,
                environment=self.environment,
                view=self.view(role, verifier),
                pricing=s.variant.pricing,
                gateway={**s.gateway,
                         "name": f"{s.variant.slug}/{s.task.slug}/{s.trial:03d}"},
            )
            runner = s.kinds.runner(role, step.kind)
            with steps_only_through(
                f"the {role} step's runner ({step.kind}) started a process outside the "
                "trial's environment: a step kind starts processes with ctx.run(...)"
            ):
                result = runner(step, ctx)
        if result.infra_error is not None and result.infra_error[0] == "sandbox":
            isolation_failed = True
        self.steps[role] = record = StepRecord(
            kind=step.kind,
            exit_code=result.exit_code,
            timed_out=result.timed_out,
            duration=round(result.duration, 4),
            start_error=result.start_error,
            timeout=timeout,
            killed_leftovers=result.killed_leftovers,
            output_cut=result.output_cut,
        )
        if isolation_failed:
            record["isolation_failed"] = True
        if result.infra_error is not None:
            record["infra_error"] = result.infra_error[0]
        self.files.redact_file(output)
        return result

    def error(self, kind: str, message: str) -> None:
        self.outcome.status = ERROR
        self.outcome.error_kind = kind
        self.outcome.message = self.spec.redactor.redact(message)

    def network_allow(self) -> tuple[Allow, ...] | None:
        """The trial's allow list: the variant's ``network: {allow:}`` and the task's own (a
        Harbor task's allowlist) together (:func:`~..experiment.allowlist.combined`); None: any
        public host."""
        s = self.spec
        spec = s.experiment.environment_for(s.variant, s.task)
        return combined(s.variant.network_allow, spec.allow if spec is not None else None)

    def isolate(self) -> bool:
        """Open the trial's environment (False, and an ``error`` outcome of kind
        ``sandbox``, when the one asked for cannot run here: never a silent fallback)."""
        s, o, f = self.spec, self.outcome, self.files
        mode = s.environment or s.sandbox_mode or s.variant.sandbox.mode
        user = s.variant.sandbox
        place = TrialPlace(
            trial_dir=self.dir,
            artifacts=f.artifacts,
            prompt_file=f.prompt,
            experiment_dir=s.experiment.directory,
            rootdirs=tuple(s.read),
            hide=tuple(s.hide),
            read=tuple(user.read),
            write=tuple(user.write),
            network=s.variant.network,
            network_allow=self.network_allow(),
            unix_sockets=user.unix_sockets,
            upstream=upstream_proxy(s.base_env),
            requested=mode,
            options=dict(s.environment_options),
        )
        try:
            self.environment = s.environments.open(mode, place)
        except (EnvironmentUnavailable, SandboxError, OSError) as exc:
            o.isolation = {"sandbox": "none", "requested": mode, "reason": str(exc),
                           "network": s.variant.network}
            self.error("sandbox", str(exc))
            return False
        o.isolation = self.environment.describe()
        self.workspace = self.environment.workspace
        return True

    def run(self) -> TrialOutcome:
        s, o, f = self.spec, self.outcome, self.files
        f.start(o, s.task.prompt, self.rerun_reason)
        if not self.isolate():
            return self.finish()
        try:
            assert self.environment is not None
            self.snapshot = self.environment.prepare(s.task.fixture, templates=s.templates)
        except (WorkspaceError, OSError) as exc:
            self.error("workspace", f"could not prepare the workspace: {exc}")
            return self.finish()
        env = self.env()
        if s.variant.setup is not None:
            output = f.file(trialdir.SETUP_OUTPUT)
            r = self.step("setup", s.variant.setup, env, s.task.setup_timeout, output)
            o.setup_exit, o.setup_duration = r.exit_code, r.duration
            if r.start_error and self.steps["setup"].get("isolation_failed"):
                self.error("sandbox", f"setup could not start: {r.start_error}")
                return self.finish()
            if r.start_error or r.timed_out or r.exit_code != 0:
                why = r.start_error or (
                    f"timed out after {s.task.setup_timeout:g}s"
                    if r.timed_out
                    else f"exited with status {r.exit_code}"
                )
                self.error("setup_failed", f"setup failed: {why}")
                o.verify_tail = s.redactor.redact(tail(f.read_text(trialdir.SETUP_OUTPUT)))
                return self.finish()
            assert self.snapshot is not None and self.environment is not None
            self.snapshot = self.environment.after_setup(self.snapshot)
        r = self.step("agent", s.variant.agent, env, s.task.timeout, f.file(trialdir.STDOUT))
        o.agent_exit, o.agent_duration = r.exit_code, r.duration
        self.collect_artifacts()
        if r.start_error and self.steps["agent"].get("isolation_failed"):
            self.error("sandbox", f"the agent could not start: {r.start_error}"
                       + NOT_VISIBLE.format(file=s.experiment.path))
            return self.finish()
        if r.start_error:
            self.error("agent_missing", f"the agent could not start: {r.start_error}")
            return self.finish()
        absent = (self.program_absent("agent", s.variant.agent, r)
                  if missing(s.variant.agent, r.exit_code) else None)
        if absent is not None:
            hint = NOT_VISIBLE.format(file=s.experiment.path) if self.sandboxed else ""
            self.error("agent_missing",
                       f"the agent was not found (exit status {r.exit_code}): {absent[0]}{hint}")
            o.verify_tail = s.redactor.redact(tail(f.read_text(trialdir.STDOUT)))
            return self.finish()
        if r.infra_error is not None:
            self.error(*r.infra_error)
            o.verify_tail = s.redactor.redact(tail(f.read_text(trialdir.STDOUT)))
            return self.finish()
        if r.timed_out:
            o.status, o.reward = TIMEOUT, 0.0
            o.message = f"the agent ran out of time ({s.task.timeout:g}s)"
            return self.finish()
        self.verify(env)
        if o.status == FAILED and self.sandboxed and r.exit_code in (126, 127):
            # judged (the agent may exit 127 on purpose), but say what usually causes it
            o.message += f" (the agent exited {r.exit_code}: a program it runs was not found" + (
                NOT_VISIBLE.format(file=s.experiment.path) + ")"
            )
        return self.finish()

    def collect_artifacts(self) -> None:
        f = self.files
        self.secure_artifacts()
        defuse_links(f.artifacts, self.dir)
        try:
            assert self.environment is not None
            diff = self.environment.diff(self.snapshot, redactor=self.spec.redactor)
        except (WorkspaceError, OSError) as exc:
            diff = f"# workspace diff unavailable: {exc}\n"
        release_snapshot(self.snapshot)
        f.write_text(trialdir.DIFF, diff)
        f.redact_tree(f.artifacts)
        # only regular files (never a FIFO, device or socket the agent left: reading one
        # later would block or never end), never through a link
        for src in [*(f.artifacts / n for n in PROMOTED), *metrics_mod.otel_files(f.artifacts)]:
            if _regular(src):
                _link_or_copy(src, f.file(src.name))
        self.outcome.metrics = metrics_mod.collect(
            f.artifacts, trusted=self.spec.variant.agent.kind == "preset")
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

    def fail(self, kind: str, message: str, reward: float = 0.0) -> None:
        """A judged failure (``failed``): ``kind`` says why (:attr:`TrialOutcome.failure_kind`)."""
        self.outcome.status, self.outcome.reward = FAILED, reward
        self.outcome.failure_kind = kind
        self.outcome.message = self.spec.redactor.redact(message)

    def verify(self, env: Mapping[str, str]) -> None:
        """Run verify and judge the agent's work (docs/reports.md: judged failures and errors).

        What verify does on the workspace the agent left is the agent's doing, so it is judged:
        a verify that times out, dies of a signal (or a ``python:`` verifier that raises), or
        writes a reward that is not a finite number is a ``failed`` trial with reward 0 and the
        cause in the message and in verify.json's ``verify_problem``. Only a verify that could
        not be judged at all through no doing of the agent's is an ``error``: its program is
        missing from the experiment (not on the PATH, a path outside the workspace that does
        not exist, a ``python:`` callable that is not defined), or its sandbox failed."""
        s, o, f = self.spec, self.outcome, self.files
        venv = dict(env)
        verifier = f.fresh_verifier()
        venv["EVALRUN_VERIFIER_DIR"] = str(verifier)
        output = verifier / trialdir.VERIFY_OUTPUT
        r = self.step(
            "verify", s.task.verify, venv, s.task.verify_timeout, output, verifier=verifier
        )
        f.redact_tree(verifier)
        o.verify_exit, o.verify_duration = r.exit_code, r.duration
        o.verify_tail = tail(f.read_text(f"verifier/{trialdir.VERIFY_OUTPUT}"))
        reward, rewards, problem = read_reward(verifier)
        o.rewards = rewards if problem is None else {}
        verify_problem: str | None = None
        kind = s.task.verify.kind
        absent = self.verify_absent(r)
        if r.start_error and self.steps["verify"].get("isolation_failed"):
            self.error("sandbox", f"verify could not start: {r.start_error}")
        elif absent is not None and absent[1]:
            self.error("verify_missing", f"verify could not start: {absent[0]}")
        elif r.start_error and absent is None:
            self.error("verify_missing", f"verify could not start: {r.start_error}")
        elif r.timed_out:
            verify_problem = "timeout"
            self.fail("verify_timeout", f"verify timed out after {s.task.verify_timeout:g}s "
                      "on the agent's work (judged a failure, reward 0)")
        elif absent is not None:
            verify_problem = "missing"
            self.fail("verify_missing", f"verify could not run on the agent's work: {absent[0]}")
        elif (crash := _crash(kind, r.exit_code)) is not None:
            verify_problem = "crashed"
            self.fail("verify_crashed", f"verify crashed on the agent's work: {crash} "
                      "(judged a failure, reward 0)")
        elif problem is not None:
            verify_problem = "bad_reward"
            self.fail("verify_bad_reward", f"verify wrote a bad reward: {problem} "
                      "(judged a failure, reward 0)")
        elif r.exit_code != 0:
            self.fail("verify_rejected", f"verify rejected the result (exit status {r.exit_code})",
                      reward if reward is not None else 0.0)
        else:
            o.reward = reward if reward is not None else 1.0
            if o.reward >= s.task.pass_threshold:
                o.status = PASSED
            else:
                self.fail("below_threshold", f"reward {o.reward:g} is below the pass threshold "
                          f"{s.task.pass_threshold:g}", o.reward)
        f.write_json(
            trialdir.VERIFY,
            {
                "status": o.status,
                "exit_code": r.exit_code,
                "timed_out": r.timed_out,
                "duration": round(r.duration, 4),
                "reward": o.reward,
                "rewards": o.rewards,
                "pass_threshold": s.task.pass_threshold,
                "passed": o.status == PASSED,
                "command": s.task.verify.describe(),
                "stdout_tail": o.verify_tail,
                "verify_problem": verify_problem,
                "failure_kind": o.failure_kind,
                "message": o.message or None,
                "error": o.message if o.status == ERROR else None,
            },
        )

    def verify_absent(self, r: ProcessResult) -> tuple[str, bool] | None:
        """When verify's own program was not found: ``(why, the experiment's fault)``; None
        when it was found (or it is not known which program is missing).

        The experiment's fault: a program not on the PATH, a path outside the workspace that
        does not exist, a ``python:`` module or callable not defined in the experiment (or
        installed). The agent's: a program (or module) inside the workspace, which the agent
        removed or broke, or that the fixture has and the workspace no longer does."""
        return self.program_absent("verify", self.spec.task.verify, r)

    def program_absent(self, role: str, step: Step, r: ProcessResult) -> tuple[str, bool] | None:
        """:meth:`verify_absent` for the ``role`` step ``step`` (for the agent step, whatever
        is absent is the experiment's fault: the agent had not run yet). A step that exits
        126/127 (a shell string) or 71 (``python:``) while its program is there is not
        missing: that exit status is its own (an agent cannot make its trial unjudged by
        choosing it)."""
        s = self.spec
        if step.kind == "python":
            if r.exit_code != PYCALL_NOT_FOUND or r.timed_out:
                return None
            found = _callable_absent(str(step.value), s.experiment.directory, s.task.fixture,
                                     self.workspace, self.step_env.get(role, {}))
            return found if found is None or role == "verify" else (found[0], True)
        if step.kind != "command" or not (r.start_error or missing(step, r.exit_code)):
            return None
        program = _program(step.value, self.values())
        if program is None:
            return None
        path_env = self.step_env.get(role, {}).get("PATH", os.defpath)
        if "/" not in program:
            if shutil.which(program, path=path_env) is None:
                return f"{program!r} is not on the PATH", True
            return None
        inside = str(self.environment.host(program)) if self.environment else program
        host = os.path.normpath(os.path.join(self.workspace, inside))
        root = os.path.abspath(self.workspace)
        runnable = os.path.isfile(host) and os.access(host, os.X_OK)
        if host == root or host.startswith(root + os.sep):
            if runnable:
                return None
            if role != "verify":
                return f"{program!r} is not an executable file of the workspace", True
            why = (f"{program!r} is not an executable file in the workspace the agent left"
                   if os.path.lexists(host) else
                   f"{program!r} is not in the workspace the agent left")
            return why, False
        if not runnable:
            return f"{program!r} does not exist or is not executable", True
        return None

    def settle(self) -> None:
        """Tear the environment down (the workspace comes into the trial directory); then
        mask every file of the trial (its own JSON files are masked as they are written)."""
        f = self.files
        if self.environment is not None:
            environment, self.environment = self.environment, None
            try:
                self.workspace = environment.teardown() or f.workspace
            except OSError as exc:
                self.outcome.message = self.outcome.message or f"workspace not kept: {exc}"
            # what the environment counted while the trial ran (its egress proxy's connections)
            self.outcome.isolation.update(environment.describe())
        defuse_links(self.dir, self.dir)  # the kept workspace, verifier/, artifacts/
        f.redact_all()

    def finish(self) -> TrialOutcome:
        o, f = self.outcome, self.files
        self.settle()
        o.finished_at = utc_now()
        o.duration = round(time.monotonic() - self.started, 4)
        m = o.metrics
        stopped = (m.budget or {}).get("stopped")
        if isinstance(stopped, str) and "budget" not in o.message:
            o.message = (f"{o.message} " if o.message else "") + (
                f"(the trial's budget ended the agent's model calls: {stopped[:200]})")
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
                "cli": m.cli,
                "budget": m.budget,
                "notes": m.notes,
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


#: Shell words after which the program is not known from the first word.
_SHELL_WORDS = frozenset((
    "!", "{", "}", "(", ")", ".", ":", "[", "[[", "alias", "bg", "break", "builtin", "case",
    "cd", "command", "continue", "declare", "eval", "exec", "exit", "export", "false", "fg",
    "for", "function", "getopts", "hash", "if", "jobs", "kill", "let", "local", "printf", "pwd",
    "read", "readonly", "return", "set", "shift", "source", "test", "time", "times", "trap",
    "true", "type", "typeset", "ulimit", "umask", "unalias", "unset", "until", "wait", "while",
    "echo",
))


def _program(command: Sequence[str] | str, values: Mapping[str, str]) -> str | None:
    """The program a ``command`` step starts: argv[0], or a shell string's first word after
    ``NAME=value`` assignments (None when that is a shell keyword or builtin, or the string
    cannot be split)."""
    rendered = render_command(command, values)
    if not isinstance(rendered, str):
        return rendered[0] if rendered else None
    try:
        words = shlex.split(rendered, comments=True)
    except ValueError:
        return None
    while words and "=" in words[0] and words[0].split("=", 1)[0].isidentifier():
        words.pop(0)
    if not words or words[0] in _SHELL_WORDS or any(c in words[0] for c in "|&;<>()$`*?"):
        return None
    return words[0]


def _crash(kind: str, exit_code: int | None) -> str | None:
    """How verify crashed (killed by a signal, or a ``python:`` verifier raised), else None.
    A sandboxed step, or a shell, reports a signal as 128 + its number."""
    if exit_code is None:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128 if 128 < exit_code <= 192 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name} (signal {number}, exit status {exit_code})"
    if kind == "python" and exit_code == PYCALL_CRASHED:
        return f"the python verifier raised an exception (exit status {exit_code})"
    if kind == "python" and exit_code == PYCALL_NOT_FOUND:
        return f"importing the python verifier raised an exception (exit status {exit_code})"
    return None


def _module_file(module: str, bases: Sequence[Path]) -> Path | None:
    """The source file of ``module`` (dotted) under one of ``bases``, else None."""
    parts = module.split(".")
    for base in bases:
        where = base.joinpath(*parts)
        for candidate in (where.with_suffix(".py"), where / "__init__.py"):
            if candidate.is_file():
                return candidate
        if where.is_dir():  # a namespace package
            return where
    return None


def _top_level_names(source: Path) -> set[str] | None:
    """Names a module binds (at any level: over-counting only leans to judging), None when
    not known (it does ``import *`` or sets names dynamically); :class:`SyntaxError` when it
    does not parse."""
    try:
        tree = ast.parse(source.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        raise SyntaxError(str(exc)) from exc
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                names.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("setattr",
                                                                             "globals"):
            return None
    return names


def _callable_absent(
    target: str, experiment_dir: Path, fixture: Path | None, workspace: Path,
    env: Mapping[str, str],
) -> tuple[str, bool] | None:
    """Why a ``python:`` verifier could not be imported (pycall's exit 71), and whether that is
    the experiment's fault: its module is not in the experiment directory, ``PYTHONPATH`` or
    the installed packages, or does not define the callable (or does not parse). When the
    module and the callable are there, importing it failed on what the agent left (a module of
    the workspace it imports): None, judged as a crash."""
    module, _, attr = target.partition(":")
    python_path = [Path(p) for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    installed = [Path(p) for p in sys.path if p and os.path.isdir(p)]
    source = _module_file(module, [experiment_dir, *python_path, *installed])
    if source is None:
        if _module_file(module, [workspace]) is not None:
            return None  # the workspace's own module: importing it failed on the agent's work
        if fixture is not None and _module_file(module, [fixture]) is not None:
            return f"module {module!r} of the fixture is gone from the workspace", False
        return f"python verifier {target!r}: module {module!r} not found", True
    if source.is_dir() or source.suffix != ".py":
        return None
    try:
        names = _top_level_names(source)
    except SyntaxError:
        return f"python verifier {target!r}: {source.name} cannot be parsed", True
    first = attr.split(".")[0]
    if names is not None and first and first not in names:
        return f"python verifier {target!r}: {source.name} defines no {first!r}", True
    return None


def _regular(path: Path) -> bool:
    """Is ``path`` a regular file (not a symlink, FIFO, device or socket)?"""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


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
