"""`riskmon bench`: throughput, latency and memory, side by side with the ceilings, in one run.

Everything runs on this machine, each broker run against a fresh embedded
broker (or RISKMON_BROKER_URL). Figures are medians of ``repeats`` runs where a run is
cheap enough to repeat; ratios compare figures measured in the same run.
"""
from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from riskmon.models.codec import decode, dumps
from riskmon.models.engine import Engine
from riskmon.models.events import event_order
from riskmon.models.simulate import simulate

from ..broker import EmbeddedBroker
from ..produce import produce
from ..settings import Settings
from ..topics import create_topics
from ..worker import start_worker_process

__all__ = ["run_bench"]


def bench_core(lines: list[bytes], repeats: int, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Decode -> core -> encode on one core, as replay does, without file I/O (``say``: a line per run)."""
    rates = []
    engine = None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        evs = [decode(line) for line in lines]
        evs.sort(key=lambda e: event_order(e.ts, e.type, 0))
        engine = Engine(4)
        n_dec = 0
        for e in evs:
            for r in engine.process(e):
                for d in r.decisions:
                    dumps(d.to_dict())
                    n_dec += 1
        rates.append(len(lines) / (time.perf_counter() - t0))
        if say is not None:
            say(f"bench: core run {len(rates)}/{repeats}: {rates[-1]:,.0f} events/s")
    assert engine is not None
    accounts = len(engine.states)
    sizes = [len(dumps(s)) for s in engine.states.values()]
    # Resident: the Python heap the engine holds after a run (RSS does not shrink
    # when a previous run's objects are freed, so it cannot be differenced).
    del engine
    evs = sorted((decode(line) for line in lines), key=lambda e: event_order(e.ts, e.type, 0))
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    engine = Engine(4)
    for e in evs:
        engine.process(e)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return {
        "events": len(lines), "accounts": accounts, "events_per_s": statistics.median(rates), "runs": rates,
        "state_bytes_mean": statistics.mean(sizes), "state_bytes_max": max(sizes),
        "heap_bytes_per_account": held / accounts,
    }


def bench_core_apart(lines: list[bytes], repeats: int) -> dict[str, Any]:
    """:func:`bench_core` in a Python process of its own, as replay runs: this one has just simulated the log,
    and what that left in its heap slowed the core by 7% in the median, worse with each repeat (at 1ef7e33 on
    the same 396,285 lines: 35,927, 32,828 and 31,850 events/s here, 35,274, 35,306 and 35,258 apart)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "core.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        code = "import sys; from riskmon.streams.tools.bench import _core_child; _core_child(sys.argv[1], int(sys.argv[2]))"
        out = subprocess.run([sys.executable, "-c", code, str(path), str(repeats)], check=True, stdout=subprocess.PIPE)
    return orjson.loads(out.stdout)  # type: ignore[no-any-return]


def _core_child(path: str, repeats: int) -> None:
    """The child of :func:`bench_core_apart`: its figures as JSON on stdout, its progress on stderr."""
    from ..gc_thresholds import tune_gc

    tune_gc()  # as every riskmon command
    lines = Path(path).read_bytes().splitlines()
    result = bench_core(lines, repeats, lambda text: print(text, file=sys.stderr, flush=True))
    sys.stdout.buffer.write(orjson.dumps(result))


async def _drain(bootstrap: str, topic: str, n: int, timeout_s: float, group: str | None = None) -> float:
    """Seconds until ``n`` records were read from ``topic`` (from the start)."""
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                         group_id=group, max_partition_fetch_bytes=4 << 20)
    await c.start()
    got = 0
    t0 = time.perf_counter()
    try:
        while got < n and time.perf_counter() - t0 < timeout_s:
            batch = await c.getmany(timeout_ms=200, max_records=20000)
            got += sum(len(v) for v in batch.values())
    finally:
        await c.stop()
    if got < n:
        raise TimeoutError(f"read {got} of {n} records from {topic} in {timeout_s:.0f} s")
    return time.perf_counter() - t0


