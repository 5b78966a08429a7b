"""ONNX export (torch exporter for nets, onnx.helper for the baseline), checks, and parity with the native model.

Contract of every exported graph: one float input of raw pixel values 0-255 with a dynamic batch
dimension ([N, 1, 28, 28] for nets, [N, 784] for the baseline); first output [N, 10] class scores; operators and
opsets of the default ONNX domain only.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from digitpipe.errors import UserError
from digitpipe.files import atomic_path
from digitpipe.onnx_scorer import OnnxScorer

if TYPE_CHECKING:
    from digitpipe.data import Dataset
    from digitpipe.zoo import TrainedModel

INPUT_NAME = "pixels"
OPSET = 18


def export_onnx(model: Any, path: Path) -> Path:
    """Export a torch net or the scikit-learn baseline to `path` (checked, written atomically)."""
    proto = _logreg_to_onnx(model) if hasattr(model, "predict_proba") else _torch_to_onnx(model)
    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, tmp)
    return path


def _torch_to_onnx(model: Any) -> onnx.ModelProto:
    """torch's TorchScript-based exporter: ~0.1 s per net here against ~1.1 s (3.7 s the first time) for the
    dynamo exporter, for the same graph on these small convnets. Where a torch release no longer has it, the
    dynamo exporter takes over; either way the parity check and the batch-size tests hold the result."""
    import torch

    model = model.eval().cpu()
    example = torch.zeros(8, 1, 28, 28)  # batch > 1 so the exporter cannot specialise the batch axis to 1
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # the exporter chatters about optional ops
    with warnings.catch_warnings():  # torch's deprecation and pytree FutureWarnings, not ours to fix
        warnings.simplefilter("ignore")
        try:
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME], output_names=["scores"],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, "scores": {0: "batch"}},
                              opset_version=OPSET, dynamo=False)
            return onnx.load_from_string(buffer.getvalue())
        except (TypeError, RuntimeError, AttributeError):  # no TorchScript exporter in this torch
            program = torch.onnx.export(
                model, (example,), input_names=[INPUT_NAME], output_names=["scores"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), opset_version=OPSET, dynamo=True,
                external_data=False, verbose=False)
            return program.model_proto


def _logreg_to_onnx(model: Any) -> onnx.ModelProto:
    """The baseline as MatMul, Add, Softmax and ArgMax: default-domain operators only, so that runtimes without
    ai.onnx.ml (OpenCV's DNN module, ONNX's reference evaluator, int8 quantizers) load it. skl2onnx has no option
    that drops every ai.onnx.ml node. fit_logreg folded the /255 into coef_, so the graph takes raw pixels."""
    from onnx import TensorProto, helper, numpy_helper

    if not np.array_equal(model.classes_, np.arange(10)):  # ArgMax's column index is the digit only then
        raise ValueError(f"the baseline must know the digits 0-9 as its classes, not {model.classes_.tolist()}")
    weights = numpy_helper.from_array(model.coef_.T.astype(np.float32), "coef")
    bias = numpy_helper.from_array(model.intercept_.astype(np.float32), "intercept")
    nodes = [helper.make_node("MatMul", [INPUT_NAME, "coef"], ["product"]),
             helper.make_node("Add", ["product", "intercept"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),  # sklearn's multinomial predict_proba
             helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0)]  # int64, as skl2onnx's label
    graph = helper.make_graph(
        nodes, "logreg", [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 784])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("label", TensorProto.INT64, ["N"])], [weights, bias])
    opsets = [helper.make_opsetid("", OPSET)]
    # the oldest IR version that carries this opset: what older runtimes accept (onnx would write its newest)
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets),
                             producer_name="digitpipe")


def export_checked(trained: TrainedModel, test: Dataset, predicted: np.ndarray, folder: Path) -> Path:
    """Export to folder/model.onnx and require the same top-1 digit as the native model on every held-out image."""
    path = export_onnx(trained.model, folder / "model.onnx")
    mismatches = parity_mismatches(path, test.images, predicted)
    if mismatches:
        path.unlink()
        raise RuntimeError(f"{trained.name}: ONNX and native predictions differ on {mismatches} held-out images")
    return path


def foreign_domains(proto: onnx.ModelProto) -> list[str]:
    """Operator domains other than the default ONNX one that the model imports or its nodes use, sorted."""
    used = {opset.domain for opset in proto.opset_import} | {node.domain for node in proto.graph.node}
    return sorted(used - {"", "ai.onnx"})  # "ai.onnx" is the default domain's long name


def parity_mismatches(onnx_path: Path, images: np.ndarray, native_predictions: np.ndarray) -> int:
    """Rows whose top-1 digit differs between the ONNX model (onnxruntime) and the native model."""
    return int(np.sum(OnnxScorer(onnx_path).predict(images) != native_predictions))


@dataclass(frozen=True)
class Quantization:
    """Outcome of int8 quantization: kept only if held-out accuracy drops by at most `max_drop`."""

    fp32_accuracy: float
    int8_accuracy: float
    max_drop: float
    path: Path | None  # the int8 file, None when refused

    @property
    def accepted(self) -> bool:
        return self.fp32_accuracy - self.int8_accuracy <= self.max_drop

    def reason(self) -> str:
        """One line for logs and registry tags."""
        verdict = "accepted" if self.accepted else "refused"
        return (f"int8 {verdict}: held-out accuracy {self.int8_accuracy:.4f} vs fp32 {self.fp32_accuracy:.4f} "
                f"(drop {100 * (self.fp32_accuracy - self.int8_accuracy):.2f} points, limit {100 * self.max_drop:.2f})")


def quantize_checked(onnx_path: Path, calibration: np.ndarray, test: Dataset, out_path: Path,
                     max_drop: float = 0.001) -> Quantization:
    """Static QDQ int8 quantization calibrated on `calibration` images; the file is kept only if accuracy holds."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if domains := foreign_domains(onnx.load(str(onnx_path), load_external_data=False)):
        # logreg files exported before the baseline became MatMul + Softmax hold skl2onnx's LinearClassifier
        raise UserError(f"{onnx_path}: int8 quantization needs default-domain operators, this graph uses "
                        f"{', '.join(domains)} (older logreg exports are skl2onnx graphs: train the model again "
                        "to quantize it)")
    with tempfile.TemporaryDirectory() as tmp:
        prepared, quantized = Path(tmp) / "prepared.onnx", Path(tmp) / "int8.onnx"
        # ONNX shape inference + graph folding, as ORT recommends; only the batch axis is dynamic in these graphs,
        # so the symbolic pass (for transformer-style shapes) adds nothing
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantized), _calibration_reader(calibration, OnnxScorer(onnx_path)),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True)
        fp32 = float(np.mean(OnnxScorer(onnx_path).predict(test.images) == test.labels))
        int8 = float(np.mean(OnnxScorer(quantized).predict(test.images) == test.labels))
        result = Quantization(fp32, int8, max_drop, out_path)
        if not result.accepted:
            return dataclasses.replace(result, path=None)
        with atomic_path(out_path) as tmp_out:
            shutil.copyfile(quantized, tmp_out)
    return result


def _calibration_reader(images: np.ndarray, scorer: OnnxScorer):
    """Feeds calibration images to the quantizer in the model's own input layout, 64 at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter({scorer.input_name: scorer.as_input(images[i : i + 64])}
                                for i in range(0, len(images), 64))

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    return Calibration()
