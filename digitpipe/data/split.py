"""Stratified, seeded splits: the book's 75/25 plus a validation slice of the training part."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from digitpipe.data.dataset import N_CLASSES, Dataset
from digitpipe.data.formats import check_protocol
from digitpipe.data.reader import load_dataset
from digitpipe.errors import DataError
from digitpipe.files import first_line


@dataclass(frozen=True)
class Split:
    """Train (fit), validation (early stopping, learning curves) and test (held out, reported) parts."""

    train: Dataset
    val: Dataset
    test: Dataset

    def sizes(self) -> dict[str, int]:
        """Row counts per part, for logging."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def parts(self) -> dict[str, Dataset]:
        """The parts by what they are used for (MLflow's dataset contexts)."""
        return {"training": self.train, "validation": self.val, "evaluation": self.test}

    def seen_in_training(self) -> np.ndarray:
        """Sorted hashes of the images a model of this split fitted or was tuned on (train and validation)."""
        return np.unique(np.concatenate([self.train.image_hashes(), self.val.image_hashes()]))


def split_dataset(data: Dataset, test_fraction: float = 0.25, val_fraction: float = 0.1, seed: int = 42) -> Split:
    """Stratify `data` into test (`test_fraction` of all) and val (`val_fraction` of the rest), deterministically."""
    if data.labels is None:
        raise DataError(data.source, "cannot split unlabelled data for training")
    counts = np.bincount(data.labels, minlength=N_CLASSES)
    if (counts < 3).any():
        raise DataError(data.source, f"every digit needs at least 3 images to split; counts are {counts.tolist()}")
    rest, test = _stratified(data, np.arange(len(data)), test_fraction, seed, "test")
    train, val = _stratified(data, rest, val_fraction, seed, "validation")
    return Split(data.subset(np.sort(train)), data.subset(np.sort(val)), data.subset(np.sort(test)))


def _stratified(data: Dataset, index: np.ndarray, fraction: float, seed: int, part: str) -> tuple[np.ndarray, ...]:
    """`index` split into the rest and `fraction` of it (the `part`), stratified by label; a DataError where the
    rows are too few for every digit to be in both (scikit-learn's ValueError, said as the data's problem)."""
    from sklearn.model_selection import train_test_split  # 1-2 s to import: only when splitting

    try:  # seeds and fractions are checked by the configuration: what fails here is the data
        return tuple(train_test_split(index, test_size=fraction, stratify=data.labels[index], random_state=seed))
    except ValueError as exc:
        raise DataError(data.source, f"{len(index):,} images are too few to split {fraction:g} off as the {part} "
                                     f"part with every digit in both ({first_line(exc)})") from None


def split_standard(train: Dataset, test: Dataset, val_fraction: float = 0.1, seed: int = 42) -> Split:
    """The standard MNIST protocol: fit on the 60,000-image training set (less a validation slice), test on t10k."""
    if test.labels is None:
        raise DataError(test.source, "the standard protocol needs a labelled test set (t10k labels)")
    fit, val = _stratified(train, np.arange(len(train)), val_fraction, seed, "validation")
    return Split(train.subset(np.sort(fit)), train.subset(np.sort(val)), test)


def split_by_protocol(data: Dataset, protocol: str, folder: Path, test_fraction: float = 0.25,
                      val_fraction: float = 0.1, seed: int = 42) -> Split:
    """The book's protocol (stratified 75/25 of `data`) or the standard one (test on `folder`'s t10k files)."""
    if protocol == "standard":
        check_protocol(folder, protocol)
        return split_standard(data, load_dataset(folder, part="t10k"), val_fraction, seed)
    return split_dataset(data, test_fraction, val_fraction, seed)


@dataclass(frozen=True)
class SplitRecipe:
    """How a split is made, to make it again: the data, protocol, seed and fractions, and where a training run
    recorded them, its parts' digests (by context: training, validation, evaluation) to check the result against."""

    data: Path
    protocol: str = "book"
    seed: int = 42
    test_fraction: float = 0.25
    val_fraction: float = 0.1
    digests: Mapping[str, str] = field(default_factory=dict)

    def rebuild(self) -> Split:
        """The split; a DataError naming the part whose digest differs when `data` does not reproduce it."""
        data = load_dataset(self.data, part="train" if self.protocol == "standard" else None)
        split = split_by_protocol(data, self.protocol, self.data, self.test_fraction, self.val_fraction, self.seed)
        for context, part in split.parts().items():
            recorded = self.digests.get(context)
            if recorded and not part.digest.startswith(recorded):
                raise DataError(self.data, f"does not reproduce the split the model was trained on: the rebuilt "
                                f"{context} part has digest {part.digest[:16]}, the training run recorded {recorded}")
        return split
