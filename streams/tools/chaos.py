"""`riskmon chaos`: a group of workers under a seeded sequence of faults, judged against replay.

A simulated log is fed at a steady rate to N workers while a schedule of faults
runs: ``kill`` (kill -9 of a worker, restarted at once in its slot, as an
orchestrator would), ``pause`` (SIGSTOP of a worker for a few seconds, then
SIGCONT), ``add`` (one more worker joins: a rebalance), ``remove`` (a worker
stopped with SIGTERM: a rebalance; it must stop within ``STOP_LIMIT_S``), and
``broker`` (the broker stopped and started again on its port, only where its
storage keeps records: Tansu on S3 here). Then the group must drain: every
decision replay makes of the same log must arrive, none other, each with
replay's body to the byte. The result counts lost, unexpected and changed
decisions, repeated deliveries, workers that exited on their own, slow stops,
and the recovery time (from the end of the last fault to the last new decision).

The schedule is drawn from ``seed`` (or given: ``kill@5,pause@9:3,add@14``), so
a failing run is rerun exactly.
"""
from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator

import orjson
from aiokafka import AIOKafkaConsumer

from riskmon.models.codec import dumps
from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT
from riskmon.models.simulate import simulate

from ..broker import EmbeddedBroker, free_port
from ..produce import produce
from ..replay import replay
from ..settings import Settings
from ..topics import create_topics
from ..worker import start_worker_process, stop_process
from .scrape import scrape, total

__all__ = ["Fault", "ChaosResult", "KINDS", "draw_schedule", "parse_schedule", "run_chaos", "main_chaos", "s3_storage"]

KINDS = ("kill", "pause", "add", "remove", "broker")
S3_LINGER_MS = 200  # the feed's batching when the broker keeps its records in S3 (moto): see run_chaos
STOP_LIMIT_S = 10.0  # a worker told to stop (SIGTERM) must be gone within this, whatever it is doing


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the feed starts
    kind: str
    seconds: float = 0.0  # how long a pause or a broker outage lasts

    def __str__(self) -> str:
        return f"{self.kind}@{self.at_s:g}" + (f":{self.seconds:g}" if self.seconds else "")


def parse_schedule(text: str) -> list[Fault]:
    """``kill@5,pause@9:3,broker@20:2`` -> faults in time order (kind@seconds[:duration]).

    >>> [str(f) for f in parse_schedule("pause@9:3, kill@5")]
    ['kill@5', 'pause@9:3']
    >>> parse_schedule("none")  # a run without faults: what the live feed alone does
    []
    """
    if text.strip() == "none":
        return []
    out = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        kind, _, when = item.partition("@")
        at, _, dur = when.partition(":")
        if kind not in KINDS or not at:
            raise ValueError(f"chaos: bad fault {item!r}: write kind@seconds[:duration], kind one of {', '.join(KINDS)}")
        out.append(Fault(float(at), kind, float(dur) if dur else (3.0 if kind in ("pause", "broker") else 0.0)))
    return sorted(out, key=lambda f: f.at_s)


def draw_schedule(seed: int, faults: int, kinds: tuple[str, ...], start_s: float = 4.0, min_gap_s: float = 4.0,
                  max_gap_s: float = 12.0) -> list[Fault]:
    """``faults`` faults of ``kinds``, ``min_gap_s``..``max_gap_s`` apart, from ``seed``.

    >>> draw_schedule(1, 3, ("kill",)) == draw_schedule(1, 3, ("kill",))
    True
    """
    rng = random.Random(seed)
    t, out = start_s, []
    for _ in range(faults):
        kind = rng.choice(kinds)
        out.append(Fault(round(t, 1), kind, round(rng.uniform(2, 6), 1) if kind in ("pause", "broker") else 0.0))
        t += rng.uniform(min_gap_s, max_gap_s)
    return out


