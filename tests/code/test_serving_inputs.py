"""Request bodies as digits (digitpipe.serving.inputs): digitpipe's JSON batch, MLflow's four JSON formats and CSV,
and what each refuses, with its status and one line."""

import json

import numpy as np
import pytest

from digitpipe.serving.inputs import InputError, as_images, csv_images, mlflow_images, parse_json, predict_images

IMAGES = np.arange(2 * 784).reshape(2, 28, 28) % 256
COLUMNS = [f"pixel{i}" for i in range(784)]


@pytest.mark.parametrize("values", [IMAGES.tolist(), IMAGES.reshape(2, 784).tolist(),
                                    IMAGES.reshape(2, 1, 28, 28).tolist()])
def test_a_batch_of_28x28_784_or_1x28x28_arrays_is_read(values):
    assert np.array_equal(predict_images({"images": values}), IMAGES)
    assert np.array_equal(predict_images(values), IMAGES)


def test_one_28x28_array_is_one_image():
    assert predict_images(IMAGES[0].tolist()).shape == (1, 28, 28)


@pytest.mark.parametrize("doc", [
    {"dataframe_split": {"columns": COLUMNS, "data": IMAGES.reshape(2, 784).tolist()}},
    {"dataframe_split": {"columns": ["label", *COLUMNS[::-1]],  # named columns in any order; label ignored
                         "data": [[7, *row[::-1]] for row in IMAGES.reshape(2, 784).tolist()]}},
    {"dataframe_split": {"data": IMAGES.reshape(2, 784).tolist()}},
    {"dataframe_records": [dict(zip(COLUMNS, row, strict=True)) for row in IMAGES.reshape(2, 784).tolist()]},
    {"instances": IMAGES.tolist()},
    {"inputs": IMAGES.reshape(2, 784).tolist()},
])
def test_mlflows_json_formats_give_the_same_digits(doc):
    assert np.array_equal(mlflow_images(json.loads(json.dumps(doc))), IMAGES)


def test_csv_with_a_header_gives_the_digits():
    body = ",".join(COLUMNS) + "\n" + "\n".join(",".join(map(str, row)) for row in IMAGES.reshape(2, 784))
    assert np.array_equal(csv_images(body.encode()), IMAGES)


@pytest.mark.parametrize(("values", "status", "message"), [
    ([[1, 2]], 422, "images: shape [1, 2]; expected N images of 28x28 (or 784) pixels"),
    ([[0] * 784, [0] * 783], 422, "images: expected arrays of numbers of one shape (28x28 or 784 values each)"),
    ([], 422, "images: shape [0]; expected N images of 28x28 (or 784) pixels"),
    ([[float("nan")] * 784], 422, "images: NaN or infinite pixel values"),
    ([[-1] * 784], 422, "images: pixel values from -1 to -1; expected 0-255"),
    ([[256] * 784], 422, "images: pixel values from 256 to 256; expected 0-255"),
    ([[0] * 784] * 1025, 413, "images: 1,025 images; at most 1,024 per request"),
    ([[{"a": 1}] * 784], 422, "images: expected arrays of numbers of one shape (28x28 or 784 values each)"),
])
def test_bad_pixel_arrays_are_refused_with_their_status(values, status, message):
    with pytest.raises(InputError) as refused:
        as_images(values)
    assert (refused.value.status, str(refused.value)) == (status, message)


@pytest.mark.parametrize(("doc", "status", "message"), [
    ({"instances": IMAGES.tolist(), "inputs": []}, 400,
     "expected exactly one of dataframe_split, dataframe_records, instances, inputs (MLflow's formats)"),
    ({"dataframe_split": [1, 2]}, 422, 'dataframe_split: expected {"columns": [...], "data": [[...], ...]}'),
    ({"dataframe_split": {"columns": ["pixelX"], "data": [[1]]}}, 422,
     "dataframe_split: columns must be pixel0..pixel783 (and an optional label)"),
    ({"dataframe_records": []}, 422, "dataframe_records: expected a list of {column: value} rows"),
    ({"dataframe_split": {"columns": ["pixel0"], "data": [{"a": 1}]}}, 422,
     "dataframe_split: columns must be pixel0..pixel783 (and an optional label)"),
    ({"dataframe_split": {"columns": [f"pixel{i}" for i in range(1, 785)], "data": [[0] * 784]}}, 422,
     "dataframe_split: columns must be pixel0..pixel783 (and an optional label)"),
    ({"dataframe_split": {"columns": COLUMNS, "data": [{"a": 1}]}}, 422,
     "dataframe_split: every row needs a value per column"),
])
def test_bad_mlflow_bodies_are_refused(doc, status, message):
    with pytest.raises(InputError) as refused:
        mlflow_images(doc)
    assert (refused.value.status, str(refused.value)) == (status, message)


def test_json_nested_too_deeply_is_a_400_not_a_crash():
    with pytest.raises(InputError, match=r"^the body is not valid JSON \(nested too deeply\)$"):
        parse_json(b"[" * 100_000)


def test_broken_json_is_a_400():
    with pytest.raises(InputError, match=r"^the body is not valid JSON \(Expecting") as refused:
        parse_json(b'{"images": [1, 2')
    assert refused.value.status == 400


def test_a_predict_body_that_names_no_images_is_refused():
    with pytest.raises(InputError, match=r'^expected \{"images": \[28x28 arrays'):
        predict_images({"pixels": []})
