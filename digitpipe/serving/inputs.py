"""Request bodies as digit images (uint8 N x 28 x 28): digitpipe's JSON batch, MLflow's /invocations formats, a
picture. JSON is parsed by the pydantic models of digitpipe.serving.bodies (what the OpenAPI document describes);
every refusal is an InputError: an HTTP status and one line for whoever sent it."""

from __future__ import annotations

import re
import threading
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from digitpipe.data.pictures import PictureError, read_picture, to_mnist_form
from digitpipe.serving.bodies import MAX_IMAGES, MLFLOW_KEYS, FeedbackBody, ImageBatch, ImageList, InvocationsBody

DECODING = threading.BoundedSemaphore(2)  # pictures decoded at once
PIXEL_COLUMNS = [f"pixel{i}" for i in range(784)]
IMAGE_SHAPES = "784 numbers, 28 rows of 28 numbers, or 1x28x28"
# pydantic's error kinds that say a single value is wrong (a pixel, a label), as against the shape around it
VALUE_ERRORS = {"float_type", "finite_number", "greater_than_equal", "less_than_equal", "int_type", "string_type",
                "literal_error", "string_too_long", "string_too_short"}
M = TypeVar("M", bound=BaseModel)
UNION_MEMBER = re.compile(r"[a-z-]+\[.*\]")  # how pydantic names a union's member in a location: list[...]
NUMBER = re.compile(r"\s*[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?\s*")  # a CSV value: no nan, inf, signs or underscores


class InputError(Exception):
    """A request the server refuses: `status` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parsed(model: type[M], body: bytes) -> M:
    """`body` as `model`, or the InputError that says in one line what is wrong with it."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _refusal(exc, model) from None


def _refusal(exc: ValidationError, model: type[BaseModel]) -> InputError:
    """The one error of a failed validation a person needs first: a wrong value before a wrong shape."""
    errors = exc.errors(include_url=False, include_context=True)
    if errors[0]["type"] == "json_invalid":
        return InputError(400, f"the body is not valid JSON ({errors[0]['msg'].removeprefix('Invalid JSON: ')})")
    values = [e for e in errors if e["type"] in VALUE_ERRORS and not isinstance(e.get("input"), list | dict)]
    error = (values or errors)[0]
    where = _where(error["loc"])
    if error["type"] == "too_long" and error.get("ctx", {}).get("max_length") == MAX_IMAGES:
        return InputError(413, f"{where}: {len(error['input']):,} images; at most {MAX_IMAGES:,} per request")
    if values:
        return InputError(422, f"{where}: {_value_problem(error)}")
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:
        return InputError(422, f"{where}: not a field of this body (its fields: {', '.join(model.model_fields)})")
    if error["type"] == "string_pattern_mismatch":
        return InputError(422, f"{where}: a column is named pixel0..pixel783 or label (or 0..783, by number)")
    if _inside_an_image(error["loc"]):
        return InputError(422, f"{_where(error['loc'][:_image_depth(error['loc'])])}: an image is {IMAGE_SHAPES}")
    return InputError(422, f"{where}: {error['msg'][0].lower()}{error['msg'][1:]}")


def _where(loc: tuple) -> str:
    """pydantic's location as a person reads it (images[0][5]), without the union members' names."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not UNION_MEMBER.fullmatch(part):
            name = part if part.isidentifier() and len(part) <= 40 else repr(part[:40])  # a key a client chose
            text += f".{name}" if text else name
    return ("images" + text if text.startswith("[") else text) or "the body"  # a bare list is the images


def _inside_an_image(loc: tuple) -> bool:
    return any(isinstance(part, str) and part.startswith("list[") and "union" not in part for part in loc)


def _image_depth(loc: tuple) -> int:
    """How much of `loc` names the image (up to the union member that tried to read it)."""
    return next(i for i, part in enumerate(loc) if isinstance(part, str) and part.startswith("list["))


def _value_problem(error: dict) -> str:
    value = error.get("input")
    shown = ("true" if value else "false") if isinstance(value, bool) else (
        "null" if value is None else "a string" if isinstance(value, str) else "NaN" if value != value else
        f"{value:g}" if isinstance(value, int | float) and abs(value) < 1e9 else "an out-of-range number")
    if error["type"] in ("literal_error", "int_type") or error["loc"][-1:] == ("label",):
        return f'expected "right" or the true digit 0-9, not {shown}'
    if error["type"] in ("string_type", "string_too_long", "string_too_short"):
        return error["msg"].lower()
    return f"a pixel must be a number from 0 to 255, not {shown}"


def as_images(values: object, what: str = "images") -> np.ndarray:
    """28x28 (or 784 flat, or 1x28x28) arrays of 0-255 values as uint8 images; anything else is refused."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):  # images of different accepted shapes in one batch
        try:
            array = np.stack([np.asarray(v, dtype=np.float64).reshape(784) for v in values])
        except (ValueError, TypeError):
            raise InputError(422, f"{what}: expected arrays of numbers, each image {IMAGE_SHAPES}") from None
    if array.ndim in (1, 2) and array.shape[-1] == 784:
        array = array.reshape(-1, 28, 28)
    elif array.ndim == 2 and array.shape == (28, 28):
        array = array[None]
    elif array.ndim == 4 and array.shape[1:] == (1, 28, 28):
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise InputError(422, f"{what}: shape {list(array.shape)}; expected N images of {IMAGE_SHAPES}")
    if len(array) == 0:
        raise InputError(422, f"{what}: no images")
    if len(array) > MAX_IMAGES:
        raise InputError(413, f"{what}: {len(array):,} images; at most {MAX_IMAGES:,} per request")
    if not np.isfinite(array).all():
        raise InputError(422, f"{what}: NaN or infinite pixel values")
    if array.min() < 0 or array.max() > 255:
        raise InputError(422, f"{what}: pixel values from {array.min():g} to {array.max():g}; expected 0-255")
    return np.rint(array).astype(np.uint8)