@dataclass
class ChaosResult:
    seed: int | None
    schedule: list[Fault]
    events: int
    expected: int
    got: int = 0
    lost: int = 0
    unexpected: int = 0
    changed: int = 0
    repeats: int = 0
    exited: list[str] = field(default_factory=list)  # workers that exited without being told to
    stop_s: list[float] = field(default_factory=list)  # how long each worker told to stop took
    recovery_s: float | None = None  # from the end of the last fault to the last new decision
    drained: bool = False
    late: int | None = None  # events the workers still running at the end applied after later ones (None: not read)
    examples: list[str] = field(default_factory=list)

    @property
    def slow_stops(self) -> list[float]:
        """Stops over STOP_LIMIT_S (seconds)."""
        return [t for t in self.stop_s if t > STOP_LIMIT_S]

    @property
    def ok(self) -> bool:
        return (self.drained and not (self.lost or self.unexpected or self.changed or self.exited or self.slow_stops))

    def line(self) -> str:
        rec = "-" if self.recovery_s is None else f"{self.recovery_s:.1f} s"
        return (f"chaos: seed {self.seed if self.seed is not None else '-'}, faults "
                f"{','.join(map(str, self.schedule)) or 'none'}: {self.events} events, {self.expected} decisions expected, "
                f"{self.got} distinct seen, {self.lost} lost, {self.unexpected} unexpected, {self.changed} changed, "
                f"{self.repeats} repeated deliveries, {'-' if self.late is None else self.late} applied late, recovery {rec}, {len(self.exited)} exits on their own, "
                f"slowest stop {max(self.stop_s, default=0):.1f} s: {'OK' if self.ok else 'FAILED'}")


class _Group:
    """The workers, each in a slot (its data directory: a rocksdb store finds its files again)."""

    def __init__(self, settings: Settings, tmp: Path) -> None:
        self.settings, self.tmp = settings, tmp
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ports: dict[int, int] = {}
        self.exited: list[str] = []
        self.stop_s: list[float] = []
        self._starts = 0

    def start(self, slot: int) -> None:
        self._starts += 1
        self.ports[slot] = free_port()
        s = self.settings.model_copy(update={"datadir": self.settings.datadir / f"slot{slot}", "web_port": self.ports[slot]})
        log = open(self.tmp / f"worker-slot{slot}-{self._starts}.log", "wb")
        self.procs[slot] = start_worker_process(s, log, loglevel="info")
        log.close()  # the child has its own descriptor

    def check(self) -> None:
        """A worker that exited by itself is counted and restarted in its slot (an orchestrator would)."""
        for slot, p in list(self.procs.items()):
            if p.poll() is not None:
                self.exited.append(f"slot {slot} exited with code {p.returncode}")
                self.start(slot)

    def kill(self, slot: int) -> None:
        p = self.procs[slot]
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.start(slot)

    def pause(self, slot: int, seconds: float) -> None:
        p = self.procs[slot]
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(seconds)
        os.kill(p.pid, signal.SIGCONT)

    def stop(self, slot: int) -> None:
        p = self.procs.pop(slot)
        if p.poll() is not None:
            return
        t0 = time.monotonic()
        stop_process(p, timeout_s=60)
        self.stop_s.append(time.monotonic() - t0)

    def late(self) -> int | None:
        """Events the running workers applied after later events of their partition (their counters
        since they started: a worker killed earlier took its count with it); None if one does not answer."""
        late = 0.0
        for slot in self.procs:
            try:
                late += total(scrape(self.ports[slot]), "riskmon_events_late_total")
            except OSError:
                return None
        return int(late)

    def stop_all(self) -> None:
        for slot in list(self.procs):
            self.stop(slot)


class _Reader:
    """Reads the decisions topic from the start, in a thread, until told to stop."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[bytes] = []
        self.last_new = time.monotonic()
        self._ids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.error: BaseException | None = None
        self._thread.start()

    @property
    def distinct(self) -> int:
        return len(self._ids)

    def has_all(self, ids: Any) -> bool:
        return set(ids) <= self._ids

    async def _run(self) -> None:
        try:
            c = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, request_timeout_ms=10_000)
            await c.start()
            try:
                while not self._stop.is_set():
                    for recs in (await c.getmany(timeout_ms=300)).values():
                        for r in recs:
                            self.records.append(r.value)
                            did = orjson.loads(r.value)["decision_id"]
                            if did not in self._ids:
                                self._ids.add(did)
                                self.last_new = time.monotonic()
            finally:
                await c.stop()
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            self.error = exc

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


def s3_storage(tmp: Path) -> tuple[str, dict[str, str], subprocess.Popen[bytes]]:
    """A moto S3 server for Tansu to keep its records in across a restart (needs moto and boto3): (the
    storage engine URL, the environment Tansu needs for it, the server's process)."""
    import boto3

    port = free_port()
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                            stdout=open(tmp / "moto.log", "wb"), stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or moto.poll() is not None:
                raise RuntimeError(f"chaos: moto did not start; see {tmp / 'moto.log'}") from None
            time.sleep(0.2)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket="tansu")
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true"}
    return "s3://tansu/", env, moto


