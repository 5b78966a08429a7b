"""A picture of one digit (a photo of paper, a drawing on a page, chalk on a board) brought to MNIST's form, as MNIST
itself was made: grey, white ink on black, the ink's box scaled to fit 20x20 and centred by its centre of mass in 28x28.

The ink is told from the page by contrast, not by a fixed grey: the page's level is estimated across the picture (a
shadow, a dim photo, coloured paper are taken off), the page is the class of grey the border belongs to, and Otsu's
threshold between the two classes finds the ink's core. Colour pictures are read in their clearest channel.

Unlike the PNG-folder reader (digitpipe.data.images), which refuses anything that is not already 28x28 MNIST-like,
this converts: it is for a single picture a person sends, not for a dataset.
"""

from __future__ import annotations

import io
import struct

import numpy as np

from digitpipe.errors import UserError
from digitpipe.files import first_line

MAX_PIXELS = 16_000_000  # a picture's width x height, checked from its header before it is decoded
INK_BOX = 20  # MNIST's digits fit a 20x20 box ...
SIDE = 28  # ... centred by mass in 28x28
FORMATS = ("PNG", "JPEG", "MPO")  # MPO: a JPEG with a multi-picture block, as many cameras and phones write
WORKING_SIDE = 1024  # larger pictures are shrunk to this first: memory per request stays small
ANALYSIS_SIDE = 384  # the ink is looked for at most this size: a 20x20 box needs far less, and averaging calms noise
COARSE_SIDE = 32  # the page's light is estimated on a grid this size: shadows are broad, strokes are narrow
DARKEST_PAGE = 16  # grey: below this a page's light cannot be measured (chalk on black keeps its own contrast)
MIN_CONTRAST = 16  # grey levels between the ink's core and the page: less is a stain, not a digit
MIN_NOISE_RATIO = 6  # the ink's contrast over the page's noise: sensor noise alone, split in two by Otsu, gives 2.5
EDGE = 0.1  # of the ink's level: fainter pixels are the page (as before the contrast reading: MNIST's soft edges)


class PictureError(UserError):
    """A picture that cannot be read as a digit (its message is one line for the person who sent it); `status`:
    the HTTP status a server answers it with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def read_picture(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The grey levels (uint8 H x W) of a PNG or JPEG, from its clearest channel; transparency is painted white."""
    from PIL import Image, ImageOps

    picture = _open(data, max_pixels)
    with picture:
        picture.draft(None, (WORKING_SIDE, WORKING_SIDE))  # a JPEG decodes straight at a reduced size, in colour
        try:
            picture.load()
            picture = ImageOps.exif_transpose(picture)  # a phone's portrait photo, upright
        except (OSError, SyntaxError, ValueError, struct.error) as exc:  # truncated data, a damaged EXIF block
            raise PictureError(f"a damaged {picture.format} picture ({first_line(exc, 100)})") from None
        picture = _eight_bit(picture)
        picture.thumbnail((WORKING_SIDE, WORKING_SIDE), Image.Resampling.BOX)  # the digit needs 20 pixels
        if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
            white = Image.new("RGBA", picture.size, "white")
            picture = Image.alpha_composite(white, picture.convert("RGBA"))
        return _clearest_channel(picture)


