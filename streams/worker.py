"""Run a worker, and `riskmon run`: the embedded broker, a worker, a feed and a tail in one command."""
from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING

from .broker import EmbeddedBroker, free_port, stop_process
from .render import counted
from .settings import Settings
from .topics import create_topics

if TYPE_CHECKING:
    import faust

__all__ = ["run_worker", "run_all"]


def run_worker(settings: Settings, loglevel: str = "warn") -> None:
    """Run one worker until stopped (SIGTERM or Ctrl-C). Needs RISKMON_BROKER_URL."""
    from .app import build_app

    if not settings.broker_url:
        raise ValueError("RISKMON_BROKER_URL is not set: point it at Kafka, or use `riskmon run` for the embedded broker")
    check_web_port(settings)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(create_topics(settings, settings.broker_url))
    app, _ = build_app(settings, settings.broker_url)
    faust_worker(app, loop, loglevel).execute_from_commandline()


# A worker told to stop (SIGTERM, Ctrl-C) is gone within this, whatever it is waiting for.
STOP_DEADLINE_S = 8.0


def _overrun() -> None:
    """The stop took too long: end the process with kill -9. Nothing is lost: records are acked only once
    the snapshot that applied them is confirmed, so whatever was in flight is redone by the next owner."""
    print(f"riskmon worker: still stopping after {STOP_DEADLINE_S:g} s; exiting now (records not acked are redone "
          "by the partition's next owner)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def faust_worker(app: faust.App, loop: asyncio.AbstractEventLoop, loglevel: str) -> faust.Worker:
    """Faust's worker for ``app``, logging at ``loglevel`` and no lower (without Faust's startup
    spinner, which sets the root logger to DEBUG: see faust_internals.quiet_worker), and gone within
    STOP_DEADLINE_S of a signal to stop."""
    import faust

    from . import faust_internals

    worker = faust.Worker(app, loop=loop, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    return faust_internals.bound_stop(faust_internals.quiet_worker(worker), STOP_DEADLINE_S, _overrun)


def start_worker_process(settings: Settings, log: IO[bytes] | None = None, loglevel: str = "warn") -> subprocess.Popen[bytes]:
    """`riskmon worker` as a child process with exactly ``settings`` (all of them, through its environment)."""
    env = dict(os.environ) | settings.to_env()
    if log is not None:
        env["PYTHONUNBUFFERED"] = "1"  # a worker killed with -9 keeps its last lines in the file
    # Its own session: a Ctrl-C at the terminal reaches `riskmon run`, which stops the worker in order.
    return subprocess.Popen([sys.executable, "-m", "riskmon.streams.cli", "worker", "--loglevel", loglevel], env=env,
                            start_new_session=True, stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log else None)


def check_web_port(settings: Settings) -> None:
    """Refuse to start, in one line, when the web and /metrics port is taken (Faust would print a traceback)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            raise ValueError(f"the web and /metrics port {settings.web_host}:{settings.web_port} is taken "
                             f"({exc.strerror}; another worker?): set RISKMON_WEB_PORT to a free port") from None


def riskmon_command() -> str:
    """How to call `riskmon` from another shell: the name if the PATH finds this one, else its path."""
    here = Path(sys.executable).parent / "riskmon"
    found = shutil.which("riskmon")
    if found is not None and here.exists() and Path(found).resolve() == here.resolve():
        return "riskmon"
    if here.exists():
        near = os.path.relpath(here)  # .venv/bin/riskmon from the checkout
        return shlex.quote(str(here) if near.startswith("..") else near)
    return f"{shlex.quote(sys.executable)} -m riskmon.streams.cli"


def run_all(settings: Settings, events: Path | None, accounts: int, days: int, seed: int, rate: float | None,
            idle_s: float | None, out: IO[str], prefix: str = "A") -> int:
    """The embedded default: broker (unless RISKMON_BROKER_URL is set), topics, worker, feed, tail."""
    from riskmon.models.simulate import simulate

    from .produce import produce
    from .tail import follow_deadletters, tail

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Ctrl-C and a process manager's SIGTERM both stop everything in order.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    broker: EmbeddedBroker | None = None
    if settings.broker_url:
        bootstrap, kind = settings.broker_url, settings.broker_kind
    else:
        broker = EmbeddedBroker().start()
        bootstrap, kind = broker.url, "tansu"
        settings = settings.model_copy(update={"broker_url": bootstrap, "broker_kind": kind})
        print(f"riskmon: embedded broker (Tansu) on {bootstrap}; to follow decisions from another shell:\n"
              f"  RISKMON_BROKER_URL={bootstrap} {riskmon_command()} tail\n"
              f"  (other clients: aiokafka, or librdkafka 2.1+ such as confluent-kafka; Debian 12's kcat cannot "
              f"talk to it: see the README)", file=sys.stderr)
    if "RISKMON_WEB_PORT" not in os.environ:  # a second `riskmon run` beside the first takes another port
        settings = settings.model_copy(update={"web_port": free_port()})
    worker = None
    try:
        check_web_port(settings)
        asyncio.run(create_topics(settings, bootstrap))
        if events is None:
            tmp = Path(tempfile.mkdtemp(prefix="riskmon-")) / "events.jsonl"
            evs, _ = simulate(accounts, days, seed, prefix=prefix)
            import orjson

            tmp.write_bytes(b"".join(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) + b"\n" for e in evs))
            events = tmp
            print(f"riskmon: simulated {len(evs)} events for {accounts} accounts over {days} days", file=sys.stderr)
        worker = start_worker_process(settings)
        print(f"riskmon: worker started (web and metrics on http://{settings.web_host}:{settings.web_port}/); "
              "decisions follow. Ctrl-C to stop.", file=sys.stderr)

        async def feed_and_tail() -> dict[str, int]:
            # The worker's start and its group join come before the first decision: not idleness.
            tail_task = asyncio.create_task(tail(settings, bootstrap, out, idle_s=idle_s,
                                                 first_idle_s=None if idle_s is None else max(idle_s, 60.0)))
            letters = asyncio.create_task(follow_deadletters(settings, bootstrap, sys.stderr))

            async def watch() -> None:
                while worker.poll() is None:
                    await asyncio.sleep(0.5)
                raise RuntimeError(f"the worker exited with code {worker.returncode}; see its output above")

            watchdog = asyncio.create_task(watch())
            summary = await produce(events, settings, bootstrap, rate=rate)  # type: ignore[arg-type]
            bad = sum(summary.skipped.values())
            print(f"riskmon: produced {counted(summary.sent, 'event')}"
                  + (f"; {counted(bad, 'line')} refused ({', '.join(f'{k} {v}' for k, v in sorted(summary.skipped.items()))})"
                     if bad else ""), file=sys.stderr)
            done, _ = await asyncio.wait({tail_task, watchdog}, return_when=asyncio.FIRST_COMPLETED)
            watchdog.cancel()
            letters.cancel()
            if tail_task not in done:
                tail_task.cancel()
            return await next(iter(done))  # type: ignore[no-any-return]

        t0 = time.monotonic()
        counts = asyncio.run(feed_and_tail())
        print(f"riskmon: {counted(counts['decisions'], 'decision')} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        print("\nriskmon: stopping", file=sys.stderr)
        return 0
    except RuntimeError as exc:
        print(f"riskmon: {exc}", file=sys.stderr)
        return 1
    finally:
        if worker is not None:
            stop_process(worker)
        if broker is not None:
            broker.stop()
