"""Tables of the ``evalrun`` command: sized to the terminal, same layout long or short."""

from __future__ import annotations

import pytest

from pytest_evalrun.cli import common

ROWS = [
    ["fix-small-bugs", "2026-11-27__16-05-04", "completed", "24", "baseline 33% (4/12), x 1%"],
    ["docs", "r2", "running", "3", "-"],
]
HEADERS = ["experiment", "run", "status", "trials", "pass rate by variant"]


def test_long_tables_are_laid_out_as_tabulate_does(monkeypatch: pytest.MonkeyPatch) -> None:
    short = common.table(ROWS, HEADERS, "lllrl", width=200)
    monkeypatch.setattr(common, "FAST_TABLE_ROWS", 0)
    assert common.table(ROWS, HEADERS, "lllrl", width=200) == short


@pytest.mark.parametrize("width", [66, 75, 83])
def test_a_table_is_cut_to_the_width(width: int) -> None:
    lines = common.table(ROWS, HEADERS, "lllrl", shrink=4, width=width)
    assert max(len(line) for line in lines) <= width
    assert lines[2].startswith("fix-small-bugs  2026-11-27__16-05-04  completed")
    assert lines[2].endswith("…")


def test_a_table_that_fits_is_not_cut() -> None:
    lines = common.table(ROWS, HEADERS, "lllrl", shrink=4, width=200)
    assert lines[2].endswith("baseline 33% (4/12), x 1%")


def test_column_groups_fit_beside_the_fixed_columns() -> None:
    assert common.column_groups([10, 10, 10, 10], 20, 60) == [[0, 1, 2], [3]]
    assert common.column_groups([100], 20, 60) == [[0]]
