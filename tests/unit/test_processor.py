"""The stream processor reproduces replay whatever the interleaving of its input topics."""
from __future__ import annotations

import copy
import io
import pathlib
import random
from typing import Any

import orjson
import pytest

from riskmon.models.codec import dumps, parse_ts
from riskmon.models.events import CATEGORY
from riskmon.models.partitioning import partition_for
from riskmon.models.simulate import simulate
from riskmon.models.portfolio import Portfolio
from riskmon.streams.checkpoint import Round
from riskmon.streams.processor import Options, StreamProcessor
from riskmon.streams.replay import replay
from riskmon.streams.trainer import ModelBook, Training

P = 4


class MemoryPorts:
    """The host's side in memory: a table, two output lists, acks; and, for one model for the portfolio, the
    training topic and a trainer that publishes into the processor's book as the real one does (streams.trainer)."""

    def __init__(self) -> None:
        self.table: dict[bytes, bytes] = {}
        self.decisions: list[bytes] = []
        self.shadow: list[bytes] = []  # the shadow decisions topic
        self.dead: list[tuple[bytes, dict[str, bytes]]] = []
        self.acked: list[Any] = []
        self.training_log: list[bytes] = []
        self.trainer: Training | None = None
        self.book: ModelBook | None = None
        self.control: list[bytes] = []  # the control topic, which the trainer reads for model commands
        self.read = 0
        self.model_log: list[bytes] = []  # the model topic

    def attach(self, proc: StreamProcessor, control: list[bytes]) -> None:
        """Train for ``proc``'s book, as a worker's trainer would (nothing if each partition learns its own).

        A processor started on ports that trained before (a restart) reads the model records published so
        far into its book, as a worker reads the model topic, and the trainer resumes from the last one."""
        if proc.book is None or proc.book is self.book:
            return
        for record in self.model_log:
            proc.book.add(record)
        o = proc.options
        start = Portfolio(None if o.model is None else copy.deepcopy(o.model), o.spec, o.model_base)
        self.book, self.control = proc.book, list(control)
        self.trainer = Training(proc.book, P, start)
        self.read = self.trainer.offset

    def train(self) -> None:
        if self.trainer is None or self.book is None:
            return
        for off in range(self.read, len(self.training_log)):
            self.trainer.take(off, self.training_log[off])
        self.read = len(self.training_log)
        until = self.trainer.publishable()
        if until is not None:
            control, self.control = self.control, []
            for record in self.trainer.learn(until, list(control), self.read):
                self.model_log.append(record)
                self.book.add(record)

    def get(self, key: bytes) -> bytes | None:
        return self.table.get(key)

    def write(self, rounds: list[Round]) -> None:
        for rnd in rounds:
            self._write(rnd)

    def _write(self, rnd: Round) -> None:
        self.max_snapshot = max(getattr(self, "max_snapshot", 0), max((len(v) for _, v in rnd.snapshot), default=0))
        # (a round that only tells the portfolio's trainer a partition is idle is no round of events: not counted)
        idle_report = rnd.training and not (rnd.received or rnd.snapshot or rnd.decisions or rnd.dead or rnd.acks)
        self.rounds = getattr(self, "rounds", 0) + (not idle_report)
        self.sealed = getattr(self, "sealed", 0) + bool(rnd.snapshot)
        self.decisions += [v for _, v in rnd.decisions]
        self.shadow += [v for _, v in rnd.shadow]
        self.dead += [(v, dict(h)) for _, v, h in rnd.dead]
        self.table.update(rnd.snapshot)
        self.before_last = {k: self.table.get(k) for k, _ in rnd.states}
        self.table.update(rnd.states)
        self.acked += rnd.acks
        self.training_log += rnd.training
        self.train()

    def lose_last_states(self) -> None:
        """A crash after the last round's snapshot was durable but before its account writes were."""
        for k, v in self.before_last.items():
            if v is None:
                self.table.pop(k, None)
            else:
                self.table[k] = v


# "Long after": every wait for a quiet topic or for the lateness is over. Finite: a round sealed at
# infinity would make the next one's "time since the last seal" NaN, and never seal it.
LATER = 1e12


def _topics(events: list[dict]) -> dict[tuple[str, int], list[bytes]]:
    """Route a log as the stream sees it: by category and keyed partition; the one control partition to every partition."""
    out: dict[tuple[str, int], list[bytes]] = {}
    for e in events:
        cat = CATEGORY[e["type"]]
        parts = range(P) if cat == "control" else [partition_for(e["account_id"], P)]
        for p in parts:
            out.setdefault((cat, p), []).append(dumps(e))
    return out


