"""deploy/ and docker-compose.yml: valid for their tools, and consistent with the worker's settings.

promtool is Debian's prometheus package (scripts/setup installs it). Docker
cannot run here, so docker-compose.yml is validated against the Compose
Specification's JSON schema (as shipped in the docker-compose 1.29.2 wheel,
fetched from PyPI once) and checked against streams/settings.py.
"""
from __future__ import annotations

import copy
import json
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile
from typing import Any

import jsonschema
import pytest
import yaml

from riskmon.streams.settings import Settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: run scripts/setup (apt-get install prometheus)")
    out = subprocess.run([exe, *args], cwd=PROM, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def test_promtool_checks_the_config_and_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in promtool("check", "config", "prometheus-local.yml")
    assert "SUCCESS: 11 rules found" in promtool("check", "rules", "alerts.yml")


def test_alert_rule_unit_tests_pass_including_mass_closure_firing_and_not() -> None:
    text = (PROM / "alerts_test.yml").read_text()
    assert "A bad policy push" in text and "A normal month-end surge" in text
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_has_a_severity_and_a_runbook_line_and_a_unit_test() -> None:
    rules = [r for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    tested = {t["alertname"] for case in yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    for r in rules:
        assert r["labels"]["severity"] in ("page", "ticket"), r["alert"]
        assert len(r["annotations"]["runbook"]) > 40, r["alert"]
        assert r["alert"] in tested, f"{r['alert']} has no unit test that makes it fire"


# -- Grafana -----------------------------------------------------------------

def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}


def test_dashboards_cover_the_three_views_and_use_the_provisioned_datasource() -> None:
    boards = dashboards()
    assert set(boards) == {"portfolio", "model", "operations"}
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    for name, board in boards.items():
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids), name
        for p in board["panels"]:
            assert p["datasource"]["uid"] == source["uid"], (name, p["title"])
            assert p["description"], (name, p["title"])  # what the panel means, shown in Grafana
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"]), (name, p["title"])
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, (name, p["title"])
    titles = {name: " | ".join(p["title"] for p in b["panels"]) for name, b in boards.items()}
    for action in ("Warnings", "Limit reductions", "Freezes", "Closures", "Reopens"):
        assert f"{action} per minute by reason" in titles["portfolio"]
    for words in ("Accounts by state", "Score distribution"):
        assert words in titles["portfolio"]
    for words in ("Rolling AUC", "Drift", "Calibration", "Model version"):
        assert words in titles["model"]
    for words in ("Input records per second", "Processing latency", "Consumer lag per partition", "Dead letters",
                  "Rebalances", "Workers up"):
        assert words in titles["operations"]


def test_no_query_selects_or_groups_by_an_account() -> None:
    exprs = [t["expr"] for b in dashboards().values() for p in b["panels"] for t in p["targets"]]
    exprs += [r["expr"] for g in yaml.safe_load((PROM / "alerts.yml").read_text())["groups"] for r in g["rules"]]
    assert len(exprs) > 30
    for e in exprs:
        assert not re.search(r"\baccount(_id)?\b", e), e


# -- docker-compose ------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def compose_schema(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache = ROOT / ".venv" / "cache" / "compose_spec.json"
    if not cache.is_file():
        where = tmp_path_factory.mktemp("compose")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(where),
                        "docker-compose==1.29.2"], check=True)
        wheel = next(where.glob("docker_compose-1.29.2-*.whl"))
        with zipfile.ZipFile(wheel) as z:
            data = z.read("compose/config/compose_spec.json")
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(data)
    return json.loads(cache.read_text())  # type: ignore[no-any-return]


def test_compose_file_validates_against_the_compose_specification(compose: dict[str, Any], compose_schema: dict[str, Any]) -> None:
    assert compose_schema["title"] == "Compose Specification"
    validator = jsonschema.Draft201909Validator(compose_schema)
    validator.validate(compose)
    broken = copy.deepcopy(compose)
    broken["services"]["worker-1"]["restrat"] = "always"  # the schema is strict enough to catch a typo
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(broken)


