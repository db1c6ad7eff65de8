"""``{python}`` and ``{pytest}`` in podman trials: the image's own python3, with the same
protections as in the local sandbox (issue 19's verifier attacks: the agent's ``pytest.py``,
a root ``conftest.py`` that was not in the fixture, ``sitecustomize``, planted bytecode, fake
programs ahead on PATH), judged by the trial's status; and an image without python3 is an
error that names what to install.

The image with python3 and pytest is built from a Dockerfile on the base image by the plugin
itself (once; later sessions reuse it, cached by content). Needs podman, the base image and
the apt mirror for that first build: skipped, saying so, where podman or the image is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import run_pytest
from test_podman import BASE_IMAGE, podman, trials  # noqa: F401

DOCKERFILE = (f"FROM {BASE_IMAGE}\n"
              "RUN apt-get update && apt-get install -y --no-install-recommends python3 "
              "python3-pytest && rm -rf /var/lib/apt/lists/*\n")
CALC = "def add(a, b):\n    return a - b\n"
HIDDEN = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"
CHECK = "import sys\nsys.path.insert(0, '.')\nfrom calc import add\nsys.exit(add(2, 3) != 5)\n"

#: name -> the agent (a shell command run in the workspace).
AGENTS = {
    "fixer": "sed -i 's/return a - b/return a + b/' calc.py",
    "idle": "true",
    # the agent's pytest, found first if the workspace were on sys.path
    "own-pytest": "printf 'import sys\\nsys.exit(0)\\n' > pytest.py && mkdir -p _pytest",
    # a root conftest.py that was not in the fixture: every test passes
    "conftest": (
        "printf '%s\\n' 'import pytest' '@pytest.hookimpl(hookwrapper=True)' "
        "'def pytest_runtest_makereport(item, call):' '    out = yield' "
        "'    rep = out.get_result()' '    rep.outcome = \"passed\"' > conftest.py"
    ),
    # sitecustomize / usercustomize in the workspace and a .pth beside them
    "sitecustomize": (
        "printf 'import os\\nos._exit(0)\\n' > sitecustomize.py && "
        "cp sitecustomize.py usercustomize.py && echo 'import sitecustomize' > evil.pth"
    ),
    # fake programs where a relative PATH entry would find them
    "fake-python": (
        "for d in . bin node_modules/.bin; do mkdir -p $d; "
        "printf '#!/bin/sh\\nexit 0\\n' > $d/python3; chmod +x $d/python3; done"
    ),
}


def write(root: Path, *, image: dict[str, Any]) -> None:
    (root / "fixtures" / "calc").mkdir(parents=True)
    (root / "fixtures" / "calc" / "calc.py").write_text(CALC)
    (root / "checks").mkdir()
    (root / "checks" / "hidden_calc.py").write_text(HIDDEN)
    (root / "checks" / "check.py").write_text(CHECK)
    (root / "image").mkdir()
    (root / "image" / "Dockerfile").write_text(DOCKERFILE)
    spec = {
        "experiment": "py-in-podman",
        "environment": image,
        "timeout": 300,
        "variants": {name: {"agent": agent} for name, agent in AGENTS.items()},
        "tasks": [
            {"name": "hidden-tests", "prompt": "fix add", "fixture": "fixtures/calc",
             "verify": "{pytest} -q {experiment_dir}/checks/hidden_calc.py"},
            {"name": "python-check", "prompt": "fix add", "fixture": "fixtures/calc",
             "verify": ["{python}", "{experiment_dir}/checks/check.py"]},
        ],
    }
    (root / "py.eval.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.mark.parametrize("xdist", [False, True], ids=["serial", "n2"])
def test_python_and_pytest_run_the_images_python_and_cannot_be_hijacked(
    tmp_path: Path, podman: str, xdist: bool  # noqa: F811
) -> None:
    write(tmp_path, image={"dockerfile": "image/Dockerfile", "build_timeout": 900})
    done = run_pytest(tmp_path, "--eval-environment=podman", *(["-n", "2"] if xdist else []))
    seen = {(v, t): m for (v, t, _), m in trials(tmp_path).items()}
    assert len(seen) == 2 * len(AGENTS), done.stdout[-3000:]
    statuses = {key: meta["status"] for key, meta in seen.items()}
    want = {(v, t): "passed" if v == "fixer" else "failed" for v in AGENTS
            for t in ("hidden-tests", "python-check")}
    assert statuses == want, done.stdout[-3000:]
    # the hidden tests really ran in the container, with the image's pytest
    out = (seen[("fixer", "hidden-tests")]["_dir"] / "verifier" / "verify-output.txt").read_text()
    assert "1 passed" in out
    out = (seen[("idle", "hidden-tests")]["_dir"] / "verifier" / "verify-output.txt").read_text()
    assert "1 failed" in out and "assert -1 == 5" in out


def test_an_image_without_python3_is_an_error_that_names_the_fix(
    tmp_path: Path, podman: str  # noqa: F811
) -> None:
    write(tmp_path, image={"image": BASE_IMAGE})
    done = run_pytest(tmp_path, "--eval-environment=podman", "-k", "fixer")
    seen = {(v, t): m for (v, t, _), m in trials(tmp_path).items()}
    assert {k: m["status"] for k, m in seen.items()} == {
        ("fixer", "hidden-tests"): "error", ("fixer", "python-check"): "error"}, \
        done.stdout[-3000:]
    text = done.stdout
    assert "python3" in text and BASE_IMAGE in text and "Dockerfile" in text
    assert "Traceback" not in text
