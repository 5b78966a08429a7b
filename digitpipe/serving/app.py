"""The HTTP face of a Service (Starlette on uvicorn): the page, /predict, MLflow's /invocations, /feedback,
/health, /metrics. Parsing, scoring and picture decoding run in the thread pool, so the event loop (and /health)
stays free while requests are refused; bodies are counted as they stream and cut at MAX_BODY."""

from __future__ import annotations

import functools
import hmac
import importlib.metadata
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from digitpipe.serving.inputs import (InputError, csv_images, mlflow_images, parse_json, picture_image,
                                      predict_images)
from digitpipe.serving.service import Service

MAX_BODY = 4 * 1024 * 1024  # bytes per request body
PAGE = Path(__file__).with_name("page")
PICTURE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")


def build_app(service: Service, allowed_hosts: list[str] | None = None) -> Starlette:
    """The ASGI app of `service`; with `allowed_hosts`, a request naming another Host is refused (on loopback: a page
    elsewhere that rebinds its DNS name to 127.0.0.1 cannot read answers or send feedback)."""
    routes = [Route("/", index), Route("/health", health), Route("/metrics", metrics), Route("/ping", ping),
              Route("/version", version), Route("/predict", predict, methods=["POST"]),
              Route("/invocations", invocations, methods=["POST"]), Route("/feedback", feedback, methods=["POST"]),
              Mount("/static", StaticFiles(directory=PAGE))]
    handlers = {InputError: _refused, HTTPException: _http_error, Exception: _failed}
    paths = {route.path for route in routes if isinstance(route, Route)}
    middleware = [Middleware(Measured, metrics=service.metrics, paths=paths), Middleware(BodyLimit)]
    if allowed_hosts:
        middleware.insert(1, Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=service.lifespan, middleware=middleware)
    app.state.service = service
    return app


def _service(request: Request) -> Service:
    return request.app.state.service


async def index(request: Request) -> Response:
    return HTMLResponse(_page())


@functools.cache
def _page() -> str:
    return (PAGE / "index.html").read_text()


async def health(request: Request) -> Response:
    service = _service(request)
    return JSONResponse({"status": "ready", **service.follower.current.names(), "feedback_token": bool(service.token)})


async def metrics(request: Request) -> Response:
    return Response(_service(request).metrics.text(), media_type="text/plain; version=0.0.4")


async def ping(request: Request) -> Response:  # MLflow's scoring-server client waits on these two
    return Response("\n", media_type="application/json")


async def version(request: Request) -> Response:
    return Response(importlib.metadata.version("digitpipe"), media_type="text/plain")


async def predict(request: Request) -> Response:
    """Digits from a JSON batch or one picture; the answers with their request ids."""
    kind = _content_type(request)
    if kind == "multipart/form-data":
        images = await run_in_threadpool(picture_image, await _uploaded(request))
    elif kind in PICTURE_TYPES:
        images = await run_in_threadpool(picture_image, await request.body())
    elif kind in ("application/json", ""):
        images = await run_in_threadpool(lambda body: predict_images(parse_json(body)), await request.body())
    else:
        raise InputError(415, f"Content-Type {kind}: send application/json, a PNG/JPEG or a multipart upload")
    answered = await run_in_threadpool(_service(request).answer, images)
    return JSONResponse(answered.body(), headers=answered.headers())


async def invocations(request: Request) -> Response:
    """MLflow's scoring protocol: the same [N, 10] probabilities for every zoo model."""
    kind, body = _content_type(request), await request.body()
    if kind == "text/csv":
        images = await run_in_threadpool(csv_images, body)
    elif kind in ("application/json", ""):
        images = await run_in_threadpool(lambda b: mlflow_images(parse_json(b)), body)
    else:
        raise InputError(415, f"Content-Type {kind}: /invocations takes application/json or text/csv")
    answered = await run_in_threadpool(_service(request).answer, images)
    return JSONResponse({"predictions": answered.probabilities.tolist()}, headers=answered.headers())


async def feedback(request: Request) -> Response:
    """A person's answer on a served digit: "right" or the true digit, queued for the store."""
    service = _service(request)
    given = request.headers.get("authorization", "").encode("latin-1")  # as it came: any bytes, compared as bytes
    if service.token and not hmac.compare_digest(given, f"Bearer {service.token}".encode()):
        raise InputError(401, "POST /feedback needs the header Authorization: Bearer $DIGITPIPE_FEEDBACK_TOKEN")
    doc = parse_json(await request.body())
    if not isinstance(doc, dict) or not isinstance(doc.get("request_id"), str):
        raise InputError(422, 'expected {"request_id": "...", "label": "right" or the true digit 0-9}')
    answer = await run_in_threadpool(service.requests.find, doc["request_id"])
    if answer is None:
        raise InputError(404, f"request_id {doc['request_id'][:40]!r}: no answer kept under that id")
    label = _label(doc.get("label"), answer.digit)
    waiting = await run_in_threadpool(service.give_feedback, answer, label)
    return JSONResponse({"request_id": answer.request_id, "served": answer.digit, "label": label,
                         "right": label == answer.digit, "waiting": waiting}, status_code=202)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _uploaded(request: Request) -> bytes:
    """The one file of a multipart upload."""
    async with request.form(max_files=1, max_fields=10) as form:
        files = [v for v in form.values() if hasattr(v, "read")]
        if not files:
            raise InputError(422, "the multipart upload holds no file")
        return await files[0].read()


def _label(value: object, served: int) -> int:
    if value == "right":
        return served
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 9:
        return value
    raise InputError(422, f'label {value!r}: expected "right" or the true digit 0-9')


async def _refused(request: Request, exc: InputError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _failed(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, status_code=500)


class BodyLimit:
    """Refuses a body over MAX_BODY with 413: at once when its Content-Length says so, else as soon as the bytes
    streamed in pass it (uvicorn sets no limit, and Starlette reads whole bodies)."""

    def __init__(self, app, max_bytes: int = MAX_BODY) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = JSONResponse({"error": self._message(int(declared))}, status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self._message(seen, streamed=True))
            return message

        await self.app(scope, counted, send)

    def _message(self, size: int, streamed: bool = False) -> str:
        size_text = f"over {size:,} bytes so far" if streamed else f"of {size:,} bytes"
        return f"request body {size_text}: the limit is {self.max_bytes:,} bytes"


class Measured:
    """Counts every request by route and status, and its latency, for /metrics."""

    def __init__(self, app, metrics, paths: set[str]) -> None:
        self.app, self.metrics, self.paths = app, metrics, paths

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def noted(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noted)
        finally:
            route = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.observe(route, status[0], time.perf_counter() - start)
