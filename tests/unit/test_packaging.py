"""The wheel installs one top-level package, riskmon, with its data files and the riskmon command."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_wheel_installs_riskmon_only(tmp_path: pathlib.Path) -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "BuildBackendWarning" not in out.stderr and "SetuptoolsDeprecationWarning" not in out.stderr, out.stderr[-3000:]
    (wheel,) = tmp_path.glob("riskmon-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"riskmon", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info"}
    for need in ("riskmon/models/step.py", "riskmon/models/data/default_policy.toml", "riskmon/models/schemas/decision.json",
                 "riskmon/streams/cli.py", "riskmon/streams/faust_internals.py", "riskmon/streams/tools/bench.py"):
        assert need in names, need
    assert not any(n.startswith("riskmon/__init__") for n in names)  # a namespace: riskmon.models and riskmon.streams
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "riskmon = riskmon.streams.cli:main" in entry
