"""End to end: `digitpipe serve` cuts clients that take too long to send a request (digitpipe.serving.timeouts).
Forty slow clients at once (headers a line a second, a body that stops, a body dribbled, nothing at all) are each
answered 408 and closed soon after their limit, while /health answers at once; afterwards /predict still answers,
and a client that sends two whole requests slowly but within the limits is answered normally. And in this process,
with a trivial app: a body the app is slow to read is not counted against the client."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import re
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from digitpipe.serving.timeouts import receiving_limits
from tests.helpers import serving_process, wait_for, write_config

pytestmark = [pytest.mark.slow, pytest.mark.servers]
LIMITS = {"headers": 2.0, "body": 3.0}
MARGIN = 2.0  # seconds past its limit a cut may take on a busy test machine
IMAGE = json.dumps({"images": [[[0] * 28] * 28]}).encode()
HEAD = (b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n")

# name: (what is sent, seconds between sends, the limit it breaks); sending stops at the server's first byte back
SLOW = {
    "headers a line a second": ([b"GET /health HTTP/1.1\r\n"] + [b"X-Slow-%d: 1\r\n" % i for i in range(20)], 1.0,
                                "headers"),
    "10 of 1000 body bytes": ([HEAD % 1000 + b"0123456789"], 1.0, "body"),
    "body 2 bytes each 0.5 s": ([HEAD % 1000] + [b"00"] * 40, 0.5, "body"),
    "nothing at all": ([], 1.0, "headers"),
}


@pytest.fixture(scope="module")
def port(logreg_onnx, tmp_path_factory):
    """The port of a `digitpipe serve` of a .onnx file with 2 s for headers and 3 s for a body."""
    folder = tmp_path_factory.mktemp("timeouts")
    config = write_config(folder / "mlflow.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db",
                          serving={"header_seconds": LIMITS["headers"], "body_seconds": LIMITS["body"],
                                   "requests_dir": str(folder / "served")})
    with serving_process(folder, config, "--model", logreg_onnx) as served:
        yield served.port
    assert "Traceback" not in served.log, served.log  # a cut request's handler ends quietly (receive(): a disconnect)


def _health(port: int) -> tuple[int | None, float]:
    """GET /health on a new connection: its status (None: no answer) and the seconds it took."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/health")
        reply = connection.getresponse()
        reply.read()
        return reply.status, time.perf_counter() - start
    except OSError:
        return None, time.perf_counter() - start
    finally:
        connection.close()


