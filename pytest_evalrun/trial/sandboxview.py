"""What a sandboxed step sees of the host (:mod:`.sandbox`): the paths inside (the private
``/tmp``, ``HOME``, the workspace), the system's directories every step sees, what is hidden
inside what is visible (credential stores, the system's secret files), the mounts bwrap is
given (:class:`Mount`, ordered by depth so the most specific wins) and the path tests they are
placed by, this interpreter's and package's paths, and the empty file bound over hidden files.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import sys
import tempfile
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

TMP_INSIDE = "/tmp"
HOME_INSIDE = "/tmp/home"
WORKSPACE_INSIDE = "/tmp/workspace"


#: Credential stores under the user's home (globs), hidden from every sandboxed step.
CREDENTIAL_STORES: tuple[str, ...] = (
    ".ssh",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".kube",
    ".docker",
    ".netrc",
    ".git-credentials",
    ".config/git/credentials",
    ".config/gh",
    ".config/hub",
    ".config/glab-cli",
    ".npmrc",
    ".yarnrc",
    ".pypirc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    ".gem/credentials",
    ".m2/settings.xml",
    ".terraform.d/credentials.tfrc.json",
    ".vault-token",
    ".password-store",
    ".local/share/keyrings",
    ".config/op",
    ".huggingface",
    ".cache/huggingface/token",
    ".config/anthropic",
    ".config/openai",
    ".claude*",
    ".codex",
    ".gemini",
    ".config/github-copilot",
    ".config/gh-copilot",
    ".config/Code/User/globalStorage",
    ".local/share/opencode",
    ".config/opencode",
    ".config/rclone",
    ".pgpass",
    ".s3cfg",
    ".boto",
    ".bash_history",
    ".zsh_history",
    ".python_history",
    ".node_repl_history",
    ".psql_history",
    ".mysql_history",
    ".lesshst",
    ".viminfo",
    ".env",
    ".local/share/fish",
)


#: What every sandboxed step sees of the host, read-only: the system's programs, libraries
#: and configuration (links such as ``/bin -> usr/bin`` are kept as links).  Nothing else of
#: the host is there: no home, no ``/tmp`` (a private one), ``/var``, ``/run``, ``/srv``,
#: ``/mnt`` or the suite; a step's own paths are added by its
#: :class:`~.sandbox.SandboxPolicy`.
SYSTEM_DIRS: tuple[str, ...] = (
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
    "/sys",
)  # fmt: skip


#: Files of :data:`SYSTEM_DIRS` no step sees (an empty file is bound over them): as uid 0
#: without capabilities a step is still their owner.
SYSTEM_SECRETS: tuple[str, ...] = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")


@functools.lru_cache(maxsize=8)
def credential_paths(home: str, runtime_dir: str | None = None) -> tuple[str, ...]:
    """Existing credential stores under ``home`` (resolved), and ``runtime_dir``."""
    found: list[str] = []
    for pattern in CREDENTIAL_STORES:
        for path in glob.glob(os.path.join(glob.escape(home), pattern)):
            found.append(os.path.realpath(path))
    if runtime_dir and os.path.isdir(runtime_dir):
        found.append(os.path.realpath(runtime_dir))
    return tuple(dict.fromkeys(found))


# Mount kinds, in the order they apply to one path: hide, then read-only, then writable.
HIDE, HIDE_FILE, DIR, LINK, RO, RW = 0, 1, 2, 3, 4, 5


@dataclass(frozen=True, order=True)
class Mount:
    depth: int
    kind: int
    dest: str
    src: str = field(default="", compare=False)

    def args(self, empty: str) -> list[str]:
        if self.kind == HIDE:
            return ["--tmpfs", self.dest]
        if self.kind == HIDE_FILE:
            return ["--ro-bind", empty, self.dest]
        if self.kind == DIR:
            return ["--dir", self.dest]
        if self.kind == LINK:
            return ["--symlink", self.src, self.dest]
        if self.kind == RO:
            return ["--ro-bind", self.src, self.dest]
        return ["--bind", self.src, self.dest]


#: What every sandbox mounts itself (``--dev``, ``--proc``): nothing of the host is bound,
#: hidden or linked there (a bind of the host's /dev/null, e.g. named by ``{pytest}``'s
#: ``-c /dev/null``, would be a device on a nodev mount: unopenable).
OWN_MOUNTS = ("/dev", "/proc")


def own_mount(path: str) -> bool:
    return any(under(path, d) for d in OWN_MOUNTS)


def depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def python_paths() -> Iterable[str]:
    """This interpreter, its prefixes and this plugin's own package: ``python:`` steps and
    ``{python}`` must run wherever they are installed (a venv or an editable checkout under
    ``/tmp`` or in a home)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # pytest_evalrun/
    return (
        sys.prefix,
        sys.base_prefix,
        os.path.dirname(os.path.realpath(sys.executable)),
        package,
    )


class _Empty:
    """An empty read-only file, bound over hidden credential files (``/dev/null`` cannot be:
    bwrap mounts binds ``nodev``).  One per process, removed at exit."""

    def __init__(self) -> None:
        self.path: str | None = None

    def get(self) -> str:
        if self.path is None or not os.path.isfile(self.path):
            directory = tempfile.mkdtemp(prefix="evalrun-sandbox-")
            path = os.path.join(directory, "empty")
            with open(path, "wb"):
                pass
            os.chmod(path, 0o444)
            self.path = path
            weakref.finalize(self, _remove_owned, directory, os.getpid())
        return self.path


def _remove_owned(directory: str, pid: int) -> None:
    if os.getpid() == pid:
        shutil.rmtree(directory, ignore_errors=True)


_EMPTY = _Empty()


def empty_file() -> str:
    return _EMPTY.get()