async def _filled_pair(bootstrap: str, name: str, lines: list[bytes]) -> tuple[str, str]:
    """An input topic holding ``lines`` and an empty output topic, 4 partitions each."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    src, dst = f"{name}.in", f"{name}.out"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(src, 4, 1), NewTopic(dst, 4, 1)])
    await admin.close()
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await p.start()
    try:
        futs = []
        for i, line in enumerate(lines):
            futs.append(await p.send(src, line, key=str(i % 997).encode()))
            if len(futs) >= 5000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return src, dst


async def bench_aiokafka(bootstrap: str, lines: list[bytes], tag: str) -> float:
    """Ceiling: consume -> orjson -> produce, one process."""
    src, dst = await _filled_pair(bootstrap, f"bench.{tag}.raw", lines)
    c = AIOKafkaConsumer(src, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                         max_partition_fetch_bytes=4 << 20)
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await c.start()
    await p.start()
    n = 0
    t0 = time.perf_counter()
    try:
        futs = []
        while n < len(lines):
            batch = await c.getmany(timeout_ms=200, max_records=20000)
            for recs in batch.values():
                for r in recs:
                    futs.append(await p.send(dst, orjson.dumps(orjson.loads(r.value)), key=r.key))
                    n += 1
            if len(futs) >= 5000:
                await asyncio.gather(*futs)
                futs.clear()
        await asyncio.gather(*futs)
    finally:
        await c.stop()
        await p.stop()
    return len(lines) / (time.perf_counter() - t0)


async def bench_faust(bootstrap: str, lines: list[bytes], tag: str) -> float:
    """Ceiling: a Faust passthrough agent, defaults but linger 5 ms, one worker process."""
    src, dst = await _filled_pair(bootstrap, f"bench.{tag}.faust", lines)
    env = dict(os.environ, BENCH_APP_ID=f"bench-{tag}-faust", BENCH_BROKER=bootstrap, BENCH_IN=src, BENCH_OUT=dst,
               BENCH_DATADIR=tempfile.mkdtemp(prefix="riskmon-bench-"))
    proc = subprocess.Popen([sys.executable, "-m", "riskmon.streams.tools.bench_faust", "worker", "-l", "error"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # From the first output record to the last: start-up and group join are not throughput.
        await _drain(bootstrap, dst, 1, 120)
        t0 = time.perf_counter()
        await _drain(bootstrap, dst, len(lines), 600)
        elapsed = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(20)
    return len(lines) / elapsed


def _worker(settings: Settings, bootstrap: str) -> subprocess.Popen[bytes]:
    """A worker process; its output goes to DATADIR/worker.log."""
    log = open(Path(settings.datadir) / "worker.log", "wb")
    return start_worker_process(settings.model_copy(update={"broker_url": bootstrap, "session_timeout_s": 6.0}), log)


def _check_alive(proc: subprocess.Popen[bytes], settings: Settings) -> None:
    if proc.poll() is not None:
        tail = (Path(settings.datadir) / "worker.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"the worker exited with code {proc.returncode}:\n{tail}")


async def _committed(bootstrap: str, group: str, topics: list[str], partitions: int) -> int:
    """Records the worker's group has committed on ``topics`` (read as a member would, without joining)."""
    from aiokafka import TopicPartition

    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await c.start()
    try:
        total = 0
        for t in topics:
            for p in range(partitions):
                off = await c.committed(TopicPartition(t, p))
                total += max(off or 0, 0)
        return total
    finally:
        await c.stop()


