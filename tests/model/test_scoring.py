"""Batch scoring: Kaggle submission output, every bad row counted with its reason, nothing half-written."""

import gzip

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from digitpipe.data import split_dataset
from digitpipe.errors import DataError
from digitpipe.export import export_onnx
from digitpipe.records.models import ModelIdentity
from digitpipe.records.specs import SPECS
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.batch_scoring import score_file
from digitpipe.baseline import fit_logreg
from tests.helpers import assert_one_line_error, kaggle_frame, write_kaggle_csv


@pytest.fixture(scope="module")
def model(digits, tmp_path_factory):
    """A logistic regression fitted on the fixture, exported to ONNX: (native model, onnx path)."""
    clf = fit_logreg(SPECS["logreg"], split_dataset(digits).train)
    return clf, export_onnx(clf, tmp_path_factory.mktemp("model") / "logreg.onnx")


def test_ten_thousand_rows_match_the_models_own_predictions(tmp_path, digits, model):
    clf, onnx_path = model
    images = np.concatenate([digits.images] * 10)  # 10,000 real digits
    source = write_kaggle_csv(tmp_path / "test.csv", images)
    report = score_file(OnnxScorer(onnx_path), source, tmp_path / "submission.csv", ModelIdentity("test"))
    submission = pd.read_csv(tmp_path / "submission.csv")
    assert list(submission.columns) == ["ImageId", "Label"]
    assert submission.ImageId.tolist() == list(range(1, 10_001))
    np.testing.assert_array_equal(submission.Label, clf.predict_proba(images.reshape(len(images), -1).astype(np.float32)).argmax(1))
    assert (report.scored, report.rejected) == (10_000, 0)


def test_onnxruntime_takes_the_processs_share_of_the_cores(monkeypatch, model):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one of several processes on the machine, as a Dask worker is
    assert OnnxScorer(model[1]).session.get_session_options().intra_op_num_threads == 1


def test_malformed_rows_are_rejected_with_reasons_and_the_rest_scored(tmp_path, digits, model):
    _, onnx_path = model
    path = write_kaggle_csv(tmp_path / "test.csv", digits.images[:20])
    lines = path.read_text().splitlines()
    lines[3] = lines[3] + ",7"  # data row 3: an extra field
    lines[5] = lines[5].replace(",0,", ",x,", 1)  # row 5: text
    lines[8] = "256," + lines[8].split(",", 1)[1]  # row 8: pixel0 = 256
    lines[9] = "-1," + lines[9].split(",", 1)[1]  # row 9
    lines[12] = lines[12].replace(",0,", ",0.5,", 1)  # row 12: a float
    path.write_text("\n".join(lines) + "\n")
    x, half = lines[5].split(",").index("x"), lines[12].split(",").index("0.5")  # the columns named in the reasons
    report = score_file(OnnxScorer(onnx_path), path, tmp_path / "out.csv", ModelIdentity("test"))
    rejects = pd.read_csv(tmp_path / "out.csv.rejects.csv")
    assert rejects.row.tolist() == [3, 5, 8, 9, 12]
    assert rejects.reason.tolist() == [
        "expected 784 fields, found 785", f"non-integer value 'x' in pixel{x}", "pixel0 = 256 is outside 0..255",
        "pixel0 = -1 is outside 0..255", f"non-integer value '0.5' in pixel{half}"]
    scored = pd.read_csv(tmp_path / "out.csv")
    assert scored.ImageId.tolist() == [r for r in range(1, 21) if r not in (3, 5, 8, 9, 12)]
    assert (report.scored, report.rejected) == (15, 5)


def test_labelled_idx_and_parquet_inputs_give_the_same_predictions(tmp_path, fixture_dir, digits, model):
    _, onnx_path = model
    kaggle_frame(digits).to_parquet(tmp_path / "digits.parquet")
    scorer = OnnxScorer(onnx_path)
    idx = score_file(scorer, fixture_dir, tmp_path / "idx.csv", ModelIdentity("test"), probabilities=True)
    parquet = score_file(scorer, tmp_path / "digits.parquet", tmp_path / "pq.parquet", ModelIdentity("test"))
    assert idx.accuracy == parquet.accuracy and idx.accuracy > 0.8
    with_probs = pd.read_csv(tmp_path / "idx.csv")
    np.testing.assert_array_equal(with_probs.Label, pq.read_table(tmp_path / "pq.parquet")["Label"].to_numpy())
    np.testing.assert_allclose(with_probs[[f"prob_{d}" for d in range(10)]].sum(axis=1), 1, atol=1e-4)


