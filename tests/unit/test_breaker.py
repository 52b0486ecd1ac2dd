"""The mass-action breaker: it holds a bad policy push's wave of closures, not a normal surge."""
from __future__ import annotations

import io
import pathlib
from collections import Counter
from functools import lru_cache
from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from riskmon.models.breaker import Breaker
from riskmon.models.codec import dumps, parse_ts
from riskmon.models.policy import default_policy
from riskmon.models.simulate import simulate
from riskmon.streams.metrics import Metrics
from riskmon.streams.replay import replay

from .test_metrics import samples, total
from .test_processor import P, run_stream

DAY, HOUR = 86_400_000, 3_600_000
PUSH_TS = "2025-04-01T00:00:00Z"  # day 90 of the simulated portfolio
# A policy push with a slip: every line one day late is closed.
BAD_PUSH = {"type": "policy_update", "event_id": "push-oops", "ts": PUSH_TS, "policy_version": "oops-1",
            "thresholds": {"dpd.watch": 1, "dpd.limit": 1, "dpd.freeze": 1, "dpd.close": 1}}
ROLLBACK = {"type": "policy_update", "event_id": "push-rollback", "ts": "2025-04-03T00:00:00Z", "policy_version": "rollback-1",
            "thresholds": {"dpd.watch": 1, "dpd.limit": 31, "dpd.freeze": 61, "dpd.close": 91}}


def command(kind: str, at: str = "2025-04-03T00:00:00Z") -> dict[str, Any]:
    return {"type": "breaker_command", "event_id": f"cmd-{kind}", "ts": at, "command": kind, "action": "closure",
            "note": "risk ops reviewed the wave"}


@lru_cache(maxsize=1)
def portfolio() -> tuple[dict[str, Any], ...]:
    events, _ = simulate(2000, 120, seed=7)
    return tuple(events)


def run(tmp: pathlib.Path, extra: list[dict[str, Any]], policy_changes: dict[str, float] | None = None) -> list[dict[str, Any]]:
    log = tmp / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in [*portfolio(), *extra]))
    out = io.BytesIO()
    policy = default_policy().updated(policy_changes, "test") if policy_changes else None
    replay(log, out, policy=policy)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def after(decisions: list[dict[str, Any]], ts: str = PUSH_TS) -> list[dict[str, Any]]:
    return [d for d in decisions if parse_ts(d["event_ts"]) >= parse_ts(ts)]


def still_held(decisions: list[dict[str, Any]], before: str) -> set[str]:
    """Accounts whose latest decision before ``before`` is a held one (a later decision supersedes a hold)."""
    last: dict[str, str] = {}
    for d in decisions:
        if parse_ts(d["event_ts"]) < parse_ts(before):
            last[d["account_id"]] = d["action"]
    return {a for a, action in last.items() if action == "held"}


def test_a_bad_policy_push_trips_the_breaker_and_its_closures_are_held(tmp_path: pathlib.Path) -> None:
    unguarded = after(run(tmp_path, [BAD_PUSH], {"breaker.closure": 0}))
    guarded = after(run(tmp_path, [BAD_PUSH]))
    closures_unguarded = sum(d["action"] == "closure" for d in unguarded)
    closures = sum(d["action"] == "closure" for d in guarded)
    held = [d for d in guarded if d["action"] == "held"]
    assert closures_unguarded > 300, closures_unguarded  # what the push would have done
    assert closures <= P * 9, closures  # each partition lets at most min_count - 1 through before it trips
    assert len(held) + closures >= closures_unguarded * 0.9
    for d in held:
        assert d["new_state"] == "closed" and d["previous_state"] != "closed"
        assert d["reasons"][0]["code"] == "BREAKER_HELD" and "breaker tripped" in d["reasons"][0]["text"]
        assert d["limit_cap"] > 0 or d["previous_state"] == "frozen"  # the line is not cut by a held closure
    # Without the push, the same portfolio never trips it (the acceptance test asserts no held decision too).
    assert not any(d["action"] == "held" for d in run(tmp_path, []))


def test_drop_settles_every_held_closure_once_and_leaves_the_lines_open(tmp_path: pathlib.Path) -> None:
    decisions = run(tmp_path, [BAD_PUSH, ROLLBACK, command("drop"), command("drop")])  # the command delivered twice
    waiting = still_held(decisions, "2025-04-03T00:00:00Z")
    dropped = [d for d in decisions if d["action"] == "hold_dropped"]
    assert waiting and sorted(d["account_id"] for d in dropped) == sorted(waiting)  # once each, despite the repeat
    for d in dropped:
        assert d["previous_state"] == d["new_state"] != "closed"
        assert d["reasons"][0]["code"] == "BREAKER_DROPPED" and "risk ops reviewed the wave" in d["reasons"][0]["text"]
    assert not any(d["action"] == "held" for d in after(decisions, "2025-04-03T00:00:00Z"))