def _open(data: bytes, max_pixels: int):
    """The picture's header, refused here if it is not a PNG or JPEG or has too many pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        picture = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError:  # Pillow's own refusal, far above ours
        raise PictureError(f"a picture over the limit of {max_pixels:,} pixels", 413) from None
    except (UnidentifiedImageError, OSError):
        raise PictureError("not a PNG or JPEG picture") from None
    except (SyntaxError, ValueError, struct.error) as exc:  # a damaged header: a text chunk too large to unpack, ...
        raise PictureError(f"a damaged picture ({first_line(exc, 100)})") from None
    if picture.format not in FORMATS:
        picture.close()
        raise PictureError(f"a {picture.format} picture: send a PNG or JPEG")
    width, height = picture.size
    if width * height > max_pixels:
        picture.close()
        raise PictureError(f"a {width}x{height} picture is over the limit of {max_pixels:,} pixels", 413)
    return picture


def _eight_bit(picture):
    """`picture` with 8 bits a channel. Pillow's own conversion of 16-bit grey (modes I;16, I;16B, I) clips at 255, so
    a white page turns white ink and all: the high byte keeps every level (within one of level / 257). A transparent
    grey is painted white here, where its 16-bit key is known. (Pillow opens 16-bit colour as 8-bit itself.)"""
    from PIL import Image

    if not picture.mode.startswith("I"):
        return picture
    levels = np.asarray(picture)
    if levels.dtype != np.uint16:  # mode I holds 32-bit integers
        levels = np.clip(levels, 0, 65535)
    grey = (levels >> 8).astype(np.uint8)
    key = picture.info.get("transparency")
    if isinstance(key, int):
        grey[levels == key] = 255
    return Image.fromarray(grey)


def _clearest_channel(picture) -> np.ndarray:
    """The picture's luminance, or the red, green or blue channel where two levels (ink and page) lie clearly further
    apart by Otsu's measure: dark ink on red paper is dark on light in red, dark on dark in luminance."""
    luminance = np.asarray(picture.convert("L"))
    if picture.mode in ("1", "L"):
        return luminance
    rgb = np.asarray(picture.convert("RGB"))
    step = max(1, max(luminance.shape) // 256)  # a sample tells the channels apart as well as every pixel
    channels = [luminance, rgb[..., 0], rgb[..., 1], rgb[..., 2]]
    spread = [_otsu(channel[::step, ::step].astype(np.float32))[1] for channel in channels]
    best = int(np.argmax(spread))
    if spread[best] <= 1.25 * spread[0]:  # a grey picture's channels differ by JPEG's colour noise alone
        return luminance
    return np.ascontiguousarray(channels[best])


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
    """Ink as bright on black (0-255), the page at 0, kept near the ink's core; all 0 where nothing stands out of the
    page. Contrast is counted as a share of the page's local light: a shadow dims ink and page alike."""
    picture = _shrink(grey, ANALYSIS_SIDE)
    page, sign = _page(picture)
    light = np.maximum(page, DARKEST_PAGE)
    relative = sign * (picture - page) / light
    smooth = _local_mean(relative, 3)  # the decisions on a calmer picture than the values
    core = smooth > _otsu(smooth)[0]
    if not _stands_out(relative * light, smooth, core):
        return np.zeros_like(picture)
    rows, cols = np.flatnonzero(core.any(1)), np.flatnonzero(core.any(0))
    scale = max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) / INK_BOX  # the digit's size in MNIST's pixels
    near = _box_sum(core, 4 * int(np.ceil(scale)) + 3) > 0.5  # two such pixels around the core: soft edges, no specks
    return np.where(near, _soft_ink(relative, light, core, scale), 0)


def _stands_out(contrast: np.ndarray, smooth: np.ndarray, core: np.ndarray) -> bool:
    """Whether the core (Otsu's brighter class) is ink: far enough from the page in grey levels and in its noise."""
    if not core.any() or core.all() or np.median(_sample(contrast[core])) < MIN_CONTRAST:
        return False
    page = _sample(smooth[~core])
    return float(np.median(_sample(smooth[core])) - np.median(page)) >= MIN_NOISE_RATIO * _noise(page)


