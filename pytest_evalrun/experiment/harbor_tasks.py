"""Harbor task directories as tasks: ``tasks: {harbor: PATH}`` (or an item ``- harbor: PATH``
of the tasks list).

PATH is one Harbor task directory (it holds ``task.toml``) or a directory of them (each
subdirectory holding a ``task.toml`` is a task, in name order). A Harbor task is::

    task.toml          [agent] timeout_sec, [verifier] timeout_sec and env, [environment]
                       docker_image, cpus, memory_mb, workdir, network_mode (and
                       allowed_hosts), env, build_timeout_sec
    instruction.md     the prompt
    environment/       the Dockerfile and its build context
    tests/test.sh      the verifier: copied to /tests only for verify; it writes the reward to
                       /logs/verifier/reward.txt or reward.json
    solution/solve.sh  the reference solution, which ``agent: {preset: oracle}`` runs

Each becomes a :class:`~.model.Task` named after its directory, whose environment is the
task's container and whose verify step runs ``/tests/test.sh`` the way Harbor does (the reward
file decides; a test.sh that writes no reward fails the trial). What pytest-evalrun does not
run (docker-compose services, GPUs or TPUs, Windows containers, multi-step tasks, MCP
servers, healthchecks, separate verifier containers, IP ranges in a network allowlist or a
network policy for one phase, task artifacts, other users) is an error naming the task and
the feature, never a partial run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_evalrun.experiment.allowlist import Allow, parse_allow
from pytest_evalrun.experiment.checker import HARBOR_KEYS, INVALID, Checker, describe
from pytest_evalrun.experiment.errors import ExperimentError
from pytest_evalrun.experiment.model import (
    DEFAULT_PASS_THRESHOLD,
    DEFAULT_SETUP_TIMEOUT,
    DEFAULT_TIMEOUT,
    EnvironmentSpec,
    HarborSource,
    Step,
    Task,
)
from pytest_evalrun.experiment.names import slugify, validate_name
from pytest_evalrun.experiment.promptfile import PromptFileError, read_prompt_file
from pytest_evalrun.experiment.valuecheck import Values
from pytest_evalrun.experiment.yamltree import YMap

__all__ = ["HARBOR_VERIFY", "VERIFIER_DIR", "HarborTasks"]

#: Where Harbor's verifier writes (inside the container).
VERIFIER_DIR = "/logs/verifier"
TESTS_DIR = "/tests"
#: Harbor's default verifier timeout (seconds).
HARBOR_VERIFY_TIMEOUT = 600.0
MAX_TASK_TOML = 1024 * 1024

#: The verify step of a Harbor task (a shell string run in the container's workdir): run
#: tests/test.sh as Harbor does, its output kept in test-stdout.txt and shown; the reward
#: file decides (exit 0 when there is one); no reward file is a failure.
HARBOR_VERIFY = f"""\
mkdir -p {VERIFIER_DIR} && rm -f {VERIFIER_DIR}/reward.txt {VERIFIER_DIR}/reward.json
chmod +x {TESTS_DIR}/test.sh 2>/dev/null
{TESTS_DIR}/test.sh > {VERIFIER_DIR}/test-stdout.txt 2>&1
status=$?
cat {VERIFIER_DIR}/test-stdout.txt
if [ -e {VERIFIER_DIR}/reward.json ] || [ -e {VERIFIER_DIR}/reward.txt ]; then exit 0; fi
echo "evalrun: tests/test.sh wrote no reward ({VERIFIER_DIR}/reward.txt or reward.json); \
its exit status was $status"
[ "$status" -eq 0 ] && exit 1
exit "$status"
"""

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class HarborTasks(Checker):
    """Reads Harbor task directories into tasks; problems go to the shared error list."""

    def __init__(self, path_text: str, errors: list[ExperimentError], values: Values,
                 environ: Mapping[str, str]) -> None:
        super().__init__(path_text, errors)
        self.values = values
        self.environ = environ

    def tasks(self, m: YMap, ctx: str, numbers: Mapping[str, float], trials: int) -> list[Task]:
        """The tasks of one ``{harbor: PATH, ...}`` mapping (``numbers``/``trials``: the
        experiment-wide values)."""
        self.check_keys(m, HARBOR_KEYS, ctx)
        line = m.lines["harbor"]
        text = m["harbor"]
        if not isinstance(text, str) or not text:
            self.error(line, f"'harbor'{ctx} must be the path of a Harbor task directory or of "
                       f"a directory of them, got {describe(text, m.src.get('harbor'))}")
            return []
        root = (self.values.base_dir / os.path.expanduser(text)).resolve()
        if not root.is_dir():
            self.error(line, f"Harbor tasks {text!r}{ctx}: {str(root)!r} is not a directory; "
                       f"relative paths are resolved against {str(self.values.base_dir)!r}")
            return []
        if (root / "task.toml").is_file():
            dirs = [root]
        else:
            try:
                dirs = sorted(p for p in root.iterdir() if (p / "task.toml").is_file())
            except OSError as exc:
                self.error(line, f"Harbor tasks {text!r}{ctx}: cannot list {root}: "
                           f"{exc.strerror or exc}")
                return []
        if not dirs:
            self.error(line, f"Harbor tasks {text!r}{ctx}: no task directory (one holding "
                       f"task.toml) in {str(root)!r}")
            return []
        own: dict[str, Any] = {}
        self.values.numbers(m, ctx, own)
        tags: Any = self.values.tags(m, ctx) if "tags" in m else ()
        if INVALID in own.values() or tags is INVALID:
            return []
        out = []
        for directory in dirs:
            task = self._task(directory, line, own, numbers, trials, tags)
            if task is not None:
                out.append(task)
        return out

    # -- one task directory

    def _task(self, directory: Path, line: int, own: Mapping[str, Any],
              numbers: Mapping[str, float], trials: int, tags: tuple[str, ...]) -> Task | None:
        name = directory.name
        problem = validate_name(name)
        where = f"Harbor task {name!r} ({directory})"
        if problem:
            self.error(line, f"{where}: its directory name {problem}")
            return None
        config = self._config(directory, line, where)
        if config is None:
            return None
        unsupported = _unsupported(config, directory)
        if unsupported:
            self.error(line, f"{where} needs {'; '.join(unsupported)}: pytest-evalrun does not "
                       "run that (docs/environments.md), so the task is not run at all")
            return None
        try:
            prompt = read_prompt_file(directory / "instruction.md")
        except PromptFileError as exc:
            self.error(line, f"{where}: instruction.md {exc.why}")
            return None
        tests = directory / "tests"
        if not (tests / "test.sh").is_file():
            self.error(line, f"{where} has no tests/test.sh (its verifier)")
            return None
        env_section = _table(config, "environment")
        agent = _table(config, "agent")
        verifier = _table(config, "verifier")
        image = env_section.get("docker_image")
        dockerfile = directory / "environment" / "Dockerfile"
        if image is None and not dockerfile.is_file():
            self.error(line, f"{where} has neither [environment] docker_image in task.toml nor "
                       "environment/Dockerfile")
            return None
        try:
            environment = EnvironmentSpec(
                image=str(image) if image is not None else None,
                dockerfile=None if image is not None else dockerfile,
                context=None if image is not None else dockerfile.parent,
                workdir=_opt_str(env_section.get("workdir")),
                cpus=_opt_number(env_section.get("cpus"), "cpus"),
                memory_mb=_opt_int(env_section.get("memory_mb"), "memory_mb"),
                build_timeout=float(_opt_number(env_section.get("build_timeout_sec"),
                                                "build_timeout_sec") or 600.0),
                network=env_section.get("network_mode", "public") != "no-network"
                and env_section.get("allow_internet", True) is not False,
                allow=_allowlist(env_section),
                line=line,
            )
            env = self._resolve(_str_map(env_section.get("env"), "[environment] env"))
            verifier_env = self._resolve(_str_map(verifier.get("env"), "[verifier] env"))
            solution_env = self._resolve(_str_map(_table(config, "solution").get("env"),
                                                  "[solution] env"))
            agent_timeout = _opt_number(agent.get("timeout_sec"), "[agent] timeout_sec")
            verify_timeout = _opt_number(verifier.get("timeout_sec"), "[verifier] timeout_sec")
        except ValueError as exc:
            self.error(line, f"{where}: task.toml: {exc}")
            return None
        solution = directory / "solution"
        exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in verifier_env.items())
        meta = _table(config, "task")
        description = meta.get("description") if isinstance(meta.get("description"), str) else None

        def number(key: str, default: float) -> float:
            return float(own.get(key, numbers.get(key, default)))

        return Task(
            name=name,
            slug=slugify(name),
            prompt=prompt,
            verify=Step("command", exports + HARBOR_VERIFY, line),
            line=line,
            prompt_file=directory / "instruction.md",
            fixture=None,
            tags=tags,
            timeout=float(agent_timeout or numbers.get("timeout", DEFAULT_TIMEOUT)),
            setup_timeout=number("setup_timeout", DEFAULT_SETUP_TIMEOUT),
            verify_timeout=float(verify_timeout or HARBOR_VERIFY_TIMEOUT),
            trials=int(own.get("trials", trials)),
            pass_threshold=number("pass_threshold", DEFAULT_PASS_THRESHOLD),
            min_pass_rate=own.get("min_pass_rate"),
            env=env,
            description=description,
            raw={"name": name, "harbor": str(directory)},
            retries=own.get("retries"),
            environment=environment,
            harbor=HarborSource(
                directory=directory,
                tests=tests,
                solution=solution if (solution / "solve.sh").is_file() else None,
                verifier_env=verifier_env,
                solution_env=solution_env,
            ),
        )

    def _config(self, directory: Path, line: int, where: str) -> dict[str, Any] | None:
        path = directory / "task.toml"
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_TASK_TOML + 1)
            if len(data) > MAX_TASK_TOML:
                raise ValueError(f"larger than {MAX_TASK_TOML:,} bytes")
            config = _toml_loads(data.decode("utf-8"))
        except OSError as exc:
            self.error(line, f"{where}: cannot read task.toml: {exc.strerror or exc}")
            return None
        except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError is a ValueError
            self.error(line, f"{where}: task.toml is not valid TOML: {exc}")
            return None
        return dict(config)

    def _resolve(self, env: dict[str, str]) -> dict[str, str]:
        """``${VAR}`` and ``${VAR:-default}`` from the evaluator's environment, as Harbor
        resolves task.toml's env (a variable with no value and no default is an error)."""
        out = {}
        for key, value in env.items():
            def sub(match: re.Match[str], key: str = key) -> str:
                found = self.environ.get(match.group(1))
                if found is not None:
                    return found
                if match.group(2) is not None:
                    return match.group(2)
                raise ValueError(f"env {key!r} uses ${{{match.group(1)}}}, which is not set "
                                 "and has no default")
            out[key] = _VAR.sub(sub, value)
        return out


