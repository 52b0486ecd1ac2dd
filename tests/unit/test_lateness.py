"""Disorder within the allowed lateness applies in event-time order; later than that, the documented rule."""
from __future__ import annotations

import io
import pathlib
import random

import orjson

from riskmon.models.codec import dumps, parse_ts
from riskmon.models.events import CATEGORY
from riskmon.models.simulate import simulate
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
    _, proc = run_stream(shuffled, seed=3, lateness_s=60)
    assert proc.counts["late"] > 0
    assert proc.counts["applied"] == len(events)  # every event applied, none lost


def test_later_than_the_lateness_can_be_dead_lettered_instead(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 60, seed=8)
    shuffled = disordered(events, 2 * HOUR_S, seed=1)
    ports, proc = run_stream(shuffled, seed=3, lateness_s=60, late="deadletter")
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
    proc = StreamProcessor(ports, Options(max_held=100))
    for i, e in enumerate(e for e in events if CATEGORY[e["type"]] in ("lifecycle", "transactions")):
        proc.ingest(CATEGORY[e["type"]], "t", 0, i, None, dumps(e), i)
        # The repayments topic is never caught up and never delivers: nothing may be applied by the watermark.
        ports.write(proc.release(0, lambda c: c != "repayments"))
        assert proc.held() <= 100
    assert proc.counts["forced"] > 0 and proc.counts["forced"] == proc.counts["applied"]
