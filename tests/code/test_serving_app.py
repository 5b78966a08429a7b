"""The service's HTTP app in-process (Starlette's TestClient, a .onnx file, a temporary sqlite store): one label per
answer, every reply naming its model, refusals in JSON, a client that hangs up, the body limits per route, and the
page's live accuracy starting from the store's figures."""

from __future__ import annotations

import json

import anyio
import numpy as np
import pytest
from starlette.testclient import TestClient

from digitpipe.records.models import ModelIdentity
from digitpipe.config import ServingConfig, TrackingConfig
from digitpipe.serving.app import build_app
from digitpipe.serving.follower import ModelFollower, ServedModel, _answered
from digitpipe.serving.middleware import BATCH_BODY, PICTURE_BODY
from digitpipe.serving.service import Metrics, Service
from digitpipe.tracking import tracker_for

LOOPBACK = {"127.0.0.1", "localhost", "[::1]"}


@pytest.fixture(scope="module")
def service(logreg_onnx, tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    tracking = TrackingConfig(tracking_uri=f"sqlite:///{folder}/mlflow.db", serving=ServingConfig(
        requests_dir=str(folder / "served"), feedback_batch=1000, feedback_seconds=600))
    follower = ModelFollower(str(logreg_onnx), tracking, poll_seconds=600)
    return Service(follower, tracker_for(tracking), tracking)


@pytest.fixture(scope="module")
def client(service):
    with TestClient(build_app(service, LOOPBACK), base_url="http://127.0.0.1") as client:
        yield client


def _predict(client, images: np.ndarray) -> dict:
    reply = client.post("/predict", json={"images": images.tolist()})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_an_answer_takes_one_label_the_first(client, service, digits):
    before = service.metrics.answers.labels("corrected")._value.get()
    request_id = _predict(client, digits.images[:1])["predictions"][0]["request_id"]
    first = client.post("/feedback", json={"request_id": request_id, "label": 3})
    second = client.post("/feedback", json={"request_id": request_id, "label": 5})
    assert first.status_code == 202 and first.json()["label"] == 3
    assert (second.status_code, second.json()) == (409, {"error": (
        f"request_id {request_id}: feedback was given already (the digit 3); an answer takes one label, the first")})
    assert service.metrics.answers.labels("corrected")._value.get() - before == 1  # counted once, not per click
    assert list(service.feedback._pending) == [request_id] and service.feedback._pending[request_id][1] == 3


def test_every_reply_names_the_model_that_answers(client):
    replies = [client.get("/health"), client.get("/nowhere"), client.post("/predict", content=b"{"),
               client.post("/predict", content=b"x", headers={"content-type": "text/plain"}),
               client.get("/health", headers={"host": "evil.example"}), client.get("/openapi.json")]
    assert [r.headers.get("x-model-name") for r in replies] == ["logreg"] * len(replies)
    assert {r.headers.get("x-model-version") for r in replies} == {""}  # a file: no registered version


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "LOCALHOST:8000", "localhost.", "[::1]:8000", "[::1]"])
def test_loopback_hosts_are_served_however_they_are_written(client, host):
    assert client.get("/health", headers={"host": host}).status_code == 200


def test_refusals_are_one_line_of_json(client):
    assert client.get("/health", headers={"host": "evil.example"}).json() == {
        "error": "Host 'evil.example' is not served here: use http://127.0.0.1 or http://localhost"}
    refused = client.post("/invocations", content=b"0," * 783 + b"0\n", headers={"content-type": "text/csv"})
    assert (refused.status_code, refused.json()["error"][:48]) == (
        422, "text/csv: the first row must be the header pixel")
    assert client.post("/predict", json={"images": [[True] * 784]}).json() == {
        "error": "images[0][0]: a pixel must be a number from 0 to 255, not true"}


@pytest.mark.parametrize("records", [False, True], ids=["dataframe_split", "dataframe_records"])
def test_1024_float32_rows_as_mlflows_client_writes_them_are_answered(client, records):
    import pandas as pd
    from mlflow.utils.proto_json_utils import dump_input_data

    pixels = (np.random.default_rng(0).random((1024, 784)) * 255).astype(np.float32)  # the longest decimals
    frame = pd.DataFrame(pixels, columns=[f"pixel{i}" for i in range(784)])
    body = (json.dumps({"dataframe_records": [dict(zip(frame.columns, map(float, row))) for row in pixels]})
            if records else dump_input_data(frame)).encode()
    assert 15_000_000 < len(body) < BATCH_BODY
    reply = client.post("/invocations", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 200 and len(reply.json()["predictions"]) == 1024


def test_a_picture_over_its_limit_is_refused_and_a_batch_of_that_size_is_not(client):
    picture = client.post("/predict", content=b"\xff" * (PICTURE_BODY + 1), headers={"content-type": "image/jpeg"})
    assert (picture.status_code, picture.json()["error"]) == (
        413, f"request body of {PICTURE_BODY + 1:,} bytes: the limit is {PICTURE_BODY:,} bytes")
    padded = json.dumps({"images": [[0] * 784]}).encode().ljust(PICTURE_BODY + 1)  # JSON allows the spaces
    assert client.post("/predict", content=padded, headers={"content-type": "application/json"}).status_code == 200


def test_a_client_that_hangs_up_mid_body_is_counted_apart_not_as_an_error(service):
    app, sent = build_app(service, LOOPBACK), []
    messages = iter([{"type": "http.request", "body": b'{"images": [', "more_body": True},
                     {"type": "http.disconnect"}])
    scope = {"type": "http", "method": "POST", "path": "/predict", "headers": [(b"host", b"127.0.0.1"), (
        b"content-type", b"application/json")], "query_string": b"", "http_version": "1.1", "scheme": "http",
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1), "root_path": ""}

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    anyio.run(app, scope, receive, send)
    assert service.metrics.disconnects.labels("/predict")._value.get() == 1
    assert 'status="5' not in service.metrics.text().decode()


def test_live_accuracy_starts_from_the_versions_figures_in_the_store():
    metrics = Metrics()
    served = ServedModel(None, ModelIdentity("x.onnx", version="4"), None, None, answered=_answered(
        {"web_live_accuracy": "0.8889", "web_live_accuracy_rows": "9"}))
    metrics.serving(served)
    assert metrics.live_accuracy._value.get() == pytest.approx(8 / 9)
    metrics.answer(right=False, current=True)
    assert metrics.live_accuracy._value.get() == pytest.approx(8 / 10)
    metrics.answer(right=True, current=False)  # on a version swapped out since: not this one's figure
    assert metrics.live_accuracy._value.get() == pytest.approx(8 / 10)
