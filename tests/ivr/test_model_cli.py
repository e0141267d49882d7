"""`ivr db seed --calls`, `ivr model train` and `ivr model evaluate` through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caller_id import learning
from ivr.cli import main


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "ivr.yaml"
    path.write_text(f"database_url: sqlite+aiosqlite:///{tmp_path / 'crm.sqlite3'}\n"
                    f"prediction:\n  model_file: {tmp_path / 'model.joblib'}\n", encoding="utf-8")
    return path


def ivr(config_file: Path, *args: str) -> int:
    return main(["--config", str(config_file), *args])


def test_seed_a_history_train_on_it_and_evaluate_the_model(config_file, tmp_path, capsys):
    assert ivr(config_file, "db", "seed", "--customers", "300", "--calls", "5000", "--seed", "3") == 0
    out = capsys.readouterr().out
    assert "call history: HistorySummary(calls=5000," in out

    assert ivr(config_file, "model", "train", "--holdout-days", "14") == 0
    out = capsys.readouterr().out
    model = learning.load(tmp_path / "model.joblib")
    assert f"trained on {model.trained['calls']} confirmed calls" in out
    for label in ("learned model", "catalogue rules", "newest open case"):
        assert label in out
    assert model.usable and "prediction: learned model (held-out top-1" in out

    assert ivr(config_file, "model", "evaluate", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"] == model.evaluation.model.to_dict()  # the saved held-out period again
    assert report["server_uses_model"] and report["model"]["top1"] > report["rules"]["top1"]

    since = model.evaluation.since.date()
    assert ivr(config_file, "model", "evaluate", "--from", since.isoformat(),
               "--to", model.evaluation.until.date().isoformat()) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"held-out calls from {since:%Y-%m-%d} 00:00") and "top-1" in out

    # Training up to an earlier day holds out the days before it.
    assert ivr(config_file, "model", "train", "--until", since.isoformat(), "--holdout-days", "10") == 0
    assert learning.load(tmp_path / "model.joblib").evaluation.until.date() > since


def test_without_calls_or_a_model_the_commands_say_what_is_missing(config_file, tmp_path, capsys):
    assert ivr(config_file, "model", "evaluate") == 1
    assert f"no model file {tmp_path / 'model.joblib'}" in capsys.readouterr().err
    assert ivr(config_file, "model", "train") == 1
    assert "no confirmed calls with stored features" in capsys.readouterr().err
    assert not (tmp_path / "model.joblib").exists()
    with pytest.raises(SystemExit):
        ivr(config_file, "model", "train", "--until", "3 Dec")
    assert "expected a day as YYYY-MM-DD" in capsys.readouterr().err
