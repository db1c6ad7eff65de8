"""Verifier for fix-two-bugs, with partial credit: one point per fixed function.

Usage: python two_bugs.py WORKSPACE. Writes reward.json with the one key every task of this
suite reports, ``reward`` (Harbor's viewer averages each key over all of a variant's trials,
so a key only some tasks write would show a misleading mean); the per-function detail is in
the output.
"""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, sys.argv[1])  # the agent's workspace, where stats.py is
import stats  # noqa: E402

checks = {
    "mean": stats.mean([1, 2, 3]) == 2,
    "maximum": stats.maximum([1, 5, 3]) == 5,
}
for name, ok in checks.items():
    print(f"{name}: {'fixed' if ok else 'wrong'}")
reward = sum(checks.values()) / len(checks)
out = Path(os.environ["EVALRUN_VERIFIER_DIR"]) / "reward.json"
out.write_text(json.dumps({"reward": reward}))
