"""The mock model server, now in the package (:mod:`pytest_evalrun.gateway.mock`): this name is
kept for the tests that import it as ``mockllm``."""

from pytest_evalrun.gateway.mock import (
    Call,
    MockLLM,
    Script,
    Turn,
    Usage,
    api_error,
    custom_tool,
    say,
    shell,
    tool,
)

__all__ = ["Call", "MockLLM", "Script", "Turn", "Usage", "api_error", "custom_tool", "say",
           "shell", "tool"]
