"""Warm start: `riskmon train` writes a model with what it learned from; replay and evaluate start from it."""
from __future__ import annotations

import hashlib
import io
import pathlib
import pickle

import orjson
import pytest

from riskmon.models.codec import dumps
from riskmon.models.engine import Engine
from riskmon.models.featurespec import default_spec
from riskmon.models.model_file import ModelFileError, load_model
from riskmon.models.monitor import Monitor
from riskmon.models.simulate import simulate
from riskmon.streams.cli import main
from riskmon.streams.replay import ReplaySummary, read_log, replay
from riskmon.streams.tools.train import train


def _write(path: pathlib.Path, events: list[dict]) -> pathlib.Path:
    path.write_bytes(b"".join(dumps(e) + b"\n" for e in events))
    return path


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """A history to learn from, a later log of other accounts, and the model file trained on the first."""
    tmp = tmp_path_factory.mktemp("warm")
    history = _write(tmp / "history.jsonl", simulate(300, 150, seed=5)[0])
    later = _write(tmp / "later.jsonl", simulate(150, 90, seed=6, prefix="L")[0])
    model = tmp / "history.model"
    assert main(["train", str(history), "--out", str(model)]) == 0
    return history, later, model


def test_the_trained_model_is_the_one_a_single_partition_learns_and_its_record_says_from_what(
        logs: tuple[pathlib.Path, pathlib.Path, pathlib.Path]) -> None:
    history, _, path = logs
    model, info = load_model(path, default_spec().names)
    # Replayed in one partition, the monitor learns exactly this model: same bytes (with one model for the
    # portfolio, once its trainer has learned the outcomes of the log's last days too: Engine.finish).
    with open(history, "rb") as f:
        log = sorted(read_log(f, ReplaySummary(), None), key=lambda e: e[0])
    engine = Engine(1)
    outcomes = [(ev.ts, o.default) for _, ev in log for r in engine.process(ev) for o in r.outcomes]
    blob = pickle.dumps(engine.finish(), protocol=pickle.HIGHEST_PROTOCOL)
    assert info.sha256 == hashlib.sha256(blob).hexdigest() and info.version == f"warm-{info.sha256[:12]}"
    assert (info.outcomes, info.defaults) == (len(outcomes), sum(d for _, d in outcomes)) and info.defaults > 0
    assert (info.first_ts, info.last_ts) == (outcomes[0][0], outcomes[-1][0])
    assert info.features == default_spec().names and info.feature_spec == default_spec().version
    assert info.source.startswith("history.jsonl (sha256 ")
    assert model.n_learned == info.outcomes


def test_replay_from_the_model_scores_from_the_first_event_and_names_the_model(
        logs: tuple[pathlib.Path, pathlib.Path, pathlib.Path]) -> None:
    _, later, path = logs
    model, info = load_model(path)
    cold, warm, again = io.BytesIO(), io.BytesIO(), io.BytesIO()
    replay(later, cold)
    s = replay(later, warm, model=model, model_base=info.version)
    replay(later, again, model=model, model_base=info.version)
    assert warm.getvalue() == again.getvalue(), "a warm start is as deterministic as a cold one"
    decisions = [orjson.loads(line) for line in warm.getvalue().splitlines()]
    # One model for the portfolio (the default): versions warm-<digits>.m.v<n>
    assert decisions and all(d["model_version"].startswith(info.version + ".m.v") for d in decisions)
    assert warm.getvalue() != cold.getvalue()
    # The model file is never changed by using it: each partition learns on a copy.
    assert load_model(path)[0].n_learned == info.outcomes and model.n_learned == info.outcomes
    assert s.outcome_auc is not None


def test_a_snapshot_keeps_the_model_it_started_from() -> None:
    m = Monitor("p3", model_base="warm-0123456789ab")
    back = Monitor.restore(m.dumps())
    assert back.model_version == "warm-0123456789ab.p3.v0" == m.model_version
    assert Monitor("p3").model_version == "p3.v0"


