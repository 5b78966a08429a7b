"""One format decision for every reader: the whole-file readers and the streaming scorer agree on each input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from digitpipe.data import load_dataset
from digitpipe.data.readers import data_format
from digitpipe.data.stream import stream_chunks
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
    chunks = list(stream_chunks(folder, chunk_rows=8))
    assert [len(c.rows) for c in chunks] == [8, 8, 8, 6]
    assert np.array_equal(np.concatenate([c.images for c in chunks]), whole.images)
    assert np.array_equal(np.concatenate([c.labels for c in chunks]), whole.labels)
    assert np.array_equal(np.concatenate([c.rows for c in chunks]), np.arange(1, 31))
