"""Which format a path holds, told by its content (the one place that decides), and what the readers share to open
it safely: gzip transparently and with clear errors, IDX pairs found in a folder, no link out of a data folder."""

from __future__ import annotations

import contextlib
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from digitpipe.data.dataset import N_CLASSES
from digitpipe.errors import DataError
from digitpipe.files import first_line

GZIP_MAGIC = b"\x1f\x8b"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def data_format(path: Path) -> str:
    """What `path` holds, by its content: "images" (a PNG/JPEG folder), "idx" (an IDX folder or images file),
    "parquet" or "csv" (a Kaggle CSV, plain or gzipped). The one place that decides; a clear error otherwise."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or directory")
    if path.is_dir():
        return "images" if _has_images(path) else "idx"
    head = _head(path)
    if head.startswith(b"PAR1"):
        return "parquet"
    if head[:3] == b"\x00\x00\x08":  # IDX of unsigned bytes; the IDX reader checks it is an images file
        return "idx"
    if head.startswith((b"label", b"pixel0")) or ".csv" in path.suffixes:
        return "csv"
    raise DataError(path, "neither an MNIST IDX file nor a Kaggle CSV (label,pixel0..pixel783) nor Parquet "
                    "(PNG digits go in a folder)")


def check_readable(path: str | Path, part: str | None = None) -> str:
    """The format of `path` (as `data_format` tells it), refusing now what no reader could read: a missing path, an
    empty file, no known format, an IDX folder without the pair asked for. Costs a few bytes' read: a command checks
    its --data before any work, and the rows are read when the work needs them."""
    path = Path(path)
    kind = data_format(path)
    if kind == "idx" and path.is_dir():
        find_idx_pair(path, part)
    return kind


def check_protocol(folder: Path, protocol: str) -> None:
    """Refuse the standard protocol for data that has no test set of its own beside it (the t10k IDX files)."""
    if protocol == "standard" and not (Path(folder).is_dir() and "t10k" in idx_parts(Path(folder))):
        raise DataError(folder, "--protocol standard needs an MNIST IDX folder with the t10k files (the test set)")


def idx_parts(folder: Path) -> list[str]:
    """Which IDX pairs (train, t10k) `folder` holds, in that order."""
    return [part for part in ("train", "t10k") if any(Path(folder).glob(f"{part}-images*idx3-ubyte*"))]


def find_idx_pair(folder: Path, part: str | None = None) -> tuple[Path, Path | None]:
    """The images and labels IDX files of `part` (train or t10k) in `folder`, gzipped or raw; without a part,
    the train pair where there is one, else the t10k pair."""
    for name in [part] if part else ["train", "t10k"]:
        for images in sorted(Path(folder).glob(f"{name}-images*idx3-ubyte*")):
            labels = labels_beside(images)
            for path in filter(None, (images, labels)):
                check_inside(folder, path)
            return images, labels
    wanted = f"{part}-images-idx3-ubyte[.gz]" if part else "train- or t10k-images-idx3-ubyte[.gz]"
    raise DataError(folder, f"no {wanted} file in this folder")


def labels_beside(images_path: Path) -> Path | None:
    """The labels file that goes with an images file (same name, labels-idx1); None for unlabelled sets."""
    name = images_path.name.replace("images", "labels").replace("idx3", "idx1")
    candidates = [images_path.with_name(name)]
    candidates += [c.with_name(c.name + ".gz") for c in candidates] + [c.with_name(c.name.removesuffix(".gz")) for c in candidates]
    # a name without "images" in it maps onto itself: the images file is never its own labels
    return next((c for c in candidates if c.is_file() and c != images_path), None)


def check_inside(folder: Path, path: Path) -> None:
    """Refuse a file that is a symlink leading out of the data folder (a path the user did not hand us)."""
    if not path.resolve().is_relative_to(Path(folder).resolve()):
        raise DataError(path, f"is a link to {path.resolve()}, outside the data folder {folder}; refused")


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


def _has_images(folder: Path) -> bool:
    digit_dirs = [folder / str(d) for d in range(N_CLASSES) if (folder / str(d)).is_dir()]
    return any(f.suffix.lower() in IMAGE_SUFFIXES for d in [folder, *digit_dirs] for f in d.iterdir())


def _head(path: Path, size: int = 16) -> bytes:
    """The first `size` bytes of `path`, gunzipped where it is gzipped."""
    with path.open("rb") as f:
        head = f.read(size)
    if not head:
        raise DataError(path, "file is empty")
    if head.startswith(GZIP_MAGIC):
        with gzip_errors(path), gzip.open(path, "rb") as f:
            head = f.read(size)
    return head
