"""A real Prometheus scrapes real workers: every dashboard panel and alert rule runs against it.

Prometheus is Debian's package (scripts/setup installs it). The scrape job and
rule file are deploy/'s own; only the targets (the test's workers) and the
intervals (1 s) differ from deploy/prometheus/prometheus.yml.
"""
from __future__ import annotations

import asyncio
import io
import json
import pathlib
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from typing import Any, Iterator

import orjson
import pytest

from riskmon.models.portfolio import PORTFOLIO_BY_DEFAULT
from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker, free_port
from riskmon.streams.produce import produce
from riskmon.streams.replay import replay

from .conftest import ROOT, Cluster, replay_decisions, write_log

DEPLOY = ROOT / "deploy"
# What Grafana puts in for its macros when the test runs a panel's query.
MACROS = {"$__rate_interval": "30s", "$__range": "10m", "$__interval": "5s"}


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL) for every target of every panel."""
    out = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for macro, value in MACROS.items():
                    expr = expr.replace(macro, value)
                out.append((path.stem, panel["title"], expr))
    return out


def alert_rules() -> list[tuple[str, str]]:
    import yaml  # pyyaml comes with the test extra

    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


class Prometheus:
    def __init__(self, tmp: pathlib.Path, targets: list[str]) -> None:
        exe = shutil.which("prometheus")
        if exe is None:
            pytest.fail("Debian's prometheus package is not installed: run scripts/setup (apt-get install prometheus)")
        config = tmp / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": "riskmon", "metrics_path": "/metrics",
                                "static_configs": [{"targets": targets}]}],
        }))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = open(tmp / "prometheus.log", "wb")
        self.proc = subprocess.Popen([exe, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                                      f"--web.listen-address={self.url.removeprefix('http://')}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise AssertionError(f"Prometheus did not start:\n{(tmp / 'prometheus.log').read_text()[-2000:]}")
                time.sleep(0.2)

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # a bad query is a 400 with an error body
            return json.loads(e.read())

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = self.api("query", query=expr)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return body["data"]["result"]  # type: ignore[no-any-return]

    def value(self, expr: str) -> float:
        result = self.query(expr)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)
        self.log.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


@pytest.fixture(scope="module")
def observed(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two workers fed a simulated portfolio with a few bad records and a candidate policy in shadow from its start,
    scraped by Prometheus every second."""
    tmp = tmp_path_factory.mktemp("observe")
    cluster = Cluster(broker, tmp)
    prom = None
    try:
        for slot in (0, 1):
            cluster.start_worker(slot)
        # Both workers hold partitions before any event flows, so no round is redone by a rebalance
        # and every counter below is exact.
        deadline = time.monotonic() + 90
        while True:
            try:
                owned = [next(float(line.split()[-1]) for line in scrape(p).splitlines()
                              if line.startswith("riskmon_partitions_owned ")) for p in cluster.web_ports]
            except (OSError, StopIteration):
                owned = []
            if len(owned) == 2 and sum(owned) == 4 and min(owned) > 0:
                break
            assert time.monotonic() < deadline, f"workers never shared the partitions: {owned}\n{cluster.logs()}"
            time.sleep(0.5)
        prom = Prometheus(tmp, [f"127.0.0.1:{p}" for p in cluster.web_ports])
        events, _ = simulate(300, 120, seed=7)
        install = {"type": "policy_update", "event_id": "shadow-1", "ts": events[0]["ts"], "shadow": "install",
                   "policy_version": "candidate", "thresholds": {"utilisation.watch": 0.5, "utilisation.watch_exit": 0.4, "dpd.close": 91}}
        log = write_log(tmp / "ev.jsonl", [install, *events])
        bad = [b"{not json", b'{"type":"payment","event_id":"b1","account_id":"A0000001","ts":"2025-01-05T00:00:00Z",'
                              b'"amount":-5,"currency":"CNY","channel":"app"}']
        with open(log, "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        expected = replay_decisions(log)
        shadow = io.BytesIO()
        replay(log, io.BytesIO(), partitions=cluster.settings.partitions, shadow_out=shadow)
        shadow_expected = shadow.getvalue().splitlines()
        summary = asyncio.run(produce(log, cluster.settings, cluster.bootstrap, include_bad=True, rate=3000))
        got, repeated = cluster.decisions(len(expected), timeout_s=180)
        assert len(got) == len(expected) and repeated == 0, cluster.logs()
        shadow_got = cluster.read(cluster.settings.topic_shadow_decisions, lambda rs: len(rs) >= len(shadow_expected), 60)
        time.sleep(4)  # a few scrapes after the last decision
        yield {"prom": prom, "events": len(events), "decisions": expected, "bad": len(bad), "summary": summary,
               "partitions": cluster.settings.partitions, "shadow": (shadow_expected, [r.value for r in shadow_got]),
               "live": got,
               "accounts": len({e["account_id"] for e in events if e["type"] == "account_opened"})}
    finally:
        if prom is not None:
            prom.stop()
        cluster.stop()


@pytest.mark.parametrize("board,title,expr", panel_queries(), ids=lambda v: v if len(v) < 40 else None)
def test_every_dashboard_panel_query_parses_and_returns_data(observed: dict[str, Any], board: str, title: str, expr: str) -> None:
    result = observed["prom"].query(expr)
    assert result, f"{board} / {title}: no data for {expr}"


def test_a_candidate_in_shadow_decides_in_the_stream_as_in_replay_and_acts_on_nobody(observed: dict[str, Any]) -> None:
    shadow_expected, shadow_got = observed["shadow"]
    assert sorted(shadow_got) == sorted(shadow_expected)
    assert {orjson.loads(d)["policy_version"] for d in shadow_got} == {"candidate"}
    assert sorted(observed["live"]) == sorted(observed["decisions"])  # and the live decisions are replay's


@pytest.mark.parametrize("name,expr", alert_rules())
def test_every_alert_expression_parses(observed: dict[str, Any], name: str, expr: str) -> None:
    observed["prom"].query(expr)  # asserts status success


def test_rules_load_and_evaluate_cleanly_and_none_fires_on_a_healthy_run(observed: dict[str, Any]) -> None:
    groups = observed["prom"].api("rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules} == {n for n, _ in alert_rules()}
    for r in rules:
        assert r["health"] == "ok" and not r.get("lastError"), r
        assert r["annotations"].get("runbook"), f"{r['name']} has no runbook line"
    state = {r["name"]: r["state"] for r in rules}
    # The run replays four months of a portfolio in seconds of wall time, with no day before it: its
    # closures all land inside the mass-closure rule's 10 minutes, which must then fire exactly when
    # they are more than its 20 (as a real burst would). And a portfolio opened all at once, ageing four
    # months, truly shifts: its score's PSI against the statements the model learned from (each a month
    # and more older, learned at the end of its performance window) passes 0.25 on some partition, and
    # the shift alert is then pending, never firing (it waits an hour). And with one model for the
    # portfolio (the default) a partition applies a day's events only once the trainer has published the
    # version in force that day: months of event time in seconds wait for one trainer round trip a day, so
    # the p99 from arrival to decision may pass the slow-processing rule's second, and that rule may then be
    # pending, never firing (it waits 10 minutes; a live feed's day is published a day before it is needed).
    # Nothing else may be active.
    closures = sum(orjson.loads(d)["action"] == "closure" for d in observed["decisions"])
    shifted = observed["prom"].value('max(riskmon_psi{feature="score"})') > 0.25
    expected = ({"RiskmonMassClosure"} if closures > 20 else set()) | ({"RiskmonPopulationShift"} if shifted else set())
    active = {n for n, s in state.items() if s != "inactive"}
    if PORTFOLIO_BY_DEFAULT:
        active.discard("RiskmonProcessingSlow")
    assert active == expected, (state, closures, shifted)
    assert state["RiskmonPopulationShift"] != "firing" and state["RiskmonProcessingSlow"] != "firing"


def test_the_metrics_prometheus_holds_match_what_the_workers_did(observed: dict[str, Any]) -> None:
    prom = observed["prom"]
    assert prom.value('sum(up{job="riskmon"})') == 2
    # (every partition applies the control topic's one record, the candidate in shadow)
    assert prom.value('sum(riskmon_events_total{result="accepted"})') == observed["events"] + observed["partitions"]
    assert prom.value("sum(riskmon_deadletters_total)") == observed["bad"]
    assert prom.value('sum(riskmon_deadletters_total{reason="malformed_json"})') == 1
    assert prom.value("sum(riskmon_decisions_total)") == len(observed["decisions"])
    for action in ("warning", "limit_reduction", "freeze", "closure", "reopen"):
        want = sum(1 for d in observed["decisions"] if orjson.loads(d)["action"] == action)
        assert prom.value(f'sum(riskmon_decisions_total{{action="{action}"}})') == want, action
    assert prom.value("sum(riskmon_accounts)") == observed["accounts"]
    assert prom.value("sum(riskmon_consumer_lag)") == 0
    assert prom.value("sum(riskmon_score_count)") == observed["events"]
    shadow_expected, shadow_got = observed["shadow"]
    assert prom.value("sum(riskmon_shadow_decisions_total)") == len(shadow_expected) > 0
    assert prom.value("sum(riskmon_shadow_accounts)") == observed["accounts"]
    live_end = {d["account_id"]: d["new_state"] for d in map(orjson.loads, observed["decisions"])}
    shadow_end = {d["account_id"]: d["new_state"] for d in map(orjson.loads, shadow_expected)}  # (in replay's order)
    differ = sum(live_end.get(a, "normal") != shadow_end.get(a, "normal") for a in live_end.keys() | shadow_end.keys())
    assert prom.value("sum(riskmon_shadow_differs)") == differ > 0
    # Faust's own sensors are on the same endpoint.
    assert prom.value('count(riskmon_faust_topic_partition_end_offset)') > 0
    assert prom.value("sum(riskmon_faust_consumer_commit_latency_count)") > 0
