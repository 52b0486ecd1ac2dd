"""All shards of the monitor in one process: what replay runs, event by event.

Accounts go to shards as Kafka's default partitioner sends their records to
partitions; control events go to every shard (in the stream, every worker reads
the one-partition control topic whole and hands it to every partition it holds).
"""
from __future__ import annotations

import copy

from .events import Event, is_broadcast
from .featurespec import FeatureSpec
from .monitor import Monitor
from .partitioning import partition_for
from .policy import Policy
from .risk_model import RiskModel
from .state import AccountState
from .step import StepResult

__all__ = ["Engine"]


class Engine:
    """Routes events to per-partition :class:`Monitor` shards and keeps account states.

    Raises :class:`riskmon.models.errors.Rejected` for events the core refuses; the
    caller reports them and goes on.
    """

    def __init__(self, partitions: int = 4, policy: Policy | None = None, checkpoint_every: int = 500, bad_dpd: int = 30,
                 spec: FeatureSpec | None = None, model: RiskModel | None = None, model_base: str = "") -> None:
        """``model``: every shard starts from a copy of it (a model file's, named ``model_base``), not from nothing."""
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self.monitors = [Monitor(f"p{i}", policy, None if model is None else copy.deepcopy(model), checkpoint_every=checkpoint_every,
                                 bad_dpd=bad_dpd, spec=spec, model_base=model_base)
                         for i in range(partitions)]
        self.states: dict[str, AccountState] = {}
        self._partition: dict[str, int] = {}  # murmur2 in Python costs 3 us; an account's never changes

    def process(self, event: Event) -> list[StepResult]:
        """Apply one event in the shard that owns its account, or in every shard (control events)."""
        states = self.states
        if not is_broadcast(event):
            p = self._partition.get(event.account_id)
            if p is None:
                p = self._partition[event.account_id] = partition_for(event.account_id, self.partitions)
            results = self.monitors[p].process(event, states, owned=True)  # the engine keeps only the results' states
            for result in results:
                states[result.state["id"]] = result.state
            return results
        out = []
        for monitor in self.monitors:
            for result in monitor.process(event, states):
                states[result.state["id"]] = result.state
                out.append(result)
        return out
