"""Readers: IDX (gz and raw) and Kaggle CSV into one Dataset, and clear errors for bad files."""

import gzip
import shutil
import struct

import numpy as np
import pytest

from digitpipe.data import load_dataset
from digitpipe.data.idx import write_idx
from digitpipe.errors import DataError
from tests.helpers import kaggle_frame, write_kaggle_csv


def write_file(path, content):
    path.write_bytes(content)
    return path


def assert_refused(path, message):
    """Reading `path` fails with a DataError whose message matches `message`."""
    with pytest.raises(DataError, match=message):
        load_dataset(path)


def test_idx_folder_reads_images_and_labels(digits):
    assert digits.images.shape == (1000, 28, 28) and digits.images.dtype == np.uint8
    assert digits.labels.shape == (1000,) and set(np.unique(digits.labels)) == set(range(10))


def test_raw_idx_and_gz_idx_give_the_same_digest(tmp_path, digits):
    write_idx(tmp_path / "train-images-idx3-ubyte", digits.images, 0x803, compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", digits.labels, 0x801, compress=False)
    assert load_dataset(tmp_path).digest == digits.digest


def test_images_file_finds_its_labels(tmp_path, fixture_dir, digits):
    for f in fixture_dir.iterdir():
        shutil.copy(f, tmp_path)
    assert load_dataset(tmp_path / "train-images-idx3-ubyte.gz").digest == digits.digest


def test_kaggle_csv_matches_idx_digest(tmp_path, digits):
    data = load_dataset(write_kaggle_csv(tmp_path / "train.csv", digits))
    assert data.digest == digits.digest
    np.testing.assert_array_equal(data.images, digits.images)


def test_kaggle_test_csv_has_no_labels(tmp_path, digits):
    data = load_dataset(write_kaggle_csv(tmp_path / "test.csv", digits, labelled=False))
    assert data.labels is None and len(data) == 1000


def test_gzipped_csv(tmp_path, digits):
    path = write_kaggle_csv(tmp_path / "train.csv", digits)
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress(path.read_bytes()))
    assert load_dataset(tmp_path / "train.csv.gz").digest == digits.digest


def _bad_csv(tmp_path, digits, edit):
    frame = edit(kaggle_frame(digits.subset(np.arange(20))))
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.drop(columns="pixel783"), "missing column"),
    (lambda f: f.assign(pixel784=0), "unexpected column"),
    (lambda f: f.rename(columns={"pixel3": "pixle3"}), "'pixle3'"),
    (lambda f: f.astype({"pixel5": object}).assign(pixel5=lambda d: ["x"] + list(d.pixel5[1:])), "non-integer"),
    (lambda f: f.assign(pixel9=lambda d: [256] + list(d.pixel9[1:])), "256 is outside 0..255"),
    (lambda f: f.assign(pixel9=lambda d: [-1] + list(d.pixel9[1:])), "-1 is outside 0..255"),
    (lambda f: f.assign(pixel9=lambda d: [0.5] + list(d.pixel9[1:])), "non-integer"),
    (lambda f: f.assign(label=lambda d: [10] + list(d.label[1:])), "10 is outside 0..9"),
    (lambda f: f.iloc[:0], "no rows"),
])
def test_bad_csv_is_refused_with_reason(tmp_path, digits, edit, message):
    assert_refused(_bad_csv(tmp_path, digits, edit), message)


@pytest.mark.parametrize("make, message", [
    (lambda p, d: p / "nothing-here", "no such file"),
    (lambda p, d: write_file(p / "empty.csv", b""), "empty"),
    (lambda p, d: write_file(p / "notes.txt", b"hello, digits\n"), "neither"),
    (lambda p, d: write_idx(p / "x-images-idx3-ubyte.gz", d.images[:10], 0x801), "not an IDX images"),
    (lambda p, d: write_idx(p / "x-images-idx3-ubyte.gz", np.zeros((4, 27, 28)), 0x803), "27x28"),
])
def test_bad_file_is_refused_with_reason(tmp_path, digits, make, message):
    assert_refused(make(tmp_path, digits), message)


def test_truncated_gzip_is_refused(tmp_path, fixture_dir):
    raw = (fixture_dir / "train-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(raw[: len(raw) // 2])
    shutil.copy(fixture_dir / "train-labels-idx1-ubyte.gz", tmp_path)
    assert_refused(tmp_path, "truncated")


def test_image_and_label_counts_must_agree(tmp_path, digits):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", digits.images, 0x803)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", digits.labels[:999], 0x801)
    assert_refused(tmp_path, "999 labels for 1000 images")


def test_short_idx_payload_is_refused(tmp_path, digits):
    path = write_idx(tmp_path / "train-images-idx3-ubyte", digits.images[:3], 0x803, compress=False)
    path.write_bytes(path.read_bytes()[:-5])
    assert_refused(path, "header promises")


def test_parquet_matches_idx_digest(tmp_path, digits):
    kaggle_frame(digits).to_parquet(tmp_path / "digits.parquet")
    assert load_dataset(tmp_path / "digits.parquet").digest == digits.digest


