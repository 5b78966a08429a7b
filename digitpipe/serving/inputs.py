"""Request bodies as digit images (uint8 N x 28 x 28): digitpipe's JSON batch, MLflow's /invocations formats, a
picture. Every refusal is an InputError: an HTTP status and one line for whoever sent it."""

from __future__ import annotations

import json
import threading

import numpy as np

from digitpipe.data.pictures import PictureError, read_picture, to_mnist_form

MAX_IMAGES = 1024  # per request
DECODING = threading.BoundedSemaphore(2)  # pictures decoded at once
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
PIXEL_COLUMNS = [f"pixel{i}" for i in range(784)]


class InputError(Exception):
    """A request the server refuses: `status` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_json(body: bytes) -> object:
    try:
        return json.loads(body)
    except RecursionError:
        raise InputError(400, "the body is not valid JSON (nested too deeply)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(400, f"the body is not valid JSON ({str(exc).splitlines()[0][:120]})") from None


def as_images(values: object, what: str = "images") -> np.ndarray:
    """28x28 (or 784 flat, or 1x28x28) arrays of 0-255 values as uint8 images; anything else is refused."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(422, f"{what}: expected arrays of numbers of one shape (28x28 or 784 values each)") from None
    if array.ndim in (1, 2) and array.shape[-1] == 784:
        array = array.reshape(-1, 28, 28)
    elif array.ndim == 2 and array.shape == (28, 28):
        array = array[None]
    elif array.ndim == 4 and array.shape[1:] == (1, 28, 28):
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise InputError(422, f"{what}: shape {list(array.shape)}; expected N images of 28x28 (or 784) pixels")
    if len(array) == 0:
        raise InputError(422, f"{what}: no images")
    if len(array) > MAX_IMAGES:
        raise InputError(413, f"{what}: {len(array):,} images; at most {MAX_IMAGES:,} per request")
    if not np.isfinite(array).all():
        raise InputError(422, f"{what}: NaN or infinite pixel values")
    if array.min() < 0 or array.max() > 255:
        raise InputError(422, f"{what}: pixel values from {array.min():g} to {array.max():g}; expected 0-255")
    return np.rint(array).astype(np.uint8)


def predict_images(doc: object) -> np.ndarray:
    """/predict's JSON: {"images": [...]} or the list itself."""
    values = doc.get("images") if isinstance(doc, dict) else doc
    if values is None or isinstance(values, (str, int, float, bool)):
        raise InputError(422, 'expected {"images": [28x28 arrays of 0-255 pixels, ...]}')
    return as_images(values)


def picture_image(data: bytes) -> np.ndarray:
    """A PNG or JPEG of one digit, any size, brought to MNIST's form (digitpipe.data.pictures); a few at a time,
    so that many large pictures at once cannot take the memory."""
    with DECODING:
        try:
            return to_mnist_form(read_picture(data))[None]
        except PictureError as exc:
            raise InputError(exc.status, str(exc)) from None


def mlflow_images(doc: object) -> np.ndarray:
    """MLflow's scoring-server JSON formats: dataframe_split, dataframe_records (columns pixel0..pixel783, or 784
    columns in order; a `label` column is ignored), instances or inputs (arrays)."""
    if not isinstance(doc, dict) or len(keys := [k for k in MLFLOW_KEYS if k in doc]) != 1:
        raise InputError(400, "expected exactly one of " + ", ".join(MLFLOW_KEYS) + " (MLflow's formats)")
    key, value = keys[0], doc[keys[0]]
    if key in ("instances", "inputs"):
        return as_images(value, key)
    if key == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise InputError(422, 'dataframe_split: expected {"columns": [...], "data": [[...], ...]}')
        return as_images(_pixel_columns(value.get("columns"), value["data"], key), key)
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value) or not value:
        raise InputError(422, "dataframe_records: expected a list of {column: value} rows")
    columns = list(value[0])
    return as_images(_pixel_columns(columns, [[row.get(c) for c in columns] for row in value], key), key)


def _pixel_columns(columns: object, rows: object, key: str) -> object:
    """The rows' 784 pixel values in pixel0..pixel783 order (named columns) or as given (unnamed)."""
    if columns is None:
        return rows
    if not isinstance(columns, list) or not isinstance(rows, list):
        raise InputError(422, f"{key}: columns and data must be lists")
    names = [str(c) for c in columns]
    keep = [i for i, name in enumerate(names) if name.lower() != "label"]
    if any(n.startswith("pixel") for n in names):
        position = {names[i]: i for i in keep}
        if sorted(position) != sorted(PIXEL_COLUMNS):
            raise InputError(422, f"{key}: columns must be pixel0..pixel783 (and an optional label)")
        keep = [position[name] for name in PIXEL_COLUMNS]
    try:
        return [[row[i] for i in keep] for row in rows]
    except (IndexError, KeyError, TypeError):
        raise InputError(422, f"{key}: every row needs a value per column") from None


def csv_images(body: bytes) -> np.ndarray:
    """text/csv for /invocations: a header row (pixel0..pixel783, optionally label) then one digit per row."""
    lines = body.decode("utf-8", errors="replace").strip().splitlines()
    if len(lines) < 2:
        raise InputError(422, "text/csv: expected a header row and at least one row of pixels")
    try:
        rows = [[float(v) for v in line.split(",")] for line in lines[1:]]
    except ValueError:
        raise InputError(422, "text/csv: every value after the header must be a number") from None
    return as_images(_pixel_columns(lines[0].split(","), rows, "text/csv"), "text/csv")
