"""Held-out metrics: accuracy, per-class precision and recall, confusion matrix; McNemar's test between two models."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitpipe.data.dataset import N_CLASSES
from digitpipe.files import write_json, write_text
from digitpipe.records.evidence import PairedComparison

if TYPE_CHECKING:
    from digitpipe.data import Dataset
    from digitpipe.records.training import ModelResult
    from digitpipe.zoo import TrainedModel


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
    """Compare predicted digits with the true ones (a digit never predicted has precision 0, as in scikit-learn)."""
    confusion = np.bincount(labels * N_CLASSES + predicted, minlength=N_CLASSES**2).reshape(N_CLASSES, N_CLASSES)
    right = np.diag(confusion).astype(float)
    precision = right / np.maximum(confusion.sum(0), 1)
    recall = right / np.maximum(confusion.sum(1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return Evaluation(
        accuracy=float(np.mean(labels == predicted)),
        macro_f1=float(np.mean(f1)),
        precision=precision.tolist(),
        recall=recall.tolist(),
        confusion=confusion.tolist(),
    )


def accuracy_interval(right: int, images: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95% score interval for an accuracy of `right` of `images` (sound near 100%, unlike the normal one)."""
    if images == 0:
        return 0.0, 1.0
    share, spread = right / images, z * z / images
    centre = (share + spread / 2) / (1 + spread)
    half = z * math.sqrt(share * (1 - share) / images + spread / (4 * images)) / (1 + spread)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(labels: np.ndarray, challenger: np.ndarray, champion: np.ndarray) -> PairedComparison:
    """Compare two models' predicted digits on the same images (exact binomial McNemar test)."""
    challenger_right, champion_right = challenger == labels, champion == labels
    if not len(labels):  # no image left to compare on: no accuracy, and nothing significant
        return PairedComparison(0, float("nan"), float("nan"), 0, 0, 1.0)
    wins = int(np.sum(challenger_right & ~champion_right))
    losses = int(np.sum(champion_right & ~challenger_right))
    p_value = sign_test(wins, wins + losses)
    return PairedComparison(len(labels), float(challenger_right.mean()), float(champion_right.mean()), wins, losses,
                            float(p_value))


def sign_test(successes: int, trials: int) -> float:
    """Exact two-sided binomial test of `successes` in `trials` at p = 1/2 (scipy's binomtest, without scipy):
    the distribution is symmetric, so the p-value is twice the smaller tail, at most 1."""
    if trials == 0:
        return 1.0
    smaller = min(successes, trials - successes)
    tail = sum(math.comb(trials, k) for k in range(smaller + 1)) / 2**trials
    return min(1.0, 2 * tail)


def evaluate_model(trained: TrainedModel, test: Dataset, folder: Path) -> tuple[Evaluation, np.ndarray]:
    """Held-out metrics and the book's pictures, written to `folder`: confusion matrix (PNG + JSON), learning
    curves, the most confidently wrong digits and, for CNNs, feature maps of two test digits."""
    from digitpipe import plots

    folder.mkdir(parents=True, exist_ok=True)
    name, scores = trained.name, trained.scores(test.images)
    predicted = scores.argmax(1)
    result = evaluate(test.labels, predicted)
    write_json(folder / "confusion_matrix.json", {"rows_true_columns_predicted": result.confusion})
    write_json(folder / "evaluation.json", dataclasses.asdict(result))
    plots.confusion_matrix_png(result.confusion, folder / "confusion_matrix.png",
                               f"{name}: test accuracy {result.accuracy:.2%}")
    plots.wrong_digits_png(test.images, test.labels, scores, folder / "most_confident_errors.png", name)
    if trained.history:
        plots.learning_curves_png(trained.history, folder / "learning_curves.png", f"{name}: learning curves")
    if hasattr(trained.model, "conv1"):
        plots.feature_maps_png(trained.model, test.images[:2], folder / "feature_maps.png", f"{name}: feature maps")
    return result, predicted


def write_comparison(results: Sequence[ModelResult], folder: Path) -> Path:
    """The run's models side by side: comparison.md and comparison.png in `folder`."""
    from digitpipe.plots import comparison_png

    write_text(folder / "comparison.md", comparison_markdown(results))
    comparison_png(results, folder / "comparison.png")
    return folder


def comparison_markdown(results: Sequence[ModelResult]) -> str:
    """Markdown table of the models of one pipeline run: accuracy, macro F1, training time, ONNX size."""
    lines = ["| model | test accuracy | macro F1 | train seconds | ONNX size (KB) | stopped |", "|---|---:|---:|---:|---:|---|"]
    for r in sorted(results, key=lambda r: -r.accuracy):
        lines.append(f"| {r.name} | {r.accuracy:.2%} | {r.macro_f1:.4f} | {r.train_seconds:.1f} | "
                     f"{r.onnx_kb:.0f} | {r.stop_reason} |")
    return "\n".join(lines) + "\n"