def run_stream(events: list[dict], seed: int, extra: dict[tuple[str, int], list[bytes]] | None = None,
               **kwargs: Any) -> tuple[MemoryPorts, StreamProcessor]:
    ports = MemoryPorts()
    metrics = kwargs.pop("metrics", None)
    proc = StreamProcessor(ports, Options(**kwargs), metrics=metrics)
    topics = _topics(events)
    ports.attach(proc, topics.get(("control", 0), []))
    for k, v in (extra or {}).items():
        topics.setdefault(k, []).extend(v)
    pos = {k: 0 for k in topics}
    rng = random.Random(seed)
    live = [k for k in topics if topics[k]]
    while live:
        k = rng.choice(live)  # a random topic-partition delivers a random-sized chunk
        n = rng.randrange(1, 400)
        cat, p = k
        for off in range(pos[k], min(pos[k] + n, len(topics[k]))):
            proc.ingest(cat, cat, p, off, None, topics[k][off], (k, off))
        pos[k] = min(pos[k] + n, len(topics[k]))
        live = [k for k in topics if pos[k] < len(topics[k])]
        ports.write(proc.release(p, lambda c, p=p: pos.get((c, p), 0) >= len(topics.get((c, p), []))))
    drain(proc, ports)
    return ports, proc


def drain(proc: StreamProcessor, ports: MemoryPorts) -> None:
    """Everything delivered: release what every partition holds, over and over while one's progress (its
    watermark to the trainer) lets another go on."""
    for i in range(1000):
        for p in range(P):  # a clock far ahead, every wait for event-time order or idleness over
            ports.write(proc.release(p, lambda c: True, now=1e9 + i / 1000))
        if not proc.held():
            return
    raise AssertionError(f"{proc.held()} events still held: the trainer never published the model they wait for")


def test_processor_matches_replay_whatever_the_interleaving(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(300, 75, seed=21)
    events.insert(len(events) // 2, {"type": "policy_update", "event_id": "pol-1", "ts": events[len(events) // 2]["ts"],
                                      "policy_version": "tight", "thresholds": {"score.watch": 0.2, "score.watch_exit": 0.1}})
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    expected = io.BytesIO()
    replay(log, expected, partitions=P)
    want = sorted(expected.getvalue().splitlines())
    assert any(orjson.loads(d)["policy_version"] == "tight" for d in want)
    for seed in (1, 2):
        ports, proc = run_stream(events, seed)
        assert sorted(ports.decisions) == want
        assert proc.held() == 0 and len(ports.acked) == proc.counts["received"]
    # One model for the portfolio: the partitions wait for the versions a trainer publishes from their outcomes
    # and watermarks (the harness's, streams.trainer's logic), and give replay's decisions with the same model.
    expected = io.BytesIO()
    replay(log, expected, partitions=P, portfolio=True)
    want = sorted(expected.getvalue().splitlines())
    ports, proc = run_stream(events, 3, portfolio=True)
    assert sorted(ports.decisions) == want and ports.model_log
    assert any(orjson.loads(d)["model_version"] not in ("m.v0",) for d in want)
    assert proc.held() == 0 and len(ports.acked) == proc.counts["received"]


