"""Disorder within the allowed lateness applies in event-time order; later than that, the documented rule."""
from __future__ import annotations

from collections import Counter

import io
import pathlib
import random

import orjson

from riskmon.models.codec import decode, dumps, format_ts, parse_ts
from riskmon.models.events import CATEGORY, event_order
from riskmon.models.simulate import simulate
from riskmon.streams.hold import QUIET_S, EventTimeHold, Held
from riskmon.streams.processor import Options, StreamProcessor
from riskmon.streams.replay import replay

from .test_processor import P, run_stream

HOUR_S = 3600


def disordered(events: list[dict], max_s: float, seed: int) -> list[dict]:
    """The transactions topic delivered out of event-time order by up to ``max_s``; other topics in order."""
    rng = random.Random(seed)

    def key(e: dict) -> float:
        ts = parse_ts(e["ts"]) / 1000
        return ts + rng.uniform(0, max_s) if CATEGORY[e["type"]] == "transactions" else ts

    return sorted(events, key=key)


def expected(events: list[dict], tmp: pathlib.Path) -> list[bytes]:
    log = tmp / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    out = io.BytesIO()
    replay(log, out, partitions=P)
    return sorted(out.getvalue().splitlines())


def test_disorder_within_the_lateness_gives_replays_decisions(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 60, seed=8)
    shuffled = disordered(events, 2 * HOUR_S, seed=1)
    assert shuffled != events
    want = expected(events, tmp_path)
    ports, proc = run_stream(shuffled, seed=3, lateness_s=2 * HOUR_S)
    assert sorted(ports.decisions) == want
    assert proc.counts["late"] == 0


def test_later_than_the_lateness_is_applied_as_late_and_counted_by_default(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 60, seed=8)
    shuffled = disordered(events, 2 * HOUR_S, seed=1)
    # (Each partition learns its own model here: the portfolio's lets no partition run a day ahead of the
    # others, which absorbs disorder this test needs to see arrive late.)
    # quiet_s=0: a topic with nothing more to deliver stops holding the others back at once, so the
    # transactions topic's stragglers come after later events were applied whatever the machine's speed.
    _, proc = run_stream(shuffled, seed=3, lateness_s=60, quiet_s=0, portfolio=False)
    assert proc.counts["late"] > 0
    assert proc.counts["applied"] == len(events)  # every event applied, none lost


def test_later_than_the_lateness_can_be_dead_lettered_instead(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 60, seed=8)
    shuffled = disordered(events, 2 * HOUR_S, seed=1)
    ports, proc = run_stream(shuffled, seed=3, lateness_s=60, late="deadletter", quiet_s=0, portfolio=False)
    late = proc.counts["late"]
    assert late > 0
    assert sum(n for (_, reason), n in proc.rejected.items() if reason == "late_event") == late
    assert [h["riskmon-reason"] for _, h in ports.dead] == [b"late_event"] * late
    assert proc.counts["applied"] + late == len(events)
    details = {h["riskmon-detail"].decode() for _, h in ports.dead}
    assert all("already applied in this partition (allowed lateness 60 s)" in d for d in details)
    for raw, _ in ports.dead:  # the original bytes, as sent
        assert CATEGORY[orjson.loads(raw)["type"]] == "transactions"


def test_a_topic_that_falls_far_behind_cannot_make_its_partition_hold_unbounded_memory() -> None:
    from riskmon.streams.processor import StreamProcessor

    from .test_processor import MemoryPorts

    events, _ = simulate(50, 60, seed=2)
    ports = MemoryPorts()
    proc = StreamProcessor(ports, Options(max_held=100, portfolio=False))  # one partition alone: no trainer
    offsets: Counter[str] = Counter()  # each topic's own offsets, in order
    for i, e in enumerate(e for e in events if CATEGORY[e["type"]] in ("lifecycle", "transactions")):
        cat = CATEGORY[e["type"]]
        proc.ingest(cat, "t", 0, offsets[cat], None, dumps(e), i)
        offsets[cat] += 1
        # The repayments topic is never caught up and never delivers: nothing may be applied by the watermark.
        ports.write(proc.release(0, lambda c: c != "repayments"))
        assert proc.held() <= 100
    assert proc.counts["forced"] > 0 and proc.counts["forced"] == proc.counts["applied"]


def _held(ts: int, category: str, received: float) -> Held:
    ev = decode(dumps({"type": "purchase", "event_id": f"{category}{ts}", "account_id": "A1", "ts": format_ts(ts),
                       "amount": 10.0, "currency": "CNY", "merchant_category": "grocery", "channel": "online"}))
    return Held(event_order(ev.ts, ev.type, 0), ev, b"", category, category, 0, None, received)


def test_a_caught_up_topic_that_delivered_lately_still_holds_later_events_back() -> None:
    """The race a live feed showed: repayments had delivered everything its last fetch saw, so a later transaction
    went first, and then came a repayment of an earlier time (its producer sent it first; it was appended
    second). A caught-up topic bounds the others by its latest event time until it has been quiet for QUIET_S."""
    t0 = 1_700_000_000_000
    hold = EventTimeHold()
    caught_up = {"repayments": True, "transactions": True}

    def check(c: str) -> bool:
        return caught_up.get(c, True)

    hold.delivered("repayments", t0, at=10.0)
    hold.delivered("transactions", t0 + 60_000, at=10.1)
    hold.push(_held(t0 + 60_000, "transactions", received=10.1))
    assert hold.release(check, now=10.2) == ([], 0)  # repayments delivered 0.2 s ago: it may still precede
    hold.delivered("repayments", t0 + 30_000, at=10.3)
    hold.push(_held(t0 + 30_000, "repayments", received=10.3))
    ready, forced = hold.release(check, now=10.4)
    assert [h.category for h in ready] == ["repayments"] and forced == 0  # below every topic's latest time
    assert hold.release(check, now=10.3 + QUIET_S / 2) == ([], 0)
    ready, _ = hold.release(check, now=10.3 + QUIET_S)  # quiet long enough: the transaction goes
    assert [h.event.ts for h in ready] == [t0 + 60_000]
    # A topic that is not caught up bounds the others however long it has been quiet (as before).
    hold.push(_held(t0 + 90_000, "transactions", received=20.0))
    hold.delivered("transactions", t0 + 90_000, at=20.0)
    caught_up["repayments"] = False
    assert hold.release(check, now=99.0) == ([], 0)
