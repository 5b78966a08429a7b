"""Held-out metrics: accuracy, per-class precision and recall, confusion matrix; McNemar's test between two models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from digitpipe.data.dataset import N_CLASSES


@dataclass(frozen=True)
class Evaluation:
    """Scores of one model on one labelled set."""

    accuracy: float
    macro_f1: float
    precision: list[float]  # per digit 0..9
    recall: list[float]
    confusion: list[list[int]]  # rows: true digit, columns: predicted digit

    def metrics(self) -> dict[str, float]:
        """Flat name -> value, as logged to MLflow."""
        flat = {"test_accuracy": self.accuracy, "test_macro_f1": self.macro_f1}
        for digit in range(N_CLASSES):
            flat[f"test_precision_{digit}"] = self.precision[digit]
            flat[f"test_recall_{digit}"] = self.recall[digit]
        return flat


def evaluate(labels: np.ndarray, predicted: np.ndarray) -> Evaluation:
    """Compare predicted digits with the true ones."""
    digits = list(range(N_CLASSES))
    precision, recall, f1, _ = precision_recall_fscore_support(labels, predicted, labels=digits, zero_division=0)
    return Evaluation(
        accuracy=float(np.mean(labels == predicted)),
        macro_f1=float(np.mean(f1)),
        precision=[float(p) for p in precision],
        recall=[float(r) for r in recall],
        confusion=confusion_matrix(labels, predicted, labels=digits).tolist(),
    )


@dataclass(frozen=True)
class PairedComparison:
    """Two models' predictions on the same labelled images, and McNemar's exact test on where they disagree."""

    images: int
    challenger_accuracy: float
    champion_accuracy: float
    only_challenger_right: int
    only_champion_right: int
    p_value: float  # two-sided: the chance of a split of the disagreements at least this lopsided if both were equal


def mcnemar(labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> PairedComparison:
    """Compare two models' predicted digits on the same images (exact binomial McNemar test)."""
    challenger_right, champion_right = challenger == labels, champion == labels
    wins = int(np.sum(challenger_right & ~champion_right))
    losses = int(np.sum(champion_right & ~challenger_right))
    p_value = binomtest(wins, wins + losses, 0.5).pvalue if wins + losses else 1.0
    return PairedComparison(len(labels), float(challenger_right.mean()), float(champion_right.mean()), wins, losses,
                            float(p_value))


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from a model's scores: unchanged if already probabilities, else a softmax of logits."""
    if len(scores) == 0 or (scores.min() >= 0 and np.allclose(scores.sum(1), 1, atol=1e-3)):
        return scores
    shifted = np.exp(scores - scores.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def comparison_markdown(rows: list[dict]) -> str:
    """Markdown table of the models of one pipeline run: accuracy, macro F1, training time, ONNX size."""
    lines = ["| model | test accuracy | macro F1 | train seconds | ONNX size (KB) | stopped |", "|---|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: -r["accuracy"]):
        lines.append(f"| {r['name']} | {r['accuracy']:.2%} | {r['macro_f1']:.4f} | {r['train_seconds']:.1f} | "
                     f"{r['onnx_kb']:.0f} | {r['stop_reason']} |")
    return "\n".join(lines) + "\n"
