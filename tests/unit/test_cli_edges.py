"""The command line at its edges: a wrong setting, flag, log or truth file says so at once, in one line."""
from __future__ import annotations

import gzip
import pathlib
import socket
import subprocess
import sys

import orjson
import pytest
from pydantic import ValidationError

from riskmon.models.codec import dumps
from riskmon.models.simulate import simulate
from riskmon.streams.cli import main
from riskmon.streams.render import decision_line
from riskmon.streams.settings import Settings, settings_error
from riskmon.streams.worker import check_web_port, riskmon_command


def _log(tmp_path: pathlib.Path, accounts: int = 30, days: int = 40, prefix: str = "A") -> pathlib.Path:
    events, truth = simulate(accounts, days, 7, prefix=prefix)
    path = tmp_path / f"{prefix}.jsonl"
    path.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    path.with_suffix(".truth.jsonl").write_bytes(b"".join(dumps(t) + b"\n" for t in truth))
    return path


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("env,words", [
    ({"RISKMON_PARTITIONS": "abc"}, "RISKMON_PARTITIONS='abc': Input should be a valid integer"),
    ({"RISKMON_BROKER_URL": "127.0.0.1:99999"}, "RISKMON_BROKER_URL='127.0.0.1:99999': takes host:port"),
    ({"RISKMON_BROKER_URL": "http://127.0.0.1:9092"}, "without a scheme (got 'http://127.0.0.1:9092'; try '127.0.0.1:9092')"),
    ({"RISKMON_BROKER_URL": "kafka1:9092,kafka2"}, "(got 'kafka2')"),
])
def test_a_bad_setting_is_named_by_its_variable(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                env: dict[str, str], words: str) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert main(["topics"]) == 2
    err = _err(capsys)
    assert words in err and err.count("\n") == 1, err


