"""Per-image features of digits: what moves when the digits a model sees change (brightness, ink, bounding box,
centre of mass, stroke width, blankness). The drift reference bins them, and the great-expectations suite of a
scoring batch bounds them (digitpipe.validation.validate_batch). numpy only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitpipe.data.dataset import INK, N_PIXELS

IMAGE_FEATURES = ("pixel_mean", "ink_fraction", "box_height", "box_width", "centre_row", "centre_col",
                  "stroke_width", "blank")


def image_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per image (uint8 N x 28 x 28): what moves when digits change: brightness, ink, bounding box, centre of
    mass, stroke width, blankness."""
    ink = images > INK
    count = ink.sum((1, 2))
    rows, cols = ink.any(2), ink.any(1)
    weights = images.astype(np.float32)
    total = np.maximum(weights.sum((1, 2)), 1)
    index = np.arange(28, dtype=np.float32)
    padded = np.pad(ink, ((0, 0), (1, 1), (1, 1)))
    inside = (padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:])
    edge = (ink & ~inside).sum((1, 2))
    return {
        "pixel_mean": weights.mean((1, 2)) / 255,
        "ink_fraction": count / N_PIXELS,
        "box_height": _extent(rows), "box_width": _extent(cols),
        "centre_row": (weights.sum(2) * index).sum(1) / total,
        "centre_col": (weights.sum(1) * index).sum(1) / total,
        "stroke_width": 2 * count / np.maximum(edge, 1),  # area over half the outline: a stroke's width
        "blank": (count == 0).astype(np.float32),
    }


def file_features(path: Path) -> dict[str, np.ndarray]:
    """`image_features` of every good row of a data file, read chunk by chunk."""
    from digitpipe.data.reader import read_chunks

    chunks = [image_features(chunk.images) for chunk in read_chunks(path, 65_536, bad_rows="reject")]
    return {name: np.concatenate([c[name] for c in chunks]) for name in IMAGE_FEATURES} if chunks else {}


def _extent(any_ink: np.ndarray) -> np.ndarray:
    """Rows (or columns) from the first to the last with ink; 0 for a blank image."""
    first = np.argmax(any_ink, axis=1)
    last = any_ink.shape[1] - 1 - np.argmax(any_ink[:, ::-1], axis=1)
    return np.where(any_ink.any(1), last - first + 1, 0).astype(np.float32)