def _soft_ink(relative: np.ndarray, light: np.ndarray, core: np.ndarray, scale: float) -> np.ndarray:
    """The ink's grey levels (0-255): `relative` as a share of solid ink's level, averaged over under half a pixel of
    the 20x20 digit (noise averages out, strokes keep their edges); fainter than a tenth or than the noise is page."""
    values = _local_mean(relative, int(scale // 3) | 1)
    level = float(np.percentile(_sample(values[core]), 90))  # solid ink, not its soft edges
    noise = _noise((values * light)[~core])  # in grey levels: a sensor's noise is as large in shadow as in light
    ink = np.clip(values / level, 0, 1)
    return np.where(ink >= np.maximum(EDGE, 3 * noise / (light * level)), ink * 255, 0)


def _noise(values: np.ndarray) -> float:
    """The spread of `values` as a normal's sigma, from the median absolute deviation (a little ink does not count)."""
    values = _sample(values)
    return 1.4826 * float(np.median(np.abs(values - np.median(values)))) if values.size else 0.0


def _sample(values: np.ndarray) -> np.ndarray:
    """Every n-th of `values` (flattened), about 20,000 of them: as good for a median, and cheaper."""
    return values.ravel()[:: max(1, values.size // 20_000)]


def _page(picture: np.ndarray) -> tuple[np.ndarray, int]:
    """The page's grey level at each pixel (its light, shadows and all) and the ink's side of it: -1 for ink darker
    than the page, 1 for lighter. Estimated on a coarse grid: a median over windows wider than a stroke, then the
    surface and local mean of the pixels plainly on the page, twice (the median is pulled towards dense ink)."""
    from PIL import Image, ImageFilter

    coarse = _shrink(picture, COARSE_SIDE)
    window = max(3, min(coarse.shape) // 3) | 1  # odd, and broader than a stroke
    light = np.asarray(Image.fromarray(coarse).filter(ImageFilter.MedianFilter(window)))
    sign = _ink_side(coarse - light)
    for _ in range(2):
        on_page = _clear_page(sign * (coarse - light))
        surface = _surface(coarse, on_page)
        light = surface + _local_mean(coarse - surface, window, on_page)  # the surface alone where no page is near
    return _resize(np.clip(light, 0, 255).astype(np.float32), picture.shape), sign


def _surface(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The quadratic surface in x and y nearest `values` where `weights` is 1 (least squares): a shadow's slope,
    which a local mean would bend at the picture's edges and around the ink."""
    height, width = values.shape
    y, x = np.mgrid[0:height, 0:width] / max(height, width, 1)
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], -1).reshape(-1, 6)
    on = weights.ravel() > 0
    coefficients = np.linalg.lstsq(terms[on], values.ravel()[on], rcond=None)[0]
    return (terms @ coefficients).reshape(height, width).astype(np.float32)


def _clear_page(residual: np.ndarray) -> np.ndarray:
    """1 where `residual` (ink positive) is plainly page: near the level of Otsu's lower class and not beside ink
    (a coarse cell a stroke passes through, even in part, would pull the page's level towards the ink), else 0. On a
    blank page Otsu splits the noise and few cells are clear: then the lower class, or every cell."""
    threshold, _ = _otsu(residual)
    level = float(np.median(residual[residual <= threshold]))
    page = (residual <= level + (threshold - level) / 4).astype(np.float32)
    clear = (_box_sum(page, 3) > 8.5).astype(np.float32)
    for mask in (clear, page):
        if mask.sum() >= max(12, mask.size // 20):  # enough cells, spread enough, to fit a surface to
            return mask
    return np.ones_like(residual)


def _ink_side(residual: np.ndarray) -> int:
    """-1 if the class of `residual` (Otsu's two) that lies further from the border's level is the lower one, else 1."""
    threshold, _ = _otsu(residual)
    low, high = residual[residual <= threshold], residual[residual > threshold]
    if low.size == 0 or high.size == 0:
        return -1
    border = float(np.median(np.concatenate([residual[0], residual[-1], residual[:, 0], residual[:, -1]])))
    return -1 if border - low.mean() > high.mean() - border else 1


def _otsu(values: np.ndarray) -> tuple[float, float]:
    """Otsu's threshold between two classes of `values` (256 bins over their range) and its between-class variance;
    (their minimum, 0.0) when all are equal."""
    values = _sample(values)
    low, high = float(values.min()), float(values.max())
    if not high - low > 1e-6:
        return low, 0.0
    counts, edges = np.histogram(values, 256, (low, high))
    share = counts / counts.sum()
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(share)[:-1]  # the lower class's weight and mass for each of the 255 splits
    mass = np.cumsum(share * centres)[:-1]
    mean = float(share @ centres)
    between = (mean * below - mass) ** 2 / np.maximum(below * (1 - below), 1e-12)
    split = int(np.argmax(between))
    return float(edges[split + 1]), float(between[split])


def _local_mean(values: np.ndarray, window: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The mean of `values` over a window x window square around each pixel, weighted by `weights` (equal if None;
    0 where a window holds no weight); the square is cut off at the picture's edges."""
    if weights is None:
        rows, cols = (_box_sum(np.ones((n, 1)), window)[:, 0] for n in values.shape)
        return (_box_sum(values, window) / np.outer(rows, cols)).astype(np.float32)
    weight = _box_sum(weights, window)
    mean = _box_sum(values * weights, window) / np.maximum(weight, 1e-9)
    return np.where(weight > 1e-9, mean, 0).astype(np.float32)


def _box_sum(array: np.ndarray, window: int) -> np.ndarray:
    """The sums of `array` over a window x window square around each pixel (zeros beyond the edges; `window` odd):
    scipy's running means, in float64, the same cost for any window."""
    from scipy import ndimage  # ~0.3 s to import, once: 5x quicker than cumulative sums in numpy here

    assert window % 2, "an odd window: centred on its pixel"
    return ndimage.uniform_filter(array.astype(np.float64), window, mode="constant") * window**2


def _shrink(values: np.ndarray, side: int) -> np.ndarray:
    """`values` area-averaged to fit side x side (aspect kept), or as they are if they already fit."""
    height, width = values.shape
    if max(height, width) <= side:
        return values
    scale = side / max(height, width)
    return _resize(values, (max(1, round(height * scale)), max(1, round(width * scale))), box=True)


def _resize(values: np.ndarray, shape: tuple[int, int], box: bool = False) -> np.ndarray:
    """`values` (float32) resized to `shape`: area-averaged when shrinking, bilinear when growing."""
    from PIL import Image

    resample = Image.Resampling.BOX if box else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(values, mode="F").resize(shape[::-1], resample))


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
