"""The attack suites again as an ordinary user (issue 19): run as root, the suites themselves
are the root half; this runs them as an ordinary user (``tests/asuser.py``), serially and with
``-n 2``, in a copy of the project the user owns with a venv of its own."""

from __future__ import annotations

import re

import pytest
from asuser import UserRun, ordinary_user

from pytest_evalrun.trial.bwrapprobe import probe

__all__ = ["ordinary_user"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not probe().available, reason=f"bubblewrap cannot run here: {probe().reason}"
    ),
]

ATTACKS = ("tests/test_judge_view.py", "tests/test_hostile.py", "tests/test_network.py",
           "tests/test_environments.py")


def test_the_user_is_ordinary(ordinary_user: UserRun) -> None:
    done = ordinary_user.run([ordinary_user.python, "-c", "import os; print(os.geteuid())"])
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == ordinary_user.uid != 0


@pytest.mark.parametrize("workers", ["serial", "-n 2"])
def test_every_attack_fails_as_an_ordinary_user(ordinary_user: UserRun, workers: str) -> None:
    args = ["-n", "2"] if workers != "serial" else ["-p", "no:xdist"]
    done = ordinary_user.pytest(*ATTACKS, "-q", "-rs", *args)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    summary = out.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary), out[-3000:]
    assert "failed" not in summary and "skipped" not in summary, out[-3000:]
