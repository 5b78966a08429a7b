"""Properties of a picture's reading (digitpipe.data.pictures): any bytes, a real PNG or JPEG damaged (cut short and
followed by noise, or bytes overwritten) and small pictures of any content in every mode Pillow writes end in a 28x28
digit or one PictureError (a one-line message, a 4xx status), never in another exception. Sizes are bounded (at most
64 pixels a side, a few kilobytes), so each example takes milliseconds."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitpipe.data.pictures import PictureError, read_picture, to_mnist_form

BOUNDED = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODES = ("1", "L", "LA", "I;16", "P", "RGB", "RGBA", "CMYK")
WRITES = {"PNG": ("1", "L", "LA", "I;16", "P", "RGB", "RGBA"), "JPEG": ("L", "RGB", "CMYK")}  # else saved as RGB


def _digit_or_one_refusal(data: bytes) -> None:
    try:
        digit = to_mnist_form(read_picture(data))
    except PictureError as refused:
        message = str(refused)
        assert 400 <= refused.status < 500
        assert message and "\n" not in message and len(message) < 400, message
    else:
        assert digit.shape == (28, 28) and digit.dtype == np.uint8


@st.composite
def pictures(draw) -> Image.Image:
    """A small picture in any mode: a page and a box of ink (perhaps empty) of any greys, a colour cast, some noise or
    none, and an alpha channel opaque, transparent or random."""
    height, width = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    page, ink = draw(st.integers(0, 255)), draw(st.integers(0, 255))
    values = np.full((height, width, 4), page, np.float64)
    top, left = draw(st.integers(0, height - 1)), draw(st.integers(0, width - 1))
    values[top : draw(st.integers(top, height)), left : draw(st.integers(left, width))] = ink
    values[..., :3] *= rng.uniform(0.2, 1, 3)
    values += draw(st.sampled_from([0, 6, 60])) * rng.standard_normal(values.shape)
    values[..., 3] = draw(st.sampled_from([255, 0])) if draw(st.booleans()) else rng.integers(0, 256, (height, width))
    return _as_mode(np.clip(values, 0, 255).astype(np.uint8), draw(st.sampled_from(MODES)))


def _as_mode(rgba: np.ndarray, mode: str) -> Image.Image:
    picture = Image.fromarray(rgba)  # RGBA
    if mode == "I;16":  # 16-bit grey: the full range, as a scanner or a camera's raw export writes it
        return Image.fromarray(np.asarray(picture.convert("L")).astype(np.uint16) * 257)
    if mode == "P":
        return picture.convert("RGB").quantize(16)
    return picture.convert(mode)


def _saved(picture: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    picture = picture if picture.mode in WRITES[format] else picture.convert("RGB")
    picture.save(buffer, format, **options)
    return buffer.getvalue()


@BOUNDED
@given(st.binary(max_size=4096))
def test_any_bytes_give_a_digit_or_one_refusal(data):
    _digit_or_one_refusal(data)


@BOUNDED
@given(pictures(), st.sampled_from(["PNG", "JPEG"]), st.data())
def test_a_real_picture_damaged_gives_a_digit_or_one_refusal(picture, format, data):
    whole = bytearray(_saved(picture, format))
    if data.draw(st.booleans()):  # cut short, then noise: a broken upload
        damaged = whole[: data.draw(st.integers(0, len(whole)))] + data.draw(st.binary(max_size=1024))
    else:  # a few bytes overwritten anywhere: header, chunk lengths, compressed data, checksums
        for _ in range(data.draw(st.integers(1, 8))):
            whole[data.draw(st.integers(0, len(whole) - 1))] = data.draw(st.integers(0, 255))
        damaged = whole
    _digit_or_one_refusal(bytes(damaged))


@BOUNDED
@given(pictures(), st.sampled_from(["PNG", "JPEG"]), st.integers(0, 9), st.sampled_from([None, 0, 255, 65535]))
def test_small_pictures_in_any_mode_give_a_digit_or_one_refusal(picture, format, orientation, transparency):
    exif = Image.Exif()
    exif[0x0112] = orientation  # 1-8 the EXIF orientations; 0 and 9 nonsense a phone might still write
    options = {"exif": exif.tobytes()}
    if format == "PNG" and transparency is not None and picture.mode in ("L", "I;16", "P"):  # a transparent grey
        options["transparency"] = min(transparency, 255) if picture.mode != "I;16" else transparency
    _digit_or_one_refusal(_saved(picture, format, **options))


def _chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


ANCILLARY = st.sampled_from([b"eXIf", b"tEXt", b"zTXt", b"iTXt", b"iCCP", b"pHYs", b"sRGB", b"gAMA"])


@BOUNDED
@given(st.lists(st.tuples(ANCILLARY, st.binary(max_size=300)), min_size=1, max_size=3),
       st.sampled_from([b"", b"Raw profile type exif\x00", b"Comment\x00\x00", b"icc\x00\x00"]))
def test_a_png_with_any_metadata_chunks_gives_a_digit_or_one_refusal(chunks, prefix):
    import zlib

    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 40), 255, np.uint8) - np.eye(40, dtype=np.uint8) * 200).save(buffer, "PNG")
    png = buffer.getvalue()
    extra = b"".join(_chunk(kind, prefix + (zlib.compress(data * 20_000) if kind in (b"zTXt", b"iCCP") and
                                             len(data) % 2 else data)) for kind, data in chunks)
    _digit_or_one_refusal(png[:33] + extra + png[33:])  # after IHDR, where a camera or an editor writes them
