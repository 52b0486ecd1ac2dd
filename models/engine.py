"""All shards of the monitor in one process: what replay runs, event by event.

Accounts go to shards as Kafka's default partitioner sends their records to
partitions; policy updates go to every shard (the stream broadcasts them to
every partition, for the same reason).
"""
from __future__ import annotations

from .events import BreakerCommand, Event, PolicyUpdate
from .monitor import Monitor
from .partitioning import partition_for
from .policy import Policy
from .state import AccountState
from .step import StepResult

__all__ = ["Engine"]


class Engine:
    """Routes events to per-partition :class:`Monitor` shards and keeps account states.

    Raises :class:`models.errors.Rejected` for events the core refuses; the
    caller reports them and goes on.
    """

    def __init__(self, partitions: int = 4, policy: Policy | None = None, checkpoint_every: int = 500, bad_dpd: int = 30) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self.monitors = [Monitor(f"p{i}", policy, checkpoint_every=checkpoint_every, bad_dpd=bad_dpd) for i in range(partitions)]
        self.states: dict[str, AccountState] = {}
        self._partition: dict[str, int] = {}  # murmur2 in Python costs 3 us; an account's never changes

    def process(self, event: Event) -> list[StepResult]:
        """Apply one event: one result for an account event, none for a policy update, one per
        account with a held move for a breaker command."""
        if isinstance(event, PolicyUpdate):
            for m in self.monitors:
                m.control(event)
            return []
        if isinstance(event, BreakerCommand):
            results = []
            for m in self.monitors:
                for aid in m.command(event):
                    r = m.resolve(self.states[aid], event)
                    self.states[aid] = r.state
                    results.append(r)
            return results
        p = self._partition.get(event.account_id)
        if p is None:
            p = self._partition[event.account_id] = partition_for(event.account_id, self.partitions)
        monitor = self.monitors[p]
        result = monitor.apply(self.states.get(event.account_id), event)
        self.states[event.account_id] = result.state
        if monitor.checkpoint_due:
            monitor.checkpoint()
        return [result]
