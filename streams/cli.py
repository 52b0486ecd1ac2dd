"""The ``riskmon`` command line."""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Sequence

import orjson
from pydantic import ValidationError

from riskmon.models.errors import Rejected
from riskmon.models.policy import Policy, load_policy
from riskmon.models.events import MODEL_COMMANDS
from riskmon.models.vocabulary import GUARDABLE, LEARNERS, STATUSES
from riskmon.streams.render import counted

if TYPE_CHECKING:
    from riskmon.models.featurespec import FeatureSpec
    from riskmon.models.risk_model import RiskModel
    from riskmon.streams.settings import Settings

__all__ = ["main"]



def _positive_int(text: str) -> int:
    """An argument that counts something: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    """An argument that measures something (seconds, events per second): a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def _check_log(path: str | Path, sample: int = 200) -> None:
    """Refuse at once, in one line, a log that is missing, compressed, or whose first lines all fail to decode."""
    from riskmon.models.codec import decode

    p = Path(path)
    if not p.exists():
        raise ValueError(f"no event log at {p}")
    if not p.is_file():  # a pipe (/dev/stdin) can be read only once: the replay itself judges it
        return
    with open(p, "rb") as f:
        head = f.read(2)
        if head == b"\x1f\x8b":
            raise ValueError(f"{p} is gzip-compressed: gunzip it first (riskmon reads JSONL, one event per line)")
        f.seek(0)
        first: Rejected | None = None
        for n, line in enumerate(f, 1):
            if n > sample:
                break
            if not line.strip():
                continue
            try:
                decode(line.rstrip(b"\r\n"))
                return
            except Rejected as r:
                first = first or r
        if first is not None:
            raise ValueError(f"{p}: not one event in its first {counted(min(n, sample), 'line')} (the first refused: "
                             f"{first}); riskmon reads JSONL, one event per line (see models/schemas/)")


def _writable(path: str | None, what: str) -> None:
    """Refuse before the work an output file that cannot be written (a missing folder)."""
    if path and not Path(path).resolve().parent.is_dir():
        raise ValueError(f"{what} {path}: no folder {Path(path).resolve().parent}")


class _LimitedReport:
    """Writes the first ``limit`` rejection lines to a stream, counts the rest."""

    def __init__(self, stream: IO[str], limit: int, full: IO[str] | None) -> None:
        self.stream, self.limit, self.full, self.seen = stream, limit, full, 0

    def write(self, text: str) -> None:
        self.seen += 1
        if self.full is not None:
            self.full.write(text)
        if self.seen <= self.limit:
            self.stream.write(text)
        elif self.seen == self.limit + 1:
            self.stream.write("... more rejected lines are counted in the summary (see --rejects)\n")


