"""Run a Python-callable step: ``python -m pytest_evalrun.trial.pycall ROLE pkg.mod:func``.

The callable gets one argument, a :class:`Context` built from the ``EVALRUN_*`` environment.
An agent's return value is ignored. A verifier returns ``None`` or ``True`` (pass), ``False``
(fail), a number (the reward) or a mapping of numbers (rewards, ``reward`` the main one); an
``AssertionError`` is a fail with its message. Any other exception means the step crashed
(exit status 70): for a verifier that makes the trial an ``error``. A callable that cannot be
imported exits 71: the step is missing (an ``error``).

A verifier imports the agent's code, so the verdict is never taken from the process that ran
it (:func:`judge`): this process, the *judge*, forks a child that imports and calls the
verifier and sends the outcome back through a pipe, tagged with a per-run nonce.  The judge
alone sets the exit status and writes ``reward.txt`` / ``reward.json``.  A child that ends
without an outcome (``os._exit(0)``, ``SystemExit``, a signal, a thread or ``atexit`` handler
that exits) is a crash (70), never an acceptance; whatever the child prints is output, never a
verdict; reward files written while the verifier ran are discarded; before the judge writes
its reward, every process the child left is killed (the judge is their subreaper).  The judge
is not dumpable, so the child cannot ptrace it nor write its memory, and the child runs under
a seccomp filter that fails every signal to the judge (:func:`_forbid_signals_to`).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exitcodes import PYCALL_CRASHED as CRASHED
from .exitcodes import PYCALL_NOT_FOUND as NOT_FOUND


@dataclass(frozen=True)
class Context:
    role: str
    prompt: str
    prompt_file: Path
    workspace: Path
    trial_dir: Path
    artifacts_dir: Path
    verifier_dir: Path | None
    experiment_dir: Path
    run_id: str
    experiment: str
    variant: str
    task: str
    trial: int
    seed: int
    model: str | None
    env: dict[str, str] = field(default_factory=dict)


def context_from_env(role: str, env: dict[str, str]) -> Context:
    prompt_file = Path(env.get("EVALRUN_PROMPT_FILE", ""))
    try:
        prompt = prompt_file.read_text(encoding="utf-8")
    except OSError:
        prompt = ""
    verifier = env.get("EVALRUN_VERIFIER_DIR")
    return Context(
        role=role,
        prompt=prompt,
        prompt_file=prompt_file,
        workspace=Path(env.get("EVALRUN_WORKSPACE", os.getcwd())),
        trial_dir=Path(env.get("EVALRUN_TRIAL_DIR", "")),
        artifacts_dir=Path(env.get("EVALRUN_ARTIFACTS_DIR", "")),
        verifier_dir=Path(verifier) if verifier else None,
        experiment_dir=Path(env.get("EVALRUN_EXPERIMENT_DIR", "")),
        run_id=env.get("EVALRUN_RUN_ID", ""),
        experiment=env.get("EVALRUN_EXPERIMENT", ""),
        variant=env.get("EVALRUN_VARIANT", ""),
        task=env.get("EVALRUN_TASK", ""),
        trial=int(env.get("EVALRUN_TRIAL", "0") or 0),
        seed=int(env.get("EVALRUN_SEED", "0") or 0),
        model=env.get("EVALRUN_MODEL") or None,
        env=env,
    )


def _load(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _write_rewards(ctx: Context, result: Any) -> int:
    if result is None or result is True:
        return 0
    if result is False:
        return 1
    if ctx.verifier_dir is None:
        return 0
    ctx.verifier_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(result, (int, float)):
        (ctx.verifier_dir / "reward.txt").write_text(f"{float(result)}\n", encoding="utf-8")
    elif isinstance(result, dict):
        (ctx.verifier_dir / "reward.json").write_text(json.dumps(result), encoding="utf-8")
    else:
        raise TypeError(f"a verifier must return None, a bool, a number or a dict, not {result!r}")
    return 0


def import_path(role: str, base: list[str], env: dict[str, str], cwd: str) -> list[str]:
    """``sys.path`` for the callable (the interpreter runs with ``-I``, so ``base`` holds
    neither the working directory nor ``PYTHONPATH``).

    The experiment's directory comes first (then, in a container, the directory where the
    callable's module is bound read-only: ``EVALRUN_PYCALL_MODULES``), then ``PYTHONPATH``
    (the step's declared environment, or the image's, not the agent's).  A verifier gets the
    workspace *last*: it can import the agent's code, but a ``json.py`` or ``pytest.py`` the
    agent left there never shadows the standard library, an installed package or the
    verifier's own modules, also when ``PYTHONPATH`` names the workspace (an image's ``ENV
    PYTHONPATH=/app``): such entries go last too.  An agent gets the workspace right after
    the experiment's directory (its own code is its own business)."""
    first = [p for p in (env.get("EVALRUN_PYCALL_PATH"), env.get("EVALRUN_PYCALL_MODULES")) if p]
    python_path = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if role == "verify":
        root = os.path.abspath(cwd)

        def inside(entry: str) -> bool:
            entry = os.path.abspath(entry)
            return entry == root or entry.startswith(root.rstrip(os.sep) + os.sep)

        late = [p for p in python_path if inside(p)]
        python_path = [p for p in python_path if not inside(p)]
        path = [*first, *python_path, *base, cwd, *late]
    else:
        path = [*first, cwd, *python_path, *base]
    return list(dict.fromkeys(path))


