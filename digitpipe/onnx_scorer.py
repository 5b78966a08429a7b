"""OnnxScorer: one onnxruntime session, reused, fed large batches. Light on purpose (numpy and onnxruntime only):
export, tracking, promotion and the scoring command all use it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from digitpipe.errors import DataError
from digitpipe.files import first_line
from digitpipe.runtime import core_share

SCORE_BATCH = 4096


class OnnxScorer:
    """Scores uint8 digit images with an ONNX model that follows the digitpipe contract (raw pixels in, [N, 10] out)."""

    def __init__(self, path: str | Path, batch_size: int = SCORE_BATCH) -> None:
        self.batch_size = batch_size
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = core_share()
        # idle threads sleep instead of spinning: `digitpipe score` parses the next chunk beside onnxruntime
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors for missing or corrupt files
            raise DataError(path, f"cannot load as an ONNX model ({first_line(exc, 200)})") from None
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        self.input_rank = len(model_input.shape)  # 2: [N, 784]; 4: [N, 1, 28, 28]

    def as_input(self, images: np.ndarray) -> np.ndarray:
        """uint8 images N x 28 x 28 as this model's float input: [N, 784] or [N, 1, 28, 28]."""
        return images.reshape((-1, 784) if self.input_rank == 2 else (-1, 1, 28, 28)).astype(np.float32)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """First output of the model ([N, 10] scores or probabilities) for uint8 images N x 28 x 28."""
        out = [
            self.session.run(None, {self.input_name: self.as_input(images[i : i + self.batch_size])})[0]
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, 10), np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Predicted digit per image."""
        return self.scores(images).argmax(1)


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities from a model's scores: unchanged if already probabilities, else a softmax of logits."""
    if len(scores) == 0 or (scores.min() >= 0 and np.allclose(scores.sum(1), 1, atol=1e-3)):
        return scores
    shifted = np.exp(scores - scores.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)