class _TextOut(io.RawIOBase):
    """Turns decision JSON lines into readable lines on the way out."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw

    def write(self, b: bytes) -> int:  # type: ignore[override]
        from riskmon.streams.render import decision_line

        for line in bytes(b).splitlines():
            self.raw.write(decision_line(orjson.loads(line)).encode() + b"\n")
        return len(b)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:
        self.raw.close()


def _cmd_simulate(args: argparse.Namespace) -> int:
    from riskmon.models.simulate import simulate
    from riskmon.streams.progress import Progress

    bar = Progress("simulate", args.days, "days")
    events, truth = simulate(args.accounts, args.days, args.seed, args.start, args.prefix, on_day=bar.update)
    bar.finish()
    truth_path = args.truth or (f"{Path(args.out).with_suffix('')}.truth.jsonl" if args.out else None)
    out = open(args.out, "wb") if args.out else sys.stdout.buffer
    try:
        for e in events:
            out.write(orjson.dumps(e, option=orjson.OPT_SORT_KEYS) + b"\n")
    finally:
        if args.out:
            out.close()
    if truth_path:
        with open(truth_path, "wb") as f:
            for t in truth:
                f.write(orjson.dumps(t, option=orjson.OPT_SORT_KEYS) + b"\n")
    print(
        f"simulated {len(events)} events for {args.accounts} accounts over {args.days} days (seed {args.seed})"
        + (f"; truth in {truth_path}" if truth_path else "; no truth file (give --truth)"),
        file=sys.stderr,
    )
    return 0


def _judging_args(p: argparse.ArgumentParser, many_policies: bool = False) -> None:
    """What replaying a log through the core takes, the same for every command that does
    (``many_policies``: --policy may be given again, once per policy)."""
    p.add_argument("--partitions", type=_positive_int,
                   help="shards, as the input topic's partitions (default: $RISKMON_PARTITIONS or 4)")
    if many_policies:
        p.add_argument("--policy", action="append",
                       help="a policy TOML; repeat for each (default: $RISKMON_POLICY_FILE, or the shipped policy)")
    else:
        p.add_argument("--policy", help="policy TOML (default: $RISKMON_POLICY_FILE, or the shipped policy)")
    p.add_argument("--features", help="feature specification TOML (default: $RISKMON_FEATURES_FILE, or the shipped "
                                      "one, models/data/default_features.toml)")
    p.add_argument("--model", help="start the portfolio's model (or, with a model per partition, every partition's) "
                                   "from this model file (`riskmon train`; default: "
                                   "$RISKMON_MODEL_FILE, or the expert scorecard handing over as outcomes are learned)")
    p.add_argument("--learner", choices=LEARNERS, help="the learned model when no model file is named (default: "
                                                       "$RISKMON_LEARNER or logistic)")
    p.add_argument("--model-scope", choices=("portfolio", "partition"),
                   help="one model for the portfolio, or one per partition, as the worker's RISKMON_MODEL_SCOPE "
                        "(default: $RISKMON_MODEL_SCOPE or portfolio)")


def _judging(args: argparse.Namespace) -> tuple[Policy | None, FeatureSpec | None]:
    """The policy and feature specification ``--policy`` and ``--features`` name (None: the shipped ones)."""
    policy_file = args.policy or _settings().policy_file
    return load_policy(policy_file) if policy_file else None, _spec(args)


def _spec(args: argparse.Namespace) -> FeatureSpec | None:
    """The feature specification ``--features`` or RISKMON_FEATURES_FILE names (None: the shipped one)."""
    from riskmon.models.features import load_spec

    features_file = args.features or _settings().features_file
    return load_spec(features_file) if features_file else None


def _model(args: argparse.Namespace, spec: FeatureSpec | None) -> tuple[RiskModel | None, str]:
    """The model ``--model`` or RISKMON_MODEL_FILE names and its version, checked against the features in force
    ((None, "") without one: the cold start)."""
    from riskmon.models.features import default_spec
    from riskmon.models.model_file import load_model
    from riskmon.models.risk_model import RiskModel

    path = getattr(args, "model", None) or _settings().model_file
    learner = getattr(args, "learner", None)
    if not path:
        learner = learner or _settings().learner
        return (None, "") if learner == "logistic" else (RiskModel(learner=learner), "")
    model, info = load_model(path, (spec or default_spec()).names)
    if learner is not None and learner != model.learner:
        raise ValueError(f"--learner {learner}, but the model file {path} holds a {model.learner} model: give one or the other")
    print(f"riskmon: starting from {info.line()}", file=sys.stderr)
    return model, info.version


def _partitions(args: argparse.Namespace) -> int:
    return args.partitions if args.partitions is not None else _settings().partitions


def _portfolio(args: argparse.Namespace) -> bool:
    """One model for the portfolio (``--model-scope``, or RISKMON_MODEL_SCOPE), as the worker runs it."""
    return (getattr(args, "model_scope", None) or _settings().model_scope) == "portfolio"


def _cmd_replay(args: argparse.Namespace) -> int:
    from riskmon.streams.replay import load_truth, replay

    _check_log(args.events)
    _writable(args.report, "--report")
    _writable(args.shadow_out, "--shadow-out")
    policy, spec = _judging(args)
    model, model_base = _model(args, spec)
    truth = load_truth(args.truth) if args.truth else None
    full = open(args.rejects, "w") if args.rejects else None
    report = _LimitedReport(sys.stderr, 20, full)
    out: IO[bytes] = open(args.out, "wb") if args.out else sys.stdout.buffer
    if args.text:
        out = _TextOut(out)
    shadow_out = open(args.shadow_out, "wb") if args.shadow_out else None
    collector = None
    if args.report:
        from riskmon.streams.tools.report import ReportCollector

        collector = ReportCollector()
    try:
        summary = replay(
            args.events, out, partitions=_partitions(args), policy=policy, truth=truth, report=report,  # type: ignore[arg-type]
            progress=sys.stderr.isatty() and not args.quiet, checkpoint_every=args.checkpoint_every, bad_dpd=args.bad_dpd,
            collector=collector, spec=spec, model=model, model_base=model_base, portfolio=_portfolio(args),
            shadow_out=shadow_out,
        )
    finally:
        if shadow_out is not None:
            shadow_out.close()
        if args.out:
            out.close()
        else:
            out.flush()
        if full is not None:
            full.close()
    print(f"replay: {summary.line()}", file=sys.stderr)
    if collector is not None:
        from riskmon.streams.tools.report import render_html

        Path(args.report).write_text(render_html(collector, summary, Path(args.events).name, policy), encoding="utf-8")
        print(f"replay: report in {args.report}", file=sys.stderr)
    if summary.evaluation is not None:
        for line in summary.evaluation.lines():
            print(f"truth: {line}", file=sys.stderr)
    if summary.events and sum(summary.rejected.values()) == summary.events:
        print(f"riskmon: every line of {args.events} was rejected", file=sys.stderr)
        return 1
    return 0


def _settings() -> "Settings":
    from riskmon.streams.settings import Settings

    return Settings()


def _cmd_worker(args: argparse.Namespace) -> int:
    from riskmon.streams.worker import run_worker

    run_worker(_settings(), loglevel=args.loglevel)
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from riskmon.models.features import load_spec
    from riskmon.streams.worker import run_all

    # Everything that can be checked is checked before a broker or a worker starts.
    if args.events:
        _check_log(args.events)
    settings = _settings()
    if settings.policy_file:
        load_policy(settings.policy_file)
    spec = load_spec(settings.features_file) if settings.features_file else None
    if settings.model_file:
        _model(args, spec)
    return run_all(settings, Path(args.events) if args.events else None, args.accounts, args.days, args.seed,
                   args.rate, args.idle, sys.stdout, prefix=args.prefix)


def _bootstrap(settings: "Settings") -> str:
    if not settings.broker_url:
        raise ValueError("RISKMON_BROKER_URL is not set (the embedded broker lives only as long as `riskmon run`, "
                         "or `riskmon broker`)")
    return settings.broker_url


def _cmd_broker(args: argparse.Namespace) -> int:
    import signal as signals
    import time

    from riskmon.streams.broker import BrokerError, EmbeddedBroker
    from riskmon.streams.gate import read_users

    if (args.cert is None) != (args.key is None):
        raise ValueError("--cert and --key go together")
    for flag, path in (("--cert", args.cert), ("--key", args.key), ("--users", args.users)):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{flag} {path}: no such file")
    if args.users:
        read_users(Path(args.users))  # a bad file is refused here, before anything starts

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signals.signal(signals.SIGTERM, stop)
    broker = EmbeddedBroker(port=args.port, log=sys.stderr.buffer, cert=Path(args.cert) if args.cert else None,
                            key=Path(args.key) if args.key else None, users=Path(args.users) if args.users else None)
    try:
        broker.start()
    except BrokerError as exc:
        print(f"riskmon: {exc}", file=sys.stderr)
        return 1
    env = f"RISKMON_BROKER_URL={broker.url} RISKMON_SECURITY_PROTOCOL={broker.security_protocol}"
    if args.users:
        env += " RISKMON_SASL_MECHANISM=SCRAM-SHA-512 RISKMON_SASL_USERNAME=... RISKMON_SASL_PASSWORD=..."
    if args.cert:
        env += " RISKMON_SSL_CAFILE=<the CA that signed the certificate>"
    print(f"riskmon: broker ready on {broker.url} ({broker.security_protocol}); clients take\n  {env}\n"
          "Ctrl-C stops it, and its records with it (memory storage).", file=sys.stderr, flush=True)
    try:
        while broker.proc is not None and broker.proc.poll() is None and (broker.gate is None or broker.gate.poll() is None):
            time.sleep(0.5)
        print("riskmon: the broker exited; see its output above", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        broker.stop()


def _cmd_topics(args: argparse.Namespace) -> int:
    import asyncio

    from riskmon.streams.topics import create_topics

    settings = _settings()
    bootstrap = _bootstrap(settings)
    created = asyncio.run(create_topics(settings, bootstrap))
    print(f"topics on {bootstrap}: {len(created)} created, {len(settings.all_topics) - len(created)} already there "
          f"({settings.partitions} partitions, replication {settings.replication_factor})", file=sys.stderr)
    return 0


def _send_and_wait(settings: "Settings", event: dict[str, Any], wait_s: float) -> list[dict[str, Any]]:
    """Publish one event (to the topic its type travels on); print, and return, the decisions it causes
    within ``wait_s``. A bad field is refused before anything is sent, with its reason."""
    import asyncio
    import tempfile

    from riskmon.models.codec import decode, dumps
    from riskmon.streams.produce import produce
    from riskmon.streams.render import decision_line
    from riskmon.streams.tail import settled_by

    decode(dumps(event))
    bootstrap = _bootstrap(settings)

    async def send() -> list[dict[str, Any]]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "event.jsonl"
            path.write_bytes(dumps(event) + b"\n")
            return await settled_by(settings, bootstrap, event["event_id"], wait_s, produce(path, settings, bootstrap))

    settled = asyncio.run(send())
    for d in settled:
        print(decision_line(d))
    return settled


def _event_id(text: str) -> str:
    """A default event id from ``text``: the characters an id may hold, at most 64 of them."""
    import re

    return re.sub(r"[^A-Za-z0-9._:\-]", "-", text)[:64]


def _cmd_breaker(args: argparse.Namespace) -> int:
    """Send a breaker_command to the control topic (every worker applies it in every partition it holds)."""
    import time

    from riskmon.models.codec import format_ts

    settings = _settings()
    now = int(time.time() * 1000)
    event = {"type": "breaker_command", "event_id": args.event_id or f"breaker-{args.command}-{args.action}-{now}",
             "ts": args.at or format_ts(now), "command": args.command, "action": args.action, "note": args.note}
    settled = _send_and_wait(settings, event, args.wait)
    print(f"breaker: {args.command} {args.action} sent to {settings.input_topics['control']}, which every "
          f"worker reads, as {event['event_id']} at {event['ts']}", file=sys.stderr)
    print(f"breaker: {len(settled)} held move{'' if len(settled) == 1 else 's'} "
          f"{'released' if args.command == 'release' else 'dropped'} within {args.wait:g} s"
          + ("" if settled else " (nothing was held, or no worker is running)"), file=sys.stderr)
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    """Send a model_command to the control topic: start a challenger in shadow, promote it, or drop it."""
    import time

    from riskmon.models.codec import format_ts

    if (args.command == "challenge") != (args.learner is not None):
        raise ValueError("a challenge names its --learner; promote and drop take none")
    settings = _settings()
    now = int(time.time() * 1000)
    event: dict[str, Any] = {"type": "model_command", "event_id": args.event_id or f"model-{args.command}-{now}",
                             "ts": args.at or format_ts(now), "command": args.command, "note": args.note}
    if args.learner is not None:
        event["learner"] = args.learner
    _send_and_wait(settings, event, 0.0)
    what = {"challenge": f"a {args.learner} challenger starts learning and scoring in shadow",
            "promote": "the challenger is put in force (a new model version)",
            "drop": "the challenger is dropped"}[args.command]
    print(f"model: {args.command} sent to {settings.input_topics['control']}, which every worker reads, as "
          f"{event['event_id']} at {event['ts']}: {what} in every partition", file=sys.stderr)
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    """Send a reviewer's decision on one account (a review event, on the lifecycle topic keyed by the account)."""
    import getpass
    import time

    from riskmon.models.codec import format_ts

    settings = _settings()
    now = int(time.time() * 1000)
    outcome = "reinstate" if args.reinstate else "confirm" if args.confirm else "hold"
    event: dict[str, Any] = {"type": "review", "event_id": args.event_id or _event_id(f"review-{now}-{args.account}"),
                             "account_id": args.account, "ts": args.at or format_ts(now), "outcome": outcome,
                             "reviewer": args.reviewer or getpass.getuser(), "note": args.note}
    if args.hold:
        event["state"] = args.hold
    decisions = _send_and_wait(settings, event, args.wait)
    print(f"review: {outcome} of {args.account} sent as {event['event_id']} at {event['ts']}; "
          f"{len(decisions)} decision{'' if len(decisions) == 1 else 's'} within {args.wait:g} s"
          + ("" if decisions else " (the account is unknown, or no worker is running)"), file=sys.stderr)
    return 0