def _allowlist(env: Mapping[str, Any]) -> tuple[Allow, ...] | None:
    """``[environment] network_mode = "allowlist"`` and its ``allowed_hosts`` as the trial's
    network allow list (None: no allow list), with Harbor's rules for the entries: a hostname
    (``example.com``), a leading wildcard (``*.example.com``: its subdomains), an IPv4 or
    IPv6 address; no port, URL or path. (An IP range is refused before: :func:`_unsupported`.)
    :class:`ValueError` naming the setting and the entry otherwise."""
    mode = env.get("network_mode", "public")
    if mode not in ("public", "no-network", "allowlist"):
        raise ValueError(f"[environment] network_mode must be 'public', 'no-network' or "
                         f"'allowlist', got {mode!r}")
    hosts = env.get("allowed_hosts")
    if mode != "allowlist":
        if hosts is not None:
            raise ValueError("[environment] allowed_hosts is only valid with network_mode = "
                             f"'allowlist' (it is {mode!r})")
        return None
    if hosts is None:
        hosts = []
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ValueError("[environment] allowed_hosts must be a list of strings")
    out: list[Allow] = []
    for raw in hosts:
        host = raw.strip().lower().rstrip(".")
        bad = ValueError(f"[environment] allowed_hosts entry {raw!r}: Harbor takes a "
                         "hostname, '*.domain' or an IP address, not a URL, port or path")
        if not host or "/" in host or "@" in host or "[" in host:
            raise bad
        if ":" in host:  # only a bare IPv6 address has one
            try:
                host = str(ipaddress.IPv6Address(host))
            except ValueError:
                raise bad from None
        try:
            out.append(parse_allow(host if ":" not in host else f"[{host}]"))
        except ValueError:
            raise bad from None
    return tuple(dict.fromkeys(out))


