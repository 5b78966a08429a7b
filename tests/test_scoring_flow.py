"""End to end: the scoring flow with the champion of conftest's `first_run`: each file scored and logged to MLflow
with its drift check, on threads and on a local Dask cluster; an unknown alias and a damaged registry artifact
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from digitpipe.config import PipelineConfig
from digitpipe.data import load_dataset
from digitpipe.batch_scoring import OnnxScorer
from tests.helpers import assert_one_line_error, kaggle_frame, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_scoring_flow_scores_each_file_with_the_champion_and_logs_to_mlflow(first_run, fixture_dir, tracking, tmp_path):
    from flows.scoring_flow import scoring_flow

    _, summary = first_run
    config = write_config(tmp_path / "mlflow.yaml", **tracking.model_dump(exclude={"config_file"}))
    inputs = []
    for i, rows in enumerate((300, 200)):
        inputs.append(tmp_path / f"batch{i}.csv")
        kaggle_frame(load_dataset(fixture_dir), labelled=False).iloc[:rows].to_csv(inputs[-1], index=False)
    reports = scoring_flow(inputs, model=f"models:/{tracking.registered_model}@champion", config=config)
    assert [r["scored"] for r in reports] == [300, 200]
    champion_onnx = OnnxScorer(summary["champion"]["onnx_path"])
    for path in inputs:
        out = pd.read_csv(path.with_name(path.name + ".predictions.csv"))
        expected = champion_onnx.predict(pd.read_csv(path).to_numpy().reshape(-1, 28, 28).astype(np.uint8))
        np.testing.assert_array_equal(out.Label, expected)
        sidecar = json.loads(path.with_name(path.name + ".predictions.csv.json").read_text())
        assert sidecar["model"]["version"] == summary["champion"]["model_version"]
    client = MlflowClient(tracking.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(tracking.experiment).experiment_id],
                              "tags.`digitpipe.kind` = 'scoring'")
    assert sorted(r.data.metrics["rows_scored"] for r in runs) == [200, 300]
    for run in runs:  # digits like the training data: no drift, and the check is on the run
        assert run.data.tags["drift_verdict"] == "ok" and "drift_psi_pixel_mean" in run.data.metrics
        assert sorted(a.path for a in client.list_artifacts(run.info.run_id, "drift")) == [
            "drift/data_docs", "drift/histograms.png", "drift/report.html"]
        assert run.data.tags["batch_suite"] == "passed"  # the GX suite the champion's reference implies
        docs = [a.path for a in client.list_artifacts(run.info.run_id, "drift/data_docs")]
        assert "drift/data_docs/index.html" in docs and "drift/data_docs/suite.json" in docs


def test_unknown_alias_is_a_clear_error(first_run, tracking, fixture_dir, tmp_path, digitpipe_cli):
    result = digitpipe_cli("score", "--model", f"models:/{tracking.registered_model}@nobody", "--input", fixture_dir,
                           "--output", tmp_path / "o.csv", tracking_uri=tracking.tracking_uri)
    assert_one_line_error(result.code, result.err, 2,
                          f"models:/{tracking.registered_model}@nobody: not in the registry at {tracking.tracking_uri}")
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("damage", ["corrupt", "delete"])
def test_scoring_refuses_a_damaged_registry_artifact(damage, first_run, tracking, fixture_dir, tmp_path, digitpipe_cli):
    from flows.training import training_flow

    out = tmp_path / "run"
    cfg = PipelineConfig(data=fixture_dir, models=("logreg",), out_dir=out, tracking=tracking.model_copy(
        update={"registered_model": f"damaged-{damage}"}))
    version = training_flow(cfg)["models"]["logreg"]["model_version"]
    client = MlflowClient(tracking.tracking_uri)
    mv = client.get_model_version(f"damaged-{damage}", version)
    logged_model = client.get_logged_model(mv.source.removeprefix("models:/"))  # source: models:/m-<id>
    stored = Path(logged_model.artifact_location.removeprefix("file://")) / "model.onnx"
    if damage == "corrupt":
        stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    else:
        stored.unlink()
    result = digitpipe_cli("score", "--model", f"models:/damaged-{damage}/{version}", "--input", fixture_dir,
                           "--output", tmp_path / "o.csv",
                           tracking_uri=tracking.tracking_uri)
    assert_one_line_error(result.code, result.err, 2, f"models:/damaged-{damage}/{version}: " + (
        "the stored ONNX file does not match the checksum" if damage == "corrupt" else
        "the registered model holds no .onnx file"))
    assert not list(tmp_path.glob("o.csv*"))


# after the scoring flow's test: it counts the scoring runs in the experiment, and this one logs three more
def test_scoring_scales_out_on_a_local_dask_cluster(first_run, fixture_dir, tracking, tmp_path):
    from flows import local_cluster
    from flows.scoring_flow import score_files

    config = write_config(tmp_path / "mlflow.yaml", **tracking.model_dump(exclude={"config_file"}))
    frame = kaggle_frame(load_dataset(fixture_dir), labelled=False)
    inputs = []
    for i in range(3):
        inputs.append(tmp_path / f"part{i}.csv")
        frame.iloc[i * 100 : (i + 1) * 100].to_csv(inputs[-1], index=False)
    with local_cluster(2) as started:
        reports = score_files(inputs, started(), model=f"models:/{tracking.registered_model}@champion", config=config)
    assert [r["scored"] for r in reports] == [100, 100, 100]
    assert all(path.with_name(path.name + ".predictions.csv").is_file() for path in inputs)
