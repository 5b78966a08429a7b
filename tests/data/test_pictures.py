"""A picture of a digit brought to MNIST's form (digitpipe.data.pictures), on the fixture's real digits drawn large
and dark on light as on paper, and the pictures a server must refuse."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from digitpipe.data.pictures import PictureError, read_picture, to_mnist_form


def _png(array: np.ndarray, mode: str = "L", format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format)
    return buffer.getvalue()


def _on_paper(image: np.ndarray, scale: int = 10) -> np.ndarray:
    """A 28x28 MNIST digit drawn `scale` times larger, dark ink on a light page."""
    big = Image.fromarray(image).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    return 255 - np.asarray(big)


@pytest.fixture(scope="module")
def judged(digits):
    """A logistic regression fitted on 700 fixture digits, and the other 300 (a pixel-level model: the strictest
    judge of how closely the pictures come back to MNIST's form)."""
    from sklearn.linear_model import LogisticRegression

    x, y = digits.images.reshape(-1, 784) / 255, digits.labels
    return LogisticRegression(max_iter=300, C=0.5).fit(x[:700], y[:700]), digits.images[700:], y[700:]


def test_mnist_digits_drawn_ten_times_larger_dark_on_light_stay_within_a_point(judged):
    model, images, labels = judged
    back = np.stack([to_mnist_form(read_picture(_png(_on_paper(image)))) for image in images])
    raw = np.mean(model.predict(images.reshape(-1, 784) / 255) == labels)
    converted = np.mean(model.predict(back.reshape(-1, 784) / 255) == labels)
    assert converted >= raw - 0.01, (raw, converted)
    assert np.abs(back.astype(int) - images).mean() < 12  # grey levels: the same digits, not merely the same class


def test_a_photo_like_picture_on_grey_paper_as_jpeg_comes_back_to_the_digit(digits):
    image = digits.images[0]
    page = (200 - 0.6 * (255 - _on_paper(image, scale=6)).astype(float)).clip(0, 255).astype(np.uint8)
    rgb = np.repeat(page[..., None], 3, axis=2)
    back = to_mnist_form(read_picture(_png(rgb, "RGB", "JPEG")))
    assert back.shape == (28, 28) and back.dtype == np.uint8
    assert np.corrcoef(back.ravel(), image.ravel())[0, 1] > 0.9


def test_a_drawing_on_a_transparent_canvas_is_read_as_ink_on_white():
    rgba = np.zeros((200, 200, 4), np.uint8)
    rgba[40:160, 90:110] = (0, 0, 0, 255)  # a "1" drawn in black on a transparent page
    back = to_mnist_form(read_picture(_png(rgba, "RGBA")))
    rows, cols = np.flatnonzero(back.max(1)), np.flatnonzero(back.max(0))
    assert rows[-1] - rows[0] + 1 == 20  # the ink's box scaled to 20 high ...
    assert abs((rows[0] + rows[-1]) / 2 - 14) <= 1 and abs((cols[0] + cols[-1]) / 2 - 14) <= 1  # ... centred


@pytest.mark.parametrize(("data", "message"), [
    (b"not a picture", "not a PNG or JPEG picture"),
    (_png(np.zeros((28, 28), np.uint8), format="GIF"), "a GIF picture: send a PNG or JPEG"),
    (_png(np.full((50, 50), 255, np.uint8)), "no digit found: the picture is blank"),
])
def test_pictures_that_are_not_digits_are_refused_in_one_line(data, message):
    with pytest.raises(PictureError, match=f"^{message}$"):
        to_mnist_form(read_picture(data))


def test_a_truncated_png_is_refused():
    data = _png((np.random.default_rng(0).random((300, 300)) * 255).astype(np.uint8))
    with pytest.raises(PictureError, match=r"^a damaged PNG picture \("):
        read_picture(data[: len(data) // 2])


def test_a_picture_over_the_pixel_limit_is_refused_from_its_header():
    noise = (np.random.default_rng(0).random((100, 200)) * 255).astype(np.uint8)
    header_only = _png(noise)[:60]  # the header and the start of the pixels: too little to decode
    with pytest.raises(PictureError, match="^a 200x100 picture is over the limit of 19,999 pixels$") as refused:
        read_picture(header_only, max_pixels=19_999)
    assert refused.value.status == 413


def test_a_decompression_bomb_is_refused_as_over_the_limit():
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20_000, 10_000, 8, 0, 0, 0, 0)  # 200 MP of 8-bit grey: Pillow's own refusal
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(PictureError, match="^a picture over the limit of 16,000,000 pixels$") as refused:
        read_picture(bomb)
    assert refused.value.status == 413


def test_a_phone_photo_is_turned_upright_from_its_exif_orientation(digits):
    from PIL import Image

    upright = _on_paper(digits.images[0], scale=4)
    lying = Image.fromarray(np.ascontiguousarray(np.rot90(upright))).convert("RGB")  # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with EXIF orientation 6: turn it 90 degrees clockwise to view it
    buffer = io.BytesIO()
    lying.save(buffer, "JPEG", exif=exif.tobytes())
    back = to_mnist_form(read_picture(buffer.getvalue()))
    assert np.corrcoef(back.ravel(), digits.images[0].ravel())[0, 1] > 0.9
