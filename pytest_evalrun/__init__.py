"""pytest-evalrun: agent-evaluation trials as pytest items."""

__version__ = "0.3.0"
