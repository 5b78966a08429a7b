"""The promotion gate compares a challenger with the champion only on held-out images neither trained on."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from digitpipe.config import PipelineConfig, TrackingConfig
from digitpipe.data import load_dataset, split_dataset

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _run(fixture_dir, tracking: TrackingConfig, tmp_path, seed: int) -> dict:
    from flows.training import training_flow

    cfg = PipelineConfig(data=fixture_dir, models=("logreg",), seed=seed, out_dir=tmp_path / f"seed{seed}",
                         tracking=tracking, force=True)  # judged again under other gate settings
    return training_flow(cfg)


def _unseen_by_seed_42(fixture_dir, seed: int) -> tuple[int, int]:
    """(images of seed `seed`'s test part that seed 42's train and validation parts lack, the others), by bytes."""
    data = load_dataset(fixture_dir)
    first, second = split_dataset(data, seed=42), split_dataset(data, seed=seed)
    seen = {image.tobytes() for part in (first.train, first.val) for image in part.images}
    unseen = sum(image.tobytes() not in seen for image in second.test.images)
    return unseen, len(second.test) - unseen


def test_a_champion_of_another_split_is_compared_only_on_images_new_to_it(fixture_dir, mlflow_store, tmp_path):
    tracking = TrackingConfig(tracking_uri=mlflow_store, experiment="gate-test", registered_model="digits-gate",
                              artifact_location=str(tmp_path / "artifacts"))
    champion = _run(fixture_dir, tracking, tmp_path, seed=42)["champion"]["model_version"]
    unseen, excluded = _unseen_by_seed_42(fixture_dir, seed=7)
    assert unseen < 200 <= unseen + excluded  # the fixture's 250 test images, most of them seen by the champion

    refused = _run(fixture_dir, tracking, tmp_path, seed=7)
    assert refused["verdict"]["verdict"] == "not_comparable"
    assert refused["verdict"]["reason"] == (
        f"only {unseen} held-out images champion v{champion} never trained on ({excluded} excluded), fewer than "
        "min_comparable_images 200: trained on another split than the champion")
    assert refused["champion"]["model_version"] == champion  # unchanged
    client = MlflowClient(mlflow_store)
    assert client.get_model_version_by_alias("digits-gate", "champion").version == int(champion)

    lenient = tracking.model_copy(update={"promotion": tracking.promotion.model_copy(
        update={"min_comparable_images": 10})})
    compared = _run(fixture_dir, lenient, tmp_path, seed=7)
    version = compared["verdict"]["version"]
    tags = client.get_model_version("digits-gate", version).tags
    assert tags["verdict"] in ("promoted", "rejected") and tags["comparison_excluded"] == str(excluded)
    assert f"on the same {unseen} held-out images champion v{champion} never trained on ({excluded} excluded)" in \
        tags["verdict_reason"]