async def bench_worker_throughput(bootstrap: str, log: Path, kind: str, tag: str) -> dict[str, float]:
    """Sustained events/s of one worker: the whole log waiting in the input topics, then drained."""
    from ..broker import free_port

    s = Settings(broker_kind=kind, topic_prefix=f"bench.{tag}.e2e", app_id=f"bench-{tag}-e2e",
                 datadir=Path(tempfile.mkdtemp(prefix="riskmon-bench-")), web_port=free_port())
    await create_topics(s, bootstrap)
    summary = await produce(log, s, bootstrap)
    proc = _worker(s, bootstrap)
    try:
        start = None
        t_end = None
        deadline = time.perf_counter() + 900
        while time.perf_counter() < deadline:
            _check_alive(proc, s)
            done = await _committed(bootstrap, s.app_id, list(s.input_topics.values()), s.partitions)
            now = time.perf_counter()
            if done > 0 and start is None:
                start = (now, done)
            if done >= summary.records:
                t_end = now
                break
            await asyncio.sleep(0.5)
        if start is None or t_end is None:
            raise TimeoutError("the worker did not commit the whole log in time")
        rate = (summary.records - start[1]) / max(t_end - start[0], 1e-9)
    finally:
        proc.terminate()
        proc.wait(30)
    return {"events": summary.records, "events_per_s": rate}


