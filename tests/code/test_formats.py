"""One format decision and one reader per format: whole-file reads and the streaming scorer agree on each input,
and the bad-row policy (reject when scoring, raise for training data) is the only difference."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from digitpipe.data import load_dataset, read_chunks, read_whole
from digitpipe.data.formats import data_format
from digitpipe.errors import DataError


def _png_folder(tmp_path, digits, n: int = 30):
    for i in range(n):
        (tmp_path / "png" / str(digits.labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i]).save(tmp_path / "png" / str(digits.labels[i]) / f"{i:03d}.png")
    return tmp_path / "png"


def test_formats_are_told_by_content(tmp_path, fixture_dir, digits):
    (tmp_path / "table.txt").write_bytes(b"PAR1 not really")
    (tmp_path / "noise.bin").write_bytes(b"\x00\x01\x02 not digits")
    assert data_format(fixture_dir) == "idx"
    assert data_format(fixture_dir / "train-images-idx3-ubyte.gz") == "idx"
    assert data_format(_png_folder(tmp_path, digits)) == "images"
    assert data_format(tmp_path / "table.txt") == "parquet"
    with pytest.raises(DataError, match="noise.bin: neither an MNIST IDX file nor a Kaggle CSV"):
        data_format(tmp_path / "noise.bin")


def test_the_streaming_scorer_reads_a_png_folder_as_the_readers_do(tmp_path, digits):
    folder = _png_folder(tmp_path, digits)
    whole = load_dataset(folder)
    chunks = list(read_chunks(folder, chunk_rows=8, bad_rows="reject"))
    assert [len(c.rows) for c in chunks] == [8, 8, 8, 6]
    assert np.array_equal(np.concatenate([c.images for c in chunks]), whole.images)
    assert np.array_equal(np.concatenate([c.labels for c in chunks]), whole.labels)
    assert np.array_equal(np.concatenate([c.rows for c in chunks]), np.arange(1, 31))


def _csv_with_bad_rows(tmp_path, digits):
    """A Kaggle CSV of 10 digits whose row 3 has text, row 6 is blank and row 8 is a 100 KB line."""
    from tests.helpers import write_kaggle_csv

    path = write_kaggle_csv(tmp_path / "bad.csv", digits.subset(np.arange(10)))
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",0,", ",x,", 1)
    lines[6] = ""
    lines[8] = "1," + "7" * 100_000
    path.write_text("\n".join(lines) + "\n")
    return path


def test_one_reader_two_policies_reject_sets_bad_rows_aside_and_raise_names_the_first(tmp_path, digits):
    path = _csv_with_bad_rows(tmp_path, digits)
    chunks = list(read_chunks(path, 4, bad_rows="reject"))
    rejects = [reject for c in chunks for reject in c.rejects]
    assert [row for row, _ in rejects] == [3, 6, 8]
    assert rejects[0][1].startswith("non-integer value 'x' in pixel")
    assert rejects[1][1] == "expected 785 fields, found 1" and rejects[2][1].startswith("longer than 64 KB")
    good = np.concatenate([c.rows for c in chunks])
    assert good.tolist() == [1, 2, 4, 5, 7, 9, 10]
    assert np.array_equal(np.concatenate([c.images for c in chunks]), digits.images[good - 1])
    with pytest.raises(DataError, match=r"bad.csv: row 3: non-integer value 'x' in pixel\d+$"):
        load_dataset(path)
    with pytest.raises(ValueError, match="bad_rows='skip'"):
        read_chunks(path, 4, bad_rows="skip")


def test_a_whole_read_skips_blank_lines_as_csv_readers_do(tmp_path, digits):
    from tests.helpers import write_kaggle_csv

    path = write_kaggle_csv(tmp_path / "t.csv", digits.subset(np.arange(5)))
    path.write_bytes(path.read_bytes() + b"\n\n")
    assert load_dataset(path).digest == digits.subset(np.arange(5)).digest


def test_parquet_rows_with_a_missing_or_fractional_value_are_bad_rows(tmp_path, digits):
    from tests.helpers import kaggle_frame

    frame = kaggle_frame(digits.subset(np.arange(6))).astype({"pixel7": float})
    frame.loc[1, "pixel7"], frame.loc[4, "pixel7"] = None, 0.5
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=4)  # rows counted on across row groups
    chunk = read_whole(tmp_path / "t.parquet", bad_rows="reject")
    assert chunk.rejects == [(2, "missing value in pixel7"), (5, "non-integer value 0.5 in pixel7")]
    assert chunk.rows.tolist() == [1, 3, 4, 6] and np.array_equal(chunk.labels, digits.labels[[0, 2, 3, 5]])
    with pytest.raises(DataError, match="row 2: missing value in pixel7"):
        load_dataset(tmp_path / "t.parquet")
    kaggle_frame(digits).to_parquet(tmp_path / "groups.parquet", row_group_size=300)
    assert load_dataset(tmp_path / "groups.parquet").digest == digits.digest


def test_an_image_of_another_size_is_a_bad_row_when_scoring_and_an_error_in_training_data(tmp_path, digits):
    folder = _png_folder(tmp_path, digits, n=5)
    digit = digits.labels[0]
    Image.new("RGB", (32, 32)).save(folder / str(digit) / "big.png")
    chunk = read_whole(folder, bad_rows="reject")
    assert len(chunk.rows) == 5 and [reason for _, reason in chunk.rejects] == [
        f"{digit}/big.png: 32x32 RGB image refused (not converted): digitpipe needs 28x28 grayscale (mode L)"]
    with pytest.raises(DataError, match=rf"row \d: {digit}/big.png: 32x32 RGB image refused"):
        load_dataset(folder)


def test_idx_labels_that_are_not_digits(tmp_path, digits):
    from digitpipe.data.idx import write_idx

    labels = digits.labels.copy()
    labels[7] = 12
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits.images, 0x803)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels, 0x801)
    assert read_whole(tmp_path, bad_rows="reject").rejects == [(8, "label = 12 is outside 0..9")]
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: row 8: label = 12 is outside 0..9"):
        load_dataset(tmp_path)
