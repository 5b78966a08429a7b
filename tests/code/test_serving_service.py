"""The service in-process (Starlette's TestClient) serving models:/NAME@champion from the session's sqlite store (its
own experiment and registered model): every operation of digitpipe.serving.app.OPERATIONS with the exact status and
JSON a client sees, /metrics counting what was asked, refusals as one line of JSON, and a moved champion alias
answering the next request (refresh() called directly: no polling, no sleeping) while the version it replaced still
scores and its feedback is recorded on it."""

from __future__ import annotations

import importlib.metadata
import io
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import ANY

import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from digitpipe.config import ServingConfig, TrackingConfig
from digitpipe.export import export_onnx
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.serving.api import openapi
from digitpipe.serving.app import OPERATIONS, PAGE, build_app
from digitpipe.serving.follower import ModelFollower
from digitpipe.serving.inputs import picture_image
from digitpipe.serving.middleware import SMALL_BODY
from digitpipe.serving.service import Service
from digitpipe.tracking import tracker_for

NAME = "serving-test"
CHAMPION = f"models:/{NAME}@champion"
LOOPBACK = {"127.0.0.1", "localhost"}
V1 = {"x-model-name": "logreg", "x-model-version": "1", "x-model-precision": "fp32"}
PIXELS = [f"pixel{i}" for i in range(784)]


def centroid_onnx(digits, path: Path) -> Path:
    """A second real digit model without a fit: each digit's mean image as a linear classifier, exported as digitpipe
    exports its logistic regression."""
    flat = digits.images.reshape(-1, 784).astype(np.float64)
    means = np.stack([flat[digits.labels == d].mean(0) for d in range(10)])
    scale = 255.0 ** 2 * 20  # logits a few units apart, not a one-hot softmax
    return export_onnx(SimpleNamespace(predict_proba=None, classes_=np.arange(10), coef_=means / scale,
                                       intercept_=-0.5 * (means ** 2).sum(1) / scale), path)


def serving(tracking: TrackingConfig, folder: Path) -> TrackingConfig:
    """`tracking` with its answers kept in `folder` and feedback recorded only when the service stops."""
    return tracking.model_copy(update={"serving": ServingConfig(
        requests_dir=str(folder), feedback_batch=1000, feedback_seconds=600, poll_seconds=600)})


def service_of(tracking: TrackingConfig) -> Service:
    return Service(ModelFollower(CHAMPION, tracking, poll_seconds=600), tracker_for(tracking), tracking)


@pytest.fixture(scope="module")
def store(mlflow_store, logreg_onnx, digits, tmp_path_factory):
    """Version 1 (the logistic regression) and version 2 (the centroid model) of NAME, the champion alias on 1:
    (tracking, registry, {version: .onnx file})."""
    folder = tmp_path_factory.mktemp("serving-store")
    tracking = TrackingConfig(tracking_uri=mlflow_store, experiment=NAME, registered_model=NAME,
                              artifact_location=str(folder / "artifacts"))
    tracker, files = tracker_for(tracking), {}
    for name, onnx in (("logreg", logreg_onnx), ("centroid", centroid_onnx(digits, folder / "centroid.onnx"))):
        with tracker.runs.run(name) as run_id:
            files[tracker.registry.register_onnx(run_id, onnx, digits.images[:5], {"model_name": name})] = onnx
    assert sorted(files) == ["1", "2"]  # a fresh registered model in the session's store
    tracker.registry.set_alias("champion", "1")
    return tracking, tracker.registry, files


@pytest.fixture(scope="module")
def service(store, tmp_path_factory):
    tracking, registry, _ = store
    registry.set_alias("champion", "1")
    return service_of(serving(tracking, tmp_path_factory.mktemp("served")))


