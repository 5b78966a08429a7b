"""Properties of the readers of `run`, `validate` and `score` (issue 35): any bytes given as a Kaggle CSV (plain or
gzipped), a Parquet table, an IDX pair or a PNG folder give digits or one UserError with a one-line message, never
another exception. Inputs are random bytes, a small valid file damaged (cut short, bytes overwritten, a valid head and
noise after it), and valid files with odd values; each is read as `run` reads it (the whole file, the first bad row an
error), as `validate` reads each IDX part, and as `score` streams it (bad rows set aside). Files are a few kilobytes,
so that each example takes milliseconds."""

from __future__ import annotations

import functools
import gzip
import io
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitpipe.data import load_dataset, read_chunks
from digitpipe.data.formats import idx_parts
from digitpipe.errors import UserError

BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PIXELS = [f"pixel{i}" for i in range(784)]
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures/mnist-1000"
MAX_MESSAGE = 400  # characters: one line a person reads, not a dump of the file


@functools.cache
def seed_rows() -> tuple[np.ndarray, np.ndarray]:
    """Three real digits and their labels: the valid files every damage starts from."""
    data = load_dataset(FIXTURE)
    return data.images[:3], data.labels[:3]


@functools.cache
def valid_csv(labelled: bool = True) -> bytes:
    images, labels = seed_rows()
    header = ",".join((["label"] if labelled else []) + PIXELS)
    rows = [",".join(([str(label)] if labelled else []) + [str(p) for p in image.ravel()])
            for image, label in zip(images, labels, strict=True)]
    return "\n".join([header, *rows, ""]).encode()


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


# --- the property ------------------------------------------------------------------------------------------------


def _one_line(error: UserError, path: Path) -> None:
    message = str(error)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) <= MAX_MESSAGE + len(str(path)) + 100, message  # + the folder a file of it is named under
    assert error.exit_code == 2, message  # a file that cannot be read is unusable input, never "the verdict is no"


def _whole(path: Path, part: str | None = None) -> None:
    """As `run` (and `validate`, part by part) reads it: a whole Dataset, or one UserError."""
    data = load_dataset(path, part)
    assert data.images.dtype == np.uint8 and data.images.shape[1:] == (28, 28)
    if data.labels is not None:
        assert data.labels.shape == (len(data),) and ((data.labels >= 0) & (data.labels <= 9)).all()


def _streamed(path: Path) -> list[np.ndarray]:
    """As `score` reads it: chunks of good rows and bad rows with one-line reasons, every row numbered once."""
    seen, images = [], []
    for chunk in read_chunks(path, 2, bad_rows="reject"):
        assert chunk.images.dtype == np.uint8 and chunk.images.shape == (len(chunk.rows), 28, 28)
        assert chunk.labels is None or ((chunk.labels >= 0) & (chunk.labels <= 9)).all()
        for row, reason in chunk.rejects:
            assert isinstance(reason, str) and reason and "\n" not in reason and len(reason) <= MAX_MESSAGE, reason
        seen += chunk.rows.tolist() + [row for row, _ in chunk.rejects]
        images.append(chunk.images)
    assert len(seen) == len(set(seen)) and all(row >= 1 for row in seen), seen
    return images


def _data_or_one_error(path: Path) -> None:
    """Every reader of `path` gives digits or one UserError; what a whole read accepts, the scorer reads alike."""
    parts = idx_parts(path) if path.is_dir() else []
    whole = _outcome(lambda: _whole(path), path)
    for part in parts:
        _outcome(functools.partial(_whole, path, part), path)
    streamed = _outcome(lambda: _streamed(path), path)
    if not isinstance(whole, UserError):
        assert not isinstance(streamed, UserError), f"read whole, but scoring it failed: {streamed}"


def _outcome(read: Callable[[], object], path: Path) -> object:
    try:
        return read() or True
    except UserError as error:
        _one_line(error, path)
        return error


