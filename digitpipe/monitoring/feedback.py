"""Labelled feedback: digits that were scored in production and later labelled, joined to the scored file on ImageId,
kept for retraining, and partly held out (by each image's hash) to judge the models that retrain on them.
numpy and pyarrow only (no torch, Prefect or MLflow here)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from digitpipe.data import Dataset, Split, read_whole
from digitpipe.data.dataset import N_CLASSES
from digitpipe.errors import DataError
from digitpipe.files import first_line
from digitpipe.records.feedback import Feedback

# The share of feedback digits no retraining may fit on, chosen by each image's hash: the same digit is held out in
# every run, so challenger and champion can be compared on feedback neither trained on.
HELD_OUT_SHARE = 0.3


def read_scored(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """(ImageIds, images, labels or None) of every good row of a scored file, ImageId being its 1-based row as in
    the predictions that `score` wrote for it, and the file's row count (rejected rows too)."""
    whole = read_whole(path, bad_rows="reject")  # the rows `score` rejected are skipped here too
    return whole.rows, whole.images, whole.labels, whole.last_row()


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ImageIds, labels) of a labels file: CSV with the columns ImageId,Label (the predictions' own format)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    if not Path(path).is_file():
        raise DataError(path, "no such labels file")
    try:
        table = pacsv.read_csv(io.BytesIO(Path(path).read_bytes()), convert_options=pacsv.ConvertOptions(
            column_types={"ImageId": pa.int64(), "Label": pa.int64()}, include_columns=["ImageId", "Label"]))
    except (pa.ArrowInvalid, KeyError) as exc:
        raise DataError(path, f"expected a CSV with columns ImageId,Label of integers ({first_line(exc)})") from None
    if len(table) == 0:
        raise DataError(path, "no labelled rows")
    for column in ("ImageId", "Label"):
        if table[column].null_count:
            row = int(np.flatnonzero(table[column].is_null().to_numpy(zero_copy_only=False))[0]) + 2  # 1: header
            raise DataError(path, f"line {row}: no {column}")
    ids, labels = table["ImageId"].to_numpy(), table["Label"].to_numpy()
    if (bad := np.flatnonzero((labels < 0) | (labels >= N_CLASSES))).size:
        raise DataError(path, f"ImageId {ids[bad[0]]}: label {labels[bad[0]]} is not a digit 0-9")
    if (repeated := np.unique(ids, return_counts=True)[1] > 1).any():
        raise DataError(path, f"ImageId {np.unique(ids)[repeated][0]} is labelled more than once")
    return ids, labels


def join_labels(scored: Path, labels_file: Path) -> tuple[Feedback, int]:
    """The scored file's digits that `labels_file` labels, joined on ImageId, and how many labels named rows the
    file rejected (no pixels to learn from: skipped). An ImageId past the file's last row is an error."""
    ids, labels = read_labels(labels_file)
    scored_ids, images, _, rows = read_scored(scored)
    outside = ids[(ids < 1) | (ids > rows)]
    if len(outside):
        raise DataError(labels_file, f"{len(outside)} ImageId(s) are not rows of {scored} (first: {outside[0]}; "
                        f"ImageIds run from 1 to its last row)")
    found = np.isin(ids, scored_ids)
    position = np.searchsorted(scored_ids, ids[found])  # read_scored keeps the file's order: ids ascend
    return Feedback(images[position], labels[found], ids[found], str(scored)), int((~found).sum())


def labelled_in_file(scored: Path) -> Feedback | None:
    """The digits of a scored file that carried its own labels (Kaggle's train format), else None."""
    ids, images, labels, _ = read_scored(scored)
    return None if labels is None or len(ids) == 0 else Feedback(images, labels, ids, str(scored))


def held_out(data: Dataset) -> np.ndarray:
    """Which feedback digits no model may train on: a fixed function of each image, the same in every run."""
    return (data.image_hashes() % 1000) < HELD_OUT_SHARE * 1000


def train_on_feedback(split: Split, feedback: Dataset | None) -> tuple[Split, Dataset | None]:
    """`split` whose training part also holds the feedback digits that are not held out, and the held-out ones
    (the gate's feedback clause compares challenger and champion on them)."""
    if feedback is not None:  # a labelled copy of the base data (its test file, say) must not leak into training
        in_split = np.concatenate([part.image_hashes() for part in (split.train, split.val, split.test)])
        feedback = feedback.subset(np.flatnonzero(~np.isin(feedback.image_hashes(), in_split)))
    if feedback is None or len(feedback) == 0:
        return split, None
    mask = held_out(feedback)
    fit = feedback.subset(np.flatnonzero(~mask))
    train = Dataset(np.concatenate([split.train.images, fit.images]),
                    np.concatenate([split.train.labels, fit.labels]), f"{split.train.source} + feedback")
    return Split(train, split.val, split.test), feedback.subset(np.flatnonzero(mask))
