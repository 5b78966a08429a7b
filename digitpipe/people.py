"""Digits as people make them, beyond MNIST's scanner: drawn on the serving page with a mouse or a finger,
photographed on paper, written by other hands. Each is made from a held-out digit (its skeleton traced into pen
strokes, or its ink printed on paper) and read back through the service's own picture path
(digitpipe.data.pictures), so a model is measured on what a person would send it. Nothing here is trained on.

Seeded and versioned like the perturbation suite: the same digits, seed and SPEC give the same pictures anywhere.
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np

from digitpipe.data.pictures import PictureError, read_picture, to_mnist_form

SPEC = "digitpipe-people-v2"  # change when a generator changes: accuracies on the families stop comparing
FAMILIES = ("drawn", "photographed", "other_hands")
PAD_SIDE = 280  # the serving page's drawing pad, pixels ...
BRUSH = 18  # ... and its pen's width (digitpipe/serving/page/page.js: white, round ends, on black)
SKELETON_SCALE = 4  # digits are thinned to strokes at this many times their size (strokes_of)
SMOOTH = 4  # pictures are drawn this much larger, then averaged down: a browser's canvas smooths its edges
PHONE = (320, 4032)  # the long side of a photo, pixels: a thumbnail to a 12-megapixel phone camera's
CAMERA_SIDE = 1024  # photos are made at most this wide, then enlarged: the reader works at this size anyway
STYLES = ("marker", "fine pen", "slanted", "shaky", "european")  # other hands' changes, one per digit
NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def strokes_of(image: np.ndarray) -> list[np.ndarray]:
    """The pen paths of one digit (uint8 H x W, white ink): its skeleton traced into strokes, each an array of
    (x, y) points in pixels, smoothed as a hand moves; a lone dot is a one-point stroke. The skeleton is taken at
    SKELETON_SCALE times the size: at 28x28 a short bar as wide as it is long (a 7's top, a 3's upper arm) thins to
    a point and is lost, a redrawn 7 reading as a 1 (fastcnn misread 2.7% of 1,000 t10k digits drawn from
    28x28 skeletons, 1.5% from these)."""
    from PIL import Image
    from skimage.morphology import skeletonize  # ~0.9 s to import: only when strokes are made

    height, width = image.shape
    big = np.asarray(Image.fromarray(image).resize((width * SKELETON_SCALE, height * SKELETON_SCALE),
                                                   Image.Resampling.BICUBIC))
    skeleton = skeletonize(big >= 0.5 * max(int(big.max()), 1))
    return [_smoothed(_smoothed((path + 0.5) / SKELETON_SCALE - 0.5)) for path in _trace(skeleton)]


def _trace(skeleton: np.ndarray) -> list[np.ndarray]:
    """Every edge of the skeleton's pixel graph walked once, as few paths as a greedy walk gives: from the ends
    first, each step the neighbour that turns least."""
    pixels = set(zip(*np.nonzero(skeleton)))
    links = {p: [(p[0] + dy, p[1] + dx) for dy, dx in NEIGHBOURS if (p[0] + dy, p[1] + dx) in pixels] for p in pixels}
    unused = {frozenset((p, q)) for p in pixels for q in links[p] if not _corner_cut(p, q, pixels)}
    paths = [np.array([[p[1], p[0]]], float) for p in pixels if not links[p]]
    for start in sorted(pixels, key=lambda p: (sum(frozenset((p, q)) in unused for q in links[p]) != 1, p)):
        while nxt := _step([start], links, unused):
            path = [start, nxt]
            unused.discard(frozenset((start, nxt)))
            while nxt := _step(path, links, unused):
                unused.discard(frozenset((path[-1], nxt)))
                path.append(nxt)
            paths.append(np.array([[c, r] for r, c in path], float))
    return paths


def _corner_cut(p: tuple[int, int], q: tuple[int, int], pixels: set) -> bool:
    """Whether p-q is a diagonal step beside two straight ones through a pixel both touch (a staircase's corner):
    walked too, it would zigzag."""
    return p[0] != q[0] and p[1] != q[1] and ((p[0], q[1]) in pixels or (q[0], p[1]) in pixels)


def _step(path: list, links: dict, unused: set) -> tuple[int, int] | None:
    """The unused neighbour of the path's end that turns least from its last step (straight ones first)."""
    end = path[-1]
    free = [q for q in links[end] if frozenset((end, q)) in unused]
    if not free:
        return None
    heading = np.subtract(end, path[-2]) if len(path) > 1 else np.zeros(2)
    diagonal = {q: abs(q[0] - end[0]) * abs(q[1] - end[1]) for q in free}
    return max(free, key=lambda q: (float(np.dot(np.subtract(q, end), heading)), -diagonal[q]))


def _smoothed(path: np.ndarray) -> np.ndarray:
    """A pixel path averaged over three points (its ends kept): a hand's curve, not a staircase."""
    if len(path) < 3:
        return path
    inner = (path[:-2] + path[1:-1] + path[2:]) / 3
    return np.concatenate([path[:1], inner, path[-1:]])


def family(name: str, images: np.ndarray, labels: np.ndarray, seed: int = 0, photo_sides: tuple[int, int] = PHONE,
           threads: int | None = None) -> np.ndarray:
    """The family `name` (one of FAMILIES) of held-out `images` with their `labels`: N x 28 x 28 uint8, one picture
    per digit, as the service reads it. Each digit's random draw comes from its pixels, so its picture does not
    depend on which others are made with it; made on a pool of this process's cores (imaging releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from digitpipe.runtime import core_share

    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {FAMILIES}")
    code = FAMILIES.index(name)

    def one(i: int) -> np.ndarray:
        pixels = int.from_bytes(hashlib.blake2b(images[i].tobytes(), digest_size=8).digest(), "little")
        rng = np.random.default_rng([seed, code, pixels])
        if name == "drawn":
            return drawn(images[i], rng)
        if name == "photographed":
            return photographed(images[i], rng, photo_sides)
        return other_hand(images[i], int(labels[i]), rng)

    with ThreadPoolExecutor(max_workers=threads or core_share()) as pool:
        made = list(pool.map(one, range(len(images))))
    return np.stack(made) if made else np.zeros((0, 28, 28), np.uint8)


# -- drawn: as a person draws on the page ------------------------------------------------------------------------

def drawn(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One held-out digit drawn on the page (28x28 MNIST form, as the service reads the page's PNG)."""
    return read_as_service(page_png(pointer_paths(image, rng)))


def pointer_paths(image: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The digit's strokes as pointer positions on the pad: at the size, place, slant and angle a person might draw
    it, sampled as pointer events arrive (a fast hand: far apart) and with a hand's jitter; none for a blank digit."""
    strokes = strokes_of(image)
    if not strokes:
        return []
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    height = rng.uniform(70, 230)  # pad pixels: small in a corner to filling the pad
    scale = height / max(high[1] - low[1], 4.0)
    shear, angle = math.tan(math.radians(rng.uniform(-25, 25))), math.radians(rng.uniform(-10, 10))
    stretch = rng.uniform(0.8, 1.25)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix = scale * np.array([[stretch, -shear], [0, 1]]) @ np.array([[cos, -sin], [sin, cos]])
    moved = [(stroke - (low + high) / 2) @ matrix.T for stroke in strokes]
    every = np.concatenate(moved)
    margin = BRUSH / 2 + 2  # the brush stays on the pad: a stroke begun off it draws nothing
    lo, hi = every.min(0), every.max(0)
    fits = min(1.0, (PAD_SIDE - 2 * margin - 6) / max(float((hi - lo).max()), 1e-6))  # wide and slanted: smaller
    moved, lo, hi = [stroke * fits for stroke in moved], lo * fits, hi * fits
    room = np.maximum(PAD_SIDE - 2 * margin - (hi - lo), 0)
    offset = margin - lo + rng.uniform(0, 1, 2) * room
    spacing, jitter = rng.uniform(2, 18), rng.uniform(0, 2.0)
    return [_with_tremor(_resampled(stroke + offset, spacing), jitter, rng) for stroke in moved]


def _resampled(stroke: np.ndarray, spacing: float) -> np.ndarray:
    """Points along the stroke every `spacing` pixels of its length, its ends kept (how pointer events arrive)."""
    if len(stroke) < 2:
        return stroke
    lengths = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(stroke, axis=0), axis=1))])
    steps = np.append(np.arange(0, lengths[-1], spacing), lengths[-1])
    return np.stack([np.interp(steps, lengths, stroke[:, i]) for i in (0, 1)], 1)


