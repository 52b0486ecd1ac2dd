"""`riskmon soak`: one worker under steady load for a bounded time; is memory flat and lag bounded?

A simulated portfolio is fed at a fixed rate (events/s) for ``minutes``. Every
``every_s`` seconds the worker's resident memory (VmRSS) and its /metrics
(records not yet applied, events applied) are sampled. The verdict compares
the second half of the run with itself: memory growth from its start to its
end, and the worst lag there against what the feed sends in 5 seconds.
"""
from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from riskmon.models.codec import dumps
from riskmon.models.simulate import simulate

from ..broker import EmbeddedBroker, free_port
from ..produce import produce
from ..settings import Settings
from ..topics import create_topics
from ..worker import start_worker_process, stop_process
from .scrape import scrape, total

__all__ = ["soak", "Sample"]

EVENTS_PER_ACCOUNT_DAY = 0.59  # measured on the simulator: 141,569 events for 2,000 accounts over 120 days


@dataclass
class Sample:
    t: float  # seconds since the feed started
    rss_mb: float
    lag: float
    applied: float
    worker_cpu: float  # share of one core over the interval
    broker_cpu: float


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _scrape(port: int) -> tuple[float, float]:
    """(records not yet applied, events applied) from the worker's /metrics."""
    text = scrape(port)
    return total(text, "riskmon_consumer_lag"), total(text, "riskmon_events_total", 'result="accepted"')


def soak(minutes: float, rate: float, accounts: int, every_s: float, out: IO[str], seed: int = 11) -> dict[str, float]:
    needed = int(minutes * 60 * rate)
    days = max(30, int(needed / (EVENTS_PER_ACCOUNT_DAY * accounts)) + 10)
    events, _ = simulate(accounts, days, seed)
    events = events[:needed]
    tmp = Path(tempfile.mkdtemp(prefix="riskmon-soak-"))
    log = tmp / "events.jsonl"
    log.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    print(f"soak: {len(events):,} events for {accounts:,} accounts ({days} days simulated), fed at {rate:g}/s "
          f"for {minutes:g} min; samples every {every_s:g} s", file=out)
    broker = EmbeddedBroker(log=open(tmp / "tansu.log", "wb")).start()
    worker = None
    samples: list[Sample] = []
    try:
        settings = Settings(broker_url=broker.url, broker_kind="tansu", topic_prefix="soak", app_id="riskmon-soak",
                            datadir=tmp / "data", web_port=free_port(), session_timeout_s=6.0)
        asyncio.run(create_topics(settings, broker.url))
        worker = start_worker_process(settings, open(tmp / "worker.log", "wb"))
        deadline = time.monotonic() + 60
        while True:  # the worker serves /metrics once it has started
            try:
                _scrape(settings.web_port)
                break
            except OSError:
                if worker.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start; see {tmp / 'worker.log'}") from None
                time.sleep(0.5)

        async def feed_and_watch() -> None:
            feed = asyncio.create_task(produce(log, settings, broker.url, rate=rate))
            start = time.monotonic()
            give_up = start + minutes * 90 + 60  # a stalled run still ends, and says so
            assert broker.proc is not None
            print(f"{'t (s)':>7} {'RSS (MB)':>9} {'lag':>7} {'applied':>9} {'events/s':>9} {'worker CPU':>10} "
                  f"{'broker CPU':>10}", file=out)
            last_applied, last_t = 0.0, 0.0
            last_cpu = (_cpu_s(worker.pid), _cpu_s(broker.proc.pid))
            while time.monotonic() < give_up:
                await asyncio.sleep(every_s)
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with code {worker.returncode}; see {tmp / 'worker.log'}")
                lag, applied = await asyncio.to_thread(_scrape, settings.web_port)
                t = time.monotonic() - start
                cpu = (_cpu_s(worker.pid), _cpu_s(broker.proc.pid))
                s = Sample(t, _rss_mb(worker.pid), lag, applied, (cpu[0] - last_cpu[0]) / (t - last_t),
                           (cpu[1] - last_cpu[1]) / (t - last_t))
                samples.append(s)
                print(f"{t:7.0f} {s.rss_mb:9.1f} {lag:7.0f} {applied:9.0f} {(applied - last_applied) / (t - last_t):9.0f} "
                      f"{s.worker_cpu:10.0%} {s.broker_cpu:10.0%}", file=out, flush=True)
                last_applied, last_t, last_cpu = applied, t, cpu
                if feed.done() and applied >= len(events):
                    break
            else:
                print(f"soak: gave up after {time.monotonic() - start:.0f} s with {samples[-1].applied:.0f} of "
                      f"{len(events)} events applied", file=out)
            if not feed.done():
                feed.cancel()

        asyncio.run(feed_and_watch())
    finally:
        if worker is not None:
            stop_process(worker)
        broker.stop()
    half = [s for s in samples if s.t >= samples[-1].t / 2]
    growth = half[-1].rss_mb - half[0].rss_mb
    result = {
        "events": len(events), "seconds": samples[-1].t, "rss_start_mb": samples[0].rss_mb,
        "rss_half_mb": half[0].rss_mb, "rss_end_mb": samples[-1].rss_mb,
        "rss_growth_second_half_pct": 100 * growth / half[0].rss_mb,
        "lag_max_second_half": max(s.lag for s in half), "lag_median": statistics.median(s.lag for s in samples),
        "lag_bound": 5 * rate, "applied": samples[-1].applied,
        "worker_cpu_median": statistics.median(s.worker_cpu for s in samples),
        "broker_cpu_last": samples[-1].broker_cpu,
    }
    flat = result["rss_growth_second_half_pct"] < 5
    bounded = result["lag_max_second_half"] <= result["lag_bound"]
    print(f"soak: memory {result['rss_start_mb']:.0f} MB at the first sample, {result['rss_half_mb']:.0f} MB at half time, "
          f"{result['rss_end_mb']:.0f} MB at the end: {result['rss_growth_second_half_pct']:+.1f}% over the second half "
          f"({'flat' if flat else 'GROWING'}); lag median {result['lag_median']:.0f}, worst in the second half "
          f"{result['lag_max_second_half']:.0f} records against a bound of {result['lag_bound']:.0f} (5 s of feed): "
          f"{'bounded' if bounded else 'NOT BOUNDED'}; worker CPU median {result['worker_cpu_median']:.0%} of a core, "
          f"broker CPU at the end {result['broker_cpu_last']:.0%}", file=out)
    return result


def main_soak(minutes: float, rate: float, accounts: int, every_s: float) -> int:
    result = soak(minutes, rate, accounts, every_s, sys.stdout)
    flat = result["rss_growth_second_half_pct"] < 5
    done = result["applied"] >= result["events"]
    return 0 if done and flat and result["lag_max_second_half"] <= result["lag_bound"] else 1
