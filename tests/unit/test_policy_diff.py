"""`riskmon policy diff`: what an update would do at once, and when the breaker would refuse its push."""
from __future__ import annotations

import pathlib

import pytest

from riskmon.models.codec import decode, dumps
from riskmon.models.engine import Engine
from riskmon.models.events import event_order
from riskmon.models.policy import default_policy
from riskmon.models.policy_diff import policy_diff
from riskmon.models.simulate import simulate
from riskmon.models.state import new_state
from riskmon.streams.cli import main

TIGHT = {"dpd.limit": 11, "dpd.freeze": 21, "dpd.close": 31}


def _line(aid: str, dpd: int, status: str = "normal") -> dict:
    s = new_state(aid, "CNY", 0, 100_000)
    s["dpd"], s["status"] = dpd, status
    return s


def test_only_the_moves_the_update_itself_causes_are_counted() -> None:
    current = default_policy()
    new = current.updated(TIGHT, "tight")
    states = [_line("a", 0), _line("b", 15, "watch"), _line("c", 45, "limit_reduced"), _line("d", 125, "frozen"),
              _line("e", 5, "normal")]
    d = policy_diff(states, current, new)
    # a: nothing fires; b: 15 days -> limit_reduced under the new levels; c: 45 -> closed; d: 125 would be
    # closed under either policy (its own next event does that), so not the update's doing; e: 5 days puts
    # it on watch under either.
    assert dict(d.moves) == {("watch", "limit_reduced"): 1, ("limit_reduced", "closed"): 1}
    assert (d.accounts, d.open_accounts, d.escalations, d.relief, d.closures) == (5, 5, 2, 0, 1)


def test_closing_more_than_the_breakers_share_is_refused_and_switching_the_breaker_off_does_not_help() -> None:
    current = default_policy()  # breaker.max_share 0.05, min_count 10
    states = [_line(f"x{i}", 45, "limit_reduced") for i in range(30)] + [_line(f"y{i}", 0) for i in range(170)]
    d = policy_diff(states, current, current.updated(TIGHT, "tight"))
    assert d.closures == 30 and d.allowed_closures == 10 and d.refused  # 5% of 200 open
    assert "  closures at once: 30, the breaker allows 10: REFUSED unless forced" in d.lines()
    off = policy_diff(states, current, current.updated({**TIGHT, "breaker.closure": 0}, "tight-unguarded"))
    assert off.refused, "the guard in force judges the push"
    few = policy_diff(states[:9] + states[30:], current, current.updated(TIGHT, "tight"))
    assert few.closures == 9 and not few.refused  # under min_count, the breaker lets it through
    unguarded = current.updated({"breaker.closure": 0}, "none")
    assert policy_diff(states, unguarded, unguarded.updated(TIGHT, "t")).allowed_closures is None


def test_the_cli_previews_on_a_replayed_log(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    events, _ = simulate(300, 120, seed=4)
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    policy = tmp_path / "tight.toml"
    policy.write_text('version = "tight-1"\n[dpd]\nlimit = 11\nfreeze = 21\nclose = 31\n')
    assert main(["policy", "diff", str(policy), "--log", str(log)]) == 0
    out = capsys.readouterr().out
    engine = Engine(4)
    for ev in sorted((decode(dumps(e)) for e in events), key=lambda e: event_order(e.ts, e.type, 0)):
        engine.process(ev)
    expected = policy_diff(engine.states.values(), default_policy(), default_policy().updated(TIGHT, "tight-1"))
    assert expected.escalations > 0 and out.splitlines()[0] == expected.lines()[0]
    assert f"closures at once: {expected.closures}" in out
    # --at names when it would take effect: the policy in force then is the one compared (here a log's
    # own update, from its event time on).
    update = {"type": "policy_update", "event_id": "u1", "ts": events[-1]["ts"], "policy_version": "later-1",
              "thresholds": {"dpd.watch": 2}}
    log.write_bytes(log.read_bytes() + dumps(update) + b"\n")
    assert main(["policy", "diff", str(policy), "--log", str(log), "--at", "2024-01-01T00:00:00Z"]) == 0
    assert "against default-2026.1" in capsys.readouterr().out
    assert main(["policy", "diff", str(policy), "--log", str(log)]) == 0
    assert "against later-1" in capsys.readouterr().out
