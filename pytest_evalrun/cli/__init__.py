"""The ``evalrun`` console script: read stored runs (never run trials). See docs/cli.md."""