def main(argv: list[str]) -> int:
    role, target = argv[0], argv[1]
    if role == "verify" and hasattr(os, "fork"):
        return judge(target)
    return run_inline(role, target)


def run_inline(role: str, target: str) -> int:
    """Import and call the step's function in this process (setup and agent steps: their code
    is not judged)."""
    sys.path[:] = import_path(role, list(sys.path), dict(os.environ), os.getcwd())
    ctx = context_from_env(role, dict(os.environ))
    try:
        func = _load(target)
    except Exception:
        traceback.print_exc()
        return NOT_FOUND
    try:
        result = func(ctx)
        return _write_rewards(ctx, result) if role == "verify" else 0
    except AssertionError as exc:
        print(f"verification failed: {exc}" if role == "verify" else f"AssertionError: {exc}")
        return 1
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except BaseException:
        traceback.print_exc()
        return CRASHED


# -- the judge --------------------------------------------------------------------------------

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_NONCE_BYTES = 16
_MAX_MESSAGE = 1 << 20
_REWARD_FILES = ("reward.txt", "reward.json")


def _prctl(option: int, value: int) -> None:
    """Best effort (Linux): ``prctl(option, value)``."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


# Syscalls that signal a process (or open a handle to signal it): (x86_64, aarch64) numbers.
_SIGNAL_CALLS = {
    0xC000003E: (62, 200, 234, 129, 297, 434),  # kill tkill tgkill rt_(tg)sigqueueinfo pidfd_open
    0xC00000B7: (129, 130, 131, 138, 240, 434),
}
_PIDFD_SEND_SIGNAL = 424


def _forbid_signals_to(judge: int, group: int) -> bool:
    """In the child: a seccomp filter that fails (EPERM) every attempt to signal the judge
    (its pid, its process group, ``-1``) or to use ``pidfd_send_signal``; the child may still
    signal its own processes.  Best effort: False where it cannot be installed."""
    import ctypes
    import platform

    arch = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}.get(platform.machine())
    if arch is None or not sys.platform.startswith("linux"):
        return False
    ld, jeq, ret = 0x20, 0x15, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1
    calls = _SIGNAL_CALLS[arch]
    # Instructions (code, jump-if-true, jump-if-false, k), jumps by label; a str is a label.
    prog: list[tuple[int, str | int, str | int, int] | str] = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 0, "allow", arch),
        (ld, 0, 0, 0),  # seccomp_data.nr
        *((jeq, "check", 0, nr) for nr in calls),
        (jeq, "deny", 0, _PIDFD_SEND_SIGNAL),
        "allow",
        (ret, 0, 0, allow),
        "check",
        (ld, 0, 0, 16),  # args[0], low 32 bits
        (jeq, "deny", 0, judge & 0xFFFFFFFF),
        (jeq, "deny", 0, 0xFFFFFFFF),  # -1: every process
        (jeq, "deny", 0, (-group) & 0xFFFFFFFF),
        (ret, 0, 0, allow),
        "deny",
        (ret, 0, 0, deny),
    ]
    labels: dict[str, int] = {}
    code: list[tuple[int, str | int, str | int, int]] = []
    for item in prog:
        if isinstance(item, str):
            labels[item] = len(code)
        else:
            code.append(item)

    def rel(target: str | int, at: int) -> int:
        return labels[target] - at - 1 if isinstance(target, str) else target

    class Filter(ctypes.Structure):
        _fields_ = [
            ("code", ctypes.c_ushort),
            ("jt", ctypes.c_ubyte),
            ("jf", ctypes.c_ubyte),
            ("k", ctypes.c_uint),
        ]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    items = (Filter * len(code))(
        *(Filter(op, rel(jt, i), rel(jf, i), k) for i, (op, jt, jf, k) in enumerate(code))
    )
    program = Program(len(code), items)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return False
        return bool(libc.prctl(22, 2, ctypes.byref(program), 0, 0) == 0)  # SECCOMP_MODE_FILTER
    except (OSError, AttributeError):
        return False


def _child(target: str, out: int, nonce: bytes) -> None:
    """In the forked child: import and call the verifier, send its outcome, exit at once (no
    ``atexit`` handler or thread of the agent's code runs after the outcome is sent)."""
    write, dumps, exit_now = os.write, json.dumps, os._exit  # taken before any user code runs
    _prctl(_PR_SET_DUMPABLE, 1)
    judge = os.getppid()
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)  # kill(0, ...) in the agent's code reaches the child's group only
    _forbid_signals_to(judge, os.getpgid(judge))
    message: dict[str, Any]
    try:
        sys.path[:] = import_path("verify", list(sys.path), dict(os.environ), os.getcwd())
        # Bytecode is read and written in a private directory: a ``__pycache__/*.pyc`` the
        # agent planted (matching a source it left unchanged) is never executed.
        sys.pycache_prefix = tempfile.mkdtemp(prefix="evalrun-pycache-")
        ctx = context_from_env("verify", dict(os.environ))
        try:
            func = _load(target)
        except Exception:
            traceback.print_exc()
            message = {"outcome": "not_found"}
        else:
            try:
                result = func(ctx)
            except AssertionError as exc:
                message = {"outcome": "reject", "message": str(exc)}
            except SystemExit as exc:
                message = {"outcome": "exit", "code": exc.code if isinstance(exc.code, int) else 1}
                if exc.code is None or exc.code == 0:
                    message = {"outcome": "exit", "code": 0}
            except BaseException:
                traceback.print_exc()
                message = {"outcome": "crash"}
            else:
                message = {"outcome": "return", "value": result}
        try:
            body = dumps(message).encode()
        except (TypeError, ValueError):
            bad = {"outcome": "bad_return", "repr": repr(message.get("value"))[:200]}
            body = dumps(bad).encode()
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        data = nonce + len(body).to_bytes(4, "big") + body
        while data:
            data = data[write(out, data) :]
    finally:
        exit_now(0)


