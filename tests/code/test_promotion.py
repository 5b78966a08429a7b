"""The promotion gate and McNemar's test, on hand-made predictions."""

import numpy as np
import pytest

from digitpipe.config import PromotionConfig
from digitpipe.evaluate import mcnemar
from digitpipe.promotion import gate
from digitpipe.tracking import Champion

GATE = PromotionConfig(min_accuracy=0.9, min_margin=0.001, max_p_value=0.05)
CHAMPION = Champion("3", "logreg", 0.90, "")


def predictions(n: int, wrong: list[range]) -> np.ndarray:
    """Predicted digits for `n` images labelled 0, wrong exactly at the indices in `wrong`."""
    predicted = np.zeros(n, dtype=np.int64)
    for indices in wrong:
        predicted[list(indices)] = 1
    return predicted


def test_mcnemar_counts_disagreements_and_matches_the_exact_binomial_test():
    labels = np.zeros(1000, dtype=np.int64)
    challenger = predictions(1000, [range(0, 10)])  # 10 wrong
    champion = predictions(1000, [range(0, 5), range(100, 125)])  # 30 wrong, 5 of them shared
    result = mcnemar(labels, challenger, champion)
    assert (result.only_challenger_right, result.only_champion_right) == (25, 5)
    assert result.challenger_accuracy == 0.99 and result.champion_accuracy == 0.97
    assert result.p_value == pytest.approx(0.000325, rel=0.01)  # 2 * P(X <= 5), X ~ Binomial(30, 0.5)


def test_mcnemar_of_identical_models_is_not_significant():
    labels = np.arange(100) % 10
    assert mcnemar(labels, labels, labels).p_value == 1.0


def compare(challenger_wrong: int, champion_wrong: int, n: int = 2000):
    labels = np.zeros(n, dtype=np.int64)
    return mcnemar(labels, predictions(n, [range(challenger_wrong)]), predictions(n, [range(champion_wrong)]))


def test_a_clearly_better_challenger_is_promoted():
    comparison = compare(challenger_wrong=20, champion_wrong=200)
    verdict = gate(GATE, "4", comparison.challenger_accuracy, "passed", CHAMPION, comparison)
    assert verdict.promoted and verdict.verdict == "promoted" and "McNemar p=" in verdict.reason
    tags = verdict.tags()
    assert tags["champion_version"] == "3" and float(tags["mcnemar_p_value"]) < 0.05


def test_first_model_above_the_floor_becomes_champion():
    assert gate(GATE, "1", 0.95, "passed", None, None).reason == "first champion"


@pytest.mark.parametrize("accuracy, parity, reason", [
    (0.85, "passed", "below the floor"),
    (0.99, "failed", "ONNX parity check did not pass"),
    (0.99, "", "onnx_parity=missing"),
])
def test_floor_and_parity_reject_even_without_a_champion(accuracy, parity, reason):
    verdict = gate(GATE, "1", accuracy, parity, None, None)
    assert verdict.verdict == "rejected" and reason in verdict.reason


def test_an_insignificant_gain_is_rejected():
    comparison = compare(challenger_wrong=196, champion_wrong=200)  # 0.2 points better, p ~ 0.13
    verdict = gate(GATE, "4", comparison.challenger_accuracy, "passed", CHAMPION, comparison)
    assert verdict.verdict == "rejected" and verdict.reason.startswith("not significant")


def test_a_gain_below_the_margin_is_rejected_even_when_significant():
    strict = GATE.model_copy(update={"min_margin": 0.2})
    comparison = compare(challenger_wrong=20, champion_wrong=200)
    verdict = gate(strict, "4", comparison.challenger_accuracy, "passed", CHAMPION, comparison)
    assert verdict.verdict == "rejected" and "margin" in verdict.reason


def test_a_worse_challenger_is_rejected():
    comparison = compare(challenger_wrong=200, champion_wrong=20)
    verdict = gate(GATE.model_copy(update={"min_accuracy": 0.0}), "4", comparison.challenger_accuracy, "passed",
                   CHAMPION, comparison)
    assert verdict.verdict == "rejected" and not verdict.promoted


def test_a_champion_that_recorded_no_training_images_is_not_comparable():
    verdict = gate(GATE, "4", 0.99, "passed", CHAMPION, None)
    assert verdict.verdict == "not_comparable" and not verdict.promoted
    assert verdict.reason.startswith("champion v3 recorded no training images")


def test_too_few_images_new_to_the_champion_are_not_comparable():
    comparison = compare(challenger_wrong=0, champion_wrong=50, n=150)  # far better, but on 150 images only
    verdict = gate(GATE, "4", 0.99, "passed", CHAMPION, comparison, excluded=850)
    assert verdict.verdict == "not_comparable" and verdict.tags()["comparison_excluded"] == 850
    assert verdict.reason == ("only 150 held-out images champion v3 never trained on (850 excluded), fewer than "
                              "min_comparable_images 200: trained on another split than the champion")


def test_nothing_left_to_compare_on_is_not_comparable():
    empty = mcnemar(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert (empty.images, empty.p_value) == (0, 1.0)
    assert gate(GATE, "4", 0.99, "passed", CHAMPION, empty, excluded=1000).verdict == "not_comparable"
