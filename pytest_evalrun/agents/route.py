"""A preset's model endpoint routed through the trial's model gateway.

A preset that declares its endpoint (:meth:`~.preset.Preset.model_route`: the variable holding
the base URL, the provider's default, the variables holding the key) gets a
:class:`~pytest_evalrun.gateway.Gateway` for the trial: the real base URL and key are read from
the step's environment and stay outside the sandbox; the CLI's environment gets the gateway's
URL and the per-trial stand-in key instead, and every other variable whose value holds the real
key has it replaced by the stand-in too. What the gateway counted then becomes the trial's
tokens and cost (:func:`merge_usage`), the CLI's own figures kept beside.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .agentrun import AgentRun, ModelCall, Step, Usage

if TYPE_CHECKING:  # imported where a gateway starts: a session that runs no preset needs none
    from ..gateway import CallRecord, Gateway
    from ..gateway.recording import Recording
    from ..trial.network import Forward


@dataclass(frozen=True)
class ModelRoute:
    """Where a preset's CLI finds its model API in its environment."""

    #: The variable holding the base URL (set to the gateway's for the CLI).
    base_url_env: str
    #: The provider's base URL when the variable is unset (None: no route without it).
    default_base: str | None
    #: The variables holding the key (each one set is given the stand-in).
    key_env: tuple[str, ...]


@dataclass(frozen=True)
class GatewayOptions:
    """The run's gateway settings (``--eval-record`` / ``--eval-replay`` directories) and the
    trial's budget and recording name."""

    budget: Mapping[str, Any] | None = None
    record_dir: Path | None = None
    replay_dir: Path | None = None
    #: The trial's name in a recording (``variant/task/trial``).
    name: str = ""
    off: bool = False


@dataclass
class Routed:
    """A started gateway and the CLI's environment pointing at it."""

    gateway: Gateway
    env: dict[str, str]
    recording: Recording | None
    #: With a Unix socket: the forward that makes it ``127.0.0.1:PORT`` inside the sandbox.
    forward: Forward | None = None


#: Directory of the gateways' Unix sockets (short: a socket path must be < 108 bytes).
SOCKET_DIR = "/tmp"


def _inside_port() -> int:
    """A port for the gateway inside the sandbox's own network: one the host's kernel hands
    out (so it differs from the OpenTelemetry receiver's, forwarded at its own port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _base_url(route: ModelRoute, env: Mapping[str, str]) -> str | None:
    value = (env.get(route.base_url_env) or "").strip() or route.default_base
    return value.rstrip("/") if value else None


@contextlib.contextmanager
def open_route(route: ModelRoute | None, env: Mapping[str, str],
               pricing: Mapping[str, Any] | None,
               options: GatewayOptions, unix: bool = False) -> Iterator[Routed | None]:
    """A gateway for ``route`` (None when there is no route or it is turned off); ``unix``:
    on a Unix socket, for a sandbox with a network of its own (:attr:`Routed.forward`), else
    on a TCP port of the host's 127.0.0.1."""
    base = _base_url(route, env) if route is not None and not options.off else None
    if route is None or base is None:
        yield None
        return
    from ..gateway import Budget, Gateway
    from ..gateway.recording import Recording
    from ..trial.network import Forward

    key = next((env[k] for k in route.key_env if env.get(k)), None)
    recording = None
    where = options.replay_dir or options.record_dir
    if where is not None:
        recording = Recording(where, options.name, replay=options.replay_dir is not None)
    sockdir = Path(tempfile.mkdtemp(prefix="evalrun-gw-", dir=SOCKET_DIR)) if unix else None
    gateway = Gateway(base, key, pricing=pricing, budget=Budget.of(options.budget),
                      unix=sockdir / "gw.sock" if sockdir is not None else None,
                      recorder=recording.record if recording and not recording.replay else None,
                      replayer=recording.answer if recording and recording.replay else None)
    forward = None
    with contextlib.ExitStack() as stack:
        if sockdir is not None:
            stack.callback(shutil.rmtree, sockdir, True)
        stack.enter_context(gateway)
        if gateway.unix is not None:
            port = _inside_port()
            forward = Forward(port, gateway.unix, "model gateway")
            url = f"http://127.0.0.1:{port}{gateway.base_path}"
        else:
            url = gateway.url
        cli_env = dict(env)
        if key:
            for name, value in env.items():
                if key in value:
                    cli_env[name] = value.replace(key, gateway.stand_in)
        for name in route.key_env:
            if env.get(name):
                cli_env[name] = gateway.stand_in
        cli_env[route.base_url_env] = url
        try:
            yield Routed(gateway, cli_env, recording, forward)
        finally:
            if recording is not None:
                recording.close()


