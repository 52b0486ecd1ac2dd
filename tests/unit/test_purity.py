"""models/ is the pure core: it must not import Kafka, Faust, Prometheus or streams/."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

FORBIDDEN = ("faust", "aiokafka", "kafka", "prometheus_client", "streams", "mode")
MODELS = pathlib.Path(__file__).resolve().parents[2] / "models"


def _imports(path: pathlib.Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_no_module_in_models_imports_an_adapter() -> None:
    files = sorted(MODELS.rglob("*.py"))
    assert len(files) >= 10
    bad = {str(f.relative_to(MODELS)): sorted(_imports(f) & set(FORBIDDEN)) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_catches_a_forbidden_import(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "x.py"
    f.write_text("import os\nfrom aiokafka import AIOKafkaConsumer\nimport prometheus_client.core\n")
    assert _imports(f) & set(FORBIDDEN) == {"aiokafka", "prometheus_client"}


def test_importing_the_core_loads_no_adapter() -> None:
    code = (
        "import sys, models, models.engine, models.simulate, models.evaluation\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=MODELS.parent)
    assert out.stdout.strip() == "[]"


def test_core_type_checks_strictly() -> None:
    """STYLE: mypy strict on models/ (configured in pyproject.toml)."""
    out = subprocess.run([sys.executable, "-m", "mypy"], capture_output=True, text=True, cwd=MODELS.parent)
    assert out.returncode == 0, out.stdout[-3000:]
