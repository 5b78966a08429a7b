"""Chunked readers for scoring: inputs larger than memory, with bad rows counted and set aside, never dropped.

Each chunk carries the 1-based input row number of every image it holds and the rows it rejected with a reason.
CSV chunks take a fast path (pyarrow, integer columns) and fall back to checking line by line only when a
chunk holds a malformed row, so clean files pay nothing for the checks.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from digitpipe.data.dataset import N_CLASSES, N_PIXELS
from digitpipe.data.readers import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    PIXEL_COLUMNS,
    check_columns,
    data_format,
    find_idx_pair,
    gzip_errors,
    labels_beside,
    open_maybe_gzip,
    out_of_range,
    read_csv_header,
    read_idx,
    read_idx_header,
    read_image_folder,
)
from digitpipe.errors import DataError
from digitpipe.files import first_line


@dataclass
class Chunk:
    """Up to `chunk_rows` consecutive input rows: the good ones as images, the bad ones as (row, reason)."""

    rows: np.ndarray  # 1-based input row number of each image
    images: np.ndarray  # uint8 n x 28 x 28
    labels: np.ndarray | None = None
    rejects: list[tuple[int, str]] = field(default_factory=list)


def stream_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of `path`: Kaggle CSV (plain or gz), IDX images file or folder, Parquet, or a PNG folder (read whole:
    image folders are small)."""
    path = Path(path)
    kind = data_format(path)
    if kind == "images":
        return _folder_chunks(path, chunk_rows)
    if kind == "idx":
        return _idx_chunks(path, chunk_rows)
    return _parquet_chunks(path, chunk_rows) if kind == "parquet" else _csv_chunks(path, chunk_rows)


def _folder_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    data = read_image_folder(path)
    for start in range(0, len(data), chunk_rows):
        part = data.subset(np.arange(start, min(start + chunk_rows, len(data))))
        yield Chunk(np.arange(start + 1, start + len(part) + 1), part.images, part.labels)


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    with gzip_errors(path), open_maybe_gzip(path) as f:
        header = read_csv_header(f, path)
        check_columns(path, header)
        labelled = header[0] == "label"
        first_row = 1
        for size in _growing(chunk_rows):
            if not (lines := list(islice(f, size))):
                return
            yield _csv_chunk(lines, first_row, labelled)
            first_row += len(lines)


def _growing(chunk_rows: int) -> Iterator[int]:
    """Chunk sizes: 1,024 rows, then four times more per chunk up to `chunk_rows`. Parsing is the costly part of a
    CSV: a consumer that parses ahead while it works (scoring) starts on the first rows at once, not a chunk later."""
    size = min(1024, chunk_rows)
    while True:
        yield size
        size = min(4 * size, chunk_rows)


def _csv_chunk(lines: list[bytes], first_row: int, labelled: bool) -> Chunk:
    columns = (["label"] if labelled else []) + PIXEL_COLUMNS
    try:
        table = pacsv.read_csv(
            io.BytesIO(b"".join(lines)),
            # one thread: scoring parses ahead on a thread of its own while onnxruntime has the cores
            read_options=pacsv.ReadOptions(column_names=columns, use_threads=False),
            # int16 parses fastest and still holds 256 or -1, so the range check can name them
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.int16())),
        )
        if table.num_rows != len(lines):  # blank lines are skipped by pyarrow: take the careful path
            raise pa.ArrowInvalid("row count mismatch")
        values = np.stack([c.to_numpy() for c in table.columns], axis=1)
        return _checked_chunk(np.arange(first_row, first_row + len(lines)), values, labelled, [])
    except pa.ArrowInvalid:
        return _careful_csv_chunk(lines, first_row, labelled)


def _careful_csv_chunk(lines: list[bytes], first_row: int, labelled: bool) -> Chunk:
    """Line-by-line parse of a chunk known to hold a malformed row."""
    width = N_PIXELS + labelled
    rows, values, rejects = [], [], []
    for row, line in enumerate(lines, start=first_row):
        fields = line.rstrip(b"\r\n").split(b",")
        if len(fields) != width:
            rejects.append((row, f"expected {width} fields, found {len(fields)}"))
            continue
        try:
            values.append([int(v) for v in fields])
        except ValueError:
            bad = next(v for v in fields if not v.strip().lstrip(b"-").isdigit())
            rejects.append((row, f"non-integer value {bad[:20].decode('utf-8', 'replace')!r}"))
            continue
        rows.append(row)
    matrix = np.array(values, dtype=np.int64).reshape(-1, width)
    return _checked_chunk(np.array(rows, dtype=np.int64), matrix, labelled, rejects)


def _checked_chunk(rows: np.ndarray, values: np.ndarray, labelled: bool, rejects: list[tuple[int, str]]) -> Chunk:
    """Set aside rows with a pixel outside 0..255 (or a label outside 0..9); keep the rest as images."""
    labels = values[:, 0] if labelled else None
    pixels = values[:, 1:] if labelled else values
    bad = (pixels < 0) | (pixels > 255)
    bad_label = (labels < 0) | (labels >= N_CLASSES) if labelled else np.zeros(len(rows), bool)
    for i in np.flatnonzero(bad.any(axis=1) | bad_label):
        if bad_label[i]:
            rejects.append((int(rows[i]), out_of_range("label", labels[i], 0, N_CLASSES - 1)))
        else:
            col = int(np.argmax(bad[i]))
            rejects.append((int(rows[i]), out_of_range(f"pixel{col}", pixels[i, col], 0, 255)))
    keep = ~(bad.any(axis=1) | bad_label)
    images = pixels[keep].astype(np.uint8).reshape(-1, 28, 28)
    return Chunk(rows[keep], images, None if labels is None else labels[keep], sorted(rejects))


def _idx_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    if path.is_dir():
        path, labels_path = find_idx_pair(path)
    else:
        labels_path = labels_beside(path)
    labels = None if labels_path is None else read_idx(labels_path, IDX_LABELS_MAGIC).astype(np.int64)
    with gzip_errors(path), open_maybe_gzip(path) as f:
        count = read_idx_header(f, path, IDX_IMAGES_MAGIC)[0]
        for start in range(0, count, chunk_rows):
            n = min(chunk_rows, count - start)
            raw = f.read(n * N_PIXELS)
            if len(raw) != n * N_PIXELS:
                raise DataError(path, f"file ends at image {start + len(raw) // N_PIXELS} of the {count} its header promises")
            rows = np.arange(start + 1, start + n + 1)
            yield Chunk(rows, np.frombuffer(raw, np.uint8).reshape(n, 28, 28),
                        None if labels is None else labels[start : start + n])


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[Chunk]:
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(path, f"cannot read as Parquet ({first_line(exc)})") from None
    names = source.schema_arrow.names
    check_columns(path, names)
    labelled = names[0] == "label"
    first_row = 1
    for batch in source.iter_batches(batch_size=chunk_rows, columns=names):
        rows = np.arange(first_row, first_row + batch.num_rows)
        first_row += batch.num_rows
        missing = np.zeros(batch.num_rows, bool)
        for column in batch.columns:
            if column.null_count:
                missing |= column.is_null().to_numpy(zero_copy_only=False)
        try:
            values = np.stack([c.fill_null(0).cast(pa.int64()).to_numpy() for c in batch.columns], 1)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(path, f"pixel columns must be integers ({first_line(exc)})") from None
        rejects = [(int(r), "missing value") for r in rows[missing]]
        yield _checked_chunk(rows[~missing], values[~missing], labelled, rejects)
