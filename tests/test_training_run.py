"""End to end: one pipeline run of the whole zoo on the real fixture (conftest's `first_run`) against a sqlite MLflow
store, checked through the registry: the summary, registration and the champion, nested runs and their pictures,
lineage, the champion as a pyfunc, a weaker challenger, bad input from the CLI, a run for another registered
model, and the MLflow names a run produces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from digitpipe.config import PipelineConfig
from digitpipe.data import load_dataset, split_dataset
from digitpipe.batch_scoring import OnnxScorer
from tests.gitcheckout import checkout_head
from tests.helpers import assert_one_line_error, fluent_tracking_uri, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_summary_file_matches_returned_summary(first_run):
    cfg, summary = first_run
    assert json.loads(cfg.summary.read_text()) == summary
    assert set(summary["models"]) == {"logreg", "mlp", "dnn", "lenet", "fastcnn"}


def test_both_models_registered_and_champion_is_the_better(first_run, tracking):
    _, summary = first_run
    client = MlflowClient(tracking.tracking_uri)
    versions = {str(mv.version): mv for mv in client.search_model_versions(f"name='{tracking.registered_model}'")}
    for name, model in summary["models"].items():
        mv = versions[model["model_version"]]
        assert mv.tags["model_name"] == name and mv.run_id == model["run_id"]
        assert float(mv.tags["test_accuracy"]) == pytest.approx(model["accuracy"])
    best = max(summary["models"], key=lambda n: summary["models"][n]["accuracy"])
    champion = client.get_model_version_by_alias(tracking.registered_model, "champion")
    assert str(champion.version) == summary["models"][best]["model_version"] == summary["champion"]["model_version"]
    assert summary["champion"]["promoted"] is True and summary["champion"]["name"] == best


def test_runs_are_nested_and_carry_metrics_and_pictures(first_run, tracking):
    cfg, summary = first_run
    client = MlflowClient(tracking.tracking_uri)
    lenet = client.get_run(summary["models"]["lenet"]["run_id"])
    parent = client.get_run(lenet.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED" and "train_digest" in parent.data.params
    assert [m.step for m in client.get_metric_history(lenet.info.run_id, "val_accuracy")] == [1, 2, 3]
    assert lenet.data.params["epochs"] == "3" and lenet.data.params["lr"] == "0.05"
    assert lenet.data.tags["stop_reason"] == "completed 3 epochs"
    pictures = {a.path.removeprefix("report/") for a in client.list_artifacts(lenet.info.run_id, "report")}
    assert {"confusion_matrix.png", "confusion_matrix.json", "learning_curves.png", "feature_maps.png",
            "most_confident_errors.png", "model.onnx"} <= pictures
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"comparison.md", "comparison.png",
                                                                          "validation", "eda"}
    docs = {a.path for a in client.list_artifacts(parent.info.run_id, "validation/data_docs")}
    assert "validation/data_docs/index.html" in docs
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "eda")} >= {"eda/report.html", "eda/summary.json"}
    assert "| lenet |" in (Path(cfg.out_dir) / parent.info.run_id / "comparison" / "comparison.md").read_text()


def test_lineage_is_on_every_run_and_version(first_run, tracking):
    _, summary = first_run
    client = MlflowClient(tracking.tracking_uri)
    lenet = summary["models"]["lenet"]
    run = client.get_run(lenet["run_id"])
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    mv = client.get_model_version(tracking.registered_model, lenet["model_version"])
    for tags in (run.data.tags, parent.data.tags, mv.tags):
        assert tags["mlflow.source.git.commit"] == checkout_head()
        assert tags["prefect.flow_run_id"] != "None" and tags["data_digest"]
    assert run.data.tags["version.torch"] and parent.data.tags["version.mlflow"]
    contexts = {d.tags[0].value: d.dataset for d in parent.inputs.dataset_inputs}
    assert set(contexts) == {"training", "validation", "evaluation"}
    assert contexts["training"].source and contexts["evaluation"].digest
    assert {d.tags[0].value for d in run.inputs.dataset_inputs} == {"training", "evaluation"}
    assert {"seed", "lr", "epochs", "batch_size", "weight_decay"} <= set(run.data.params)


def test_champion_loads_as_an_mlflow_pyfunc_with_signature_and_example(first_run, fixture_dir, tracking):
    _, summary = first_run
    import mlflow

    with fluent_tracking_uri(tracking.tracking_uri):  # pyfunc takes no URI argument
        model = mlflow.pyfunc.load_model(f"models:/{tracking.registered_model}@champion")
    assert model.metadata.signature is not None and model.metadata.saved_input_example_info is not None
    images = load_dataset(fixture_dir).images[:7]
    expected = OnnxScorer(summary["champion"]["onnx_path"])
    output = model.predict(expected.as_input(images))
    scores = next(iter(output.values())) if isinstance(output, dict) else np.asarray(output)
    assert np.array_equal(np.asarray(scores).argmax(1), expected.predict(images))


def test_onnx_files_agree_with_reported_accuracy(first_run, fixture_dir):
    cfg, summary = first_run
    test = split_dataset(load_dataset(fixture_dir)).test
    for model in summary["models"].values():
        accuracy = np.mean(OnnxScorer(model["onnx_path"]).predict(test.images) == test.labels)
        assert accuracy == pytest.approx(model["accuracy"])
    assert summary["champion"]["onnx_path"] == summary["models"][summary["champion"]["name"]]["onnx_path"]


def test_weaker_challenger_does_not_move_the_champion(first_run, fixture_dir, tracking, tmp_path):
    from flows.training import training_flow

    _, first = first_run
    weaker = min(first["models"], key=lambda name: first["models"][name]["accuracy"])
    cfg = PipelineConfig(data=fixture_dir, models=(weaker,), epochs=1, out_dir=tmp_path, tracking=tracking)
    summary = training_flow(cfg)
    assert summary["champion"]["promoted"] is False
    assert summary["champion"]["model_version"] == first["champion"]["model_version"]
    mv = MlflowClient(tracking.tracking_uri).get_model_version(
        tracking.registered_model, summary["models"][weaker]["model_version"])
    assert mv.tags["verdict"] == "rejected" and "does not beat the champion" in mv.tags["verdict_reason"]
    assert float(mv.tags["champion_accuracy"]) == pytest.approx(first["champion"]["accuracy"])
    assert mv.tags["champion_version"] == first["champion"]["model_version"] and "mcnemar_p_value" in mv.tags
    expected = json.loads((Path(__file__).parent / "fixtures/mlflow_names.json").read_text())["rejected_version_tags"]
    assert sorted(mv.tags) == expected
    comparison, tags = _card(tracking, mv.version)["comparison"], mv.tags  # scored again for the card
    assert comparison["champion_version"] == tags["champion_version"]
    assert comparison["excluded"] == int(tags["comparison_excluded"])
    assert f"{comparison['mcnemar_p_value']:.3g}" == tags["mcnemar_p_value"]
    for figure in ("only_challenger_right", "only_champion_right", "challenger_accuracy", "champion_accuracy"):
        assert comparison[figure] == pytest.approx(float(tags[figure])), figure


def _card(tracking, version) -> dict:
    """The card.json logged on a version's run (named by its evidence_card tag)."""
    client = MlflowClient(tracking.tracking_uri)
    mv = client.get_model_version(tracking.registered_model, str(version))
    assert mv.tags["evidence_card"] == "card/card.html"
    return json.loads(Path(client.download_artifacts(mv.run_id, "card/card.json")).read_text())


