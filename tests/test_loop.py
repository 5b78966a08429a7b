"""The loop end to end, through the CLI a user runs: a champion scores a batch of digits unlike its training data,
labels arrive for it (`digitpipe feedback`), the champion's live accuracy is below the floor and an alarm asks for
retraining, a retraining run on the base data plus the feedback (`run --feedback`) wins the gate's feedback clause."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from digitpipe.data import Dataset
from digitpipe.monitoring.feedback import held_out
from tests.helpers import assert_one_line_error, write_config, write_kaggle_csv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
MODEL = "digits-loop"


@pytest.fixture(scope="module")
def config(mlflow_store, tmp_path_factory):
    """The loop's mlflow.yaml: its own experiment and model. logreg loses a few points on the base images, clean and
    perturbed, when it also fits shifted digits, so the feedback clause's base margin and the robust margin are wide
    here (the shipped defaults are 0.005 each), and the accuracy floor is below what logreg reaches on 1,000 digits
    (the shipped 0.85 is for real data sets)."""
    folder = tmp_path_factory.mktemp("loop")
    return write_config(folder / "mlflow.yaml", tracking_uri=mlflow_store, experiment="loop-test",
                        registered_model=MODEL, artifact_location=folder / "artifacts",
                        promotion={"feedback_base_margin": 0.1, "robust_margin": 0.1, "min_accuracy": 0.5})


@pytest.fixture(scope="module")
def shifted(digits) -> Dataset:
    """400 fixture digits moved 4 pixels right: new images (new hashes) that a centred-digit model gets wrong."""
    return Dataset(np.roll(digits.images[:400], 4, axis=2), digits.labels[:400].copy(), "shifted")


def test_feedback_on_drifted_digits_raises_an_alarm_and_a_retraining_on_it_is_promoted(
        fixture_dir, config, shifted, digitpipe_cli, tmp_path):
    run = ["run", "--data", fixture_dir, "--models", "logreg", "--quiet", "--config", config]
    first = digitpipe_cli(*run, "--out", tmp_path / "first")
    assert first.code == 0, first.err
    client = MlflowClient(yaml.safe_load(config.read_text())["tracking_uri"])
    champion = client.get_model_version_by_alias(MODEL, "champion").version

    batch = write_kaggle_csv(tmp_path / "night.csv", shifted, labelled=False)
    scored = digitpipe_cli("score", "--model", f"models:/{MODEL}@champion", "--input", batch,
                           "--output", tmp_path / "night.predictions.csv", "--config", config)
    assert scored.code == 0, scored.err
    assert f"drift check: drift against the training data of v{champion}" in scored.out

    labels = tmp_path / "labels.csv"
    labels.write_text("ImageId,Label\n" + "".join(f"{i + 1},{y}\n" for i, y in enumerate(shifted.labels)))
    told = digitpipe_cli("feedback", "--input", batch, "--labels", labels, "--model", f"models:/{MODEL}@champion",
                         "--config", config)
    assert told.code == 0, told.err
    lines = told.out.splitlines()
    live = client.get_model_version(MODEL, champion).tags["live_accuracy"]
    assert lines[0].startswith(f"feedback: 400 labelled digits from night.csv, live accuracy of v{champion} "
                               f"{float(live):.2%} (run ")
    assert lines[1] == (f"digitpipe.accuracy.low for v{champion} (live accuracy {float(live):.2%} is below the floor "
                        "95.00%); retraining requested: labelled feedback newer than the champion exists")
    feedback_runs = client.search_runs([client.get_experiment_by_name("loop-test").experiment_id],
                                       "tags.`digitpipe.kind` = 'feedback'")
    assert [r.data.metrics["labelled_rows"] for r in feedback_runs] == [400]
    assert [a.path for a in client.list_artifacts(feedback_runs[0].info.run_id, "feedback")] == [
        "feedback/feedback.npz"]
    assert client.get_model_version(MODEL, champion).tags["monitor_alarm"] == lines[1]
    listed = digitpipe_cli("models", "--config", config)
    row = next(line.split("│") for line in listed.out.splitlines() if line.count("│") > 5
               and line.split("│")[1].strip() == str(champion))
    assert [cell.strip() for cell in row[3:6]] == ["87.20%", "78.67%", f"{float(live):.2%}"]  # accuracy, robust, live

    retrained = digitpipe_cli(*run, "--feedback", "--out", tmp_path / "retrained")
    assert retrained.code == 0, retrained.err
    new = client.get_model_version_by_alias(MODEL, "champion")
    held = int(held_out(shifted).sum())
    assert new.version != champion and new.tags["verdict"] == "promoted"
    assert new.tags["verdict_reason"].startswith("better on labelled feedback: ")
    assert f"on {held} held-out feedback digits neither trained on" in new.tags["verdict_reason"]
    assert new.tags["feedback_images"] == str(held)
    assert float(new.tags["challenger_feedback_accuracy"]) > float(new.tags["champion_feedback_accuracy"])
    card = digitpipe_cli("card", "--version", new.version, "--output", tmp_path / "card", "--config", config)
    assert card.code == 0, card.err  # its held-out part rebuilt from the data files: feedback never joins it
    decision = json.loads((tmp_path / "card" / "card.json").read_text())["decision"]
    assert (decision["verdict"], decision["feedback_images"]) == ("promoted", str(held))


def test_labels_for_rows_that_were_not_scored_are_one_line_and_record_nothing(
        fixture_dir, config, shifted, digitpipe_cli, tmp_path):
    batch = write_kaggle_csv(tmp_path / "small.csv", shifted.images[:10])
    labels = tmp_path / "labels.csv"
    labels.write_text("ImageId,Label\n3,1\n11,2\n")
    result = digitpipe_cli("feedback", "--input", batch, "--labels", labels, "--config", config)
    assert_one_line_error(result.code, result.err, 2, f"{labels}: 1 ImageId(s) are not rows of {batch} "
                                                      "(first: 11; ImageIds run from 1 to its last row)")
    client = MlflowClient(yaml.safe_load(config.read_text())["tracking_uri"])
    experiment = client.get_experiment_by_name("loop-test")
    assert experiment is None or not client.search_runs([experiment.experiment_id],
                                                        "tags.`digitpipe.kind` = 'feedback' and params.input = "
                                                        f"'{batch}'")
