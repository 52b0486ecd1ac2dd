"""The worker's metrics agree with what the processor did, and never name an account."""
from __future__ import annotations

import random
from collections import Counter

import orjson
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from riskmon.models.events import CATEGORY
from riskmon.models.portfolio import Revealed
from riskmon.models.simulate import simulate
from riskmon.models.stability import Stability
from riskmon.streams.metrics import LAG_BUCKETS, LATENCY_BUCKETS, SCORE_BUCKETS, Distribution, Metrics
from riskmon.streams.checkpoint import SHARD_KEY_PREFIX
from riskmon.streams.processor import Options, StreamProcessor

from .test_processor import LATER, P, run_stream


def samples(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(rows: list[tuple[dict[str, str], float]], **match: str) -> float:
    return sum(v for labels, v in rows if all(labels.get(k) == w for k, w in match.items()))


def test_metrics_count_what_the_processor_did() -> None:
    events, _ = simulate(300, 120, seed=5)
    bad = {("transactions", 0): [b"{oops"], ("repayments", 1): [orjson.dumps(
        {"type": "payment", "event_id": "x2", "account_id": "GHOST", "ts": "2025-01-02T00:00:00Z",
         "amount": 1, "currency": "CNY", "channel": "app"})]}
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ports, proc = run_stream(events, 3, extra=bad, metrics=metrics, portfolio=True)  # one model for the portfolio
    for rnd_p in range(P):  # the host marks rounds durable; run_stream's host does not, so mark one per partition
        proc.shards[rnd_p].checkpoint.saved_at = 1.0
    metrics.watch(proc, lag=lambda: [("riskmon.transactions", 0, 7)], owned=lambda: P)
    m = samples(registry)

    accounts = {e["account_id"] for e in events if e["type"] == "account_opened"}
    assert total(m["riskmon_events_total"], result="accepted") == proc.counts["applied"] == len(events)
    assert total(m["riskmon_events_total"], result="rejected") == 2
    assert total(m["riskmon_events_total"], type="unknown", result="rejected") == 1
    assert total(m["riskmon_deadletters_total"], topic="transactions", reason="malformed_json") == 1
    assert total(m["riskmon_deadletters_total"], topic="repayments", reason="unknown_account") == 1

    decisions = [orjson.loads(d) for d in ports.decisions]
    by_action = Counter(d["action"] for d in decisions)
    assert by_action, "the simulation gives decisions"
    for action, n in by_action.items():
        assert total(m["riskmon_decisions_total"], action=action) == n
    by_reason = Counter((d["action"], d["reasons"][0]["code"]) for d in decisions)
    for (action, reason), n in by_reason.items():
        assert total(m["riskmon_decisions_total"], action=action, reason=reason) == n

    # Accounts by state: exactly the states in the table, and every account counted once.
    states = Counter(orjson.loads(v)["status"] for k, v in ports.table.items()
                     if not k.startswith(b"__") and k.decode() in accounts)
    for status in ("normal", "watch", "limit_reduced", "frozen", "closed"):
        assert total(m["riskmon_accounts"], status=status) == states.get(status, 0), status
    assert total(m["riskmon_accounts"]) == len(accounts)

    # One score per account event applied (policy updates are not scored).
    assert total(m["riskmon_score_count"]) == len(events)
    assert total(m["riskmon_event_time_lag_seconds_count"]) == len(events) + 1  # the ghost payment decoded fine
    # Outcomes revealed: what the portfolio's trainer learned, and what waits for its epoch to close.
    outcomes = total(m["riskmon_outcomes_total"])
    assert ports.trainer is not None
    trained = ports.trainer.portfolio
    waiting = sum(len(r.outcomes) for r in trained.pending if isinstance(r, Revealed))
    assert outcomes == trained.outcomes_seen + waiting and trained.outcomes_seen > 0
    assert total(m["riskmon_outcomes_total"], outcome="default") > 0
    assert {r[0]["partition"] for r in m["riskmon_model_version"]} == {str(p) for p in range(P)}
    assert all(0.0 <= v <= 1.0 for _, v in m["riskmon_model_auc"])
    # Every partition shows the portfolio's model as its trainer last published it.
    published = ports.book.latest() if ports.book is not None else None
    assert published is not None
    assert {r[1] for r in m["riskmon_model_handed_over"]} == {float(published.model.handed_over)}
    assert {r[1] for r in m["riskmon_model_version"]} == {float(published.version)} and published.version > 0
    assert m["riskmon_consumer_lag"] == [({"topic": "riskmon.transactions", "partition": "0"}, 7.0)]
    # Population stability per partition: the statements the shard scored against those the portfolio's model
    # learned from (as last published); the score and every feature.
    psi = {(r[0]["partition"], r[0]["feature"]): r[1] for r in m["riskmon_psi"]}
    for p, sh in proc.shards.items():
        expected = Stability.merged([sh.monitor.stability, published.stability], sh.monitor.spec.names)
        assert len(expected) == len(sh.monitor.spec.names) + 1, "300 accounts over 120 days fill both windows"
        assert {f: psi[(str(p), f)] for f in expected} == expected
    assert all(v >= 0.0 for v in psi.values())
    assert m["riskmon_partitions_owned"] == [({}, P)]

    # No account id is ever a label value.
    labels = {v for rows in m.values() for lab, _ in rows for v in lab.values()}
    assert not labels & (accounts | {"GHOST"})

    # A restarted worker counts the same accounts by state from the snapshots alone.
    proc2 = StreamProcessor(ports, Options(portfolio=True), metrics=Metrics(registry2 := CollectorRegistry()))
    proc2.metrics.watch(proc2)  # type: ignore[union-attr]
    for p in range(P):
        assert ports.get(SHARD_KEY_PREFIX + str(p).encode()) is not None
        proc2.shard(p)
    assert samples(registry2)["riskmon_accounts"] == m["riskmon_accounts"]


def test_processing_latency_is_observed_when_a_round_is_saved() -> None:
    events, _ = simulate(20, 10, seed=1)
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    ports, proc = run_stream(events, 1, metrics=metrics)
    assert total(samples(registry).get("riskmon_processing_seconds_count", [])) == 0
    proc2 = StreamProcessor(ports.__class__(), Options(portfolio=False), metrics=metrics)  # one partition alone
    offsets: Counter[str] = Counter()  # each topic's own offsets, in order
    for i, e in enumerate(events[:50]):
        cat = CATEGORY[e["type"]]
        proc2.ingest(cat, "t", 0, offsets[cat], None, orjson.dumps(e), i)
        offsets[cat] += 1
    rounds = proc2.release(0, lambda c: True, now=LATER)
    for rnd in rounds:
        proc2.saved(rnd)
    applied = sum(len(r.received) for r in rounds)
    assert applied == 50 and total(samples(registry)["riskmon_processing_seconds_count"]) == applied


def test_every_count_the_worker_keeps_is_exported() -> None:
    """A key counted in ``counts[...]`` anywhere in streams/ must have its counter (not_owned once had none)."""
    import ast
    import pathlib

    from riskmon.streams.metrics import COUNTS

    root = pathlib.Path(__file__).resolve().parents[2] / "streams"
    keys = set()
    for f in root.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "counts"
                    and isinstance(node.slice, ast.Constant)):
                keys.add(node.slice.value)
    assert {"not_owned", "received", "late"} <= keys
    assert keys - set(COUNTS) == set()


