"""The embedded broker's SCRAM server against aiokafka's own SCRAM client, and its users file."""
from __future__ import annotations

import pathlib
import struct

import pytest
from aiokafka.conn import ScramAuthenticator

from riskmon.streams.gate import (MECHANISMS, ScramServer, _auth_bytes, _authenticate_response, _parse_request,
                                  credential, read_users)


def login(mechanism: str, server_password: str, name: str, password: str) -> tuple[list[bool | None], ScramServer]:
    """One exchange: aiokafka's client against the gate's server; the server's verdict after each step."""
    server = ScramServer(mechanism, {"alice": credential(server_password, mechanism)}, decoy=b"d" * 32)
    client = ScramAuthenticator(loop=None, sasl_plain_password=password, sasl_plain_username=name,
                                sasl_mechanism=mechanism)
    verdicts: list[bool | None] = []
    token = client._step(None)
    answer: bytes | None = None
    while token is not None:
        answer, done = server.step(token[0])
        verdicts.append(done)
        if done is False:
            break
        token = client._step(answer)  # raises if the server's final signature is wrong
    return verdicts, server


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_the_right_password_logs_in_and_the_client_checks_the_server(mechanism: str) -> None:
    verdicts, server = login(mechanism, "s3cret, with = signs", "alice", "s3cret, with = signs")
    assert verdicts == [None, True] and server.user == "alice"


@pytest.mark.parametrize("mechanism", list(MECHANISMS))
def test_a_wrong_password_and_an_unknown_user_fail_alike(mechanism: str) -> None:
    wrong, _ = login(mechanism, "right", "alice", "wrong")
    unknown, server = login(mechanism, "right", "mallory", "right")
    assert wrong == [None, False] and unknown == [None, False]
    # the unknown user is given a salt like anyone's, the same at every try: no telling who exists
    first = ScramServer(mechanism, {}, decoy=b"d" * 32).step(b"n,,n=mallory,r=abc")[0].decode()
    again = ScramServer(mechanism, {}, decoy=b"d" * 32).step(b"n,,n=mallory,r=xyz")[0].decode()
    assert first.split(",")[1:] == again.split(",")[1:] and first.split(",")[2] == "i=4096"


def test_a_forged_or_garbled_exchange_fails() -> None:
    server = ScramServer("SCRAM-SHA-256", {"alice": credential("pw", "SCRAM-SHA-256")}, decoy=b"d" * 32)
    assert server.step(b"p=tls-unique,,n=alice,r=abc")[1] is False  # channel binding is not offered
    server = ScramServer("SCRAM-SHA-256", {"alice": credential("pw", "SCRAM-SHA-256")}, decoy=b"d" * 32)
    server.step(b"n,,n=alice,r=abc")
    assert server.step(b"c=biws,r=abc-not-the-servers-nonce,p=AAAA") == (b"e=other-error", False)
    assert ScramServer("SCRAM-SHA-256", {}, b"").step(b"\xff\xfe")[1] is False


def test_the_wire_forms_of_sasl_authenticate() -> None:
    token = b"n,,n=alice,r=abc"
    v1 = struct.pack(">hhih", 36, 1, 7, 3) + b"cli" + struct.pack(">i", len(token)) + token
    v2 = struct.pack(">hhih", 36, 2, 8, 3) + b"cli" + b"\x00" + bytes([len(token) + 1]) + token + b"\x00"
    r1, r2 = _parse_request(v1, flexible=False), _parse_request(v2, flexible=True)
    assert (_auth_bytes(r1), _auth_bytes(r2)) == (token, token)
    assert _authenticate_response(r1, 0, None, b"ok") == struct.pack(">ihhi", 7, 0, -1, 2) + b"ok" + struct.pack(">q", 0)
    assert _authenticate_response(r2, 58, "no", b"") == struct.pack(">i", 8) + b"\x00" + struct.pack(">h", 58) + b"\x03no" + b"\x01" + struct.pack(">q", 0) + b"\x00"


def test_the_users_file(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "users"
    f.write_text("# who may connect\nriskmon:pa:ss\n\nops:x\n")
    assert read_users(f) == {"riskmon": "pa:ss", "ops": "x"}
    f.write_text("riskmon:pw\nsecret-without-a-colon\n")
    with pytest.raises(ValueError, match="line 2: expected name:password") as err:
        read_users(f)
    assert "secret-without" not in str(err.value)
    f.write_text("# nobody\n")
    with pytest.raises(ValueError, match="names no user"):
        read_users(f)
