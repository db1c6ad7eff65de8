"""The ``preset`` agent kind: run a preset's CLI for one trial and write its evidence.

``agent: {preset: NAME, executable: PROGRAM, args: [...]}``. The CLI is started like every
step's process, through the trial's environment (``StepContext.run``:
the agent phase's view, timeout, output capture, process-tree kill), in the workspace, with the
trial's own config home ``<trial>/agent-home/`` (made writable) and its install directory (and
node's) made visible. Afterwards the preset
reads the CLI's records and :mod:`.evidence` writes the files into the artifacts dir. A preset
that cannot read its records never fails the trial: the problem is written to
``artifacts/preset-error.txt`` and the trial is judged by its verify step as usual.

A CLI that made no model call is not judged (docs/agents.md): its tools only run because
a model answered, so with no answer nothing was under the model's control, and the trial is an
``error``: ``model_unreachable`` when the model endpoint does not accept a connection,
``no_model_call`` otherwise (credentials missing or refused, the model API failing), with the
CLI's own last words in the message. "No model call" needs every record to agree: the CLI's
transcript, its stdout (which the model's tools cannot rewrite; they can only add to it), no tool
call anywhere. A CLI that made calls and then failed stays judged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..experiment.model import Step
from ..store.atomic import write_text_atomic
from ..trial.network import Forward
from ..trial.process import ProcessResult
from ..trial.steps import StepContext
from . import PARSERS, load
from .agentrun import AgentRun
from .evidence import write_evidence
from .installed import installed_version
from .otlp import OtlpReceiver
from .preset import Preset, PresetTrial, Records
from .route import GatewayOptions, Routed, open_route

#: The trial's config home, inside the trial directory (kept after the trial).
HOME_DIR = "agent-home"
#: Longest a follow-up command (e.g. an export of the session) may take, seconds.
FOLLOWUP_TIMEOUT = 120.0


def resolve_executable(name: str, env: Mapping[str, str], base: Path) -> str | None:
    """``name`` as a path: absolute, relative to ``base`` (the experiment file's directory) when
    it holds a slash, else looked up on the step's PATH."""
    if os.sep in name:
        path = Path(name) if os.path.isabs(name) else base / name
        return str(path) if os.access(path, os.X_OK) and path.is_file() else None
    return shutil.which(name, path=env.get("PATH", os.defpath))


def make_trial(preset: Preset, step: Step, ctx: StepContext, executable: str,
               otlp_endpoint: str | None = None,
               env: Mapping[str, str] | None = None) -> PresetTrial:
    value: Mapping[str, Any] = step.value if isinstance(step.value, Mapping) else {}
    trial_dir = Path(ctx.values.get("trial_dir") or ctx.output.parent)
    return PresetTrial(
        preset=preset.name,
        executable=executable,
        args=tuple(str(a) for a in value.get("args") or ()),
        prompt=ctx.values.get("prompt", ""),
        model=ctx.values.get("model") or None,
        # as the CLI sees it: /tmp/workspace in the sandbox
        workspace=Path(ctx.inside(ctx.cwd)),
        home=trial_dir / HOME_DIR,
        artifacts=Path(ctx.values.get("artifacts_dir") or trial_dir / "artifacts"),
        env=ctx.env if env is None else env,
        otlp_endpoint=otlp_endpoint,
    )


@contextlib.contextmanager
def _receiver(preset: Preset, artifacts: Path) -> Iterator[OtlpReceiver | None]:
    if preset.otel != "otlp" or not preset.otel_name:
        yield None
        return
    with OtlpReceiver(artifacts / preset.otel_name) as receiver:
        yield receiver


def run_preset(preset: Preset, step: Step, ctx: StepContext) -> ProcessResult:
    """Run ``preset``'s CLI as the trial's agent step, then collect its evidence."""
    value: Mapping[str, Any] = step.value if isinstance(step.value, Mapping) else {}
    program = str(value.get("executable") or preset.program)
    executable = resolve_executable(program, ctx.env, ctx.experiment_dir)
    if executable is None:
        ctx.output.parent.mkdir(parents=True, exist_ok=True)
        ctx.output.write_text(f"{preset.name}: {program!r} not found on PATH\n")
        return ProcessResult(None, False, 0.0,
                             start_error=f"preset {preset.name}: {program!r} not found on PATH "
                                         "(install the CLI or give 'executable:')")
    probe = make_trial(preset, step, ctx, executable)
    shutil.rmtree(probe.home, ignore_errors=True)  # a retried attempt starts afresh
    probe.home.mkdir(parents=True, exist_ok=True)
    probe.artifacts.mkdir(parents=True, exist_ok=True)
    settings = gateway_options(ctx)
    # a network of its own reached only through forwards: the gateway listens on a Unix
    # socket forwarded inside (no TCP port on the host); else on the host's 127.0.0.1
    unix = ctx.environment.forwards_sockets
    with _receiver(preset, probe.artifacts) as receiver, \
            open_route(preset.model_route(probe), ctx.env, ctx.pricing, settings,
                       unix=unix) as routed:
        trial = make_trial(preset, step, ctx, executable,
                           receiver.endpoint if receiver is not None else None,
                           routed.env if routed is not None else None)
        launch = preset.launch(trial)
        # what the CLI needs besides the agent's view: its program (and node) readable, its
        # config home writable; the network is the variant's. The host services it must
        # reach go to the environment as endpoints: the gateway's Unix socket as a forward
        # (a network of its own), else its URL; the OpenTelemetry receiver's URL.
        needs = preset.needs(trial)
        model: str | Forward | None = preset.endpoint(trial)
        if routed is not None and routed.forward is not None:
            model = routed.forward
        endpoints = [u for u in (model, trial.otlp_endpoint) if u]
        result = ctx.run(launch.argv, env=launch.env, read=needs.read_paths,
                         write=needs.write_paths, program=[trial.executable],
                         endpoints=endpoints)
        stdout = _read(ctx.output)
        for followup, out in preset.followups(trial, stdout):
            ctx.run(followup, env=launch.env, timeout=FOLLOWUP_TIMEOUT, output=out,
                    read=needs.read_paths, write=needs.write_paths, program=[trial.executable],
                    endpoints=endpoints)
    run = _collect(preset, trial, stdout, ctx.pricing, routed)
    if result.start_error is not None:
        return result
    if routed is not None:
        failure = gateway_failure(preset, routed, run, stdout)
        if failure is not None:
            return dataclasses.replace(result, infra_error=failure)
    elif run is not None and not _model_answered(preset, run, stdout):
        result = dataclasses.replace(result, infra_error=_no_model_call(preset, trial, run,
                                                                         stdout))
    return result


def gateway_options(ctx: StepContext) -> GatewayOptions:
    """The gateway settings the trial runner put in the step's context."""
    raw: Mapping[str, Any] = ctx.gateway or {}
    record, replay = raw.get("record_dir"), raw.get("replay_dir")
    return GatewayOptions(budget=raw.get("budget"),
                          record_dir=Path(record) if record else None,
                          replay_dir=Path(replay) if replay else None,
                          name=str(raw.get("name") or ""), off=bool(raw.get("off")))


def gateway_failure(preset: Preset, routed: Routed, run: AgentRun | None,
                    stdout: str) -> tuple[str, str] | None:
    """An infrastructure error told by the gateway, which saw every model request: none
    answered (the endpoint unreachable, the key refused, the API failing, no request at all),
    or a replay with no recorded answer. None when the model answered (judged)."""
    ledger = routed.gateway.ledger
    records = [r for r in ledger.records if r.api is not None]
    said = "; ".join(e.strip() for e in (run.errors if run else []) if e and e.strip())
    said = (said or "\n".join(stdout.strip().splitlines()[-5:]))[-MESSAGE_TAIL:] \
        or "(it printed nothing)"
    unmatched = next((r for r in ledger.records if r.refused == "replay_unmatched"), None)
    if unmatched is not None:
        problem = routed.recording.problem if routed.recording is not None else None
        return ("replay_unmatched", f"preset {preset.name}: {unmatched.error}"
                + (f" ({problem})" if problem else ""))
    # Tools only run because the model answered a request that offered them: a title or
    # router call answered alone (no tools offered) does not make the trial the agent's.
    offered = [r for r in records if r.tools]
    if any(r.tools for r in ledger.calls) or (not offered and ledger.calls):
        return None
    upstream = routed.gateway.upstream
    if not records:
        return ("no_model_call",
                f"preset {preset.name}: the CLI made no model call (the model gateway for "
                f"{upstream} received none; not judged). The CLI said: {said}")
    last = (offered or records)[-1]
    if last.refused == "unreachable":
        return ("model_unreachable",
                f"preset {preset.name}: the CLI made no model call: the model endpoint "
                f"{upstream} does not accept connections (not judged; {last.error}). "
                f"The CLI said: {said}")
    if last.refused == "budget":
        return None  # judged on what the agent did
    upstream_said = last.error or f"HTTP {last.status}"
    return ("no_model_call",
            f"preset {preset.name}: the CLI made no model call: the model API at {upstream} "
            f"answered {len(records)} request(s) with no model response (last: HTTP "
            f"{last.status}: {upstream_said}; credentials missing or refused, or the API "
            f"failing; not judged). The CLI said: {said}")


def _model_answered(preset: Preset, run: AgentRun, stdout: str) -> bool:
    """Did any record show a model answer: a model call or a tool call, in the transcript or
    in the CLI's stdout alone (a transcript the model's tools emptied does not hide it)?
    True (judged) for a preset whose records no built-in parser reads: not known."""
    if run.calls or run.tool_calls or preset.cli not in PARSERS:
        return True
    try:
        alone = load(preset.cli, stdout)
    except Exception:
        return True  # not known: judged
    return bool(alone.calls or alone.tool_calls)


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """Does ``url``'s host accept a TCP connection?"""
    parts = urlsplit(url)
    if not parts.hostname:
        return True
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


#: Characters of the CLI's own message kept in the trial's message.
MESSAGE_TAIL = 600


def _no_model_call(preset: Preset, trial: PresetTrial, run: AgentRun,
                   stdout: str) -> tuple[str, str]:
    """``(error_kind, message)`` of a CLI that made no model call."""
    endpoint = preset.endpoint(trial)
    said = "; ".join(e.strip() for e in run.errors if e and e.strip())
    if not said:
        said = "\n".join(stdout.strip().splitlines()[-5:])
    said = said[-MESSAGE_TAIL:] if said else "(it printed nothing)"
    if endpoint is not None and not _reachable(endpoint):
        return ("model_unreachable",
                f"preset {preset.name}: the CLI made no model call: the model endpoint "
                f"{endpoint} does not accept connections (not judged). The CLI said: {said}")
    where = f" at {endpoint}" if endpoint else ""
    return ("no_model_call",
            f"preset {preset.name}: the CLI made no model call: the model API{where} never "
            f"answered it (credentials missing or refused, not logged in, or the API failing; "
            f"not judged). The CLI said: {said}")


def _collect(preset: Preset, trial: PresetTrial, stdout: str,
             pricing: Mapping[str, float] | None, routed: Routed | None = None
             ) -> AgentRun | None:
    """Read the CLI's records and write the evidence; the parsed run (None when the records
    could not be read: written to ``preset-error.txt``, and metrics.json holds the gateway's
    figures alone, or nothing: never what the agent left there)."""
    try:
        records = preset.collect(trial, stdout)
        installed = installed_version(trial.executable)
        if installed:  # the install, not what the (editable) records say
            records.run.cli_version = installed
        write_evidence(trial.artifacts, records, preset=preset.name, otel_name=preset.otel_name,
                       pricing=pricing, routed=routed)
        return records.run
    except Exception:  # a record we cannot read must not cost the trial its verdict
        with contextlib.suppress(OSError):
            write_text_atomic(
                trial.artifacts / "preset-error.txt",
                f"preset {preset.name} could not read the CLI's records:\n"
                f"{traceback.format_exc()}")
        with contextlib.suppress(Exception):
            if routed is not None:
                write_evidence(trial.artifacts, Records(AgentRun(preset.cli or preset.name)),
                               preset=preset.name, pricing=pricing, routed=routed,
                               only_metrics=True)
            else:
                (trial.artifacts / "metrics.json").unlink(missing_ok=True)
    return None


def collect_evidence(preset: Preset, trial: PresetTrial, stdout: str,
                     pricing: Mapping[str, float] | None = None,
                     clock: Callable[[], float] = time.perf_counter) -> float:
    """Read the CLI's records and write the evidence; return the seconds it took."""
    started = clock()
    _collect(preset, trial, stdout, pricing)
    return clock() - started


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