def test_the_lock_free_distribution_exposes_what_client_pythons_histogram_does() -> None:
    """The same observations, one at a time and by the round, give client_python's buckets, count and sum (its
    ``_created`` gauge apart), values on a bucket's bound included."""
    rng = random.Random(5)
    for buckets, scale in ((LATENCY_BUCKETS, 3.0), (LAG_BUCKETS, 1e6), (SCORE_BUCKETS, 1.0)):
        values = [rng.random() ** 3 * scale for _ in range(2000)] + list(buckets) + [0.0, scale * 100]
        ours, theirs = CollectorRegistry(), CollectorRegistry()
        d = Distribution("h_seconds", "h", buckets, ours)
        h = Histogram("h_seconds", "h", buckets=buckets, registry=theirs)
        for v in values[:1000]:
            d.observe(v)
        d.observe_many(values[1000:])
        for v in values:
            h.observe(v)
        got, want = samples(ours), samples(theirs)
        want.pop("h_seconds_created")
        assert got.keys() == want.keys() and got["h_seconds_bucket"] == want["h_seconds_bucket"]
        assert got["h_seconds_count"] == want["h_seconds_count"] == [({}, len(values))]
        assert abs(got["h_seconds_sum"][0][1] - want["h_seconds_sum"][0][1]) <= 1e-9 * want["h_seconds_sum"][0][1]
