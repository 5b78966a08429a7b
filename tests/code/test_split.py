"""Split: stratified, seeded, disjoint, covering every row."""

import numpy as np
import pytest

from digitpipe.data import Dataset, split_by_protocol, split_dataset
from digitpipe.errors import DataError


def test_split_sizes_follow_fractions(digits):
    split = split_dataset(digits, test_fraction=0.25, val_fraction=0.1, seed=42)
    assert split.sizes() == {"train": 675, "val": 75, "test": 250}


def test_split_is_stratified(digits):
    split = split_dataset(digits)
    overall = np.bincount(digits.labels, minlength=10) / len(digits)
    for part in (split.train, split.test):
        assert np.abs(np.bincount(part.labels, minlength=10) / len(part) - overall).max() < 0.01


def test_split_is_deterministic_and_seed_dependent(digits):
    a, b, c = split_dataset(digits, seed=42), split_dataset(digits, seed=42), split_dataset(digits, seed=7)
    assert a.test.digest == b.test.digest != c.test.digest


def test_parts_are_disjoint_and_cover_everything(digits):
    split = split_dataset(digits)
    rows = {p.tobytes() for part in (split.train, split.val, split.test) for p in part.flat()}
    assert sum(split.sizes().values()) == len(digits) and len(rows) == len({p.tobytes() for p in digits.flat()})


def test_unlabelled_data_cannot_be_split(digits):
    with pytest.raises(DataError, match="unlabelled"):
        split_dataset(Dataset(digits.images, None, "test.csv"))


def test_a_digit_with_too_few_images_is_refused(digits):
    keep = np.flatnonzero(digits.labels != 3)[:500]
    with pytest.raises(DataError, match="at least 3 images"):
        split_dataset(digits.subset(keep))


def test_standard_protocol_tests_on_t10k(tmp_path, fixture_dir, digits):
    import shutil

    for f in fixture_dir.glob("train-*"):
        shutil.copy(f, tmp_path / f.name)
        shutil.copy(f, tmp_path / f.name.replace("train-", "t10k-"))  # stands in for the real t10k files
    split = split_by_protocol(digits, "standard", tmp_path)
    assert len(split.test) == 1000 and split.test.source.endswith("t10k-images-idx3-ubyte.gz")
    assert len(split.train) + len(split.val) == 1000 and len(split.val) == 100


@pytest.mark.parametrize("where", ["train-images-idx3-ubyte.gz", "."])
def test_the_standard_protocol_needs_a_folder_with_the_t10k_files(fixture_dir, digits, where):
    """A file, or a folder without t10k, has no test set of its own: splitting would test on training digits."""
    with pytest.raises(DataError, match="--protocol standard needs an MNIST IDX folder with the t10k files"):
        split_by_protocol(digits, "standard", fixture_dir / where)
