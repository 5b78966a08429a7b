"""One set of digits is one dataset whatever its format (issue 35, finding 8): the fixture as IDX, CSV, Parquet and a
PNG folder `<label>/<row>.png` (row numbers unpadded, so that name order alone would put 10 before 2) reads into the
same arrays, has one digest and splits the same way, and a scored PNG folder's ImageIds and rejected rows name its
files in that order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from digitpipe.data import load_dataset, read_chunks, split_dataset
from digitpipe.data.images import image_files, natural_key
from tests.helpers import kaggle_frame, write_kaggle_csv


def _png_folder(folder, digits, name="{i}.png", labelled=True):
    """`digits` as `folder/<label>/<name>` (or `folder/<name>` unlabelled), i the row's index."""
    for i, image in enumerate(digits.images):
        where = folder / str(digits.labels[i]) if labelled else folder
        where.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(where / name.format(i=i))
    return folder


@pytest.fixture(scope="module")
def four_formats(tmp_path_factory, fixture_dir, digits):
    """The fixture read from IDX, CSV, Parquet and an unpadded PNG folder, by format."""
    tmp = tmp_path_factory.mktemp("formats")
    kaggle_frame(digits).to_parquet(tmp / "digits.parquet")
    paths = {"idx": fixture_dir, "csv": write_kaggle_csv(tmp / "digits.csv", digits),
             "parquet": tmp / "digits.parquet", "png": _png_folder(tmp / "png", digits)}
    return {kind: load_dataset(path) for kind, path in paths.items()}


def test_every_format_of_the_same_digits_reads_the_same_rows_with_one_digest(four_formats, digits):
    for kind, data in four_formats.items():
        assert data.digest == digits.digest, kind
        np.testing.assert_array_equal(data.images, digits.images, err_msg=kind)
        np.testing.assert_array_equal(data.labels, digits.labels, err_msg=kind)


def test_every_format_of_the_same_digits_splits_the_same_way(four_formats):
    splits = {kind: split_dataset(data, seed=7) for kind, data in four_formats.items()}
    for kind, split in splits.items():
        for part, expected in splits["idx"].parts().items():
            assert split.parts()[part].digest == expected.digest, (kind, part)
            np.testing.assert_array_equal(split.parts()[part].images, expected.images)


def test_zero_padded_names_read_in_the_same_order(tmp_path, digits):
    head = digits.subset(np.arange(120))
    padded = load_dataset(_png_folder(tmp_path / "padded", head, "{i:05d}.png"))
    prefixed = load_dataset(_png_folder(tmp_path / "prefixed", head, "mnist_{i}.png"))
    assert padded.digest == prefixed.digest == head.digest


def test_names_sort_with_numbers_as_numbers_and_ties_by_label_folder(tmp_path):
    names = ["10.png", "2.png", "img10.png", "img9.png", "1.png", "02.png"]
    assert sorted(names, key=natural_key) == ["1.png", "2.png", "02.png", "10.png", "img9.png", "img10.png"]
    for label, name in [("7", "0.png"), ("3", "0.png"), ("3", "1.png"), ("9", "a.png")]:
        (tmp_path / label).mkdir(exist_ok=True)
        (tmp_path / label / name).write_bytes(b"")
    files, labelled = image_files(tmp_path)
    assert labelled and [(f.parent.name, f.name) for f, _ in files] == [
        ("3", "0.png"), ("7", "0.png"), ("3", "1.png"), ("9", "a.png")]


def test_scoring_a_png_folder_numbers_its_rows_in_the_reading_order(tmp_path, digits, logreg_onnx):
    """ImageId N is the N-th file of the reading order, and a rejected row's number names its own file."""
    from digitpipe.batch_scoring import score_file
    from digitpipe.onnx_scorer import OnnxScorer
    from digitpipe.records.models import ModelIdentity

    head = digits.subset(np.arange(30))
    folder = _png_folder(tmp_path / "png", head)
    broken = folder / str(head.labels[9]) / "9.png"  # row 10; name order alone would read it after 29.png
    broken.write_bytes(b"not a png")
    out = tmp_path / "p.csv"
    score_file(OnnxScorer(logreg_onnx), folder, out, ModelIdentity(str(logreg_onnx)))
    predictions, rejects = pd.read_csv(out), pd.read_csv(tmp_path / "p.csv.rejects.csv")
    assert rejects.row.tolist() == [10] and rejects.reason[0].startswith(f"{head.labels[9]}/9.png: ")
    assert predictions.ImageId.tolist() == [i + 1 for i in range(30) if i != 9]
    expected = OnnxScorer(logreg_onnx).predict(np.delete(head.images, 9, axis=0))
    np.testing.assert_array_equal(predictions.Label, expected)
    chunks = list(read_chunks(folder, 7, bad_rows="reject"))
    assert np.concatenate([c.rows for c in chunks]).tolist() == predictions.ImageId.tolist()


def test_an_unlabelled_folder_of_row_numbers_reads_in_row_order(tmp_path, digits):
    head = digits.subset(np.arange(25))
    flat = load_dataset(_png_folder(tmp_path / "flat", head, labelled=False))
    assert flat.labels is None
    np.testing.assert_array_equal(flat.images, head.images)
