"""The drawing page (digitpipe/serving/page/) in Debian's Chromium, driven by Playwright, against a real `digitpipe
serve` of a .onnx file: only the newest drawing's answer shows, a refused upload leaves no answer to judge, a phone's
12-megapixel photo is shrunk in the browser and answered, feedback names the answer on screen, and people's
pointer strokes (digitpipe.people) reach the service as the library draws them."""

from __future__ import annotations

import io
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import serving_process, wait_for, write_config

pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.browser]
WAIT_MS = 30_000  # a guard against a hung test, not a timing check
ONE = ((140, 40), (140, 240))  # a stroke down the middle
SEVEN = ((60, 50), (200, 50), (150, 150), (110, 245))  # the bar, then the stem


@pytest.fixture(scope="module")
def service(logreg_onnx, tmp_path_factory) -> tuple[str, Path]:
    """`digitpipe serve --model logreg.onnx` on loopback for the module; (its URL, the folder of its answers)."""
    folder = tmp_path_factory.mktemp("page")
    config = write_config(folder / "mlflow.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db", serving={
        "requests_dir": str(folder / "served"), "feedback_batch": 1000, "feedback_seconds": 600})
    with serving_process(folder, config, "--model", logreg_onnx) as served:
        yield served.url, folder / "served"


@pytest.fixture(scope="module")
def server(service) -> str:
    """The module's `digitpipe serve`: its URL."""
    return service[0]


@pytest.fixture
def page(chromium, server):
    """A fresh tab on the page; (page, screenshots folder)."""
    browser, shots = chromium
    tab = browser.new_page(viewport={"width": 420, "height": 760})
    tab.goto(server + "/")
    yield tab, shots
    tab.close()


def draw(page, points) -> None:
    """One pointer stroke through `points` (pixels on the 280x280 pad); its end sends the drawing."""
    box = page.locator("#pad").bounding_box()
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for x, y in points[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=8)
    page.mouse.up()


def wait_for_answer(page, request_id: str) -> str:
    """The digit on screen once the answer with `request_id` shows."""
    page.locator(f'#result[data-request-id="{request_id}"]').wait_for(state="visible", timeout=WAIT_MS)
    return page.inner_text("#answer")


def until(page, condition, what: str):
    """condition()'s first true value; Playwright runs its handlers (routes, events) while the page waits between
    looks."""
    return wait_for(lambda: condition() or page.wait_for_timeout(50), 30, what, poll=0)


def test_a_late_reply_to_an_earlier_stroke_does_not_replace_the_newer_answer(page):
    page, _ = page
    replies, held = [], []  # (the page's sequence number, the server's answer) in order; the first reply, held

    def handle(route):
        response = route.fetch()  # the server answers at once: only the delivery to the page waits
        replies.append((route.request.headers.get("x-page-seq"), response.json()["predictions"][0]))
        if len(replies) == 1:
            held.extend((route, response))  # delivered once the second stroke's answer shows
        else:
            route.fulfill(response=response)

    page.route("**/predict", handle)
    draw(page, ONE)
    until(page, lambda: held, "the first stroke's request")
    draw(page, SEVEN[:2])  # the 7's bar across the 1: a different drawing
    (_, first), (_, second) = until(page, lambda: len(replies) == 2 and replies, "the second stroke's request")
    assert wait_for_answer(page, second["request_id"]) == str(second["digit"]) != str(first["digit"])
    first_request = held[0].request
    with page.expect_console_message(lambda m: "dropped" in m.text, timeout=WAIT_MS) as dropped, \
            page.expect_event("requestfinished", lambda r: r is first_request, timeout=WAIT_MS):
        held[0].fulfill(response=held[1])  # the first stroke's reply arrives late
    assert dropped.value.text == "dropped the late answer to request 1 (the page is at 2)"
    assert [seq for seq, _ in replies] == ["1", "2"]
    assert page.get_attribute("#result", "data-request-id") == second["request_id"]
    assert page.is_visible("#result") and page.inner_text("#answer") == str(second["digit"])
    with page.expect_request("**/feedback", timeout=WAIT_MS) as sent:
        page.click("#right")
    page.get_by_text("thanks: confirmed").wait_for(timeout=WAIT_MS)
    assert json.loads(sent.value.post_data) == {"request_id": second["request_id"], "label": "right"}


