"""The drift monitor on real digits: a clean held-out batch is ok; inverted, shrunken, noisy and single-class
batches are drift and name the features that moved."""

from __future__ import annotations

import numpy as np
import pytest

from digitpipe.records.drift import DriftKind, DriftVerdict
from digitpipe.config import MonitoringConfig
from digitpipe.data import split_dataset
from digitpipe.errors import DataError
from digitpipe.monitoring.drift import BatchProfile, Reference, build_reference, psi, registered_reference, with_model
from digitpipe.monitoring.features import image_features


@pytest.fixture(scope="module")
def model_and_reference(digits):
    """The baseline fitted on the fixture's training part (its scores stand in for any model's), and its reference."""
    from digitpipe.baseline import fit_logreg
    from digitpipe.records.specs import SPECS

    split = split_dataset(digits)
    model = fit_logreg(SPECS["logreg"], split.train)
    scores = lambda images: model.predict_proba(images.reshape(len(images), -1).astype(np.float32))  # noqa: E731
    return split, scores, with_model(build_reference(split.train.images),
                                          scores(split.test.images))


def _verdict(model_and_reference, images) -> DriftVerdict:
    _, scores, reference = model_and_reference
    profile = BatchProfile(reference)
    for start in range(0, len(images), 100):  # in chunks, as `digitpipe score` reads
        profile.add(images[start : start + 100], scores(images[start : start + 100]))
    return profile.verdict(MonitoringConfig())


def test_a_clean_held_out_batch_is_ok(model_and_reference):
    split = model_and_reference[0]
    verdict = _verdict(model_and_reference, split.test.images)
    assert verdict.kind is DriftKind.OK and verdict.moved == () and verdict.rows == 250
    assert set(verdict.features) == {*image_features(split.test.images[:1]), "predicted_class", "confidence"}


def _half_size(images):
    out = np.zeros_like(images)
    out[:, 7:21, 7:21] = images.reshape(-1, 14, 2, 14, 2).mean((2, 4)).astype(np.uint8)
    return out


@pytest.mark.parametrize("change, moved", [
    (lambda x: 255 - x, {"pixel_mean", "ink_fraction"}),
    (_half_size, {"box_height", "box_width"}),
    (lambda x: np.clip(x.astype(int) + np.random.default_rng(0).integers(0, 121, x.shape), 0, 255).astype(np.uint8),
     {"pixel_mean", "ink_fraction"}),
], ids=["inverted", "half size", "noise 0-120"])
def test_changed_digits_are_drift_naming_what_moved(model_and_reference, change, moved):
    verdict = _verdict(model_and_reference, change(model_and_reference[0].test.images))
    assert verdict.kind is DriftKind.DRIFT and moved <= set(verdict.moved)
    assert all(verdict.features[name].distance > 0.25 for name in moved)


def test_a_batch_of_one_class_is_drift_in_the_predicted_classes(model_and_reference, digits):
    verdict = _verdict(model_and_reference, digits.images[digits.labels == 1])  # 112 ones
    assert verdict.kind is DriftKind.DRIFT and verdict.moved[0] == "predicted_class"


def test_too_few_rows_say_too_little(model_and_reference):
    assert _verdict(model_and_reference, model_and_reference[0].test.images[:50]).kind is DriftKind.TOO_FEW_ROWS


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift():
    shares = [0.25, 0.25, 0.25, 0.25]
    assert psi(shares, np.array([250, 250, 250, 250])) == pytest.approx(0, abs=1e-9)
    assert 0 < psi(shares, np.array([300, 250, 250, 200])) < psi(shares, np.array([700, 100, 100, 100]))


def test_a_reference_survives_a_round_trip_and_a_bad_file_is_refused(model_and_reference, tmp_path):
    reference = model_and_reference[2]
    assert Reference.load(reference.save(tmp_path / "r.json")) == reference
    (tmp_path / "bad.json").write_text("{\"rows\": 3}")
    with pytest.raises(DataError, match="bad.json: not a digitpipe-monitor-v1 monitor reference"):
        Reference.load(tmp_path / "bad.json")
    assert registered_reference(tmp_path / "bad.json") is None  # a registry's bad copy: no check, scores still made
    assert registered_reference(None) is None


def test_the_great_expectations_suite_of_a_reference_passes_clean_digits_and_names_what_left_its_range(
        model_and_reference, tmp_path):
    from digitpipe.validation import validate_batch

    split, _, reference = model_and_reference
    clean = validate_batch(image_features(split.test.images), reference, tmp_path / "clean")
    assert clean.success and len(clean.lines) == len(reference.bounds) == 8
    assert (tmp_path / "clean/index.html").is_file() and (tmp_path / "clean/suite.json").is_file()
    inverted = validate_batch(image_features(255 - split.test.images), reference)
    failed = {line.split("'column': '")[1].split("'")[0] for line in inverted.lines if line.startswith("  FAIL")}
    assert not inverted.success and {"pixel_mean", "ink_fraction"} <= failed


def test_validation_and_the_monitor_count_the_same_pixels_as_ink(digits):
    from digitpipe.validation import profile

    np.testing.assert_allclose(profile(digits).ink_fraction, image_features(digits.images)["ink_fraction"])
