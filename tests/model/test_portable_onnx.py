"""Portable ONNX files (issue 26): every zoo model's graph uses the default ONNX domain only, so that runtimes without
ai.onnx.ml (OpenCV's DNN module, ONNX's reference evaluator, int8 quantizers) load it, and they agree with
onnxruntime; the baseline's graph is sklearn's predict_proba on raw pixels; `export --quantize` on the baseline."""

import numpy as np
import onnx
import pytest
import torch

from digitpipe.baseline import fit_logreg
from digitpipe.export import INPUT_NAME, OPSET, export_onnx, quantize_checked
from digitpipe.models import build_net
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.specs import MODEL_NAMES, LogRegSpec


@pytest.fixture(scope="module")
def logreg(split):
    """The baseline fitted briefly on the fixture (30 lbfgs iterations: ~86% held-out already)."""
    return fit_logreg(LogRegSpec(max_iter=30), split.train)


@pytest.fixture(scope="module")
def exported(logreg, tmp_path_factory):
    """Every zoo model's ONNX file: the fitted baseline, and the nets as seeded initialisation (the graph is the
    point here, not the weights)."""
    folder = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    models = {name: logreg if name == "logreg" else build_net(name).eval() for name in MODEL_NAMES}
    return {name: export_onnx(model, folder / f"{name}.onnx") for name, model in models.items()}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_node_and_opset_is_in_the_default_domain(exported, name):
    proto = onnx.load(str(exported[name]))
    assert [(opset.domain, opset.version) for opset in proto.opset_import] == [("", OPSET)]
    assert {node.domain for node in proto.graph.node} == {""}
    assert not proto.functions  # local functions would carry domains of their own


@pytest.mark.slow  # onnx's pure-Python reference evaluator: seconds per net
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_reference_evaluator_gives_onnxruntimes_top1(exported, digits, name):
    from onnx.reference import ReferenceEvaluator  # pure numpy: no ai.onnx.ml, no onnxruntime

    images, scorer = digits.images[:256], OnnxScorer(exported[name])
    reference = ReferenceEvaluator(str(exported[name])).run(None, {INPUT_NAME: scorer.as_input(images)})[0]
    np.testing.assert_array_equal(reference.argmax(1), scorer.predict(images))
    np.testing.assert_allclose(reference, scorer.scores(images), atol=1e-4)


def test_baseline_graph_is_sklearns_predict_proba_on_raw_pixels(exported, logreg, digits):
    proto = onnx.load(str(exported["logreg"]))
    assert [node.op_type for node in proto.graph.node] == ["MatMul", "Add", "Softmax", "ArgMax"]
    batch, width = proto.graph.input[0].type.tensor_type.shape.dim
    assert (proto.graph.input[0].name, batch.dim_param, width.dim_value) == (INPUT_NAME, "N", 784)
    raw = digits.images.reshape(len(digits), 784).astype(np.float32)  # 0-255, as every caller feeds them
    probabilities, labels = OnnxScorer(exported["logreg"]).session.run(None, {INPUT_NAME: raw})
    np.testing.assert_allclose(probabilities, logreg.predict_proba(raw), atol=1e-5)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, logreg.predict(raw))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_opencv_dnn_loads_and_agrees(exported, digits, name):
    cv2 = pytest.importorskip("cv2")  # not a dependency: checked where a developer has it
    images, scorer = digits.images[:256], OnnxScorer(exported[name])
    net = cv2.dnn.readNetFromONNX(str(exported[name]))
    net.setInput(scorer.as_input(images))
    np.testing.assert_array_equal(net.forward().argmax(1), scorer.predict(images))


def test_int8_baseline_is_quantized_like_a_net(exported, split, tmp_path):
    kept = quantize_checked(exported["logreg"], split.train.images[:256], split.test, tmp_path / "int8.onnx",
                            max_drop=1.0)
    assert kept.accepted and kept.path == tmp_path / "int8.onnx"
    assert kept.fp32_accuracy > 0.8 and kept.fp32_accuracy - kept.int8_accuracy < 0.03
    ops = {node.op_type for node in onnx.load(str(kept.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert OnnxScorer(kept.path).scores(split.test.images[:7]).shape == (7, 10)


@pytest.mark.parametrize("max_drop, code, verdict", [("1.0", 0, "accepted"), ("-1.0", 1, "refused")])
def test_export_quantize_on_the_baseline_prints_its_verdict(exported, fixture_dir, tmp_path, digitpipe_cli,
                                                             max_drop, code, verdict):
    output = tmp_path / "logreg.int8.onnx"
    result = digitpipe_cli("export", "--model", exported["logreg"], "--quantize", "--data", fixture_dir,
                           "--protocol", "book", "--seed", "0", "--max-drop", max_drop, "--output", output)
    assert result.code == code, result.err
    line = result.out.strip().splitlines()[-1]
    assert line.startswith(f"int8 {verdict}: held-out accuracy "), result.out
    assert "checked on the held-out part of the split named (book, seed 0)" in line
    accepted = verdict == "accepted"
    assert line.endswith(f" -> {output}") is accepted and output.exists() is accepted
