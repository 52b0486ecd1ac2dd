"""A candidate policy in shadow: it decides as it would live, acts on nobody, and is promoted or dropped at an
event time, the same in every run (riskmon.models.shadow)."""
from __future__ import annotations

import functools
from collections import Counter
from typing import Any

import pytest

from riskmon.models.codec import decode, dumps, format_ts, parse_ts
from riskmon.models.engine import Engine
from riskmon.models.errors import Rejected
from riskmon.models.events import Event, event_order
from riskmon.models.monitor import Monitor
from riskmon.models.policy import Policy, default_policy, load_policy
from riskmon.models.simulate import simulate
from riskmon.models.units import DAY_MS

from .helpers import at, ev

# Closures need 91 days past due under the candidate, 121 under the shipped policy: 150 days give both. The
# breaker is off in both, as it is off for every candidate in shadow (its decisions are never held).
LIVE = default_policy().updated({"breaker.closure": 0}, "live")
CANDIDATE = LIVE.updated(load_policy("docs/policies/previous_default.toml").thresholds, "candidate")


@functools.lru_cache(maxsize=1)
def _log() -> tuple[Event, ...]:
    events, _ = simulate(400, 150, 3)
    return tuple(sorted((decode(dumps(e)) for e in events), key=lambda e: event_order(e.ts, e.type, 0)))


def _control(ts: int, shadow: str, version: str = "candidate", **fields: Any) -> Event:
    body = {"type": "policy_update", "event_id": f"{shadow}-{version}-{ts}", "ts": format_ts(ts),
            "policy_version": version, "shadow": shadow, **fields}
    return decode(dumps(body))


def _install(ts: int) -> Event:
    return _control(ts, "install", thresholds=CANDIDATE.thresholds)


def _run(policy: Policy, *control: Event) -> tuple[Engine, list[dict[str, Any]], list[dict[str, Any]]]:
    engine = Engine(4, policy)
    live: list[dict[str, Any]] = []
    shadow: list[dict[str, Any]] = []
    for e in sorted([*control, *_log()], key=lambda e: event_order(e.ts, e.type, 0)):
        for r in engine.process(e):
            live += [d.to_dict() for d in r.decisions]
            shadow += [d.to_dict() for d in r.shadow or ()]
    return engine, live, shadow


def _ts(d: dict[str, Any]) -> int:
    return parse_ts(d["event_ts"])


def _but_id(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "decision_id"} for d in decisions]


def test_a_candidate_in_shadow_from_the_start_decides_what_it_would_live_and_changes_nothing_live() -> None:
    start = _log()[0].ts
    shadowed, live, shadow = _run(LIVE, _install(start))
    alone, live_alone, _ = _run(LIVE)
    as_live, candidate_live, _ = _run(CANDIDATE)
    # Nothing live changes: decisions, every field of every account, the shards' counts.
    assert live == live_alone
    assert {a: {k: v for k, v in s.items() if k != "sh"} for a, s in shadowed.states.items()} == alone.states
    assert [m.status for m in shadowed.monitors] == [m.status for m in alone.monitors]
    # The candidate's decisions are those it makes in force, under ids of their own.
    assert _but_id(shadow) == _but_id(candidate_live)
    assert not {d["decision_id"] for d in shadow} & {d["decision_id"] for d in candidate_live}
    acts = Counter(d["action"] for d in shadow)
    assert acts["closure"] > Counter(d["action"] for d in live)["closure"] > 0  # the candidate closes sooner
    # The shards count every line by its live and shadow states.
    pairs = sum((m.shadow_states for m in shadowed.monitors), Counter())
    assert sum(pairs.values()) == len(shadowed.states)
    ends = Counter((s["status"], s["sh"][1]) for s in shadowed.states.values())
    assert +pairs == ends and ends[("frozen", "closed")] > 0


def test_a_promotion_puts_the_candidate_in_force_as_a_policy_update_would_and_ends_the_shadow() -> None:
    start = _log()[0].ts
    t = start + 100 * DAY_MS
    _, live, shadow = _run(LIVE, _install(start), _control(t, "promote"))
    update = decode(dumps({"type": "policy_update", "event_id": "u1", "ts": format_ts(t), "policy_version": "candidate",
                           "thresholds": CANDIDATE.thresholds}))
    _, updated, _ = _run(LIVE, update)
    assert live == updated
    assert shadow and max(_ts(d) for d in shadow) < t


def test_a_dropped_candidate_stops_deciding_and_a_new_one_starts_from_the_live_lines() -> None:
    start = _log()[0].ts
    t = start + 100 * DAY_MS
    _, _, whole = _run(LIVE, _install(start))
    engine, live, shadow = _run(LIVE, _install(start), _control(t, "drop"))
    assert live == _run(LIVE)[1]
    assert shadow == [d for d in whole if _ts(d) < t]
    assert not any(m.shadow_states for m in engine.monitors)
    # Installed again later: each line's shadow state starts where the live line stands then.
    again = _control(t + DAY_MS, "install", thresholds=CANDIDATE.thresholds)
    engine, _, shadow = _run(LIVE, _install(start), _control(t, "drop"), again)
    later = [d for d in shadow if _ts(d) > t]
    assert later and all(d["cause_event_id"] for d in later)
    first = {}
    for d in later:
        first.setdefault(d["account_id"], d)
    live_at = {d["account_id"]: d["new_state"] for d in live if _ts(d) <= t + DAY_MS}
    for aid, d in first.items():
        assert d["previous_state"] == live_at.get(aid, "normal")


def test_what_a_shadow_command_may_say() -> None:
    m = Monitor("p0", LIVE)
    with pytest.raises(Rejected, match="no candidate 'candidate' in shadow"):
        m.control(_control(0, "promote"))  # type: ignore[arg-type]
    m.control(_install(0))  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="in shadow then: candidate"):
        m.control(_control(10, "drop", version="another"))  # type: ignore[arg-type]
    with pytest.raises(Rejected, match="changes no threshold"):
        _control(10, "promote", thresholds={})
    with pytest.raises(Rejected, match="field 'shadow' must be"):
        _control(10, "later", thresholds={})
    with pytest.raises(Rejected, match="unknown policy keys"):
        m.control(_control(5, "install", version="bad", thresholds={"dpd.nope": 1}))  # type: ignore[arg-type]
    # A snapshot keeps the candidate and the counts (a restarted worker judges on with them).
    s = m.apply(None, ev("account_opened", at(1), limit=10_000, currency="CNY")).state
    m.apply(s, ev("dpd_report", at(2), days_past_due=5))
    restored = Monitor.restore(m.dumps())
    assert restored.shadows.entries == m.shadows.entries and restored.shadow_states == m.shadow_states == Counter(
        {("watch", "watch"): 1})
