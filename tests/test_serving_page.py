"""The drawing page (digitpipe/serving/page/) in Debian's Chromium, driven by Playwright, against a real `digitpipe
serve` of a .onnx file: only the newest drawing's answer shows, a refused upload leaves no answer to judge, a phone's
12-megapixel photo is shrunk in the browser and answered, feedback names the answer on screen."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from tests.helpers import serving_process, wait_for, write_config

pytestmark = [pytest.mark.slow, pytest.mark.servers, pytest.mark.browser]
WAIT_MS = 30_000  # a guard against a hung test, not a timing check
ONE = ((140, 40), (140, 240))  # a stroke down the middle
SEVEN = ((60, 50), (200, 50), (150, 150), (110, 245))  # the bar, then the stem


@pytest.fixture(scope="module")
def server(logreg_onnx, tmp_path_factory) -> str:
    """`digitpipe serve --model logreg.onnx` on loopback for the module; its URL."""
    folder = tmp_path_factory.mktemp("page")
    config = write_config(folder / "mlflow.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db", serving={
        "requests_dir": str(folder / "served"), "feedback_batch": 1000, "feedback_seconds": 600})
    with serving_process(folder, config, "--model", logreg_onnx) as served:
        yield served.url


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
