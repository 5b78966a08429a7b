"""Parquet tables with the Kaggle columns (`label` optional, then pixel0..pixel783), read in row batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from digitpipe.data.chunks import BadRows, Chunk, checked_values
from digitpipe.data.kaggle import check_columns
from digitpipe.errors import DataError
from digitpipe.files import first_line

if TYPE_CHECKING:
    import pyarrow.parquet as pq


def parquet_chunks(path: Path, chunk_rows: int, bad_rows: BadRows) -> Iterator[Chunk]:
    """Chunks of a Parquet table: a missing or fractional value is a bad row; a column that is not numbers at
    all (text) refuses the file, whatever the policy, since no row of it can be read."""
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
        names = source.schema_arrow.names
        check_columns(path, names)
        first_row = 1
        for batch in _batches(source, names, chunk_rows, whole=bad_rows == "raise"):
            yield _batch_chunk(path, batch, first_row, names[0] == "label")
            first_row += batch.num_rows
    # pyarrow raises several unrelated types for a bad file; a column name damaged out of UTF-8, a UnicodeDecodeError
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read as Parquet ({first_line(exc)})") from None
    if bad_rows == "raise" and first_row == 1:
        raise DataError(path, "the table has a header but no rows")


def _batches(source: pq.ParquetFile, names: list[str], chunk_rows: int, whole: bool) -> Iterator[pa.RecordBatch]:
    """The table in batches of `chunk_rows`. Read whole, a row group at a time: pyarrow decodes one on all cores,
    ~1.5x faster than batch by batch; streaming, batch by batch, so memory stays bounded whatever the row groups."""
    if not whole:
        yield from source.iter_batches(batch_size=chunk_rows, columns=names)
        return
    for group in range(source.num_row_groups):
        yield from source.read_row_group(group, columns=names).to_batches(max_chunksize=chunk_rows)


def _batch_chunk(path: Path, batch: pa.RecordBatch, first_row: int, labelled: bool) -> Chunk:
    rows = np.arange(first_row, first_row + batch.num_rows)
    bad: dict[int, str] = {}  # row index -> reason; a row's first bad column gives it
    columns = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        numbers, reasons = _integers(path, name, column)
        columns.append(numbers)
        for i, reason in reasons.items():
            bad.setdefault(i, reason)
    labels = columns.pop(0) if labelled else None  # its own type: a label past int64 is named as it is, not cast
    pixels = np.stack(columns, axis=1)  # in the columns' own type (uint8 from pandas): not 8 bytes a pixel
    keep = np.ones(len(rows), bool)
    keep[list(bad)] = False
    rejects = [(int(rows[i]), reason) for i, reason in sorted(bad.items())]
    if not keep.all():
        rows, pixels, labels = rows[keep], pixels[keep], None if labels is None else labels[keep]
    return checked_values(rows, pixels, labels, rejects)


def _integers(path: Path, name: str, column: pa.Array) -> tuple[np.ndarray, dict[int, str]]:
    """A column's numbers (0 where a value is bad) and the reason of each bad row. pandas writes an integer column
    with a missing value as floats: those are read row by row, not refused as a whole."""
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise DataError(path, f"column {name} holds {column.type} values, not integers")
    reasons: dict[int, str] = {}
    if column.null_count:
        missing = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
        reasons = {int(i): f"missing value in {name}" for i in missing}
        column = column.fill_null(0)
    numbers = column.to_numpy(zero_copy_only=False)
    if pa.types.is_floating(column.type):
        fraction = ~np.isfinite(numbers) | (numbers != np.round(numbers))
        for i in np.flatnonzero(fraction):
            reasons.setdefault(int(i), f"non-integer value {float(numbers[i])!r} in {name}")
        numbers = np.where(fraction, 0, numbers)
    return numbers, reasons
