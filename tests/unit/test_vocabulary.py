"""One table of states and actions (models/vocabulary.py); typed policy sections; features tied to their names."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

from riskmon.models import vocabulary
from riskmon.models.features import FEATURE_NAMES, features
from riskmon.models.policy import BreakerRules, default_policy
from riskmon.models.state import new_state
from riskmon.models.contract import schema_enums, write_schemas
from riskmon.models.vocabulary import GUARDABLE, SEVERITY, STATES, action_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "models" / "schemas"


def test_the_published_schemas_take_their_enums_from_the_table() -> None:
    for name, props in schema_enums().items():
        doc = json.loads((SCHEMAS / name).read_text())
        for prop, values in props.items():
            assert doc["properties"][prop]["enum"] == values, (
                f"{name}: {prop} differs from models/vocabulary.py; run python -m riskmon.models.contract")


def test_write_schemas_rewrites_an_enum_that_drifted(tmp_path: pathlib.Path) -> None:
    for name in schema_enums():
        shutil.copy(SCHEMAS / name, tmp_path / name)
    doc = json.loads((tmp_path / "decision.json").read_text())
    doc["properties"]["action"]["enum"] = ["warning"]
    (tmp_path / "decision.json").write_text(json.dumps(doc))
    assert write_schemas(tmp_path) == ["decision.json"]
    assert json.loads((tmp_path / "decision.json").read_text())["properties"]["action"]["enum"] == list(vocabulary.ACTIONS)
    assert write_schemas(tmp_path) == []


def test_every_guardable_action_has_a_breaker_switch_in_the_policy() -> None:
    p = default_policy()
    for action in GUARDABLE:
        assert hasattr(BreakerRules, action), f"add breaker.{action} (0 or 1) to BreakerRules and default_policy.toml"
        assert p.breaker.guards(action) == (getattr(p.breaker, action) >= 1)
    assert p.breaker.guards("closure") and not p.breaker.guards("warning")


def test_moves_up_take_the_target_s_action_and_moves_down_the_source_s() -> None:
    for i, up in enumerate(STATES[1:], 1):
        for below in STATES[:i]:
            assert action_for(below.name, up.name) == up.escalation
            assert action_for(up.name, below.name) == up.leave
    assert [SEVERITY[s.name] for s in STATES] == list(range(len(STATES)))


def test_feature_values_come_by_name_in_the_declared_order() -> None:
    x = features(new_state("a1", "CNY", 0, 100_000))
    assert tuple(x) == FEATURE_NAMES


def test_a_misspelt_threshold_is_a_type_error(tmp_path: pathlib.Path) -> None:
    good = tmp_path / "good.py"
    bad = tmp_path / "bad.py"
    body = "from riskmon.models.policy import default_policy\n\ndef f() -> float:\n    return default_policy().score.{}\n"
    good.write_text(body.format("watch_exit"))
    bad.write_text(body.format("wacth_exit"))
    # mypy does not run the editable install's import hook: show it riskmon.models where the wheel puts it.
    (tmp_path / "path" / "riskmon").mkdir(parents=True)
    (tmp_path / "path" / "riskmon" / "models").symlink_to(ROOT / "models")
    env = {**os.environ, "MYPYPATH": str(tmp_path / "path")}
    run = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", "--ignore-missing-imports"]
    ok = subprocess.run(run + [str(good)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stdout
    out = subprocess.run(run + [str(bad)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert out.returncode == 1 and '"ScoreRules" has no attribute "wacth_exit"' in out.stdout, out.stdout
