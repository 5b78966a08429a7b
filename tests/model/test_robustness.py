"""The perturbation suite: fixed and versioned, each family changes the digits as specified, and the bookkeeping
of accuracy per copy, robust accuracy and invariance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from digitpipe.data import split_dataset
from digitpipe.robustness import COPIES, FAMILIES, PEOPLE, SPEC, build_suite, measure, perturb

PEOPLE_DIGITS = 40  # of the 250: enough to check the bookkeeping, quicker to make than the gate's 60


@pytest.fixture(scope="module")
def suite(digits):
    return build_suite(split_dataset(digits).test, seed=0, people_digits=PEOPLE_DIGITS)


def test_the_suite_is_the_same_for_the_same_digits_and_seed(digits, suite):
    again = build_suite(split_dataset(digits).test, seed=0, people_digits=PEOPLE_DIGITS)
    assert again.digest == suite.digest
    assert build_suite(split_dataset(digits).test, seed=1, people_digits=PEOPLE_DIGITS).digest != suite.digest
    assert suite.images.shape == (len(COPIES), 250, 28, 28) and suite.images.dtype == np.uint8
    assert suite.people.shape == (len(PEOPLE), PEOPLE_DIGITS, 28, 28) and suite.people.dtype == np.uint8
    assert suite.tags() == {"robustness_spec": SPEC, "robustness_seed": 0, "robustness_digest": suite.digest[:16],
                            "robustness_digits": 250, "robustness_people_spec": "digitpipe-people-v2",
                            "robustness_people_digits": PEOPLE_DIGITS}


def test_at_most_max_digits_are_kept(digits):
    suite = build_suite(digits, max_digits=100, people_digits=0)
    assert len(suite.digits) == 100 and suite.people.shape == (len(PEOPLE), 0, 28, 28)


def test_a_subset_keeps_each_digit_with_its_people_copies(suite):
    keep = np.arange(len(suite.digits)) % 3 != 0
    part = suite.subset(keep)
    assert np.array_equal(part.people, suite.people[:, keep[:PEOPLE_DIGITS]])
    assert np.array_equal(part.digits.images[: part.people.shape[1]], suite.digits.images[:PEOPLE_DIGITS][keep[:40]])


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
                                     "invariance_rate", *(f"people_accuracy_{f}" for f in PEOPLE)}
    assert result.people_correct.shape == (PEOPLE_DIGITS, len(PEOPLE))
    assert result.people["drawn"] == pytest.approx(np.mean(suite.digits.labels[:PEOPLE_DIGITS] == 0))  # all new


def test_a_challenger_that_misreads_drawn_digits_is_refused_by_the_gate_on_the_suite(suite):
    """Both models read every clean and perturbed copy right; the challenger reads the drawn digits as 1s. Judged
    on the digits new to the champion (a fifth of them it trained on), the gate refuses it by the drawn family."""
    from digitpipe.config import PromotionConfig
    from digitpipe.evaluate import mcnemar
    from digitpipe.promotion import gate
    from digitpipe.records.evidence import Evidence
    from digitpipe.records.verdicts import VerdictKind
    from digitpipe.robustness import compare_people, compare_robustness
    from digitpipe.tracking import Champion

    labels = np.concatenate([suite.digits.labels] * (1 + len(COPIES)))
    everything = np.concatenate([suite.digits.images, *suite.images, *suite.people])
    truth = dict(zip((i.tobytes() for i in everything[: (1 + len(COPIES)) * len(suite.digits)]), labels))
    people_truth = {image.tobytes(): label for family in suite.people
                    for image, label in zip(family, suite.digits.labels)}
    drawn = {image.tobytes() for image in suite.people[PEOPLE.index("drawn")]}

    def champion(images):
        return np.array([truth.get(i.tobytes(), people_truth.get(i.tobytes(), 0)) for i in images])

    def challenger(images):
        return np.where([i.tobytes() in drawn for i in images], 1, champion(images))

    fresh = np.arange(len(suite.digits)) % 5 != 0
    mine, _ = measure(challenger, suite)
    theirs, _ = measure(champion, suite.subset(fresh))
    people = compare_people(mine, theirs, fresh)
    clean = mcnemar(np.zeros(400, int), np.zeros(400, int), np.r_[np.zeros(360, int), np.ones(40, int)])
    evidence = Evidence(1.0, "passed", mine.robust_accuracy, clean,
                        robust=compare_robustness(mine.strong_correct[fresh], theirs.strong_correct), people=people)
    verdict = gate(PromotionConfig(), "2", evidence, Champion("1", "logreg", 0.9, ""))
    assert people["photographed"].difference == 0 and people["drawn"].digits == int(fresh[:PEOPLE_DIGITS].sum())
    assert verdict.kind is VerdictKind.REJECTED
    assert verdict.reason.startswith("reads drawn digits worse than the champion")
