"""pytest fixture: a started :class:`MockLLM` with an empty script, stopped after the test.

Use it with ``from mockllm.fixtures import mock_llm`` in a test module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_evalrun.gateway.mock import MockLLM


@pytest.fixture
def mock_llm(tmp_path: Path) -> Iterator[MockLLM]:
    with MockLLM(log_path=tmp_path / "mock_requests.jsonl") as mock:
        yield mock