def _written(files: dict[str, bytes | None]) -> Callable[[Callable[[Path], None]], None]:
    """`check(root)` with `files` (relative path -> bytes; None for a folder) written under a fresh root."""
    def run(check: Callable[[Path], None], inside: str = "") -> None:
        with tempfile.TemporaryDirectory(prefix="digitpipe-prop-") as tmp:
            root = Path(tmp)
            for name, content in files.items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                if content is None:
                    (root / name).mkdir(exist_ok=True)
                else:
                    (root / name).write_bytes(content)
            check(root / inside if inside else root)
    return run


# --- damage ------------------------------------------------------------------------------------------------------


@st.composite
def damaged(draw, valid: bytes | Callable[[], bytes]) -> bytes:
    """`valid` (or what it returns) cut short, with bytes overwritten, or its head followed by noise."""
    valid = valid() if callable(valid) else valid  # a function: its name, not a file's bytes, in the strategy's repr
    how = draw(st.sampled_from(["cut", "overwrite", "head and noise", "noise inserted"]))
    at = draw(st.integers(0, len(valid)))
    if how == "cut":
        return valid[:at]
    if how == "head and noise":
        return valid[:at] + draw(st.binary(min_size=1, max_size=512))
    if how == "noise inserted":
        return valid[:at] + draw(st.binary(min_size=1, max_size=64)) + valid[at:]
    data = bytearray(valid)
    for where in draw(st.lists(st.integers(0, max(0, len(valid) - 1)), min_size=1, max_size=8)):
        if data:
            data[where] = draw(st.integers(0, 255))
    return bytes(data)


ODD_FIELDS = st.one_of(
    st.sampled_from([b"", b" 1", b"+3", b"1_0", b"1e3", b"0x10", b"-0", b"-1", b"256", b'"5"', b"nan", b"3.0",
                     b"99999999999999999999999", b"-99999999999999999999999", b"9" * 5000, b"\xef\xbb\xbf1",
                     b"\xd9\xa3", b"1\r", b'"1\n2"', b"0,0", b"\x00"]),
    st.binary(max_size=8))


@st.composite
def edited_csv(draw, valid: bytes) -> bytes:
    """A valid CSV with one field of a line (the header or a row) replaced by an odd value, a line dropped or
    doubled, or CRLF line ends."""
    lines = valid.split(b"\n")
    i = draw(st.integers(0, len(lines) - 2))
    how = draw(st.sampled_from(["field", "field", "drop", "double", "crlf", "blank"]))
    if how == "field":
        fields = lines[i].split(b",")
        fields[draw(st.integers(0, len(fields) - 1))] = draw(ODD_FIELDS)
        lines[i] = b",".join(fields)
    elif how == "drop":
        del lines[i]
    elif how == "double":
        lines.insert(i, lines[i])
    elif how == "blank":
        lines.insert(i + 1, draw(st.sampled_from([b"", b" ", b"\r", b","])))
    else:
        return b"\r\n".join(lines)
    return b"\n".join(lines)


@st.composite
def csv_files(draw) -> dict[str, bytes]:
    valid = valid_csv(draw(st.booleans()))
    text = draw(st.one_of(st.binary(max_size=1024), damaged(valid), edited_csv(valid)))
    if draw(st.booleans()):
        return {"digits.csv": text}
    packed = gzip.compress(text, mtime=0)
    return {"digits.csv.gz": draw(st.one_of(st.just(packed), damaged(packed)))}


@BOUNDED
@example({"digits.csv": valid_csv().replace(b"\n0,", b"\n99999999999999999999999,", 1)})  # past int64
@example({"digits.csv": b"label," + b"x" * 60_000 + b"\n"})  # a header column's name as long as a header
@example({"digits.csv": valid_csv().replace(b"\n6,", b"\n,", 1)})  # no label: was read as a label of -2**63
@given(csv_files())
def test_any_csv_gives_digits_or_one_error(files):
    name = next(iter(files))
    _written(files)(_data_or_one_error, name)


# --- Parquet -----------------------------------------------------------------------------------------------------


COLUMN_TYPES = {
    "int8": (pa.int8(), st.integers(-128, 127)),
    "uint8": (pa.uint8(), st.integers(0, 255)),
    "int64": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uint64": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float32": (pa.float32(), st.floats(width=32)),
    "float64": (pa.float64(), st.floats()),
    "bool": (pa.bool_(), st.booleans()),
    "string": (pa.string(), st.text(max_size=4)),
    "null": (pa.null(), st.none()),
}