def test_a_refused_upload_clears_the_answer_and_its_buttons(page):
    page, _ = page
    with page.expect_response("**/predict", timeout=WAIT_MS) as answered:
        draw(page, ONE)
    wait_for_answer(page, answered.value.json()["predictions"][0]["request_id"])
    page.set_input_files("#upload", files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a picture"}])
    page.get_by_text("not answered: not a PNG or JPEG picture").wait_for(timeout=WAIT_MS)
    assert page.inner_text("#status") == "not answered: not a PNG or JPEG picture"
    assert page.is_hidden("#result") and page.is_hidden("#right") and page.is_hidden("#digits button >> nth=0")
    assert page.get_attribute("#result", "data-request-id") is None


def phone_photo(image: np.ndarray) -> bytes:
    """A 12-megapixel portrait photo of `image` drawn large and dark on a light, noisy page, as a phone stores it:
    4000x3000 pixels turned on their side, with the EXIF orientation (6) that turns them upright."""
    from PIL import Image

    ink = np.asarray(Image.fromarray(image).resize((2400, 2400), Image.Resampling.BILINEAR), np.float64)
    upright = np.full((4000, 3000), 225.0)
    upright[800:3200, 300:2700] -= ink * (190 / 255)
    upright += np.random.default_rng(0).normal(0, 10, upright.shape)
    grey = np.clip(upright, 0, 255).astype(np.uint8)
    stored = Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to show
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def test_a_phone_photo_over_the_body_limit_is_shrunk_in_the_browser_and_answered(page, digits):
    page, shots = page
    seven = digits.images[int(np.flatnonzero(digits.labels == 7)[0])]
    photo = phone_photo(seven)
    assert len(photo) > 4_194_304  # over the server's limit on a body, as sent by a phone
    with page.expect_request("**/predict", timeout=WAIT_MS) as sent, \
            page.expect_response("**/predict", timeout=WAIT_MS) as answered:
        page.set_input_files("#upload", files=[{"name": "IMG_0001.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    assert answered.value.status == 200, answered.value.text()
    digit = wait_for_answer(page, answered.value.json()["predictions"][0]["request_id"])
    assert digit == "7"  # upright: the browser applied the EXIF orientation before shrinking
    wire = sent.value.all_headers()  # as sent: Chromium does not hand a Blob body to Playwright
    assert int(wire["content-length"]) < 1_000_000 and wire["content-type"] == "image/jpeg"
    assert page.inner_text("#status") == ""
    page.screenshot(path=shots / "serving-page-upload.png")


def test_a_correction_to_8_reads_an_8_and_the_answer_takes_no_second_label(page):
    page, _ = page
    with page.expect_response("**/predict", timeout=WAIT_MS) as answered:
        draw(page, ONE)
    rid = answered.value.json()["predictions"][0]["request_id"]
    assert wait_for_answer(page, rid) != "8"
    held = []  # the correction, held until the buttons are checked
    page.route("**/feedback", lambda route: held.append(route))
    page.click("#digits button >> text=8")
    until(page, lambda: held, "the correction's request")
    buttons = page.locator("#judge button")
    assert buttons.count() == 11 and all(buttons.nth(i).is_disabled() for i in range(11))
    assert json.loads(held[0].request.post_data) == {"request_id": rid, "label": 8}
    held[0].continue_()
    page.get_by_text("thanks: recorded as an 8").wait_for(timeout=WAIT_MS)
    assert page.inner_text("#status") == "thanks: recorded as an 8"
    assert all(buttons.nth(i).is_disabled() for i in range(11))  # the answer has its one label
    with page.expect_response("**/predict", timeout=WAIT_MS) as answered:
        draw(page, ONE)  # the next answer's buttons are free again
    wait_for_answer(page, answered.value.json()["predictions"][0]["request_id"])
    assert all(buttons.nth(i).is_enabled() for i in range(11))


def test_clear_drops_the_answer_to_a_drawing_that_is_gone(page):
    page, _ = page
    held = []  # the drawing's request, held until Clear is pressed
    page.route("**/predict", lambda route: held.append(route))
    draw(page, SEVEN)
    until(page, lambda: held, "the drawing's request")
    page.click("#clear")
    with page.expect_console_message(lambda m: "dropped" in m.text, timeout=WAIT_MS) as dropped:
        held[0].continue_()
    assert dropped.value.text == "dropped the late answer to request 1 (the page is at 2)"
    assert page.is_hidden("#result") and page.inner_text("#status") == ""


PEOPLE_DIGITS = 6  # fixture digits drawn through the page: a fidelity check, not an accuracy (logreg fits them)


def draw_strokes(page, strokes: list[np.ndarray]) -> str:
    """`strokes` (people.pointer_paths: pixels on the pad) drawn as one mouse stroke each, a pointer event at each
    point; the request id of the whole drawing's answer once it shows. The page asks at every stroke's end, numbering
    its requests from its load: the last stroke's request is the whole digit's."""
    box = page.locator("#pad").bounding_box()
    last = str(len(strokes))
    with page.expect_response(lambda r: r.url.endswith("/predict") and r.request.headers.get("x-page-seq") == last,
                              timeout=WAIT_MS) as answered:
        for stroke in strokes:
            page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y)
            page.mouse.up()
    request_id = answered.value.json()["predictions"][0]["request_id"]
    wait_for_answer(page, request_id)
    return request_id


def kept_digit(requests_dir: Path, request_id: str) -> np.ndarray:
    """The 28x28 digit the service kept for `request_id` among its answers (digitpipe.serving.requests)."""
    from digitpipe.serving.requests import Answer

    for path in requests_dir.glob("requests-*.jsonl"):
        for line in path.read_bytes().splitlines():
            if (answer := Answer.parse(line)) and answer.request_id == request_id:
                return answer.image()
    raise AssertionError(f"the service kept no answer {request_id}")


def served_digit(url: str, png: bytes) -> int:
    """The service's answer to `png` posted to /predict as a picture."""
    request = urllib.request.Request(url + "/predict", data=png, headers={"Content-Type": "image/png"})
    with urllib.request.urlopen(request, timeout=60) as reply:
        return json.loads(reply.read())["predictions"][0]["digit"]


def aligned_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """The pixel correlation of two 28x28 digits, the best over moving `a` by at most one pixel each way: the
    service's reader centres a digit by its mass to a whole pixel, and a drawing's slightly different edges can tip
    that rounding to the next pixel."""
    padded = np.pad(a.astype(float), 1)
    return max(float(np.corrcoef(padded[1 + dy : 29 + dy, 1 + dx : 29 + dx].ravel(), b.ravel().astype(float))[0, 1])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def test_people_pointer_strokes_drawn_on_the_page_reach_the_service_as_the_library_draws_them(chromium, service,
                                                                                               digits):
    from digitpipe import people

    browser, _ = chromium
    url, requests_dir = service
    correlations, same_answer = [], []
    for i, image in enumerate(digits.images[:PEOPLE_DIGITS]):
        strokes = people.pointer_paths(image, np.random.default_rng(i))
        every = np.concatenate(strokes)
        assert every.min() >= 0 and every.max() < people.PAD_SIDE  # all on the pad: the page draws every stroke
        tab = browser.new_page(viewport={"width": 420, "height": 760})
        tab.goto(url + "/")
        request_id = draw_strokes(tab, strokes)
        shown = int(tab.inner_text("#answer"))
        tab.close()
        library = people.page_png(strokes)
        correlations.append(aligned_correlation(kept_digit(requests_dir, request_id), people.read_as_service(library)))
        same_answer.append(shown == served_digit(url, library))
    # Measured (Debian's Chromium 2026), within a pixel: 0.996-0.999 for five of these six, 0.888 for one whose edges
    # the canvas and the library smooth differently; on 50 t10k digits median 0.998, lowest 0.903 (bench/README.md).
    assert min(correlations) > 0.85 and np.median(correlations) > 0.99, correlations
    assert sum(same_answer) >= PEOPLE_DIGITS - 1, same_answer  # measured: all 6 the same answer
