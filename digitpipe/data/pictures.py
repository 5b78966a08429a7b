"""A picture of one digit (a photo of paper, a drawing on a page) brought to MNIST's form, as MNIST itself was made:
grey, white ink on black, the ink's box scaled to fit 20x20 and centred by its centre of mass in 28x28.

Unlike the PNG-folder reader (digitpipe.data.images), which refuses anything that is not already 28x28 MNIST-like,
this converts: it is for a single picture a person sends, not for a dataset.
"""

from __future__ import annotations

import io

import numpy as np

from digitpipe.errors import UserError
from digitpipe.files import first_line

MAX_PIXELS = 16_000_000  # a picture's width x height, checked from its header before it is decoded
INK_BOX = 20  # MNIST's digits fit a 20x20 box ...
SIDE = 28  # ... centred by mass in 28x28
FORMATS = ("PNG", "JPEG", "MPO")  # MPO: a JPEG with a multi-picture block, as many cameras and phones write
WORKING_SIDE = 1024  # larger pictures are shrunk to this first: memory per request stays small


class PictureError(UserError):
    """A picture that cannot be read as a digit (its message is one line for the person who sent it); `status`:
    the HTTP status a server answers it with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def read_picture(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The grey levels (uint8 H x W) of a PNG or JPEG; transparency is painted on white, as on paper."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own refusal, far above ours
        raise PictureError(f"a picture over the limit of {max_pixels:,} pixels", 413) from None
    except (UnidentifiedImageError, OSError):
        raise PictureError("not a PNG or JPEG picture") from None
    with picture:
        if picture.format not in FORMATS:
            raise PictureError(f"a {picture.format} picture: send a PNG or JPEG")
        width, height = picture.size
        if width * height > max_pixels:
            raise PictureError(f"a {width}x{height} picture is over the limit of {max_pixels:,} pixels", 413)
        picture.draft("L", (WORKING_SIDE, WORKING_SIDE))  # a JPEG decodes straight at a reduced size
        try:
            picture.load()
        except (OSError, SyntaxError, ValueError) as exc:  # truncated or damaged data
            raise PictureError(f"a damaged {picture.format} picture ({first_line(exc)[:100]})") from None
        picture = ImageOps.exif_transpose(picture)  # a phone's portrait photo, upright
        picture.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)  # the digit needs 20 pixels
        if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
            white = Image.new("RGBA", picture.size, "white")
            picture = Image.alpha_composite(white, picture.convert("RGBA"))
        return np.asarray(picture.convert("L"))


def to_mnist_form(grey: np.ndarray) -> np.ndarray:
    """One digit's grey picture (uint8 H x W, any size, either polarity) as a 28x28 MNIST digit (uint8)."""
    ink = _ink(grey.astype(np.float32))
    rows, cols = np.flatnonzero(ink.max(1) > 0), np.flatnonzero(ink.max(0) > 0)
    if rows.size == 0:
        raise PictureError("no digit found: the picture is blank", 422)
    box = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    digit = _fit(box, INK_BOX)
    return _centre_by_mass(digit, SIDE)


def _ink(grey: np.ndarray) -> np.ndarray:
    """Ink as bright on black, the background at 0: dark ink on a light page is inverted (the border tells which
    is the page), and the page's own grey level is taken off so that paper is not read as faint ink."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 127:
        grey, border = 255 - grey, 255 - border
    ink = np.clip(grey - np.percentile(border, 90), 0, None)
    peak = ink.max()
    if peak < 32:  # under an eighth of the range above the page: noise, not ink
        return np.zeros_like(ink)
    ink = ink * (255 / peak)
    return np.where(ink >= 26, ink, 0)  # a tenth of the range: specks and shadows out of the ink's box


def _fit(box: np.ndarray, size: int) -> np.ndarray:
    """`box` scaled, aspect kept, so its longer side is `size` pixels (area-averaged, anti-aliased as MNIST's)."""
    from PIL import Image

    height, width = box.shape
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(box.astype(np.float32), mode="F").resize(shape, resample))


def _centre_by_mass(digit: np.ndarray, side: int) -> np.ndarray:
    """`digit` placed in a side x side black square with its centre of mass at the centre (kept inside)."""
    height, width = digit.shape
    total = digit.sum()
    cy = (digit.sum(1) @ np.arange(height)) / total
    cx = (digit.sum(0) @ np.arange(width)) / total
    top = int(np.clip(round(side / 2 - cy), 0, side - height))
    left = int(np.clip(round(side / 2 - cx), 0, side - width))
    out = np.zeros((side, side), np.float32)
    out[top : top + height, left : left + width] = digit
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
