"""Readers for MNIST IDX files (gzipped or raw) and Kaggle "Digit Recognizer" CSVs, with format detection;
and the IDX writer (samples, test files, the standard test set rebuilt by bench/standard_mnist.py)."""

from __future__ import annotations

import contextlib
import gzip
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from digitpipe.data.dataset import IMAGE_SHAPE, N_CLASSES, N_PIXELS, Dataset
from digitpipe.errors import DataError
from digitpipe.files import atomic_path, first_line

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
GZIP_MAGIC = b"\x1f\x8b"
PIXEL_COLUMNS = [f"pixel{i}" for i in range(N_PIXELS)]
MAX_IDX_BYTES = 1 << 31  # 2 GiB of pixels (~2.7 M images): far above MNIST (47 MB), far below a bomb
MAX_CSV_BYTES = 4 << 30  # 4 GiB of CSV text (~1.5 M digits); the streaming scorer has no such limit


def load_dataset(path: str | Path, part: str | None = None) -> Dataset:
    """Read digits from an IDX folder (its `part`, train or t10k; by default train where present, else t10k), an
    IDX images file, a Kaggle CSV, a Parquet table or a PNG folder, whichever `path` is."""
    path = Path(path)
    kind = data_format(path)
    if kind == "images":
        return read_image_folder(path)
    if kind == "idx":
        return read_idx_pair(*(find_idx_pair(path, part) if path.is_dir() else (path, labels_beside(path))))
    return read_parquet(path) if kind == "parquet" else read_kaggle_csv(path)


def data_format(path: Path) -> str:
    """What `path` holds, by its content: "images" (a PNG/JPEG folder), "idx" (an IDX folder or images file),
    "parquet" or "csv" (a Kaggle CSV, plain or gzipped). The one place that decides; a clear error otherwise."""
    if not path.exists():
        raise DataError(path, "no such file or directory")
    if path.is_dir():
        return "images" if _has_images(path) else "idx"
    head = _head(path)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head[:3] == b"\x00\x00\x08":  # IDX of unsigned bytes; read_idx checks it is an images file
        return "idx"
    if head.startswith((b"label", b"pixel0")) or ".csv" in path.suffixes:
        return "csv"
    raise DataError(path, "neither an MNIST IDX file nor a Kaggle CSV (label,pixel0..pixel783) nor Parquet "
                    "(PNG digits go in a folder)")


def idx_parts(folder: Path) -> list[str]:
    """Which IDX pairs (train, t10k) `folder` holds, in that order."""
    return [part for part in ("train", "t10k") if any(folder.glob(f"{part}-images*idx3-ubyte*"))]


def find_idx_pair(folder: Path, part: str | None = None) -> tuple[Path, Path | None]:
    """The images and labels IDX files of `part` (train or t10k) in `folder`, gzipped or raw; without a part,
    the train pair where there is one, else the t10k pair."""
    for name in [part] if part else ["train", "t10k"]:
        for images in sorted(folder.glob(f"{name}-images*idx3-ubyte*")):
            labels = labels_beside(images)
            for path in filter(None, (images, labels)):
                _check_inside(folder, path)
            return images, labels
    wanted = f"{part}-images-idx3-ubyte[.gz]" if part else "train- or t10k-images-idx3-ubyte[.gz]"
    raise DataError(folder, f"no {wanted} file in this folder")


def read_idx_pair(images_path: Path, labels_path: Path | None) -> Dataset:
    """Images and (if given) labels from two IDX files; their counts must agree."""
    images = read_idx(images_path, IDX_IMAGES_MAGIC)
    labels = None if labels_path is None else read_idx(labels_path, IDX_LABELS_MAGIC)
    if labels is not None:
        if len(labels) != len(images):
            raise DataError(labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}")
        _check_labels(labels_path, labels)
        labels = labels.astype(np.int64)
    return Dataset(images, labels, source=str(images_path))


def read_idx(path: Path, magic: int) -> np.ndarray:
    """One IDX array (images N x 28 x 28 or labels N), checking magic, shape and length.

    Reads the header first and then exactly the bytes it promises, never more than MAX_IDX_BYTES: a header
    claiming 2^31 images or a gzip bomb is refused without inflating it.
    """
    try:
        with gzip_errors(path), open_maybe_gzip(path) as f:
            dims = read_idx_header(f, path, magic)
            expected = int(np.prod(dims, dtype=np.int64))
            if expected > MAX_IDX_BYTES:
                raise DataError(path, f"header claims {dims[0]:,} items ({expected / 2**30:.1f} GiB), above the "
                                      f"{MAX_IDX_BYTES / 2**30:.0f} GiB limit")
            data = f.read(expected + 1)  # one byte more tells "too long" from "just right"
    except OSError as exc:
        raise DataError(path, f"cannot read ({first_line(exc)})") from None
    if len(data) != expected:
        found = "more" if len(data) > expected else f"{len(data)} bytes"
        raise DataError(path, f"header promises {expected} bytes of data, file holds {found}")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims).copy()  # writable, as torch.from_numpy wants