def _slow_client(port: int, sends: list[bytes], every: float, started: threading.Semaphore) -> tuple[bytes, float]:
    """Sends `sends` one per `every` s until the server answers; returns all it read before the server closed the
    connection, and when (perf_counter) it closed (infinity: still open after the socket's timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=LIMITS["body"] + 10) as sock:
        started.release()
        for data in sends:
            sock.sendall(data)
            if select.select([sock], [], [], every)[0]:  # an answer (or the close): stop sending
                break
        received = b""
        try:
            while more := sock.recv(4096):
                received += more
        except TimeoutError:
            return received, math.inf
        return received, time.perf_counter()


def _assert_cut(name: str, received: bytes, seconds: float) -> None:
    """The client was answered 408 (nothing, if it sent nothing) and closed soon after its limit, not before."""
    sends, _, limit = SLOW[name]
    assert LIMITS[limit] - 0.1 <= seconds <= LIMITS[limit] + MARGIN, (name, seconds)
    if not sends:  # no byte of a request: closed without an answer, as an idle keep-alive connection
        assert received == b"", name
        return
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower(), (name, received)
    assert b"x-model-name: logreg" in head.lower(), (name, received)  # named like every other reply
    assert json.loads(body) == {"error": f"request {limit} not received within {LIMITS[limit]:g} s"}, name


def test_slow_clients_are_cut_at_their_limit_while_health_answers(port):
    """Forty slow clients held at once: each cut soon after its limit, /health at once meanwhile, /predict after."""
    kinds = [name for name in SLOW for _ in range(10)]  # 40 clients at once
    started = threading.Semaphore(0)
    with ThreadPoolExecutor(len(kinds)) as pool:
        opened = time.perf_counter()
        clients = [pool.submit(_slow_client, port, SLOW[name][0], SLOW[name][1], started) for name in kinds]
        for _ in kinds:
            assert started.acquire(timeout=30), "a slow client could not connect"
        probes = []
        for _ in range(10):
            probes.append(_health(port))
        probed = time.perf_counter()
        results = [client.result(timeout=60) for client in clients]
    assert all(status == 200 for status, _ in probes), probes
    assert max(seconds for _, seconds in probes) < 0.1, probes
    assert probed < min(closed for _, closed in results), "the probes ended after the first slow client was cut"
    for name, (received, closed) in zip(kinds, results):
        _assert_cut(name, received, closed - opened)
    status, answer = _post_image(port)
    assert status == 200 and len(answer["predictions"]) == 1, answer


def _post_image(port: int) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/predict", IMAGE, {"Content-Type": "application/json"})
        reply = connection.getresponse()
        return reply.status, json.loads(reply.read())
    finally:
        connection.close()


def test_a_slow_client_within_the_limits_is_answered(port):
    """Two requests on one connection, each with its headers sent over 1.4 s and its body over 1.4 s: more than
    either limit in all, so the deadline must start again with each request and stop once a request is whole."""
    request = HEAD % len(IMAGE) + IMAGE
    head_end = request.index(b"\r\n\r\n") + 4
    pieces = [request[:20], request[20:head_end - 2], request[head_end - 2:head_end + 500],
              request[head_end + 500:head_end + 1000], request[head_end + 1000:]]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for _ in range(2):
            for i, piece in enumerate(pieces):
                time.sleep(0.7 if i else 0)  # pacing the client, not waiting for something to happen
                sock.sendall(piece)
            reply = http.client.HTTPResponse(sock)
            reply.begin()
            assert reply.status == 200, reply.read()
            assert len(json.loads(reply.read())["predictions"]) == 1


def test_a_body_the_service_is_slow_to_read_is_not_cut():
    """A fast client's 200 KB body that the app starts reading only after the body limit (as a large body waits its
    turn to be parsed): uvicorn stops reading it at 64 KB, so the time is the service's, and it is answered."""
    async def late_reader(request):
        await asyncio.sleep(1.5)  # the app busy elsewhere, past the 1 s limit
        return JSONResponse({"bytes": len(await request.body())})

    app = Starlette(routes=[Route("/", late_reader, methods=["POST"])])
    listening = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http=receiving_limits(1, 1), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listening]})
    thread.start()
    try:
        wait_for(lambda: server.started, 30, "uvicorn's start", poll=0.05)
        connection = http.client.HTTPConnection(*listening.getsockname(), timeout=30)
        connection.request("POST", "/", b"1" * 200_000)
        reply = connection.getresponse()
        assert (reply.status, json.loads(reply.read())) == (200, {"bytes": 200_000})
        connection.close()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_clients_that_hang_up_mid_upload_are_counted_apart_and_not_logged(port):
    """Fifty clients drop their connection half way through a body: no 5xx, no error counted, their own counter."""
    before = _disconnects(port)  # the bodies cut by their time limit above are disconnects too
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(HEAD % len(IMAGE) + IMAGE[: len(IMAGE) // 2])
    wait_for(lambda: _disconnects(port) == before + 50, 30, "fifty more disconnects counted")
    metrics = _metrics(port)
    assert 'status="5' not in metrics and 'status="499"' not in metrics


def _metrics(port: int) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def _disconnects(port: int) -> float:
    counted = re.search(r'^digitpipe_client_disconnects_total\{route="/predict"\} (\S+)$', _metrics(port), re.M)
    return float(counted[1]) if counted else 0.0


def test_a_request_h11_cannot_read_is_one_line_of_json_and_every_refusal_is_counted(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"x-model-name: logreg" in head.lower()
    assert json.loads(body) == {"error": "Invalid HTTP request received (not HTTP/1.1 as h11 reads it)"}
    metrics = _metrics(port)  # the slow clients above: headers cut by the protocol, bodies seen by the app
    assert 'digitpipe_errors_total{route="other",status="400"} 1.0' in metrics
    assert 'digitpipe_errors_total{route="other",status="408"}' in metrics
    assert 'digitpipe_errors_total{route="/predict",status="408"}' in metrics