def _cmd_produce(args: argparse.Namespace) -> int:
    import asyncio

    from riskmon.streams.produce import produce
    from riskmon.streams.progress import Progress
    from riskmon.streams.topics import create_topics

    settings = _settings()
    bootstrap = _bootstrap(settings)
    if not args.include_bad:
        _check_log(args.events)
    asyncio.run(create_topics(settings, bootstrap))
    bar = Progress("produce", None, "events sent")
    summary = asyncio.run(produce(args.events, settings, bootstrap, report=_LimitedReport(sys.stderr, 20, None),
                                  include_bad=args.include_bad, rate=args.rate, on_sent=bar.update))
    bar.finish()
    skipped = sum(summary.skipped.values())
    print(f"produced {summary.sent} events as {summary.records} records; {skipped} bad lines "
          f"{'sent raw' if args.include_bad else 'skipped'}", file=sys.stderr)
    return 0


def _cmd_tail(args: argparse.Namespace) -> int:
    import asyncio

    from riskmon.streams.tail import tail

    settings = _settings()
    counts = asyncio.run(tail(settings, _bootstrap(settings), sys.stdout, as_json=args.json,
                              from_beginning=not args.latest, max_count=args.max, idle_s=args.idle, group=args.group,
                              shadow=args.shadow))
    skipped = f"; {counted(counts['skipped'], 'record')} that were not decisions" if counts["skipped"] else ""
    print(f"tail: {counted(counts['decisions'], 'decision')} "
          f"({counted(counts['repeats'], 'repeated delivery', 'repeated deliveries')} not shown{skipped})", file=sys.stderr)
    return 0


