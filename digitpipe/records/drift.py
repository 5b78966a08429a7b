"""A batch's drift check: is it still like the digits its model was trained on? (digitpipe.monitoring.drift
computes it; scoring, serving and the alarms read it.)"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class DriftKind(enum.Enum):
    """The verdict; the value is what reports, run tags and /metrics say."""

    OK = "ok"
    WARN = "warn"  # some feature moved past its warning threshold
    DRIFT = "drift"  # some feature moved past its drift threshold: an alarm
    TOO_FEW_ROWS = "too_few_rows"  # fewer rows than monitoring.min_rows say too little
    NO_REFERENCE = "no_reference"  # the model has no reference to compare with: no check


@dataclass(frozen=True)
class FeatureDrift:
    """One feature of the batch against the training data: its PSI, the threshold, and both histograms."""

    distance: float
    threshold: float
    edges: list[float]
    reference_shares: list[float]
    batch_shares: list[float]


@dataclass(frozen=True)
class DriftVerdict:
    """The drift check of one batch: the verdict, every feature's PSI, the features that moved (largest first)."""

    kind: DriftKind
    rows: int = 0
    moved: tuple[str, ...] = ()
    spec: str = ""
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    reference: str | None = None  # whose training data the batch was compared with: "v3", or a file
    reference_version: str | None = None
    reason: str = ""  # why there was no check (NO_REFERENCE)

    @property
    def drifted(self) -> bool:
        return self.kind is DriftKind.DRIFT

    def against(self, reference: str, version: str | None) -> DriftVerdict:
        """This verdict naming the model whose training data it was checked against."""
        return replace(self, reference=reference, reference_version=version)

    def psi_metrics(self) -> dict[str, float]:
        """Each feature's PSI, as MLflow metrics."""
        return {f"drift_psi_{name}": feature.distance for name, feature in self.features.items()}

    def line(self) -> str:
        """One line for a person: a signal, never a reason to withhold the scores."""
        if self.kind is DriftKind.NO_REFERENCE:
            return f"drift check: none ({self.reason})"
        moved = ", ".join(f"{name} PSI {self.features[name].distance:.2f}" for name in self.moved[:4])
        return (f"drift check: {self.kind.value} against the training data of {self.reference}"
                + (f" ({moved})" if moved else ""))

    def as_dict(self) -> dict:
        """The check as the scoring report's JSON holds it."""
        if self.kind is DriftKind.NO_REFERENCE:
            return {"verdict": self.kind.value, "reason": self.reason}
        return {"verdict": self.kind.value, "rows": self.rows, "moved": list(self.moved), "spec": self.spec,
                "features": {name: vars(feature) for name, feature in self.features.items()},
                "reference": self.reference, "reference_version": self.reference_version}
