"""Configuration: mlflow.yaml, the MLFLOW_TRACKING_URI override, and readable errors."""

from pathlib import Path

import pytest

from digitpipe.config import PipelineConfig, build, load_tracking_config
from digitpipe.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def test_repo_mlflow_yaml_loads_with_the_documented_defaults(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_tracking_config(ROOT / "mlflow.yaml")
    assert cfg.registered_model == "digits" and cfg.champion_alias == "champion"
    assert cfg.tracking_uri.startswith("sqlite:///")


def test_environment_overrides_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert load_tracking_config(ROOT / "mlflow.yaml").tracking_uri == "sqlite:///elsewhere.db"


def test_unknown_setting_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "mlflow.yaml"
    path.write_text("registred_model: typo\n")
    with pytest.raises(UserError, match="registred_model"):
        load_tracking_config(path)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        build(PipelineConfig, {"data": "x", "models": ("lenet", "resnet")}, source="flags")


def test_epochs_must_be_positive():
    with pytest.raises(UserError, match="epochs"):
        build(PipelineConfig, {"data": "x", "epochs": 0}, source="flags")