def _read_outcome(fd: int, pid: int) -> tuple[bytes, int | None]:
    """Read the child's message (nonce, length, JSON) until it is whole, the pipe closes, the
    child is gone, or more than a message's worth arrived; return (the bytes read, the
    child's wait status if it was reaped).  Bounded: a process of the agent's that keeps the
    pipe open and writes forever cannot hold the judge once the child has ended."""
    data = b""
    status: int | None = None
    head = _NONCE_BYTES + 4
    limit = head + _MAX_MESSAGE

    def whole() -> bool:
        if len(data) > limit:
            return True
        return len(data) >= head and len(data) >= head + int.from_bytes(
            data[_NONCE_BYTES:head], "big"
        )

    while True:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
            if whole():
                break
        done, status_now = os.waitpid(pid, os.WNOHANG)
        if done:
            status = status_now
            os.set_blocking(fd, False)
            with contextlib.suppress(BlockingIOError):
                while not whole() and (chunk := os.read(fd, 65536)):
                    data += chunk
            break
    return data, status


def _descendants(root: int) -> list[int]:
    """Every live process whose parent chain leads to ``root`` (from ``/proc``)."""
    parents: dict[int, int] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if fields and fields[0] != b"Z":
            parents[int(name)] = int(fields[1])
    found: list[int] = []
    frontier = [root]
    while frontier:
        current = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == current and p != root]
        found += kids
        frontier += kids
    return found


