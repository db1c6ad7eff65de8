"""The model gateway: between a preset agent's CLI and its model API, outside the sandbox.

:mod:`.server` forwards the CLI's requests with the real key (the CLI only has a stand-in),
:mod:`.usage` reads each call's tokens from the API's own responses, :mod:`.ledger` keeps them
with the trial's budget and prices them, :mod:`.recording` records and replays exchanges, and
:mod:`.mock` is a scripted model server for offline tests. docs/gateway.md describes it.
"""

from __future__ import annotations

from .ledger import Budget, CallRecord, Ledger, call_cost
from .server import Gateway
from .usage import Tokens

__all__ = ["Budget", "CallRecord", "Gateway", "Ledger", "Tokens", "call_cost"]