def _cmd_backtest(args: argparse.Namespace) -> int:
    from riskmon.streams.replay import load_truth
    from riskmon.streams.tools.backtest import backtest, format_backtest, render_backtest_html

    _check_log(args.events)
    _writable(args.html, "--html")
    settings = _settings()
    files = args.policy or ([settings.policy_file] if settings.policy_file else [])
    policies: list[tuple[str, Policy | None]] = [(f"{Path(f).stem} ({p.version})", p)
                                                 for f, p in ((f, load_policy(f)) for f in files)] or [("default", None)]
    names = [n for n, _ in policies]
    if len(set(names)) < len(names):
        raise ValueError(f"--policy names the same file twice: {', '.join(names)}")
    truth = load_truth(args.truth) if args.truth else None
    spec = _spec(args)
    model, model_base = _model(args, spec)
    runs = backtest(args.events, policies, truth, partitions=_partitions(args), spec=spec,
                    progress=sys.stderr.isatty(), model=model, model_base=model_base, portfolio=_portfolio(args))
    print(format_backtest(runs, Path(args.events).name))
    if args.html:
        Path(args.html).write_text(render_backtest_html(runs, Path(args.events).name), encoding="utf-8")
        print(f"backtest: HTML in {args.html}", file=sys.stderr)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.source == "uci":
        from riskmon.streams.tools.evaluate_uci import main_evaluate

        args.learner = args.learner or _settings().learner
        policy, spec = _judging(args)
        return main_evaluate(args, policy, spec, portfolio=_portfolio(args))
    import json

    from riskmon.streams.replay import load_truth
    from riskmon.streams.tools.evaluate import evaluate_log, format_log_evaluation

    if not Path(args.source).is_file():
        raise ValueError(f"no event log at {args.source} (give a JSONL log, or `uci` for the UCI data)")
    _check_log(args.source)
    truth = load_truth(args.truth) if args.truth else None
    policy, spec = _judging(args)
    model, model_base = _model(args, spec)
    r = evaluate_log(args.source, truth, partitions=_partitions(args), policy=policy, spec=spec, folds=args.folds,
                     progress=sys.stderr.isatty(), model=model, model_base=model_base, portfolio=_portfolio(args))
    print(format_log_evaluation(r, Path(args.source).name))
    if args.json:
        Path(args.json).write_text(json.dumps(r.as_dict(), indent=2) + "\n")
    return 0


