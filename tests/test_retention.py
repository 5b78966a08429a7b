"""End to end: `digitpipe gc --keep N` deletes the versions beyond the newest N with their model files and runs,
never one an alias names, one awaiting approval or one a running pipeline has not judged yet, and a kept version
keeps its evidence card; --dry-run only lists them."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from mlflow import MlflowClient

from tests.helpers import write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_gc_keeps_the_newest_the_aliased_and_the_awaiting(tmp_path, fixture_dir, digitpipe_cli):
    uri = f"sqlite:///{tmp_path}/m.db"
    config = write_config(tmp_path / "mlflow.yaml", tracking_uri=uri, artifact_location=str(tmp_path / "artifacts"),
                          promotion={"min_accuracy": 0})
    run = ("run", "--data", fixture_dir, "--quiet", "--config", config, "--out", tmp_path / "out", "--models")
    for models in (("logreg", "--set", "logreg.max_iter=2"), ("mlp", "--epochs", "5"),
                   ("logreg", "--set", "logreg.max_iter=3"), ("logreg", "--set", "logreg.max_iter=4")):
        assert digitpipe_cli(*run, *models).code == 0
    client = MlflowClient(uri)
    aliases = {a: str(v) for a, v in client.get_registered_model("digits").aliases.items()}
    assert aliases == {"champion": "2", "previous_champion": "1"}
    doomed = client.get_model_version("digits", "3")

    listed = digitpipe_cli("gc", "--keep", 1, "--dry-run", "--config", config)
    assert listed.code == 0, listed.err
    assert listed.out.splitlines()[0].startswith("would delete v3 (logreg, rejected, registered ")
    assert listed.out.splitlines()[-1] == ("digits: would delete 1 version(s), kept the newest 1 and every version "
                                           "an alias names or that awaits approval")
    assert len(client.search_model_versions("name='digits'")) == 4

    files = Path(urlparse(client.get_run(doomed.run_id).info.artifact_uri).path)
    model_files = Path(urlparse(client.get_logged_model(doomed.source.removeprefix("models:/")).artifact_location).path)
    assert (files / "report" / "model.onnx").is_file() and any(model_files.rglob("*.onnx"))
    deleted = digitpipe_cli("gc", "--keep", 1, "--config", config)
    assert deleted.code == 0, deleted.err
    assert sorted(str(mv.version) for mv in client.search_model_versions("name='digits'")) == ["1", "2", "4"]
    assert client.get_run(doomed.run_id).info.lifecycle_stage == "deleted" and not (files / "report").exists()
    assert not model_files.exists()
    pipeline = doomed.tags["pipeline_run_id"]  # v3's run of the pipeline, which no version left names
    assert client.get_run(pipeline).info.lifecycle_stage == "deleted"
    champion = client.get_model_version("digits", "2")  # what is kept keeps its files, its evidence card among them
    kept_files = Path(urlparse(client.get_run(champion.run_id).info.artifact_uri).path)
    assert (kept_files / "report" / "model.onnx").is_file()
    assert sorted(p.name for p in (kept_files / "card").iterdir()) == ["card.html", "card.json", "disagreements.png"]
    assert client.get_run(champion.tags["pipeline_run_id"]).info.lifecycle_stage == "active"

    last = client.get_model_version("digits", "4")
    client.set_model_version_tag("digits", "4", "verdict", "awaiting_approval")
    awaiting = digitpipe_cli("gc", "--keep", 0, "--config", config)
    client.delete_model_version_tag("digits", "4", "verdict")  # registered, its pipeline still running: in flight
    client.update_run(last.tags["pipeline_run_id"], status="RUNNING")
    in_flight = digitpipe_cli("gc", "--keep", 0, "--config", config)
    for nothing in (awaiting, in_flight):
        assert nothing.out.splitlines() == ["digits: deleted 0 version(s), kept the newest 0 and every version an "
                                            "alias names or that awaits approval"], nothing.err
    assert sorted(str(mv.version) for mv in client.search_model_versions("name='digits'")) == ["1", "2", "4"]
    assert {a: str(v) for a, v in client.get_registered_model("digits").aliases.items()} == aliases