def test_png_folders_labelled_and_flat(tmp_path, digits):
    from PIL import Image

    for i in range(30):
        folder = tmp_path / "labelled" / str(digits.labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i]).save(folder / f"{i:03d}.png")
        (tmp_path / "flat").mkdir(exist_ok=True)
        Image.fromarray(digits.images[i]).save(tmp_path / "flat" / f"{i:03d}.png")
    labelled = load_dataset(tmp_path / "labelled")
    assert len(labelled) == 30 and sorted(labelled.labels.tolist()) == sorted(digits.labels[:30].tolist())
    flat = load_dataset(tmp_path / "flat")
    assert flat.labels is None and np.array_equal(flat.images, digits.images[:30])


def test_png_of_the_wrong_size_or_colour_is_refused(tmp_path):
    from PIL import Image

    (tmp_path / "3").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "3" / "big.png")
    assert_refused(tmp_path, "32x32 RGB image refused .* 28x28 grayscale")


def test_idx_header_claiming_two_billion_images_is_refused_at_once(tmp_path):
    path = write_file(tmp_path / "train-images-idx3-ubyte", struct.pack(">IIII", 0x803, 2**31, 28, 28) + bytes(784))
    assert_refused(path, "above the 2 GiB limit")


@pytest.mark.slow  # compresses 512 MB of zeros to make the bomb: seconds
def test_gzip_bomb_is_not_inflated_past_what_the_header_promises(tmp_path):
    import zlib

    header = struct.pack(">IIII", 0x803, 10, 28, 28)
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip container
    bomb = packer.compress(header) + b"".join(packer.compress(bytes(1 << 20)) for _ in range(512)) + packer.flush()
    assert len(bomb) < 1 << 20  # ~0.5 MB on disk, 512 MB inflated
    assert_refused(write_file(tmp_path / "train-images-idx3-ubyte.gz", bomb), "file holds more")


@pytest.mark.slow  # writes a gigabyte: seconds
def test_a_gigabyte_of_random_bytes_is_refused_at_its_first_line(tmp_path):
    path = tmp_path / "garbage.csv"
    with path.open("wb") as f:
        chunk = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
        for _ in range(1024):
            f.write(chunk)
    # the header check reads at most 64 KB; the parser (which would hold the whole file) never starts
    assert_refused(path, "header must be|not a Kaggle CSV header")


def test_a_ten_megabyte_line_is_refused(tmp_path, digits):
    path = write_kaggle_csv(tmp_path / "train.csv", digits.subset(np.arange(20)))
    with path.open("ab") as f:
        f.write(b"1," + b"7" * (10 << 20) + b"\n")
    with pytest.raises(DataError):
        load_dataset(path)


def test_a_symlink_out_of_the_data_folder_is_refused(tmp_path, digits, fixture_dir):
    from PIL import Image

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(digits.images[0]).save(outside / "secret.png")
    (tmp_path / "data" / "5").mkdir(parents=True)
    Image.fromarray(digits.images[1]).save(tmp_path / "data" / "5" / "ok.png")
    (tmp_path / "data" / "5" / "link.png").symlink_to(outside / "secret.png")
    assert_refused(tmp_path / "data", "outside the data folder")
    idx = tmp_path / "idx"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte.gz").symlink_to(fixture_dir / "train-images-idx3-ubyte.gz")
    assert_refused(idx, "outside the data folder")


def test_a_csv_gzip_bomb_stops_at_the_limit(tmp_path, digits, monkeypatch):
    import zlib

    from digitpipe.data import kaggle

    monkeypatch.setattr(kaggle, "MAX_CSV_BYTES", 8 << 20)  # a small limit: the bomb need not be huge
    header = write_kaggle_csv(tmp_path / "t.csv", digits.subset(np.arange(2))).read_bytes()
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    row = b"1," + b",".join([b"0"] * 784) + b"\n"
    bomb = packer.compress(header) + b"".join(packer.compress(row * 1000) for _ in range(20)) + packer.flush()
    (tmp_path / "bomb.csv.gz").write_bytes(bomb)
    assert_refused(tmp_path / "bomb.csv.gz", "inflates past")


def t10k_only_folder(tmp_path, fixture_dir):
    folder = tmp_path / "t10k-only"
    folder.mkdir()
    for name in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
        (folder / f"t10k-{name}").write_bytes((fixture_dir / f"train-{name}").read_bytes())
    return folder


def test_a_folder_with_only_the_t10k_pair_is_a_labelled_set(tmp_path, fixture_dir, digits):
    data = load_dataset(t10k_only_folder(tmp_path, fixture_dir))
    assert data.digest == digits.digest and data.source.endswith("t10k-images-idx3-ubyte.gz")


def test_validate_reads_both_pairs_and_says_which(tmp_path, fixture_dir, digitpipe_cli):
    folder = t10k_only_folder(tmp_path, fixture_dir)
    code, out, _ = digitpipe_cli("validate", "--data", folder)
    assert code == 0
    assert out.splitlines()[:2] == [f"{folder}/t10k-images-idx3-ubyte.gz: 1,000 images", "data validation PASSED"]
    for name in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz"):
        (folder / f"train-{name}").write_bytes((fixture_dir / f"train-{name}").read_bytes())
    code, out, _ = digitpipe_cli("validate", "--data", folder)
    assert code == 0
    assert out.index(f"{folder}/train-images-idx3-ubyte.gz: 1,000 images") < out.index(
        f"{folder}/t10k-images-idx3-ubyte.gz: 1,000 images")
