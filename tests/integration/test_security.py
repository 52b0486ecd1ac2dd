"""Security basics against a real broker: clear errors for SASL and TLS mistakes, secrets never printed."""
from __future__ import annotations

import datetime
import ipaddress
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any, Iterator

import orjson
import pytest

from riskmon.models.simulate import simulate
from riskmon.streams.broker import EmbeddedBroker, free_port

from .conftest import replay_decisions, write_log

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


# --- TLS and SASL/SCRAM end to end: the embedded broker behind its gate (streams/gate.py) ------------

PASSWORD = "correct-horse-battery-staple-9f3e"


def make_ca(tmp: pathlib.Path, name: str) -> tuple[Any, Any, pathlib.Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    path = tmp / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(tmp: pathlib.Path, ca_key: Any, ca_cert: Any) -> tuple[pathlib.Path, pathlib.Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = tmp / "broker.pem", tmp / "broker.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], pathlib.Path, pathlib.Path]]:
    """`riskmon broker` with TLS (a certificate from a CA of the test's own) and SCRAM logins; (the clients'
    environment, the file the broker's output goes to, a CA nobody signed the broker's certificate with)."""
    tmp = tmp_path_factory.mktemp("secure")
    ca_key, ca_cert, ca = make_ca(tmp, "riskmon-test-ca")
    _, _, other_ca = make_ca(tmp, "someone-elses-ca")
    cert, key = make_server_cert(tmp, ca_key, ca_cert)
    users = tmp / "users"
    users.write_text(f"riskmon:{PASSWORD}\n")
    users.chmod(0o600)
    port = free_port()
    out = tmp / "broker.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
    with open(out, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "riskmon.streams.cli", "broker", "--port", str(port), "--cert", str(cert),
                                 "--key", str(key), "--users", str(users)], stdout=log, stderr=subprocess.STDOUT, env=clean)
    deadline = time.monotonic() + 30
    while b"broker ready" not in out.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
        time.sleep(0.2)
    env = {"RISKMON_BROKER_URL": f"127.0.0.1:{port}", "RISKMON_BROKER_KIND": "tansu", "RISKMON_SECURITY_PROTOCOL": "SASL_SSL",
           "RISKMON_SASL_MECHANISM": "SCRAM-SHA-512", "RISKMON_SASL_USERNAME": "riskmon", "RISKMON_SASL_PASSWORD": PASSWORD,
           "RISKMON_SSL_CAFILE": str(ca), "RISKMON_TOPIC_PREFIX": "secure", "RISKMON_APP_ID": "riskmon-secure",
           "RISKMON_PARTITIONS": "2"}
    yield env, out, other_ca
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)


def test_a_worker_produce_and_tail_over_tls_with_scram_give_replays_decisions(
        secure_broker: tuple[dict[str, str], pathlib.Path, pathlib.Path], tmp_path: pathlib.Path) -> None:
    env, broker_log, _ = secure_broker
    events, _ = simulate(120, 75, 11)
    log = write_log(tmp_path / "events.jsonl", events)
    expected = {orjson.loads(d)["decision_id"]: orjson.loads(d) for d in replay_decisions(log, partitions=2)}
    assert len(expected) > 10
    assert run(["topics"], env).returncode == 0
    web = free_port()
    worker_log = tmp_path / "worker.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
    with open(worker_log, "wb") as wl:
        worker = subprocess.Popen([sys.executable, "-m", "riskmon.streams.cli", "worker", "--loglevel", "info"],
                                  env=clean | env | {"RISKMON_WEB_PORT": str(web), "RISKMON_DATADIR": str(tmp_path / "data")},
                                  stdout=wl, stderr=subprocess.STDOUT)
    try:
        produced = run(["produce", str(log)], env)
        assert produced.returncode == 0, produced.stderr
        tailed = run(["tail", "--json", "--max", str(len(expected)), "--idle", "90"], env)
        assert tailed.returncode == 0, tailed.stderr + worker_log.read_text()[-3000:]
        got = {d["decision_id"]: d for d in map(orjson.loads, tailed.stdout.splitlines())}
        assert got == expected
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{web}/metrics", timeout=10).read().decode()
        assert "riskmon_events_applied_total" in metrics
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    texts = {"worker log": worker_log.read_text(), "broker log": broker_log.read_text(), "metrics": metrics,
             "produce": produced.stdout + produced.stderr, "tail": tailed.stdout + tailed.stderr}
    assert "logged in" in texts["broker log"], texts["broker log"][-2000:]
    for name, text in texts.items():
        assert PASSWORD not in text, name


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_wrong_password_is_refused_in_one_clear_line(secure_broker: tuple[dict[str, str], pathlib.Path, pathlib.Path],
                                                       mechanism: str) -> None:
    env, broker_log, _ = secure_broker
    assert run(["topics"], env | {"RISKMON_SASL_MECHANISM": mechanism}).returncode == 0
    for command in (["topics"], ["tail", "--max", "1"]):
        out = run(command, env | {"RISKMON_SASL_MECHANISM": mechanism, "RISKMON_SASL_PASSWORD": SECRET})
        text = out.stdout + out.stderr
        assert out.returncode == 2 and "Traceback" not in text, text
        line = [ln for ln in out.stderr.splitlines() if ln.startswith("riskmon:")]
        assert len(line) == 1 and "the broker refused the login (wrong user name or password)" in line[0], text
        assert SECRET not in text and PASSWORD not in text
    assert SECRET not in broker_log.read_text() and "failed: wrong password or unknown user" in broker_log.read_text()


def test_an_untrusted_certificate_is_refused_in_one_clear_line(
        secure_broker: tuple[dict[str, str], pathlib.Path, pathlib.Path]) -> None:
    env, _, other_ca = secure_broker
    out = run(["topics"], env | {"RISKMON_SSL_CAFILE": str(other_ca)})
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text, text
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("riskmon:")]
    assert len(line) == 1 and "certificate is not trusted" in line[0] and "CERTIFICATE_VERIFY_FAILED" in line[0], text
    assert PASSWORD not in text


def test_requests_before_login_and_oversized_frames_are_cut_off_and_the_broker_serves_on(
        secure_broker: tuple[dict[str, str], pathlib.Path, pathlib.Path]) -> None:
    import socket
    import ssl
    import struct

    env, broker_log, _ = secure_broker
    host, port = env["RISKMON_BROKER_URL"].split(":")
    ctx = ssl.create_default_context(cafile=env["RISKMON_SSL_CAFILE"])
    metadata_v1 = struct.pack(">hhih", 3, 1, 1, 4) + b"evil" + struct.pack(">i", -1)
    for frame in (struct.pack(">i", len(metadata_v1)) + metadata_v1,  # a request that needs a login, without one
                  struct.pack(">i", 1 << 30),  # a frame of a gigabyte announced before login
                  struct.pack(">i", 6) + b"\x00\x11\x00\x01\x00\x00"):  # a truncated SaslHandshake
        with socket.create_connection((host, int(port)), timeout=10) as raw, \
                ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(frame)
            assert s.recv(1024) == b""  # closed, nothing answered
    assert "before login; connection closed" in broker_log.read_text()
    assert run(["topics"], env).returncode == 0
