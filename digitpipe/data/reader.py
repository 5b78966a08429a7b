"""The one way digits are read, whatever the format: `read_chunks` streams any input in chunks under a bad-row
policy, and a whole-file read (`load_dataset`, `read_whole`) is those same chunks joined."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from digitpipe.data.chunks import BadRows, Chunk, check_policy, enforce
from digitpipe.data.dataset import Dataset
from digitpipe.data.formats import data_format, find_idx_pair
from digitpipe.data.idx import idx_chunks
from digitpipe.data.images import image_chunks
from digitpipe.data.kaggle import csv_chunks
from digitpipe.data.parquet import parquet_chunks

WHOLE_ROWS = 16_384  # rows per chunk of a whole-file read: the fastest CSV parse measured (2 cores, 60k rows)


def read_chunks(path: str | Path, chunk_rows: int, *, bad_rows: BadRows, part: str | None = None) -> Iterator[Chunk]:
    """Chunks of at most `chunk_rows` rows of an IDX folder (its `part`, train or t10k; by default train where
    present, else t10k) or images file, a Kaggle CSV (plain or gz), a Parquet table or a PNG/JPEG folder.

    bad_rows="reject" (scoring) sets each bad row aside with its reason in its chunk's `rejects`; "raise" (training
    data, read whole) makes the first one a DataError naming its row, and refuses inputs past the size limits of a
    whole-file read. A file that cannot be read at all is a DataError either way."""
    check_policy(bad_rows)
    path = Path(path)
    kind = data_format(path)  # checked now, not at the first chunk: a wrong path fails where it is named
    if kind == "images":
        chunks = image_chunks(path, chunk_rows)
    elif kind == "idx":
        chunks = idx_chunks(path, chunk_rows, bad_rows, part)
    elif kind == "parquet":
        chunks = parquet_chunks(path, chunk_rows, bad_rows)
    else:
        chunks = csv_chunks(path, chunk_rows, bad_rows)
    return enforce(path, chunks, bad_rows)


def read_whole(path: str | Path, *, bad_rows: BadRows, part: str | None = None) -> Chunk:
    """Every row of `path` as one chunk: its good rows' numbers, images and labels, and the bad rows' reasons."""
    return Chunk.joined(list(read_chunks(path, WHOLE_ROWS, bad_rows=bad_rows, part=part)))


def load_dataset(path: str | Path, part: str | None = None) -> Dataset:
    """Training data: the digits of `path` (any format `read_chunks` reads; `part` of an IDX folder), the first
    bad row a DataError."""
    path = Path(path)
    whole = read_whole(path, bad_rows="raise", part=part)
    source = find_idx_pair(path, part)[0] if path.is_dir() and data_format(path) == "idx" else path
    return Dataset(whole.images, whole.labels, source=str(source))
