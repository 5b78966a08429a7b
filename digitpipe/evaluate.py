"""Held-out metrics: accuracy, per-class precision and recall, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from digitpipe.data.dataset import N_CLASSES


@dataclass(frozen=True)
class Evaluation:
    """Scores of one model on one labelled set."""

    accuracy: float
    precision: list[float]  # per digit 0..9
    recall: list[float]
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit

    def metrics(self) -> dict[str, float]:
        """Flat name -> value, as logged to MLflow."""
        flat = {"test_accuracy": self.accuracy}
        for digit in range(N_CLASSES):
            flat[f"test_precision_{digit}"] = self.precision[digit]
            flat[f"test_recall_{digit}"] = self.recall[digit]
        return flat


def evaluate(labels: np.ndarray, predicted: np.ndarray) -> Evaluation:
    """Compare predicted digits with the true ones."""
    digits = list(range(N_CLASSES))
    precision, recall, _, _ = precision_recall_fscore_support(labels, predicted, labels=digits, zero_division=0)
    return Evaluation(
        accuracy=float(np.mean(labels == predicted)),
        precision=[float(p) for p in precision],
        recall=[float(r) for r in recall],
        confusion=confusion_matrix(labels, predicted, labels=digits).tolist(),
    )
