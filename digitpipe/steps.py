"""Pipeline steps as plain functions: what the Prefect tasks call, usable without Prefect."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from digitpipe.config import PipelineConfig
from digitpipe.data import Split
from digitpipe.errors import ValidationFailed
from digitpipe.evaluate import Evaluation, comparison_markdown, evaluate
from digitpipe.export import export_onnx, parity_mismatches
from digitpipe.models import SPECS, LogRegSpec, NetSpec
from digitpipe.plots import (
    comparison_png,
    confusion_matrix_png,
    feature_maps_png,
    learning_curves_png,
    wrong_digits_png,
)
from digitpipe.runtime import seed_everything
from digitpipe.train import Callback, TrainedModel, predict_scores, train_model
from digitpipe.validation import ValidationReport, validate


def check_data(data, min_rows: int, docs_dir: Path | None = None) -> ValidationReport:
    """Validate `data` (GX data docs into `docs_dir`); raise ValidationFailed with the readable report on failure."""
    report = validate(data, min_rows, docs_dir)
    if not report.success:
        raise ValidationFailed(f"{data.source}: {report.text()}")
    return report


def model_spec(name: str, cfg: PipelineConfig) -> LogRegSpec | NetSpec:
    """The zoo's spec for `name` with the run's overrides (epochs, early stopping) applied to nets."""
    spec = SPECS[name]
    if not isinstance(spec, NetSpec):
        return spec
    overrides = {"epochs": cfg.epochs, "stop_at_val_accuracy": cfg.stop_at_accuracy, "patience": cfg.patience}
    return dataclasses.replace(spec, **{k: v for k, v in overrides.items() if v is not None})


def train(name: str, cfg: PipelineConfig, split: Split, device: str, callbacks: list[Callback]) -> TrainedModel:
    """Train zoo model `name` from the run's seed, checkpointing nets every epoch (resumed with cfg.resume)."""
    spec = model_spec(name, cfg)
    checkpoint = checkpoint_path(name, spec, cfg, split)
    if not cfg.resume:
        checkpoint.unlink(missing_ok=True)
    seed_everything(cfg.seed, deterministic=device == "cpu")  # per model: independent of the models before it
    trained = train_model(name, spec, split, torch.device(device), callbacks, checkpoint)
    checkpoint.unlink(missing_ok=True)  # finished: the next run starts fresh
    return trained


def checkpoint_path(name: str, spec: LogRegSpec | NetSpec, cfg: PipelineConfig, split: Split) -> Path:
    """One file per (model, hyperparameters, seed, data split): --resume only ever continues the same training."""
    identity = json.dumps([name, dataclasses.asdict(spec), cfg.seed, split.train.digest, split.val.digest])
    return cfg.out_dir / "checkpoints" / f"{name}-{hashlib.sha256(identity.encode()).hexdigest()[:16]}.pt"


def evaluate_on_test(trained: TrainedModel, split: Split, folder: Path) -> tuple[Evaluation, np.ndarray]:
    """Held-out metrics and the book's pictures, written to `folder`: confusion matrix (PNG + JSON), learning
    curves, the most confidently wrong digits and, for CNNs, feature maps of two test digits."""
    folder.mkdir(parents=True, exist_ok=True)
    test, name = split.test, trained.name
    scores = predict_scores(trained.model, test.images)
    predicted = scores.argmax(1)
    result = evaluate(test.labels, predicted)
    write_json(folder / "confusion_matrix.json", {"rows_true_columns_predicted": result.confusion})
    write_json(folder / "evaluation.json", dataclasses.asdict(result))
    confusion_matrix_png(result.confusion, folder / "confusion_matrix.png", f"{name}: test accuracy {result.accuracy:.2%}")
    wrong_digits_png(test.images, test.labels, scores, folder / "most_confident_errors.png", name)
    if trained.history:
        learning_curves_png(trained.history, folder / "learning_curves.png", f"{name}: learning curves")
    if hasattr(trained.model, "conv1"):
        feature_maps_png(trained.model, test.images[:2], folder / "feature_maps.png", f"{name}: feature maps")
    return result, predicted


def export_checked(trained: TrainedModel, split: Split, predicted: np.ndarray, folder: Path) -> Path:
    """Export to ONNX and require the same top-1 digit as the native model on every held-out image."""
    if trained.is_net:
        trained.model.cpu()
    path = export_onnx(trained.model, folder / "model.onnx")
    mismatches = parity_mismatches(path, split.test.images, predicted)
    if mismatches:
        path.unlink()
        raise RuntimeError(f"{trained.name}: ONNX and native predictions differ on {mismatches} held-out images")
    return path


def write_json(path: Path, payload: object) -> Path:
    """Write JSON under a temporary name, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def write_comparison(rows: list[dict], folder: Path) -> Path:
    """The run's models side by side: comparison.md and comparison.png in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "comparison.md").write_text(comparison_markdown(rows))
    comparison_png(rows, folder / "comparison.png")
    return folder
