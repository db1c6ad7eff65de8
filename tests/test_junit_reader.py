"""The JUnit XML read by xunit-viewer (its console mode, as CI logs show it): each failure's
detail is printed once. 0.2.0 put the whole multi-line description in the ``message``
attribute as well as the body, so xunit-viewer printed every failure twice."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Suite

#: Where tests/tools or CI install it: npm install --prefix <this> xunit-viewer@10
TOOLS = Path.home() / ".cache" / "pytest-evalrun-tools" / "xunit-viewer"
MARK = "UNIQUE-VERIFY-OUTPUT-7f3a"


def xunit_viewer() -> str:
    local = TOOLS / "node_modules" / ".bin" / "xunit-viewer"
    if local.is_file():
        return str(local)
    found = shutil.which("xunit-viewer")
    if found is None:
        pytest.skip(f"xunit-viewer not found (npm install --prefix {TOOLS} xunit-viewer@10)")
    return found


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "xdist"])
def test_xunit_viewer_prints_each_failure_once(suite: Suite, xdist: bool) -> None:
    viewer = xunit_viewer()
    suite.experiment(
        tasks=[{"name": "bad", "prompt": "SAY hi", "fixture": "fixtures/basic",
                "verify": f"echo {MARK}; echo second line; exit 1"}]
    )  # fmt: skip
    args = ["-p", "no:cacheprovider", "--junitxml=junit.xml", *(["-n", "2"] if xdist else [])]
    r = suite.pytester.runpytest_subprocess(*args)
    r.assert_outcomes(failed=1)
    out = subprocess.run(
        [viewer, "--results", str(suite.root / "junit.xml"), "--console"],
        cwd=suite.root, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(MARK) == 1, out.stdout
    assert out.stdout.count("base / bad / trial 1") >= 1