def test_every_version_has_a_card_whose_figures_are_its_tags(first_run, tracking):
    _, summary = first_run
    client = MlflowClient(tracking.tracking_uri)
    for name, model in summary["models"].items():
        tags = client.get_model_version(tracking.registered_model, model["model_version"]).tags
        card = _card(tracking, model["model_version"])
        held = card["held_out"]
        assert card["model"]["name"] == name and card["decision"]["verdict"] == tags["verdict"]
        assert held["accuracy"] == pytest.approx(float(tags["test_accuracy"])) and held["images"] == 250
        assert held["accuracy_ci95"][0] < held["accuracy"] < held["accuracy_ci95"][1]
        metrics = client.get_run(model["run_id"]).data.metrics  # from the trained model, the card from its ONNX file
        for digit in held["per_digit"]:
            assert (digit["precision"], digit["recall"]) == pytest.approx(
                (metrics[f"test_precision_{digit['digit']}"], metrics[f"test_recall_{digit['digit']}"])), name
        assert card["trained_on"]["training_key"] == tags["training_key"]
        assert card["model"]["onnx_kb"] == pytest.approx(Path(model["onnx_path"]).stat().st_size / 1024, abs=0.1)


def test_the_card_command_writes_the_card_of_a_version_without_one(first_run, tracking, tmp_path, digitpipe_cli):
    _, summary = first_run
    version = summary["models"]["lenet"]["model_version"]
    client = MlflowClient(tracking.tracking_uri)
    client.delete_model_version_tag(tracking.registered_model, version, "evidence_card")  # as if from before cards
    config = write_config(tmp_path / "mlflow.yaml", tracking_uri=tracking.tracking_uri,
                          registered_model=tracking.registered_model)
    done = digitpipe_cli("card", "--version", version, "--output", tmp_path / "card", "--config", config)
    assert done.code == 0, done.err
    assert done.out.startswith(f"digits-test v{version} (lenet): held-out accuracy ")
    card = json.loads((tmp_path / "card" / "card.json").read_text())
    assert _card(tracking, version) == card and sorted(p.name for p in (tmp_path / "card").iterdir()) == [
        "card.html", "card.json"]  # nothing else written into --output, nor logged from it
    tags = client.get_model_version(tracking.registered_model, version).tags
    assert (tags["evidence_card"], card["held_out"]["accuracy"]) == ("card/card.html",
                                                                     pytest.approx(float(tags["test_accuracy"])))
    assert "<h2>Held-out accuracy: " in (tmp_path / "card" / "card.html").read_text()
    missing = digitpipe_cli("card", "--version", "999", "--config", config)
    assert_one_line_error(missing.code, missing.err, 2, "digits-test has no version '999'")


