"""One shard of the monitor: the accounts of one partition, their policy timeline and breaker, and the model
they are scored with.

The streaming worker keeps one Monitor per input partition and replay keeps one
per simulated partition. With one model for the portfolio (the default) a shard
scores with the version the portfolio's trainer has in force (:meth:`Monitor.adopt`,
:mod:`riskmon.models.portfolio`) and learns nothing itself; otherwise it learns
its own model from its outcomes. Either way the stream and replay learn from the
same outcomes in the same order, and a replay is the stream's exact twin.
"""
from __future__ import annotations

import bisect
import pickle
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any, Protocol

from .breaker import Breaker
from .errors import RejectReason, Rejected
from .events import AccountEvent, BreakerCommand, Event, ModelCommand, PolicyUpdate
from .featurespec import FeatureSpec, default_spec
from .policy import Policy, default_policy
from .portfolio import CHALLENGE_WINDOW, learn_outcome, model_command
from .shadow import ShadowTimeline, live_before, shadow_step
from .quality import ScoreQuality, roc_auc
from .risk_model import RiskModel
from .stability import Stability
from .state import AccountState
from .step import Context, StepResult, resolve_hold, step
from .vocabulary import HOLD_ACTION, STATES

__all__ = ["Monitor", "States"]

_BEFORE_ANY_TIME = -(2**62)  # event times reach back to 1900, before the epoch

# States in which a line is closed: not counted among the open accounts the breaker's share rule reads.
_CLOSED = frozenset(s.name for s in STATES if s.cap == "zero")


class States(Protocol):
    """Where :meth:`Monitor.process` reads account states (the caller writes the results back)."""

    def get(self, account_id: str, /) -> AccountState | None: ...