def _call(record: CallRecord) -> ModelCall:
    t = record.tokens
    assert t is not None
    return ModelCall(Usage(t.input, t.cache_read, t.output, t.cache_write, t.reasoning),
                     record.model, f"gateway-{record.seq}", None, record.cost_usd)


def _summary(run: AgentRun) -> dict[str, Any]:
    total = run.totals()
    return {"input_tokens": total.input, "cache_tokens": total.cache_read,
            "cache_write_tokens": total.cache_write, "output_tokens": total.output,
            "reasoning_tokens": total.reasoning, "cost_usd": run.cost_usd,
            "model_calls": len(run.calls)}


def merge_usage(run: AgentRun, routed: Routed) -> dict[str, Any]:
    """Put the gateway's calls in ``run`` in place of the CLI's own (which are returned, as the
    ``cli`` figures beside, with the difference): each CLI step's call is matched to the next
    gateway call that offered tools; a call the CLI did not record (a session title, a
    background call) becomes a step of its own, so the trajectory's steps add up to its
    totals."""
    cli = _summary(run)
    ledger = routed.gateway.ledger
    calls = [_call(r) for r in ledger.calls]
    records = ledger.calls
    tool_calls = [i for i, r in enumerate(records) if r.tools]
    matched: dict[int, int] = {}  # gateway index -> step index
    steps = [s for s in run.steps if s.call is not None]
    for step_index, gw_index in zip(range(len(steps)), tool_calls, strict=False):
        matched[gw_index] = step_index
    by_step = {id(steps[s]): calls[g] for g, s in matched.items()}
    new_steps: list[Step] = []
    pending = [i for i in range(len(calls)) if i not in matched]
    for step in run.steps:
        if step.call is not None:
            call = by_step.get(id(step))
            here = [i for i in pending if call is not None and i < calls.index(call)]
            for i in here:
                new_steps.append(_aux_step(records[i], calls[i]))
                pending.remove(i)
            step.call = call
        new_steps.append(step)
    new_steps += [_aux_step(records[i], calls[i]) for i in pending]
    run.steps = new_steps
    run.calls = calls
    run.cost_usd = ledger.cost()
    gateway = _summary(run)
    keys = ("input_tokens", "cache_tokens", "output_tokens", "model_calls")
    diff = [f"{k} {cli[k]} by the CLI, {gateway[k]} by the gateway" for k in keys
            if cli[k] != gateway[k]]
    cli["difference"] = "; ".join(diff) or None
    return cli


def _aux_step(record: CallRecord, call: ModelCall) -> Step:
    kind = "a call with tools" if record.tools else "a call without tools (a title or background " \
                                                    "call)"
    return Step("agent", f"(model call {record.seq} not in the CLI's records: {kind})",
                model=record.model, call=call)


def gateway_doc(routed: Routed) -> dict[str, Any]:
    """What metrics.json says of the gateway: every request, the budget, what it refused."""
    ledger = routed.gateway.ledger
    doc: dict[str, Any] = {"upstream": routed.gateway.upstream,
                           "listen": "unix" if routed.gateway.unix is not None else "tcp",
                           "requests": [r.to_dict() for r in ledger.records]}
    if ledger.budget is not None:
        doc["budget"] = {"limits": ledger.budget.to_dict(), "stopped": ledger.budget_stop}
    if routed.recording is not None:
        doc["recording"] = {"mode": "replay" if routed.recording.replay else "record",
                            "name": routed.recording.name}
    return doc