@pytest.mark.parametrize("then", ["promote", "drop"])
def test_a_candidate_policy_in_shadow_decides_as_in_replay_and_on_after_a_restart(tmp_path: pathlib.Path, then: str) -> None:
    """Installed mid-stream from the control topic, then promoted or dropped: the candidate's decisions in shadow,
    and the live ones before and after, are replay's, whatever the interleaving and after a crash at any round
    (its view of each line is in the states a snapshot carries)."""
    events, _ = simulate(150, 130, seed=5)
    mid, late = len(events) // 3, len(events) * 9 // 10
    events.insert(late, {"type": "policy_update", "event_id": f"{then}-1", "ts": events[late]["ts"], "shadow": then,
                         "policy_version": "candidate"})
    events.insert(mid, {"type": "policy_update", "event_id": "shadow-1", "ts": events[mid]["ts"], "shadow": "install",
                        "policy_version": "candidate", "thresholds": {"score.watch": 0.2, "score.watch_exit": 0.1, "dpd.close": 91}})
    log = tmp_path / "ev.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    live, shadow = io.BytesIO(), io.BytesIO()
    replay(log, live, partitions=P, shadow_out=shadow)
    want = sorted(shadow.getvalue().splitlines())
    acts = {orjson.loads(d)["action"] for d in want}
    assert {"warning", "closure"} <= acts and all(orjson.loads(d)["policy_version"] == "candidate" for d in want)
    promoted = [d for d in map(orjson.loads, live.getvalue().splitlines()) if d["policy_version"] == "candidate"]
    if then == "promote":
        assert promoted and min(parse_ts(d["event_ts"]) for d in promoted) >= parse_ts(events[late + 1]["ts"])
    else:
        assert not promoted
    assert max(parse_ts(orjson.loads(d)["event_ts"]) for d in want) < parse_ts(events[late + 1]["ts"])
    ports, proc = run_stream(events, 4)
    assert sorted(ports.decisions) == sorted(live.getvalue().splitlines())
    assert sorted(ports.shadow) == want
    assert sum(n for (version, _), n in proc.shadow_decisions.items() if version == "candidate") == len(want)
    topics = _topics(events)
    opts = Options(quiet_s=0)
    clean = MemoryPorts()
    total = _feed(StreamProcessor(clean, opts), clean, topics)
    assert sorted(clean.shadow) == want
    for crash_after in (total // 3, total * 2 // 3):
        ports = MemoryPorts()
        _feed(StreamProcessor(ports, opts), ports, topics, stop_after_rounds=crash_after)
        ports.lose_last_states()
        _feed(StreamProcessor(ports, opts), ports, topics)
        assert sorted(set(ports.shadow)) == want, crash_after


def _feed(proc: StreamProcessor, ports: MemoryPorts, topics: dict[tuple[str, int], list[bytes]],
          stop_after_rounds: int | None = None) -> int:
    """Deliver every record, topic-partitions taking turns; return the rounds written."""
    ports.attach(proc, topics.get(("control", 0), []))
    feed = sorted(((k, off) for k in topics for off in range(len(topics[k]))), key=lambda f: (f[1], f[0]))
    last = {k: len(v) - 1 for k, v in topics.items()}
    delivered: dict[tuple[str, int], int] = {}
    rounds = 0
    for n, ((cat, p), off) in enumerate(feed):
        proc.ingest(cat, cat, p, off, None, topics[(cat, p)][off], ((cat, p), off))
        delivered[(cat, p)] = off
        # A clock of 10 ms per record delivered, so that snapshots due by time fall at known points. Partitions
        # waiting for a model version the trainer may have published since are released too, as a worker does.
        published = len(ports.model_log)
        for q in [p] + [q for q, sh in sorted(proc.shards.items()) if q != p and sh.blocked is not None]:
            if q != p and len(ports.model_log) == published:
                continue
            for rnd in proc.release(q, lambda c, q=q: delivered.get((c, q), -1) >= last.get((c, q), -1), now=n * 0.01):
                ports.write([rnd])
                rounds += 1
                if rounds == stop_after_rounds:
                    return rounds
    drain(proc, ports)
    return rounds


@pytest.mark.parametrize("snapshot_every_s,portfolio", [(0.0, False), (0.5, False), (0.0, True)])
def test_a_restart_from_any_round_skips_what_was_applied_and_redoes_the_rest(snapshot_every_s: float, portfolio: bool) -> None:
    """Crash after any round: a new processor on the saved table, fed everything again from offset 0
    (an old commit), loses nothing and changes nothing; with snapshots every 0.5 s too, where the
    rounds in between only deliver decisions; and with one model for the portfolio, whose trainer restarts
    too, from the model records published (the harness's model topic)."""
    events, _ = simulate(80, 50, seed=8)
    topics = _topics(events)
    clean = MemoryPorts()
    # _feed's clock is 10 ms a record, which the processor's wall-clock wait for quiet topics does not
    # follow: without it, rounds fall where the records let them (what this test needs), not in one heap at the end.
    opts = Options(snapshot_every_s=snapshot_every_s, quiet_s=0, portfolio=portfolio)
    total = _feed(StreamProcessor(clean, opts), clean, topics)
    assert total > 20
    if snapshot_every_s:
        assert clean.sealed < clean.rounds / 3, (clean.sealed, clean.rounds)  # most rounds only deliver decisions
    else:
        assert clean.sealed == clean.rounds
    for crash_after in (total // 10, total // 2, total * 9 // 10, total - 1):
        ports = MemoryPorts()
        _feed(StreamProcessor(ports, opts), ports, topics, stop_after_rounds=crash_after)
        ports.lose_last_states()
        first_life = len(ports.decisions)
        proc2 = StreamProcessor(ports, opts)
        _feed(proc2, ports, topics)
        assert sorted(set(ports.decisions)) == sorted(clean.decisions), crash_after
        assert proc2.counts["redelivered"] > 0
    assert first_life > 0, "the latest crash comes after decisions were sent"


def test_bad_records_are_dead_lettered_with_their_bytes_and_the_rest_flows() -> None:
    events, _ = simulate(50, 40, seed=4)
    bad = {("transactions", 0): [b"{oops", b'{"type":"payment","event_id":"x1","account_id":"A1","ts":"2025-01-02T00:00:00Z",'
                                 b'"amount":1,"currency":"CNY","channel":"app"}'],
           ("repayments", 1): [b'{"type":"payment","event_id":"x2","account_id":"GHOST","ts":"2025-01-02T00:00:00Z",'
                               b'"amount":1,"currency":"CNY","channel":"app"}']}
    clean_ports, _ = run_stream(events, 3)
    ports, proc = run_stream(events, 3, extra=bad)
    assert sorted(ports.decisions) == sorted(clean_ports.decisions)
    reasons = sorted(h["riskmon-reason"].decode() for _, h in ports.dead)
    assert reasons == ["malformed_json", "unknown_account", "wrong_topic"]
    assert {v for v, _ in ports.dead} == {*bad[("transactions", 0)], *bad[("repayments", 1)]}
    assert dict(proc.rejected) == {("transactions", "malformed_json"): 1, ("repayments", "unknown_account"): 1,
                                   ("transactions", "wrong_topic"): 1}
    assert proc.events[("unknown", "rejected")] == 1 and proc.events[("payment", "rejected")] == 2


def test_a_burst_of_new_accounts_is_split_into_records_kafka_accepts() -> None:
    """1,000 accounts opening at once in one batch once made a 1.66 MB snapshot record and crashed the producer."""
    ports = MemoryPorts()
    proc = StreamProcessor(ports, Options(portfolio=False))  # one partition alone: no trainer to wait for
    for i in range(4000):
        raw = dumps({"type": "account_opened", "event_id": f"o{i}", "account_id": f"B{i:05d}",
                     "ts": "2025-01-01T00:00:00Z", "limit": 1000, "currency": "CNY"})
        proc.ingest("lifecycle", "lifecycle", 0, i, None, raw, i)
    rounds = proc.release(0, lambda c: True, now=LATER)
    assert len(rounds) == 16  # 4,000 events in rounds of at most 256
    ports.write(rounds)
    assert proc.counts["applied"] == 4000 and sorted(ports.acked) == list(range(4000))
    assert ports.max_snapshot < 512 * 1024, ports.max_snapshot


def test_a_record_that_breaks_the_codec_is_dead_lettered_and_the_partition_goes_on(monkeypatch) -> None:
    import riskmon.streams.processor as sp

    def broken(raw: bytes, max_bytes: int) -> object:
        if raw == b"poison":
            raise OverflowError("cannot convert float infinity to integer")
        return decode_real(raw, max_bytes)

    decode_real = sp.decode
    monkeypatch.setattr(sp, "decode", broken)
    events, _ = simulate(20, 20, seed=2)
    clean, _ = run_stream(events, 4)
    ports, proc = run_stream(events, 4, extra={("transactions", 0): [b"poison"]})
    assert sorted(ports.decisions) == sorted(clean.decisions)
    assert [h["riskmon-reason"] for _, h in ports.dead] == [b"internal_error"]
    assert proc.rejected[("transactions", "internal_error")] == 1


def test_offsets_without_records_between_them_count_as_done() -> None:
    """Transaction markers take offsets that deliver no record: the partition is fetched again from the first
    one once, the same record comes first again, and the applied set closes over them (else it grows by one
    per transaction for ever); the decisions are replay's."""
    events, _ = simulate(80, 50, seed=8)
    topics = _topics(events)
    ports = MemoryPorts()
    proc = StreamProcessor(ports)
    ports.attach(proc, topics.get(("control", 0), []))
    last = {k: 3 * (len(v) - 1) for k, v in topics.items()}  # record i sits at offset 3i: two markers after each
    feed = sorted(((k, i) for k in topics for i in range(len(topics[k]))), key=lambda f: (f[1], f[0]))
    delivered: dict[tuple[str, int], int] = {}
    for (cat, p), i in feed:
        proc.ingest(cat, cat, p, 3 * i, None, topics[(cat, p)][i], ((cat, p), i))
        sought = proc.take_seeks()
        if sought:  # a consumer that honours the seek: from there, the first record is this one again
            assert sought == [(cat, p, 3 * i - 2)]
            proc.ingest(cat, cat, p, 3 * i, None, topics[(cat, p)][i], ((cat, p), i))
            assert not proc.take_seeks()
        delivered[(cat, p)] = 3 * i
        ports.write(proc.release(p, lambda c, p=p: delivered.get((c, p), -1) >= last.get((c, p), -1)))
    drain(proc, ports)
    clean = MemoryPorts()
    _feed(StreamProcessor(clean), clean, topics)
    assert sorted(ports.decisions) == sorted(clean.decisions) and ports.decisions
    for (cat, p), off in last.items():
        done = proc.shards[p].checkpoint.applied[cat]
        assert done.low == off + 1 and not done.extra, (cat, p, done.low, len(done.extra))
    assert proc.counts["offset_gap"] == 0
    assert proc.counts["refetched"] == sum(len(v) - 1 for k, v in topics.items() if k[0] != "control")


def test_records_a_consumer_skipped_are_fetched_again_and_the_decisions_stay_replays() -> None:
    """A consumer that moves its position past records it never delivered (seen under repeated rebalances:
    a position from an earlier assignment came back): what comes after is dropped unacked and the partition
    is fetched again from the first record missing, whatever arrives meanwhile."""
    events, _ = simulate(80, 50, seed=8)
    topics = _topics(events)
    ports = MemoryPorts()
    proc = StreamProcessor(ports)
    ports.attach(proc, topics.get(("control", 0), []))  # the control feed and the portfolio's trainer
    pos = {k: 0 for k in topics}
    skipped = ("transactions", 1)
    jumped = False
    while any(pos[k] < len(v) for k, v in topics.items()):
        for k, v in topics.items():
            cat, p = k
            start = pos[k]
            if k == skipped and not jumped and start >= 200:
                start, jumped = start + 120, True  # the consumer moves past 120 records it never delivers
            stop = min(start + 50, len(v))
            for off in range(start, stop):
                proc.ingest(cat, cat, p, off, None, v[off], (k, off))
            pos[k] = max(pos[k], stop)
            for topic, sp, offset in proc.take_seeks():
                assert (topic, sp, offset) == (cat, p, 200)
                pos[k] = offset  # fetched again from there
            ports.write(proc.release(p, lambda c, p=p: pos.get((c, p), 0) >= len(topics.get((c, p), []))))
    drain(proc, ports)
    clean = MemoryPorts()
    _feed(StreamProcessor(clean), clean, topics)
    assert jumped and proc.counts["refetched"] == 50 and proc.counts["offset_gap"] == 0
    assert sorted(ports.decisions) == sorted(clean.decisions) and ports.decisions


def test_a_partition_resumed_past_its_snapshot_fetches_again_from_it_and_counts_what_never_comes(
        caplog: pytest.LogCaptureFixture) -> None:
    """Input positions are the snapshot's: a resumed partition whose first record lies past what its snapshot
    applied (offsets committed ahead of it) is fetched again from the snapshot's. Records that do not come
    even then (deleted by retention) are an error, counted."""
    events, _ = simulate(80, 50, seed=8)
    topics = _topics(events)
    ports = MemoryPorts()
    _feed(StreamProcessor(ports), ports, topics, stop_after_rounds=40)
    proc = StreamProcessor(ports)
    (cat, p) = ("transactions", 0)
    proc.shard(p)
    low = proc.shards[p].checkpoint.applied[cat].low
    assert low + 5 < len(topics[(cat, p)])
    proc.ingest(cat, cat, p, low + 5, None, topics[(cat, p)][low + 5], None)
    assert proc.take_seeks() == [(cat, p, low)] and proc.counts["received"] == 1 and not len(proc.shards[p].hold)
    with caplog.at_level("ERROR", logger="riskmon.processor"):
        proc.ingest(cat, cat, p, low + 5, None, topics[(cat, p)][low + 5], None)  # first again: the 5 are gone
        proc.ingest(cat, cat, p, low + 6, None, topics[(cat, p)][low + 6], None)
    assert not proc.take_seeks() and proc.counts["offset_gap"] == 5 and len(proc.shards[p].hold) == 2
    assert f"transactions resumes at offset {low + 5}, fetched again from its snapshot's, but 5 offsets" in caplog.text
