"""models/ is the pure core: importing it loads nothing of Kafka, Faust, Prometheus or streams/, and it type-checks strictly.

The static rule (no import of an adapter anywhere in the core's source) is in test_structure.py.
"""
from __future__ import annotations

import pathlib
import subprocess
import sys

FORBIDDEN = ("faust", "aiokafka", "kafka", "prometheus_client", "mode", "riskmon.streams")
ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_importing_the_core_loads_no_adapter() -> None:
    code = (
        "import sys, riskmon.models, riskmon.models.engine, riskmon.models.simulate, riskmon.models.evaluation\n"
        f"print(sorted(m for m in sys.modules if any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_core_type_checks_strictly() -> None:
    """STYLE: mypy strict on models/ (configured in pyproject.toml)."""
    out = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:]