def test_unusable_model_files_are_refused_in_one_line(logs: tuple[pathlib.Path, pathlib.Path, pathlib.Path],
                                                      tmp_path: pathlib.Path) -> None:
    _, _, path = logs
    not_one = tmp_path / "policy.toml"
    not_one.write_text("version = 'x'\n")
    with pytest.raises(ModelFileError, match="not a riskmon model file"):
        load_model(not_one)
    cut = tmp_path / "cut.model"
    cut.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ModelFileError, match="do not match their sha256"):
        load_model(cut)
    with pytest.raises(ModelFileError, match="No such file"):
        load_model(tmp_path / "missing.model")
    head = path.read_bytes().split(b"\n", 1)[0]
    meta = orjson.loads(head)
    junk = b"not a pickle"
    meta["sha256"] = hashlib.sha256(junk).hexdigest()
    bad = tmp_path / "junk.model"
    bad.write_bytes(orjson.dumps(meta) + b"\n" + junk)
    with pytest.raises(ModelFileError, match="cannot be read by this riskmon"):
        load_model(bad)
    with pytest.raises(ModelFileError, match="trained on feature specification .* not the one in force"):
        load_model(path, ("utilisation", "dpd_months"))


def test_the_cli_trains_replays_from_the_model_and_refuses_a_bad_one(
        logs: tuple[pathlib.Path, pathlib.Path, pathlib.Path], tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    _, later, path = logs
    out = tmp_path / "d.jsonl"
    assert main(["replay", str(later), "--model", str(path), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "starting from model warm-" in err and "outcomes" in err
    assert all(orjson.loads(line)["model_version"].startswith("warm-") for line in out.read_bytes().splitlines())
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"garbage")
    assert main(["replay", str(later), "--model", str(bad), "--quiet"]) == 2
    assert "not a riskmon model file" in capsys.readouterr().err
    # A log with no statements has nothing to learn from: said, and no file written.
    opened = _write(tmp_path / "opened.jsonl", simulate(5, 1, seed=1)[0][:5])
    assert main(["train", str(opened), "--out", str(tmp_path / "none.model")]) == 2
    assert "has no outcomes to learn from" in capsys.readouterr().err and not (tmp_path / "none.model").exists()


def test_the_learner_is_chosen_by_flag_or_setting_and_a_model_file_keeps_its_own(
        logs: tuple[pathlib.Path, pathlib.Path, pathlib.Path], tmp_path: pathlib.Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _, later, _ = logs
    by_flag, by_setting, default = (tmp_path / f"{n}.jsonl" for n in ("flag", "setting", "default"))
    # One partition and 600 accounts: enough outcomes for a learned model to take over from the scorecard
    # (it must rank better at the 5% level), so the learner shows.
    history = _write(tmp_path / "history.jsonl", simulate(600, 150, seed=5)[0])
    one = ["--partitions", "1", "--quiet"]
    assert main(["replay", str(history), "--learner", "batch", "--out", str(by_flag), *one]) == 0
    monkeypatch.setenv("RISKMON_LEARNER", "batch")
    assert main(["replay", str(history), "--out", str(by_setting), *one]) == 0
    monkeypatch.delenv("RISKMON_LEARNER")
    assert main(["replay", str(history), "--out", str(default), *one]) == 0
    assert by_flag.read_bytes() == by_setting.read_bytes() != default.read_bytes()
    capsys.readouterr()
    model = tmp_path / "batch.model"
    assert main(["train", str(history), "--learner", "batch", "--out", str(model)]) == 0
    assert load_model(model)[0].learner == "batch" and "learner=batch" in load_model(model)[1].learner
    capsys.readouterr()
    assert main(["replay", str(later), "--model", str(model), "--learner", "tree", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--learner tree, but the model file" in err and "holds a batch model" in err and err.count("\n") == 1
