"""Faults against a real broker, each counted: events in, decisions expected, seen, lost and repeated.

- the broker stopped and restarted while a worker runs (Tansu on S3 storage, served by moto, so that
  it keeps its records across the restart);
- the broker stalled (SIGSTOP) for 8 s mid-stream: a slow downstream, every write blocks;
- a poison record that makes the core raise, in a real worker process.
Worker kill -9 under load is in test_stream.py. Each test prints one line of figures (pytest -s shows them).
"""
from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Iterator

import orjson
import pytest

from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker, free_port
from riskmon.streams.produce import produce
from riskmon.streams.tools.chaos import s3_storage

from .conftest import Cluster, account, replay_decisions, write_log

pytestmark = pytest.mark.integration


@pytest.fixture
def s3_broker(tmp_path: pathlib.Path) -> Iterator[EmbeddedBroker]:
    """Tansu keeping its records in S3 (a moto server), so a restart finds them again."""
    storage, env, moto = s3_storage(tmp_path)
    log = open(tmp_path / "tansu-s3.log", "ab")
    broker = EmbeddedBroker(log=log, storage=storage, env=env).start()
    yield broker
    broker.stop()
    moto.terminate()
    moto.wait(10)
    log.close()


def test_broker_stopped_and_restarted_while_a_worker_runs(s3_broker: EmbeddedBroker, tmp_path: pathlib.Path) -> None:
    cluster = Cluster(s3_broker, tmp_path)
    try:
        events, _ = simulate(150, 60, seed=23)
        log = write_log(tmp_path / "ev.jsonl", events)
        expected = replay_decisions(log)
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        cluster.start_worker()
        partial, _ = cluster.decisions(len(expected) // 3, timeout_s=180)
        assert len(partial) < len(expected), "the outage must come mid-stream"
        s3_broker.stop()
        time.sleep(5)  # the broker is gone: the worker must wait, not die
        assert all(p.poll() is None for p in cluster.workers), cluster.logs()
        s3_broker.start()
        got, repeats = cluster.decisions(len(expected), timeout_s=240)
        account({"events": len(events), "expected": expected, "got": got, "repeats": repeats},
                f"broker stopped 5 s after {len(partial)} decisions, restarted")
    finally:
        cluster.stop()


def test_broker_stalls_for_8_seconds_a_slow_downstream(broker: EmbeddedBroker, tmp_path: pathlib.Path) -> None:
    cluster = Cluster(broker, tmp_path)
    try:
        events, _ = simulate(300, 90, seed=29)
        log = write_log(tmp_path / "ev.jsonl", events)
        expected = replay_decisions(log)
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        cluster.start_worker()
        partial, _ = cluster.decisions(len(expected) // 3, timeout_s=180)
        assert broker.proc is not None
        os.killpg(broker.proc.pid, signal.SIGSTOP)  # every request, decisions and state writes included, now hangs
        try:
            time.sleep(8)
        finally:
            os.killpg(broker.proc.pid, signal.SIGCONT)
        got, repeats = cluster.decisions(len(expected), timeout_s=240)
        account({"events": len(events), "expected": expected, "got": got, "repeats": repeats},
                f"broker stalled 8 s after {len(partial)} decisions")
    finally:
        cluster.stop()


POISON_WORKER = """
import sys
import riskmon.models.monitor as monitor
real = monitor.step
def step(state, event, ctx, *rest):
    if event.event_id == sys.argv[1]:
        raise RuntimeError("poisoned: the core breaks on this record")
    return real(state, event, ctx, *rest)
monitor.step = step
from riskmon.streams.cli import main
sys.exit(main(["worker", "--loglevel", "info"]))
"""


def test_a_poison_record_that_makes_the_core_raise_is_dead_lettered_and_the_partition_goes_on(
        broker: EmbeddedBroker, tmp_path: pathlib.Path) -> None:
    cluster = Cluster(broker, tmp_path)
    proc = None
    try:
        events, _ = simulate(200, 60, seed=31)
        poison = next(e for e in events[len(events) // 3:] if e["type"] == "purchase")
        log = write_log(tmp_path / "ev.jsonl", events)
        # What the worker must give: every decision of the log without the poisoned event.
        expected = replay_decisions(write_log(tmp_path / "without.jsonl", [e for e in events if e is not poison]))
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        env = dict(os.environ) | cluster.settings.model_copy(update={"web_port": free_port()}).to_env()
        out = open(tmp_path / "worker-poison.log", "wb")
        proc = subprocess.Popen([sys.executable, "-c", POISON_WORKER, poison["event_id"]], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        cluster.workers.append(proc)
        got, repeats = cluster.decisions(len(expected), timeout_s=240)
        dead = cluster.read(cluster.settings.topic_deadletter, lambda rs: len(rs) >= 1, 60)
        assert len(dead) == 1 and orjson.loads(dead[0].value)["event_id"] == poison["event_id"]
        headers = dict(dead[0].headers)
        assert headers["riskmon-reason"] == b"internal_error" and b"poisoned" in headers["riskmon-detail"]
        account({"events": len(events), "expected": expected, "got": got, "repeats": repeats},
                "poison record (the core raises): 1 dead-lettered as internal_error")
        assert proc.poll() is None, "the worker survived"
    finally:
        cluster.stop()


def test_a_worker_told_to_stop_is_gone_within_the_deadline_even_with_its_broker_hung(tmp_path: pathlib.Path) -> None:
    """SIGTERM while the broker hangs (SIGSTOP): Faust's stop would wait on request timeouts of minutes;
    the worker ends itself STOP_DEADLINE_S after the signal, saying so, as a kill -9 would."""
    from riskmon.streams.worker import STOP_DEADLINE_S

    own = EmbeddedBroker(log=open(tmp_path / "tansu.log", "wb")).start()
    cluster = Cluster(own, tmp_path)
    try:
        events, _ = simulate(200, 60, seed=31)
        asyncio.run(produce(write_log(tmp_path / "ev.jsonl", events), cluster.settings, cluster.bootstrap))
        w = cluster.start_worker()
        cluster.decisions(20, timeout_s=120)  # it is working
        assert own.proc is not None
        os.killpg(own.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            w.send_signal(signal.SIGTERM)
            w.wait(STOP_DEADLINE_S + 5)
            took = time.monotonic() - t0
        finally:
            os.killpg(own.proc.pid, signal.SIGCONT)
        print(f"\nFAULT stop with the broker hung: gone after {took:.1f} s, exit code {w.returncode}")
        assert took <= STOP_DEADLINE_S + 2
        if w.returncode != 0:  # it did not manage a clean stop in time: it must have said why
            assert "still stopping after" in cluster.logs()
    finally:
        cluster.stop()
        own.stop()


def test_a_partition_that_cannot_move_says_so_and_says_when_it_moves_again(tmp_path: pathlib.Path) -> None:
    """The broker hangs (SIGSTOP) while input waits: the worker, alive and answering /metrics, reports each
    stuck partition after RISKMON_STALL_S in its log and in riskmon_partition_stalled; after SIGCONT it says
    the partitions move again, and its decisions are replay's."""
    import urllib.request

    own = EmbeddedBroker(log=open(tmp_path / "tansu.log", "wb")).start()
    cluster = Cluster(own, tmp_path)
    cluster.settings = cluster.settings.model_copy(update={"stall_s": 3.0})
    try:
        events, _ = simulate(600, 90, seed=33)
        log = write_log(tmp_path / "ev.jsonl", events)
        expected = replay_decisions(log)
        asyncio.run(produce(log, cluster.settings, cluster.bootstrap))
        cluster.start_worker()
        cluster.decisions(20, timeout_s=120)  # it is working, with most of the log still to read
        assert own.proc is not None
        os.killpg(own.proc.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 30
            stalled: list[str] = []
            while time.monotonic() < deadline and not stalled:
                time.sleep(1)
                body = urllib.request.urlopen(f"http://127.0.0.1:{cluster.web_ports[0]}/metrics", timeout=5).read().decode()
                stalled = [line for line in body.splitlines()
                           if line.startswith("riskmon_partition_stalled{") and line.endswith(" 1.0")]
            assert stalled, cluster.logs()
            assert "is stalled:" in cluster.logs() and "input records wait and nothing has been applied" in cluster.logs()
        finally:
            os.killpg(own.proc.pid, signal.SIGCONT)
        got, _ = cluster.decisions(len(expected), timeout_s=180)
        assert sorted(got) == sorted(expected), diff(got, expected)
        deadline = time.monotonic() + 10
        while "moves again after" not in cluster.logs() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "moves again after" in cluster.logs()
        print(f"\nFAULT broker hung with input waiting: {len(stalled)} partition(s) reported stalled, then moved again")
    finally:
        cluster.stop()
        own.stop()
