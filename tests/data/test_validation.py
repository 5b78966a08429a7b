"""great-expectations suite on the real fixture, and on data that must fail it."""

import numpy as np

from digitpipe.data import Dataset
from digitpipe.validation import profile, validate


def test_real_mnist_sample_passes(digits):
    report = validate(digits)
    assert report.success, report.text()
    assert "PASSED" in report.text()


def test_profile_has_one_row_per_image(digits):
    table = profile(digits)
    assert len(table) == len(digits)
    assert set(table.columns) == {"label", "class_share", "pixel_min", "pixel_max", "pixel_mean", "ink_fraction",
                                  "image_hash"}
    assert table.ink_fraction.between(0.01, 0.6).all()  # every real digit has some ink, none is all ink


def test_one_class_dataset_fails(digits):
    report = validate(Dataset(digits.images, np.full(len(digits), 7), "one-class"))
    assert not report.success
    assert any("FAIL" in line and "unique_value_count" in line for line in report.lines)


def test_blank_images_fail(digits):
    images = digits.images.copy()
    images[:50] = 0
    assert not validate(Dataset(images, digits.labels, "blank")).success


def test_duplicated_images_fail(digits):
    images = digits.images.copy()
    images[1:40] = images[0]
    assert not validate(Dataset(images, digits.labels, "dupes")).success


def test_too_few_rows_fail(digits):
    assert not validate(digits.subset(np.arange(50)), min_rows=100).success


def test_unbalanced_classes_fail(digits):
    keep = np.flatnonzero((digits.labels != 1) | (np.arange(len(digits)) % 10 == 0))  # 1s drop to ~1%
    report = validate(digits.subset(keep))
    assert not report.success
    assert any("FAIL" in line and "class_share" in line for line in report.lines)
