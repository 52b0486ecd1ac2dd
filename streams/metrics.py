"""The worker's Prometheus metrics, on a registry the caller owns.

Three distributions are observed on the hot path, in :class:`Distribution`s:
bucket counts in a plain list, no lock (client_python's Histogram takes two
locks and scans its buckets on every observation: 0.74 us an observation here,
against 0.08 us for a bisection and an increment). Everything else is read from the processor when
Prometheus scrapes: the processor counts in plain Counters anyway, so the
counters cost nothing per event, and the gauges (accounts by state, model
quality, lag) are exact at the moment of the scrape.

Names follow client_python's convention: ``riskmon_<noun>_total`` for
counters, ``_seconds`` for durations. Labels are bounded sets (event type,
action, reason code, partition, topic, score band); an account id is never a
label value. Faust's own sensor metrics share the registry under
``riskmon_faust_`` (they measure in milliseconds; that is Faust's choice).
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from bisect import bisect_left

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString  # a bucket's bound as client_python writes it

from riskmon.models.stability import Stability
from riskmon.models.vocabulary import GUARDABLE, STATUSES


class Stats(Protocol):
    """What the metrics read from the processor at scrape time (streams.processor.StreamProcessor has it)."""

    counts: Counter[str]
    events: Counter[tuple[str, str]]
    rejected: Counter[tuple[str, str]]
    decisions: Counter[tuple[str, str]]
    outcomes: Counter[tuple[str, str]]
    outcome_scores: Counter[str]
    shards: Mapping[int, Any]

    def held(self) -> int: ...

__all__ = ["Distribution", "Metrics", "LATENCY_BUCKETS", "SCORE_BUCKETS"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Event time behind the wall clock: seconds for a live feed, days for a replayed history.
LAG_BUCKETS = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0, 30 * 86400.0, 365 * 86400.0)
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.95, 0.99)

# Every key the processor (and its host) counts in ``counts``, and the counter it is exported as
# (riskmon_events_total by type and result covers the applied and duplicate events too).
COUNTS = {
    "received": ("riskmon_records_received", "Input records taken by the worker"),
    "applied": ("riskmon_events_applied", "Events applied by the core (duplicates and rejections not counted)"),
    "duplicate": ("riskmon_events_duplicate", "Events the account had already applied (a redelivery)"),
    "late": ("riskmon_events_late", "Events that arrived after later events of their partition were applied"),
    "redelivered": ("riskmon_events_redelivered", "Records skipped because an earlier life of the worker applied them"),
    "drift": ("riskmon_drift_detections", "Drift detected in the model's error (ADWIN)"),
    "forced": ("riskmon_events_forced", "Events applied before their partition's slowest topic caught up, to bound memory"),
    "offset_gap": ("riskmon_offset_gap_records", "Input records a resumed partition will never see: its snapshot had not "
                   "applied them and the broker no longer delivers them"),
    "refetched": ("riskmon_records_refetched", "Records dropped unacked because records before them were never delivered "
                  "(the consumer moved past them); their partition is fetched again from the first one missing"),
    "silent_refetch": ("riskmon_silent_input_refetches", "Input partitions fetched again because the broker held "
                       "records past the next one needed and none came for 5 s"),
    "rerouted": ("riskmon_records_rerouted", "Records on a partition that does not own their account (a producer with another "
                 "partitioner), sent on to the one that does through the repartition topic"),
    "not_owned": ("riskmon_records_not_owned", "Records fetched for a partition a rebalance took away: left unacked for its new owner"),
}

# (topic, partition, records not yet applied) for each input partition this worker owns.
LagSource = Callable[[], Iterable[tuple[str, int, int]]]


class Distribution(Collector):
    """A Prometheus histogram without locks, for the hot path: the event loop's thread observes, the scrape reads.

    Under the GIL an increment of a list item, and the copy of the list a scrape takes, are each whole; a scrape
    may see the sum a few observations apart from the counts, never a count that goes back.

    >>> d = Distribution("x_seconds", "x", (0.1, 1.0)); d.observe(0.05); d.observe_many([0.5, 2.0, 1.0])
    >>> [(s.name, s.labels.get("le"), s.value) for s in next(d.collect()).samples]  # doctest: +NORMALIZE_WHITESPACE
    [('x_seconds_bucket', '0.1', 1), ('x_seconds_bucket', '1.0', 3), ('x_seconds_bucket', '+Inf', 4),
     ('x_seconds_count', None, 4), ('x_seconds_sum', None, 3.55)]
    """

    def __init__(self, name: str, documentation: str, buckets: Iterable[float],
                 registry: CollectorRegistry | None = None) -> None:
        self.name, self.documentation = name, documentation
        self.bounds = sorted(float(b) for b in buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0
        if registry is not None:
            registry.register(self)

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1  # (le: a value on a bound counts in that bound's bucket)
        self.total += amount

    def observe_many(self, amounts: Iterable[float]) -> None:
        counts, bounds, total = self.counts, self.bounds, 0.0
        for a in amounts:
            counts[bisect_left(bounds, a)] += 1
            total += a
        self.total += total

    def describe(self) -> Iterator[Metric]:
        return iter(())

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self.counts), self.total
        cumulative, running = [], 0
        for bound, n in zip([*map(floatToGoString, self.bounds), "+Inf"], counts):
            running += n
            cumulative.append((bound, running))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=cumulative, sum_value=total)


class Metrics(Collector):
    """riskmon's metrics on ``registry``: create it, hand it to the processor, then :meth:`watch` the processor."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.processing = Distribution(
            "riskmon_processing_seconds",
            "From a record's arrival in the worker to its round being durable (its decisions delivered)",
            LATENCY_BUCKETS, registry,
        )
        self.event_time_lag = Distribution(
            "riskmon_event_time_lag_seconds", "Wall clock minus event time, at arrival", LAG_BUCKETS, registry,
        )
        self.score = Distribution(
            "riskmon_score", "Probability of default given to an account at each event applied", SCORE_BUCKETS, registry,
        )
        self._proc: Stats | None = None
        self._lag: LagSource | None = None
        self._owned: Callable[[], int] | None = None
        self._stalls: Callable[[], tuple[dict[int, float], float]] | None = None
        registry.register(self)

    def watch(self, proc: Stats, lag: LagSource | None = None, owned: Callable[[], int] | None = None,
              stalls: Callable[[], tuple[dict[int, float], float]] | None = None) -> None:
        """Export ``proc``'s counts; ``lag``, ``owned`` and ``stalls`` (partition -> seconds stalled, and the limit)
        come from the host, which knows the consumer."""
        self._proc, self._lag, self._owned, self._stalls = proc, lag, owned, stalls

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families vary with what the processor has seen; describe nothing, collect at scrape

    def collect(self) -> Iterator[Metric]:
        proc = self._proc
        if proc is None:
            return
        yield _counter("riskmon_events", "Input records by event type (unknown: not decodable) and result",
                       ["type", "result"], proc.events)
        yield _counter("riskmon_deadletters", "Records sent to the dead-letter topic, by input topic and reason",
                       ["topic", "reason"], proc.rejected)
        yield _counter("riskmon_decisions", "Decisions emitted, by action and deciding (first) reason code",
                       ["action", "reason"], proc.decisions)
        yield _counter("riskmon_shadow_decisions", "What a candidate policy in shadow would have decided (written to "
                       "PREFIX.shadow-decisions, acted on by none), by its version and action",
                       ["version", "action"], proc.shadow_decisions)
        yield _counter("riskmon_outcomes", "Outcomes learned, by the score band given at the statement and outcome",
                       ["band", "outcome"], proc.outcomes)
        yield _counter("riskmon_outcome_scores", "Sum of the scores graded by outcomes, by score band (for calibration)",
                       ["band"], {(b,): v for b, v in proc.outcome_scores.items()})
        for key, (name, text) in COUNTS.items():
            c = CounterMetricFamily(name, text)
            c.add_metric([], proc.counts[key])
            yield c

        accounts = GaugeMetricFamily("riskmon_accounts", "Accounts by early-warning state, in the partitions this worker owns",
                                     labels=["status"])
        totals = {s: 0 for s in STATUSES}
        for sh in proc.shards.values():
            for status, n in sh.monitor.status.items():
                totals[status] = totals.get(status, 0) + n
        for status, n in totals.items():
            accounts.add_metric([status], n)
        yield accounts

        auc = GaugeMetricFamily("riskmon_model_auc", "Rolling ROC AUC of the score against outcomes (last 2,000)", labels=["partition"])
        version = GaugeMetricFamily("riskmon_model_version", "Model checkpoints taken (the model version number)", labels=["partition"])
        learned = GaugeMetricFamily("riskmon_model_outcomes", "Outcomes the partition's model has learned from", labels=["partition"])
        handed = GaugeMetricFamily("riskmon_model_handed_over", "1 when the learned model gives the score, 0 while the expert "
                                   "scorecard does (it hands over on evidence)", labels=["partition"])
        policy = GaugeMetricFamily("riskmon_policy_info", "The policy version in force at the partition's event time", labels=["partition", "version"])
        age = GaugeMetricFamily("riskmon_checkpoint_age_seconds", "Seconds since the partition's state was last made durable", labels=["partition"])
        tripped = GaugeMetricFamily("riskmon_breaker_tripped", "1 while the partition's mass-action breaker holds this action", labels=["partition", "action"])
        psi = GaugeMetricFamily("riskmon_psi", "Population stability index of the score or a feature: the statements scored "
                                "lately against those the model learned from (each ~1,000, decayed)", labels=["partition", "feature"])
        challenge = GaugeMetricFamily("riskmon_challenge_auc", "While a challenger learns in shadow: ROC AUC of the model in "
                                      "force (champion) and of the challenger on the same latest outcomes",
                                      labels=["partition", "model"])
        compared = GaugeMetricFamily("riskmon_challenge_outcomes", "Outcomes champion and challenger are compared on",
                                     labels=["partition"])
        shadow = GaugeMetricFamily("riskmon_shadow_accounts", "While a candidate policy is in shadow: the lines it has judged, "
                                   "by their live state and the state the candidate would have them in",
                                   labels=["partition", "live", "shadow"])
        differ = GaugeMetricFamily("riskmon_shadow_differs", "While a candidate policy is in shadow: the lines it would have "
                                   "in another state than the live policy has them", labels=["partition"])
        held = GaugeMetricFamily("riskmon_decisions_held", "Accounts whose move the breaker holds for review", labels=["partition", "action"])
        now = time.time()
        # With one model for the portfolio, what learns is its trainer (as its last published record left it):
        # every partition shows the same model figures, and compares its own scored population with its reference.
        trainer = proc.book.latest() if proc.book is not None else None
        for p, sh in sorted(proc.shards.items()):
            label = str(p)
            learner: Any = trainer if proc.book is not None else sh.monitor
            if learner is not None:  # (None: no model published yet)
                a = learner.quality.auc()
                if a is not None:
                    auc.add_metric([label], a)
                version.add_metric([label], learner.version if trainer is not None else sh.monitor.checkpoints)
                learned.add_metric([label], learner.outcomes_seen)
                handed.add_metric([label], 1 if learner.model.handed_over else 0)
                populations = [sh.monitor.stability] + ([trainer.stability] if trainer is not None else [])
                for name, value in Stability.merged(populations, sh.monitor.spec.names).items():
                    psi.add_metric([label, name], value)
                if learner.challenger is not None:
                    champion, challenger, n = learner.challenge_auc()
                    compared.add_metric([label], n)
                    for model, value in (("champion", champion), ("challenger", challenger)):
                        if value is not None:
                            challenge.add_metric([label, model], value)
            policy.add_metric([label, sh.monitor.policy_at(sh.applied_ts).version], 1)
            if sh.saved_at:
                age.add_metric([label], now - sh.saved_at)
            if sh.monitor.shadows.at(sh.applied_ts) is not None:
                for (live, would), n in sorted(sh.monitor.shadow_states.items()):
                    if n:
                        shadow.add_metric([label, live, would], n)
                differ.add_metric([label], sum(n for (live, would), n in sh.monitor.shadow_states.items() if live != would))
            trips = sh.monitor.breaker_tripped()
            for action in GUARDABLE:
                tripped.add_metric([label, action], 1 if action in trips else 0)
                held.add_metric([label, action], len(sh.monitor.held.get(action, ())))
        yield from (auc, version, learned, handed, psi, challenge, compared, policy, age, tripped, held, shadow, differ)

        waiting = GaugeMetricFamily("riskmon_events_held", "Events waiting for event-time order")
        waiting.add_metric([], proc.held())
        yield waiting
        owned = GaugeMetricFamily("riskmon_partitions_owned", "Input partitions assigned to this worker")
        owned.add_metric([], self._owned() if self._owned is not None else len(proc.shards))
        yield owned
        if self._stalls is not None:
            seconds, limit = self._stalls()
            stalled_s = GaugeMetricFamily("riskmon_stalled_seconds", "Seconds the partition has had input waiting and "
                                          "nothing applied (0 while it moves or has nothing waiting)", labels=["partition"])
            stalled = GaugeMetricFamily("riskmon_partition_stalled", "1 while the partition is stalled: input waiting and "
                                        "nothing applied for RISKMON_STALL_S or longer", labels=["partition"])
            for p, s in seconds.items():
                stalled_s.add_metric([str(p)], s)
                stalled.add_metric([str(p)], 1 if s >= limit else 0)
            yield stalled_s
            yield stalled
        if self._lag is not None:
            lag = GaugeMetricFamily("riskmon_consumer_lag", "Input records not yet applied (high watermark minus applied)",
                                    labels=["topic", "partition"])
            for topic, partition, n in self._lag():
                lag.add_metric([topic, str(partition)], n)
            yield lag


def _counter(name: str, text: str, labels: list[str], counts: dict[tuple[str, ...], float]) -> CounterMetricFamily:
    c = CounterMetricFamily(name, text, labels=labels)
    for key, value in sorted(counts.items()):
        c.add_metric(list(key), value)
    return c