def test_release_applies_the_held_closures_with_the_reason(tmp_path: pathlib.Path) -> None:
    decisions = run(tmp_path, [BAD_PUSH, ROLLBACK, command("release")])
    waiting = still_held(decisions, "2025-04-03T00:00:00Z")
    released = [d for d in decisions if d["reasons"][0]["code"] == "BREAKER_RELEASED"]
    assert waiting and sorted(d["account_id"] for d in released) == sorted(waiting)
    assert all(d["action"] == "closure" and d["new_state"] == "closed" and d["limit_cap"] == 0 for d in released)


def test_a_month_end_surge_like_last_months_does_not_trip_a_wave_from_nowhere_does() -> None:
    policy = default_policy()
    for surge, trips in ((40, False), (60, False), (61, True)):  # last month's busiest day: 20; multiple 3
        b = Breaker()
        b.seen(0)
        for day in (5, 12, 19):
            assert b.admit(policy, "closure", day * DAY, open_accounts=100_000) is None
        for i in range(20):  # last month end, while the breaker is still learning its baseline
            assert b.admit(policy, "closure", 25 * DAY + i * 60_000, open_accounts=100_000) is None
        for day in (33, 40, 47):
            assert b.admit(policy, "closure", day * DAY, open_accounts=100_000) is None
        results = [b.admit(policy, "closure", 54 * DAY + i * 60_000, open_accounts=100_000) for i in range(surge)]
        assert (results[-1] is not None) is trips, surge
        assert all(r is None for r in results[:-1])


def test_cold_breaker_trips_on_share_of_open_accounts_only() -> None:
    policy = default_policy()
    cold = Breaker()
    cold.seen(0)
    assert all(cold.admit(policy, "closure", DAY + i, open_accounts=10_000) is None for i in range(50))  # no baseline yet
    small = Breaker()
    small.seen(0)
    got = [small.admit(policy, "closure", DAY + i, open_accounts=100) for i in range(10)]
    assert got[-1] is not None and "open accounts" in got[-1].text  # 10 of 100 open lines in a day


def test_limit_reductions_are_guarded_only_when_the_policy_says_so() -> None:
    b = Breaker()
    b.seen(0)
    on = default_policy().updated({"breaker.limit_reduction": 1}, "t")
    assert not b.guards(default_policy(), "limit_reduction") and b.guards(on, "limit_reduction")
    assert not b.guards(on, "freeze")


def test_stream_and_replay_hold_and_release_the_same_decisions(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 120, seed=21)
    push = BAD_PUSH | {"thresholds": {**BAD_PUSH["thresholds"], "breaker.min_count": 3}}
    log = [*events, push, ROLLBACK, command("release")]
    path = tmp_path / "ev.jsonl"
    path.write_bytes(b"".join(dumps(e) + b"\n" for e in log))
    expected = io.BytesIO()
    replay(path, expected, partitions=P)
    want = sorted(expected.getvalue().splitlines())
    actions = Counter(orjson.loads(d)["action"] for d in want)
    assert actions["held"] > 0
    ports, _ = run_stream(log, seed=5)
    assert sorted(ports.decisions) == want

    # Before the command the breaker is tripped, and the metrics say so.
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    _, proc = run_stream([*events, push], seed=6, metrics=metrics)
    metrics.watch(proc)
    m = samples(registry)
    assert total(m["riskmon_breaker_tripped"], action="closure") >= 1
    assert total(m["riskmon_decisions_held"], action="closure") >= 1
    # Every account still held had a held decision; some held since were superseded (a later move clears a hold).
    assert 0 < total(m["riskmon_decisions_held"]) <= total(m["riskmon_decisions_total"], action="held", reason="BREAKER_HELD")


def test_a_later_move_that_supersedes_a_held_one_says_so_with_a_hold_dropped(tmp_path: pathlib.Path) -> None:
    decisions = run(tmp_path, [BAD_PUSH])
    by_account: dict[str, list[dict[str, Any]]] = {}
    for d in decisions:
        by_account.setdefault(d["account_id"], []).append(d)
    superseded = 0
    for aid, ds in by_account.items():
        holding = None
        for d in sorted(ds, key=lambda d: d["event_ts"]):  # stable: an event's decisions keep their order
            if d["action"] == "held":
                holding = d
            elif holding is not None and d["action"] not in ("hold_dropped", "held"):
                # The move that replaces the hold comes right after a hold_dropped from the same event.
                drop = ds[ds.index(d) - 1]
                assert drop["action"] == "hold_dropped" and drop["cause_event_id"] == d["cause_event_id"], (aid, d)
                assert drop["reasons"][0]["code"] == "HOLD_SUPERSEDED" and holding["decision_id"] in drop["reasons"][0]["text"]
                assert drop["previous_state"] == drop["new_state"] == d["previous_state"]
                superseded += 1
                holding = None
    assert superseded > 0, "the push leaves held closures that later moves replace"
