"""Who holds the champion alias: the promotion gate of mlflow.yaml, hand promotion and rollback.

Every decision, promoted or not, is written on the version as tags (verdict, reason, both accuracies, p-value,
robust accuracies), so the registry itself says why each version is or is not the champion.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from digitpipe import interrupts
from digitpipe.config import PromotionConfig
from digitpipe.data import Dataset
from digitpipe.errors import PromotionRefused, UserError
from digitpipe.evaluate import mcnemar
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.evidence import Evidence, PairedComparison, RobustComparison, Robustness
from digitpipe.records.training import RegisteredResult
from digitpipe.records.verdicts import Verdict, VerdictKind, to_tags
from digitpipe.robustness import Suite, compare_people, compare_robustness, measure
from digitpipe.runtime import utc_now
from digitpipe.tracking import Champion, Registry

MIN_ROBUST_DIGITS = 50  # fewer perturbed digits new to the champion say too little to judge robustness by
MIN_PEOPLE_DIGITS = 30  # the same for one family of people's digits (the suite makes 60 to 200 of each)


def gate(cfg: PromotionConfig, version: str, evidence: Evidence, champion: Champion | None) -> Verdict:
    """The promotion gate, clause by clause; the reason names the clause that decided. Alone: parity passed,
    (a) the accuracy floor, the robust-accuracy floor if set. Against a champion, on held-out digits neither
    trained on: enough of them, (d) significantly better on held-out labelled feedback and within a margin on the
    base held-out images, or else (b) the margin and McNemar's significance; and (c) not less robust by the margin,
    on the perturbed digits and on each family of people's digits (drawn, photographed)."""
    def decided(kind: VerdictKind, reason: str) -> Verdict:
        return Verdict(version, kind, reason, evidence.accuracy, champion and champion.version, evidence)

    if evidence.parity != "passed":
        return decided(VerdictKind.REJECTED,
                       f"its ONNX parity check did not pass (onnx_parity={evidence.parity or 'missing'})")
    if evidence.accuracy < cfg.min_accuracy:
        return decided(VerdictKind.REJECTED,
                       f"held-out accuracy {evidence.accuracy:.4f} is below the floor {cfg.min_accuracy:.4f}")
    if (cfg.min_robust_accuracy is not None and evidence.robust_accuracy is not None
            and evidence.robust_accuracy < cfg.min_robust_accuracy):
        return decided(VerdictKind.REJECTED, f"robust accuracy {evidence.robust_accuracy:.4f} is below the floor "
                       f"{cfg.min_robust_accuracy:.4f}")
    if champion is None:
        return Verdict(version, VerdictKind.PROMOTED, "first champion", evidence.accuracy, evidence=evidence)
    comparison, excluded = evidence.comparison, evidence.excluded
    if comparison is None:
        return decided(VerdictKind.NOT_COMPARABLE, f"champion v{champion.version} recorded no training images, so "
                       "none of the held-out images is known to be new to it; promote a version by hand to start again")
    unseen = f"{comparison.images} held-out images champion v{champion.version} never trained on ({excluded} excluded)"
    if comparison.images < cfg.min_comparable_images:
        return decided(VerdictKind.NOT_COMPARABLE, f"only {unseen}, fewer than min_comparable_images "
                       f"{cfg.min_comparable_images}: trained on another split than the champion")
    versus = (f"{comparison.challenger_accuracy:.4f} vs champion v{champion.version} "
              f"{comparison.champion_accuracy:.4f} on the same {unseen} "
              f"({comparison.only_challenger_right} right only by the challenger, "
              f"{comparison.only_champion_right} only by the champion)")
    robustly, less_robust = _robustness(cfg, evidence)
    if by_feedback := _feedback_clause(cfg, evidence.feedback, comparison, versus, robustly, less_robust):
        return decided(*by_feedback)
    gain = comparison.challenger_accuracy - comparison.champion_accuracy
    if gain <= 0 or gain < cfg.min_margin:
        return decided(VerdictKind.REJECTED, f"does not beat the champion by the margin {cfg.min_margin:.4f}: {versus}")
    if comparison.p_value >= cfg.max_p_value:
        return decided(VerdictKind.REJECTED,
                       f"not significant: McNemar p={comparison.p_value:.3g} >= {cfg.max_p_value} ({versus})")
    if less_robust:
        return decided(VerdictKind.REJECTED, f"{less_robust}{robustly}, though clean {versus}")
    return decided(VerdictKind.PROMOTED, f"beats the champion: {versus}, McNemar p={comparison.p_value:.3g}{robustly}")


