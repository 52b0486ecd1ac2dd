"""All shards of the monitor in one process: what replay runs, event by event.

Accounts go to shards as Kafka's default partitioner sends their records to
partitions; control events go to every shard (in the stream, every worker reads
the one-partition control topic whole and hands it to every partition it holds).
The portfolio's trainer learns every shard's outcomes as the stream's trainer
does (:mod:`riskmon.models.portfolio`), and the shards score with its versions.
"""
from __future__ import annotations

import copy

from .events import Event, ModelCommand, is_broadcast
from .featurespec import FeatureSpec
from .monitor import Monitor
from .partitioning import partition_for
from .policy import Policy
from .portfolio import PORTFOLIO_BY_DEFAULT, Portfolio, Revealed
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
                 spec: FeatureSpec | None = None, model: RiskModel | None = None, model_base: str = "",
                 portfolio: bool = PORTFOLIO_BY_DEFAULT) -> None:
        """``model``: every shard starts from a copy of it (a model file's, named ``model_base``), not from nothing.

        ``portfolio``: one model for every shard, learned by one trainer from all their outcomes
        (:mod:`riskmon.models.portfolio`), so that decisions do not depend on the partition count;
        otherwise each shard learns its own."""
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.partitions = partitions
        self.monitors = [Monitor(f"p{i}", policy, None if model is None else copy.deepcopy(model), checkpoint_every=checkpoint_every,
                                 bad_dpd=bad_dpd, spec=spec, model_base=model_base)
                         for i in range(partitions)]
        self.portfolio: Portfolio | None = None
        if portfolio:
            self.portfolio = Portfolio(None if model is None else copy.deepcopy(model), spec, model_base)
            self._adopt()
        self.states: dict[str, AccountState] = {}
        self._partition: dict[str, int] = {}  # murmur2 in Python costs 3 us; an account's never changes

    def process(self, event: Event) -> list[StepResult]:
        """Apply one event in the shard that owns its account, or in every shard (control events)."""
        states = self.states
        trainer = self.portfolio
        if trainer is not None and trainer.advance(event.ts):
            self._adopt()
        if not is_broadcast(event):
            p = self._partition.get(event.account_id)
            if p is None:
                p = self._partition[event.account_id] = partition_for(event.account_id, self.partitions)
            results = self.monitors[p].process(event, states, owned=True)  # the engine keeps only the results' states
            for result in results:
                states[result.state["id"]] = result.state
                if trainer is not None and result.outcomes:
                    trainer.offer(Revealed(event.ts, event.account_id, tuple(result.outcomes), event.event_id))
            return results
        if trainer is not None and isinstance(event, ModelCommand):
            for monitor in self.monitors:
                monitor.model_command(event)  # marks it applied (the trainer holds the models)
            trainer.command(event)  # in force with the model version that learns its epoch
            return []
        out = []
        for monitor in self.monitors:
            for result in monitor.process(event, states):
                states[result.state["id"]] = result.state
                out.append(result)
        return out

    def finish(self) -> RiskModel:
        """The end of the log: the portfolio's trainer learns the outcomes still waiting for their epoch to
        close; the model the engine ends with (the portfolio's, or the first shard's)."""
        if self.portfolio is not None:
            self.portfolio.advance_to(2**62)
            return self.portfolio.model
        return self.monitors[0].model

    def _adopt(self) -> None:
        assert self.portfolio is not None
        for monitor in self.monitors:
            monitor.adopt(self.portfolio.model, self.portfolio.model_version)