def _kill_leftovers(pid: int, status: int | None) -> int | None:
    """Kill the child and everything it left (the judge is their subreaper: orphans come
    back to it); reap them.  Returns the child's wait status."""
    me = os.getpid()
    with contextlib.suppress(ProcessLookupError):
        if status is None:
            os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        left = _descendants(me)
        if not left:
            break
        for p in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        _reap(pid, left)
    while True:
        try:
            done, code = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if not done:
            break
        if done == pid:
            status = code
    if status is None:
        with contextlib.suppress(ChildProcessError):
            status = os.waitpid(pid, 0)[1]
    return status


def _reap(pid: int, left: list[int]) -> None:
    for p in left:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(p, 0)


def _how_it_ended(status: int | None) -> str:
    if status is None:
        return "it ended"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"it was killed by signal {name}"
    return f"its process exited with status {os.waitstatus_to_exitcode(status)}"


def _clear_rewards(verifier_dir: Path | None) -> None:
    if verifier_dir is None:
        return
    for name in _REWARD_FILES:
        path = verifier_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _write_new(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _verdict(message: dict[str, Any], verifier_dir: Path | None) -> int:
    """The exit status for a verifier's outcome; the judge writes the reward file itself."""
    outcome = message.get("outcome")
    if outcome == "not_found":
        return NOT_FOUND
    if outcome == "reject":
        print(f"verification failed: {message.get('message', '')}")
        return 1
    if outcome == "exit":
        code = message.get("code")
        if code == 0 or not isinstance(code, int) or isinstance(code, bool):
            print("evalrun: the verifier did not return (SystemExit(0)): a crash, not a verdict")
            return CRASHED
        return code if 0 < code < 256 and code not in (CRASHED, NOT_FOUND) else 1
    if outcome != "return":
        if outcome == "bad_return":
            print(
                f"evalrun: a verifier must return None, a bool, a number or a dict of numbers,"
                f" not {message.get('repr')}"
            )
        return CRASHED
    value = message.get("value")
    if value is None or value is True:
        return 0
    if value is False:
        return 1
    if verifier_dir is None:
        return 0
    if isinstance(value, (int, float)):
        verifier_dir.mkdir(parents=True, exist_ok=True)
        _write_new(verifier_dir / "reward.txt", f"{float(value)}\n")
        return 0
    if isinstance(value, dict):
        verifier_dir.mkdir(parents=True, exist_ok=True)
        _write_new(verifier_dir / "reward.json", json.dumps(value))
        return 0
    print(f"evalrun: a verifier must return None, a bool, a number or a dict, not {value!r}")
    return CRASHED


def judge(target: str) -> int:
    """Run the verifier ``target`` in a forked child and judge by what it sends back."""
    verifier = os.environ.get("EVALRUN_VERIFIER_DIR")
    verifier_dir = Path(verifier) if verifier else None
    _prctl(_PR_SET_DUMPABLE, 0)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    nonce = os.urandom(_NONCE_BYTES)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        _child(target, write_end, nonce)
    os.close(write_end)
    data, status = _read_outcome(read_end, pid)
    os.close(read_end)
    status = _kill_leftovers(pid, status)
    _clear_rewards(verifier_dir)  # only what this process writes below counts
    message: dict[str, Any] | None = None
    head = _NONCE_BYTES + 4
    if len(data) >= head and data[:_NONCE_BYTES] == nonce:
        size = int.from_bytes(data[_NONCE_BYTES:head], "big")
        with contextlib.suppress(ValueError):
            parsed = json.loads(data[head : head + size]) if len(data) >= head + size else None
            message = parsed if isinstance(parsed, dict) else None
    if message is None:
        print(
            f"evalrun: the verifier did not return ({_how_it_ended(status)}):"
            " a crash, not a verdict"
        )
        return CRASHED
    return _verdict(message, verifier_dir)


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    raise SystemExit(main(sys.argv[1:]))
