"""Who holds the champion alias: the promotion gate of mlflow.yaml, hand promotion and rollback.

Every decision, promoted or not, is written on the version as tags (verdict, reason, both accuracies, p-value),
so the registry itself says why each version is or is not the champion.
"""

from __future__ import annotations

import getpass
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitpipe.config import TrackingConfig
from digitpipe.data import Dataset
from digitpipe.errors import UserError
from digitpipe.evaluate import PairedComparison, mcnemar
from digitpipe.scorer import OnnxScorer
from digitpipe.tracking import Champion, Registry


@dataclass(frozen=True)
class Verdict:
    """One promotion decision about one registered version."""

    version: str
    verdict: str  # promoted | rejected | not_comparable | promoted_by_hand | not_candidate
    reason: str
    challenger_accuracy: float | None = None
    champion_version: str | None = None  # the champion it was compared with, if any
    comparison: PairedComparison | None = None
    excluded: int | None = None  # held-out images left out of the comparison: the champion trained on them

    @property
    def promoted(self) -> bool:
        return self.verdict.startswith("promoted")

    def tags(self) -> dict[str, object]:
        """The decision as model-version tags."""
        tags = {"verdict": self.verdict, "verdict_reason": self.reason, "verdict_at": _now(),
                "challenger_accuracy": self.challenger_accuracy, "champion_version": self.champion_version,
                "comparison_excluded": self.excluded}
        if self.comparison:
            tags |= {"champion_accuracy": self.comparison.champion_accuracy,
                     "challenger_accuracy": self.comparison.challenger_accuracy,
                     "mcnemar_p_value": f"{self.comparison.p_value:.3g}",
                     "only_challenger_right": self.comparison.only_challenger_right,
                     "only_champion_right": self.comparison.only_champion_right}
        return {k: v for k, v in tags.items() if v is not None}


def gate(gate_cfg: TrackingConfig, version: str, accuracy: float, parity: str, champion: Champion | None,
         comparison: PairedComparison | None, excluded: int = 0) -> Verdict:
    """Apply the promotion gate: parity passed, (a) the floor, then against a champion, on the held-out images it
    never trained on (`comparison`; None when the champion recorded nothing to tell, `excluded` left out):
    enough such images, (b) the margin and McNemar's significance."""
    def decided(verdict: str, reason: str) -> Verdict:
        return Verdict(version, verdict, reason, accuracy, champion and champion.version, comparison,
                       excluded if comparison else None)

    if parity != "passed":
        return decided("rejected", f"its ONNX parity check did not pass (onnx_parity={parity or 'missing'})")
    if accuracy < gate_cfg.min_accuracy:
        return decided("rejected", f"held-out accuracy {accuracy:.4f} is below the floor {gate_cfg.min_accuracy:.4f}")
    if champion is None:
        return Verdict(version, "promoted", "first champion", accuracy)
    if comparison is None:
        return decided("not_comparable", f"champion v{champion.version} recorded no training images, so none of "
                       "the held-out images is known to be new to it; promote a version by hand to start again")
    unseen = f"{comparison.images} held-out images champion v{champion.version} never trained on ({excluded} excluded)"
    if comparison.images < gate_cfg.min_comparable_images:
        return decided("not_comparable", f"only {unseen}, fewer than min_comparable_images "
                       f"{gate_cfg.min_comparable_images}: trained on another split than the champion")
    gain = comparison.challenger_accuracy - comparison.champion_accuracy
    versus = (f"{comparison.challenger_accuracy:.4f} vs champion v{champion.version} "
              f"{comparison.champion_accuracy:.4f} on the same {unseen} "
              f"({comparison.only_challenger_right} right only by the challenger, "
              f"{comparison.only_champion_right} only by the champion)")
    if gain <= 0 or gain < gate_cfg.min_margin:
        return decided("rejected", f"does not beat the champion by the margin {gate_cfg.min_margin:.4f}: {versus}")
    if comparison.p_value >= gate_cfg.max_p_value:
        return decided("rejected",
                       f"not significant: McNemar p={comparison.p_value:.3g} >= {gate_cfg.max_p_value} ({versus})")
    return decided("promoted", f"beats the champion: {versus}, McNemar p={comparison.p_value:.3g}")


