"""The loop learns from the page, through the CLI and the service a user runs: a champion is served, people draw
digits on its page and correct its answers, and `run --feedback` with the same seed (page feedback trusted) makes a
version that reads drawn digits better than the one it retrained from, without losing clean accuracy.

Measured at seed 42 through this test (lenet, 8 epochs, the fixture; 500 page answers, 430 of them "right", 359
trained on and 141 held out for the gate): on 100 drawn held-out digits (the suite's family then) 0.82 before, 0.86
after; clean held-out accuracy 0.924 before, 0.940 after. On 100 digits a gain comes in whole digits
and is noisy (seeds 1, 2, 3: +4, +1, +9 points), so the test judges on all 250 held-out digits drawn, where the
same steps gained +8 points at seed 42 and +5.6, +6.8, +6.8 at seeds 1, 2, 3: the asserted 3 points is about half
the smallest.
logreg did not move (0.79 before, 0.77 after 300 answers); fastcnn's 8-epoch one-cycle runs swung from -7 to +5."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from mlflow import MlflowClient

from digitpipe import people
from digitpipe.data import Dataset, split_dataset
from digitpipe.monitoring.feedback import held_out
from digitpipe.onnx_scorer import OnnxScorer
from tests.helpers import serving_process, wait_for, write_config

pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.usefixtures("prefect_api")]
MODEL = "digits-people-loop"
SEED = 42
CORRECTIONS = 500  # drawn digits people answer on the page
DRAWN_GAIN = 0.03  # the asserted rise on the 250 held-out digits drawn (measured: 5.6 to 8 points)
CLEAN_LOSS = 0.02  # the clean held-out accuracy may fall at most this much (measured: it rose 1.6 points)


@pytest.fixture(scope="module")
def config(mlflow_store, tmp_path_factory):
    """The loop's mlflow.yaml: page feedback trusted and recorded in batches of 100, its own experiment and model;
    an accuracy floor below what lenet reaches in 8 epochs on 1,000 digits (the shipped 0.85 is for real data)."""
    folder = tmp_path_factory.mktemp("people-loop")
    return write_config(folder / "mlflow.yaml", tracking_uri=mlflow_store, experiment="people-loop-test",
                        registered_model=MODEL, artifact_location=folder / "artifacts",
                        monitoring={"trust_web_feedback": True}, promotion={"min_accuracy": 0.5},
                        serving={"requests_dir": str(folder / "served"), "feedback_batch": 100,
                                 "feedback_seconds": 5})


def page_pictures(digits: Dataset, count: int) -> tuple[list[bytes], np.ndarray]:
    """`count` digits of the run's training part (never its held-out part, which the drawn family is made of) as
    PNGs the page sends for them drawn on its pad, and their labels."""
    train = split_dataset(digits, seed=SEED).train
    pictures = [people.page_png(people.pointer_paths(train.images[i], np.random.default_rng([SEED, i])))
                for i in range(count)]
    return pictures, train.labels[:count]


def draw_and_correct(served, pictures: list[bytes], labels: np.ndarray) -> int:
    """Each picture posted as the page posts it, then the page's answer on it: "right", or the true digit; returns
    how many the served model got right."""
    right = 0
    for picture, label in zip(pictures, labels.tolist(), strict=True):
        status, _, reply = served.call("/predict", picture, "image/png")
        assert status == 200, reply
        answer = reply["predictions"][0]
        right += answer["digit"] == label
        said = "right" if answer["digit"] == label else label
        body = json.dumps({"request_id": answer["request_id"], "label": said}).encode()
        assert served.call("/feedback", body)[0] == 202
    return right


def scores(client: MlflowClient, version: str, drawn: Dataset) -> tuple[float, float]:
    """(accuracy on `drawn`, clean held-out accuracy) of a version: its ONNX file scored, its tag read."""
    tags = client.get_model_version(MODEL, version).tags
    predicted = OnnxScorer(Path(tags["onnx_path"])).predict(drawn.images)
    return float(np.mean(predicted == drawn.labels)), float(tags["test_accuracy"])


def trained_on(pictures: list[bytes], labels: np.ndarray) -> int:
    """How many of the pictures, as the service reads them, `run --feedback` trains on (the rest judge the gate)."""
    read = Dataset(np.stack([people.read_as_service(p) for p in pictures]), labels)
    return int((~held_out(read)).sum())


def test_drawn_corrections_from_the_page_raise_the_next_versions_drawn_accuracy(
        fixture_dir, digits, config, digitpipe_cli, tmp_path):
    run = ["run", "--data", fixture_dir, "--models", "lenet", "--epochs", "8", "--seed", str(SEED), "--quiet",
           "--config", config]
    first = digitpipe_cli(*run, "--out", tmp_path / "first")
    assert first.code == 0, first.err
    client = MlflowClient(yaml.safe_load(config.read_text())["tracking_uri"])
    champion = client.get_model_version_by_alias(MODEL, "champion").version

    pictures, labels = page_pictures(digits, CORRECTIONS)
    with serving_process(tmp_path, config) as served:
        right = draw_and_correct(served, pictures, labels)
    experiment = client.get_experiment_by_name("people-loop-test").experiment_id
    wait_for(lambda: sum(r.data.metrics["labelled_rows"] for r in client.search_runs(  # recorded as it stopped
        [experiment], "tags.source = 'web'")) == CORRECTIONS, 60, "every page answer recorded as web feedback")

    retrained = digitpipe_cli(*run, "--feedback", "--out", tmp_path / "retrained")
    assert retrained.code == 0, retrained.err
    assert f"labelled feedback: {trained_on(pictures, labels):,} digits added to training" in retrained.err
    new = max(int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    assert new != int(champion)
    test = split_dataset(digits, seed=SEED).test
    drawn = Dataset(people.family("drawn", test.images, test.labels, SEED), test.labels)
    (drawn_before, clean_before), (drawn_after, clean_after) = (scores(client, v, drawn) for v in (champion, str(new)))
    print(f"right on {right} of {CORRECTIONS} page digits; drawn {drawn_before:.3f} -> {drawn_after:.3f}, "
          f"clean {clean_before:.3f} -> {clean_after:.3f}")  # the figures in the docstring (pytest -s)
    assert drawn_after >= drawn_before + DRAWN_GAIN
    assert clean_after >= clean_before - CLEAN_LOSS