def _robustness(cfg: PromotionConfig, evidence: Evidence) -> tuple[str, str]:
    """(what the robustness comparisons say, for a reason; why they reject the challenger, or "")."""
    said, refused = _robust_clause(cfg, evidence.robust)
    for family, comparison in evidence.people.items():
        family_said, family_refused = _people_clause(cfg, family, comparison)
        said, refused = said + family_said, refused or family_refused
    return said, refused


def _robust_clause(cfg: PromotionConfig, robust: RobustComparison | None) -> tuple[str, str]:
    """Clause (c) on the perturbed digits: (what it says, why it rejects or "")."""
    if robust is None:
        return "", ""
    if robust.digits < MIN_ROBUST_DIGITS:
        return (f"; robustness not compared: only {robust.digits} perturbed digits are new to the champion "
                f"(fewer than {MIN_ROBUST_DIGITS})"), ""
    said = (f"; robust accuracy {robust.challenger:.4f} vs {robust.champion:.4f} on the same {robust.digits} "
            f"perturbed digits (difference {100 * robust.difference:+.2f} points, 95% upper bound "
            f"{100 * robust.upper_bound:+.2f})")
    if robust.upper_bound < -cfg.robust_margin:
        return said, f"less robust than the champion by more than the robust margin {100 * cfg.robust_margin:.2f} points"
    return said, ""


def _people_clause(cfg: PromotionConfig, family: str, people: RobustComparison) -> tuple[str, str]:
    """Clause (c) on one family of people's digits: (what it says, why it rejects or ""). A family is small, so
    beyond the margin the challenger must also lose significantly (McNemar's exact test, max_p_value)."""
    if people.digits < MIN_PEOPLE_DIGITS:
        return f"; {family} digits not compared: only {people.digits} are new to the champion", ""
    said = (f"; {family} {people.challenger:.4f} vs {people.champion:.4f} on the same {people.digits} digits "
            f"(95% upper bound {100 * people.upper_bound:+.2f} points, McNemar p={people.p_value or 1.0:.3g})")
    if people.upper_bound < -cfg.robust_margin and (people.p_value or 1.0) < cfg.max_p_value:  # few misreads: chance
        return said, (f"reads {family} digits worse than the champion by more than the robust margin "
                      f"{100 * cfg.robust_margin:.2f} points")
    return said, ""


def _feedback_clause(cfg: PromotionConfig, feedback: PairedComparison | None, comparison: PairedComparison,
                     versus: str, robustly: str, less_robust: str) -> tuple[VerdictKind, str] | None:
    """Clause (d): (kind, reason) where held-out labelled feedback tells the two models apart, else None."""
    if not (feedback := _on_feedback(cfg, feedback)):
        return None
    on_feedback = _feedback_line(feedback)
    if feedback.champion_accuracy > feedback.challenger_accuracy:
        return VerdictKind.REJECTED, (f"worse than the champion on labelled feedback ({on_feedback}), the digits it is "
                                      f"now asked to read; on the base held-out images {versus}")
    if comparison.champion_accuracy - comparison.challenger_accuracy > cfg.feedback_base_margin:
        return VerdictKind.REJECTED, (f"better on labelled feedback ({on_feedback}) but worse on the base held-out "
                                      "images by more than feedback_base_margin "
                                      f"{cfg.feedback_base_margin:.4f}: {versus}")
    if less_robust:
        return VerdictKind.REJECTED, f"{less_robust}{robustly}, though better on labelled feedback ({on_feedback})"
    return VerdictKind.PROMOTED, (f"better on labelled feedback: {on_feedback}; on the base held-out images {versus}, "
                        f"within feedback_base_margin {cfg.feedback_base_margin:.4f}{robustly}")


