"""PNG/JPEG digits in a folder: `folder/<label>/*.png` (labelled) or images directly in `folder` (unlabelled, for
scoring), read in chunks of files. Row N is the N-th file in one fixed order (`image_files`): by file name with
numbers compared as numbers, across the label folders, so that a folder written as `<label>/<row>.png` reads back in
its rows' order and has the digest and split of the same rows in any other format.

Images must already be 28x28 grayscale, white ink on black like MNIST; others are bad rows, not converted, because a
silent resize or colour conversion would change what the model sees. A decompression bomb or a link out of the
folder refuses the whole folder under either policy: those are attacks, not bad rows.
"""

from __future__ import annotations

import re
import struct
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from digitpipe.data.chunks import Chunk
from digitpipe.data.dataset import IMAGE_SHAPE, N_CLASSES
from digitpipe.data.formats import IMAGE_SUFFIXES, check_inside
from digitpipe.errors import DataError
from digitpipe.files import first_line


# What Pillow raises for a damaged file besides OSError: "broken PNG file" (a chunk's name or length overwritten), a
# field too short to unpack, a value out of its range
DAMAGED = (SyntaxError, ValueError, struct.error)


def image_chunks(folder: Path, chunk_rows: int) -> Iterator[Chunk]:
    """Chunks of a PNG/JPEG folder; an unreadable image, or one of another size or mode, is a bad row."""
    files, labelled = image_files(folder)
    for start in range(0, len(files), chunk_rows):
        rows, images, rejects = [], [], []
        for row, (file, _) in enumerate(files[start : start + chunk_rows], start=start + 1):
            check_inside(folder, file)
            image = _read_digit_image(file)
            if isinstance(image, str):
                rejects.append((row, f"{file.relative_to(folder)}: {image}"))
            else:
                rows.append(row)
                images.append(image)
        labels = np.array([files[r - 1][1] for r in rows], np.int64) if labelled else None
        stacked = np.stack(images) if images else np.zeros((0, *IMAGE_SHAPE), np.uint8)
        yield Chunk(np.array(rows, np.int64), stacked, labels, rejects)


def image_files(folder: Path) -> tuple[list[tuple[Path, int]], bool]:
    """The image files of `folder` with their labels (-1 where unlabelled), and whether it is labelled, in reading
    order: by file name across the label folders, numbers compared as numbers ("2.png" before "10.png"), a name
    found in several label folders in the labels' order."""
    digits = {str(d) for d in range(N_CLASSES)}
    labelled = [p for p in folder.iterdir() if p.is_dir() and p.name in digits]
    found = [(f, int(d.name)) for d in labelled for f in d.iterdir()] if labelled else [
        (f, -1) for f in folder.iterdir()]
    files = [(f, label) for f, label in found if f.suffix.lower() in IMAGE_SUFFIXES]
    # Row order is what the digest and the seeded split depend on: the row numbers a folder's names carry, not
    # the label folders, must set it, or the same digits as IDX and as PNG would be two datasets.
    return sorted(files, key=lambda item: (natural_key(item[0].name), item[1], item[0].name)), bool(labelled)


def natural_key(name: str) -> tuple:
    """`name` as text and numbers alternating, the numbers as integers: "2.png" sorts before "10.png", and a
    zero-padded name where its unpadded number would."""
    parts = re.split(r"([0-9]+)", name)  # text at even places, digit runs at odd ones: each place compares alike
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts))


def _read_digit_image(file: Path) -> np.ndarray | str:
    """One 28x28 grayscale image, or why it is not one; its size and mode are checked from the header before any
    pixel is decoded, and a decompression bomb is a DataError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow only warns below twice MAX_IMAGE_PIXELS: refuse those too
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(file)  # reads the header only
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(file, f"refused, not decoded: a decompression bomb ({first_line(exc)})") from None
    except (UnidentifiedImageError, OSError, *DAMAGED) as exc:
        return f"not a readable image ({first_line(exc)})"
    with image:
        if image.size != IMAGE_SHAPE or image.mode != "L":
            return (f"{image.size[0]}x{image.size[1]} {image.mode} image refused (not converted): digitpipe needs "
                    "28x28 grayscale (mode L)")
        try:
            return np.asarray(image)
        except (OSError, *DAMAGED) as exc:  # a truncated or damaged file fails while decoding
            return f"not a readable image ({first_line(exc)})"