def read_idx_header(f: BinaryIO, path: Path, magic: int) -> tuple[int, ...]:
    """The dimensions from an IDX header at `f`'s start, checking the magic and the 28x28 image shape."""
    head = f.read(4)
    if len(head) < 4 or struct.unpack(">I", head)[0] != magic:
        kind = "images (magic 0x00000803)" if magic == IDX_IMAGES_MAGIC else "labels (magic 0x00000801)"
        raise DataError(path, f"not an IDX {kind} file")
    ndim = head[3]
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) != 4 * ndim:
        raise DataError(path, "truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if ndim == 3 and dims[1:] != IMAGE_SHAPE:
        raise DataError(path, f"images are {dims[1]}x{dims[2]}, expected 28x28")
    return dims


def write_idx(path: Path, array: np.ndarray, magic: int, compress: bool = True) -> Path:
    """`array` as an IDX file of unsigned bytes (gzipped unless told not to), written under a temporary name."""
    payload = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    if compress:
        payload = gzip.compress(payload, mtime=0)  # mtime=0: the same array gives the same bytes
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


@contextlib.contextmanager
def gzip_errors(path: Path) -> Iterator[None]:
    """Turn a broken gzip stream met while reading `path` into one clear DataError."""
    try:
        yield
    except EOFError:
        raise DataError(path, "truncated gzip stream (the file ends before its compressed data does)") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(path, f"corrupt gzip stream ({first_line(exc)})") from None


def open_maybe_gzip(path: Path) -> BinaryIO:
    """A binary reader of `path`, transparently gunzipping when it starts with the gzip magic."""
    with path.open("rb") as f:
        gzipped = f.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gzipped else path.open("rb")


def read_kaggle_csv(path: Path) -> Dataset:
    """A Kaggle Digit Recognizer CSV: `label,pixel0..pixel783` (train) or `pixel0..pixel783` (test)."""
    with gzip_errors(path), open_maybe_gzip(path) as f:  # a gigabyte of garbage is refused at its first line
        check_columns(path, read_csv_header(f, path))
    text = _read_bounded(path, MAX_CSV_BYTES)  # a .csv.gz bomb stops at the limit, not at memory's end
    try:
        frame = pd.read_csv(io.BytesIO(text), engine="pyarrow")  # ~10x faster than the C engine on 785 columns
    except (pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise DataError(path, f"cannot parse as CSV ({first_line(exc)})") from None
    return _frame_to_dataset(path, frame)


def _read_bounded(path: Path, limit: int) -> bytes:
    """The whole (gunzipped) file, refusing one that holds or inflates past `limit` bytes."""
    with gzip_errors(path), open_maybe_gzip(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(path, f"holds or inflates past {limit / 2**30:.1f} GiB; refused")
    return data


def read_csv_header(f: BinaryIO, path: Path, limit: int = 1 << 16) -> list[str]:
    """The column names on `f`'s next line, reading at most `limit` bytes (the real header is ~8 KB)."""
    line = f.readline(limit)
    if not line:
        raise DataError(path, "file is empty")
    if not line.endswith(b"\n") and len(line) >= limit:
        raise DataError(path, f"first line is longer than {limit // 1024} KB: not a Kaggle CSV header")
    return line.rstrip(b"\r\n").decode("utf-8", "replace").split(",")


def _frame_to_dataset(path: Path, frame: pd.DataFrame) -> Dataset:
    """Kaggle-layout columns into a Dataset, refusing anything that is not integer pixels and labels."""
    check_columns(path, [str(c) for c in frame.columns])
    if frame.empty:
        raise DataError(path, "the table has a header but no rows")
    labels = frame.pop("label").to_numpy() if "label" in frame.columns else None
    pixels = _checked_ints(path, frame, 0, 255, "pixel")
    if labels is not None:
        labels = _checked_ints(path, pd.DataFrame({"label": labels}), 0, N_CLASSES - 1, "label")[:, 0]
    images = pixels.astype(np.uint8).reshape(-1, *IMAGE_SHAPE)
    return Dataset(images, None if labels is None else labels.astype(np.int64), source=str(path))


def read_parquet(path: Path) -> Dataset:
    """A Parquet table with the Kaggle columns: `label` (optional) and integer `pixel0..pixel783`."""
    import pyarrow.parquet as pq

    try:
        frame = pq.read_table(path).to_pandas()
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise DataError(path, f"cannot read as Parquet ({first_line(exc)})") from None
    return _frame_to_dataset(path, frame)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def read_image_folder(folder: Path) -> Dataset:
    """PNG/JPEG digits: `folder/<label>/*.png` (labelled) or images directly in `folder` (unlabelled, for scoring).

    Images must already be 28x28 grayscale, white ink on black like MNIST; others are refused, not converted,
    because a silent resize or colour conversion would change what the model sees.
    """
    labelled = sorted(p for p in folder.iterdir() if p.is_dir() and p.name in {str(d) for d in range(N_CLASSES)})
    files = [(f, int(d.name)) for d in labelled for f in sorted(d.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not labelled:
        files = [(f, -1) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    images = np.empty((len(files), *IMAGE_SHAPE), np.uint8)
    for i, (file, _) in enumerate(files):
        _check_inside(folder, file)
        images[i] = _read_digit_image(file)
    labels = np.array([label for _, label in files], np.int64) if labelled else None
    return Dataset(images, labels, source=str(folder))


def _read_digit_image(file: Path) -> np.ndarray:
    """One 28x28 grayscale image, its size and mode checked from the header before any pixel is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow only warns below twice MAX_IMAGE_PIXELS: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(file, f"refused, not decoded: a decompression bomb ({first_line(exc)})") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(file, f"not a readable image ({first_line(exc)})") from None
    with image:
        if image.size != IMAGE_SHAPE or image.mode != "L":
            raise DataError(file, f"{image.size[0]}x{image.size[1]} {image.mode} image refused "
                                  "(not converted): digitpipe needs 28x28 grayscale (mode L)")
        try:
            return np.asarray(image)
        except OSError as exc:  # a truncated or damaged file fails while decoding
            raise DataError(file, f"not a readable image ({first_line(exc)})") from None


def _check_inside(folder: Path, path: Path) -> None:
    """Refuse a file that is a symlink leading out of the data folder (a path the user did not hand us)."""
    if not path.resolve().is_relative_to(folder.resolve()):
        raise DataError(path, f"is a link to {path.resolve()}, outside the data folder {folder}; refused")


def _has_images(folder: Path) -> bool:
    digit_dirs = [folder / str(d) for d in range(N_CLASSES) if (folder / str(d)).is_dir()]
    return any(f.suffix.lower() in IMAGE_SUFFIXES for d in [folder, *digit_dirs] for f in d.iterdir())


def check_columns(path: Path, columns: list[str]) -> None:
    expected = PIXEL_COLUMNS if columns[:1] != ["label"] else ["label", *PIXEL_COLUMNS]
    if columns == expected:
        return
    unexpected = [c for c in columns if c not in expected]
    missing = [c for c in expected if c not in columns]
    detail = "; ".join(
        part
        for part in (
            f"unexpected column(s) {', '.join(map(repr, unexpected[:3]))}" if unexpected else "",
            f"missing column(s) {', '.join(missing[:3])}" if missing else "",
        )
        if part
    )
    raise DataError(path, f"header must be [label,]pixel0..pixel783: {detail or 'columns out of order'}")


def _checked_ints(path: Path, frame: pd.DataFrame, low: int, high: int, what: str) -> np.ndarray:
    """The frame as an int matrix, refusing text, floats, blanks and values outside [low, high]."""
    for name, dtype in frame.dtypes.items():
        if not pd.api.types.is_integer_dtype(dtype):
            row = _first_bad_row(frame[name])
            raise DataError(path, f"column {name} holds a non-integer value {row} (expected {what}s {low}..{high})")
    values = frame.to_numpy()
    bad = (values < low) | (values > high)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(path, f"row {row + 1}: {out_of_range(frame.columns[col], values[row, col], low, high)}")
    return values


def out_of_range(column: str, value: int, low: int, high: int) -> str:
    """The one wording of a value outside its range: the readers' refusal and the streaming scorer's reject reason."""
    return f"{column} = {value} is outside {low}..{high}"


def _first_bad_row(column: pd.Series) -> str:
    numeric = pd.to_numeric(column, errors="coerce")
    bad = numeric.isna() | (numeric != numeric.round())
    if not bad.any():
        return ""
    row = int(np.flatnonzero(bad.to_numpy())[0])
    return f"at row {row + 1} ({column.iloc[row]!r})"


def _check_labels(path: Path, labels: np.ndarray) -> None:
    if len(labels) and labels.max() >= N_CLASSES:
        raise DataError(path, f"label {int(labels.max())} is outside 0..9")


def labels_beside(images_path: Path) -> Path | None:
    """The labels file that goes with an images file (same name, labels-idx1); None for unlabelled sets."""
    name = images_path.name.replace("images", "labels").replace("idx3", "idx1")
    candidates = [images_path.with_name(name)]
    candidates += [c.with_name(c.name + ".gz") for c in candidates] + [c.with_name(c.name.removesuffix(".gz")) for c in candidates]
    return next((c for c in candidates if c.is_file()), None)


def _head(path: Path, size: int = 16) -> bytes:
    with path.open("rb") as f:
        head = f.read(size)
    if not head:
        raise DataError(path, "file is empty")
    if head.startswith(GZIP_MAGIC):
        with gzip_errors(path), gzip.open(path, "rb") as f:
            head = f.read(size)
    return head