def _cidr(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry.strip(), strict=True)
    except ValueError:
        return False
    return True


def _table(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = config.get(key)
    return value if isinstance(value, dict) else {}


def _opt_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"[environment] workdir must be an absolute path, got {value!r}")
    return value


def _opt_number(value: Any, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{key} must be a number > 0, got {value!r}")
    return float(value)


def _opt_int(value: Any, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be an integer > 0, got {value!r}")
    return value


def _str_map(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValueError(f"{key} must be a table of strings")
    return {str(k): v for k, v in value.items()}


def _unsupported(config: Mapping[str, Any], directory: Path) -> list[str]:
    """What the task needs that pytest-evalrun does not run, in words."""
    found = []
    env_dir = directory / "environment"
    for compose in ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml"):
        if (env_dir / compose).is_file():
            found.append(f"docker-compose services (environment/{compose})")
            break
    env = _table(config, "environment")
    if env.get("gpus"):
        found.append(f"GPUs ([environment] gpus = {env['gpus']!r})")
    if env.get("tpu"):
        found.append("a TPU ([environment] tpu)")
    if str(env.get("os", "linux")).lower() != "linux":
        found.append(f"a {env['os']} container ([environment] os)")
    if env.get("mcp_servers"):
        found.append("MCP servers ([environment] mcp_servers)")
    if env.get("healthcheck"):
        found.append("a healthcheck ([environment] healthcheck)")
    if env.get("skills_dir"):
        found.append("agent skills ([environment] skills_dir)")
    hosts = env.get("allowed_hosts")
    for entry in hosts if isinstance(hosts, list) else ():
        if isinstance(entry, str) and "/" in entry and _cidr(entry):
            found.append(f"an IP range in the network allowlist ([environment] allowed_hosts "
                         f"entry {entry!r}: name the addresses one by one)")
    if config.get("steps") or (directory / "steps").is_dir():
        found.append("several steps ([[steps]])")
    if config.get("artifacts"):
        found.append("artifacts collected from the container (artifacts)")
    for section in ("agent", "verifier"):
        table = _table(config, section)
        if table.get("user") is not None:
            found.append(f"another user ([{section}] user)")
        if table.get("network_mode") is not None:
            found.append(f"a network policy of its own for one phase ([{section}] "
                         "network_mode: the trial's network is the same in every phase)")
    verifier = _table(config, "verifier")
    if verifier.get("environment") or verifier.get("environment_mode") == "separate":
        found.append("a separate verifier container ([verifier] environment)")
    if verifier.get("collect"):
        found.append("collect hooks ([[verifier.collect]])")
    return found


def harbor_item(m: object) -> bool:
    """Is this entry of ``tasks:`` a ``{harbor: PATH}`` mapping?"""
    return isinstance(m, YMap) and "harbor" in m and "name" not in m


def _toml_loads(text: str) -> dict[str, Any]:
    """task.toml's content (the TOML parser is imported only for Harbor tasks)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,no-redef,unused-ignore]
    config: dict[str, Any] = tomllib.loads(text)
    return config
