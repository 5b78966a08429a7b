"""What training returns: each epoch's metrics (what callbacks receive), a model trained, evaluated and exported,
and the same model once registered (its run and version)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from digitpipe.records.evidence import Robustness


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    seconds: float


# Called after every epoch. A callback stops the training by raising (a tuning trial's pruner raises
# optuna.TrialPruned); the loop's own stopping rules are the spec's (digitpipe.train.stop_reason).
Callback = Callable[[EpochResult], None]


@dataclass(frozen=True)
class ModelResult:
    """One model trained, evaluated on the held-out part and exported to ONNX: what the comparison table reads."""

    name: str
    accuracy: float  # on the held-out part
    macro_f1: float
    onnx_path: str
    onnx_kb: float
    train_seconds: float
    stop_reason: str
    predicted: np.ndarray  # the ONNX model's digit for each held-out image
    robustness: Robustness | None  # on the perturbation suite (None: not measured)
    parity: str = "passed"  # the ONNX file gave the native model's digit on every held-out image (else no result)

    @property
    def robust_accuracy(self) -> float | None:
        return self.robustness and self.robustness.robust_accuracy


@dataclass(frozen=True, kw_only=True)
class RegisteredResult(ModelResult):
    """A model of a run once registered: its MLflow run and its version, what the gate and the summary read."""

    run_id: str
    model_version: str

    def line(self) -> str:
        """The stage line for this model."""
        return (f"trained {self.name}: {self.accuracy:.2%} held-out accuracy ({self.robust_accuracy:.2%} perturbed) "
                f"in {self.train_seconds:.1f} s, registered v{self.model_version}")

    def summary(self) -> dict[str, object]:
        """This model in a run's JSON summary."""
        return {"accuracy": self.accuracy, "robust_accuracy": self.robust_accuracy, "run_id": self.run_id,
                "model_version": self.model_version, "onnx_path": self.onnx_path,
                "train_seconds": self.train_seconds}
