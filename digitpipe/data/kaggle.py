"""Kaggle "Digit Recognizer" CSVs, plain or gzipped: `label,pixel0..pixel783` (train) or `pixel0..pixel783` (test),
read in chunks.

Each chunk takes a fast path (pyarrow, integer columns, one thread) and falls back to checking line by line only
when it holds a malformed row, so clean files pay nothing for the checks. A row is a line: row N is the N-th line
after the header, as the ImageIds of the predictions count them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from digitpipe.data.chunks import BadRows, Chunk, checked_values, out_of_range
from digitpipe.data.dataset import N_CLASSES, N_PIXELS
from digitpipe.data.formats import gzip_errors, open_maybe_gzip
from digitpipe.errors import DataError

PIXEL_COLUMNS = [f"pixel{i}" for i in range(N_PIXELS)]
MAX_CSV_BYTES = 4 << 30  # 4 GiB of CSV text (~1.5 M digits) read whole; a streaming read (reject) has no limit
MAX_LINE = 1 << 16  # a real row is at most ~3 KB: a longer line is a bad row, and a bomb's one line stays unread
_TOO_LONG = b"<a line longer than MAX_LINE>\n"  # stands for such a line in its chunk (compared by identity)


def csv_chunks(path: Path, chunk_rows: int, bad_rows: BadRows) -> Iterator[Chunk]:
    """Chunks of a Kaggle CSV. Reading it whole (raise), blank lines are skipped as every CSV reader does, and a
    file that holds or inflates past MAX_CSV_BYTES is refused; a streaming read (reject) sets blank lines aside
    (so a gap in the ImageIds has a reason) and has no size limit."""
    with gzip_errors(path), open_maybe_gzip(path) as f:  # a gigabyte of garbage is refused at its first line
        header = read_csv_header(f, path)
        check_columns(path, header)
        labelled, first_row, size, found = header[0] == "label", 1, 0, 0
        for count in _growing(chunk_rows):
            if not (lines := _read_lines(f, count)):
                break
            size += sum(map(len, lines))
            if bad_rows == "raise" and size > MAX_CSV_BYTES:  # read at call time: tests lower it
                raise DataError(path, f"holds or inflates past {MAX_CSV_BYTES / 2**30:.1f} GiB; refused")
            chunk = _csv_chunk(lines, first_row, labelled, skip_blank=bad_rows == "raise")
            found += len(chunk.rows)
            yield chunk
            first_row += len(lines)
    if bad_rows == "raise" and not found:
        raise DataError(path, "the table has a header but no rows")


def read_csv_header(f: BinaryIO, path: Path, limit: int = 1 << 16) -> list[str]:
    """The column names on `f`'s next line, reading at most `limit` bytes (the real header is ~8 KB)."""
    line = f.readline(limit)
    if not line:
        raise DataError(path, "file is empty")
    if not line.endswith(b"\n") and len(line) >= limit:
        raise DataError(path, f"first line is longer than {limit // 1024} KB: not a Kaggle CSV header")
    text = line.rstrip(b"\r\n").removeprefix(b"\xef\xbb\xbf")  # a UTF-8 BOM, as spreadsheets write one
    return text.decode("utf-8", "replace").split(",")


def check_columns(path: Path, columns: list[str]) -> None:
    """Refuse columns other than [label,]pixel0..pixel783 in that order, naming the first that differ."""
    expected = PIXEL_COLUMNS if columns[:1] != ["label"] else ["label", *PIXEL_COLUMNS]
    if columns == expected:
        return
    unexpected = [c for c in columns if c not in expected]
    missing = [c for c in expected if c not in columns]
    detail = "; ".join(
        part
        for part in (
            f"unexpected column(s) {', '.join(repr(_cut(c)) for c in unexpected[:3])}" if unexpected else "",
            f"missing column(s) {', '.join(missing[:3])}" if missing else "",
        )
        if part
    )
    raise DataError(path, f"header must be [label,]pixel0..pixel783: {detail or 'columns out of order'}")


def _cut(text: str, limit: int = 30) -> str:
    """`text` cut to `limit` characters: a header of one 60 KB name is named in one readable line."""
    return text if len(text) <= limit else text[:limit] + "..."


