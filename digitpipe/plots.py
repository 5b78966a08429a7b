"""Matplotlib (Agg) pictures: a model's confusion matrix, learning curves, most confidently wrong digits, feature
maps and the digits a perturbation flips; a run's comparison chart; the exploration's sample digits, centre-block
histograms and mean digits."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from digitpipe.onnx_scorer import probabilities  # noqa: E402
from digitpipe.records.training import EpochResult, ModelResult  # noqa: E402

if TYPE_CHECKING:
    import torch

    from digitpipe.records.drift import DriftVerdict


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


def learning_curves_png(history: Sequence[EpochResult], path: Path, title: str) -> Path:
    """Train vs validation accuracy (left) and loss (right) per epoch: the book's learning curve."""
    epochs = [h.epoch for h in history]
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in ((acc, "accuracy"), (loss, "loss")):
        ax.plot(epochs, [getattr(h, f"train_{metric}") for h in history], marker="o", label="train")
        ax.plot(epochs, [getattr(h, f"val_{metric}") for h in history], marker="o", label="validation")
        ax.set(xlabel="epoch", ylabel=metric)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return _save(fig, path)


def wrong_digits_png(images: np.ndarray, labels: np.ndarray, scores: np.ndarray, path: Path, title: str,
                     count: int = 16) -> Path:
    """The `count` test digits the model got wrong with the highest confidence, upright, with true/predicted."""
    probs = probabilities(scores)
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-confidence[wrong])][:count]
    captions = [f"true {labels[i]} / {predicted[i]}\n{confidence[i]:.0%}" for i in worst]
    return _digit_grid(images[worst], captions, f"{title}: most confidently wrong ({len(wrong)} wrong in all)", path)


def disagreements_png(images: np.ndarray, labels: np.ndarray, ours: np.ndarray, theirs: np.ndarray, path: Path,
                      us: str, them: str, count: int = 24) -> Path:
    """The first `count` digits on which two models answer differently, each with both answers and the truth."""
    differ = np.flatnonzero(ours != theirs)
    shown = differ[:count]
    captions = [f"{us}: {ours[i]}  {them}: {theirs[i]}\ntrue {labels[i]}" for i in shown]
    return _digit_grid(images[shown], captions, f"{us} against {them}: {len(differ)} digits answered differently", path)


