"""One model for the whole portfolio: every shard scores with it, one trainer learns it from every outcome.

A per-partition model learns from 1/P of the outcomes, so decisions change with
the partition count and a small portfolio never gathers the evidence a handover
needs. Here the shards only score; the outcomes their steps reveal go to one
:class:`Portfolio`, which learns them in event-time epochs:

- The model in force at event time ``t`` has learned exactly the outcomes
  revealed at event times before ``epoch_start(t) - lag`` (by default: before
  the start of the day before ``t``'s day), nothing later.
- It learns them in one canonical order: by the event time that revealed them,
  then by account, then in the order the account revealed them. Each account's
  events apply in the same order whatever the partitioning, so the order, and
  with it the model, is the same for 1, 4 or 16 partitions, in replay and in the
  stream, whichever partition's outcomes reach the trainer first.
- Each epoch that learned something is a new model version (``m.v<n>``), which
  the decisions made with it carry.

The lag of one epoch costs a day of learning on outcomes that arrive 30 to 60
days after their statements; in the stream it lets partitions run a day apart
before one must wait for the model the others' outcomes make.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .events import ModelCommand
from .featurespec import FeatureSpec, default_spec
from .quality import ScoreQuality, roc_auc
from .risk_model import RiskModel
from .stability import Stability
from .step import Outcome
from .units import DAY_MS

__all__ = ["CHALLENGE_WINDOW", "EPOCH_MS", "PORTFOLIO_BY_DEFAULT", "in_force", "Learns", "Pending", "Portfolio", "Revealed", "learn_outcome", "model_command"]

EPOCH_MS = DAY_MS  # a model version per event-time day at most
# Whether replay, the worker and the tools run one model for the portfolio unless told otherwise
# (RISKMON_MODEL_SCOPE=partition, --model-scope partition: a model per partition, learned there).
PORTFOLIO_BY_DEFAULT = True
LAG_EPOCHS = 1  # the model in force on a day learned the outcomes revealed before the day before it
CHALLENGE_WINDOW = 2000  # the latest outcomes champion and challenger are compared on


def in_force(ts: int, epoch_ms: int = EPOCH_MS, lag_epochs: int = LAG_EPOCHS) -> int:
    """The model in force at event time ``ts`` learned the outcomes revealed before this time (its boundary).

    >>> in_force(10 * EPOCH_MS + 5) == 9 * EPOCH_MS
    True
    """
    return (ts // epoch_ms - lag_epochs) * epoch_ms


class Learns(Protocol):
    """What learns from outcomes: a shard's :class:`riskmon.models.monitor.Monitor` with its own model, or the
    :class:`Portfolio`'s trainer."""

    model: RiskModel
    quality: ScoreQuality
    stability: Stability
    challenger: RiskModel | None
    challenger_since: int | None
    challenge: deque[tuple[bool, float, float]]


def learn_outcome(learner: Learns, names: tuple[str, ...], o: Outcome) -> bool:
    """Grade the score given at the statement, then learn on the features as they were then (point in time);
    a challenger is scored on the same features before either learns. True if the drift detector fired."""
    drift = o.score is not None and learner.quality.update(o.default, o.score)
    x = dict(zip(names, o.features))
    if learner.challenger is not None:
        learner.challenge.append((o.default, learner.model.predict_proba_one(x)[True],
                                  learner.challenger.predict_proba_one(x)[True]))
        learner.challenger.learn_one(x, o.default)
    learner.model.learn_one(x, o.default)
    learner.stability.learned(o.score, o.features)
    return drift


def model_command(learner: Learns, event: ModelCommand) -> str | None:
    """Start, promote or drop a challenger; what was done (None: no challenger to promote or drop)."""
    if event.command == "challenge":
        learner.challenger = RiskModel(learner=event.learner)
        learner.challenger_since = event.ts
        learner.challenge.clear()
        return "challenge"
    if learner.challenger is None:
        return None
    if event.command == "promote":
        learner.model = learner.challenger
    learner.challenger, learner.challenger_since = None, None
    return event.command