@pytest.fixture(scope="module")
def client(service):
    with TestClient(build_app(service, LOOPBACK), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def expected(store):
    """What each version's .onnx file answers, straight from onnxruntime: the replies' probabilities."""
    _, _, files = store
    scorers = {version: OnnxScorer(path) for version, path in files.items()}
    return lambda images, version="1": scorers[version].scores(images)


def predicted(version: str, model: str, probabilities: np.ndarray) -> dict:
    """/predict's exact reply for `probabilities` (request ids aside: new for every answer)."""
    return {"model": model, "version": version, "precision": "fp32", "predictions": [
        {"request_id": ANY, "digit": int(p.argmax()), "probabilities": [round(float(v), 6) for v in p]}
        for p in probabilities]}


def samples(client) -> dict[tuple, float]:
    """GET /metrics as {(sample name, sorted labels): value}."""
    reply = client.get("/metrics")
    assert reply.status_code == 200 and reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(reply.text) for s in family.samples}


def png(image: np.ndarray, scale: int = 4) -> bytes:
    """A digit as a person draws it: dark ink on white, larger than MNIST's 28 pixels."""
    picture = Image.fromarray(255 - image).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def test_the_page(client):
    reply = client.get("/")
    assert (reply.status_code, reply.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert reply.text == (PAGE / "index.html").read_text()
    assert {k: reply.headers[k] for k in V1} == V1
    assert client.get("/static/page.js").text == (PAGE / "page.js").read_text()  # what the page loads


def test_health_names_the_version_answering(client):
    reply = client.get("/health")
    assert (reply.status_code, reply.json()) == (200, {"status": "ready", "model": "logreg", "version": "1",
                                                       "precision": "fp32", "feedback_token": False})
    assert {k: reply.headers[k] for k in V1} == V1


def test_mlflows_ping_and_the_version(client):
    assert (client.get("/ping").status_code, client.get("/ping").json()) == (200, {})
    version = client.get("/version")
    assert (version.status_code, version.text) == (200, importlib.metadata.version("digitpipe"))


def test_openapi_document_lists_every_operation(client):
    reply = client.get("/openapi.json")
    doc = reply.json()
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    assert doc == openapi(OPERATIONS, "digitpipe serve", importlib.metadata.version("digitpipe"))
    assert doc["openapi"] == "3.1.0"
    assert {(path, method) for path, ops in doc["paths"].items() for method in ops} == {
        (op.path, op.method.lower()) for op in OPERATIONS}
    assert set(doc["paths"]["/feedback"]["post"]["responses"]) == {"202", "400", "401", "404", "408", "409", "413",
                                                                    "415", "422"}


def test_predict_a_json_batch(client, digits, expected):
    images = digits.images[:3]
    reply = client.post("/predict", json={"images": images.tolist()})
    assert reply.status_code == 200 and {k: reply.headers[k] for k in V1} == V1
    body = reply.json()
    assert body == predicted("1", "logreg", expected(images))
    ids = [p["request_id"] for p in body["predictions"]]
    assert len(set(ids)) == 3 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # uuid4 hex
    # the list alone, 28 rows of 28 and 1x28x28 are the same digits
    for shaped in (images.tolist(), {"images": images[:, None].tolist()}, {"images": images.reshape(3, -1).tolist()}):
        assert client.post("/predict", json=shaped).json() == body | {"predictions": [
            {**p, "request_id": ANY} for p in body["predictions"]]}
    assert [p["digit"] for p in body["predictions"]] == digits.labels[:3].tolist()  # real digits, read right


def test_predict_a_picture(client, digits, expected):
    index = int(np.flatnonzero(digits.labels == 7)[0])
    picture = png(digits.images[index])
    answer = predicted("1", "logreg", expected(picture_image(picture)))  # the picture brought to MNIST's form
    raw = client.post("/predict", content=picture, headers={"content-type": "image/png"})
    upload = client.post("/predict", files={"file": ("seven.png", picture, "image/png")})
    for reply in (raw, upload):
        assert (reply.status_code, reply.json()) == (200, answer)
        assert {k: reply.headers[k] for k in V1} == V1
    assert answer["predictions"][0]["digit"] == 7


def test_invocations_takes_mlflows_dataframe_split(client, digits, expected):
    images = digits.images[:4]
    body = {"dataframe_split": {"columns": PIXELS, "index": [0, 1, 2, 3], "data": images.reshape(4, -1).tolist()}}
    reply = client.post("/invocations", json=body)
    assert reply.status_code == 200 and {k: reply.headers[k] for k in V1} == V1
    assert reply.json() == {"predictions": expected(images).tolist()}  # unrounded: MLflow's [N, 10] float32 rows
    csv = ",".join(PIXELS) + "\n" + "\n".join(",".join(map(str, row)) for row in images.reshape(4, -1))
    as_csv = client.post("/invocations", content=csv, headers={"content-type": "text/csv"})
    assert (as_csv.status_code, as_csv.json()) == (200, reply.json())


def test_feedback_takes_one_label_per_answer(client, service, digits):
    rids = [p["request_id"] for p in client.post("/predict", json={"images": digits.images[:2].tolist()})
            .json()["predictions"]]
    served = [service.requests.find(rid).digit for rid in rids]
    waiting = len(service.feedback._pending)
    right = client.post("/feedback", json={"request_id": rids[0], "label": "right"})
    assert (right.status_code, right.json()) == (202, {"request_id": rids[0], "served": served[0],
                                                       "label": served[0], "right": True, "waiting": waiting + 1})
    assert {k: right.headers[k] for k in V1} == V1
    wrong = (served[1] + 1) % 10
    corrected = client.post("/feedback", json={"request_id": rids[1], "label": wrong})
    assert (corrected.status_code, corrected.json()) == (202, {"request_id": rids[1], "served": served[1],
                                                               "label": wrong, "right": False, "waiting": waiting + 2})
    again = client.post("/feedback", json={"request_id": rids[0], "label": wrong})
    assert (again.status_code, again.json()) == (409, {"error": f"request_id {rids[0]}: feedback was given already "
                                                                f"(the digit {served[0]}); an answer takes one label, "
                                                                "the first"})
    unknown = client.post("/feedback", json={"request_id": "0" * 32, "label": 3})
    assert (unknown.status_code, unknown.json()) == (404, {"error": f"request_id {'0' * 32!r}: no answer kept under "
                                                                    "that id"})
    assert service.feedback._pending[rids[1]][1] == wrong and len(service.feedback._pending) == waiting + 2


def test_metrics_count_what_was_asked(client, digits):
    before = samples(client)
    client.post("/predict", json={"images": digits.images[:2].tolist()})
    client.post("/predict", json={"images": digits.images[:1].tolist()})
    client.post("/predict", content=b"{")
    client.get("/nowhere")
    after = samples(client)

    def grew(name: str, **labels) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("digitpipe_requests_total", route="/predict", status="200") == 2
    assert grew("digitpipe_requests_total", route="/predict", status="400") == 1
    assert grew("digitpipe_errors_total", route="/predict", status="400") == 1
    assert grew("digitpipe_requests_total", route="other", status="404") == 1  # unknown paths: one route label
    assert grew("digitpipe_requests_total", route="/metrics", status="200") == 1  # the first GET /metrics
    assert grew("digitpipe_request_seconds_count", route="/predict") == 3
    assert grew("digitpipe_digits_served_total") == 3
    assert after[("digitpipe_served_version", (("model", "logreg"), ("precision", "fp32"), ("version", "1")))] == 1
    assert not any(name == "digitpipe_requests_total" and dict(labels)["status"].startswith("5")
                   for name, labels in after)


def test_live_accuracy_counts_the_versions_answers(client, service, digits):
    rid = client.post("/predict", json={"images": digits.images[:1].tolist()}).json()["predictions"][0]["request_id"]
    before = samples(client)
    client.post("/feedback", json={"request_id": rid, "label": "right"})
    after = samples(client)
    confirmed = ("digitpipe_feedback_total", (("answer", "confirmed"),))
    assert after[confirmed] - before.get(confirmed, 0) == 1
    right, answered = service.metrics._answered
    assert after[("digitpipe_web_live_accuracy", ())] == pytest.approx(right / answered)


def test_feedback_with_a_token_needs_it(store, digits, tmp_path):
    tracking, _, _ = store
    tracking = serving(tracking, tmp_path / "served")
    service = Service(ModelFollower(CHAMPION, tracking, 600), tracker_for(tracking), tracking, token="s3cret")
    with TestClient(build_app(service, LOOPBACK), base_url="http://127.0.0.1") as client:
        assert client.get("/health").json()["feedback_token"] is True
        rid = client.post("/predict", json={"images": digits.images[:1].tolist()}).json()["predictions"][0][
            "request_id"]
        refused = {"error": "POST /feedback needs the header Authorization: Bearer $DIGITPIPE_FEEDBACK_TOKEN"}
        for given in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret"}):
            reply = client.post("/feedback", json={"request_id": rid, "label": "right"}, headers=given)
            assert (reply.status_code, reply.json()) == (401, refused)
        taken = client.post("/feedback", json={"request_id": rid, "label": 4},
                            headers={"authorization": "Bearer s3cret"})
        assert (taken.status_code, taken.json()["label"]) == (202, 4)
        service.feedback._pending.clear()  # nothing to record when it stops: a feedback run costs time


IMAGE = [0] * 784
REFUSALS = {  # request -> (status, the one line)
    "predict: not JSON": (("/predict", {"content": b"{"}), 400,
                          "the body is not valid JSON (EOF while parsing an object at line 1 column 1)"),
    "predict: a pixel over 255": (("/predict", {"json": {"images": [[256] + IMAGE[1:]]}}), 422,
                                  "images[0][0]: a pixel must be a number from 0 to 255, not 256"),
    "predict: a pixel true": (("/predict", {"json": {"images": [[True] + IMAGE[1:]]}}), 422,
                              "images[0][0]: a pixel must be a number from 0 to 255, not true"),
    "predict: 783 pixels": (("/predict", {"json": {"images": [IMAGE[1:]]}}), 422,
                            "images[0]: an image is 784 numbers, 28 rows of 28 numbers, or 1x28x28"),
    "predict: another field": (("/predict", {"json": {"images": [IMAGE], "labels": [1]}}), 422,
                               "labels: not a field of this body (its fields: images)"),
    "predict: 1,025 images": (("/predict", {"json": {"images": [IMAGE] * 1025}}), 413,
                              "images: 1,025 images; at most 1,024 per request"),
    "predict: a PNG that is not one": (("/predict", {"content": b"not a picture",
                                                     "headers": {"content-type": "image/png"}}), 400,
                                       "not a PNG or JPEG picture"),
    "predict: an upload without a file": (("/predict", {
        "content": b'--b\r\nContent-Disposition: form-data; name="label"\r\n\r\n7\r\n--b--\r\n',
        "headers": {"content-type": "multipart/form-data; boundary=b"}}), 422, "the multipart upload holds no file"),
    "predict: text": (("/predict", {"content": b"7", "headers": {"content-type": "text/plain"}}), 415,
                      "Content-Type text/plain: send application/json, a PNG/JPEG or a multipart upload"),
    "invocations: two inputs": (("/invocations", {"json": {"instances": [IMAGE], "inputs": [IMAGE]}}), 400,
                                ("expected exactly one of dataframe_split, dataframe_records, instances, inputs "
                                 "(MLflow's formats)")),
    "invocations: a column twice": (("/invocations", {"json": {"dataframe_split": {
        "columns": ["pixel0", *PIXELS[:-1]], "data": [IMAGE]}}}), 422,
        "dataframe_split: columns must be pixel0..pixel783 (and an optional label), each once"),
    "invocations: xml": (("/invocations", {"content": b"<x/>", "headers": {"content-type": "application/xml"}}), 415,
                         "Content-Type application/xml: /invocations takes application/json or text/csv"),
    "feedback: label 10": (("/feedback", {"json": {"request_id": "a", "label": 10}}), 422,
                           'label: expected "right" or the true digit 0-9, not 10'),
    "feedback: no request id": (("/feedback", {"json": {"label": 1}}), 422, "request_id: field required"),
    "feedback: text": (("/feedback", {"content": b"right", "headers": {"content-type": "text/plain"}}), 415,
                       "Content-Type text/plain: /feedback takes application/json"),
    "feedback: over its limit": (("/feedback", {"content": b" " * (SMALL_BODY + 1),
                                                "headers": {"content-type": "application/json"}}), 413,
                                 f"request body of {SMALL_BODY + 1:,} bytes: the limit is {SMALL_BODY:,} bytes"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refusal_is_one_line_of_json(client, case):
    (path, request), status, line = REFUSALS[case]
    reply = client.post(path, **request)
    assert (reply.status_code, reply.json()) == (status, {"error": line})
    assert reply.headers["content-type"] == "application/json" and "\n" not in line
    assert {k: reply.headers[k] for k in V1} == V1


def test_routes_and_methods_that_do_not_exist_are_refused_in_json(client):
    nowhere, wrong_method = client.get("/nowhere"), client.get("/predict")
    assert (nowhere.status_code, nowhere.json()) == (404, {"error": "Not Found"})
    assert (wrong_method.status_code, wrong_method.json()) == (405, {"error": "Method Not Allowed"})
    assert wrong_method.headers["allow"] == "POST"


ASKED = {  # one request per operation: (keyword arguments, status)
    ("GET", "/"): ({}, 200), ("GET", "/health"): ({}, 200), ("GET", "/metrics"): ({}, 200),
    ("GET", "/ping"): ({}, 200), ("GET", "/version"): ({}, 200), ("GET", "/openapi.json"): ({}, 200),
    ("POST", "/predict"): ({"json": {"images": [IMAGE]}}, 200),
    ("POST", "/invocations"): ({"json": {"inputs": [IMAGE]}}, 200),
    ("POST", "/feedback"): ({"json": {"request_id": "f" * 32, "label": "right"}}, 404),
}


@pytest.mark.parametrize("op", OPERATIONS, ids=lambda op: f"{op.method} {op.path}")
def test_every_operation_is_answered_as_documented(client, op):
    assert (op.method, op.path) in ASKED, f"{op.method} {op.path}: a new operation needs its tests here"
    kwargs, status = ASKED[op.method, op.path]
    reply = client.request(op.method, op.path, **kwargs)
    documented = {int(s) for s in openapi([op], "t", "0")["paths"][op.path][op.method.lower()]["responses"]}
    assert reply.status_code == status and status in documented
    assert {k: reply.headers[k] for k in V1} == V1


def test_a_moved_champion_answers_the_next_request(store, expected, digits, tmp_path):
    tracking, registry, _ = store
    registry.set_alias("champion", "1")
    service = service_of(serving(tracking, tmp_path / "served"))
    images, rows = digits.images[:5], int(registry.version_tags("1").get("web_live_accuracy_rows", 0))
    try:
        with TestClient(build_app(service, LOOPBACK), base_url="http://127.0.0.1") as client:
            first = client.post("/predict", json={"images": images.tolist()})
            assert (first.headers["x-model-version"], first.json()) == ("1", predicted("1", "logreg", expected(images)))
            before = service.follower.current
            registry.set_alias("champion", "2")
            unfollowed = client.post("/predict", json={"images": images.tolist()})
            assert unfollowed.headers["x-model-version"] == "1"  # until the alias is read again
            assert service.follower.refresh() is True
            second = client.post("/predict", json={"images": images.tolist()})
            assert (second.status_code, second.json()) == (200, predicted("2", "centroid", expected(images, "2")))
            assert {k: second.headers[k] for k in V1} == {**V1, "x-model-name": "centroid", "x-model-version": "2"}
            assert client.get("/health").json()["version"] == "2"
            assert client.post("/invocations", json={"inputs": images.tolist()}).json() == {
                "predictions": expected(images, "2").tolist()}
            gauge = {dict(labels)["version"] for name, labels in samples(client) if name == "digitpipe_served_version"}
            assert gauge == {"2"}  # the gauge names the version answering now only
            # the version taken before the swap (a request in flight) still scores, its files removed
            assert not before.folder.exists()
            assert np.array_equal(before.scorer.scores(images), expected(images))
            # feedback on an answer of the version swapped out: accepted, kept out of the new one's live accuracy
            rid = first.json()["predictions"][0]["request_id"]
            late = client.post("/feedback", json={"request_id": rid, "label": "right"})
            assert late.status_code == 202 and late.json()["right"] is True
            assert service.metrics._answered == (0, 0)
    finally:
        registry.set_alias("champion", "1")
    # stopped: the waiting feedback was recorded on the version that gave the answer
    assert int(registry.version_tags("1")["web_live_accuracy_rows"]) == rows + 1
    assert "web_live_accuracy_rows" not in registry.version_tags("2")
