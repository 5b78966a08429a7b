"""Matplotlib (Agg) pictures: confusion matrix and learning curve."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digitpipe.train import EpochResult  # noqa: E402


def confusion_matrix_png(confusion: Sequence[Sequence[int]], path: Path, title: str) -> Path:
    """Heatmap of the confusion matrix with the count in every cell."""
    counts = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(counts, cmap="Blues")
    threshold = counts.max() / 2
    for (row, col), value in np.ndenumerate(counts):
        ax.text(col, row, str(value), ha="center", va="center", fontsize=7,
                color="white" if value > threshold else "black")
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted digit", ylabel="true digit", title=title)
    fig.colorbar(image, ax=ax)
    return _save(fig, path)


def learning_curve_png(history: Sequence[EpochResult], path: Path, title: str) -> Path:
    """Train and validation accuracy per epoch."""
    epochs = [h.epoch for h in history]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(epochs, [h.train_accuracy for h in history], marker="o", label="train")
    ax.plot(epochs, [h.val_accuracy for h in history], marker="o", label="validation")
    ax.set(xlabel="epoch", ylabel="accuracy", title=title)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