class Monitor:
    """Applies events to account states, learns from their outcomes, versions its model.

    >>> from riskmon.models.codec import decode
    >>> m = Monitor("p0")
    >>> r = m.apply(None, decode(b'{"type":"account_opened","event_id":"o1","account_id":"a1",'
    ...     b'"ts":"2025-01-01T00:00:00Z","limit":5000,"currency":"CNY"}'))
    >>> r.state["status"], r.decisions
    ('normal', [])
    """

    def __init__(
        self,
        name: str = "p0",
        policy: Policy | None = None,
        model: RiskModel | None = None,
        checkpoint_every: int = 500,
        bad_dpd: int = 30,
        spec: FeatureSpec | None = None,
        model_base: str = "",
    ) -> None:
        self.name = name
        # The model file the shard started from (riskmon.models.model_file), if any: its version leads
        # every version this shard makes, so a decision names the history its model began with.
        self.model_base = model_base
        self.spec = spec or default_spec()
        self.model = model if model is not None else RiskModel()
        self.quality = ScoreQuality()
        self.stability = Stability()  # who is scored now against whom the model learned from (PSI)
        # Champion and challenger: a model learning beside the one in force, never deciding, and the two
        # compared on the same outcomes ((default, champion's score, challenger's), each scored before learning it).
        self.challenger: RiskModel | None = None
        self.challenger_since: int | None = None  # event time of the challenge
        self.challenge: deque[tuple[bool, float, float]] = deque(maxlen=CHALLENGE_WINDOW)
        self.checkpoint_every = checkpoint_every
        self.bad_dpd = bad_dpd
        self.checkpoints = 0
        self.labels_since_checkpoint = 0
        self.outcomes_seen = 0
        # (effective event time, policy), sorted; the first is in force from the start.
        self._policies: list[tuple[int, Policy]] = [(_BEFORE_ANY_TIME, policy or default_policy())]
        self._policy_events: set[str] = set()  # control events applied (policy updates and breaker commands)
        self.shadows = ShadowTimeline()  # candidate policies judged beside the live one (riskmon.models.shadow)
        # Of the lines the candidate in shadow has judged: how many are in each (live state, shadow state).
        self.shadow_states: Counter[tuple[str, str]] = Counter()
        self.status: Counter[str] = Counter()  # the shard's accounts by early-warning state
        self.open_accounts = 0  # of them, those not closed (the breaker's share rule reads it)
        self._ctx: tuple[tuple[Any, ...], Context] | None = None  # the last Context, and what it was built from
        self.breaker = Breaker()
        self.held: dict[str, set[str]] = {}  # breaker action -> accounts with a move held for review
        # Set by adopt(): the shard scores with the portfolio's model, which a trainer learns
        # (riskmon.models.portfolio), and learns nothing itself; its steps' outcomes go to the trainer.
        self.portfolio_version: str | None = None

    @property
    def model_version(self) -> str:
        if self.portfolio_version is not None:
            return self.portfolio_version
        return f"{self.model_base}.{self.name}.v{self.checkpoints}" if self.model_base else f"{self.name}.v{self.checkpoints}"

    def process(self, event: Event, states: States, owned: bool = False) -> list[StepResult]:
        """Apply any event: the one entry point of the core, for the stream and replay alike.

        A policy update changes the policy timeline and gives no result; a
        breaker command settles every held move of its action (one result per
        account, in account order); an account event gives one result. The
        caller writes each result's state back before the next event. Raises
        :class:`Rejected` for an event the core refuses. ``owned``: the caller
        keeps only the results' states, so an account's may change in place
        (see :func:`riskmon.models.step.step`).
        """
        if isinstance(event, PolicyUpdate):
            self.control(event)
            return []
        if isinstance(event, ModelCommand):
            self.model_command(event)
            return []
        if isinstance(event, BreakerCommand):
            results = []
            for aid in self.command(event):
                state = states.get(aid)
                if state is not None:
                    results.append(self.resolve(state, event))
            return results
        result = self.apply(states.get(event.account_id), event, owned=owned)
        if self.labels_since_checkpoint >= self.checkpoint_every:
            self.new_version()
        return [result]

    def adopt(self, model: RiskModel, version: str) -> None:
        """Score with the portfolio's model from here on (its version on every decision), learning nothing here."""
        self.model = model
        self.portfolio_version = version

    def new_version(self) -> None:
        """Start a new model version: decisions from here on carry its number."""
        self.checkpoints += 1
        self.labels_since_checkpoint = 0

    def policy_at(self, ts: int) -> Policy:
        if len(self._policies) == 1:
            return self._policies[0][1]
        i = bisect.bisect_right(self._policies, ts, key=lambda p: p[0]) - 1
        return self._policies[max(i, 0)][1]

    def control(self, event: PolicyUpdate) -> Policy | None:
        """Put a policy update in force from its event time; None if already applied, or for a candidate put in
        shadow or dropped (see :mod:`riskmon.models.shadow`; a promoted one is put in force)."""
        if event.event_id in self._policy_events:
            return None
        policy: Policy | None
        if event.shadow:  # (a promotion gives the candidate to put in force; an install or a drop, None)
            policy = self.shadows.command(event, self.policy_at(event.ts))
            self.shadow_states.clear()  # the lines a new candidate judges are counted afresh
        else:
            policy = self.policy_at(event.ts).updated(event.thresholds, event.policy_version)
        self._policy_events.add(event.event_id)
        if policy is None:
            return None
        keys = [p[0] for p in self._policies]
        self._policies.insert(bisect.bisect_right(keys, event.ts), (event.ts, policy))
        return policy

    def model_command(self, event: ModelCommand) -> bool:
        """Start, promote or drop a challenger from the command's event time; False if already applied, or if there
        is no challenger to promote or drop (said by the caller, not an error: every shard gets every command)."""
        if event.event_id in self._policy_events:
            return False
        self._policy_events.add(event.event_id)
        if self.portfolio_version is not None:
            return False  # the portfolio's trainer holds the models
        done = model_command(self, event)
        if done == "promote":
            self.new_version()  # decisions from here on carry a new version: the promoted model's
        return done is not None

    def challenge_auc(self) -> tuple[float | None, float | None, int]:
        """(champion's AUC, challenger's AUC, outcomes) on the same latest outcomes since the challenge began."""
        ys = [c[0] for c in self.challenge]
        return (roc_auc(ys, [c[1] for c in self.challenge]), roc_auc(ys, [c[2] for c in self.challenge]), len(ys))

    def command(self, event: BreakerCommand) -> list[str]:
        """Re-arm the breaker for ``event.action``; the accounts whose held moves :meth:`resolve` must settle.

        Sorted, so that replay and the stream settle them in one order; empty if already applied.
        """
        if event.event_id in self._policy_events:
            return []
        self._policy_events.add(event.event_id)
        self.breaker.reset(event.action, event.ts, self.policy_at(event.ts), release=event.command == "release")
        return sorted(self.held.get(event.action, ()))

    def resolve(self, state: AccountState, event: BreakerCommand) -> StepResult:
        """Release or drop the move held on one account (see :meth:`command`)."""
        policy = self.policy_at(event.ts)
        ctx = Context(policy, self.model, self.model_version, self.model.n_learned >= policy.score.min_labels, self.bad_dpd,
                      spec=self.spec)
        result = resolve_hold(state, event, ctx)
        self._count(state, result.state)
        return result

    def breaker_tripped(self) -> dict[str, tuple[int, str]]:
        return dict(self.breaker.tripped)

    def _count(self, old: Mapping[str, Any] | None, new: AccountState) -> None:
        """Keep the shard's accounts by state and its held moves in step with a result.

        A current account whose line has not opened is no account of the portfolio yet."""
        if not new.get("line", 1):
            return
        if old is not None and not old.get("line", 1):
            old = None  # its line opens now
        if old is None or old["status"] != new["status"]:
            if old is not None:
                self.status[old["status"]] -= 1
                self.open_accounts -= old["status"] not in _CLOSED
            self.status[new["status"]] += 1
            self.open_accounts += new["status"] not in _CLOSED
        was = old.get("hold") if old is not None else None
        now = new.get("hold")
        if was != now:
            if was is not None:
                self.held.get(HOLD_ACTION[was[0]], set()).discard(new["id"])
            if now is not None:
                self.held.setdefault(HOLD_ACTION[now[0]], set()).add(new["id"])

    def apply(self, state: AccountState | None, event: AccountEvent, learn: bool = True,
              owned: bool = False) -> StepResult:
        """Step one account event, then learn from any outcomes it revealed.

        ``learn=False`` re-applies an event whose outcomes this model already
        learned (a worker redoing a round after a crash).
        """
        if isinstance(event, (PolicyUpdate, BreakerCommand, ModelCommand)):  # pragma: no cover - guarded by callers' typing
            raise Rejected(RejectReason.UNKNOWN_TYPE, "control events go to Monitor.control and Monitor.command")
        policy = self.policy_at(event.ts)
        ready = self.model.n_learned >= policy.score.min_labels
        self.breaker.seen(event.ts)
        # One Context for as long as what it holds stands (building one per event cost a tenth of the step).
        key = (policy, self.model_version, ready, self.open_accounts, self.model, self.breaker, self.spec, self.bad_dpd)
        cached = self._ctx
        if cached is not None and cached[0] == key:
            ctx = cached[1]
        else:
            ctx = Context(policy, self.model, self.model_version, ready, self.bad_dpd, self.breaker, self.open_accounts,
                          self.spec)
            self._ctx = (key, ctx)
        # What the shard's counts read of the state before the step (which may change it in place if owned).
        before = state if state is None or not owned else {"status": state["status"], "line": state.get("line", 1),
                                                            "hold": state.get("hold")}
        shadow = self.shadows.at(event.ts) if self.shadows.entries else None
        live = live_before(state) if shadow is not None else None
        result = step(state, event, ctx, owned)
        if not result.duplicate:
            self._count(before, result.state)
            if shadow is not None and result.scored:
                decided, was, now = shadow_step(result.state, event, shadow[0], shadow[1], live, ctx)
                if was is not None:
                    self.shadow_states[was] -= 1
                self.shadow_states[now] += 1
                if decided:
                    result.shadow = decided
            if result.statement is not None:  # a statement's score and features, as kept for its outcome
                self.stability.scored(result.state["score"], result.statement)
        for o in result.outcomes if learn and self.portfolio_version is None else ():
            if learn_outcome(self, self.spec.names, o):
                result.drift = True
            self.labels_since_checkpoint += 1
            self.outcomes_seen += 1
        return result

    def dumps(self, with_quality: bool = True) -> bytes:
        """The shard's state as it is now (no new version); :meth:`restore` reads it.

        The score-quality tracker (rolling AUC window: ~25 KB), the population
        stability histograms and the champion/challenger comparison change no
        decision, so a stream can save them less often with :meth:`dumps_quality`.
        """
        snap = self._snapshot()
        if not with_quality:
            del snap["quality"], snap["stability"], snap["challenge"]
        return pickle.dumps(snap, protocol=pickle.HIGHEST_PROTOCOL)

    def dumps_quality(self) -> bytes:
        return pickle.dumps({"quality": self.quality, "stability": self.stability, "challenge": self.challenge},
                            protocol=pickle.HIGHEST_PROTOCOL)

    def _snapshot(self) -> dict[str, Any]:
        # A shard scoring with the portfolio's model keeps no copy of it: it adopts the version in force again
        # from the trainer's records when it next applies an event (a batch learner's is megabytes).
        return {
            "name": self.name, "model": self.model if self.portfolio_version is None else None, "quality": self.quality, "stability": self.stability,
            "checkpoints": self.checkpoints, "labels_since_checkpoint": self.labels_since_checkpoint,
            "outcomes_seen": self.outcomes_seen, "policies": self._policies,
            "policy_events": self._policy_events, "checkpoint_every": self.checkpoint_every,
            "bad_dpd": self.bad_dpd, "status": dict(self.status), "breaker": self.breaker.state(),
            "held": self.held, "spec": self.spec, "model_base": self.model_base,
            "challenger": self.challenger, "challenger_since": self.challenger_since, "challenge": self.challenge,
            "portfolio_version": self.portfolio_version, "shadows": self.shadows.entries,
            "shadow_states": dict(self.shadow_states),
        }

    @classmethod
    def restore(cls, data: bytes, quality: bytes | None = None, spec: FeatureSpec | None = None) -> Monitor:
        """A monitor from :meth:`dumps` bytes: it scores exactly as the one saved.

        ``spec``: the feature specification configured now (the saved one if None); account states
        saved under another layout start their aggregates afresh when next applied."""
        snap = pickle.loads(data)
        m = cls(snap["name"], model=snap["model"],  # (None with the portfolio's model: adopted again before use) checkpoint_every=snap["checkpoint_every"], bad_dpd=snap["bad_dpd"],
                spec=spec or snap.get("spec"), model_base=snap.get("model_base", ""))
        if "quality" in snap:
            m.quality = snap["quality"]
            m.stability = snap.get("stability", m.stability)
        elif quality is not None:
            saved = pickle.loads(quality)
            if isinstance(saved, dict):
                m.quality, m.stability = saved["quality"], saved["stability"]
                m.challenge = saved.get("challenge", m.challenge)
            else:  # saved before the stability histograms
                m.quality = saved
        m.checkpoints = snap["checkpoints"]
        m.labels_since_checkpoint = snap["labels_since_checkpoint"]
        m.outcomes_seen = snap["outcomes_seen"]
        m._policies = snap["policies"]
        m._policy_events = snap["policy_events"]
        m.status = Counter(snap.get("status", {}))
        m.open_accounts = sum(n for status, n in m.status.items() if status not in _CLOSED)
        m.breaker = Breaker.from_state(snap.get("breaker"))
        m.held = snap.get("held", {})
        m.challenger = snap.get("challenger")
        m.challenger_since = snap.get("challenger_since")
        m.challenge = snap.get("challenge", m.challenge)
        m.portfolio_version = snap.get("portfolio_version")
        m.shadows = ShadowTimeline(snap.get("shadows", []))
        m.shadow_states = Counter(snap.get("shadow_states", {}))
        return m