def _growing(chunk_rows: int) -> Iterator[int]:
    """Chunk sizes: 1,024 rows, then four times more per chunk up to `chunk_rows`. Parsing is the costly part of a
    CSV: a consumer that parses ahead while it works (scoring) starts on the first rows at once, not a chunk later."""
    size = min(1024, chunk_rows)
    while True:
        yield size
        size = min(4 * size, chunk_rows)


def _read_lines(f: BinaryIO, count: int) -> list[bytes]:
    """Up to `count` lines; a line longer than MAX_LINE becomes _TOO_LONG, the rest of it skipped unread."""
    lines = []
    for _ in range(count):
        if not (line := f.readline(MAX_LINE)):
            break
        if len(line) == MAX_LINE and not line.endswith(b"\n"):
            while (rest := f.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                pass
            line = _TOO_LONG
        lines.append(line)
    return lines


def _csv_chunk(lines: list[bytes], first_row: int, labelled: bool, skip_blank: bool) -> Chunk:
    columns = (["label"] if labelled else []) + PIXEL_COLUMNS
    try:
        table = pacsv.read_csv(
            io.BytesIO(b"".join(lines)),
            # one thread: scoring parses ahead on a thread of its own while onnxruntime has the cores, and a
            # whole-file read is fastest so too (measured: threads on 16k-row chunks cost more than they gain)
            read_options=pacsv.ReadOptions(column_names=columns, use_threads=False),
            # int16 parses fastest and still holds 256 or -1, so the range check can name them
            # no null values: pyarrow would read an empty field as a null, which became a silent 0 (or a label of
            # -2**63); as an error it sends the chunk down the careful path, which names the row
            convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(columns, pa.int16()), null_values=[]),
        )
        if table.num_rows != len(lines):  # blank lines are skipped by pyarrow: take the careful path
            raise pa.ArrowInvalid("row count mismatch")
        values = np.stack([c.to_numpy() for c in table.columns], axis=1)
        return _checked(np.arange(first_row, first_row + len(lines)), values, labelled, [])
    except pa.ArrowInvalid:
        return _careful_csv_chunk(lines, first_row, columns, skip_blank)


def _careful_csv_chunk(lines: list[bytes], first_row: int, columns: list[str], skip_blank: bool) -> Chunk:
    """Line-by-line parse of a chunk known to hold a malformed row: each bad row with its reason."""
    rows, values, rejects = [], [], []
    for row, line in enumerate(lines, start=first_row):
        if skip_blank and not line.strip():
            continue
        if (reason := _bad_line(line, columns)) is not None:
            rejects.append((row, reason))
            continue
        values.append([int(v) for v in line.split(b",")])
        rows.append(row)
    matrix = np.array(values, dtype=np.int64).reshape(-1, len(columns))
    return _checked(np.array(rows, dtype=np.int64), matrix, columns[0] == "label", rejects)


def _checked(rows: np.ndarray, values: np.ndarray, labelled: bool, rejects: list[tuple[int, str]]) -> Chunk:
    """`values` (the label column first where `labelled`) range-checked into a chunk."""
    return checked_values(rows, values[:, 1:] if labelled else values, values[:, 0] if labelled else None, rejects)


def _bad_line(line: bytes, columns: list[str]) -> str | None:
    """Why `line` is not a row of integers under `columns`, or None when it is one."""
    if line is _TOO_LONG:
        return f"longer than {MAX_LINE // 1024} KB: not a row of {len(columns)} integers"
    fields = line.rstrip(b"\r\n").split(b",")
    if len(fields) != len(columns):
        return f"expected {len(columns)} fields, found {len(fields)}"
    for column, value in zip(columns, fields, strict=True):
        if not value.strip():
            return f"missing value in {column}"
        try:
            number = int(value)
        except ValueError:  # Python refuses a number of more than 4,300 digits as it refuses text
            return f"non-integer value {_cut(value.decode('utf-8', 'replace'), 20)!r} in {column}"
        if not -(2**63) <= number < 2**63:  # past the int64 table the range check reads: said here, in its words
            return out_of_range(column, _cut(value.decode(), 20), 0, N_CLASSES - 1 if column == "label" else 255)
    return None
