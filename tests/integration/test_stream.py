"""The worker on a real broker: parity with replay, dead letters, policy updates, crashes."""
from __future__ import annotations

import asyncio
import io
import pathlib
import time
from typing import Any

import orjson
import pytest

from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker
from riskmon.streams.produce import produce
from riskmon.streams.replay import replay

from .conftest import Cluster, account, diff, replay_decisions, write_log

pytestmark = pytest.mark.integration

BAD_LINES = [
    b"{not json at all",
    b'{"type":"chargeback","event_id":"bad-1","account_id":"A0000001","ts":"2025-01-03T00:00:00Z"}',
    b'{"type":"purchase","event_id":"bad-2","account_id":"A0000001","ts":"2025-01-03T00:00:00Z","amount":-5,'
    b'"currency":"CNY","channel":"app"}',
    b'{"type":"payment","event_id":"bad-3","account_id":"NO-SUCH","ts":"2025-01-03T00:00:00Z","amount":5,'
    b'"currency":"CNY","channel":"app"}',
]


def _log(tmp: pathlib.Path, accounts: int, days: int, seed: int, policy_at: float | None = None) -> tuple[pathlib.Path, list[dict[str, Any]]]:
    events, _ = simulate(accounts, days, seed)
    if policy_at is not None:
        i = int(len(events) * policy_at)
        events.insert(i, {"type": "policy_update", "event_id": "policy-tight-1", "ts": events[i]["ts"],
                          "policy_version": "tight-1", "thresholds": {"score.watch": 0.15, "score.watch_exit": 0.08,
                                                                       "dpd.limit": 15}})
    return write_log(tmp / "events.jsonl", events), events