def riskmon_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose["services"].items() if s.get("image", "").startswith("riskmon")}


def test_compose_runs_kafka_in_kraft_mode_from_the_official_image(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
    assert not any("ZOOKEEPER" in k for k in env)
    assert "healthcheck" in kafka
    assert compose["services"]["prometheus"]["image"].startswith("prom/prometheus:")
    assert compose["services"]["grafana"]["image"].startswith("grafana/grafana:")


def test_every_riskmon_variable_in_compose_is_a_setting_the_worker_reads_and_valid(compose: dict[str, Any],
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"RISKMON_{n.upper()}" for n in Settings.model_fields}
    services = riskmon_services(compose)
    assert {"topics", "worker-1", "worker-2", "simulator"} <= set(services)
    partitions = set()
    for name, service in services.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        unknown = {k for k in env if k.startswith("RISKMON_")} - fields
        assert not unknown, f"{name}: {unknown} are not settings"
        for k in list(__import__("os").environ):
            if k.startswith("RISKMON_"):
                monkeypatch.delenv(k)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        s = Settings()  # raises if a value is invalid
        partitions.add(s.partitions)
        host, port = s.broker_url.split(":") if s.broker_url else ("", "")
        assert host in compose["services"], f"{name}: broker {host} is not a service"
        kafka_env = compose["services"]["kafka"]["environment"]
        assert f"PLAINTEXT://{host}:{port}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"]
        assert s.broker_kind == "kafka"
    assert len(partitions) == 1, "co-partitioned topics: every service must agree on RISKMON_PARTITIONS"


def test_workers_are_scraped_where_they_listen_and_keep_state_on_their_own_volume(compose: dict[str, Any],
                                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    prom = yaml.safe_load((PROM / "prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "riskmon")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    workers = {n: s for n, s in compose["services"].items() if n.startswith("worker-")}
    assert len(workers) == 2
    declared = set(compose["volumes"])
    mounted: set[str] = set()
    for name, service in workers.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert env["RISKMON_WEB_HOST"] == "0.0.0.0", "Prometheus scrapes from another container"
        assert f"{name}:{env['RISKMON_WEB_PORT']}" in targets
        assert f":{env['RISKMON_WEB_PORT']}/metrics" in " ".join(service["healthcheck"]["test"])
        assert env["RISKMON_STORE"].startswith("rocksdb://")
        vols = dict(v.split(":")[:2][::-1] for v in service["volumes"])  # mount point -> volume
        assert env["RISKMON_DATADIR"] in vols, f"{name}: its datadir is not on a volume"
        mounted.add(vols[env["RISKMON_DATADIR"]])
    assert len(mounted) == 2, "each worker has its own state volume"
    for service in compose["services"].values():
        for v in service.get("volumes", []):
            source = v.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
            else:
                assert source in declared, source
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert "/var/lib/riskmon/data" in dockerfile and "EXPOSE 6066" in dockerfile


def test_prometheus_and_grafana_find_their_files_where_compose_mounts_them(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"]}
    config = next(a.split("=", 1)[1] for a in prom["command"] if a.startswith("--config.file="))
    folder = pathlib.PurePosixPath(config).parent
    assert (ROOT / mounts[str(folder)] / pathlib.PurePosixPath(config).name).is_file()
    rules = yaml.safe_load((PROM / "prometheus.yml").read_text())["rule_files"]
    assert all((PROM / r).is_file() for r in rules)

    grafana = compose["services"]["grafana"]
    gmounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "riskmon.yml").read_text())["providers"][0]
    assert gmounts[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert gmounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy" / "grafana" / "dashboards" / pathlib.PurePosixPath(home).name).is_file()
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    port = prom["ports"][0].split(":")[-1]
    assert source["url"] == f"http://prometheus:{port}"


def test_dockerfile_copies_what_exists_and_installs_from_pyproject() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (\S+(?: \S+)*) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), part
    assert "pip install ." in text
    assert re.search(r"^USER (?!root)", text, re.M), "the worker does not run as root"