def _with_tremor(points: np.ndarray, jitter: float, rng: np.random.Generator) -> np.ndarray:
    """`points` moved by a hand's small wander (`jitter` pixels), correlated from one point to the next."""
    wander = rng.normal(0, jitter, points.shape)
    if len(points) > 2:
        wander[1:-1] = (wander[:-2] + wander[1:-1] + wander[2:]) / math.sqrt(3)
    return points + wander


def page_png(paths: list[np.ndarray], side: int = PAD_SIDE, width: float = BRUSH) -> bytes:
    """The page's PNG of pointer `paths`: white strokes `width` wide with round ends and joints on black."""
    return _png(ink_of(paths, side, width))


def ink_of(paths: list[np.ndarray], side: int, width: float) -> np.ndarray:
    """`paths` drawn with a round pen `width` pixels wide on a black side x side square (uint8, smoothed edges)."""
    from PIL import Image, ImageDraw

    big = Image.new("L", (side * SMOOTH, side * SMOOTH), 0)
    pen = ImageDraw.Draw(big)
    radius = width * SMOOTH / 2
    for path in paths:
        points = [tuple(p) for p in path * SMOOTH]  # a canvas's coordinates: pixel (0, 0) spans 0 to 1
        if len(points) > 1:
            pen.line(points, fill=255, width=max(1, round(2 * radius)), joint="curve")
        for x, y in (points[0], points[-1]):  # round ends (and a lone dot)
            pen.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(big.resize((side, side), Image.Resampling.BOX))


