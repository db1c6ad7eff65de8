"""Verifier for fix-add: add() must add. Usage: python calculator.py WORKSPACE (exit 0 = pass)."""
import sys

sys.path.insert(0, sys.argv[1])  # the agent's workspace, where calc.py is
import calc  # noqa: E402

ok = calc.add(2, 3) == 5 and calc.add(-1, 1) == 0
print("add(2, 3) =", calc.add(2, 3))
sys.exit(0 if ok else 1)