def predict_images(body: bytes) -> np.ndarray:
    """/predict's JSON: {"images": [...]} or the list alone."""
    if body.lstrip()[:1] == b"[":
        return as_images(parsed(ImageList, body).root)
    return as_images(parsed(ImageBatch, body).images)


def feedback_body(body: bytes) -> FeedbackBody:
    """/feedback's JSON: a request id and "right" or the true digit."""
    return parsed(FeedbackBody, body)


def picture_image(data: bytes) -> np.ndarray:
    """A PNG or JPEG of one digit, any size, brought to MNIST's form (digitpipe.data.pictures); a few at a time,
    so that many large pictures at once cannot take the memory."""
    with DECODING:
        try:
            return to_mnist_form(read_picture(data))[None]
        except PictureError as exc:
            raise InputError(exc.status, str(exc)) from None


def mlflow_images(body: bytes) -> np.ndarray:
    """MLflow's scoring-server JSON formats: dataframe_split, dataframe_records (columns pixel0..pixel783, or 784
    columns in order; a `label` column is ignored), instances or inputs (arrays)."""
    doc = parsed(InvocationsBody, body)
    keys = [key for key in MLFLOW_KEYS if getattr(doc, key) is not None]
    if len(keys) != 1:
        raise InputError(400, "expected exactly one of " + ", ".join(MLFLOW_KEYS) + " (MLflow's formats)")
    key, value = keys[0], getattr(doc, keys[0])
    if key in ("instances", "inputs"):
        return as_images(value, key)
    if key == "dataframe_split":
        return as_images(_pixel_columns(value.columns, value.data, key), key)
    columns = list(value[0])
    if any(row.keys() != value[0].keys() for row in value):
        raise InputError(422, f"{key}: every row needs the same columns")
    return as_images(_pixel_columns(columns, [[row[c] for c in columns] for row in value], key), key)


def _pixel_columns(columns: list[str] | None, rows: list[list[float]], key: str) -> list[list[float]]:
    """The rows' 784 pixel values in pixel0..pixel783 order (named columns) or as given (unnamed: 784 pixels, or a
    label then 784 pixels as in Kaggle's train.csv)."""
    if columns is None:
        return [row[1:] if len(row) == 785 else row for row in rows]
    names = [f"pixel{name}" if name.isdigit() else name for name in columns]  # pandas' 0..783: pixel N by number
    keep = [i for i, name in enumerate(names) if name.lower() != "label"]
    position = {names[i]: i for i in keep}
    if sorted(position) != sorted(PIXEL_COLUMNS) or len(keep) != 784:
        raise InputError(422, f"{key}: columns must be pixel0..pixel783 (and an optional label), each once")
    keep = [position[name] for name in PIXEL_COLUMNS]
    if any(len(row) != len(columns) for row in rows):
        raise InputError(422, f"{key}: every row needs a value per column ({len(columns)})")
    return [[row[i] for i in keep] for row in rows]


def csv_images(body: bytes) -> np.ndarray:
    """text/csv for /invocations: a header row (pixel0..pixel783, optionally label) then one digit per row."""
    try:
        lines = body.decode("utf-8-sig").strip().splitlines()
    except UnicodeDecodeError:
        raise InputError(422, "text/csv: the body is not UTF-8 text") from None
    header = [name.strip() for name in lines[0].split(",")] if lines else []
    names = set(PIXEL_COLUMNS) | {str(i) for i in range(784)} | {"label"}
    if not header or not set(header) <= names or len(set(header)) < len(header):  # 784 pixels repeat some value
        raise InputError(422, "text/csv: the first row must be the header pixel0,...,pixel783 (and an optional "
                              "label): a row of pixels cannot be told from a header without it")
    if len(lines) < 2:
        raise InputError(422, "text/csv: no rows of pixels after the header")
    if len(lines) - 1 > MAX_IMAGES:
        raise InputError(413, f"text/csv: {len(lines) - 1:,} images; at most {MAX_IMAGES:,} per request")
    rows = [line.split(",") for line in lines[1:]]
    if not all(NUMBER.fullmatch(value) for row in rows for value in row):
        raise InputError(422, "text/csv: every value after the header must be a number from 0 to 255")
    numbers = [[float(value) for value in row] for row in rows]
    return as_images(_pixel_columns(header, numbers, "text/csv"), "text/csv")
