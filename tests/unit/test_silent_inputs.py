"""A worker fetches again an input partition whose records the broker holds and nothing delivers."""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from types import SimpleNamespace
from typing import Any

import pytest

from riskmon.streams import app as app_module
from riskmon.streams.app import SILENT_S, Worker


def fake_worker(ends: dict[str, int], nexts: dict[str, int], committed: dict[str, int]) -> Any:
    topics = {"control": "x.control", "lifecycle": "x.lifecycle", "transactions": "x.transactions"}
    by_topic = {t: c for c, t in topics.items()}
    consumer = SimpleNamespace(highwater=lambda tp: ends.get(by_topic[tp.topic]))
    proc = SimpleNamespace(next_offset=lambda p, c: nexts.get(c, 0), counts=Counter())
    w = SimpleNamespace(owned={1}, topics=topics, app=SimpleNamespace(consumer=consumer, committed=committed, by_topic=by_topic),
                        proc=proc, _waiting={})
    return w


def test_a_silent_input_is_fetched_again_from_the_next_offset_once_per_hole(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    seeks: list[tuple[str, int, int]] = []

    async def seek_back(app: Any, tp: Any, offset: int) -> None:
        seeks.append((tp.topic, tp.partition, offset))

    monkeypatch.setattr(app_module.faust_internals, "seek_back", seek_back)
    monkeypatch.setattr(app_module.faust_internals, "committed_offset", lambda app, tp: app.committed.get(app.by_topic[tp.topic], 0))
    resumed: list[Any] = []
    monkeypatch.setattr(app_module.faust_internals, "resume_fetching", lambda app, tp: resumed.append(tp) or "buffer full")
    # lifecycle: 239..246 on the broker, the next needed is 239, nothing came; transactions: caught up
    w = fake_worker(ends={"lifecycle": 247, "transactions": 7294}, nexts={"lifecycle": 239, "transactions": 7294},
                    committed={"lifecycle": 239})
    run = lambda now: asyncio.run(Worker.restart_silent_inputs(w, now))  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="riskmon.streams.app"):
        run(100.0)  # the clock starts
        run(100.0 + SILENT_S / 2)
        assert seeks == []
        run(100.0 + SILENT_S + 0.1)
        assert seeks == [("x.lifecycle", 1, 239)] and w.proc.counts["silent_refetch"] == 1
        run(100.0 + 2 * SILENT_S + 0.2)  # still nothing: again, said once
        assert seeks == [("x.lifecycle", 1, 239)] * 2
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["partition 1: lifecycle offsets 239..246 are on the broker and none came for 5 s: fetching again "
                     "from 239 (it was not fetched: buffer full)"]
    assert [tp.topic for tp in resumed] == ["x.lifecycle"] * 2


def test_an_input_that_delivers_or_is_caught_up_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    seeks: list[Any] = []

    async def seek_back(app: Any, tp: Any, offset: int) -> None:
        seeks.append(tp)

    monkeypatch.setattr(app_module.faust_internals, "seek_back", seek_back)
    monkeypatch.setattr(app_module.faust_internals, "committed_offset", lambda app, tp: 0)
    monkeypatch.setattr(app_module.faust_internals, "resume_fetching", lambda app, tp: seeks.append(tp) or "")
    w = fake_worker(ends={"lifecycle": 247, "transactions": 500}, nexts={"lifecycle": 100, "transactions": 500}, committed={})
    nexts = {"lifecycle": 100}
    w.proc.next_offset = lambda p, c: nexts.get(c, 500)
    for t in range(0, 30):
        nexts["lifecycle"] += 1  # a record every second: far behind, but moving
        asyncio.run(Worker.restart_silent_inputs(w, float(t) + 0.5))
    assert seeks == []