def run_chaos(schedule: list[Fault], seed: int | None = None, workers: int = 2, accounts: int = 1500, days: int = 60,
              rate: float | None = 1500.0, store: str = "memory://", partitions: int = 4, drain_s: float = 120.0,
              out: IO[str] = sys.stdout, keep: bool = False, portfolio: bool = PORTFOLIO_BY_DEFAULT) -> ChaosResult:
    """Feed, fault, drain, compare (see the module's docstring). ``drain_s``: how long the group has, after the
    feed and the last fault, to deliver what is missing. ``rate=None``: the whole log is on the broker before
    the workers start (the faults then land while they work through it), which leaves out what a live feed
    adds: records of one partition's topics arriving apart."""
    tmp = Path(tempfile.mkdtemp(prefix="riskmon-chaos-"))
    events, _ = simulate(accounts, days, 7 if seed is None else seed)
    log = tmp / "events.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    buf = io.BytesIO()
    replay(log, buf, partitions=partitions, portfolio=portfolio)  # (portfolio: one model for all, as the workers)
    expected = {orjson.loads(line)["decision_id"]: line for line in buf.getvalue().splitlines()}
    result = ChaosResult(seed, schedule, len(events), len(expected))
    fed = "on the broker before they start" if rate is None else f"fed at {rate:g}/s"
    print(f"chaos: {len(events):,} events for {accounts:,} accounts, {len(expected):,} decisions from replay; "
          f"{workers} workers ({store}{', one model for the portfolio' if portfolio else ''}), {fed}; faults (seconds after they start): "
          f"{', '.join(map(str, schedule)) or 'none'}; "
          f"files in {tmp}", file=out, flush=True)
    moto = None
    storage, env = "memory://tansu/", None
    linger_ms = 5
    if any(f.kind == "broker" for f in schedule):
        storage, env, moto = s3_storage(tmp)
        # Tansu writes each batch it is sent as one S3 object and lists a partition's objects on every fetch,
        # which moto answers in time linear in their number: a feed in 5 ms batches (an object per record or
        # two) starved the workers' fetches within seconds. The feed's batches gather longer here instead,
        # though not past the hold's quiet window (streams.hold.QUIET_S): a producer that holds records
        # longer than that makes events late (500 ms: 606 of 13,159 applied late, one score changed).
        linger_ms = S3_LINGER_MS
    broker_log = open(tmp / "tansu.log", "ab")
    broker = EmbeddedBroker(log=broker_log, storage=storage, env=env).start()
    settings = Settings(broker_url=broker.url, broker_kind="tansu", partitions=partitions, topic_prefix="chaos",
                        app_id="riskmon-chaos", datadir=tmp / "data", session_timeout_s=6.0, store=store,
                        model_scope="portfolio" if portfolio else "partition")
    asyncio.run(create_topics(settings, broker.url))
    group = _Group(settings, tmp)
    reader = _Reader(broker.url, settings.topic_decisions)
    rng = random.Random(seed)
    feed_error: list[BaseException] = []
    restore_logging = _clients_log(tmp / "clients.log")

    def feed() -> None:
        try:
            asyncio.run(produce(log, settings, broker.url, rate=rate, linger_ms=linger_ms))
        except BaseException as exc:  # noqa: BLE001 - reported by the run
            feed_error.append(exc)

    try:
        feeder = threading.Thread(target=feed, daemon=True)
        if rate is None:
            feeder.start()
            feeder.join()
        for slot in range(workers):
            group.start(slot)
        start = time.monotonic()
        if rate is not None:
            feeder.start()
        last_fault_end = start
        for f in schedule:
            while time.monotonic() - start < f.at_s:
                group.check()
                time.sleep(0.1)
            live = sorted(group.procs)
            print(f"chaos: {time.monotonic() - start:5.1f} s {f}: {reader.distinct:,} of {len(expected):,} decisions "
                  f"so far", file=out, flush=True)
            if f.kind == "kill":
                group.kill(rng.choice(live))
            elif f.kind == "pause":
                group.pause(rng.choice(live), f.seconds)
            elif f.kind == "add":
                group.start(max(live, default=-1) + 1)
            elif f.kind == "remove":
                if len(live) > 1:  # the last worker stays: removing it is an outage, not a rebalance
                    group.stop(rng.choice(live))
            elif f.kind == "broker":
                broker.stop()
                time.sleep(f.seconds)
                broker.start()
            last_fault_end = time.monotonic()
        feeder.join()
        if feed_error:
            raise RuntimeError(f"chaos: the feed failed: {feed_error[0]!r}")
        deadline = max(time.monotonic(), last_fault_end) + drain_s
        while time.monotonic() < deadline:
            group.check()
            if reader.error is not None:
                raise RuntimeError(f"chaos: the decisions reader failed: {reader.error!r}")
            if reader.has_all(expected):
                time.sleep(3)  # anything unexpected that was on its way
                break
            time.sleep(0.5)
        result.drained = reader.has_all(expected)
        if reader.last_new > last_fault_end:
            result.recovery_s = reader.last_new - last_fault_end
        result.late = group.late()
        group.stop_all()
        reader.close()
    finally:
        for p in group.procs.values():
            if p.poll() is None:
                p.kill()
        broker.stop()
        broker_log.close()
        restore_logging()
        if moto is not None:
            moto.terminate()
            moto.wait(10)
    seen: dict[str, bytes] = {}
    for r in reader.records:
        seen.setdefault(orjson.loads(r)["decision_id"], r)
    result.got = len(seen)
    result.repeats = len(reader.records) - len(seen)
    result.lost = len(expected.keys() - seen.keys())
    result.unexpected = len(seen.keys() - expected.keys())
    changed = [k for k in expected.keys() & seen.keys() if orjson.loads(expected[k]) != orjson.loads(seen[k])]
    result.changed = len(changed)
    result.exited = group.exited
    result.stop_s = group.stop_s
    for k in changed[:3]:
        a, b = orjson.loads(expected[k]), orjson.loads(seen[k])
        result.examples.append("changed " + ", ".join(f"{n}: {a[n]!r:.50} -> {b.get(n)!r:.50}" for n in a if a[n] != b.get(n)))
    for k in sorted(expected.keys() - seen.keys())[:3]:
        d = orjson.loads(expected[k])
        result.examples.append(f"lost {d['account_id']} {d['action']} at {d['event_ts']} ({d['model_version']})")
    for what in result.exited[:3]:
        result.examples.append(what)
    print(result.line(), file=out, flush=True)
    for e in result.examples:
        print(f"chaos:   {e}", file=out)
    if not result.ok or keep:
        print(f"chaos: worker and broker logs in {tmp}", file=out)
    return result


