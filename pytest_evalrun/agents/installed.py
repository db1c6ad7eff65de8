"""The version of an agent CLI as installed, read by the plugin outside the sandbox.

A CLI's own records say which version wrote them, but the model's tool calls can edit those
records (the agent's HOME is writable); the install itself is not (the agent sees its program
read-only).  :func:`installed_version` reads the npm package the executable belongs to:
``.../node_modules/@scope/cli/package.json`` found from the executable's real path (npm's
``.bin`` links point into the package).  None when it is not an npm package.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path

__all__ = ["installed_version"]

_VERSION = re.compile(r"[0-9]+(\.[0-9A-Za-z-]+){1,3}([-+][0-9A-Za-z.+-]*)?")
_MAX_UP = 4


@lru_cache(maxsize=64)
def installed_version(executable: str) -> str | None:
    """The ``version`` of the package.json nearest above the real path of ``executable``
    (at most a few levels up, and never above the ``node_modules`` it lives in)."""
    try:
        real = Path(os.path.realpath(executable))
    except (OSError, ValueError):
        return None
    if "node_modules" not in real.parts:
        return None
    here = real.parent
    for _ in range(_MAX_UP):
        if here.name == "node_modules" or here == here.parent:
            return None
        candidate = here / "package.json"
        if candidate.is_file() and not candidate.is_symlink():
            try:
                data = json.loads(candidate.read_bytes()[:1_000_000])
            except (OSError, ValueError):
                return None
            version = data.get("version") if isinstance(data, dict) else None
            if isinstance(version, str) and _VERSION.fullmatch(version):
                return version
            return None
        here = here.parent
    return None
