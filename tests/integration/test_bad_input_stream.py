"""Every bad-input class through a real worker: dead-lettered with its bytes and reason, counted in /metrics."""
from __future__ import annotations

import asyncio
import ipaddress
import pathlib
import re
import time
import urllib.request
from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from riskmon.models.partitioning import partition_for
from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker
from riskmon.streams.produce import produce

from ..bad_input import CASES
from .conftest import Cluster, diff, replay_decisions, write_log

pytestmark = pytest.mark.integration


def listening_addresses(port: int) -> set[str]:
    """The local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                if len(addr) == 8:
                    found.add(str(ipaddress.IPv4Address(bytes.fromhex(addr)[::-1])))
                else:
                    found.add(str(ipaddress.IPv6Address(b"".join(bytes.fromhex(addr)[i:i + 4][::-1] for i in range(0, 16, 4)))))
    return found


def test_bad_records_through_a_worker_are_dead_lettered_counted_and_harmless(broker: EmbeddedBroker, tmp_path: pathlib.Path) -> None:
    cluster = Cluster(broker, tmp_path)
    try:
        events, _ = simulate(300, 60, seed=8)
        log = write_log(tmp_path / "ev.jsonl", events)
        expected = replay_decisions(log)
        home = partition_for("A0000001", cluster.settings.partitions)

        async def send_all() -> None:
            await produce(log, cluster.settings, cluster.bootstrap)
            p = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, max_request_size=1_048_576)
            await p.start()
            try:
                for _, raw, category, _ in CASES:  # the control topic has one partition, read by every worker
                    await p.send_and_wait(cluster.settings.input_topics[category], raw, key=b"A0000001",
                                          partition=0 if category == "control" else home)
            finally:
                await p.stop()

        asyncio.run(send_all())
        cluster.start_worker()
        got, repeats = cluster.decisions(len(expected))
        assert sorted(got) == sorted(expected), diff(got, expected)
        dead = cluster.read(cluster.settings.topic_deadletter, lambda rs: len(rs) >= len(CASES), 60)
        assert len(dead) == len(CASES)
        by_bytes = {r.value: dict(r.headers) for r in dead}
        for name, raw, category, reason in CASES:
            headers = by_bytes.get(raw)
            assert headers is not None, f"{name}: not in the dead-letter topic with its original bytes"
            assert headers["riskmon-reason"].decode() == reason, name
            assert headers["riskmon-topic"].decode() == cluster.settings.input_topics[category], name
            assert headers["riskmon-detail"], name

        # Counted in the worker's metrics, by reason.
        port = cluster.web_ports[0]
        deadline = time.monotonic() + 30
        want = Counter(reason for *_, reason in CASES)
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            counted: Counter[str] = Counter()
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    if s.name == "riskmon_deadletters_total":
                        counted[s.labels["reason"]] += int(s.value)
            if counted == want or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert counted == want
        assert all(p.poll() is None for p in cluster.workers), "the worker is still up"

        # The worker logged at info level: no account id in it (the bad records named A0000001 and GHOST01).
        logs = cluster.logs()
        assert "partition" in logs, "the info log is there"
        assert not re.search(r"\bA\d{7}\b|GHOST01", logs), re.findall(r".*\bA\d{7}\b.*|.*GHOST01.*", logs)[:3]
        # Its web and metrics server listens on loopback only (RISKMON_WEB_HOST's default).
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        cluster.stop()
