"""People's drawn digits through the real page: each held-out digit's pointer strokes (digitpipe.people.pointer_paths)
drawn with Playwright's mouse on the drawing page in Debian's Chromium, against `digitpipe serve --model ONNX`, beside
the library's rendering of the same strokes (people.page_png read as the service reads it). Prints: digits, accuracy
through the page, accuracy of the library path, how often the two answers agree, the correlation of the 28x28 form the
service kept for the page's drawing with the library's, and seconds per digit through the page.

Held-out digits: a seeded sample of the folder's t10k part where it has one, else of its training images less the
1,000 of tests/fixtures/mnist-1000 (the fallback model's). Each digit's strokes come from the same seeded draw as
people.family("drawn", ...), so the library path here is that family.

Usage: python bench/people_page.py [MNIST_DIR] [--onnx PATH] [--digits 50] [--seed 0]
--onnx defaults to the fastcnn bench/people.py keeps (outputs/people-bench/shipped/fastcnn-42.onnx); where that is
absent, a logistic regression fitted on the test fixture (seconds) stands in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from _common import ROOT, data_parser, data_path

from digitpipe import people
from digitpipe.data import load_dataset
from digitpipe.data.formats import idx_parts
from digitpipe.onnx_scorer import OnnxScorer

DIGITPIPE = Path(sys.executable).with_name("digitpipe")
SHIPPED = ROOT / "outputs" / "people-bench" / "shipped" / "fastcnn-42.onnx"
FIXTURE = ROOT / "tests" / "fixtures" / "mnist-1000"
WAIT_MS = 30_000  # a guard against a hung page, not a measurement


def main() -> None:
    parser = data_parser()
    parser.add_argument("--onnx", type=Path, default=None, help=f"default {SHIPPED.relative_to(ROOT)}")
    parser.add_argument("--digits", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed (people.family's)")
    args = parser.parse_args()
    if args.onnx and not args.onnx.is_file():
        parser.error(f"--onnx {args.onnx}: no such file")
    chromium = shutil.which("chromium")
    if chromium is None:
        print("skipped: Debian's chromium is not installed (apt-get install chromium)")
        return
    images, labels, source = held_out(data_path(args), args.digits)
    with tempfile.TemporaryDirectory(prefix="people-page-") as tmp:
        folder = Path(tmp)
        model = args.onnx or (SHIPPED if SHIPPED.exists() else fixture_logreg(folder))
        print(f"{len(images)} held-out digits ({source}), model {model}", flush=True)
        paths = [people.pointer_paths(image, drawn_rng(image, args.seed)) for image in images]
        library = np.stack([people.read_as_service(people.page_png(p)) for p in paths])
        with serving(model, folder) as (url, requests_dir):
            start = time.perf_counter()
            answers, ids = through_page(chromium, url, paths)
            seconds = time.perf_counter() - start
            kept = kept_pixels(requests_dir, ids)
        said = OnnxScorer(model).predict(library)
    report(labels, answers, said, library, kept, seconds, on_pad_whole(paths))


def held_out(folder: Path, count: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A seeded sample of `count` digits: t10k (held out from every zoo model), else training images off the fixture
    (held out from the stand-in logistic regression only: the source line says which)."""
    if "t10k" in idx_parts(folder):
        data, source = load_dataset(folder, part="t10k"), f"t10k of {folder}"
        pool = np.arange(len(data))
    else:
        data, source = load_dataset(folder), f"{folder} less the test fixture"
        fitted = {image.tobytes() for image in load_dataset(FIXTURE).images}
        pool = np.array([i for i, image in enumerate(data.images) if image.tobytes() not in fitted])
    sample = np.sort(np.random.default_rng(0).permutation(pool)[:count])
    return data.images[sample], data.labels[sample], source


def drawn_rng(image: np.ndarray, seed: int) -> np.random.Generator:
    """The digit's draw as people.family("drawn") seeds it: from its pixels, so the strokes are that family's."""
    pixels = int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, people.FAMILIES.index("drawn"), pixels])


def fixture_logreg(folder: Path) -> Path:
    """The stand-in model: the zoo's logistic regression fitted on the test fixture, exported as digitpipe does."""
    from digitpipe.baseline import fit_logreg
    from digitpipe.export import export_onnx
    from digitpipe.records.specs import spec_for

    return export_onnx(fit_logreg(spec_for("logreg"), load_dataset(FIXTURE)), folder / "logreg-fixture.onnx")


@contextlib.contextmanager
def serving(model: Path, folder: Path):
    """`digitpipe serve --model MODEL` on a free loopback port until the block ends; (its URL, its requests dir)."""
    from flows.startup import free_port

    requests_dir, port = folder / "served", free_port()
    config = folder / "mlflow.yaml"  # JSON is YAML: the store and the requests folder of this run only
    config.write_text(json.dumps({"tracking_uri": f"sqlite:///{folder}/mlflow.db",
                                  "serving": {"requests_dir": str(requests_dir)}}))
    process = subprocess.Popen([DIGITPIPE, "serve", "--config", config, "--port", str(port), "--model", model],
                               cwd=folder, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url)
        yield url, requests_dir
    finally:
        process.terminate()
        process.wait(60)


