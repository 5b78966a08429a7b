"""The training loop and the ONNX contract: raw pixels in, [N, 10] scores out, same top-1 as the native model."""

import dataclasses

import numpy as np
import onnx
import pytest

from digitpipe.export import export_onnx, parity_mismatches
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.train import predict_scores
from digitpipe.records.specs import SPECS
from digitpipe.zoo import train_model


@pytest.fixture(scope="module")
def trained(split):
    """logreg and a 3-epoch LeNet fitted on the fixture."""
    lenet = train_model("lenet", dataclasses.replace(SPECS["lenet"], epochs=3), split, seed=0)
    return {"logreg": train_model("logreg", SPECS["logreg"], split), "lenet": lenet}


def test_lenet_learns_and_reports_every_epoch(trained):
    history = trained["lenet"].history
    assert [h.epoch for h in history] == [1, 2, 3]
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].val_accuracy > 0.5  # chance is 0.1


def test_callbacks_get_each_epoch(split):
    seen = []
    train_model("lenet", dataclasses.replace(SPECS["lenet"], epochs=2), split, callbacks=[seen.append])
    assert [r.epoch for r in seen] == [1, 2]


def test_same_seed_same_result_on_cpu(split):
    def accuracy():
        model = train_model("lenet", dataclasses.replace(SPECS["lenet"], epochs=1), split, seed=3).model
        return predict_scores(model, split.test.images).argmax(1)

    np.testing.assert_array_equal(accuracy(), accuracy())


def test_logreg_beats_chance_by_far(trained, split):
    predicted = trained["logreg"].scores(split.test.images).argmax(1)
    assert np.mean(predicted == split.test.labels) > 0.8


@pytest.mark.parametrize("name, input_shape", [("logreg", ["N", 784]), ("lenet", ["batch", 1, 28, 28])])
def test_onnx_contract_and_parity(tmp_path, trained, split, name, input_shape):
    path = export_onnx(trained[name].model, tmp_path / f"{name}.onnx")
    onnx.checker.check_model(str(path))
    scorer = OnnxScorer(path)
    assert len(scorer.session.get_inputs()) == 1
    assert scorer.session.get_inputs()[0].shape[1:] == input_shape[1:]
    native = trained[name].scores(split.test.images).argmax(1)
    assert parity_mismatches(path, split.test.images, native) == 0
    rng = np.random.default_rng(0)
    for batch in (1, 7, 4096):  # the batch axis must stay dynamic
        images = rng.integers(0, 256, (batch, 28, 28), dtype=np.uint8)
        scores = scorer.scores(images)
        assert scores.shape == (batch, 10)
        np.testing.assert_array_equal(scores.argmax(1), trained[name].scores(images).argmax(1))


def test_export_leaves_no_temporary_file(tmp_path, trained):
    export_onnx(trained["logreg"].model, tmp_path / "m.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