def _cmd_policy(args: argparse.Namespace) -> int:
    """Preview a policy update on the accounts as they stand (a running deployment, or a replayed log); push it."""
    import asyncio
    import time

    from riskmon.models.codec import format_ts, parse_ts
    from riskmon.models.policy_diff import policy_diff
    from riskmon.streams.policy_push import policy_in_force, push_policy, running_states, update_event

    now = int(time.time() * 1000)
    at = args.at or format_ts(now)
    if args.action in ("shadow", "drop"):  # a candidate in shadow acts on nobody, nor does dropping it
        candidate: Policy | str = load_policy(args.new) if args.action == "shadow" else args.new
        name = candidate if isinstance(candidate, str) else candidate.version
        command = "install" if args.action == "shadow" else "drop"
        event = update_event(candidate, args.event_id or _event_id(f"policy-{command}-{now}-{name}"), at, shadow=command)
        settings = _settings()
        asyncio.run(push_policy(settings, _bootstrap(settings), event))
        what = "judged in shadow, its decisions on " + settings.topic_shadow_decisions if command == "install" else "dropped"
        print(f"policy: {name} {what} from {event['ts']} (sent to {settings.input_topics['control']} as {event['event_id']})",
              file=sys.stderr)
        return 0
    if args.action == "diff" and args.log:
        from riskmon.models.engine import Engine
        from riskmon.streams.replay import ReplaySummary, apply_log

        new = load_policy(args.new)
        _check_log(args.log)
        policy, spec = _judging(args)
        model, model_base = _model(args, spec)
        engine = Engine(_partitions(args), policy, spec=spec, model=model, model_base=model_base,
                        portfolio=_portfolio(args))
        end = 0
        for ev, _ in apply_log(args.log, engine, ReplaySummary()):
            end = ev.ts
        when = parse_ts(args.at, "--at") if args.at else end
        diff = policy_diff(engine.states.values(), engine.monitors[0].policy_at(when), new)
        where = f"the accounts of {args.log} at its end"
    else:
        settings = _settings()
        bootstrap = _bootstrap(settings)

        async def read() -> tuple[list[Any], tuple[Policy, Policy | None]]:
            return await running_states(settings, bootstrap), await policy_in_force(settings, bootstrap, parse_ts(at, "--at"))

        states, (current, in_shadow) = asyncio.run(read())
        if args.action == "promote":  # a promotion is a policy update: previewed, and refused past the breaker
            if in_shadow is None or in_shadow.version != args.new:
                print(f"riskmon: no candidate {args.new!r} in shadow at {at} (in shadow then: "
                      f"{'none' if in_shadow is None else in_shadow.version})", file=sys.stderr)
                return 1
            new = in_shadow
        else:
            new = load_policy(args.new)
        diff = policy_diff(states, current, new)
        where = f"the {len(states)} accounts of the deployment {settings.app_id} on {bootstrap} as they stand"
    print(f"policy: judged on {where}", file=sys.stderr)
    for line in diff.lines():
        print(line)
    if args.action == "diff":
        return 0
    if diff.refused and not args.force:
        print(f"riskmon: policy {new.version} refused: it would close {diff.closures} lines at once, the breaker allows "
              f"{diff.allowed_closures} (more than breaker.max_share of the open accounts); --force sends it anyway",
              file=sys.stderr)
        return 1
    if args.action == "promote":
        event = update_event(new.version, args.event_id or _event_id(f"policy-promote-{now}-{new.version}"), at,
                             shadow="promote")
    else:
        event = update_event(new, args.event_id or _event_id(f"policy-{now}-{new.version}"), at)
    asyncio.run(push_policy(settings, bootstrap, event))
    print(f"policy: {new.version} {'promoted from shadow, ' if args.action == 'promote' else ''}sent to "
          f"{settings.input_topics['control']} as {event['event_id']}, in force from "
          f"{event['ts']}" + (" (forced past the breaker)" if diff.refused else ""), file=sys.stderr)
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from riskmon.streams.tools.train import train

    _check_log(args.events)
    _writable(args.out, "--out")
    policy, spec = _judging(args)
    info, summary = train(args.events, args.out, policy=policy, spec=spec, bad_dpd=args.bad_dpd,
                          progress=sys.stderr.isatty(), learner=args.learner or _settings().learner)
    rejected = sum(summary.rejected.values())
    print(f"train: {summary.events} events ({rejected} rejected); {info.line()}", file=sys.stderr)
    print(f"train: wrote {args.out}; start from it with --model {args.out} or RISKMON_MODEL_FILE={args.out}",
          file=sys.stderr)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from riskmon.streams.tools.bench import run_bench

    run_bench(args.accounts, args.days, args.seed, args.repeats, args.transport_events, args.latency_seconds)
    return 0


