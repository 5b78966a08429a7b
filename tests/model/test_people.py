"""People's digits (digitpipe.people): strokes traced from a digit's skeleton, drawn as the page draws them,
photographed, written by other hands; each read back through the service's picture path, seeded per digit."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from digitpipe import people
from digitpipe.data.pictures import read_picture, to_mnist_form


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def test_a_straight_line_is_one_stroke_from_end_to_end():
    line = np.zeros((28, 28), np.uint8)
    line[4:24, 13:15] = 255
    (stroke,) = people.strokes_of(line)
    ends = sorted([tuple(stroke[0]), tuple(stroke[-1])], key=lambda p: p[1])
    assert ends[0][1] <= 6 and ends[1][1] >= 21 and abs(ends[0][0] - 13.5) <= 1 and abs(ends[1][0] - 13.5) <= 1


def test_a_ring_is_traced_whole_and_redrawn_it_covers_the_ring():
    y, x = np.mgrid[0:28, 0:28]
    ring = ((np.hypot(y - 14, x - 14) - 8).__abs__() < 1.6).astype(np.uint8) * 255
    strokes = people.strokes_of(ring)
    assert sum(len(s) for s in strokes) >= 40  # the whole circumference, ~50 px
    redrawn = people.ink_of([s * 10 for s in strokes], 280, 30)
    assert _correlation(np.asarray(Image.fromarray(redrawn).resize((28, 28), Image.Resampling.BOX)), ring) > 0.8


def test_the_page_png_is_the_pads_size_white_round_strokes_on_black():
    png = people.page_png([np.array([[60.0, 140.0], [220.0, 140.0]])])
    pad = np.asarray(Image.open(io.BytesIO(png)))
    assert pad.shape == (people.PAD_SIDE, people.PAD_SIDE)
    assert pad[140, 140] == 255 and pad[140 - people.BRUSH, 140] == 0 and pad[140, 30] == 0
    assert pad[140, 60 - people.BRUSH // 2 + 2] > 0  # the round end reaches past the last point


def test_a_drawn_digit_reads_back_as_the_same_digit_at_any_size_and_place(digits):
    made = [people.drawn(image, np.random.default_rng(i)) for i, image in enumerate(digits.images[:40])]
    correlations = [_correlation(m, d) for m, d in zip(made, digits.images[:40])]
    assert all(m.shape == (28, 28) and m.dtype == np.uint8 for m in made)
    assert np.median(correlations) > 0.6  # the same strokes, redrawn with a round pen: close, never identical


def test_pointer_paths_lie_on_the_pad_and_vary_with_the_draw(digits):
    first = people.pointer_paths(digits.images[0], np.random.default_rng(1))
    second = people.pointer_paths(digits.images[0], np.random.default_rng(2))
    points = np.concatenate(first)
    assert points.min() >= 0 and points.max() <= people.PAD_SIDE
    assert not np.allclose(np.concatenate(first)[:3], np.concatenate(second)[:3])


@pytest.mark.parametrize(("sides", "count"), [((240, 640), 12), ((3000, 4032), 3)])  # a phone's photos cost ~0.5 s
def test_a_photographed_digit_reads_back_as_the_same_digit(digits, sides, count):
    made = [people.photographed(image, np.random.default_rng(i), sides)
            for i, image in enumerate(digits.images[:count])]
    assert np.median([_correlation(m, d) for m, d in zip(made, digits.images[:count])]) > 0.7


def test_a_photo_is_a_jpeg_or_png_of_the_frame_size_asked(digits):
    for seed in range(6):
        data = people.photo_bytes(digits.images[0], np.random.default_rng(seed), (500, 600))
        with Image.open(io.BytesIO(data)) as photo:
            assert photo.format in ("JPEG", "PNG") and 500 <= max(photo.size) <= 600
        assert to_mnist_form(read_picture(data)).shape == (28, 28)


def test_other_hands_change_the_strokes_and_keep_the_digit(digits):
    made = people.family("other_hands", digits.images[:60], digits.labels[:60])
    correlations = [_correlation(m, d) for m, d in zip(made, digits.images[:60])]
    assert np.median(correlations) > 0.5 and np.mean(np.array(correlations) > 0.95) < 0.2  # changed, recognisable


def test_a_marker_writes_thicker_than_a_fine_pen(digits):
    strokes = people.strokes_of(digits.images[0])
    rng = np.random.default_rng(0)
    marker, fine = people.written(strokes, "marker", rng), people.written(strokes, "fine pen", rng)
    assert (marker > 127).sum() > 1.8 * (fine > 127).sum()


def test_a_european_seven_has_its_crossbar():
    seven = people.written([np.array(s, float) for s in people.TEMPLATES[7]], "european", np.random.default_rng(0))
    middle = seven[12:17]  # the bar crosses the stem at mid-height, well left and right of it
    assert (middle > 127).sum(1).max() >= 8


def test_a_family_is_seeded_per_digit_and_the_same_for_any_subset(digits):
    images, labels = digits.images[:8], digits.labels[:8]
    for name in people.FAMILIES:
        whole = people.family(name, images, labels, seed=3, photo_sides=(240, 400))
        assert whole.shape == (8, 28, 28) and whole.dtype == np.uint8
        assert np.array_equal(whole, people.family(name, images, labels, seed=3, photo_sides=(240, 400), threads=1))
        assert np.array_equal(whole[5:], people.family(name, images[5:], labels[5:], seed=3, photo_sides=(240, 400)))
        assert not np.array_equal(whole, people.family(name, images, labels, seed=4, photo_sides=(240, 400)))


def test_an_unknown_family_is_refused(digits):
    with pytest.raises(ValueError, match="unknown family 'etched'"):
        people.family("etched", digits.images[:1], digits.labels[:1])


def test_a_picture_the_reader_finds_blank_counts_as_a_black_digit():
    blank = io.BytesIO()
    Image.new("L", (64, 64), 255).save(blank, format="PNG")
    assert not people.read_as_service(blank.getvalue()).any()


def test_a_blank_digit_in_any_family_is_a_black_picture_not_a_crash():
    blank = np.zeros((2, 28, 28), np.uint8)
    for name in people.FAMILIES:
        assert not people.family(name, blank, np.array([2, 3]), photo_sides=(200, 300)).any(), name
    assert people.family("drawn", blank[:0], blank[:0, 0, 0]).shape == (0, 28, 28)
