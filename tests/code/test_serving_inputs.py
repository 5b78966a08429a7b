"""Request bodies as digits (digitpipe.serving.inputs): digitpipe's JSON batch, MLflow's four JSON formats and CSV,
and what each refuses, with its status and one line."""

import json

import numpy as np
import pytest

from digitpipe.serving.inputs import InputError, as_images, csv_images, feedback_body, mlflow_images, predict_images

IMAGES = np.arange(2 * 784).reshape(2, 28, 28) % 256
COLUMNS = [f"pixel{i}" for i in range(784)]


@pytest.mark.parametrize("values", [IMAGES.tolist(), IMAGES.reshape(2, 784).tolist(),
                                    IMAGES.reshape(2, 1, 28, 28).tolist()])
def test_a_batch_of_28x28_784_or_1x28x28_arrays_is_read(values):
    assert np.array_equal(predict_images(_json({"images": values})), IMAGES)
    assert np.array_equal(predict_images(_json(values)), IMAGES)


def test_images_of_different_accepted_shapes_in_one_batch_are_read():
    mixed = [IMAGES[0].tolist(), IMAGES[1].reshape(784).tolist()]
    assert np.array_equal(predict_images(_json({"images": mixed})), IMAGES)


def _json(doc: object) -> bytes:
    return json.dumps(doc).encode()


@pytest.mark.parametrize("doc", [
    {"dataframe_split": {"columns": COLUMNS, "data": IMAGES.reshape(2, 784).tolist()}},
    {"dataframe_split": {"columns": ["label", *COLUMNS[::-1]],  # named columns in any order; label ignored
                         "data": [[7, *row[::-1]] for row in IMAGES.reshape(2, 784).tolist()]}},
    {"dataframe_split": {"data": IMAGES.reshape(2, 784).tolist()}},
    {"dataframe_split": {"data": [[7, *row] for row in IMAGES.reshape(2, 784).tolist()]}},  # label first, unnamed
    {"dataframe_records": [dict(zip(COLUMNS, row, strict=True)) for row in IMAGES.reshape(2, 784).tolist()]},
    {"instances": IMAGES.tolist()},
    {"inputs": IMAGES.reshape(2, 784).tolist()},
])
def test_mlflows_json_formats_give_the_same_digits(doc):
    assert np.array_equal(mlflow_images(_json(doc)), IMAGES)


@pytest.mark.parametrize("header", [",".join(COLUMNS), "\ufeff" + ",".join(COLUMNS), ",".join(map(str, range(784)))])
def test_csv_with_a_header_gives_the_digits(header):
    body = header + "\n" + "\n".join(",".join(map(str, row)) for row in IMAGES.reshape(2, 784))
    assert np.array_equal(csv_images(body.encode()), IMAGES)


def test_csv_without_its_header_row_is_refused_naming_the_header():
    body = "\n".join(",".join(map(str, row)) for row in IMAGES.reshape(2, 784))
    with pytest.raises(InputError) as refused:
        csv_images(body.encode())
    assert (refused.value.status, str(refused.value)) == (422, (
        "text/csv: the first row must be the header pixel0,...,pixel783 (and an optional label): a row of pixels "
        "cannot be told from a header without it"))


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "1_0", "True", "0x10"])
def test_csv_values_that_are_not_plain_numbers_are_refused(value):
    body = ",".join(COLUMNS) + "\n" + ",".join([value] + ["0"] * 783)
    with pytest.raises(InputError, match="^text/csv: every value after the header must be a number from 0 to 255$"):
        csv_images(body.encode())


@pytest.mark.parametrize(("values", "status", "message"), [
    ([[1, 2]], 422, "images: shape [1, 2]; expected N images of 784 numbers, 28 rows of 28 numbers, or 1x28x28"),
    ([[0] * 784, [0] * 783], 422, "images: expected arrays of numbers, each image 784 numbers, 28 rows of 28 "
                                  "numbers, or 1x28x28"),
    ([], 422, "images: shape [0]; expected N images of 784 numbers, 28 rows of 28 numbers, or 1x28x28"),
    ([[float("nan")] * 784], 422, "images: NaN or infinite pixel values"),
    ([[-1] * 784], 422, "images: pixel values from -1 to -1; expected 0-255"),
    ([[256] * 784], 422, "images: pixel values from 256 to 256; expected 0-255"),
    ([[0] * 784] * 1025, 413, "images: 1,025 images; at most 1,024 per request"),
    ([[{"a": 1}] * 784], 422, "images: expected arrays of numbers, each image 784 numbers, 28 rows of 28 numbers, "
                              "or 1x28x28"),
])
def test_bad_pixel_arrays_are_refused_with_their_status(values, status, message):
    with pytest.raises(InputError) as refused:
        as_images(values)
    assert (refused.value.status, str(refused.value)) == (status, message)


