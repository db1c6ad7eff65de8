"""Headless Chromium driven through the DevTools protocol over a pipe
(``--remote-debugging-pipe``: commands on fd 3, answers and events on fd 4, each a JSON object
ended by a NUL byte), standard library only. The HTML report's tests use it to run axe-core in
the page, press keys as a user does (``Input.dispatchKeyEvent``) and read the page's state.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from headless import _FLAGS, CHROMIUM, SKIP_REASON

#: Where tests/tools/install_axe_core.sh puts axe-core.
AXE_JS = (
    Path(os.environ.get("EVALRUN_AXE_CORE", "~/.cache/pytest-evalrun-tools/axe-core")).expanduser()
    / "node_modules/axe-core/axe.min.js"
)
AXE_SKIP_REASON = "axe-core is not installed (tests/tools/install_axe_core.sh installs it)"

_KEYS = {
    "Tab": (9, "\t"),
    "Enter": (13, "\r"),
    " ": (32, " "),
    "Home": (36, ""),
    "End": (35, ""),
}


class Browser:
    """One headless Chromium with one page, at a given window size."""

    def __init__(self, *, width: int = 1280, height: int = 900) -> None:
        assert CHROMIUM, SKIP_REASON
        self._profile = tempfile.TemporaryDirectory(prefix="evalrun-cdp-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def fds() -> None:  # in the child: fd 3 reads our commands, fd 4 writes answers
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={self._profile.name}",
             "--remote-debugging-pipe", f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=fds, pass_fds=(3, 4),  # kept open after preexec_fn's dup2
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.session: str | None = None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call(
            "Target.attachToTarget", targetId=page["targetId"], flatten=True
        )["sessionId"]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # -- protocol

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed its DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        msg: dict[str, Any] = json.loads(raw)
        return msg

    def call(self, method: str, *, timeout: float = 120.0, **params: Any) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            msg["sessionId"] = self.session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer.get("result", {})
                return result

    def js(self, expression: str, *, timeout: float = 120.0) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True, timeout=timeout)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression[:80]}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float = 60.0) -> Any:
        """Poll until the expression is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout}s: {expression}")
            time.sleep(0.05)

    # -- what a user does

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for(
            "document.readyState === 'complete' && "
            "document.documentElement.hasAttribute('data-ready-ms') && "
            f"location.href === {json.dumps(url)}"
        )

    def press(self, key: str, *, shift: bool = False) -> None:
        code, text = _KEYS[key]
        mods = 8 if shift else 0
        common = {"key": key, "code": "Space" if key == " " else key,
                  "windowsVirtualKeyCode": code, "modifiers": mods}
        self.call("Input.dispatchKeyEvent", type="keyDown" if text else "rawKeyDown",
                  text=text, **common)
        self.call("Input.dispatchKeyEvent", type="keyUp", **common)

    def run_axe(self, axe_js: Path = AXE_JS) -> list[dict[str, Any]]:
        """axe-core's violations on the page as it is now (injected past the page's CSP)."""
        self.js(axe_js.read_text(encoding="utf-8") + "\n;true")
        result: list[dict[str, Any]] = self.js(
            "axe.run(document, {resultTypes: ['violations']}).then(r => r.violations.map("
            "v => ({id: v.id, impact: v.impact, nodes: v.nodes.length, "
            "targets: v.nodes.slice(0, 3).map(n => n.target.join(' '))})))",
            timeout=300.0,
        )
        return result

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, TimeoutError, OSError):
            self.call("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child)
        os.close(self._from_child)
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
