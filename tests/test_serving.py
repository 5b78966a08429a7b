"""End to end: `digitpipe serve` on 127.0.0.1 against a registry with a champion (logreg v1, an mlp v2 beside it),
as a user and an MLflow client call it: the same digits as `digitpipe score`, MLflow's /invocations form for both
models, every bad request its 4xx while /health answers, a moved and rolled-back champion followed, page feedback
in the store as web feedback, kept out of retraining unless trusted."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import assert_one_line_error, digitpipe, environ, serving_process, wait_for, write_config

pytestmark = [pytest.mark.slow, pytest.mark.servers]
SERVING = {"poll_seconds": 1, "feedback_batch": 2, "feedback_seconds": 30, "drift_window": 100}


@pytest.fixture(scope="module")
def store(tmp_path_factory, fixture_dir, prefect_api):
    """A folder with a config and a store where `run` registered logreg (v1, the champion) and an mlp (v2)."""
    folder = tmp_path_factory.mktemp("serving")
    config = write_config(folder / "mlflow.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db",
                          serving={**SERVING, "requests_dir": str(folder / "served")})
    done = digitpipe("run", "--data", fixture_dir, "--models", "logreg,mlp", "--epochs", "2", "--quiet",
                     "--out", folder / "out", "--config", config, cwd=folder, timeout=300)
    assert done.code == 0, done.err
    return folder, config


@pytest.fixture(scope="module")
def champion_server(store):
    with serving_process(*store) as served:
        yield served


def test_the_api_answers_the_digits_that_score_writes(store, champion_server, fixture_dir, digits, tmp_path):
    folder, config = store
    done = digitpipe("score", "--model", "models:/digits@champion", "--input", fixture_dir, "--output",
                     tmp_path / "p.csv", "--config", config, cwd=folder, timeout=300)
    assert done.code == 0, done.err
    scored = np.loadtxt(tmp_path / "p.csv", delimiter=",", skiprows=1, dtype=int)[:, 1]
    answered = champion_server.predict(digits.images)  # 1,000 digits: one batch
    assert (answered["model"], answered["version"], answered["precision"]) == ("logreg", "1", "fp32")
    assert [p["digit"] for p in answered["predictions"]] == scored.tolist()
    assert len({p["request_id"] for p in answered["predictions"]}) == len(digits)
    client, experiment = _store_client(folder)  # a drift window closes at 100 digits or more: this one at 1,000
    windows = wait_for(lambda: client.search_runs([experiment], "tags.`digitpipe.kind` = 'serving'"), 60,
                       "a served window's run")
    assert windows[0].data.tags["drift_verdict"] == "ok"  # the digits it was trained on
    assert windows[0].data.params["window_digits"] == "1000" and windows[0].data.params["version"] == "1"
    assert any(key.startswith("drift_psi_") for key in windows[0].data.metrics)


def test_invocations_answer_in_mlflows_form_for_logreg_and_for_a_net(store, champion_server, digits):
    import pandas as pd
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    frame = pd.DataFrame(digits.images[:20].reshape(20, 784), columns=[f"pixel{i}" for i in range(784)])
    with serving_process(*store, "--model", "models:/digits/2") as net_server:
        for served, model in ((champion_server, "logreg"), (net_server, "mlp")):
            host, port = served.url.removeprefix("http://").split(":")
            client = ScoringServerClient(host, int(port))
            client.wait_server_ready(timeout=30)
            probabilities = np.asarray(client.invoke(frame).get_predictions())
            assert probabilities.shape == (20, 10)
            np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-4)
            digits_said = [p["digit"] for p in served.predict(digits.images[:20])["predictions"]]
            assert probabilities.argmax(1).tolist() == digits_said
            status, head, _ = served.call("/invocations", json.dumps({"inputs": digits.images[:2].tolist()}).encode())
            assert (status, head["x-model-name"]) == (200, model)


def _png(image: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).resize((28 * scale, 28 * scale)).save(buffer, "PNG")
    return buffer.getvalue()


BAD = [  # (path, body, content type, status, the start of the one line)
    ("/predict", b'{"images": [1, 2', "application/json", 400, "the body is not valid JSON"),
    ("/predict", json.dumps({"images": [[1, 2]]}).encode(), "application/json", 422,
     "images[0]: an image is 784 numbers, 28 rows of 28 numbers, or 1x28x28"),
    ("/predict", json.dumps({"images": [[300] * 784]}).encode(), "application/json", 422,
     "images[0][0]: a pixel must be a number from 0 to 255, not 300"),
    ("/predict", b'{"images": [[NaN' + b", 0" * 783 + b"]]}", "application/json", 422,
     "images[0][0]: a pixel must be a number from 0 to 255, not NaN"),
    ("/predict", b'{"images": [[' + b"1" * 401 + b", 0" * 783 + b"]]}", "application/json", 422,
     "images[0][0]: a pixel must be a number from 0 to 255, not an out-of-range number"),
    ("/predict", b'{"images": [["12"' + b", 0" * 783 + b"]]}", "application/json", 422,
     "images[0][0]: a pixel must be a number from 0 to 255, not a string"),
    ("/predict", json.dumps({"images": [[0] * 784] * 1025}).encode(), "application/json", 413,
     "images: 1,025 images; at most 1,024"),
    ("/predict", b"hello", "text/plain", 415, "Content-Type text/plain"),
    ("/predict", b"GIF89a....", "image/png", 400, "not a PNG or JPEG picture"),
    ("/invocations", json.dumps({"rows": []}).encode(), "application/json", 422,
     "rows: not a field of this body (its fields: dataframe_split, dataframe_records, instances, inputs, params)"),
    ("/invocations", b"0," * 783 + b"0\n", "text/csv", 422, "text/csv: the first row must be the header"),
    ("/feedback", json.dumps({"request_id": "nope", "label": 3}).encode(), "application/json", 404,
     "request_id 'nope': no answer kept"),
    ("/nowhere", b"{}", "application/json", 404, "Not Found"),
]


@pytest.mark.parametrize(("path", "body", "kind", "status", "message"), BAD, ids=[b[4][:30] for b in BAD])
def test_a_bad_request_gets_its_4xx_and_one_line(champion_server, path, body, kind, status, message):
    got, _, reply = champion_server.call(path, body, kind)
    assert (got, reply["error"][: len(message)]) == (status, message)


def test_a_truncated_png_and_a_bad_feedback_label_are_refused(champion_server, digits):
    picture = _png(digits.images[0], scale=12)
    status, _, reply = champion_server.call("/predict", picture[: len(picture) // 2], "image/png")
    assert status == 400 and reply["error"].startswith("a damaged PNG picture")
    rid = champion_server.predict(digits.images[:1])["predictions"][0]["request_id"]
    status, _, reply = champion_server.call("/feedback", json.dumps({"request_id": rid, "label": 10}).encode())
    assert (status, reply["error"]) == (422, 'label: expected "right" or the true digit 0-9, not 10')


def test_bodies_over_the_limit_are_refused_early_and_as_they_stream(champion_server):
    host, port = champion_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as conn:  # 50 MB announced, none of it sent
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 52428800\r\n\r\n")
        assert conn.recv(200).startswith(b"HTTP/1.1 413 ")
    for kind, megabytes in ((b"image/png", 6), (b"application/json", 35)):  # over 4 and 32 MiB
        with socket.create_connection((host, int(port)), timeout=30) as conn:  # chunked: no length to read first
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + kind + b"\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"1" * 1_000_000
            with contextlib.suppress(OSError):  # the server may close as soon as it has answered
                for _ in range(megabytes):
                    conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            assert conn.recv(200).startswith(b"HTTP/1.1 413 ")


def test_health_answers_while_bad_requests_are_refused(champion_server):
    stop, refused, failed = threading.Event(), [], []

    def flood():
        body = json.dumps({"images": [[[-5] * 28] * 28] * 900}).encode()
        while not stop.is_set():
            try:
                refused.append(champion_server.call("/predict", body)[0])
            except OSError as exc:  # a reset or refused connection: what the test is for
                failed.append(exc)

    floods = [threading.Thread(target=flood) for _ in range(4)]
    for thread in floods:
        thread.start()
    try:
        health = [champion_server.call("/health")[0] for _ in range(20)]
    finally:
        stop.set()
        for thread in floods:
            thread.join()
    assert health == [200] * 20 and refused and set(refused) == {422} and failed == []
    metrics = champion_server.call("/metrics")[2].decode()
    assert 'digitpipe_errors_total{route="/predict",status="422"}' in metrics
    assert 'digitpipe_served_version{model="logreg",precision="fp32",version="1"} 1.0' in metrics


def test_page_feedback_lands_in_the_store_as_web_feedback_out_of_retraining(store, champion_server, digits):
    from digitpipe.data import Dataset
    from digitpipe.monitoring.feedback import held_out

    folder, config = store
    drawn = np.roll(digits.images[:10], 1, axis=2)  # not the fixture's own digits, which retraining leaves out
    answered = champion_server.predict(drawn)["predictions"]
    labels = [p["digit"] if i < 5 else (p["digit"] + 1) % 10 for i, p in enumerate(answered)]
    for answer, label in zip(answered, ["right"] * 5 + labels[5:], strict=True):
        status, _, reply = champion_server.call("/feedback", json.dumps({"request_id": answer["request_id"],
                                                                         "label": label}).encode())
        assert status == 202 and reply["request_id"] == answer["request_id"]
    client, experiment = _store_client(folder)
    wait_for(lambda: sum(r.data.metrics.get("labelled_rows", 0) for r in client.search_runs(  # runs being written
        [experiment], "tags.source = 'web'")) == 10, 60, "10 answers recorded as web feedback")
    tags = wait_for(lambda: (t := client.get_model_version("digits", "1").tags).get("web_live_accuracy_rows") == "10"
                    and t, 30, "the version's web_live_accuracy over all 10")  # tagged after its batch's run
    assert float(tags["web_live_accuracy"]) == 0.5 and "live_accuracy" not in tags  # the page's figure is its own
    assert 'digitpipe_web_live_accuracy 0.5' in champion_server.call("/metrics")[2].decode()
    second = json.dumps({"request_id": answered[0]["request_id"], "label": 9}).encode()
    again = champion_server.call("/feedback", second)
    assert again[:3:2] == (409, {"error": f"request_id {answered[0]['request_id']}: feedback was given already (the "
                                          f"digit {answered[0]['digit']}); an answer takes one label, the first"})
    with serving_process(*store) as restarted:  # a new start reads the version's figures from the store
        assert 'digitpipe_web_live_accuracy 0.5' in restarted.call("/metrics")[2].decode()

    untrusted = _retrain(folder, config)
    assert "labelled feedback: 0 digits added to training" in untrusted.err, untrusted.err
    trusting = write_config(folder / "trusting.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db",
                            monitoring={"trust_web_feedback": True})
    trained_on = int((~held_out(Dataset(drawn, np.array(labels)))).sum())
    assert f"labelled feedback: {trained_on:,} digits added to training" in _retrain(folder, trusting).err


def _store_client(folder: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    return client, client.get_experiment_by_name("digitpipe").experiment_id


def _retrain(folder: Path, config: Path):
    done = digitpipe("run", "--feedback", "--data", Path(__file__).parent / "fixtures" / "mnist-1000", "--models",
                     "logreg", "--quiet", "--out", folder / "retrain", "--config", config, cwd=folder, timeout=300)
    assert done.code == 0, done.err
    return done


def test_listening_beyond_loopback_needs_a_feedback_token(store):
    folder, config = store
    done = digitpipe("serve", "--host", "0.0.0.0", "--config", config, cwd=folder,
                     env=environ(DIGITPIPE_FEEDBACK_TOKEN=None), timeout=60)
    assert_one_line_error(done.code, done.err, 2, "--host 0.0.0.0 listens beyond loopback: set "
                                                  "DIGITPIPE_FEEDBACK_TOKEN")


def test_with_a_token_feedback_needs_it(store, digits):
    with serving_process(*store, env=environ(DIGITPIPE_FEEDBACK_TOKEN="s3cret")) as served:
        rid = served.predict(digits.images[:1])["predictions"][0]["request_id"]
        body = json.dumps({"request_id": rid, "label": "right"}).encode()
        assert served.call("/feedback", body)[0] == 401
        assert served.call("/feedback", body, headers={"Authorization": "Bearer s3cret"})[0] == 202
    assert "cannot record" not in served.log and "kept in" not in served.log  # recorded when it stopped


def test_a_moved_champion_and_its_rollback_are_followed_without_a_failed_request(store, digits):
    folder, config = store
    with serving_process(*store) as served:
        before, seen, failed, stop = served.version(), [], [], threading.Event()

        def ask():
            body = json.dumps({"images": digits.images[:4].tolist()}).encode()
            while not stop.is_set():
                try:
                    status, head, _ = served.call("/predict", body)
                    seen.append((status, head.get("x-model-version")))
                except OSError as exc:  # a reset or refused connection during the swap
                    failed.append(exc)

        asking = threading.Thread(target=ask)
        asking.start()
        try:
            assert digitpipe("promote", "--version", "2", "--config", config, cwd=folder).code == 0
            wait_for(lambda: served.version() == "2", 30, "v2 served after the promotion")
            assert digitpipe("promote", "--rollback", "--config", config, cwd=folder).code == 0
            wait_for(lambda: served.version() == before, 30, f"v{before} served after the rollback")
        finally:
            stop.set()
            asking.join()
    assert failed == [] and {status for status, _ in seen} == {200}
    assert {version for _, version in seen} == {before, "2"}
    assert f"serving models:/digits@champion v2 (was v{before})" in served.log


@pytest.mark.browser
def test_the_page_draws_a_digit_shows_the_answer_and_sends_a_correction(store, tmp_path, chromium):
    """Debian's Chromium, headless, driven by Playwright: a person draws with pointer strokes and corrects."""
    browser, shots = chromium
    folder, config = store
    client, experiment = _store_client(folder)
    before = len(client.search_runs([experiment], "tags.source = 'web'"))
    with serving_process(*store) as served:
        page = browser.new_page(viewport={"width": 420, "height": 760})
        page.goto(served.url + "/")
        box = page.locator("#pad").bounding_box()
        x, y = box["x"], box["y"]
        page.mouse.move(x + 100, y + 60)  # a 7: the bar, then the stem
        page.mouse.down()
        for px, py in ((180, 60), (190, 62), (160, 140), (135, 220)):
            page.mouse.move(x + px, y + py, steps=8)
        page.mouse.up()
        page.locator("#answer").filter(has_text=re.compile(r"^\d$")).wait_for(timeout=30_000)
        assert page.locator("#bars .bar").count() == 3
        assert page.inner_text("#served").startswith("answered by ")
        page.screenshot(path=shots / "serving-page.png")
        page.locator("#digits button", has_text="7").click()
        page.get_by_text(re.compile("thanks: (confirmed|recorded as a 7)")).wait_for(timeout=30_000)
    runs = client.search_runs([experiment], "tags.source = 'web'", order_by=["attributes.start_time DESC"])
    assert len(runs) == before + 1  # recorded when the server stopped (fewer than a batch were waiting)
    saved = np.load(client.download_artifacts(runs[0].info.run_id, "feedback/feedback.npz", str(tmp_path)))
    assert saved["labels"].tolist() == [7] and saved["images"].shape == (1, 28, 28) and saved["images"].max() > 0


def test_a_drifted_served_window_raises_an_alarm_only_where_the_setting_asks(store, digits):
    folder, config = store
    client, experiment = _store_client(folder)
    shifted = np.roll(digits.images[:100], 4, axis=2)  # as tests/test_loop.py drifts a batch: 4 pixels right
    with serving_process(*store) as quiet:
        version = quiet.predict(shifted)["version"]
    windows = client.search_runs([experiment], "tags.`digitpipe.kind` = 'serving' and tags.drift_verdict = 'drift'")
    assert windows, "a window of digits shifted by 4 pixels is judged drifted"
    assert "monitor_alarm" not in client.get_model_version("digits", version).tags
    asking = write_config(folder / "drift-events.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db",
                          serving={**SERVING, "requests_dir": str(folder / "served"), "drift_events": True})
    with serving_process(folder, asking) as loud:
        loud.predict(shifted)
        alarm = wait_for(lambda: client.get_model_version("digits", version).tags.get("monitor_alarm"), 60,
                         "the drifted window's alarm on the version served")
    assert alarm.startswith(f"digitpipe.drift.detected for v{version} (the batch drifted from the training data)")
