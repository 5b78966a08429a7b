"""Properties of the service's body parsers (digitpipe.serving.inputs), in-process: any body gives digit images or
one InputError, a 4xx with one line; never another exception."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digitpipe.serving.inputs import InputError, csv_images, feedback_body, mlflow_images, predict_images

BOUNDED = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**500), 10**500) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=40)
PIXEL = st.one_of(st.integers(0, 255), st.floats(0, 255), st.integers(-5, 300), st.booleans(), st.none(),
                  st.sampled_from(["12", "nan", 1e400, -1e400, 10**400]))
SHAPES = st.sampled_from([(784,), (28, 28), (1, 28, 28), (783,), (28, 27), (2, 28, 28)])


def _image(shape: tuple[int, ...], values: list) -> object:
    flat = iter(values * (int(np.prod(shape)) // len(values) + 1))
    array = np.empty(shape, dtype=object)
    for index in np.ndindex(*shape):
        array[index] = next(flat)
    return array.tolist()


IMAGES = st.lists(st.builds(_image, SHAPES, st.lists(PIXEL, min_size=1, max_size=4)), min_size=0, max_size=3)


def _digits_or_one_refusal(parse, body: bytes) -> None:
    try:
        images = parse(body)
    except InputError as refused:
        assert 400 <= refused.status < 500
        message = str(refused)
        assert message and "\n" not in message and len(message) < 400, message
    else:
        assert images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28) and len(images) >= 1


@BOUNDED
@given(st.binary(max_size=2048))
def test_any_bytes_give_digits_or_one_refusal(body):
    for parse in (predict_images, mlflow_images, csv_images, feedback_body):
        try:
            parse(body)
        except InputError as refused:
            assert 400 <= refused.status < 500 and "\n" not in str(refused)


@BOUNDED
@given(JSON_VALUES)
def test_any_json_document_gives_digits_or_one_refusal(doc):
    body = json.dumps(doc).encode()
    for wrapped in (body, json.dumps({"images": doc}).encode(), json.dumps({"instances": doc}).encode()):
        _digits_or_one_refusal(predict_images, wrapped)
        _digits_or_one_refusal(mlflow_images, wrapped)


@BOUNDED
@given(IMAGES)
def test_image_batches_of_any_values_and_shapes_give_digits_or_one_refusal(images):
    body = json.dumps({"images": images}).encode()
    _digits_or_one_refusal(predict_images, body)
    _digits_or_one_refusal(mlflow_images, json.dumps({"inputs": images}).encode())
    valid = all(isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 255
                for image in images for v in np.ravel(np.asarray(image, dtype=object)))
    if images and valid and all(np.asarray(image, dtype=object).size == 784 for image in images):
        assert predict_images(body).shape == (len(images), 28, 28)  # what fits is read, strictly or not


@BOUNDED
@given(st.lists(st.lists(st.sampled_from(["0", "255", "12.5", "", "x", "nan", " 7", "1e2", "-1"]), min_size=1,
                         max_size=6), max_size=4), st.booleans())
def test_any_csv_gives_digits_or_one_refusal(rows, with_header):
    header = ["label", *(f"pixel{i}" for i in range(784))] if with_header else []
    lines = [",".join(header)] if header else []
    lines += [",".join((row * 200)[:785]) for row in rows]
    _digits_or_one_refusal(csv_images, "\n".join(lines).encode())
