"""The promotion gate and McNemar's test, on hand-made predictions."""

import dataclasses

import numpy as np
import pytest

from digitpipe.config import PromotionConfig
from digitpipe.evaluate import mcnemar
from digitpipe.promotion import gate
from digitpipe.records.evidence import Evidence
from digitpipe.records.verdicts import VerdictKind, to_tags
from digitpipe.robustness import compare_family, compare_robustness
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
    verdict = gate(GATE, "4", Evidence(comparison.challenger_accuracy, "passed", comparison=comparison), CHAMPION)
    assert verdict.promoted and verdict.kind is VerdictKind.PROMOTED and "McNemar p=" in verdict.reason
    tags = to_tags(verdict)
    assert tags["champion_version"] == "3" and float(tags["mcnemar_p_value"]) < 0.05


def test_first_model_above_the_floor_becomes_champion():
    assert gate(GATE, "1", Evidence(0.95, "passed"), None).reason == "first champion"


@pytest.mark.parametrize("accuracy, parity, reason", [
    (0.85, "passed", "below the floor"),
    (0.99, "failed", "ONNX parity check did not pass"),
    (0.99, "", "onnx_parity=missing"),
])
def test_floor_and_parity_reject_even_without_a_champion(accuracy, parity, reason):
    verdict = gate(GATE, "1", Evidence(accuracy, parity), None)
    assert verdict.kind is VerdictKind.REJECTED and reason in verdict.reason