@dataclass(frozen=True, slots=True)
class Revealed:
    """Outcomes one account event revealed, with what orders them for the trainer."""

    ts: int  # the event time that revealed them
    account_id: str
    outcomes: tuple[Outcome, ...]
    event_id: str = ""  # the event that revealed them: a shard that redoes it after a crash sends them again
    origin: int = -1  # where the stream's trainer read them (the training topic's offset), to resume from


Pending = Revealed | ModelCommand


class Portfolio:
    """The trainer: learns every shard's outcomes in event-time epochs and canonical order (see the module).

    >>> from riskmon.models.step import Outcome
    >>> p = Portfolio()
    >>> p.offer(Revealed(5 * EPOCH_MS + 1, "b", (Outcome([0.0], 0.1, False),)))
    >>> p.advance(6 * EPOCH_MS), p.model.n_learned     # the day after: not yet
    (False, 0)
    >>> p.advance(7 * EPOCH_MS), p.model.n_learned, p.model_version
    (True, 1, 'm.v1')
    >>> p.offer(Revealed(7 * EPOCH_MS, "a", (Outcome([1.0], 0.2, True),)))
    >>> p.offer(Revealed(8 * EPOCH_MS, "a", (Outcome([1.0], 0.2, False),)))
    >>> p.advance(12 * EPOCH_MS), p.model.n_learned, p.model_version   # two epochs' outcomes: two versions
    (True, 3, 'm.v3')
    """

    def __init__(self, model: RiskModel | None = None, spec: FeatureSpec | None = None, model_base: str = "",
                 epoch_ms: int = EPOCH_MS, lag_epochs: int = LAG_EPOCHS) -> None:
        if epoch_ms < 1 or lag_epochs < 0:
            raise ValueError("an epoch lasts at least 1 ms and the lag is not negative")
        self.model = model if model is not None else RiskModel()
        self.spec = spec or default_spec()
        self.model_base = model_base
        self.epoch_ms = epoch_ms
        self.lag_epochs = lag_epochs
        self.quality = ScoreQuality()
        self.stability = Stability()  # its learned population: the reference the shards' scored ones compare with
        self.challenger: RiskModel | None = None
        self.challenger_since: int | None = None
        self.challenge: deque[tuple[bool, float, float]] = deque(maxlen=CHALLENGE_WINDOW)
        self.version = 0
        self.learned_before: int | None = None  # every outcome revealed before this event time is learned
        self.outcomes_seen = 0
        self.first_learned: int | None = None  # event time of the first outcome learned (with learned_before: the span)
        self.pending: list[Pending] = []
        self._pending_keys: set[tuple[str, str]] = set()  # (account or "", event id) of what is pending
        self.late = 0  # outcomes offered after their epoch was learned: a redone step's, or a straggler's (dropped)
        self.commands: set[str] = set()  # model commands applied (a restarted trainer reads them again)

    @property
    def model_version(self) -> str:
        return f"{self.model_base}.m.v{self.version}" if self.model_base else f"m.v{self.version}"

    def boundary(self, ts: int) -> int:
        """The model in force at event time ``ts`` learned the outcomes revealed before this time."""
        return in_force(ts, self.epoch_ms, self.lag_epochs)

    def offer(self, revealed: Revealed) -> None:
        """Outcomes a shard's step revealed: learned once their epoch closes.

        Outcomes of an epoch already learned are dropped and counted (``late``): in the stream, those of
        a step a shard redid after a crash, which the model has learned, or a straggler's. Outcomes of
        an event already offered are dropped too (a redone step's, before its epoch closed)."""
        if self.learned_before is not None and revealed.ts < self.learned_before:
            self.late += len(revealed.outcomes)
            return
        if revealed.event_id:
            key = (revealed.account_id, revealed.event_id)
            if key in self._pending_keys:
                return
            self._pending_keys.add(key)
        self.pending.append(revealed)

    def command(self, event: ModelCommand) -> None:
        """A model command (once): it takes effect in order with the outcomes, in its epoch's model version
        (a promotion puts the challenger in force from the version that learns the command's epoch)."""
        if event.event_id in self.commands or any(isinstance(r, ModelCommand) and r.event_id == event.event_id
                                                  for r in self.pending):
            return
        self.pending.append(event)

    def advance(self, ts: int) -> bool:
        """Learn what the model in force at ``ts`` must have learned; True if that made a new version."""
        return self.advance_to(self.boundary(ts))

    def advance_to(self, until: int, on_version: Callable[[int], None] | None = None) -> bool:
        """Learn every outcome (and apply every model command) of event time before ``until``, in canonical
        order; True if that made a new version.

        Each epoch with anything to learn is one version, whether its boundary is reached alone or with
        later ones: the model at a boundary depends on the outcomes and the epoch grid only, not on
        which boundaries the events happened to ask for. ``on_version(b)``: called as each version is
        complete, with the boundary it is in force from (the stream's trainer publishes it there).
        """
        if self.learned_before is not None and until <= self.learned_before:
            return False
        self.learned_before = until
        if not self.pending or min(r.ts for r in self.pending) >= until:
            return False
        due = [r for r in self.pending if r.ts < until]
        self.pending = [r for r in self.pending if r.ts >= until]
        due.sort(key=_canonical)  # stable: an account's outcomes keep the order it revealed them in
        names = self.spec.names
        start = self.version
        epoch, changed = None, False  # the epoch being learned, and whether it changed the model in force yet
        for r in due:
            if r.ts // self.epoch_ms != epoch:
                if changed and on_version is not None:
                    on_version((epoch + 1) * self.epoch_ms)  # type: ignore[operator]
                epoch, changed = r.ts // self.epoch_ms, False
            if isinstance(r, ModelCommand):
                self.commands.add(r.event_id)
                if model_command(self, r) == "promote" and not changed:
                    self.version, changed = self.version + 1, True
                continue  # a challenge or a drop changes no score: no version of its own
            self._pending_keys.discard((r.account_id, r.event_id))
            if self.first_learned is None:
                self.first_learned = r.ts
            if not changed:
                self.version, changed = self.version + 1, True
            for o in r.outcomes:
                learn_outcome(self, names, o)
                self.outcomes_seen += 1
        if changed and on_version is not None:
            on_version((epoch + 1) * self.epoch_ms)  # type: ignore[operator]
        return self.version != start

    def lineage(self) -> dict[str, Any]:
        """What the model in force learned from: outcomes and defaults, their event-time span, learner, features."""
        m = self.model
        return {"outcomes": self.outcomes_seen, "defaults": m._n_pos, "first_outcome_ts": self.first_learned,
                "learned_before": self.learned_before, "learner": m.learner, "features": self.spec.version,
                "handed_over": m.handed_over}

    def resume_offset(self, position: int) -> int:
        """Where a trainer restarted from what it has learned must read its input again: the earliest pending
        outcome's offset (``position``, the next to read, when none is pending)."""
        origins = [r.origin for r in self.pending if isinstance(r, Revealed) and r.origin >= 0]
        return min(origins, default=position)

    def challenge_auc(self) -> tuple[float | None, float | None, int]:
        ys = [c[0] for c in self.challenge]
        return (roc_auc(ys, [c[1] for c in self.challenge]), roc_auc(ys, [c[2] for c in self.challenge]), len(ys))

    def __getstate__(self) -> dict[str, Any]:
        """Saved without what is pending: a restarted trainer reads that again (see :meth:`resume_offset`)."""
        state = dict(self.__dict__)
        state["pending"], state["_pending_keys"] = [], set()
        return state


def _canonical(r: Pending) -> tuple[int, int, str]:
    """Event time; model commands before the outcomes of the same time; then the account."""
    if isinstance(r, ModelCommand):
        return r.ts, 0, r.event_id
    return r.ts, 1, r.account_id
