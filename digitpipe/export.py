"""ONNX export (torch exporter for nets, skl2onnx for the baseline), checks, and parity with the native model.

Contract of every exported graph: one float input of raw pixel values 0-255 with a dynamic batch
dimension ([N, 1, 28, 28] for nets, [N, 784] for the baseline); first output [N, 10] class scores.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import torch
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.linear_model import LogisticRegression
from torch import nn

from digitpipe.scoring import OnnxScorer

INPUT_NAME = "pixels"
OPSET = 18


def export_onnx(model: nn.Module | LogisticRegression, path: Path) -> Path:
    """Export `model` to `path` (written under a temporary name, checked, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    proto = _sklearn_to_onnx(model) if isinstance(model, LogisticRegression) else _torch_to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(proto, tmp)
    os.replace(tmp, path)
    return path


def _torch_to_onnx(model: nn.Module) -> onnx.ModelProto:
    model = model.eval().cpu()
    example = torch.zeros(8, 1, 28, 28)  # batch > 1 so the exporter cannot specialise the batch axis to 1
    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter chatters about optional ops
    program = torch.onnx.export(
        model, (example,), input_names=[INPUT_NAME], output_names=["scores"],
        dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
    )
    return program.model_proto


def _sklearn_to_onnx(model: LogisticRegression) -> onnx.ModelProto:
    proto = convert_sklearn(
        model, initial_types=[(INPUT_NAME, FloatTensorType([None, 784]))],
        options={id(model): {"zipmap": False}}, target_opset={"": OPSET, "ai.onnx.ml": 3},
    )
    # skl2onnx emits (label, probabilities); the contract puts the [N, 10] scores first.
    outputs = sorted(proto.graph.output, key=lambda o: o.name != "probabilities")
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    return proto


def parity_mismatches(onnx_path: Path, images: np.ndarray, native_predictions: np.ndarray) -> int:
    """Rows whose top-1 digit differs between the ONNX model (onnxruntime) and the native model."""
    return int(np.sum(OnnxScorer(onnx_path).predict(images) != native_predictions))
