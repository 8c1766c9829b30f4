"""The ledger of every model and tool call: shared with agent_team, in ``examples/_chaos.py``."""

from __future__ import annotations

from examples._chaos import Ledger, LedgerTransport, Verdict, committed_calls, model_key, verify

__all__ = ["Ledger", "LedgerTransport", "Verdict", "committed_calls", "model_key", "verify"]
