"""A container runtime's CLI, podman or Docker (:mod:`.containers` runs trials' containers
with it): its command lines, one call run to completion, forced removal, the label template
and image lookup that differ between the two, and which runtime runs here (podman where it
runs, else Docker where its daemon answers; asked once per process)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from ..sandboxkind import CONTAINER_RUNTIMES, EnvironmentKind

#: How long one runtime call that is not a step may take (cp, rm, kill).
CALL_TIMEOUT = 120.0


class ContainerError(Exception):
    """The container runtime failed (missing, not answering, a call that failed)."""


@dataclass(frozen=True)
class Runtime:
    """A container runtime's CLI: ``name`` is ``podman`` or ``docker``."""

    name: str
    program: str

    def argv(self, *args: str) -> list[str]:
        return [self.program, *args]

    def call(
        self, *args: str, timeout: float = CALL_TIMEOUT, input_bytes: bytes | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run the CLI to completion; :class:`ContainerError` when it cannot be run or times
        out (its exit status is the caller's to judge)."""
        try:
            return subprocess.run(
                self.argv(*args), input=input_bytes, capture_output=True, timeout=timeout,
                env=dict(env) if env is not None else None, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ContainerError(f"{self.name} {args[0]} timed out after {timeout:g}s") from exc
        except OSError as exc:
            raise ContainerError(f"cannot run {self.program}: {exc.strerror or exc}") from exc

    def force_remove(self, *names: str, timeout: float = CALL_TIMEOUT) -> None:
        """Remove containers at once, running or not (:class:`ContainerError` when the CLI
        cannot be run); Docker's ``rm`` has no stop timeout to give."""
        wait = ("-t", "0") if self.name == EnvironmentKind.PODMAN else ()
        self.call("rm", "-f", *wait, *names, timeout=timeout)

    def label_template(self, label: str) -> str:
        """A ``--format`` template printing a container's label ``label`` (podman's
        ``.Labels`` is a map; Docker's is a string and has ``.Label "name"`` instead)."""
        if self.name == EnvironmentKind.PODMAN:
            return f'{{{{index .Labels "{label}"}}}}'
        return f'{{{{.Label "{label}"}}}}'

    def image_exists(self, image: str) -> bool:
        if self.name == EnvironmentKind.PODMAN:
            return self.call("image", "exists", image).returncode == 0
        return self.call("image", "inspect", image).returncode == 0


def _answers(runtime: Runtime) -> bool:
    try:
        arch = ("{{.Host.Arch}}" if runtime.name == EnvironmentKind.PODMAN
                else "{{.Architecture}}")
        return runtime.call("info", "--format", arch, timeout=30).returncode == 0
    except ContainerError:
        return False


_DETECTED: dict[str, Runtime | None] = {}


def detect_runtime(preference: str = "auto") -> Runtime | None:
    """The container runtime to use: ``podman``, ``docker`` or ``auto`` (podman where it
    runs, else Docker where its daemon answers). None when the one asked for is missing or
    does not answer. Cached per process."""
    if preference in _DETECTED:
        return _DETECTED[preference]
    names = CONTAINER_RUNTIMES if preference == EnvironmentKind.AUTO else (preference,)
    found: Runtime | None = None
    for name in names:
        if name in _DETECTED:  # asked before on its own
            found = _DETECTED[name]
        else:
            program = shutil.which(name)
            found = Runtime(name, program) if program is not None else None
            if found is not None and not _answers(found):
                found = None
            _DETECTED[name] = found
        if found is not None:
            break
    _DETECTED[preference] = found
    return found