@st.composite
def parquet_tables(draw) -> bytes:
    """A table of the Kaggle columns (label or not, a name perhaps changed) whose one column holds values of any
    type, missing ones included."""
    images, labels = seed_rows()
    n = draw(st.integers(0, 3))
    columns = {"label": pa.array(labels[:n].astype(np.int64))} if draw(st.booleans()) else {}
    columns |= {name: pa.array(images[:n].reshape(n, 784)[:, i]) for i, name in enumerate(PIXELS)}
    name = draw(st.sampled_from(list(columns)[:2] + ["pixel783"]))
    kind, values = COLUMN_TYPES[draw(st.sampled_from(list(COLUMN_TYPES)))]
    cells = draw(st.lists(st.one_of(values, st.none()) if kind != pa.null() else st.none(), min_size=n, max_size=n))
    columns[name] = pa.array(cells, kind)
    if draw(st.integers(0, 5)) == 0:
        columns[draw(st.sampled_from(["pixel784", "Label", "pixel0 "]))] = columns.pop(name)
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    return buffer.getvalue()


@functools.cache
def valid_parquet() -> bytes:
    images, labels = seed_rows()
    buffer = io.BytesIO()
    pq.write_table(pa.table({"label": labels, **dict(zip(PIXELS, images.reshape(3, 784).T, strict=True))}), buffer)
    return buffer.getvalue()


@BOUNDED
@example(b"PAR1")
@example(valid_parquet().replace(b"pixel250", b"\x80ixel250", 1))  # a column name not UTF-8: UnicodeDecodeError
@given(st.one_of(parquet_tables(), st.builds(lambda b: b"PAR1" + b, st.binary(max_size=512)),
                 damaged(valid_parquet)))
def test_any_parquet_gives_digits_or_one_error(data):
    _written({"digits.parquet": data})(_data_or_one_error, "digits.parquet")


def test_a_parquet_label_past_int64_is_named_as_it_is(tmp_path):
    """It was cast to int64 first: 1e300 was said as -9223372036854775808, 2**64 - 1 as -1."""
    images, _ = seed_rows()
    columns = dict(zip(PIXELS, images.reshape(3, 784).T, strict=True))
    for labels, said in [(pa.array([1e300, 3.0, 4.0]), "1e+300"), (pa.array([2**64 - 1, 3, 4], pa.uint64()),
                                                                   "18446744073709551615")]:
        pq.write_table(pa.table({"label": labels, **columns}), tmp_path / "digits.parquet")
        chunk = read_chunks(tmp_path / "digits.parquet", 10, bad_rows="reject")
        assert [c.rejects for c in chunk] == [[(1, f"label = {said} is outside 0..9")]]


# --- IDX ---------------------------------------------------------------------------------------------------------


@st.composite
def idx_files(draw, magic: int, valid: bytes) -> bytes:
    """An IDX file: `valid` damaged, or a header of any count and shape (the right magic or not) and any bytes."""
    if draw(st.booleans()):
        return draw(damaged(valid))
    ndim = 3 if magic == 0x803 else 1
    dims = [draw(st.sampled_from([0, 1, 2, 3, 2**31, 2**32 - 1]) | st.integers(0, 2**32 - 1))]
    dims += [draw(st.sampled_from([28, 28, 27, 0, 2**32 - 1])) for _ in range(ndim - 1)]
    head = struct.pack(">I", draw(st.sampled_from([magic, magic, 0x801, 0x803, 0x802, 0x0C03]))) + struct.pack(
        f">{ndim}I", *dims)
    return head + draw(st.binary(max_size=3 * 784 + 8))


@st.composite
def idx_folders(draw) -> dict[str, bytes]:
    images, labels = seed_rows()
    files = {}
    for part in draw(st.lists(st.sampled_from(["train", "t10k"]), min_size=1, max_size=2, unique=True)):
        for kind, magic, array in (("images-idx3", 0x803, images), ("labels-idx1", 0x801, labels)):
            if kind.startswith("labels") and draw(st.integers(0, 4)) == 0:
                continue  # no labels: unlabelled data, for scoring
            data = draw(st.one_of(st.just(idx_bytes(array, magic)), idx_files(magic, idx_bytes(array, magic))))
            gz = draw(st.booleans())
            if gz:
                data = gzip.compress(data, mtime=0)
                data = draw(st.one_of(st.just(data), damaged(data)))
            files[f"{part}-{kind}-ubyte{'.gz' if gz else ''}"] = data
    return files