def _clients_log(path: Path) -> Any:
    """The harness's own feed and reader log every failed connection while the broker is down (several a
    second): to a file beside the workers' logs, not the console. Returns what puts things back."""
    logger = logging.getLogger("aiokafka")
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False

    def restore() -> None:
        logger.removeHandler(handler)
        logger.propagate = True
        handler.close()
    return restore


def _seeds(text: str) -> Iterator[int]:
    a, _, b = text.partition("..")
    yield from range(int(a), int(b) + 1) if b else [int(a)]


def main_chaos(args: Any, portfolio: bool = PORTFOLIO_BY_DEFAULT) -> int:
    """The CLI: one run per seed (or the given schedule), a summary table, exit 1 if any run failed."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the run's finally stops its workers, broker and moto: nothing is left running

    signal.signal(signal.SIGTERM, interrupt)
    kinds = tuple(args.kinds.split(","))
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"chaos: unknown fault kind {bad[0]!r} (one of {', '.join(KINDS)})")
    runs = []
    for seed in ([None] if args.schedule else _seeds(args.seeds)):
        if args.schedule:
            schedule = parse_schedule(args.schedule)
        else:
            assert seed is not None
            schedule = draw_schedule(seed, random.Random(seed).randint(1, args.faults) if args.vary else args.faults,
                                     kinds)
        runs.append(run_chaos(schedule, seed, args.workers, args.accounts, args.days, args.rate or None, args.store,
                              drain_s=args.drain, portfolio=portfolio))
    if len(runs) > 1:
        rec = [r.recovery_s for r in runs if r.recovery_s is not None]
        print(f"chaos: {len(runs)} runs, {sum(r.ok for r in runs)} OK; faults {sum(len(r.schedule) for r in runs)}; "
              f"lost {sum(r.lost for r in runs)}, unexpected {sum(r.unexpected for r in runs)}, changed "
              f"{sum(r.changed for r in runs)}, repeated deliveries {sum(r.repeats for r in runs)}; recovery median "
              f"{statistics.median(rec) if rec else 0:.1f} s, worst {max(rec, default=0):.1f} s")
    return 0 if all(r.ok for r in runs) else 1