def _digit_grid(images: np.ndarray, captions: Sequence[str], title: str, path: Path, columns: int = 8) -> Path:
    """Digits upright in rows of `columns`, each under its caption."""
    rows = max(1, math.ceil(len(images) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(12, 1.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(caption, fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


def flips_png(clean: np.ndarray, labels: np.ndarray, clean_predicted: np.ndarray, copies: np.ndarray,
              copies_predicted: np.ndarray, names: Sequence[str], path: Path, title: str, count: int = 8) -> Path:
    """Digits the model gets right clean but wrong once perturbed: each clean digit beside its first flipped copy."""
    flipped = (clean_predicted == labels) & (copies_predicted != labels).any(axis=0)
    shown = np.flatnonzero(flipped)[:count]
    fig, axes = plt.subplots(2, count, figsize=(1.5 * count, 3.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for column, i in enumerate(shown):
        copy = int(np.argmax(copies_predicted[:, i] != labels[i]))
        axes[0, column].imshow(clean[i], cmap="gray_r")
        axes[0, column].set_title(f"clean: {clean_predicted[i]}", fontsize=8)
        axes[1, column].imshow(copies[copy, i], cmap="gray_r")
        axes[1, column].set_title(f"{names[copy]}: {copies_predicted[copy, i]}", fontsize=8)
    fig.suptitle(f"{title}: {int(flipped.sum())} of {len(labels)} digits flip under some perturbation")
    return _save(fig, path)


def drift_png(drift: DriftVerdict, path: Path) -> Path:
    """The drift report's picture: per feature, the reference's and the batch's shares of each bin side by side."""
    features = drift.features
    rows, columns = math.ceil(len(features) / 4), 4
    fig, axes = plt.subplots(rows, columns, figsize=(14, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (name, feature) in zip(axes.flat, features.items()):
        ax.axis("on")
        bins = np.arange(len(feature.reference_shares))
        ax.bar(bins - 0.2, feature.reference_shares, 0.4, label="training data")
        ax.bar(bins + 0.2, feature.batch_shares, 0.4, label="batch")
        ax.set_title(f"{name}: PSI {feature.distance:.2f}" + (" (moved)" if name in drift.moved else ""),
                     fontsize=9, color="red" if name in drift.moved else "black")
        ax.set_xticks([])
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"drift check: {drift.kind.value} ({drift.rows:,} rows; bins: the training data's deciles)")
    return _save(fig, path)


def feature_maps_png(model: torch.nn.Module, images: np.ndarray, path: Path, title: str, maps: int = 16) -> Path:
    """The book's picture: the first 16 maps of conv1 (after ReLU), pool1 and conv2 for each given digit."""
    import torch

    layers = ("conv1", "pool1", "conv2")
    captured: dict[str, torch.Tensor] = {}
    hooks = [getattr(model, name).register_forward_hook(_capture(captured, name)) for name in layers]
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.from_numpy(images).float().unsqueeze(1).to(next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    fig, axes = plt.subplots(len(images) * len(layers), maps + 1, figsize=(maps + 1, 1.1 * len(images) * len(layers)))
    for d, image in enumerate(images):
        for l, name in enumerate(layers):
            row = axes[d * len(layers) + l]
            row[0].imshow(image, cmap="gray_r")
            row[0].set_ylabel(name, fontsize=8)
            for m, ax in enumerate(row[1:]):
                if m < captured[name].shape[1]:
                    ax.imshow(captured[name][d, m].float().cpu().numpy(), cmap="viridis")
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title)
    return _save(fig, path)


def _capture(store: dict, name: str):
    import torch

    def hook(module: torch.nn.Module, _inputs, output: torch.Tensor) -> None:
        store[name] = torch.relu(output) if isinstance(module, torch.nn.Conv2d) else output  # conv maps after ReLU

    return hook


def comparison_png(results: Sequence[ModelResult], path: Path) -> Path:
    """Bar chart of held-out accuracy per model, annotated with training seconds and ONNX size."""
    results = sorted(results, key=lambda r: r.accuracy)
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(results) + 1.2))
    bars = ax.barh([r.name for r in results], [100 * r.accuracy for r in results], color="tab:blue")
    for bar, r in zip(bars, results):
        ax.text(bar.get_width() + 0.1, bar.get_y() + bar.get_height() / 2,
                f"{r.accuracy:.2%}  ({r.train_seconds:.0f} s, {r.onnx_kb:.0f} KB)", va="center", fontsize=8)
    low = min(100 * r.accuracy for r in results)
    ax.set(xlim=(max(0, low - 5), 102), xlabel="held-out accuracy (%)", title="models of this pipeline run")
    return _save(fig, path)


def sample_digits_png(data, path: Path, per_digit: int = 8) -> Path:
    """A grid of digits shown upright (row = digit when labelled, else the first images), drawn as one mosaic."""
    if data.labels is not None:
        rows = [data.images[np.flatnonzero(data.labels == digit)[:per_digit]] for digit in range(10)]
    else:
        rows = [data.images[r * per_digit : (r + 1) * per_digit] for r in range(4)]
    fig, ax = plt.subplots(figsize=(per_digit * 0.9, len(rows) * 0.95))
    ax.imshow(_mosaic(rows, per_digit), cmap="gray_r")
    ax.set_xticks([])
    ax.set_yticks(np.arange(len(rows)) * 30 + 14, [str(r) for r in range(len(rows))] if data.labels is not None
                  else [""] * len(rows))
    ax.set_title("sample digits")
    return _save(fig, path)


def block_histograms_png(data, pixels: Sequence[int], path: Path, bins: int = 16) -> Path:
    """Histogram of each of `pixels` (flat indices) per digit: the book's look at the image centre. One panel per
    pixel holds the ten digits' histograms side by side (each normalised to its digit's image count)."""
    flat, span = data.flat(), 256 + 64  # 64: a gap between two digits' histograms
    fig, axes = plt.subplots(len(pixels), 1, figsize=(16, 1.6 * len(pixels)), sharex=True, squeeze=False)
    for ax, pixel in zip(axes[:, 0], pixels):
        for digit in range(10):
            counts, edges = np.histogram(flat[data.labels == digit, pixel], bins=bins, range=(0, 256))
            ax.stairs(counts / max(counts.sum(), 1), edges + digit * span, fill=True, color="tab:blue")
        ax.set_yticks([])
        ax.set_ylabel(f"pixel{pixel}", fontsize=8)
    axes[-1, 0].set_xticks(np.arange(10) * span + 128, [str(d) for d in range(10)])
    axes[-1, 0].set_xlabel("digit (each histogram spans pixel values 0-255)")
    fig.suptitle("central 2x2 block: pixel value histograms per digit")
    return _save(fig, path)


def mean_digits_png(data, path: Path) -> Path:
    """The mean image of each digit, side by side."""
    means = [data.images[data.labels == digit].mean(axis=0) for digit in range(10)]
    fig, ax = plt.subplots(figsize=(12, 1.8))
    ax.imshow(_mosaic([np.stack(means)], 10), cmap="gray_r")
    ax.set_xticks(np.arange(10) * 30 + 14, [str(d) for d in range(10)])
    ax.set_yticks([])
    ax.set_title("mean image of each digit")
    return _save(fig, path)


def _mosaic(rows: list[np.ndarray], columns: int) -> np.ndarray:
    """Rows of 28x28 images as one picture, a 1-pixel border around each; short rows are padded blank."""
    tiles = np.zeros((len(rows), columns, 30, 30), np.float32)
    for r, images in enumerate(rows):
        tiles[r, : len(images), 1:29, 1:29] = images[:columns]
    return tiles.transpose(0, 2, 1, 3).reshape(len(rows) * 30, columns * 30)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def study_pngs(study, folder: Path) -> Path:
    """A study's pictures in `folder`: Optuna's optimisation history and parameter importances (where there are
    enough finished trials to rank them), and each trial's objective against its training seconds."""
    import optuna
    from optuna.visualization import matplotlib as optuna_plots

    folder.mkdir(parents=True, exist_ok=True)
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    objective = {} if len(study.directions) == 1 else {"target": lambda t: t.values[0], "target_name": "objective"}
    pictures = {"optimization_history.png": functools.partial(optuna_plots.plot_optimization_history, **objective)}
    if len(done) >= 2 and any(len({str(t.params.get(k)) for t in done}) > 1 for k in done[0].params):
        pictures["param_importances.png"] = functools.partial(optuna_plots.plot_param_importances, **objective)
    if objective:
        pictures["pareto_front.png"] = functools.partial(optuna_plots.plot_pareto_front,
                                                         target_names=["objective", "training seconds"])
    for name, plot in pictures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
            axes = plot(study)
        _save(axes.figure, folder / name)
    fig, ax = plt.subplots(figsize=(6, 4))
    seconds = [t.user_attrs["score"]["train_seconds"] for t in done]
    ax.scatter(seconds, [t.values[0] for t in done], s=18)
    ax.set(xlabel="training seconds", ylabel="objective (mean of clean and perturbed val accuracy)",
           title=f"study {study.study_name}: {len(done)} complete trials")
    return _save(fig, folder / "objective_vs_seconds.png").parent