def test_an_insignificant_gain_is_rejected():
    comparison = compare(challenger_wrong=196, champion_wrong=200)  # 0.2 points better, p ~ 0.13
    verdict = gate(GATE, "4", Evidence(comparison.challenger_accuracy, "passed", comparison=comparison), CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED and verdict.reason.startswith("not significant")


def test_a_gain_below_the_margin_is_rejected_even_when_significant():
    strict = GATE.model_copy(update={"min_margin": 0.2})
    comparison = compare(challenger_wrong=20, champion_wrong=200)
    verdict = gate(strict, "4", Evidence(comparison.challenger_accuracy, "passed", comparison=comparison), CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED and "margin" in verdict.reason


def test_a_worse_challenger_is_rejected():
    comparison = compare(challenger_wrong=200, champion_wrong=20)
    lenient = GATE.model_copy(update={"min_accuracy": 0.0})
    verdict = gate(lenient, "4", Evidence(comparison.challenger_accuracy, "passed", comparison=comparison), CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED and not verdict.promoted


def test_a_champion_that_recorded_no_training_images_is_not_comparable():
    verdict = gate(GATE, "4", Evidence(0.99, "passed"), CHAMPION)
    assert verdict.kind is VerdictKind.NOT_COMPARABLE and not verdict.promoted
    assert verdict.reason.startswith("champion v3 recorded no training images")


def test_too_few_images_new_to_the_champion_are_not_comparable():
    comparison = compare(challenger_wrong=0, champion_wrong=50, n=150)  # far better, but on 150 images only
    verdict = gate(GATE, "4", Evidence(0.99, "passed", comparison=comparison, excluded=850), CHAMPION)
    assert verdict.kind is VerdictKind.NOT_COMPARABLE and to_tags(verdict)["comparison_excluded"] == 850
    assert verdict.reason == ("only 150 held-out images champion v3 never trained on (850 excluded), fewer than "
                              "min_comparable_images 200: trained on another split than the champion")


def test_nothing_left_to_compare_on_is_not_comparable():
    empty = mcnemar(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert (empty.images, empty.p_value) == (0, 1.0)
    verdict = gate(GATE, "4", Evidence(0.99, "passed", comparison=empty, excluded=1000), CHAMPION)
    assert verdict.kind is VerdictKind.NOT_COMPARABLE


def robust_evidence(challenger_wrong_digits: int, champion_wrong_digits: int, digits: int = 2000) -> Evidence:
    """A challenger far better on clean digits whose strength-2 copies are wrong for the first N digits."""
    families = 6
    challenger = np.ones((digits, families), bool)
    champion = np.ones((digits, families), bool)
    challenger[:challenger_wrong_digits] = False
    champion[:champion_wrong_digits] = False
    comparison = compare(challenger_wrong=20, champion_wrong=200)
    return Evidence(comparison.challenger_accuracy, "passed", float(challenger.mean()), comparison,
                    robust=compare_robustness(challenger, champion))


def test_a_clean_winner_that_is_less_robust_is_rejected_by_the_robustness_clause():
    verdict = gate(GATE, "4", robust_evidence(challenger_wrong_digits=200, champion_wrong_digits=40), CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED
    assert verdict.reason.startswith("less robust than the champion by more than the robust margin 0.50 points; "
                                     "robust accuracy 0.9000 vs 0.9800 on the same 2000 perturbed digits "
                                     "(difference -8.00 points, 95% upper bound -")
    assert "though clean 0.9900 vs champion v3 0.9000" in verdict.reason
    tags = to_tags(verdict)
    assert tags["champion_robust_accuracy"] == 0.98 and tags["robust_difference_upper_bound"] < -0.065


def test_a_clean_winner_as_robust_as_the_champion_is_promoted():
    verdict = gate(GATE, "4", robust_evidence(challenger_wrong_digits=40, champion_wrong_digits=40), CHAMPION)
    assert verdict.kind is VerdictKind.PROMOTED and "robust accuracy 0.9800 vs 0.9800" in verdict.reason


def test_the_robust_floor_applies_to_a_first_champion_when_set():
    evidence = robust_evidence(challenger_wrong_digits=200, champion_wrong_digits=0)
    assert gate(GATE, "1", evidence, None).reason == "first champion"  # the floor is off by default
    floored = GATE.model_copy(update={"min_robust_accuracy": 0.95})
    verdict = gate(floored, "1", evidence, None)
    assert verdict.kind is VerdictKind.REJECTED and verdict.reason == "robust accuracy 0.9000 is below the floor 0.9500"


def test_the_bootstrap_moves_the_copies_of_a_digit_together():
    """Six wrong copies of 20 digits are 20 units of evidence, not 120: the bound is as wide as for 20 digits."""
    challenger = np.ones((200, 6), bool)
    challenger[:20] = False
    per_copy = compare_robustness(challenger, np.ones((200, 6), bool))
    one_copy = compare_robustness(challenger[:, :1], np.ones((200, 1), bool))
    assert per_copy.difference == pytest.approx(one_copy.difference) == pytest.approx(-0.1)
    assert per_copy.upper_bound == pytest.approx(one_copy.upper_bound, abs=1e-9)


def test_a_slightly_less_robust_challenger_is_not_rejected_without_evidence():
    """On 200 digits, 1 point lower robust accuracy is within chance: the clause needs evidence, not a hunch."""
    verdict = gate(GATE, "4", robust_evidence(challenger_wrong_digits=10, champion_wrong_digits=8, digits=200), CHAMPION)
    assert verdict.kind is VerdictKind.PROMOTED and "robust accuracy 0.9500 vs 0.9600" in verdict.reason


def test_too_few_perturbed_digits_skip_the_robustness_clause_and_say_so():
    verdict = gate(GATE, "4", robust_evidence(challenger_wrong_digits=20, champion_wrong_digits=0, digits=40), CHAMPION)
    assert verdict.kind is VerdictKind.PROMOTED
    assert verdict.reason.endswith("; robustness not compared: only 40 perturbed digits are new to the champion "
                                   "(fewer than 50)")


FEEDBACK_GATE = GATE.model_copy(update={"min_accuracy": 0.8})  # the floor is not what these tests are about


def _with_feedback(base_challenger_wrong: int, feedback_challenger_wrong: int, feedback_champion_wrong: int,
                   feedback_images: int = 200) -> Evidence:
    base = compare(challenger_wrong=base_challenger_wrong, champion_wrong=200)
    feedback = compare(feedback_challenger_wrong, feedback_champion_wrong, n=feedback_images)
    return Evidence(base.challenger_accuracy, "passed", comparison=base, feedback=feedback)


def test_a_challenger_better_on_feedback_and_within_the_base_margin_is_promoted_by_the_feedback_clause():
    # 0.3 points worse on the base images (a loss the base clauses reject), far better on feedback
    evidence = _with_feedback(base_challenger_wrong=206, feedback_challenger_wrong=20, feedback_champion_wrong=150)
    verdict = gate(FEEDBACK_GATE, "4", evidence, CHAMPION)
    assert verdict.kind is VerdictKind.PROMOTED
    assert verdict.reason.startswith("better on labelled feedback: 0.9000 vs 0.2500 on 200 held-out feedback digits "
                                     "neither trained on, McNemar p=")
    assert "within feedback_base_margin 0.0050" in verdict.reason
    tags = to_tags(verdict)
    assert (tags["feedback_images"], tags["challenger_feedback_accuracy"], tags["champion_feedback_accuracy"]) == \
        (200, 0.9, 0.25)


def test_a_challenger_better_on_feedback_but_too_much_worse_on_the_base_images_is_rejected():
    evidence = _with_feedback(base_challenger_wrong=220, feedback_challenger_wrong=20, feedback_champion_wrong=150)
    verdict = gate(FEEDBACK_GATE, "4", evidence, CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED
    assert verdict.reason.startswith("better on labelled feedback (0.9000 vs 0.2500 on 200 held-out feedback digits")
    assert "worse on the base held-out images by more than feedback_base_margin 0.0050: 0.8900 vs champion v3" in \
        verdict.reason


@pytest.mark.parametrize("feedback_challenger_wrong, feedback_images, why", [
    (148, 200, "not significantly better on feedback"),
    (0, 40, "fewer feedback digits than min_feedback_images (50)"),
])
def test_without_a_clear_feedback_win_the_base_clauses_decide(feedback_challenger_wrong, feedback_images, why):
    evidence = _with_feedback(base_challenger_wrong=206, feedback_challenger_wrong=feedback_challenger_wrong,
                              feedback_champion_wrong=min(150, feedback_images), feedback_images=feedback_images)
    verdict = gate(FEEDBACK_GATE, "4", evidence, CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED, why
    assert verdict.reason.startswith("does not beat the champion by the margin 0.0010")


def test_a_challenger_significantly_worse_on_feedback_is_rejected_even_if_it_beats_the_champion_on_the_base():
    base = compare(challenger_wrong=20, champion_wrong=200)
    feedback = compare(challenger_wrong=150, champion_wrong=20, n=200)
    verdict = gate(FEEDBACK_GATE, "4", Evidence(base.challenger_accuracy, "passed", comparison=base,
                                                feedback=feedback), CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED
    assert verdict.reason.startswith("worse than the champion on labelled feedback (0.2500 vs 0.9000 on 200 held-out "
                                     "feedback digits neither trained on, McNemar p=")


def people_evidence(challenger_wrong: dict[str, int], champion_wrong: int = 2, digits: int = 100) -> Evidence:
    """A clean winner, as robust as the champion on the perturbed digits, with `challenger_wrong[family]` of the
    family's people's digits misread (the champion misreads `champion_wrong` of each)."""
    evidence = robust_evidence(challenger_wrong_digits=40, champion_wrong_digits=40)
    people = {}
    for family, wrong in challenger_wrong.items():
        mine, theirs = np.ones(digits, bool), np.ones(digits, bool)
        mine[:wrong], theirs[digits - champion_wrong :] = False, False
        people[family] = compare_family(mine, theirs)
    return dataclasses.replace(evidence, people=people)


def test_a_clean_winner_that_reads_drawn_digits_worse_is_refused_and_the_tags_say_so():
    verdict = gate(GATE, "4", people_evidence({"drawn": 12, "photographed": 2}), CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED
    assert verdict.reason.startswith("reads drawn digits worse than the champion by more than the robust margin "
                                     "0.50 points; robust accuracy 0.9800 vs 0.9800")
    assert "; drawn 0.8800 vs 0.9800 on the same 100 digits (95% upper bound -" in verdict.reason
    assert "McNemar p=0.0129)" in verdict.reason  # 12 digits only the champion reads, 2 only the challenger
    assert "; photographed 0.9800 vs 0.9800 on the same 100 digits" in verdict.reason
    tags = to_tags(verdict)
    assert tags["challenger_drawn_accuracy"] == 0.88 and tags["champion_drawn_accuracy"] == 0.98
    assert tags["drawn_digits"] == 100 and tags["drawn_difference_upper_bound"] < -0.005
    assert tags["drawn_p_value"] == "0.0129"


def test_each_family_is_judged_on_its_own():
    verdict = gate(GATE, "4", people_evidence({"drawn": 2, "photographed": 15}), CHAMPION)
    assert verdict.kind is VerdictKind.REJECTED and verdict.reason.startswith("reads photographed digits worse")


def test_a_challenger_as_good_on_peoples_digits_is_promoted_and_one_a_digit_worse_is_not_refused():
    for wrong in (2, 3):  # one more misread of 100 is within chance
        verdict = gate(GATE, "4", people_evidence({"drawn": wrong, "photographed": 2}), CHAMPION)
        assert verdict.kind is VerdictKind.PROMOTED, verdict.reason


def test_a_few_misreads_more_on_a_small_family_are_chance_not_a_refusal():
    """On 60 digits, 3 misreads against none put the bootstrap's bound below the margin, but McNemar's p is 0.25;
    7 against none (p=0.016) are a refusal."""
    few = gate(GATE, "4", people_evidence({"drawn": 3}, champion_wrong=0, digits=60), CHAMPION)
    assert few.kind is VerdictKind.PROMOTED and "McNemar p=0.25)" in few.reason
    many = gate(GATE, "4", people_evidence({"drawn": 7}, champion_wrong=0, digits=60), CHAMPION)
    assert many.kind is VerdictKind.REJECTED and many.reason.startswith("reads drawn digits worse")


def test_too_few_peoples_digits_new_to_the_champion_are_not_compared_and_say_so():
    verdict = gate(GATE, "4", people_evidence({"drawn": 10}, digits=20), CHAMPION)
    assert verdict.kind is VerdictKind.PROMOTED
    assert verdict.reason.endswith("; drawn digits not compared: only 20 are new to the champion")