def wait_until_up(process: subprocess.Popen, url: str) -> None:
    """Returns once the service answers /health; ends the bench with its error if it exits or never answers."""
    for _ in range(240):
        if process.poll() is not None:
            raise SystemExit(f"digitpipe serve exited: {process.stderr.read()[-2000:]}")
        with contextlib.suppress(OSError):
            urllib.request.urlopen(url + "/health", timeout=1)
            return
        time.sleep(0.5)
    raise SystemExit("digitpipe serve did not answer /health within 120 s")


def through_page(chromium: str, url: str, paths: list[list[np.ndarray]]) -> tuple[np.ndarray, list[str]]:
    """Each digit's strokes drawn on a fresh tab of the page; (the answers it shows, their request ids)."""
    from playwright.sync_api import sync_playwright

    answers, ids = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        for strokes in paths:
            tab = browser.new_page(viewport={"width": 420, "height": 760})
            tab.goto(url + "/")
            digit, request_id = draw_digit(tab, strokes)
            answers.append(digit)
            ids.append(request_id)
            tab.close()
        browser.close()
    return np.array(answers), ids


def draw_digit(page, strokes: list[np.ndarray]) -> tuple[int, str | None]:
    """One mouse stroke per path (a pointer event at each point); (the digit shown for the whole drawing, its id),
    or (-1, None) when no stroke starts on the pad. The page asks at every stroke's end that began on the pad (one
    that begins off it draws nothing, as for a person): the last such request is the whole digit's."""
    box = page.locator("#pad").bounding_box()
    last = str(len(on_pad(strokes)))  # the page numbers its requests 1, 2, ... from its load
    if last == "0":
        return -1, None
    with page.expect_response(lambda r: r.url.endswith("/predict")
                              and r.request.headers.get("x-page-seq") == last, timeout=WAIT_MS) as answered:
        for stroke in strokes:
            page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
            page.mouse.down()
            for x, y in stroke[1:]:
                page.mouse.move(box["x"] + x, box["y"] + y)
            page.mouse.up()
    request_id = answered.value.json()["predictions"][0]["request_id"]
    page.locator(f'#result[data-request-id="{request_id}"]').wait_for(state="visible", timeout=WAIT_MS)
    return int(page.inner_text("#answer")), request_id


def on_pad(strokes: list[np.ndarray]) -> list[np.ndarray]:
    """The strokes that start on the pad (the page draws only those)."""
    return [s for s in strokes if 0 <= s[0].min() and s[0].max() < people.PAD_SIDE]


def kept_pixels(requests_dir: Path, ids: list[str | None]) -> np.ndarray:
    """The 28x28 digits the service kept under `ids` (its answered requests, digitpipe.serving.requests); all
    black where the page asked nothing."""
    from digitpipe.serving.requests import Answer

    kept = {}
    for path in sorted(requests_dir.glob("requests-*.jsonl")):
        for line in path.read_bytes().splitlines():
            if answer := Answer.parse(line):
                kept[answer.request_id] = answer.image()
    return np.stack([kept.get(i, np.zeros((28, 28), np.uint8)) for i in ids])


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images' pixels (nan where one is blank)."""
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1])


def aligned(a: np.ndarray, b: np.ndarray) -> float:
    """`correlation` at its best over moving `a` by at most one pixel each way (the reader centres a digit by its
    mass to a whole pixel: slightly different edges can tip it to the next one)."""
    padded = np.pad(a, 1)
    return max(correlation(padded[1 + dy : 29 + dy, 1 + dx : 29 + dx], b) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def on_pad_whole(paths: list[list[np.ndarray]]) -> np.ndarray:
    """Per digit, whether every pointer position lies on the pad (else the page cannot draw it as the library
    does: a stroke that starts off the pad draws nothing there)."""
    return np.array([0 <= np.concatenate(p).min() and np.concatenate(p).max() < people.PAD_SIDE for p in paths])


def report(labels, page, library, library_images, kept, seconds: float, whole: np.ndarray) -> None:
    """The table: accuracies and agreement over every digit, correlations over those drawn whole on the pad."""
    correlations = [correlation(a, b) for a, b, w in zip(kept, library_images, whole) if w]
    best = [aligned(a, b) for a, b, w in zip(kept, library_images, whole) if w]
    print(f"digits {len(labels)} ({int(np.sum(~whole))} with pointer positions off the pad)")
    print(f"accuracy through the page     {100 * np.mean(page == labels):6.2f}%")
    print(f"accuracy of the library path  {100 * np.mean(library == labels):6.2f}%")
    print(f"page and library agree        {100 * np.mean(page == library):6.2f}%  ({int(np.sum(page == library))} "
          f"of {len(labels)})")
    print(f"28x28 correlation, page vs library, the {len(correlations)} on the pad: median {np.nanmedian(correlations):.4f}, "
          f"10th percentile {np.nanpercentile(correlations, 10):.4f}, min {np.nanmin(correlations):.4f}; "
          f"within one pixel: median {np.nanmedian(best):.4f}, min {np.nanmin(best):.4f}")
    print(f"seconds per digit through the page {seconds / len(labels):.2f}")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    main()