def _png(grey: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(grey).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def read_as_service(data: bytes) -> np.ndarray:
    """A picture's bytes as the service reads them: 28x28 MNIST form, or all black if it finds no digit there."""
    try:
        return mnist_form(read_picture(data))
    except PictureError:  # a damaged picture: the service refuses it, a wrong answer for any label
        return np.zeros((28, 28), np.uint8)


def mnist_form(grey: np.ndarray) -> np.ndarray:
    """A grey picture in MNIST's form (to_mnist_form), or all black where the reader finds no digit (the service
    answers that it is blank: a wrong answer for any label)."""
    try:
        return to_mnist_form(grey)
    except PictureError:
        return np.zeros((28, 28), np.uint8)


# -- photographed: the digit on paper, through a phone's camera ---------------------------------------------------

PAPERS = np.array([[255, 255, 255], [250, 245, 225], [255, 170, 160], [250, 220, 120], [170, 210, 250],
                   [185, 235, 185], [220, 190, 150], [200, 200, 200]], np.float32)  # white, cream, red, yellow,
#   blue, green, kraft, grey
INKS = np.array([[20, 20, 25], [25, 35, 110], [60, 60, 60], [15, 15, 15]], np.float32)  # black, blue, pencil, marker


def photographed(image: np.ndarray, rng: np.random.Generator, long_sides: tuple[int, int] = PHONE) -> np.ndarray:
    """One held-out digit printed on paper and photographed (28x28 MNIST form, as the service reads the photo)."""
    return read_as_service(photo_bytes(image, rng, long_sides))


def photo_bytes(image: np.ndarray, rng: np.random.Generator, long_sides: tuple[int, int] = PHONE) -> bytes:
    """A photo of `image`'s ink on paper of some grey or colour: a frame between `long_sides` wide (log-uniform; a
    phone's 12-megapixel photo at the top), the digit small or large anywhere in it, under a gradient of light,
    blurred, noisy, as JPEG or PNG. Made at most CAMERA_SIDE wide and enlarged, as a phone's processing does."""
    long_side = int(math.exp(rng.uniform(*np.log(long_sides))))
    short_side = int(long_side * rng.choice([0.75, 1.0]))
    full = (long_side, short_side) if rng.random() < 0.5 else (short_side, long_side)  # width, height
    scale = min(1.0, CAMERA_SIDE / long_side)
    width, height = max(8, round(full[0] * scale)), max(8, round(full[1] * scale))
    size = int(rng.uniform(0.15, 0.8) * min(width, height))  # the digit's 28x28 square, in pixels of the photo
    coverage = np.zeros((height, width), np.float32)
    top, left = int(rng.uniform(0, height - size)), int(rng.uniform(0, width - size))
    coverage[top : top + size, left : left + size] = _ink_square(image, size, rng.uniform(0, 1.2) * size / 28)
    paper = PAPERS[rng.integers(len(PAPERS))] * np.float32(rng.uniform(0.8, 1.0))
    colour = INKS[rng.integers(len(INKS))]
    picture = (paper + coverage[..., None] * (colour - paper)) * _light(height, width, rng)[..., None]
    picture += rng.standard_normal(picture.shape, dtype=np.float32) * np.float32(rng.uniform(0, 10))
    return _encoded(np.clip(picture, 0, 255).astype(np.uint8), full, rng)


def _ink_square(image: np.ndarray, size: int, blur: float) -> np.ndarray:
    """The digit's ink (0-1) scaled to size x size, softened by a camera's blur of `blur` pixels (the page around
    it is flat: blurring it would change nothing)."""
    from PIL import Image, ImageFilter

    ink = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    if blur >= 0.3:
        ink = ink.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(ink, np.float32) / 255


def _light(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """The light across the photo: an exposure (a dim room to daylight) falling off along a random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    across = np.arange(width, dtype=np.float32)[None] * math.cos(angle)
    down = np.arange(height, dtype=np.float32)[:, None] * math.sin(angle)
    along = across + down
    along = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    return np.float32(rng.uniform(0.35, 1.0)) * (1 - np.float32(rng.uniform(0, 0.6)) * along)


def _encoded(rgb: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> bytes:
    """The photo at `size` (width, height) as a phone or a messenger stores it: a JPEG of some quality, or now and
    then a PNG."""
    from PIL import Image

    photo = Image.fromarray(rgb)
    if photo.size != size:
        photo = photo.resize(size, Image.Resampling.BILINEAR)
    out = io.BytesIO()
    if rng.random() < 0.8:
        photo.save(out, format="JPEG", quality=int(rng.uniform(40, 95)))
    else:
        photo.save(out, format="PNG", compress_level=1)
    return out.getvalue()


# -- other hands: stroke-level changes a person makes and MNIST rarely has ----------------------------------------

CANVAS = 112  # other hands write on a canvas four times MNIST's side; the service's reader brings it to 28x28
TEMPLATES = {  # strokes (x, y on 28x28) of forms MNIST rarely holds: a European 1 and 7, an open and a closed 4
    1: [[(9, 10), (15, 4), (15, 24)], [(10, 24), (20, 24)]],
    7: [[(7, 5), (21, 5), (12, 24)], [(10, 14), (20, 14)]],
    4: [[(12, 4), (6, 17), (21, 17)], [(17, 9), (17, 25)]],  # open: the stem stands apart from the slanted stroke
}
CLOSED_FOUR = [[(17, 25), (17, 4), (6, 17), (21, 17)]]


def other_hand(image: np.ndarray, label: int, rng: np.random.Generator) -> np.ndarray:
    """One held-out digit as another hand writes it (28x28 MNIST form): its strokes with a thick marker, a fine
    pen, slanted or shaky; or, for a 1, 4 or 7, a European or open or closed form drawn from strokes."""
    style = STYLES[rng.integers(len(STYLES))]
    if style == "european":
        strokes = [np.array(s, float) for s in TEMPLATES[label]] if label in TEMPLATES else strokes_of(image)
        if label == 4 and rng.random() < 0.5:
            strokes = [np.array(s, float) for s in CLOSED_FOUR]
    else:
        strokes = strokes_of(image)
    return written(strokes, style, rng)


def written(strokes: list[np.ndarray], style: str, rng: np.random.Generator) -> np.ndarray:
    """`strokes` (28x28 coordinates) written in `style` on the canvas and read as the service reads a picture (all
    black for no strokes: a blank digit)."""
    if not strokes:
        return np.zeros((28, 28), np.uint8)
    pen = {"marker": rng.uniform(3.2, 4.5), "fine pen": rng.uniform(0.7, 1.1)}.get(style, rng.uniform(1.6, 2.6))
    shear = math.tan(math.radians(rng.uniform(15, 35) * rng.choice([-1, 1]))) if style == "slanted" else 0.0
    scale = CANVAS / 28
    centre = np.concatenate(strokes).mean(0)
    paths = []
    for stroke in strokes:
        points = (stroke - centre) @ np.array([[1, -shear], [0, 1]]).T * scale + CANVAS / 2
        if style == "shaky":
            points = _with_tremor(_resampled(points, rng.uniform(2, 4)), rng.uniform(0.8, 1.6), rng)
        paths.append(points)
    return mnist_form(ink_of(paths, CANVAS, pen * scale))
