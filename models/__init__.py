"""riskmon's pure core: events, account state, risk model, early-warning policy.

Imports nothing of Kafka, Faust or Prometheus (a test enforces it).
"""
from __future__ import annotations

from .codec import decode, dumps
from .decisions import Decision, Reason
from .engine import Engine
from .errors import RejectReason, Rejected
from .monitor import Monitor
from .policy import Policy, default_policy, load_policy
from .step import Context, StepResult, step
from .vocabulary import ACTIONS, STATES, STATUSES

__all__ = [
    "ACTIONS", "Context", "Decision", "Engine", "Monitor", "Policy", "Reason", "RejectReason",
    "Rejected", "STATES", "STATUSES", "StepResult", "decode", "default_policy", "dumps", "load_policy", "step",
]
