"""`digitpipe export --quantize` checks int8 on the held-out part of the split the model was trained on."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow import MlflowClient

from digitpipe import cli
from digitpipe.config import PipelineConfig, TrackingConfig
from digitpipe.data import load_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
NAME = "digits-export"


@pytest.fixture(scope="module")
def lenet_seed_7(fixture_dir, mlflow_store, tmp_path_factory):
    """LeNet (1 epoch) trained on the fixture's book split with seed 7: (tracking, version, its .onnx file)."""
    from flows.training import training_flow

    tracking = TrackingConfig(tracking_uri=mlflow_store, experiment="export-test", registered_model=NAME,
                              artifact_location=str(tmp_path_factory.mktemp("artifacts")))
    cfg = PipelineConfig(data=fixture_dir, models=("lenet",), epochs=1, seed=7, tracking=tracking,
                         out_dir=tmp_path_factory.mktemp("run"))
    model = training_flow(cfg)["models"]["lenet"]
    return tracking, model["model_version"], model["onnx_path"]


def _export(monkeypatch, capsys, tracking, tmp_path, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri)
    monkeypatch.setattr("sys.argv", ["digitpipe", "export", "--quantize", "--max-drop", "1.0", "--output",
                                     str(tmp_path / "int8.onnx"), "--config", str(tmp_path / "none.yaml"), *args])
    code = cli.run_cli()
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def test_a_registry_version_is_checked_on_its_own_runs_split(lenet_seed_7, monkeypatch, capsys, tmp_path):
    tracking, version, _ = lenet_seed_7
    code, out, err = _export(monkeypatch, capsys, tracking, tmp_path, "--model", f"models:/{NAME}/{version}")
    assert code == 0 and out.startswith("int8 accepted: held-out accuracy ")
    assert out.endswith(f"checked on its training run's held-out part (book, seed 7) -> {tmp_path / 'int8.onnx'}")
    tags = MlflowClient(tracking.tracking_uri).get_model_version(NAME, version).tags
    assert tags["int8_reason"].endswith("checked on its training run's held-out part (book, seed 7)")


def test_data_that_does_not_reproduce_the_split_is_refused(lenet_seed_7, fixture_dir, monkeypatch, capsys, tmp_path):
    tracking, version, _ = lenet_seed_7
    data = load_dataset(fixture_dir)
    frame = pd.DataFrame(data.flat()[:900], columns=[f"pixel{i}" for i in range(784)])
    frame.insert(0, "label", data.labels[:900])
    frame.to_csv(tmp_path / "other.csv", index=False)
    code, out, err = _export(monkeypatch, capsys, tracking, tmp_path, "--model", f"models:/{NAME}/{version}",
                             "--data", str(tmp_path / "other.csv"))
    assert code == 2 and out == ""
    assert err.startswith(f"digitpipe: error: {tmp_path / 'other.csv'}: does not reproduce the split the model was "
                          "trained on: the rebuilt training part has digest ")
    assert not (tmp_path / "int8.onnx").exists()


def test_a_registry_version_refuses_a_seed_of_the_users(lenet_seed_7, monkeypatch, capsys, tmp_path):
    tracking, version, _ = lenet_seed_7
    code, _, err = _export(monkeypatch, capsys, tracking, tmp_path, "--model", f"models:/{NAME}/{version}",
                           "--seed", "42")
    assert code == 2
    assert err == (f"digitpipe: error: models:/{NAME}/{version} is checked on its training run's split: "
                   "leave out --protocol and --seed")


def test_a_plain_onnx_file_needs_the_split_named(lenet_seed_7, fixture_dir, monkeypatch, capsys, tmp_path):
    tracking, _, onnx_path = lenet_seed_7
    code, _, err = _export(monkeypatch, capsys, tracking, tmp_path, "--model", onnx_path, "--data", str(fixture_dir))
    assert code == 2
    assert err == ("digitpipe: error: a .onnx file has no training run to rebuild its split from: --quantize needs "
                   "--data, --protocol and --seed")
    code, out, _ = _export(monkeypatch, capsys, tracking, tmp_path, "--model", onnx_path, "--data", str(fixture_dir),
                           "--protocol", "book", "--seed", "7")
    assert code == 0 and out.endswith(f"checked on the split named (book, seed 7) -> {tmp_path / 'int8.onnx'}")