async def bench_worker_latency(bootstrap: str, events: list[dict[str, Any]], rate: float, kind: str, tag: str,
                               seconds: float) -> dict[str, float]:
    """Produce at a fixed rate; latency from sending an event to consuming the decision it caused."""
    from ..broker import free_port

    s = Settings(broker_kind=kind, topic_prefix=f"bench.{tag}.lat", app_id=f"bench-{tag}-lat",
                 datadir=Path(tempfile.mkdtemp(prefix="riskmon-bench-")), web_port=free_port())
    await create_topics(s, bootstrap)
    proc = _worker(s, bootstrap)
    sent: dict[str, float] = {}
    lat: list[float] = []
    try:
        await asyncio.sleep(8)  # join the group before the clock starts
        from riskmon.models.events import CATEGORY
        from riskmon.models.partitioning import partition_for

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
        # The measuring consumer waits 20 ms per fetch, not 500: see streams/tansu_fetch_wait.py.
        consumer = AIOKafkaConsumer(s.topic_decisions, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                    fetch_max_wait_ms=20)
        await producer.start()
        await consumer.start()

        async def read() -> None:
            while True:
                batch = await consumer.getmany(timeout_ms=100)
                now = time.perf_counter()
                for recs in batch.values():
                    for r in recs:
                        cause = orjson.loads(r.value)["cause_event_id"]
                        if cause in sent:
                            lat.append(now - sent[cause])

        reader = asyncio.create_task(read())
        t0 = time.perf_counter()
        n = 0
        for e in events:
            if time.perf_counter() - t0 > seconds:
                break
            if n % 1000 == 0:
                _check_alive(proc, s)
            ahead = n / rate - (time.perf_counter() - t0)
            if ahead > 0:
                await asyncio.sleep(ahead)
            cat = CATEGORY[e["type"]]
            await producer.send(s.input_topics[cat], dumps(e), key=e["account_id"].encode(),
                                partition=partition_for(e["account_id"], s.partitions))
            sent[e["event_id"]] = time.perf_counter()
            n += 1
        await producer.flush()
        await asyncio.sleep(5)  # let the last decisions arrive
        reader.cancel()
        await producer.stop()
        await consumer.stop()
        achieved = n / (time.perf_counter() - 5 - t0)
    finally:
        proc.terminate()
        proc.wait(30)
    if not lat:
        return {"offered_per_s": rate, "achieved_per_s": achieved, "samples": 0,
                "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    lat.sort()
    q = statistics.quantiles(lat, n=100, method="inclusive")  # never beyond the observed max
    return {"offered_per_s": rate, "achieved_per_s": achieved, "samples": len(lat),
            "p50_ms": 1000 * q[49], "p99_ms": 1000 * q[98], "max_ms": 1000 * lat[-1]}


def run_bench(accounts: int, days: int, seed: int, repeats: int, transport_events: int, latency_s: float,
              out: Any = sys.stdout) -> dict[str, Any]:
    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    tag = f"{os.getpid()}-{int(time.time())}"
    if transport_events < 20_000:
        say("bench: note: worker throughput is read from committed offsets, which Faust moves every ~3 s; "
            f"with {transport_events} events it comes out far too low (use 20,000 or more)")
    say(f"bench: simulating {accounts} accounts over {days} days")
    events, _ = simulate(accounts, days, seed, on_day=lambda d: say(f"bench: simulated day {d}/{days}"))
    lines = [dumps(e) for e in events]
    n_transport = min(transport_events, len(events))
    transport_log = b"".join(lines[i] + b"\n" for i in sorted(range(n_transport), key=lambda i: events[i]["ts"]))
    del events
    gc.collect()
    say(f"bench: core on {len(lines)} events x {repeats}, in a process of its own")
    core = bench_core_apart(lines, repeats)
    results: dict[str, Any] = {"core": core}
    settings = Settings()

    def on_broker(run: Callable[[str, str], Any]) -> Any:
        """``run(bootstrap, kind)`` on RISKMON_BROKER_URL, or on a fresh embedded broker: Tansu slows as its
        in-memory partitions grow (STACK.md), so a run must not inherit the records of the runs before it."""
        if settings.broker_url:
            return run(settings.broker_url, settings.broker_kind)
        broker = EmbeddedBroker().start()
        try:
            return run(broker.url, "tansu")
        finally:
            broker.stop()

    sample = lines[:transport_events]
    say(f"bench: aiokafka passthrough on {len(sample)} records")
    results["aiokafka_passthrough_per_s"] = on_broker(lambda url, kind: asyncio.run(bench_aiokafka(url, sample, tag)))
    say(f"bench: Faust passthrough on {len(sample)} records")
    results["faust_passthrough_per_s"] = on_broker(lambda url, kind: asyncio.run(bench_faust(url, sample, tag)))
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "events.jsonl"
        log.write_bytes(transport_log)
        say(f"bench: one worker, end to end, on {n_transport} events")
        results["worker"] = on_broker(lambda url, kind: asyncio.run(bench_worker_throughput(url, log, kind, tag)))
    half = results["worker"]["events_per_s"] / 2
    # Decisions need history: a smaller portfolio over months gives them from the first week.
    dense, _ = simulate(2000, 120, seed)
    say(f"bench: latency at {half:.0f} events/s for {latency_s:.0f} s (2,000 accounts, 120 days)")
    results["latency"] = on_broker(
        lambda url, kind: asyncio.run(bench_worker_latency(url, dense, half, kind, tag, latency_s)))
    print(format_bench(results), file=out)
    return results


def format_bench(r: dict[str, Any]) -> str:
    c, w, lat = r["core"], r["worker"], r["latency"]
    raw = r["aiokafka_passthrough_per_s"]
    rows = [
        ("core replay (decode, core, encode; one core)", f"{c['events_per_s']:,.0f} events/s",
         f"median of {len(c['runs'])}: " + ", ".join(f"{x:,.0f}" for x in c["runs"])),
        ("aiokafka consume -> orjson -> produce (ceiling)", f"{raw:,.0f} events/s", "1.00 of raw"),
        ("Faust passthrough agent (ceiling)", f"{r['faust_passthrough_per_s']:,.0f} events/s",
         f"{r['faust_passthrough_per_s'] / raw:.2f} of raw"),
        ("one riskmon worker, input topics -> decisions", f"{w['events_per_s']:,.0f} events/s",
         f"{w['events_per_s'] / raw:.2f} of raw, {w['events_per_s'] / c['events_per_s']:.2f} of core"),
        (f"produce -> decision consumed at {lat['offered_per_s']:,.0f}/s offered",
         f"p50 {lat['p50_ms']:.0f} ms, p99 {lat['p99_ms']:.0f} ms, max {lat['max_ms']:.0f} ms",
         f"{lat['samples']} decisions, {lat['achieved_per_s']:,.0f}/s achieved"),
        ("state per account", f"{c['state_bytes_mean']:.0f} B serialised (max {c['state_bytes_max']})",
         f"{c['heap_bytes_per_account']:.0f} B resident (Python heap), {c['accounts']} accounts"),
    ]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:<40}  {x}" for a, b, x in rows)