@pytest.mark.parametrize(("doc", "status", "message"), [
    ({"instances": IMAGES.tolist(), "inputs": IMAGES.tolist()}, 400,
     "expected exactly one of dataframe_split, dataframe_records, instances, inputs (MLflow's formats)"),
    ({"dataframe_split": [1, 2]}, 422, "dataframe_split: input should be an object"),
    ({"dataframe_split": {"columns": ["pixelX"] * 784, "data": [[1] * 784]}}, 422,
     "dataframe_split.columns[0]: a column is named pixel0..pixel783 or label (or 0..783, by number)"),
    ({"dataframe_records": []}, 422, "dataframe_records: list should have at least 1 item after validation, not 0"),
    ({"dataframe_split": {"columns": COLUMNS, "data": [{"a": 1}]}}, 422,
     "dataframe_split.data[0]: input should be a valid array"),
    ({"dataframe_records": [{"pixel0": 1}]}, 422,
     "dataframe_records[0]: dictionary should have at least 784 items after validation, not 1"),
    ({"dataframe_records": [dict.fromkeys(COLUMNS, 0), dict.fromkeys(["label", *COLUMNS[1:]], 0)]}, 422,
     "dataframe_records: every row needs the same columns"),
    ({"dataframe_records": [{"pixel0": True}]}, 422,
     "dataframe_records[0].pixel0: a pixel must be a number from 0 to 255, not true"),
    ({"dataframe_split": {"columns": [*COLUMNS[1:], "pixel1"], "data": [[0] * 784]}}, 422,
     "dataframe_split: columns must be pixel0..pixel783 (and an optional label), each once"),
    ({"dataframe_split": {"columns": ["label", *COLUMNS], "data": [[0] * 784]}}, 422,
     "dataframe_split: every row needs a value per column (785)"),
])
def test_bad_mlflow_bodies_are_refused(doc, status, message):
    with pytest.raises(InputError) as refused:
        mlflow_images(_json(doc))
    assert (refused.value.status, str(refused.value)) == (status, message)


def test_json_nested_too_deeply_is_a_400_not_a_crash():
    with pytest.raises(InputError, match=r"^the body is not valid JSON \(recursion limit exceeded ") as refused:
        predict_images(b"[" * 100_000)
    assert refused.value.status == 400


def test_broken_json_is_a_400():
    with pytest.raises(InputError, match=r"^the body is not valid JSON \(EOF while parsing a list") as refused:
        predict_images(b'{"images": [1, 2')
    assert refused.value.status == 400


def _flat(first: str) -> bytes:
    return b'{"images": [[' + first.encode() + b", 0" * 783 + b"]]}"


@pytest.mark.parametrize(("body", "status", "message"), [
    (_flat("true"), 422, "images[0][0]: a pixel must be a number from 0 to 255, not true"),
    (_flat('"12"'), 422, "images[0][0]: a pixel must be a number from 0 to 255, not a string"),
    (_flat("null"), 422, "images[0][0]: a pixel must be a number from 0 to 255, not null"),
    (_flat("1" * 401), 422, "images[0][0]: a pixel must be a number from 0 to 255, not an out-of-range number"),
    (_flat("1e400"), 422, "images[0][0]: a pixel must be a number from 0 to 255, not an out-of-range number"),
    (_flat("300"), 422, "images[0][0]: a pixel must be a number from 0 to 255, not 300"),
    (_flat("9" * 5000), 400, "the body is not valid JSON (number out of range at line 1 column 4315)"),
    (_json({"images": [[[0] * 28] * 27]}), 422,
     "images[0]: an image is 784 numbers, 28 rows of 28 numbers, or 1x28x28"),
    (_json([[1, 2]]), 422, "images[0]: an image is 784 numbers, 28 rows of 28 numbers, or 1x28x28"),
    (_json({"images": [[0] * 784] * 1025}), 413, "images: 1,025 images; at most 1,024 per request"),
    (_json({"pixels": []}), 422, "images: field required"),
    (_json({"images": [[0] * 784], "extra": 1}), 422, "extra: not a field of this body (its fields: images)"),
])
def test_a_predict_body_is_parsed_strictly_with_one_line_per_refusal(body, status, message):
    with pytest.raises(InputError) as refused:
        predict_images(body)
    assert (refused.value.status, str(refused.value)) == (status, message)


@pytest.mark.parametrize(("doc", "message"), [
    ({"request_id": "a", "label": 10}, 'label: expected "right" or the true digit 0-9, not 10'),
    ({"request_id": "a", "label": True}, 'label: expected "right" or the true digit 0-9, not true'),
    ({"request_id": "a", "label": "3"}, 'label: expected "right" or the true digit 0-9, not a string'),
    ({"request_id": 5, "label": 3}, "request_id: input should be a valid string"),
    ({"label": 3}, "request_id: field required"),
])
def test_a_feedback_body_is_a_request_id_and_right_or_a_digit(doc, message):
    with pytest.raises(InputError) as refused:
        feedback_body(_json(doc))
    assert (refused.value.status, str(refused.value)) == (422, message)
    assert feedback_body(_json({"request_id": "a", "label": "right"})).label == "right"


def test_a_refused_batch_of_1024_bad_images_costs_one_error_not_a_gigabyte():
    import tracemalloc

    body = json.dumps({"images": [[True] * 784] * 1024}).encode()
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"^images\[0\]\[0\]: a pixel must be a number from 0 to 255, not true$"):
            predict_images(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000  # 4.8 MB of body; every error built (before fail_fast) peaked at 1 GB


def test_unnamed_columns_are_matched_by_their_number_not_their_place():
    reversed_columns = [str(i) for i in range(783, -1, -1)]
    doc = {"dataframe_split": {"columns": reversed_columns, "data": IMAGES.reshape(2, 784)[:, ::-1].tolist()}}
    assert np.array_equal(mlflow_images(_json(doc)), IMAGES)
    doc = {"dataframe_split": {"columns": ["0"] * 784, "data": [[0] * 784]}}
    with pytest.raises(InputError, match=r"^dataframe_split: columns must be pixel0\.\.pixel783"):
        mlflow_images(_json(doc))
