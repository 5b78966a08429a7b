"""What a registered version carries beyond its ONNX file: the split it was trained on (`digitpipe export
--quantize` checks int8 on that split's held-out part) and the drift monitor's reference (`digitpipe score`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from digitpipe.config import PipelineConfig, TrackingConfig
from digitpipe.data import load_dataset
from digitpipe.monitoring.features import image_features
from tests.helpers import write_kaggle_csv

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


def _export(digitpipe_cli, tracking, tmp_path, *args: str) -> tuple[int, str, str]:
    result = digitpipe_cli("export", "--quantize", "--max-drop", "1.0", "--output", tmp_path / "int8.onnx", *args,
                           tracking_uri=tracking.tracking_uri)
    return result.code, result.out.strip(), result.err.strip()


def test_a_registry_version_is_checked_on_its_own_runs_split(lenet_seed_7, digitpipe_cli, tmp_path):
    tracking, version, _ = lenet_seed_7
    code, out, err = _export(digitpipe_cli, tracking, tmp_path, "--model", f"models:/{NAME}/{version}")
    assert code == 0 and out.startswith("int8 accepted: held-out accuracy ")
    assert out.endswith(f"checked on the held-out part of its training run's split (book, seed 7) -> "
                        f"{tmp_path / 'int8.onnx'}")
    tags = MlflowClient(tracking.tracking_uri).get_model_version(NAME, version).tags
    assert tags["int8_reason"].endswith("checked on the held-out part of its training run's split (book, seed 7)")


def test_data_that_does_not_reproduce_the_split_is_refused(lenet_seed_7, fixture_dir, digitpipe_cli, tmp_path):
    tracking, version, _ = lenet_seed_7
    data = load_dataset(fixture_dir)
    write_kaggle_csv(tmp_path / "other.csv", data.subset(np.arange(900)))
    code, out, err = _export(digitpipe_cli, tracking, tmp_path, "--model", f"models:/{NAME}/{version}",
                             "--data", str(tmp_path / "other.csv"))
    assert code == 2 and out == ""
    assert err.startswith(f"digitpipe: error: {tmp_path / 'other.csv'}: does not reproduce the split the model was "
                          "trained on: the rebuilt training part has digest ")
    assert not (tmp_path / "int8.onnx").exists()


def test_a_registry_version_refuses_a_seed_of_the_users(lenet_seed_7, digitpipe_cli, tmp_path):
    tracking, version, _ = lenet_seed_7
    code, _, err = _export(digitpipe_cli, tracking, tmp_path, "--model", f"models:/{NAME}/{version}",
                           "--seed", "42")
    assert code == 2
    assert err == (f"digitpipe: error: models:/{NAME}/{version} is checked on its training run's split: "
                   "leave out --protocol and --seed")


def test_a_plain_onnx_file_needs_the_split_named(lenet_seed_7, fixture_dir, digitpipe_cli, tmp_path):
    tracking, _, onnx_path = lenet_seed_7
    code, _, err = _export(digitpipe_cli, tracking, tmp_path, "--model", onnx_path, "--data", str(fixture_dir))
    assert code == 2
    assert err == ("digitpipe: error: a .onnx file has no training run to rebuild its split from: give --data, "
                   "--protocol and --seed")
    code, out, _ = _export(digitpipe_cli, tracking, tmp_path, "--model", onnx_path, "--data", str(fixture_dir),
                           "--protocol", "book", "--seed", "7")
    assert code == 0 and out.endswith(f"checked on the held-out part of the split named (book, seed 7) -> "
                                      f"{tmp_path / 'int8.onnx'}")


def _score(monitor_args, digitpipe_cli, tracking, tmp_path, data, *args: str) -> tuple[int, list[str], dict]:
    result = digitpipe_cli("score", "--input", data, "--output", tmp_path / "p.csv",
                           *monitor_args, *args, tracking_uri=tracking.tracking_uri)
    sidecar = json.loads((tmp_path / "p.csv.json").read_text()) if (tmp_path / "p.csv.json").exists() else {}
    return result.code, result.out.splitlines(), sidecar


def test_scoring_checks_a_batch_against_the_versions_training_data(lenet_seed_7, fixture_dir, digitpipe_cli, tmp_path):
    tracking, version, _ = lenet_seed_7
    code, lines, sidecar = _score(["--model", f"models:/{NAME}/{version}"], digitpipe_cli, tracking, tmp_path,
                                  fixture_dir)
    assert code == 0 and lines[1] == f"drift check: ok against the training data of v{version}"
    drift = sidecar["drift"]
    assert (drift["verdict"], drift["reference_version"], drift["rows"]) == ("ok", version, 1000)
    assert set(drift["features"]) == {*image_features(load_dataset(fixture_dir).images[:1]), "predicted_class",
                                      "confidence"}
    assert all(f["distance"] < f["threshold"] for f in drift["features"].values())


def test_a_drifted_batch_is_reported_and_still_scored(lenet_seed_7, fixture_dir, digitpipe_cli, tmp_path):
    tracking, version, _ = lenet_seed_7
    data = load_dataset(fixture_dir)
    write_kaggle_csv(tmp_path / "inverted.csv", 255 - data.images)  # white ink on black
    code, lines, sidecar = _score(["--model", f"models:/{NAME}/{version}"], digitpipe_cli, tracking, tmp_path,
                                  tmp_path / "inverted.csv")
    assert code == 0 and (tmp_path / "p.csv").exists() and sidecar["scored"] == 1000
    assert lines[1].startswith(f"drift check: drift against the training data of v{version} (")
    assert sidecar["drift"]["verdict"] == "drift" and {"pixel_mean", "ink_fraction"} <= set(sidecar["drift"]["moved"])


def test_a_plain_onnx_file_is_checked_only_with_its_reference(lenet_seed_7, fixture_dir, digitpipe_cli, tmp_path):
    tracking, _, onnx_path = lenet_seed_7
    code, lines, sidecar = _score(["--model", onnx_path], digitpipe_cli, tracking, tmp_path, fixture_dir)
    assert code == 0 and lines[1].startswith("drift check: none (")
    assert sidecar["drift"]["verdict"] == "no_reference"
    reference = str(Path(onnx_path).with_name("monitor_reference.json"))
    code, lines, sidecar = _score(["--model", onnx_path, "--reference", reference], digitpipe_cli, tracking,
                                  tmp_path, fixture_dir)
    assert code == 0 and lines[1].startswith("drift check: ok against the training data of ")


def _monitor_reference(digitpipe_cli, tracking, tmp_path, *args: str) -> tuple[int, str, str]:
    result = digitpipe_cli("monitor", "reference", *args,
                           tracking_uri=tracking.tracking_uri)
    return result.code, result.out.strip(), result.err.strip()


def test_a_reference_is_built_again_from_the_training_split(lenet_seed_7, fixture_dir, digitpipe_cli, tmp_path):
    tracking, version, onnx_path = lenet_seed_7
    code, out, _ = _monitor_reference(digitpipe_cli, tracking, tmp_path, "--model", f"models:/{NAME}/{version}")
    assert code == 0 and out == (f"recorded the drift reference of models:/{NAME}/{version} on its run "
                                 "(from its training run's split (book, seed 7))")
    code, out, _ = _monitor_reference(digitpipe_cli, tracking, tmp_path, "--model", onnx_path, "--data",
                                      str(fixture_dir), "--protocol", "book", "--seed", "7", "--output",
                                      str(tmp_path / "ref.json"))
    assert code == 0 and out == f"wrote {tmp_path / 'ref.json'} (from the split named (book, seed 7))"
    rebuilt = json.loads((tmp_path / "ref.json").read_text())
    assert rebuilt == json.loads(Path(onnx_path).with_name("monitor_reference.json").read_text())  # as registered


def test_without_its_training_data_there_is_plainly_no_reference(lenet_seed_7, digitpipe_cli, tmp_path):
    tracking, version, _ = lenet_seed_7
    code, _, err = _monitor_reference(digitpipe_cli, tracking, tmp_path, "--model", f"models:/{NAME}/{version}",
                                      "--data", str(tmp_path / "gone"))
    assert code == 2 and err == (f"digitpipe: error: no reference for models:/{NAME}/{version}: "
                                 f"{tmp_path / 'gone'}: no such file or directory")