def _on_feedback(cfg: PromotionConfig, feedback: PairedComparison | None) -> PairedComparison | None:
    """The comparison on held-out labelled feedback where it tells the two models apart (significantly, on enough
    digits), else None: then the base held-out images alone decide."""
    if (feedback is None or feedback.images < cfg.min_feedback_images or feedback.p_value >= cfg.max_p_value
            or feedback.challenger_accuracy == feedback.champion_accuracy):
        return None
    return feedback


def _feedback_line(feedback: PairedComparison) -> str:
    return (f"{feedback.challenger_accuracy:.4f} vs {feedback.champion_accuracy:.4f} on {feedback.images} held-out "
            f"feedback digits neither trained on, McNemar p={feedback.p_value:.3g}")


def promote_if_earned(registry: Registry, result: RegisteredResult, test: Dataset, suite: Suite | None = None,
                      feedback: Dataset | None = None) -> Verdict:
    """Put the registered model of `result` (its predictions on `test`, its robustness on the perturbation
    `suite`, its ONNX parity) through the gate against the current champion, on the same images (and on the
    held-out labelled `feedback`, if any); move the aliases if it wins. Read, compare and move happen under the
    registry's promotion lock."""
    version, predicted, robustness = result.model_version, result.predicted, result.robustness
    evidence = Evidence(float(np.mean(predicted == test.labels)), result.parity, result.robust_accuracy)
    try:
        with registry.promotion_lock():
            registry.set_version_tags(version, {"promotion_order": registry.next_promotion_order(),
                                                "promotion_lock_entered_at": utc_now()})
            verdict, champion = _judge(registry, version, evidence, test, predicted, suite, robustness, feedback)
            interrupts.pause_at("gate")
            with interrupts.deferred():  # the aliases and the verdict move together or not at all
                if verdict.kind is VerdictKind.PROMOTED and (champion is None or champion.version != version):
                    move_champion(registry, version, champion)
                record_verdict(registry, verdict)
    except PromotionRefused as refused:  # the version stays registered, with the reason it was not judged
        record_verdict(registry, Verdict(version, VerdictKind.NOT_PROMOTED, str(refused)))
        raise
    return verdict


def record_verdict(registry: Registry, verdict: Verdict) -> None:
    """Write a decision about a version as its tags."""
    registry.set_version_tags(verdict.version, to_tags(verdict))


def candidate(results: Sequence[RegisteredResult]) -> tuple[RegisteredResult, list[RegisteredResult]]:
    """The run's candidate for the promotion gate (highest held-out accuracy) and the others."""
    best = max(results, key=lambda r: r.accuracy)
    return best, [r for r in results if r is not best]


def _judge(registry: Registry, version: str, evidence: Evidence, test: Dataset, predicted: np.ndarray,
           suite: Suite | None, robustness: Robustness | None,
           feedback: Dataset | None) -> tuple[Verdict, Champion | None]:
    """Under the promotion lock: the champion read again and the gate's verdict against it (the caller moves the
    aliases)."""
    champion = registry.champion()
    if champion is not None and champion.version == version:
        return Verdict(version, VerdictKind.PROMOTED, "already the champion", evidence.accuracy), champion
    if champion is not None:
        evidence = _against(registry, version, champion, evidence, test, predicted, suite, robustness, feedback)
    verdict = gate(registry.cfg.promotion, version, evidence, champion)
    if verdict.promoted and registry.cfg.promotion.approval == "required":
        verdict = dataclasses.replace(verdict, kind=VerdictKind.AWAITING_APPROVAL)  # the gate's reason kept
    return verdict, champion


def not_candidate(model: RegisteredResult, best: RegisteredResult) -> Verdict:
    """The verdict on a model that lost to another model of its own pipeline run."""
    return Verdict(model.model_version, VerdictKind.NOT_CANDIDATE,
                   f"{best.name} v{best.model_version} was the best model of this pipeline run", model.accuracy)


