"""Pipeline steps as plain functions: what the Prefect tasks call, usable without Prefect."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import torch

from digitpipe.config import PipelineConfig
from digitpipe.data import Split
from digitpipe.errors import ValidationFailed
from digitpipe.evaluate import Evaluation, evaluate
from digitpipe.export import export_onnx, parity_mismatches
from digitpipe.models import SPECS, LogRegSpec, NetSpec
from digitpipe.plots import confusion_matrix_png, learning_curve_png
from digitpipe.train import Callback, TrainedModel, predict_scores, train_model
from digitpipe.validation import validate


def check_data(data, min_rows: int) -> None:
    """Validate `data`; raise ValidationFailed with the readable report if any expectation fails."""
    report = validate(data, min_rows)
    if not report.success:
        raise ValidationFailed(f"{data.source}: {report.text()}")


def model_spec(name: str, epochs: int | None) -> LogRegSpec | NetSpec:
    """The zoo's spec for `name`, with the epoch count overridden for nets when asked."""
    spec = SPECS[name]
    return dataclasses.replace(spec, epochs=epochs) if epochs and isinstance(spec, NetSpec) else spec


def train(name: str, cfg: PipelineConfig, split: Split, device: str, callbacks: list[Callback]) -> TrainedModel:
    """Train zoo model `name` with the configured overrides."""
    return train_model(name, model_spec(name, cfg.epochs), split, torch.device(device), callbacks)


def evaluate_on_test(trained: TrainedModel, split: Split, folder: Path) -> tuple[Evaluation, np.ndarray]:
    """Held-out metrics and pictures (confusion matrix PNG + JSON, learning curve) written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    predicted = predict_scores(trained.model, split.test.images).argmax(1)
    result = evaluate(split.test.labels, predicted)
    write_json(folder / "confusion_matrix.json", {"rows_true_columns_predicted": result.confusion})
    write_json(folder / "evaluation.json", dataclasses.asdict(result))
    confusion_matrix_png(result.confusion, folder / "confusion_matrix.png",
                         f"{trained.name}: test accuracy {result.accuracy:.2%}")
    if trained.history:
        learning_curve_png(trained.history, folder / "learning_curve.png", f"{trained.name}: learning curve")
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
