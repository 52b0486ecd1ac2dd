"""TLS and SASL/SCRAM in front of the embedded broker.

Tansu 0.6.0 lists ``--cert``, ``--key`` and ``--authentication`` but cannot use them (measured
2026-12-07): ``--cert`` and ``--key`` are refused together ("cannot be used with"), either one alone
leaves the listener in plaintext, and its memory and S3 storage keep no SCRAM credentials (a user
created with ``tansu user create`` is unknown at the next login). So the embedded broker takes them
from this gate: an asyncio proxy on the broker's address that terminates TLS, authenticates each
connection with SCRAM-SHA-256 or SCRAM-SHA-512 (RFC 5802 and 7677) the way Kafka does (SaslHandshake
v0-1, SaslAuthenticate v0-2), and then passes the connection's bytes to Tansu on a loopback port
untouched. Tansu advertises the gate's address, so every client connection comes through it.

Users come from a file of ``name:password`` lines, read once at start; only salted SCRAM keys are
kept. A failed login gets Kafka's SASL_AUTHENTICATION_FAILED and the connection is closed; an
unknown user is answered like a wrong password (a salt derived from the name, a proof that never
matches), so the answer does not tell which names exist. Passwords appear in no log line.

Run by :class:`riskmon.streams.broker.EmbeddedBroker` as ``python -m riskmon.streams.gate``.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import signal
import ssl
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["MECHANISMS", "Credential", "credential", "read_users", "ScramServer", "Gate"]

log = logging.getLogger("riskmon.gate")

MECHANISMS: dict[str, Callable[..., "hashlib._Hash"]] = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}
ITERATIONS = 4096  # Kafka's minimum for SCRAM credentials
MAX_AUTH_FRAME = 64 * 1024  # before a client has logged in, nothing it may send is larger

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, UNSUPPORTED_VERSION, SASL_AUTHENTICATION_FAILED = 33, 34, 35, 58


@dataclass(frozen=True)
class Credential:
    """What a SCRAM server keeps of a password (RFC 5802, section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes


def credential(password: str, mechanism: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> Credential:
    """The SCRAM credential of ``password`` for ``mechanism`` (a random salt unless given)."""
    h = MECHANISMS[mechanism]
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac(h().name, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", h).digest()
    return Credential(salt, iterations, h(client_key).digest(), hmac.new(salted, b"Server Key", h).digest())


def read_users(path: Path) -> dict[str, str]:
    """``name:password`` lines (blank lines and ``#`` comments skipped). A malformed line is a ValueError
    naming its number, never its text (it may hold a password)."""
    users: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name or not password:
            raise ValueError(f"{path}, line {n}: expected name:password")
        if name in users:
            raise ValueError(f"{path}, line {n}: user {name!r} appears twice")
        users[name] = password
    if not users:
        raise ValueError(f"{path} names no user")
    return users


class ScramServer:
    """One SCRAM exchange, the server's side: ``step`` takes each client message and returns the answer,
    with ``done`` None while the exchange goes on, True once the client proved its password, False when
    it failed (the answer then carries ``e=...``)."""

    def __init__(self, mechanism: str, credentials: dict[str, Credential], decoy: bytes) -> None:
        self.mechanism = mechanism
        self.h = MECHANISMS[mechanism]
        self.credentials = credentials
        self.decoy = decoy  # unknown users get a salt derived from their name and this, the same every time
        self.user: str | None = None
        self._first_bare = self._server_first = self._nonce = self._gs2 = ""
        self._cred: Credential | None = None
        self._answered_first = False

    def step(self, message: bytes) -> tuple[bytes, bool | None]:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return b"e=invalid-encoding", False
        if not self._answered_first:
            return self._first(text)
        return self._final(text)

    def _first(self, text: str) -> tuple[bytes, bool | None]:
        parts = text.split(",", 2)
        if len(parts) != 3 or parts[0] not in ("n", "y") or parts[1]:
            # p=...: channel binding, and a=...: an authorisation identity, are not offered
            return b"e=other-error", False
        self._gs2 = f"{parts[0]},{parts[1]},"
        self._first_bare = parts[2]
        attrs = _attributes(self._first_bare)
        if attrs is None or "n" not in attrs or "r" not in attrs or "m" in attrs or not attrs["r"]:
            return b"e=other-error", False
        name = attrs["n"].replace("=2C", ",").replace("=3D", "=")
        self.user = name
        self._cred = self.credentials.get(name)
        if self._cred is None:
            salt = hmac.new(self.decoy, name.encode(), hashlib.sha256).digest()[:16]
            self._cred = Credential(salt, ITERATIONS, secrets.token_bytes(self.h().digest_size), b"")
        self._nonce = attrs["r"] + base64.b64encode(secrets.token_bytes(18)).decode()
        self._server_first = f"r={self._nonce},s={base64.b64encode(self._cred.salt).decode()},i={self._cred.iterations}"
        self._answered_first = True
        return self._server_first.encode(), None

    def _final(self, text: str) -> tuple[bytes, bool | None]:
        head, sep, proof64 = text.rpartition(",p=")
        attrs = _attributes(head) if sep else None
        assert self._cred is not None
        if attrs is None or attrs.get("r") != self._nonce or attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            return b"e=other-error", False
        try:
            proof = base64.b64decode(proof64, validate=True)
        except ValueError:
            return b"e=invalid-proof", False
        auth_message = f"{self._first_bare},{self._server_first},{head}".encode()
        signature = hmac.new(self._cred.stored_key, auth_message, self.h).digest()
        if len(proof) != len(signature):
            return b"e=invalid-proof", False
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        if not self._cred.server_key or not hmac.compare_digest(self.h(client_key).digest(), self._cred.stored_key):
            return b"e=invalid-proof", False
        return b"v=" + base64.b64encode(hmac.new(self._cred.server_key, auth_message, self.h).digest()), True


def _attributes(text: str) -> dict[str, str] | None:
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            return None
        out[key] = value
    return out


# --- the Kafka wire, as much of it as a login needs -------------------------------------------------

class _Closed(Exception):
    pass


def _uvarint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if i >= len(buf) or shift > 28:
            raise ValueError("bad varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _put_uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _skip_tags(buf: bytes, i: int) -> int:
    count, i = _uvarint(buf, i)
    for _ in range(count):
        _, i = _uvarint(buf, i)
        size, i = _uvarint(buf, i)
        i += size
    if i > len(buf):
        raise ValueError("bad tagged fields")
    return i


@dataclass(frozen=True)
class _Request:
    api_key: int
    version: int
    correlation_id: int
    body: bytes  # after the header


def _parse_request(frame: bytes, flexible: bool) -> _Request:
    if len(frame) < 10:
        raise ValueError("short request header")
    api_key, version, correlation_id, client_len = struct.unpack(">hhih", frame[:10])
    i = 10 + max(client_len, 0)
    if flexible:
        i = _skip_tags(frame, i)
    if i > len(frame):
        raise ValueError("bad request header")
    return _Request(api_key, version, correlation_id, frame[i:])


def _string(body: bytes) -> str:
    (n,) = struct.unpack(">h", body[:2])
    if n < 0 or 2 + n > len(body):
        raise ValueError("bad string")
    return body[2:2 + n].decode("utf-8")


def _auth_bytes(req: _Request) -> bytes:
    if req.version >= 2:  # flexible: compact bytes
        n, i = _uvarint(req.body, 0)
        if n == 0 or i + n - 1 > len(req.body):
            raise ValueError("bad auth bytes")
        return req.body[i:i + n - 1]
    (n,) = struct.unpack(">i", req.body[:4])
    if n < 0 or 4 + n > len(req.body):
        raise ValueError("bad auth bytes")
    return req.body[4:4 + n]


def _handshake_response(correlation_id: int, error: int, mechanisms: list[str]) -> bytes:
    body = struct.pack(">ih", correlation_id, error) + struct.pack(">i", len(mechanisms))
    for m in mechanisms:
        body += struct.pack(">h", len(m)) + m.encode()
    return body


def _authenticate_response(req: _Request, error: int, message: str | None, auth: bytes) -> bytes:
    if req.version >= 2:
        text = b"\x00" if message is None else _put_uvarint(len(message.encode()) + 1) + message.encode()
        return (struct.pack(">i", req.correlation_id) + b"\x00" + struct.pack(">h", error) + text
                + _put_uvarint(len(auth) + 1) + auth + struct.pack(">q", 0) + b"\x00")
    text = struct.pack(">h", -1) if message is None else struct.pack(">h", len(message.encode())) + message.encode()
    out = struct.pack(">ih", req.correlation_id, error) + text + struct.pack(">i", len(auth)) + auth
    return out + (struct.pack(">q", 0) if req.version >= 1 else b"")


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    try:
        head = await reader.readexactly(4)
        (n,) = struct.unpack(">i", head)
        if n < 0 or n > limit:
            raise _Closed(f"a frame of {n} bytes before login")
        return await reader.readexactly(n)
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise _Closed("closed") from exc


def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(struct.pack(">i", len(payload)) + payload)


class Gate:
    """Listen on ``port``; TLS when ``tls`` is given, SCRAM when ``users`` is; bytes to 127.0.0.1:``upstream``."""

    def __init__(self, port: int, upstream: int, tls: ssl.SSLContext | None, users: dict[str, str] | None,
                 host: str = "127.0.0.1") -> None:
        self.host, self.port, self.upstream, self.tls = host, port, upstream, tls
        self.credentials: dict[str, dict[str, Credential]] = {
            m: {name: credential(pw, m) for name, pw in (users or {}).items()} for m in MECHANISMS}
        self.authenticate = users is not None
        self.decoy = secrets.token_bytes(32)
        self.logins = self.failures = 0

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        server = await asyncio.start_server(self._connection, self.host, self.port, ssl=self.tls)
        if ready is not None:
            ready()
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        up_writer: asyncio.StreamWriter | None = None
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
            if self.authenticate and not await self._login(reader, writer, up_reader, up_writer, where):
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except _Closed as exc:
            if str(exc) != "closed":
                log.warning("gate: connection from %s closed: %s", where, exc)
        except (OSError, ssl.SSLError) as exc:
            log.info("gate: connection from %s ended: %s", where, exc)
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    w.close()

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter, where: str) -> bool:
        """Answer ApiVersions (from the broker), SaslHandshake and SaslAuthenticate until the client is in."""
        scram: ScramServer | None = None
        raw_tokens = False  # SaslHandshake v0: the SCRAM messages follow as bare frames
        while True:
            frame = await _read_frame(reader, MAX_AUTH_FRAME)
            if raw_tokens:
                assert scram is not None
                answer, done = scram.step(frame)
                if done is False:
                    return self._failed(scram, where)
                _write_frame(writer, answer)
                await writer.drain()
                if done:
                    return self._passed(scram, where)
                continue
            try:
                (api_key, version) = struct.unpack(">hh", frame[:4])
                req = _parse_request(frame, flexible=api_key == SASL_AUTHENTICATE and version >= 2)
            except (struct.error, ValueError):
                log.warning("gate: a malformed request from %s before login; connection closed", where)
                return False
            if req.api_key == API_VERSIONS and scram is None:
                _write_frame(up_writer, frame)
                await up_writer.drain()
                _write_frame(writer, await _read_frame(up_reader, 1 << 24))
                await writer.drain()
            elif req.api_key == SASL_HANDSHAKE and scram is None:
                try:
                    mechanism = _string(req.body)
                except (ValueError, struct.error, UnicodeDecodeError):
                    return False
                if req.version > 1 or mechanism not in MECHANISMS:
                    code = UNSUPPORTED_VERSION if req.version > 1 else UNSUPPORTED_SASL_MECHANISM
                    _write_frame(writer, _handshake_response(req.correlation_id, code, list(MECHANISMS)))
                    await writer.drain()
                    log.warning("gate: a client at %s asked for %s (handshake v%d); offered %s", where, mechanism,
                                req.version, ", ".join(MECHANISMS))
                    return False
                scram = ScramServer(mechanism, self.credentials[mechanism], self.decoy)
                _write_frame(writer, _handshake_response(req.correlation_id, 0, list(MECHANISMS)))
                await writer.drain()
                raw_tokens = req.version == 0
            elif req.api_key == SASL_AUTHENTICATE and scram is not None and req.version <= 2:
                try:
                    token = _auth_bytes(req)
                except (ValueError, struct.error):
                    return False
                answer, done = scram.step(token)
                if done is False:
                    message = f"Authentication failed during authentication due to invalid credentials with SASL mechanism {scram.mechanism}"
                    _write_frame(writer, _authenticate_response(req, SASL_AUTHENTICATION_FAILED, message, b""))
                    await writer.drain()
                    return self._failed(scram, where)
                _write_frame(writer, _authenticate_response(req, 0, None, answer))
                await writer.drain()
                if done:
                    return self._passed(scram, where)
            else:
                log.warning("gate: request %d from %s before login; connection closed (%s)", req.api_key, where,
                            "ILLEGAL_SASL_STATE" if req.api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE) else "not logged in")
                return False

    def _passed(self, scram: ScramServer, where: str) -> bool:
        self.logins += 1
        log.info("gate: %r logged in from %s with %s", scram.user, where, scram.mechanism)
        return True

    def _failed(self, scram: ScramServer, where: str) -> bool:
        self.failures += 1
        log.warning("gate: login as %r from %s with %s failed: wrong password or unknown user", scram.user, where,
                    scram.mechanism)
        return False


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            pass
        writer.close()


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m riskmon.streams.gate", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True, help="where clients connect")
    p.add_argument("--upstream", type=int, required=True, help="the broker's loopback port")
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    p.add_argument("--users", type=Path, help="a file of name:password lines: SASL/SCRAM required")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    try:
        tls = tls_context(args.cert, args.key) if args.cert else None
        users = read_users(args.users) if args.users else None
    except (OSError, ValueError, ssl.SSLError) as exc:
        print(f"riskmon gate: {exc}", file=sys.stderr)
        return 2
    gate = Gate(args.port, args.upstream, tls, users)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    what = " and ".join(w for w, on in (("TLS", tls), ("SASL/SCRAM", users)) if on) or "plaintext"
    try:
        asyncio.run(gate.serve(lambda: log.info("gate: %s on 127.0.0.1:%d for the broker on :%d", what, args.port,
                                                  args.upstream)))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
