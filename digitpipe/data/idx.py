"""MNIST's IDX files (gzipped or raw): the chunked reader of an images file and its labels, and the IDX writer
(samples, test files, the standard test set rebuilt by bench/standard_mnist.py)."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from digitpipe.data.chunks import BadRows, Chunk, out_of_range
from digitpipe.data.dataset import IMAGE_SHAPE, N_CLASSES, N_PIXELS
from digitpipe.data.formats import find_idx_pair, gzip_errors, labels_beside, open_maybe_gzip
from digitpipe.errors import DataError
from digitpipe.files import atomic_path, first_line

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
MAX_IDX_BYTES = 1 << 31  # 2 GiB of pixels (~2.7 M images): far above MNIST (47 MB), far below a bomb


def idx_chunks(path: Path, chunk_rows: int, bad_rows: BadRows, part: str | None = None) -> Iterator[Chunk]:
    """Chunks of an IDX images file (or of `part` of an IDX folder) with the labels beside it, if any.

    The header is read first and then exactly the bytes it promises: a file that holds less or more (a gzip bomb)
    is refused, and, when the whole file is wanted (raise), so is a header promising more than MAX_IDX_BYTES."""
    images_path, labels_path = find_idx_pair(path, part) if path.is_dir() else (path, labels_beside(path))
    labels = None if labels_path is None else read_idx(labels_path, IDX_LABELS_MAGIC).astype(np.int64)
    if labels is not None and bad_rows == "raise":
        _check_labels(labels_path, labels)
    try:
        with gzip_errors(images_path), open_maybe_gzip(images_path) as f:
            count = read_idx_header(f, images_path, IDX_IMAGES_MAGIC)[0]
            if bad_rows == "raise":
                _check_size(images_path, (count, *IMAGE_SHAPE))
            if labels is not None and len(labels) != count:
                raise DataError(labels_path, f"{len(labels)} labels for {count} images in {images_path.name}")
            for start in range(0, count, chunk_rows):
                n = min(chunk_rows, count - start)
                raw = f.read(n * N_PIXELS)
                if len(raw) != n * N_PIXELS:
                    _refuse_length(images_path, count * N_PIXELS, f"{start * N_PIXELS + len(raw)} bytes")
                yield _chunk(start, np.frombuffer(raw, np.uint8).reshape(n, *IMAGE_SHAPE),
                             None if labels is None else labels[start : start + n])
            if f.read(1):  # one byte past the promised end reads "too long" without inflating the rest
                _refuse_length(images_path, count * N_PIXELS, "more")
    except OSError as exc:
        raise DataError(images_path, f"cannot read ({first_line(exc)})") from None


def _chunk(start: int, images: np.ndarray, labels: np.ndarray | None) -> Chunk:
    """Images from row `start` + 1 on; a row whose label is not a digit is set aside."""
    rows = np.arange(start + 1, start + len(images) + 1)
    if labels is None:
        return Chunk(rows, images)
    bad = (labels < 0) | (labels >= N_CLASSES)
    if not bad.any():  # the usual case: no copy
        return Chunk(rows, images, labels)
    rejects = [(int(rows[i]), out_of_range("label", int(labels[i]), 0, N_CLASSES - 1)) for i in np.flatnonzero(bad)]
    return Chunk(rows[~bad], images[~bad], labels[~bad], rejects)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One whole IDX array (images N x 28 x 28 or labels N), checking magic, shape, size and length."""
    try:
        with gzip_errors(path), open_maybe_gzip(path) as f:
            dims = read_idx_header(f, path, magic)
            expected = _check_size(path, dims)
            data = f.read(expected + 1)  # one byte more tells "too long" from "just right"
    except OSError as exc:
        raise DataError(path, f"cannot read ({first_line(exc)})") from None
    if len(data) != expected:
        _refuse_length(path, expected, "more" if len(data) > expected else f"{len(data)} bytes")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()  # writable, as torch.from_numpy wants


def read_idx_header(f: BinaryIO, path: Path, magic: int) -> tuple[int, ...]:
    """The dimensions from an IDX header at `f`'s start, checking the magic and the 28x28 image shape."""
    head = f.read(4)
    if len(head) < 4 or struct.unpack(">I", head)[0] != magic:
        kind = "images (magic 0x00000803)" if magic == IDX_IMAGES_MAGIC else "labels (magic 0x00000801)"
        raise DataError(path, f"not an IDX {kind} file")
    ndim = head[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) != 4 * ndim:
        raise DataError(path, "truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if ndim == 3 and dims[1:] != IMAGE_SHAPE:
        raise DataError(path, f"images are {dims[1]}x{dims[2]}, expected 28x28")
    return dims


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = True) -> Path:
    """`array` as an IDX file of unsigned bytes (gzipped unless told not to), written under a temporary name."""
    payload = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    if compress:
        payload = gzip.compress(payload, mtime=0)  # mtime=0: the same array gives the same bytes
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def _check_size(path: Path, dims: tuple[int, ...]) -> int:
    """The bytes `dims` promise, refusing a header that claims more than MAX_IDX_BYTES (before reading them)."""
    expected = int(np.prod(dims, dtype=np.int64))
    if expected > MAX_IDX_BYTES:
        raise DataError(path, f"header claims {dims[0]:,} items ({expected / 2**30:.1f} GiB), above the "
                              f"{MAX_IDX_BYTES / 2**30:.0f} GiB limit")
    return expected


def _refuse_length(path: Path, expected: int, found: str) -> None:
    raise DataError(path, f"header promises {expected} bytes of data, file holds {found}")


def _check_labels(path: Path, labels: np.ndarray) -> None:
    """Refuse a labels file with a label that is not a digit, naming the first such row."""
    if (bad := np.flatnonzero(labels >= N_CLASSES)).size:
        raise DataError(path, f"row {bad[0] + 1}: {out_of_range('label', int(labels[bad[0]]), 0, N_CLASSES - 1)}")
