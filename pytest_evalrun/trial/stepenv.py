"""The clean environment of a step, and the inherited variables that are secrets.

A step gets, in this order (later wins):

1. the **base**, taken from the evaluator's environment when set: ``PATH``, ``LANG``,
   ``LANGUAGE``, ``LC_*``, ``TERM``, ``COLORTERM``, ``TZ``, ``USER``, ``LOGNAME``, the proxy
   settings in both cases (``http_proxy``, ``https_proxy``, ``ftp_proxy``, ``all_proxy``,
   ``no_proxy`` and their upper-case forms) and the certificate bundles a proxy needs
   (``SSL_CERT_FILE``, ``SSL_CERT_DIR``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``,
   ``NODE_EXTRA_CA_CERTS``); plus the process cookies of an outer pytest-evalrun
   (``EVALRUN_PROCESS_COOKIE*``, so that nested runs stay killable);
2. the inherited variables named by ``env_passthrough`` (exact names or ``fnmatch`` globs,
   e.g. ``ANTHROPIC_API_KEY``, ``AWS_*``);
3. ``HOME`` (the step's private home), ``TMPDIR`` (its private temporary directory, when
   given) and ``PWD`` (the step's working directory, as the step sees it);
4. the declared ``env`` (variant, then task), as written;
5. the ``EVALRUN_*`` variables given by the caller.

Last, search paths are made safe (:func:`safe_search_path`): in ``PATH`` an empty or relative
entry (``:$PATH``, ``node_modules/.bin:$PATH``: the working directory, i.e. the agent's
workspace) is dropped, and an entry inside the workspace moves after every other one, so a
program the agent left never shadows the system's; in ``PYTHONPATH`` an empty or relative
entry is dropped.

Never inherited, not even through ``env_passthrough``: ``PYTEST_*`` (``PYTEST_ADDOPTS``,
``PYTEST_CURRENT_TEST``, ``PYTEST_XDIST_WORKER``, ...), xdist's and execnet's own variables,
``PWD`` and ``OLDPWD`` (a CLI that trusts ``$PWD`` once wrote into the user's checkout).  A
declared ``env`` may still set any of them: it is written by the user, not leaked.

0.1.0 passed the whole environment through; a step that relied on another inherited variable
now needs it under ``env_passthrough:``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping

from ..secrets import inherited_secrets, looks_secret

__all__ = [
    "BASE_GLOBS",
    "BASE_NAMES",
    "FORBIDDEN_GLOBS",
    "inherited_secrets",
    "is_forbidden",
    "looks_secret",
    "passthrough",
    "safe_search_path",
    "step_environment",
]

BASE_NAMES: tuple[str, ...] = (
    "PATH",
    "LANG",
    "LANGUAGE",
    "TERM",
    "COLORTERM",
    "TZ",
    "USER",
    "LOGNAME",
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "EVALRUN_PROCESS_COOKIE",
    "EVALRUN_PROCESS_COOKIE_OUTER",
)
BASE_GLOBS: tuple[str, ...] = ("LC_*",)
#: Inherited variables that never reach a step.
FORBIDDEN_GLOBS: tuple[str, ...] = (
    "PYTEST_*",
    "PYTEST_XDIST_*",
    "XDIST_*",
    "EXECNET_*",
    "PWD",
    "OLDPWD",
)


def is_forbidden(name: str) -> bool:
    """True for a variable that is never inherited (``PYTEST_*``, xdist's, ``PWD``...)."""
    upper = name.upper()
    return any(fnmatch.fnmatchcase(upper, g) for g in FORBIDDEN_GLOBS)


def passthrough(inherited: Mapping[str, str], patterns: Iterable[str]) -> dict[str, str]:
    """The inherited variables named by ``patterns`` (exact names or fnmatch globs, case
    sensitive), minus the forbidden ones."""
    names = [p for p in patterns if p]
    exact = {p for p in names if not any(c in p for c in "*?[")}
    globs = [p for p in names if p not in exact]
    out: dict[str, str] = {}
    for name, value in inherited.items():
        if (name in exact or any(fnmatch.fnmatchcase(name, g) for g in globs)) and not (
            is_forbidden(name)
        ):
            out[name] = value
    return out


def step_environment(
    *,
    inherited: Mapping[str, str],
    declared: Mapping[str, str] = {},
    evalrun: Mapping[str, str] = {},
    env_passthrough: Iterable[str] = (),
    home: str,
    cwd: str,
    tmpdir: str | None = None,
) -> dict[str, str]:
    """The complete environment of one step (see the module docstring for what and in which
    order).  ``inherited`` is the evaluator's environment (``os.environ``); ``home``, ``cwd``
    and ``tmpdir`` are paths as the step sees them (inside the sandbox)."""
    env: dict[str, str] = {}
    for name in BASE_NAMES:
        value = inherited.get(name)
        if value is not None:
            env[name] = value
    for name, value in inherited.items():
        if name.startswith("LC_") and any(fnmatch.fnmatchcase(name, g) for g in BASE_GLOBS):
            env[name] = value
    env.update(passthrough(inherited, env_passthrough))
    env["HOME"] = home
    env["PWD"] = cwd
    if tmpdir is not None:
        env["TMPDIR"] = tmpdir
    else:
        env.pop("TMPDIR", None)
    env.update(declared)
    env.update(evalrun)
    if "PATH" in env:
        env["PATH"] = safe_search_path(env["PATH"], cwd)
    if "PYTHONPATH" in env:
        python_path = safe_search_path(env["PYTHONPATH"], None)
        if python_path:
            env["PYTHONPATH"] = python_path
        else:
            del env["PYTHONPATH"]
    return env


def safe_search_path(value: str, workspace: str | None) -> str:
    """``value`` (a ``PATH``-like list) with only absolute entries, each once; entries inside
    ``workspace`` (when given) after every other entry, in their order."""
    root = workspace.rstrip("/") if workspace else None
    first: list[str] = []
    last: list[str] = []
    for entry in value.split(":"):
        if not entry.startswith("/"):
            continue  # "" and relative entries name the working directory: the workspace
        if root and (entry.rstrip("/") == root or entry.startswith(root + "/")):
            last.append(entry)
        else:
            first.append(entry)
    return ":".join(dict.fromkeys(first + last))
