"""Batch scoring on onnxruntime: one session, reused, fed large batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from digitpipe.errors import DataError
from digitpipe.runtime import available_cores

SCORE_BATCH = 4096


class OnnxScorer:
    """Scores uint8 digit images with an ONNX model that follows the digitpipe contract (raw pixels in, [N, 10] out)."""

    def __init__(self, path: str | Path) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = available_cores()
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for missing or corrupt files
            raise DataError(path, f"cannot load as an ONNX model ({str(exc).splitlines()[0][:200]})") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_rank = len(model_input.shape)  # 2: [N, 784]; 4: [N, 1, 28, 28]

    def scores(self, images: np.ndarray) -> np.ndarray:
        """First output of the model ([N, 10] scores or probabilities) for uint8 images N x 28 x 28."""
        shape = (-1, 784) if self.input_rank == 2 else (-1, 1, 28, 28)
        out = [
            self.session.run(None, {self.input_name: images[i : i + SCORE_BATCH].reshape(shape).astype(np.float32)})[0]
            for i in range(0, len(images), SCORE_BATCH)
        ]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted digit per image."""
        return self.scores(images).argmax(1)
