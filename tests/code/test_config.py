"""Configuration: mlflow.yaml, the MLFLOW_TRACKING_URI override, and readable errors."""

from pathlib import Path

import pytest

from digitpipe.config import BUILT_IN, PipelineConfig, TrackingConfig, build, load_tracking_config
from digitpipe.errors import UserError
from tests.helpers import assert_one_line_error, write_config

ROOT = Path(__file__).resolve().parents[2]


def test_repo_mlflow_yaml_loads_with_the_documented_defaults(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_tracking_config(ROOT / "mlflow.yaml")
    assert cfg.registered_model == "digits" and cfg.champion_alias == "champion"
    assert cfg.tracking_uri.startswith("sqlite:///")
    assert (cfg.promotion.min_accuracy, cfg.promotion.min_comparable_images) == (0.85, 200)


def _config_file(tmp_path, monkeypatch, text: str) -> Path:
    """mlflow.yaml as `text` (not tests.helpers.write_config: these tests are about the file's own text)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "mlflow.yaml").write_text(text)
    return tmp_path / "mlflow.yaml"


def test_gate_settings_at_the_top_level_are_still_read(tmp_path, monkeypatch):
    """mlflow.yaml files written before the `promotion` section had the gate's keys at the top level."""
    cfg = load_tracking_config(_config_file(tmp_path, monkeypatch, "registered_model: old\nmin_accuracy: 0.5\n"
                                                                   "max_p_value: 0.01\n"))
    assert (cfg.registered_model, cfg.promotion.min_accuracy, cfg.promotion.max_p_value) == ("old", 0.5, 0.01)


def test_a_bad_gate_setting_names_its_section(tmp_path, monkeypatch):
    path = _config_file(tmp_path, monkeypatch, "promotion:\n  min_accuracy: 2\n")
    with pytest.raises(UserError, match=r"mlflow.yaml: promotion.min_accuracy: Input should be less than or equal"):
        load_tracking_config(path)


def test_environment_overrides_tracking_uri(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert load_tracking_config(ROOT / "mlflow.yaml").tracking_uri == "sqlite:///elsewhere.db"


def test_unknown_setting_is_a_user_error(tmp_path, monkeypatch):
    path = _config_file(tmp_path, monkeypatch, "registred_model: typo\n")
    with pytest.raises(UserError, match="registred_model"):
        load_tracking_config(path)


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="unknown model"):
        build(PipelineConfig, {"data": "x", "models": ("lenet", "resnet")}, source="flags")


def test_epochs_must_be_positive():
    with pytest.raises(UserError, match="epochs"):
        build(PipelineConfig, {"data": "x", "epochs": 0}, source="flags")


def test_the_shipped_mlflow_yaml_holds_the_built_in_defaults(monkeypatch):
    """One set of defaults: a run from a folder without mlflow.yaml gets the same gate as one beside the shipped file."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    shipped = load_tracking_config(ROOT / "mlflow.yaml")
    assert shipped.config_file == str(ROOT / "mlflow.yaml")
    assert shipped.model_copy(update={"config_file": BUILT_IN}) == TrackingConfig()


def test_without_a_file_the_built_in_defaults_are_used_and_named(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert load_tracking_config() == TrackingConfig() and TrackingConfig().config_file == "built-in defaults"
    write_config(tmp_path / "mlflow.yaml", registered_model="here")
    found = load_tracking_config()
    assert (found.registered_model, found.config_file) == ("here", str(tmp_path / "mlflow.yaml"))


@pytest.mark.parametrize("command", [["models"], ["promote", "--rollback"], ["run", "--data", "x"],
                                     ["score", "--model", "m.onnx", "--input", "x", "--output", "y"]])
def test_an_explicit_config_that_does_not_exist_is_one_line(tmp_path, monkeypatch, digitpipe_cli, command):
    monkeypatch.chdir(tmp_path)
    result = digitpipe_cli(*command, "--config", tmp_path / "nosuch.yaml")
    assert_one_line_error(result.code, result.err, 2, f"{tmp_path / 'nosuch.yaml'}: no such configuration file")


def test_models_in_a_folder_without_a_store_creates_none(tmp_path, monkeypatch, digitpipe_cli):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    result = digitpipe_cli("models")
    assert_one_line_error(result.code, result.err, 2, "no MLflow store at sqlite:///mlflow.db (no such file): "
                                                     "nothing has been registered there")
    assert list(tmp_path.iterdir()) == []


def test_every_run_records_its_configuration_file(mlflow_store, monkeypatch):
    from mlflow import MlflowClient

    from digitpipe.tracking import Tracker

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    cfg = load_tracking_config(ROOT / "mlflow.yaml")
    with Tracker(cfg).runs.run("any") as run_id:
        pass
    assert MlflowClient(mlflow_store).get_run(run_id).data.tags["digitpipe.config"] == str(ROOT / "mlflow.yaml")
