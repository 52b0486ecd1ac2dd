"""The first hour, as a new user meets it: `riskmon run`, and `riskmon tail` from another shell as run says."""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess
import sys
import threading
import time

import orjson
import pytest

from riskmon.models.codec import dumps
from riskmon.models.simulate import simulate

from .conftest import replay_decisions, write_log

pytestmark = pytest.mark.integration


def test_run_prints_decisions_and_dead_letters_and_the_tail_it_names_works(tmp_path: pathlib.Path) -> None:
    events, _ = simulate(120, 45, 31, prefix="H")
    ghost = {"type": "payment", "event_id": "ghost-pay-1", "account_id": "NOSUCH01", "ts": events[50]["ts"],
             "amount": 10, "currency": "CNY", "channel": "app"}
    log = write_log(tmp_path / "ev.jsonl", [*events, ghost])
    expected = replay_decisions(log)
    assert len(expected) > 20
    env = {k: v for k, v in os.environ.items() if not k.startswith("RISKMON_")}
    env["PATH"] = f"{pathlib.Path(sys.executable).parent}:{env.get('PATH', '')}"
    run = subprocess.Popen([sys.executable, "-m", "riskmon.streams.cli", "run", "--events", str(log), "--idle", "8"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(line.decode() for line in run.stderr), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        deadline = time.monotonic() + 60
        command = None
        while command is None and time.monotonic() < deadline:
            command = next((line.strip() for line in err if line.strip().startswith("RISKMON_BROKER_URL=")), None)
            time.sleep(0.2)
        assert command is not None, "".join(err)
        # The command run prints, from another shell (the same environment, without run's settings).
        assignment, *argv = shlex.split(command)
        name, _, value = assignment.partition("=")
        other = subprocess.run([*argv, "--max", "5", "--idle", "120", "--json"], env={**env, name: value},
                               capture_output=True, timeout=180, cwd=tmp_path)
        assert other.returncode == 0, other.stderr.decode()
        tailed = [orjson.loads(line) for line in other.stdout.splitlines()]
        assert len(tailed) == 5 and all(dumps(d) in expected for d in tailed)
        run.wait(300)  # its few dozen decision lines fit in the pipe's buffer meanwhile
        out = run.stdout.read()  # type: ignore[union-attr]  # (stderr is the reader thread's alone)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    reader.join(5)
    text = "".join(err)
    assert run.returncode == 0, text
    lines = out.decode().splitlines()
    assert len(lines) == len(expected), text[-2000:]  # one readable line per decision, each once
    assert re.search(r"riskmon: dead letter \(unknown_account\) from \S+\.repayments\[\d\]@\d+", text), text[-2000:]
    assert "Traceback" not in text and "is overlapping" not in text, text[-3000:]
    assert f"riskmon: {len(expected)} decisions in " in text