@pytest.mark.parametrize("content, message", [
    (b"", "file is empty"),
    (b"label,pixel0\n1,2\n", "header must be"),
    (b"\x00\x01\x02 not digits", "neither an MNIST IDX file nor a Kaggle CSV"),
])
def test_cli_bad_input_is_one_line_and_registers_nothing(content, message, tmp_path, tracking, digitpipe_cli,
                                                         first_run):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(content)
    client = MlflowClient(tracking.tracking_uri)
    before = len(client.search_model_versions(f"name='{tracking.registered_model}'"))
    champion = str(client.get_model_version_by_alias(tracking.registered_model, "champion").version)
    result = digitpipe_cli("run", "--data", bad, "--out", tmp_path, tracking_uri=tracking.tracking_uri)
    assert_one_line_error(result.code, result.err, 2, f"{bad}: {message}")
    assert len(client.search_model_versions(f"name='{tracking.registered_model}'")) == before
    assert str(client.get_model_version_by_alias(tracking.registered_model, "champion").version) == champion


def test_a_run_named_for_another_registered_model_registers_and_judges_there(fixture_dir, tracking, tmp_path):
    """A triggered retraining names its event's model (prefect.yaml): it overrides the tracking config's."""
    from flows.training import training_flow

    cfg = PipelineConfig(data=fixture_dir, models=("logreg",), out_dir=tmp_path, tracking=tracking,
                         registered_model="digits-from-event")
    summary = training_flow(cfg)
    client = MlflowClient(tracking.tracking_uri)
    version = client.get_model_version("digits-from-event", summary["models"]["logreg"]["model_version"])
    assert (version.tags["model_name"], version.tags["verdict"]) == ("logreg", summary["verdict"]["verdict"])
    assert client.search_model_versions(f"name='digits-test' and run_id='{version.run_id}'") == []