def test_a_secret_in_a_bad_setting_is_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKMON_SASL_PASSWORD", "")
    monkeypatch.setenv("RISKMON_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ValidationError) as info:
        Settings(sasl_password=["hunter2"])  # type: ignore[arg-type]
    assert "hunter2" not in settings_error(info.value)


@pytest.mark.parametrize("argv,words", [
    (["replay", "x.jsonl", "--partitions", "0"], "--partitions: must be at least 1, not 0"),
    (["replay", "x.jsonl", "--checkpoint-every", "0"], "--checkpoint-every: must be at least 1"),
    (["replay", "x.jsonl", "--bad-dpd", "-1"], "--bad-dpd: must be at least 1, not -1"),
    (["simulate", "--accounts", "-5"], "--accounts: must be at least 1, not -5"),
    (["run", "--rate", "0"], "--rate: must be a number above 0"),
])
def test_a_flag_out_of_range_is_refused(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and words in _err(capsys)


def test_logs_that_cannot_be_read_are_refused_before_any_work(tmp_path: pathlib.Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path)
    packed = tmp_path / "ev.jsonl.gz"
    packed.write_bytes(gzip.compress(log.read_bytes()))
    assert main(["replay", str(packed)]) == 2
    assert "is gzip-compressed: gunzip it first" in _err(capsys)
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("garbage\n{}\n")
    for argv in (["replay", str(garbage)], ["run", "--events", str(garbage)], ["evaluate", str(garbage)]):
        assert main(argv) == 2
        assert "not one event in its first 2 lines" in _err(capsys)
    assert main(["run", "--events", str(tmp_path / "missing.jsonl")]) == 2
    assert "no event log at" in _err(capsys)
    assert main(["replay", str(log), "--report", str(tmp_path / "no" / "such" / "r.html")]) == 2
    assert "--report" in _err(capsys)


def test_a_bad_policy_file_stops_run_before_a_broker_starts(monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("RISKMON_POLICY_FILE", "/nonexistent/policy.toml")
    assert main(["run", "--accounts", "5"]) == 2
    assert "bad_policy" in _err(capsys)


def test_replay_reads_the_policy_file_setting_as_the_worker_does(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path)
    policy = tmp_path / "p.toml"
    policy.write_text('version = "from-the-environment"\n')
    monkeypatch.setenv("RISKMON_POLICY_FILE", str(policy))
    out = tmp_path / "d.jsonl"
    assert main(["replay", str(log), "--out", str(out)]) == 0
    versions = {orjson.loads(line)["policy_version"] for line in out.read_bytes().splitlines()}
    assert versions == {"from-the-environment"}


def test_a_log_whose_every_event_is_refused_exits_non_zero(tmp_path: pathlib.Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "orphans.jsonl"
    path.write_bytes(b"".join(dumps({"type": "payment", "event_id": f"p{i}", "account_id": "NEVER_OPENED",
                                     "ts": "2025-01-02T00:00:00Z", "amount": 10, "currency": "CNY",
                                     "channel": "app"}) + b"\n" for i in range(3)))
    assert main(["replay", str(path), "--out", str(tmp_path / "d.jsonl")]) == 1
    err = _err(capsys)
    assert "3 events; 3 rejected (unknown_account 3)" in err and "every line of" in err


def test_truth_file_mistakes_name_the_file(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = _log(tmp_path)
    assert main(["replay", str(log), "--out", str(tmp_path / "d.jsonl"), "--truth", str(log)]) == 2
    assert f"truth file {log} line 1" in (err := _err(capsys)) and "looks like an event log" in err
    broken = tmp_path / "broken.truth.jsonl"
    broken.write_text('{"account_id": "A0000000", "defaults": false}\n{not json\n')
    assert main(["replay", str(log), "--out", str(tmp_path / "d.jsonl"), "--truth", str(broken)]) == 2
    assert f"truth file {broken} line 2: not JSON" in _err(capsys)
    other = _log(tmp_path, prefix="B")  # another log: none of its accounts are in this one
    assert main(["replay", str(log), "--out", str(tmp_path / "d.jsonl"), "--truth",
                 str(other.with_suffix(".truth.jsonl"))]) == 2
    assert "the truth file does not fit this log: 0 of its 30 accounts appear in it" in _err(capsys)


def test_simulated_logs_take_an_id_prefix(tmp_path: pathlib.Path) -> None:
    events, truth = simulate(3, 5, 7, prefix="run2-")
    assert {e["account_id"] for e in events} == {t["account_id"] for t in truth} == {"run2-0000000", "run2-0000001",
                                                                                        "run2-0000002"}
    with pytest.raises(ValueError, match="prefix"):
        simulate(3, 5, 7, prefix="bad prefix")


def test_replay_into_a_closed_pipe_ends_quietly(tmp_path: pathlib.Path) -> None:
    log = _log(tmp_path, accounts=400, days=60)
    proc = subprocess.Popen([sys.executable, "-m", "riskmon.streams.cli", "replay", str(log), "--text", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(120) == 0 and "Broken pipe" not in err and "Traceback" not in err, err


def test_a_taken_web_port_is_one_line_naming_the_setting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ValueError, match=f"127.0.0.1:{port} is taken .* set RISKMON_WEB_PORT to a free port"):
            check_web_port(Settings(web_port=port))


def test_run_names_a_riskmon_command_that_works_from_another_shell() -> None:
    cmd = riskmon_command()
    assert cmd == "riskmon" or cmd.endswith("riskmon") and pathlib.Path(cmd).exists() or "-m riskmon.streams.cli" in cmd


def test_readable_lines_keep_their_columns_with_or_without_milliseconds() -> None:
    base = {"account_id": "A1", "action": "warning", "previous_state": "normal", "new_state": "watch", "score": 0.2,
            "reasons": [{"code": "DPD_1_30", "text": "1 day past due (1-30 bucket)"}]}
    a = decision_line({**base, "event_ts": "2025-01-06T11:52:07Z"})
    b = decision_line({**base, "event_ts": "2025-01-06T11:52:07.123Z"})
    assert a.index("A1") == b.index("A1") and a.index("DPD_1_30") == b.index("DPD_1_30")


def test_long_commands_show_progress_on_a_terminal_and_are_quiet_when_piped(tmp_path: pathlib.Path) -> None:
    """simulate, replay, evaluate and produce draw one progress line on a terminal (a pty here), none into a pipe."""
    import os
    import pty

    out = tmp_path / "ev.jsonl"
    argv = [sys.executable, "-m", "riskmon.streams.cli", "simulate", "--accounts", "40", "--days", "20", "--out", str(out)]
    piped = subprocess.run(argv, capture_output=True, timeout=120)
    assert piped.returncode == 0 and b"\r" not in piped.stderr and b"simulate [" not in piped.stderr
    for cmd in (argv, [sys.executable, "-m", "riskmon.streams.cli", "replay", str(out), "--out", str(tmp_path / "d.jsonl")]):
        leader, follower = pty.openpty()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        seen = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        assert proc.wait(120) == 0
        os.close(leader)
        name = cmd[3].encode()
        assert b"\r" + name + b" [" in seen and b"#" * 30 in seen, seen[-300:]


def test_default_event_ids_are_valid_ids_whatever_they_are_made_from() -> None:
    from riskmon.models.codec import _ID  # the codec's own rule for ids
    from riskmon.streams.cli import _event_id

    for text in ("review-1733000000000-" + "A" * 60, "policy-1733000000000-default 2025.1+tight/v2"):
        assert _ID.fullmatch(_event_id(text)), _event_id(text)
