"""Mock model servers for testing coding-agent CLIs offline (standard library only).

``MockLLM`` serves a :class:`Script` of turns over the Anthropic Messages, OpenAI Responses and
Chat Completions and Gemini APIs, streaming as the real APIs do, logs every request, and refuses
and logs any attempt to reach another host through it as a proxy.
"""

from .mockserver import MockLLM
from .script import Call, Script, Turn, Usage, api_error, custom_tool, say, shell, tool

__all__ = ["Call", "MockLLM", "Script", "Turn", "Usage", "api_error", "custom_tool", "say",
           "shell", "tool"]
