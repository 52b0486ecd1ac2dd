"""Security basics against a real broker: clear errors for SASL and TLS mistakes, secrets never printed."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from riskmon.streams.broker import EmbeddedBroker

pytestmark = pytest.mark.integration

SECRET = "hunter2-s3cret-do-not-print"


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
    return subprocess.run([sys.executable, "-m", "riskmon.streams.cli", *args], env=clean | env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("command", [["topics"], ["worker"], ["tail", "--max", "1"]])
def test_sasl_scram_against_a_broker_without_it_fails_clearly_and_never_prints_the_password(
        broker: EmbeddedBroker, command: list[str]) -> None:
    out = run(command, {"RISKMON_BROKER_URL": broker.url, "RISKMON_SECURITY_PROTOCOL": "SASL_SSL",
                        "RISKMON_SASL_MECHANISM": "SCRAM-SHA-512", "RISKMON_SASL_USERNAME": "riskmon",
                        "RISKMON_SASL_PASSWORD": SECRET})
    text = out.stdout + out.stderr
    assert out.returncode == 2, text
    assert "cannot reach Kafka" in text and "SASL_SSL SCRAM-SHA-512 as 'riskmon'" in text, text
    assert "Traceback" not in text and SECRET not in text


def test_a_bad_tls_certificate_file_fails_clearly(broker: EmbeddedBroker, tmp_path: pathlib.Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    out = run(["topics"], {"RISKMON_BROKER_URL": broker.url, "RISKMON_SECURITY_PROTOCOL": "SSL",
                           "RISKMON_SSL_CAFILE": str(ca)})
    assert out.returncode == 2 and "riskmon:" in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert "certificate" in out.stderr.lower() or "x509" in out.stderr.lower()


def test_sasl_without_its_credentials_is_refused_before_connecting() -> None:
    out = run(["worker"], {"RISKMON_BROKER_URL": "127.0.0.1:9", "RISKMON_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                           "RISKMON_SASL_MECHANISM": "PLAIN", "RISKMON_SASL_PASSWORD": SECRET})
    assert out.returncode == 2 and "RISKMON_SASL_USERNAME" in out.stderr, out.stderr
    assert SECRET not in out.stderr