def _artifact_names(client, run_id, path=None):
    names = []
    for artifact in client.list_artifacts(run_id, path):
        names += _artifact_names(client, run_id, artifact.path) if artifact.is_dir else [artifact.path]
    return names


def _names(client, run):
    """The names a user sees on a run (MLflow's own tags aside), as recorded in tests/fixtures/mlflow_names.json."""
    kept_mlflow_tags = ("mlflow.parentRunId", "mlflow.source.git.commit")
    return {"params": sorted(run.data.params), "metrics": sorted(run.data.metrics),
            "tags": sorted(t for t in run.data.tags if not t.startswith("mlflow.") or t in kept_mlflow_tags),
            "artifacts": sorted(a for a in _artifact_names(client, run.info.run_id)
                                if "data_docs" not in a or a.endswith("index.html"))}


def _added_by_export(name):
    """`digitpipe export --quantize` (another test, in any order) adds the int8 file and its verdict to the version."""
    return name.startswith(("model_int8/", "int8_")) or name == "fp32_accuracy"


def test_a_run_logs_exactly_the_recorded_mlflow_names(first_run, tracking):
    """The names recorded before the house restructuring: runs, metrics, tags, artifacts and version tags."""
    _, summary = first_run
    expected = json.loads((Path(__file__).parent / "fixtures/mlflow_names.json").read_text())
    client = MlflowClient(tracking.tracking_uri)
    for name, model in summary["models"].items():
        run = client.get_run(model["run_id"])
        names = _names(client, run)
        names["artifacts"] = [a for a in names["artifacts"] if not _added_by_export(a)]
        assert names == expected["model_run"][name], name
        tags = client.get_model_version(tracking.registered_model, model["model_version"]).tags
        assert sorted(t for t in tags if not _added_by_export(t)) == expected["version_tags"][name], name
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert _names(client, parent) == expected["pipeline_run"]


@pytest.mark.browser
def test_the_card_page_shows_the_decision_and_the_disagreements_in_chromium(first_run, tracking, tmp_path, chromium):
    """The weaker challenger's card, its comparison with the champion the gate's own counts, as a person opens it
    from the MLflow run; the screenshot is docs/evidence_card.png."""
    from flows.training import training_flow

    browser, shots = chromium
    _, first = first_run
    cfg = PipelineConfig(data=first_run[0].data, models=("logreg",), epochs=1, out_dir=tmp_path, tracking=tracking,
                         hyperparams={"logreg": {"max_iter": 5}})
    version = training_flow(cfg)["models"]["logreg"]["model_version"]
    client = MlflowClient(tracking.tracking_uri)
    tags, comparison = client.get_model_version(tracking.registered_model, version).tags, _card(tracking, version)[
        "comparison"]  # scored again from both ONNX files, the same counts as the gate's
    assert {key: str(comparison[key]) for key in ("champion_version", "only_challenger_right", "only_champion_right")} \
        == {key: tags[key] for key in ("champion_version", "only_challenger_right", "only_champion_right")}
    assert comparison["mcnemar_p_value"] == pytest.approx(float(tags["mcnemar_p_value"]), rel=1e-3)  # tag: 4 digits
    page_file = Path(client.download_artifacts(client.get_model_version(tracking.registered_model, version).run_id,
                                               "card/card.html", str(tmp_path)))
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    page.goto(page_file.as_uri())
    assert page.locator("h1").inner_text() == f"digits-test v{version}: logreg"
    assert page.locator(".verdict").inner_text().startswith("rejected: ")
    assert page.locator("img[alt='digits on which the two disagree']").evaluate("i => i.naturalWidth") > 500
    page.screenshot(path=shots / "evidence_card.png", full_page=True)