def truncated_csv_gz(tmp_path, images):
    raw = gzip.compress(write_kaggle_csv(tmp_path / "t.csv", images).read_bytes())
    (tmp_path / "t.csv.gz").write_bytes(raw[: len(raw) // 2])
    return tmp_path / "t.csv.gz"


def test_truncated_input_leaves_no_output(tmp_path, digits, model):
    _, onnx_path = model
    source = truncated_csv_gz(tmp_path, digits.images[:300])
    with pytest.raises(DataError) as refused:
        score_file(OnnxScorer(onnx_path), source, tmp_path / "out.csv", ModelIdentity("test"))
    assert str(refused.value) == f"{source}: truncated gzip stream (the file ends before its compressed data does)"
    assert not list(tmp_path.glob("out.csv*"))


@pytest.mark.parametrize("command", ["score", "validate"])
def test_a_truncated_csv_gz_is_one_line_exit_2_and_no_output(command, tmp_path, digits, model, digitpipe_cli):
    _, onnx_path = model
    source = truncated_csv_gz(tmp_path, digits.images[:300])
    args = {"score": ["--model", str(onnx_path), "--input", str(source), "--output", str(tmp_path / "out.csv")],
            "validate": ["--data", str(source)]}[command]
    result = digitpipe_cli(command, *args)
    assert result.code == 2
    assert result.err == (
        f"digitpipe: error: {source}: truncated gzip stream (the file ends before its compressed data does)\n")
    assert not list(tmp_path.glob("out.csv*"))


def test_cli_exits_1_when_too_many_rows_are_rejected_and_still_writes_the_scores(tmp_path, digits, model,
                                                                                 digitpipe_cli):
    _, onnx_path = model
    path = write_kaggle_csv(tmp_path / "test.csv", digits.images[:50])
    lines = path.read_text().splitlines()
    lines[1] = "oops"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.csv"
    result = digitpipe_cli("score", "--model", onnx_path, "--input", path, "--output", out)
    assert result.code == 1
    assert result.err.splitlines()[-1] == (
        f"digitpipe: error: {path}: 2.00% of rows rejected, above the allowed 1.00% (see {out}.rejects.csv)")
    assert len(pd.read_csv(out)) == 49  # the good rows are still scored and counted


def test_cli_refuses_a_corrupt_model_file(tmp_path, digits, digitpipe_cli):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")
    source = write_kaggle_csv(tmp_path / "test.csv", digits.images[:5])
    result = digitpipe_cli("score", "--model", bad, "--input", source, "--output", tmp_path / "out.csv")
    assert_one_line_error(result.code, result.err, 2, f"{bad}: cannot load as an ONNX model (")
    assert len(result.err.splitlines()) == 1
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.slow  # static quantization and its calibration: seconds
def test_int8_model_is_kept_only_when_accuracy_holds(tmp_path, digits):
    import dataclasses


    from digitpipe.export import quantize_checked
    from digitpipe.zoo import train_model

    split = split_dataset(digits)
    lenet = train_model("lenet", dataclasses.replace(SPECS["lenet"], epochs=2), split).model
    onnx_path = export_onnx(lenet, tmp_path / "lenet.onnx")
    kept = quantize_checked(onnx_path, split.train.images[:256], split.test, tmp_path / "kept.onnx", max_drop=1.0)
    assert kept.accepted and kept.path.is_file() and "accepted" in kept.reason()
    assert OnnxScorer(kept.path).scores(digits.images[:7]).shape == (7, 10)
    refused = quantize_checked(onnx_path, split.train.images[:256], split.test, tmp_path / "refused.onnx",
                               max_drop=-1.0)  # an impossible bar: nothing may be written
    assert not refused.accepted and refused.path is None and not (tmp_path / "refused.onnx").exists()


@pytest.fixture(scope="module")
def legacy_logreg(model, tmp_path_factory):
    """The baseline as digitpipe exported it before issue 26 (registered versions still hold such files):
    skl2onnx's ai.onnx.ml LinearClassifier, outputs reordered so that the probabilities come first."""
    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    clf = model[0]
    proto = convert_sklearn(clf, initial_types=[("pixels", FloatTensorType([None, 784]))],
                            options={id(clf): {"zipmap": False}}, target_opset={"": 18, "ai.onnx.ml": 3})
    outputs = sorted(proto.graph.output, key=lambda o: o.name != "probabilities")
    del proto.graph.output[:]
    proto.graph.output.extend(outputs)
    assert "ai.onnx.ml" in {opset.domain for opset in proto.opset_import}
    path = tmp_path_factory.mktemp("legacy") / "logreg.onnx"
    onnx.save_model(proto, path)
    return path


def test_an_old_skl2onnx_logreg_file_still_scores(legacy_logreg, digits, model):
    clf, new_file = model
    old = OnnxScorer(legacy_logreg).scores(digits.images)
    np.testing.assert_allclose(old, clf.predict_proba(digits.images.reshape(-1, 784).astype(np.float32)), atol=1e-5)
    np.testing.assert_array_equal(old.argmax(1), OnnxScorer(new_file).predict(digits.images))


def test_int8_refuses_an_old_skl2onnx_logreg_file_in_one_line(tmp_path, fixture_dir, legacy_logreg, digitpipe_cli):
    result = digitpipe_cli("export", "--model", legacy_logreg, "--quantize", "--data", fixture_dir, "--protocol",
                           "book", "--seed", "0", "--output", tmp_path / "x.onnx")
    assert_one_line_error(result.code, result.err, 2, f"{legacy_logreg}: int8 quantization needs default-domain "
                          "operators, this graph uses ai.onnx.ml (older logreg exports are skl2onnx graphs: train "
                          "the model again to quantize it)")
    assert not (tmp_path / "x.onnx").exists()