@pytest.fixture(scope="module")
def parity_run(broker: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("parity")
    cluster = Cluster(broker, tmp)
    try:
        log, events = _log(tmp, 450, 90, seed=13, policy_at=0.5)
        dirty = tmp / "dirty.jsonl"
        lines = log.read_bytes().splitlines()
        dirty.write_bytes(b"\n".join(lines[:100] + BAD_LINES + lines[100:]) + b"\n")
        expected = replay_decisions(log)
        # Produce everything first: parity is about the same log giving the same decisions.
        summary = asyncio.run(produce(dirty, cluster.settings, cluster.bootstrap, include_bad=True))
        # The worker must also dead-letter what the broker delivers that the codec never saw:
        # a payment for an account that never opened passes the codec and fails in the core.
        t0 = time.monotonic()
        cluster.start_worker()
        got, repeats = cluster.decisions(len(expected))
        elapsed = time.monotonic() - t0
        dead = cluster.read(cluster.settings.topic_deadletter, lambda rs: len(rs) >= len(BAD_LINES), 60)
        return {"events": events, "expected": expected, "got": got, "repeats": repeats, "dead": dead,
                "summary": summary, "elapsed": elapsed}
    finally:
        cluster.stop()


def test_parity_with_replay_on_a_20k_event_log(parity_run: dict[str, Any]) -> None:
    assert len(parity_run["events"]) >= 20_000
    assert len(parity_run["expected"]) > 200
    assert sorted(parity_run["got"]) == sorted(parity_run["expected"]), diff(parity_run["got"], parity_run["expected"])
    assert parity_run["repeats"] == 0


def test_policy_update_over_the_control_topic_changes_decisions_from_its_event_time(parity_run: dict[str, Any]) -> None:
    decisions = [orjson.loads(d) for d in parity_run["got"]]
    policy_ts = next(e["ts"] for e in parity_run["events"] if e["type"] == "policy_update")
    before = {d["policy_version"] for d in decisions if d["event_ts"] < policy_ts}
    after = {d["policy_version"] for d in decisions if d["event_ts"] >= policy_ts}
    assert before == {"default-2026.1"} and after == {"tight-1"}


def test_bad_records_land_in_the_dead_letter_topic_while_good_ones_flow(parity_run: dict[str, Any]) -> None:
    dead = parity_run["dead"]
    assert sorted(r.value for r in dead) == sorted(BAD_LINES)
    reasons = sorted(dict(r.headers)["riskmon-reason"].decode() for r in dead)
    assert reasons == ["bad_amount", "malformed_json", "unknown_account", "unknown_type"]
    where = {dict(r.headers)["riskmon-reason"].decode(): dict(r.headers) for r in dead}
    # Lines the codec refuses are sent raw to the transactions topic; the payment for an
    # account that never opened is valid JSON, travels on repayments and fails in the core.
    assert where["unknown_account"]["riskmon-topic"].decode().endswith(".repayments")
    assert all(where[k]["riskmon-topic"].decode().endswith(".transactions") for k in ("bad_amount", "malformed_json", "unknown_type"))
    assert all(int(h["riskmon-offset"]) >= 0 and int(h["riskmon-partition"]) in range(4) for h in where.values())
    assert sorted(parity_run["got"]) == sorted(parity_run["expected"])  # the good ones all flowed


def test_kill_9_mid_stream_then_restart_loses_and_duplicates_nothing(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    log, _ = _log(tmp_path, 300, 90, seed=17)
    expected = replay_decisions(log)
    partial, got, repeats = cluster.crash_mid_stream(log, len(expected))
    assert len(partial) < len(expected), "the crash must come mid-stream"
    account({"events": len(log.read_bytes().splitlines()), "expected": expected, "got": got, "repeats": repeats},
            f"worker kill -9 under load after {len(partial)} decisions, restarted ({cluster.settings.store})")


def test_two_workers_share_partitions_and_keep_parity_when_one_dies(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    """With a model per partition (RISKMON_MODEL_SCOPE=partition), the scope that is not the default: each
    partition's model moves with the partition to the surviving worker."""
    cluster.settings = cluster.settings.model_copy(update={"model_scope": "partition"})
    log, _ = _log(tmp_path, 300, 90, seed=19)
    expected = replay_decisions(log, portfolio=False)
    asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
    a = cluster.start_worker(slot=0)
    cluster.start_worker(slot=1)
    partial, _ = cluster.decisions(len(expected) // 3, timeout_s=120)
    cluster.kill9(a)
    got, repeats = cluster.decisions(len(expected))
    account({"events": len(log.read_bytes().splitlines()), "expected": expected, "got": got, "repeats": repeats},
            f"one of two workers kill -9 after {len(partial)} decisions ({cluster.settings.store}, a model per partition)")


def test_a_worker_started_from_a_model_file_gives_replays_decisions_across_a_kill_9(
        broker: Any, tmp_path: pathlib.Path) -> None:
    """RISKMON_MODEL_FILE: every partition starts from the trained model, and one restored from its
    snapshot after a crash goes on from the same model, as replay --model does."""
    from riskmon.models.model_file import load_model
    from riskmon.streams.tools.train import train

    history, _ = _log(tmp_path, 200, 120, seed=31)
    info, _ = train(history, tmp_path / "history.model")
    model, _ = load_model(tmp_path / "history.model")
    events, _ = simulate(250, 60, 32, prefix="W")
    live = write_log(tmp_path / "live.jsonl", events)
    out = io.BytesIO()
    replay(live, out, model=model, model_base=info.version)
    expected = out.getvalue().splitlines()
    assert expected and all(orjson.loads(d)["model_version"].startswith(info.version) for d in expected)
    cluster = Cluster(broker, tmp_path)
    cluster.settings = cluster.settings.model_copy(update={"model_file": tmp_path / "history.model"})
    try:
        partial, got, repeats = cluster.crash_mid_stream(live, len(expected))
    finally:
        cluster.stop()
    account({"events": len(events), "expected": expected, "got": got, "repeats": repeats},
            f"warm-started worker kill -9 after {len(partial)} decisions, restarted")


def test_a_reviewers_reinstatement_survives_a_kill_9_and_equals_replay(
        broker: Any, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from riskmon.models.codec import format_ts, parse_ts
    from riskmon.streams.cli import main

    # 120 days: the shipped policy closes a line 121 days past due, so a shorter log closes none.
    events, _ = simulate(300, 120, 29)
    plain = write_log(tmp_path / "plain.jsonl", events)
    closures = [orjson.loads(d) for d in replay_decisions(plain) if orjson.loads(d)["action"] == "closure"]
    assert closures, "the log closes some line to reinstate"
    first = closures[0]
    review = {"type": "review", "event_id": "review-1", "account_id": first["account_id"],
              "ts": format_ts(parse_ts(first["event_ts"]) + 3_600_000), "outcome": "reinstate",
              "reviewer": "j.chen", "note": "closed in error"}
    log = write_log(tmp_path / "ev.jsonl", sorted([*events, review], key=lambda e: parse_ts(e["ts"])))
    expected = replay_decisions(log)
    mine = [orjson.loads(d) for d in expected if orjson.loads(d)["cause_event_id"] == "review-1"]
    assert [(d["action"], d["reasons"][0]["code"]) for d in mine] == [("reopen", "MANUAL_REVIEW")]
    cluster = Cluster(broker, tmp_path)
    for k, v in cluster.settings.to_env().items():
        monkeypatch.setenv(k, v)
    try:
        partial, got, repeats = cluster.crash_mid_stream(log, len(expected), share=2)
        account({"events": len(events) + 1, "expected": expected, "got": got, "repeats": repeats},
                f"reviewed log, worker kill -9 after {len(partial)} decisions, restarted")
        # The command line sends one review and prints the decision it causes.
        assert main(["review", first["account_id"], "--confirm", "--note", "checked again", "--reviewer", "a.li",
                     "--event-id", "review-2", "--at", "2025-06-01T00:00:00Z", "--wait", "60"]) == 0
        out = capsys.readouterr()
        assert "reviewed" in out.out and "MANUAL_REVIEW" in out.out and "1 decision within" in out.err
    finally:
        cluster.stop()


def test_the_worker_that_trains_the_portfolio_model_killed_9_its_trainer_resumes_and_parity_holds(
        tmp_path: pathlib.Path) -> None:
    """RISKMON_MODEL_SCOPE=portfolio: one trainer learns the portfolio's model (streams.trainer); two workers, and
    the one that holds the trainer killed with kill -9 once a learned version is out: the trainer resumes from the
    model topic's last record, in the other worker or the restarted one, and every decision is replay's (the same
    model versions at the same event times). On a broker of its own: the session's, grown by every test before,
    once stalled this test (README, "One model for the portfolio")."""
    broker = EmbeddedBroker(log=open(tmp_path / "tansu.log", "wb")).start()
    cluster = Cluster(broker, tmp_path, model_scope="portfolio")
    try:
        log, _ = _log(tmp_path, 300, 90, seed=23)
        expected = replay_decisions(log, portfolio=True)
        assert len({orjson.loads(d)["model_version"] for d in expected}) > 20  # decisions span many versions
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        workers = [cluster.start_worker(slot=0), cluster.start_worker(slot=1)]

        def learned(records: list[Any]) -> bool:  # a model version past the one the trainer starts from
            return any(b'"new":true' in r.value[:300] and b'"v":"m.v0"' not in r.value[:300] for r in records)

        cluster.read(cluster.settings.topic_models, learned, 120)
        partial, _ = cluster.decisions(len(expected), timeout_s=1)  # what arrived by then
        logs = [tmp_path / f"worker-{port}.log" for port in cluster.web_ports]
        holder = next(i for i, f in enumerate(logs) if "trainer: holds the training partition" in f.read_text())
        cluster.kill9(workers[holder])
        cluster.start_worker(slot=holder)
        got, repeats = cluster.decisions(len(expected))
        account({"events": len(log.read_bytes().splitlines()), "expected": expected, "got": got, "repeats": repeats},
                f"the trainer's worker kill -9 after {len(partial)} decisions, restarted ({cluster.settings.store})")
        resumed = [line for f in tmp_path.glob("worker-*.log") for line in f.read_text().splitlines()
                   if "trainer: holds the training partition" in line]
        # The first trainer started from nothing; one took over from what the model topic's records had learned.
        assert len(resumed) >= 2 and any("(0 outcomes)" not in line for line in resumed), resumed
    finally:
        cluster.stop()
        broker.stop()