def promote_if_earned(registry: Registry, version: str, test: Dataset, predicted: np.ndarray) -> Verdict:
    """Put `version` (whose predictions on `test` are `predicted`) through the gate against the current champion,
    scored on the same images; move the aliases if it wins. Read, compare and move happen under the registry lock."""
    tags = registry.version_tags(version)
    accuracy = float(np.mean(predicted == test.labels))
    with registry.promotion_lock():
        champion = registry.champion()
        if champion is not None and champion.version == version:
            return Verdict(version, "promoted", "already the champion", accuracy)
        comparison, excluded = _compare(registry, champion, test, predicted) if champion else (None, 0)
        verdict = gate(registry.cfg.promotion, version, accuracy, tags.get("onnx_parity", ""), champion, comparison, excluded)
        if verdict.promoted:
            _move_champion(registry, version, champion)
    registry.set_version_tags(version, verdict.tags())
    return verdict


def not_candidate(model: dict, best: dict) -> Verdict:
    """The verdict on a model that lost to another model of its own pipeline run (`model`, `best`: run results)."""
    return Verdict(model["model_version"], "not_candidate",
                   f"{best['name']} v{best['model_version']} was the best model of this pipeline run", model["accuracy"])


def promote_by_hand(registry: Registry, version: str) -> Verdict:
    """Make `version` the champion without the gate (recorded as such, with who did it)."""
    registry.version_tags(version)  # a clear error for a version that does not exist
    with registry.promotion_lock():
        champion = registry.champion()
        if champion is not None and champion.version == version:
            raise UserError(f"version {version} is already the champion")
        _move_champion(registry, version, champion)
    was = f" (replacing v{champion.version})" if champion else ""
    verdict = Verdict(version, "promoted_by_hand", f"promoted by hand by {_user()}{was}",
                      champion_version=champion and champion.version)
    registry.set_version_tags(version, verdict.tags())
    return verdict


def rollback(registry: Registry) -> tuple[str, str]:
    """Swap the champion and previous-champion aliases; returns (restored version, demoted version)."""
    cfg = registry.cfg
    with registry.promotion_lock():
        previous, current = registry.alias_version(cfg.previous_alias), registry.alias_version(cfg.champion_alias)
        if previous is None or current is None:
            raise UserError(f"nothing to roll back to: {cfg.registered_model} has no "
                            f"'{cfg.previous_alias if previous is None else cfg.champion_alias}' alias")
        registry.set_alias(cfg.champion_alias, previous)
        registry.set_alias(cfg.previous_alias, current)
    stamp = f"{_now()} by {_user()}"
    registry.set_version_tags(previous, {"rollback": f"restored as champion from v{current} at {stamp}"})
    registry.set_version_tags(current, {"rollback": f"demoted by rollback to v{previous} at {stamp}"})
    return previous, current


def _move_champion(registry: Registry, version: str, champion: Champion | None) -> None:
    if champion is not None:
        registry.set_alias(registry.cfg.previous_alias, champion.version)
    registry.set_alias(registry.cfg.champion_alias, version)


def _compare(registry: Registry, champion: Champion, test: Dataset,
             predicted: np.ndarray) -> tuple[PairedComparison | None, int]:
    """McNemar's comparison with `champion` on the images of `test` it never trained on, and how many it did
    (None, 0 when the champion recorded no training images)."""
    seen = registry.trained_on(champion.version)
    if seen is None:
        return None, 0
    unseen = ~np.isin(test.image_hashes(), seen)
    kept = test.subset(unseen)
    champion_predicted = _predict_with(registry, champion, kept) if len(kept) else predicted[:0]
    return mcnemar(kept.labels, predicted[unseen], champion_predicted), len(test) - len(kept)


def _predict_with(registry: Registry, champion: Champion, test: Dataset) -> np.ndarray:
    """The champion's predicted digits on `test`, from its registered (checksum-verified) ONNX file."""
    with tempfile.TemporaryDirectory(prefix="digitpipe-champion-") as tmp:
        return OnnxScorer(registry.version_onnx(champion.version, Path(tmp))).predict(test.images)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
