"""The perturbation suite: fixed and versioned, each family changes the digits as specified, and the bookkeeping
of accuracy per copy, robust accuracy and invariance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from digitpipe.data import split_dataset
from digitpipe.robustness import COPIES, FAMILIES, SPEC, build_suite, measure, perturb


@pytest.fixture(scope="module")
def suite(digits):
    return build_suite(split_dataset(digits).test, seed=0)


def test_the_suite_is_the_same_for_the_same_digits_and_seed(digits, suite):
    again = build_suite(split_dataset(digits).test, seed=0)
    assert again.digest == suite.digest and build_suite(suite.digits, seed=1).digest != suite.digest
    assert suite.images.shape == (len(COPIES), 250, 28, 28) and suite.images.dtype == np.uint8
    assert suite.tags() == {"robustness_spec": SPEC, "robustness_seed": 0, "robustness_digest": suite.digest[:16],
                            "robustness_digits": 250}


def test_at_most_max_digits_are_kept(digits):
    assert len(build_suite(digits, max_digits=100).digits) == 100


def test_every_family_changes_the_digits_more_at_strength_two(suite):
    clean = suite.digits.images.astype(float)
    change = {copy: np.abs(suite.images[i] - clean).mean() for i, copy in enumerate(COPIES)}
    for family in FAMILIES:
        assert 0 < change[(family, 1)] < change[(family, 2)], family


def _centre_of_mass(images: np.ndarray) -> np.ndarray:
    return np.array([ndimage.center_of_mass(image) for image in images.astype(float)])


def test_a_shift_moves_each_digit_by_at_most_its_limit(suite):
    moved = _centre_of_mass(suite.images[COPIES.index(("shift", 2))]) - _centre_of_mass(suite.digits.images)
    distance = np.abs(moved).max(axis=1)
    assert distance.max() <= 3.3 and np.median(distance) > 1.0  # up to 3 px each way (bilinear: a little blur)


def test_rotation_and_scale_keep_the_digit_centred_and_its_ink(suite):
    for family in ("rotate", "scale"):
        turned = suite.images[COPIES.index((family, 1))]
        moved = _centre_of_mass(turned) - _centre_of_mass(suite.digits.images)
        assert np.abs(moved).max() < 1.5, family
        ink = turned.astype(float).sum((1, 2)) / suite.digits.images.astype(float).sum((1, 2))
        assert 0.75 < np.median(ink) < 1.25, family


def test_noise_has_the_specified_spread_on_blank_pixels(digits):
    blank = np.zeros((200, 28, 28), np.uint8) + 128
    noisy = perturb(blank, "noise", 16.0, np.random.default_rng(0)).astype(float)
    assert noisy.std() == pytest.approx(16.0, rel=0.05)


def test_an_unknown_family_is_refused(digits):
    with pytest.raises(ValueError, match="unknown perturbation 'melt'"):
        perturb(digits.images[:2], "melt", 1.0, np.random.default_rng(0))


def test_accuracy_per_copy_robust_accuracy_and_invariance(suite):
    """A predictor that knows the clean digits only (and says 0 for anything else)."""
    known = {image.tobytes(): label for image, label in zip(suite.digits.images, suite.digits.labels)}
    zeros = float(np.mean(suite.digits.labels == 0))
    result, predicted = measure(lambda images: np.array([known.get(i.tobytes(), 0) for i in images]), suite)
    assert result.clean_accuracy == 1.0 and predicted.shape == (len(COPIES) + 1, 250)
    noise_2 = result.accuracies["noise_2"]
    assert noise_2 == pytest.approx(zeros, abs=0.01)  # every noisy copy differs from its clean digit
    assert result.robust_accuracy < 0.5 and result.strong_correct.shape == (250, len(FAMILIES))
    assert result.invariance_rate == pytest.approx(zeros, abs=0.01)  # only the zeros keep their prediction
    assert set(result.metrics()) == {*(f"perturbed_accuracy_{f}_{s}" for f, s in COPIES), "robust_accuracy",
                                     "invariance_rate"}