def promote_by_hand(registry: Registry, version: str) -> Verdict:
    """Make `version` the champion without the gate (recorded as such, with who did it)."""
    registry.version_tags(version)  # a clear error for a version that does not exist
    with registry.promotion_lock():
        champion = registry.champion()
        if champion is not None and champion.version == version:
            raise UserError(f"version {version} is already the champion")
        move_champion(registry, version, champion)
    was = f" (replacing v{champion.version})" if champion else ""
    verdict = Verdict(version, VerdictKind.PROMOTED_BY_HAND, f"promoted by hand by {user()}{was}",
                      champion_version=champion and champion.version)
    record_verdict(registry, verdict)
    return verdict


def rollback(registry: Registry) -> tuple[str, str]:
    """Swap the champion and previous-champion aliases; returns (restored version, demoted version)."""
    cfg = registry.cfg
    with registry.promotion_lock():
        previous, current = registry.alias_version(cfg.previous_alias), registry.alias_version(cfg.champion_alias)
        if previous is None or current is None:
            raise UserError(f"nothing to roll back to: {cfg.registered_model} has no "
                            f"'{cfg.previous_alias if previous is None else cfg.champion_alias}' alias")
        with interrupts.deferred():
            registry.set_alias(cfg.champion_alias, previous)
            registry.set_alias(cfg.previous_alias, current)
    stamp = f"{utc_now()} by {user()}"
    registry.set_version_tags(previous, {"rollback": f"restored as champion from v{current} at {stamp}"})
    registry.set_version_tags(current, {"rollback": f"demoted by rollback to v{previous} at {stamp}"})
    return previous, current


def move_champion(registry: Registry, version: str, champion: Champion | None) -> None:
    """Under the promotion lock: `version` becomes the champion, the champion (if any) the previous one."""
    with interrupts.deferred():  # a signal never leaves one alias moved and not the other
        if champion is not None:
            registry.set_alias(registry.cfg.previous_alias, champion.version)
        registry.set_alias(registry.cfg.champion_alias, version)


def _against(registry: Registry, version: str, champion: Champion, evidence: Evidence, test: Dataset,
             predicted: np.ndarray, suite: Suite | None, robustness: Robustness | None,
             feedback: Dataset | None) -> Evidence:
    """`evidence` completed with the comparisons against `champion` on the held-out digits it never trained on
    (unchanged when it recorded no training images): McNemar on `test` and on `feedback`, the bootstrap on the
    suite."""
    seen = registry.lineage.trained_on(champion.version)
    if seen is None:
        return evidence
    new = ~np.isin(test.image_hashes(), seen)
    kept = test.subset(new)
    with tempfile.TemporaryDirectory(prefix="digitpipe-champion-") as tmp:
        champion_predict = OnnxScorer(registry.version_onnx(champion.version, Path(tmp))).predict
        comparison = mcnemar(kept.labels, predicted[new], champion_predict(kept.images) if len(kept) else predicted[:0])
        robust, people = None, {}
        if suite is not None and robustness is not None:
            fresh = ~np.isin(suite.digits.image_hashes(), seen)
            champion_robustness, _ = measure(champion_predict, suite.subset(fresh))
            robust = compare_robustness(robustness.strong_correct[fresh], champion_robustness.strong_correct)
            people = compare_people(robustness, champion_robustness, fresh)
        on_feedback = None
        if feedback is not None and len(fresh_feedback := feedback.subset(~np.isin(feedback.image_hashes(), seen))):
            challenger_predict = OnnxScorer(registry.version_onnx(version, Path(tmp) / "challenger")).predict
            on_feedback = mcnemar(fresh_feedback.labels, challenger_predict(fresh_feedback.images),
                                  champion_predict(fresh_feedback.images))
    return dataclasses.replace(evidence, comparison=comparison, excluded=len(test) - len(kept), robust=robust,
                               feedback=on_feedback, people=people)


def user() -> str:
    """Who made a decision by hand: the MLflow account where the server has authentication, else the user of this
    machine."""
    if account := os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return account
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


