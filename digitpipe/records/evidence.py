"""What the promotion gate weighs: paired comparisons of two models on the same digits (McNemar's counts, the
robustness bootstrap) and one model's robustness on the perturbation suite."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class PairedComparison:
    """Two models' predictions on the same labelled images, and McNemar's exact test on where they disagree."""

    images: int
    challenger_accuracy: float
    champion_accuracy: float
    only_challenger_right: int
    only_champion_right: int
    p_value: float  # two-sided: the chance of a split of the disagreements at least this lopsided if both were equal


@dataclass(frozen=True)
class Robustness:
    """How one model's predictions hold up on a suite."""

    clean_accuracy: float
    accuracies: dict[str, float]  # by "family_strength", e.g. "rotate_2"
    robust_accuracy: float  # mean accuracy over every strength-2 copy
    invariance_rate: float  # share of digits whose prediction no perturbation changes
    strong_correct: np.ndarray  # digits x strength-2 families, bool: the unit of the gate's paired bootstrap
    people: dict[str, float] = field(default_factory=dict)  # accuracy on people's digits, by family ("drawn", ...)
    people_correct: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))  # digits x people's families

    def metrics(self) -> dict[str, float]:
        """For MLflow: accuracy per perturbation and per family of people's digits, robust accuracy, invariance
        rate."""
        return {**{f"perturbed_accuracy_{k}": v for k, v in self.accuracies.items()},
                **self.people_tags(), "robust_accuracy": self.robust_accuracy, "invariance_rate": self.invariance_rate}

    def people_tags(self) -> dict[str, float]:
        """For the version's tags (its card reads them): accuracy per family of people's digits."""
        return {f"people_accuracy_{k}": v for k, v in self.people.items()}


@dataclass(frozen=True)
class RobustComparison:
    """Challenger vs champion robust accuracy on the same perturbed digits, bootstrapped over digits."""

    digits: int
    challenger: float
    champion: float
    upper_bound: float  # one-sided 95% upper bound of (challenger - champion)
    p_value: float | None = None  # for one family of people's digits: McNemar's exact test on the digits they split

    @property
    def difference(self) -> float:
        return self.challenger - self.champion


@dataclass(frozen=True)
class Evidence:
    """What the gate weighs about a challenger: its own held-out numbers and, against a champion, the comparisons
    on the held-out digits neither trained on (None without a champion, or one that recorded nothing to tell)."""

    accuracy: float
    parity: str  # "passed" when the ONNX file gave the native model's digit on every held-out image
    robust_accuracy: float | None = None  # on the perturbation suite; None when it was not measured
    comparison: PairedComparison | None = None
    excluded: int = 0  # held-out images left out of `comparison`: the champion trained on them
    robust: RobustComparison | None = None
    feedback: PairedComparison | None = None  # on held-out labelled feedback neither model trained on
    people: dict[str, RobustComparison] = field(default_factory=dict)  # by family of people's digits ("drawn", ...)