@BOUNDED
@example({"train-images-idx3-ubyte": idx_bytes(np.zeros((0, 28, 28)), 0x803)}, False)  # a header and no images
@given(idx_folders(), st.booleans())
def test_any_idx_pair_gives_digits_or_one_error(files, the_file):
    images = next((name for name in files if "images" in name), None)
    _written(files)(_data_or_one_error, images if the_file and images else "")


def test_an_idx_images_file_named_without_images_is_not_its_own_labels(tmp_path):
    """labels_beside mapped such a name onto itself: the images were read as a labels file and refused."""
    images, _ = seed_rows()
    (tmp_path / "digits.idx").write_bytes(idx_bytes(images, 0x803))
    data = load_dataset(tmp_path / "digits.idx")
    assert data.labels is None and np.array_equal(data.images, images)


def test_too_few_images_to_split_is_one_data_error():
    """scikit-learn's ValueError (a part smaller than the ten digits) was a traceback."""
    import pytest

    from digitpipe.data import Dataset, split_dataset
    from digitpipe.errors import DataError

    data = load_dataset(FIXTURE)
    few = Dataset(*(np.concatenate([a[data.labels == d][:12] for d in range(10)]) for a in (data.images, data.labels)),
                  source="few.csv")
    with pytest.raises(DataError, match=r"^few.csv: 90 images are too few to split 0.1 off as the validation part"):
        split_dataset(few)


# --- PNG folders -------------------------------------------------------------------------------------------------


@functools.cache
def valid_png() -> bytes:
    return _saved(Image.fromarray(seed_rows()[0][0]), "PNG")


def _saved(picture: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format)
    return buffer.getvalue()


@st.composite
def other_pictures(draw) -> bytes:
    """A real picture of any size, mode and format (under a .png name, as a careless export might write it)."""
    size = (draw(st.sampled_from([28, 1, 27, 29, 56])), draw(st.sampled_from([28, 1, 30])))
    mode = draw(st.sampled_from(["L", "L", "1", "P", "RGB", "RGBA", "I;16", "LA"]))
    format = draw(st.sampled_from(["PNG", "PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"]))
    picture = Image.new(mode, size, draw(st.integers(0, 255)) if mode in ("L", "1", "P", "I;16") else "white")
    try:
        return _saved(picture, format)
    except (OSError, KeyError, ValueError):  # a mode that format cannot hold: as L
        return _saved(picture.convert("L"), format)


CONTENTS = st.one_of(st.just(None), st.binary(max_size=64), st.builds(valid_png),
                     damaged(valid_png), other_pictures())
NAMES = st.one_of(st.sampled_from(["0.png", "2.png", "10.png", "007.png", "a.PNG", "x.jpg", "y.jpeg", "notes.txt",
                                   ".png", "1.png.png"]),
                  st.builds("{}.png".format, st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=6)))
FOLDERS = st.sampled_from(["", "0", "3", "9", "10", "x", "03"])


@st.composite
def png_folders(draw) -> dict[str, bytes | None]:
    entries = draw(st.lists(st.tuples(FOLDERS, NAMES, CONTENTS), min_size=1, max_size=5))
    files: dict[str, bytes | None] = {}
    for folder, name, content in entries:
        path = f"{folder}/{name}" if folder else name
        if path not in files and not any(p.startswith(path + "/") or path.startswith(p + "/") for p in files):
            files[path] = content
    return files


@BOUNDED
@example({"3/0.png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"})  # a PNG header cut inside its first chunk
@example({"0.png": valid_png()[:151] + b"\x001 \x00\x87" + valid_png()[151:]})  # "broken PNG file": SyntaxError
@given(png_folders())
def test_any_png_folder_gives_digits_or_one_error(files):
    _written(files)(_data_or_one_error)
