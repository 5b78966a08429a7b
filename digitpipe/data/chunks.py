"""What every reader yields: chunks of consecutive input rows, the good ones as images and the bad ones with a
reason, and the bad-row policy that decides what a bad row does (set aside when scoring, an error in training data)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from digitpipe.data.dataset import IMAGE_SHAPE, N_CLASSES
from digitpipe.errors import DataError

# "reject": a bad row is set aside with its reason and reading goes on (scoring: a person looks at the rejects).
# "raise": the first bad row is a DataError naming it (training data: a model must not learn from a guessed row).
BadRows = Literal["reject", "raise"]
BAD_ROWS = ("reject", "raise")


@dataclass
class Chunk:
    """Up to `chunk_rows` consecutive input rows: the good ones as images, the bad ones as (row, reason)."""

    rows: np.ndarray  # 1-based input row number of each image
    images: np.ndarray  # uint8 n x 28 x 28
    labels: np.ndarray | None = None  # int64, where the input carries labels
    rejects: list[tuple[int, str]] = field(default_factory=list)

    @classmethod
    def joined(cls, chunks: list[Chunk]) -> Chunk:
        """All `chunks` as one (a copy: the images are writable, as torch.from_numpy wants)."""
        if not chunks:
            return cls(np.zeros(0, np.int64), np.zeros((0, *IMAGE_SHAPE), np.uint8))
        labelled = all(c.labels is not None for c in chunks)
        return cls(np.concatenate([c.rows for c in chunks]), np.concatenate([c.images for c in chunks]),
                   np.concatenate([c.labels for c in chunks]) if labelled else None,
                   [reject for c in chunks for reject in c.rejects])

    def last_row(self) -> int:
        """The number of the last input row seen, good or bad (0 for none)."""
        return max([int(self.rows.max(initial=0))] + [row for row, _ in self.rejects])


def check_policy(bad_rows: str) -> None:
    """Refuse a policy other than reject or raise (a programming error, not bad input)."""
    if bad_rows not in BAD_ROWS:
        raise ValueError(f"bad_rows={bad_rows!r}: expected one of {', '.join(BAD_ROWS)}")


def enforce(path: Path, chunks: Iterable[Chunk], bad_rows: BadRows) -> Iterator[Chunk]:
    """`chunks` under the policy: unchanged for reject; for raise, the first bad row is a DataError."""
    for chunk in chunks:
        if bad_rows == "raise" and chunk.rejects:
            row, reason = min(chunk.rejects)
            raise DataError(path, f"row {row}: {reason}")
        yield chunk


def out_of_range(column: str, value: int | str, low: int, high: int) -> str:
    """The one wording of a value outside its range, in an error and in a reject reason alike."""
    return f"{column} = {value} is outside {low}..{high}"


def checked_values(rows: np.ndarray, pixels: np.ndarray, labels: np.ndarray | None,
                   rejects: list[tuple[int, str]]) -> Chunk:
    """Table rows (784 integer pixels each, and their labels where the table has them) as a chunk: a row with a
    pixel outside 0..255 or a label outside 0..9 joins `rejects`, the rest become images."""
    # uint8 pixels (Parquet written from MNIST arrays) cannot be out of range: their check is skipped
    in_range = pixels.dtype == np.uint8
    bad_pixel = np.zeros(len(rows), bool) if in_range else ((pixels < 0) | (pixels > 255)).any(axis=1)
    bad_label = (labels < 0) | (labels >= N_CLASSES) if labels is not None else np.zeros(len(rows), bool)
    bad = bad_pixel | bad_label
    for i in np.flatnonzero(bad):
        if bad_label[i]:
            rejects.append((int(rows[i]), out_of_range("label", labels[i], 0, N_CLASSES - 1)))
        else:
            col = int(np.argmax((pixels[i] < 0) | (pixels[i] > 255)))
            rejects.append((int(rows[i]), out_of_range(f"pixel{col}", pixels[i, col], 0, 255)))
    if bad.any():  # clean chunks, the usual case, skip the copy that selecting the good rows makes
        rows, pixels, labels = rows[~bad], pixels[~bad], None if labels is None else labels[~bad]
    images = pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    return Chunk(rows, images, None if labels is None else labels.astype(np.int64), sorted(rejects))