def _cmd_chaos(args: argparse.Namespace) -> int:
    from riskmon.streams.tools.chaos import main_chaos

    return main_chaos(args, portfolio=_portfolio(args))


def _cmd_soak(args: argparse.Namespace) -> int:
    from riskmon.streams.tools.soak import main_soak

    return main_soak(args.minutes, args.rate, args.accounts, args.every)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="riskmon", description="Streaming early warning for consumer credit lines.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a synthetic event log (JSONL) with a separate truth file")
    s.add_argument("--accounts", type=_positive_int, default=1000)
    s.add_argument("--days", type=_positive_int, default=90)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--start", default="2025-01-01T00:00:00Z", help="event time of day 0 (RFC 3339)")
    s.add_argument("--prefix", default="A", help="account ids are PREFIX0000000, ...: another prefix for each log "
                                                 "sent to one broker")
    s.add_argument("--out", help="events file (default: stdout)")
    s.add_argument("--truth", help="truth file (default: OUT with .truth.jsonl)")
    s.set_defaults(func=_cmd_simulate)

    r = sub.add_parser("replay", help="run an event log through the core and write decisions")
    r.add_argument("events", help="JSONL event log")
    r.add_argument("--out", help="decisions file (default: stdout)")
    r.add_argument("--shadow-out", help="write what a candidate policy in shadow would decide here (policy_update "
                                        "events with 'shadow' in the log install, promote and drop it)")
    _judging_args(r)
    r.add_argument("--truth", help="truth file from simulate: print how decisions match it (never seen by the core)")
    r.add_argument("--rejects", help="write every rejected line's reason here")
    r.add_argument("--checkpoint-every", type=_positive_int, default=500, help="outcomes learned between model versions")
    r.add_argument("--bad-dpd", type=_positive_int, default=30, help="days past due that make an instalment a bad outcome")
    r.add_argument("--text", action="store_true", help="write one readable line per decision instead of JSON")
    r.add_argument("--report", help="also write a static HTML report (plots of decisions, states, scores, AUC) here")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=_cmd_replay)

    w = sub.add_parser("worker", help="run a stream worker against RISKMON_BROKER_URL (settings: RISKMON_* env)")
    w.add_argument("--loglevel", default="warn", choices=["debug", "info", "warn", "error"])
    w.set_defaults(func=_cmd_worker)

    u = sub.add_parser("run", help="embedded broker + worker + simulated feed, printing decisions (Ctrl-C stops)")
    u.add_argument("--events", help="replay this JSONL log instead of simulating")
    u.add_argument("--accounts", type=_positive_int, default=500)
    u.add_argument("--days", type=_positive_int, default=90)
    u.add_argument("--seed", type=int, default=7)
    u.add_argument("--prefix", default="A", help="account id prefix of the simulated feed (another for a second "
                                                 "feed into the same broker)")
    u.add_argument("--rate", type=_positive_float, help="events per second to feed (default: as fast as possible)")
    u.add_argument("--idle", type=_positive_float, help="stop after this many seconds without a decision (default: never)")
    u.set_defaults(func=_cmd_run)

    bk = sub.add_parser("broker", help="the embedded broker alone, for workers and clients started elsewhere "
                                       "(optionally with TLS and SASL/SCRAM logins)")
    bk.add_argument("--port", type=_positive_int, help="default: a free one")
    bk.add_argument("--cert", help="PEM certificate: clients connect over TLS (with --key)")
    bk.add_argument("--key", help="PEM private key of --cert")
    bk.add_argument("--users", help="file of name:password lines: clients log in with SASL SCRAM-SHA-256 or -512")
    bk.set_defaults(func=_cmd_broker)

    c = sub.add_parser("topics", help="create the monitor's topics on RISKMON_BROKER_URL (idempotent) and exit")
    c.set_defaults(func=_cmd_topics)

    k = sub.add_parser("breaker", help="release or drop the decisions a tripped mass-action breaker holds")
    k.add_argument("command", choices=["release", "drop"])
    k.add_argument("--action", choices=GUARDABLE, default=GUARDABLE[0])
    k.add_argument("--note", default="", help="who and why (kept in the decisions' reasons; at most 128 characters)")
    k.add_argument("--at", help="event time the command takes effect (RFC 3339; default: now)")
    k.add_argument("--event-id", help="default: breaker-COMMAND-ACTION-<ms>; resending one id applies it once")
    k.add_argument("--wait", type=float, default=10.0,
                   help="seconds to wait for the decisions the command settles, printed as they come (default 10)")
    k.set_defaults(func=_cmd_breaker)

    mc = sub.add_parser("model", help="champion and challenger: start a challenger in shadow, promote it, or drop it")
    mc.add_argument("command", choices=MODEL_COMMANDS)
    mc.add_argument("--learner", choices=LEARNERS, help="the challenger's learner (challenge only)")
    mc.add_argument("--note", default="", help="who and why (at most 128 characters)")
    mc.add_argument("--at", help="event time the command takes effect (RFC 3339; default: now)")
    mc.add_argument("--event-id", help="default: model-COMMAND-<ms>; resending one id applies it once")
    mc.set_defaults(func=_cmd_model)

    v = sub.add_parser("review", help="record a reviewer's decision on one account: reinstate, hold at a state, or confirm")
    v.add_argument("account")
    what = v.add_mutually_exclusive_group(required=True)
    what.add_argument("--reinstate", action="store_true", help="back to normal, protected from automatic escalation "
                                                               "for the policy's review.protect_days unless the arrears grow")
    what.add_argument("--hold", choices=STATUSES, help="set at this state, protected likewise")
    what.add_argument("--confirm", action="store_true", help="leave it where it is (a 'reviewed' decision)")
    v.add_argument("--note", required=True, help="why (kept in the decision's reason; at most 128 characters)")
    v.add_argument("--reviewer", help="who (default: the login name)")
    v.add_argument("--at", help="event time it takes effect (RFC 3339; default: now)")
    v.add_argument("--event-id", help="default: review-ACCOUNT-<ms>; resending one id applies it once")
    v.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the decision it causes (default 10)")
    v.set_defaults(func=_cmd_review)

    o = sub.add_parser("produce", help="publish a JSONL event log to the input topics")
    o.add_argument("events")
    o.add_argument("--include-bad", action="store_true", help="send lines the codec refuses too (they will be dead-lettered)")
    o.add_argument("--rate", type=_positive_float, help="events per second (default: as fast as possible)")
    o.set_defaults(func=_cmd_produce)

    e = sub.add_parser("evaluate", help="judge the core on a labelled event log, or on the UCI data (`riskmon evaluate uci`)")
    e.add_argument("source", help="a JSONL event log, or uci: default of credit card clients (Yeh & Lien 2009)")
    e.add_argument("--truth", help="a log's truth file (account_id, defaults, default_ts); without, the log's own outcomes")
    _judging_args(e)
    e.add_argument("--folds", type=_positive_int, default=5, help="cross-validation folds for the offline references")
    e.add_argument("--data", help="path to default_of_credit_card_clients.csv (default: ../shared/data/uci-credit-default/)")
    e.add_argument("--cohorts", type=_positive_int, default=12, help="start months the clients are spread over")
    e.add_argument("--test-cohorts", type=_positive_int, default=4, help="the last cohorts, held out for the offline references")
    e.add_argument("--plots", help="write PNG plots to this folder")
    e.add_argument("--json", help="write the figures as JSON here")
    e.set_defaults(func=_cmd_evaluate)

    t = sub.add_parser("backtest", help="replay a log under each policy and compare what they would have done")
    t.add_argument("events", help="JSONL event log")
    t.add_argument("--truth", help="a truth file (account_id, defaults, default_ts); without, the log's own outcomes")
    _judging_args(t, many_policies=True)
    t.add_argument("--html", help="also write the comparison as an HTML page here")
    t.set_defaults(func=_cmd_backtest)

    y = sub.add_parser("policy", help="preview a policy update on the accounts as they stand, push it to the workers, "
                                      "or judge it in shadow first")
    y.add_argument("action", choices=["diff", "push", "shadow", "promote", "drop"],
                   help="diff: what it would do at once; push: send it (refused if it would close more lines than the "
                        "breaker allows); shadow: judge it beside the live policy, acting on nobody (its decisions on "
                        "PREFIX.shadow-decisions); promote, drop: put the candidate in shadow in force, or discard it")
    y.add_argument("new", help="the new policy TOML (diff, push, shadow), or the candidate's version (promote, drop)")
    y.add_argument("--log", help="diff: judge on the accounts of this log replayed (default: the running deployment's, "
                                 "from RISKMON_BROKER_URL)")
    _judging_args(y)
    y.add_argument("--force", action="store_true", help="push, promote: send it even if the breaker would refuse it")
    y.add_argument("--at", help="event time it takes effect, and the policy in force then is the one compared "
                                "(RFC 3339; default: now)")
    y.add_argument("--event-id", help="push: default policy-VERSION-<ms>; resending one id applies it once")
    y.set_defaults(func=_cmd_policy)

    n = sub.add_parser("train", help="learn a model from a labelled event log, to start workers and replay from")
    n.add_argument("events", help="JSONL event log with statements and their outcomes")
    n.add_argument("--out", required=True, help="the model file to write")
    n.add_argument("--policy", help="policy TOML the log is replayed under (default: $RISKMON_POLICY_FILE, or the shipped policy)")
    n.add_argument("--features", help="feature specification TOML (default: $RISKMON_FEATURES_FILE, or the shipped one)")
    n.add_argument("--bad-dpd", type=_positive_int, default=30, help="days past due that make an instalment a bad outcome")
    n.add_argument("--learner", choices=LEARNERS, help="the model to learn (default: $RISKMON_LEARNER or logistic)")
    n.set_defaults(func=_cmd_train)

    b = sub.add_parser("bench", help="throughput, latency and memory beside the aiokafka and Faust ceilings")
    b.add_argument("--accounts", type=_positive_int, default=50_000)
    b.add_argument("--days", type=_positive_int, default=8)
    b.add_argument("--seed", type=int, default=7)
    b.add_argument("--repeats", type=_positive_int, default=3, help="core runs (the median is reported)")
    b.add_argument("--transport-events", type=_positive_int, default=200_000, help="events for the broker runs")
    b.add_argument("--latency-seconds", type=_positive_float, default=30)
    b.set_defaults(func=_cmd_bench)

    k = sub.add_parser("soak", help="one worker under steady load: is memory flat and lag bounded? (exit 1 if not)")
    k.add_argument("--minutes", type=_positive_float, default=10)
    k.add_argument("--rate", type=_positive_float, default=300, help="events per second fed")
    k.add_argument("--accounts", type=_positive_int, default=2_000)
    k.add_argument("--every", type=_positive_float, default=15, help="seconds between samples")
    k.set_defaults(func=_cmd_soak)

    c = sub.add_parser("chaos", help="workers under a seeded sequence of faults, their decisions against replay's "
                                     "(exit 1 if any is lost, unexpected or changed)")
    c.add_argument("--seeds", default="1", help="a seed or a range (1..20): one run each, faults drawn from it")
    c.add_argument("--faults", type=_positive_int, default=4, help="faults per run (at most, with --vary)")
    c.add_argument("--vary", action="store_true", help="draw each run's number of faults, 1..--faults")
    c.add_argument("--kinds", default="kill,pause", help="fault kinds to draw from: kill, pause, add, remove, broker "
                                                       "(broker keeps Tansu's records in S3 served by moto, which "
                                                       "slows as they grow: keep its feed small, see the README)")
    c.add_argument("--schedule", help="these faults instead of drawn ones: kill@5,pause@9:3,... (seconds after the feed "
                                      "starts[:duration]), or none (the feed alone)")
    c.add_argument("--workers", type=_positive_int, default=2)
    c.add_argument("--accounts", type=_positive_int, default=1_500)
    c.add_argument("--days", type=_positive_int, default=60)
    c.add_argument("--rate", type=float, default=1_500, help="events per second fed (0: the whole log on the broker "
                                                          "before the workers start)")
    c.add_argument("--store", choices=["memory://", "rocksdb://"], default="memory://")
    c.add_argument("--drain", type=_positive_float, default=120, help="seconds the group has to deliver the rest")
    c.add_argument("--model-scope", choices=("portfolio", "partition"),
                   help="the workers' RISKMON_MODEL_SCOPE, and replay's (default: $RISKMON_MODEL_SCOPE or portfolio)")
    c.set_defaults(func=_cmd_chaos)

    t = sub.add_parser("tail", help="print decisions from the decisions topic")
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.add_argument("--latest", action="store_true", help="only decisions from now on")
    t.add_argument("--max", type=_positive_int, help="stop after this many decisions")
    t.add_argument("--idle", type=_positive_float, help="stop after this many seconds without one")
    t.add_argument("--group", help="consumer group (commits its position)")
    t.add_argument("--shadow", action="store_true", help="what a candidate policy in shadow would decide (PREFIX.shadow-decisions)")
    t.set_defaults(func=_cmd_tail)
    return p


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's final flush of a closed pipe raises nothing."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def main(argv: Sequence[str] | None = None) -> int:
    from riskmon.streams.gc_thresholds import tune_gc

    args = build_parser().parse_args(argv)
    tune_gc()
    try:
        return int(args.func(args))
    except Rejected as r:
        print(f"riskmon: {r}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`riskmon replay --text | head`): nothing more to say
        _quiet_stdout()
        return 0
    except ValidationError as exc:
        from riskmon.streams.settings import settings_error

        print(f"riskmon: {settings_error(exc)}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"riskmon: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
