"""Against a real `mlflow server` on loopback: the promotion story, the CLI's registry commands and the MLflow UI in
headless Chromium (Prefect deployments on a real `prefect server`: tests/test_deployments.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from digitpipe.config import PipelineConfig, TrackingConfig
from flows.startup import free_port
from tests.conftest import ROOT
from tests.helpers import CliResult, assert_one_line_error, digitpipe, environ, fluent_tracking_uri, write_config

pytestmark = [pytest.mark.slow, pytest.mark.servers]
DEMO = ROOT / "data" / "demo"
MODEL = "digits"


@pytest.fixture(scope="module")
def config_file(mlflow_server, tmp_path_factory) -> Path:
    """An mlflow.yaml for the server, with the shipped promotion gate (margin, significance)."""
    # logreg reaches ~87% on the fixture's 250 held-out images: a floor below that, so it can be the first champion
    return write_config(tmp_path_factory.mktemp("config") / "mlflow.yaml", tracking_uri=mlflow_server,
                        promotion={"min_accuracy": 0.8})


def with_config(*args: str, config: Path, timeout: float = 300) -> CliResult:
    """`digitpipe ARGS --config CONFIG`, its store named only by the file (mlflow.set_tracking_uri exports the
    variable)."""
    return digitpipe(*args, "--config", config, env=environ(MLFLOW_TRACKING_URI=None), timeout=timeout)


@pytest.fixture(scope="module")
def three_runs(prefect_api, config_file, fixture_dir, tmp_path_factory) -> list[dict]:
    """The issue's story: logreg, then lenet, then logreg again, each a pipeline run against the server (on the
    1,000-image fixture, where 6 epochs make LeNet right on 21 held-out digits logreg gets wrong, wrong on 2)."""
    from flows.training import training_flow

    tracking = TrackingConfig(**yaml.safe_load(config_file.read_text()))
    summaries = []
    for models, epochs in ((("logreg",), None), (("lenet",), 6), (("logreg",), None)):
        out = tmp_path_factory.mktemp("run")
        summaries.append(training_flow(PipelineConfig(data=fixture_dir, models=models, epochs=epochs, out_dir=out,
                                                      tracking=tracking, force=True)))  # logreg again: trained
    return summaries


def test_champion_moves_only_when_earned_and_every_decision_is_tagged(three_runs, mlflow_server):
    versions = [next(iter(s["models"].values()))["model_version"] for s in three_runs]
    assert versions == ["1", "2", "3"]
    client = MlflowClient(mlflow_server)
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"  # lenet
    assert str(client.get_model_version_by_alias(MODEL, "previous_champion").version) == "1"  # the first logreg
    tags = {v: client.get_model_version(MODEL, v).tags for v in versions}
    assert tags["1"]["verdict"] == "promoted" and tags["1"]["verdict_reason"] == "first champion"
    assert tags["2"]["verdict"] == "promoted" and float(tags["2"]["mcnemar_p_value"]) < 0.05
    assert tags["2"]["champion_version"] == "1" and float(tags["2"]["champion_accuracy"]) < float(
        tags["2"]["challenger_accuracy"])
    assert tags["3"]["verdict"] == "rejected" and tags["3"]["champion_version"] == "2"
    assert "does not beat the champion" in tags["3"]["verdict_reason"]
    assert three_runs[2]["champion"]["name"] == "lenet" and three_runs[2]["champion"]["promoted"] is False


def test_models_lists_versions_with_aliases_accuracy_and_verdict(three_runs, config_file):
    done = with_config("models", config=config_file)
    assert done.code == 0, done.err
    rows = {line.split("│")[1].strip(): line for line in done.out.splitlines() if line.count("│") > 5}
    assert {"1", "2", "3"} <= set(rows)
    assert "champion" in rows["2"] and "lenet" in rows["2"] and "promoted" in rows["2"]
    assert "previous_champion" in rows["1"] and "rejected" in rows["3"]


def test_champion_loads_as_pyfunc_from_the_server(three_runs, mlflow_server):
    import mlflow
    import numpy as np

    from digitpipe.data import load_dataset

    with fluent_tracking_uri(mlflow_server):  # pyfunc takes no URI argument
        model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    images = load_dataset(DEMO).images[:16].reshape(-1, 1, 28, 28).astype(np.float32)
    output = model.predict(images)
    scores = np.asarray(next(iter(output.values())) if isinstance(output, dict) else output)
    assert scores.shape == (16, 10)


@pytest.mark.parametrize("args, message", [
    (["promote", "--version", "99"], "digits has no version '99'"),
    (["promote"], "give exactly one of --version N or --rollback"),
    (["score", "--model", "models:/digits@no-such-alias", "--input", str(DEMO), "--output", "/tmp/x.csv"],
     "models:/digits@no-such-alias: not in the registry"),
    (["score", "--model", "models:/no-such-model/1", "--input", str(DEMO), "--output", "/tmp/x.csv"],
     "models:/no-such-model/1: not in the registry"),
])
def test_registry_names_that_do_not_exist_are_one_clear_line(three_runs, config_file, args, message):
    done = with_config(*args, config=config_file)
    assert_one_line_error(done.code, done.err, 2, message)


def test_unreachable_tracking_server_fails_within_30_seconds(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "mlflow.yaml", tracking_uri=uri)
    done = with_config("models", config=config, timeout=30)  # the bound; MLflow's capped retries take ~7 s
    assert_one_line_error(done.code, done.err, 2, f"cannot reach the MLflow tracking store at {uri}")


def test_rollback_and_hand_promotion_move_the_aliases_and_are_recorded(three_runs, config_file, mlflow_server):
    client = MlflowClient(mlflow_server)
    done = with_config("promote", "--rollback", config=config_file)
    assert done.code == 0, done.err
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(MODEL, "previous_champion").version) == "2"
    assert "demoted by rollback" in client.get_model_version(MODEL, "2").tags["rollback"]
    done = with_config("promote", "--version", "2", config=config_file)
    assert done.code == 0, done.err
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "2"
    assert client.get_model_version(MODEL, "2").tags["verdict"] == "promoted_by_hand"


@pytest.mark.browser
def test_mlflow_ui_shows_runs_comparison_and_champion(three_runs, mlflow_server, chromium):
    """Debian's Chromium, headless, driven by Playwright: what a user sees in the MLflow UI."""
    browser, shots = chromium
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("digitpipe").experiment_id
    pipeline_runs = client.search_runs([experiment], "tags.mlflow.runName = 'pipeline'")
    model_runs = client.search_runs([experiment], "tags.mlflow.runName != 'pipeline'")
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(f"{mlflow_server}/#/experiments/{experiment}/runs")
    page.get_by_text("Training runs").first.wait_for(timeout=60_000)
    page.get_by_text("pipeline").first.wait_for(timeout=60_000)
    page.screenshot(path=shots / "experiment.png")

    run_ids = json.dumps([r.info.run_id for r in model_runs])
    page.goto(f"{mlflow_server}/#/compare-runs?runs={run_ids}&experiments={json.dumps([experiment])}")
    page.get_by_text("test_accuracy").first.wait_for(timeout=60_000)
    compared = page.inner_text("body")
    page.screenshot(path=shots / "compare-runs.png", full_page=True)

    page.goto(f"{mlflow_server}/#/models/{MODEL}")
    page.get_by_text("Version 3").first.wait_for(timeout=60_000)
    page.get_by_text("@ champion").or_(page.get_by_text("champion")).first.wait_for(timeout=30_000)
    body = page.inner_text("body")
    page.screenshot(path=shots / "registered-model.png", full_page=True)
    assert "champion" in body and all(f"Version {v}" in body for v in ("1", "2", "3"))
    assert len(pipeline_runs) == 3 and "lenet" in compared and "logreg" in compared
    print(f"screenshots written to {shots}")
