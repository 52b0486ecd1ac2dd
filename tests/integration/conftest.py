"""A real broker for the session (never a mock of Kafka) and real worker processes."""
from __future__ import annotations

import asyncio
import io
import itertools
import os
import pathlib
import signal
import subprocess
import time
from typing import Any, Iterator

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from riskmon.models.codec import dumps
from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT
from riskmon.streams.broker import EmbeddedBroker, free_port
from riskmon.streams.produce import produce
from riskmon.streams.replay import replay
from riskmon.streams.settings import Settings
from riskmon.streams.topics import create_topics
from riskmon.streams.worker import start_worker_process

ROOT = pathlib.Path(__file__).resolve().parents[2]
_ids = itertools.count()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    log = open(tmp_path_factory.mktemp("broker") / "tansu.log", "wb")
    b = EmbeddedBroker(log=log).start()
    yield b
    b.stop()
    log.close()


class Cluster:
    """One isolated deployment on the session broker: its own topics, app id and workers."""

    def __init__(self, broker: EmbeddedBroker, tmp: pathlib.Path, partitions: int = 4, store: str = "memory://",
                 model_scope: str | None = None) -> None:
        n = next(_ids)
        self.bootstrap = broker.url
        self.tmp = tmp
        self.settings = Settings(broker_url=broker.url, broker_kind="tansu", partitions=partitions,
                                 topic_prefix=f"t{n}-{os.getpid()}", app_id=f"riskmon-test-{n}-{os.getpid()}",
                                 datadir=tmp / "data", session_timeout_s=6.0, store=store,
                                 model_scope=model_scope or Settings.model_fields["model_scope"].default)  # the default, not the shell's
        self.workers: list[subprocess.Popen[bytes]] = []
        self.web_ports: list[int] = []  # each worker's web and /metrics port, in start order
        asyncio.run(create_topics(self.settings, self.bootstrap))

    def start_worker(self, slot: int = 0) -> subprocess.Popen[bytes]:
        """A worker process; one started in the slot of a dead one finds its local store (rocksdb) again."""
        port = free_port()
        self.web_ports.append(port)
        log = open(self.tmp / f"worker-{port}.log", "wb")
        settings = self.settings.model_copy(update={"datadir": self.settings.datadir / f"slot{slot}", "web_port": port})
        proc = start_worker_process(settings, log, loglevel="info")
        self.workers.append(proc)
        return proc

    def kill9(self, proc: subprocess.Popen[bytes]) -> None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("worker-*.log")))

    def read(self, topic: str, until: Any, timeout_s: float) -> list[Any]:
        """Read ``topic`` from the start until ``until(records)`` holds or time runs out."""
        async def go() -> list[Any]:
            c = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
            await c.start()
            out: list[Any] = []
            deadline = time.monotonic() + timeout_s
            try:
                while time.monotonic() < deadline and not until(out):
                    batch = await c.getmany(timeout_ms=500)
                    for recs in batch.values():
                        out.extend(recs)
                    for p in self.workers:
                        if p.poll() not in (None, -9):
                            raise AssertionError(f"a worker exited with {p.returncode}:\n{self.logs()}")
            finally:
                await c.stop()
            return out
        return asyncio.run(go())

    def crash_mid_stream(self, log: pathlib.Path, expected: int, share: int = 3) -> tuple[list[bytes], list[bytes], int]:
        """Produce ``log``, start a worker, kill -9 it once ``expected // share`` distinct decisions arrived and
        start another in its slot (a rocksdb store resumes from its files); (the decisions seen before the
        kill, every distinct decision once ``expected`` arrived, repeated deliveries)."""
        asyncio.run(produce(log, self.settings, self.bootstrap))
        w = self.start_worker()
        partial, _ = self.decisions(expected // share, timeout_s=120)
        self.kill9(w)
        self.start_worker(slot=0)
        got, repeats = self.decisions(expected)
        return partial, got, repeats

    def decisions(self, n_unique: int, timeout_s: float = 180) -> tuple[list[bytes], int]:
        """(unique decision records, repeated deliveries) once ``n_unique`` distinct ids arrived."""
        def unique(recs: list[Any]) -> set[str]:
            return {orjson.loads(r.value)["decision_id"] for r in recs}
        recs = self.read(self.settings.topic_decisions, lambda rs: len(unique(rs)) >= n_unique, timeout_s)
        seen: dict[str, bytes] = {}
        for r in recs:
            seen.setdefault(orjson.loads(r.value)["decision_id"], r.value)
        return list(seen.values()), len(recs) - len(seen)


@pytest.fixture(params=["memory://", "rocksdb://"])
def cluster(broker: EmbeddedBroker, tmp_path: pathlib.Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = Cluster(broker, tmp_path, store=request.param)
    yield c
    c.stop()


def write_log(path: pathlib.Path, events: list[dict[str, Any]]) -> pathlib.Path:
    path.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    return path


def diff(got: list[bytes], expected: list[bytes]) -> str:
    """A readable account of how two decision sets differ (by id, then by content)."""
    g = {orjson.loads(d)["decision_id"]: orjson.loads(d) for d in got}
    e = {orjson.loads(d)["decision_id"]: orjson.loads(d) for d in expected}
    missing = [e[k] for k in e.keys() - g.keys()]
    extra = [g[k] for k in g.keys() - e.keys()]
    changed = [(e[k], g[k]) for k in e.keys() & g.keys() if e[k] != g[k]]
    lines = [f"{len(missing)} missing, {len(extra)} extra, {len(changed)} changed of {len(e)}"]
    for d in sorted(missing, key=lambda d: d["event_ts"])[:5]:
        lines.append(f"missing {d['event_ts']} {d['account_id']} {d['action']} {d['model_version']} score {d['score']}")
    for d in sorted(extra, key=lambda d: d["event_ts"])[:5]:
        lines.append(f"extra   {d['event_ts']} {d['account_id']} {d['action']} {d['model_version']} score {d['score']}")
    for a, b in changed[:5]:
        keys = [k for k in a if a[k] != b.get(k)]
        lines.append(f"changed {a['account_id']} {a['action']}: " + ", ".join(f"{k}: {a[k]!r:.60} -> {b[k]!r:.60}" for k in keys))
    return "\n".join(lines)


def account(tally: dict[str, Any], name: str) -> None:
    """Assert zero lost, zero changed, zero unexpected; print the line the README's table is made of."""
    expected, got = tally["expected"], tally["got"]
    lost = len(set(expected) - set(got))
    extra = len(set(got) - set(expected))
    print(f"\nFAULT {name}: {tally['events']} events in, {len(expected)} decisions expected, {len(got)} distinct seen, "
          f"{lost} lost, {extra} unexpected, {tally['repeats']} repeated deliveries of the same ids")
    assert sorted(got) == sorted(expected), diff(got, expected)


def replay_decisions(path: pathlib.Path, partitions: int = 4, portfolio: bool = PORTFOLIO_BY_DEFAULT) -> list[bytes]:
    """Replay's decisions (``portfolio``: one model for the portfolio, as the workers' default RISKMON_MODEL_SCOPE)."""
    out = io.BytesIO()
    replay(path, out, partitions=partitions, portfolio=portfolio)
    return out.getvalue().splitlines()
