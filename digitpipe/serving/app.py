"""The HTTP face of a Service (Starlette on uvicorn): the page, /predict, MLflow's /invocations, /feedback,
/health, /metrics and /openapi.json, all from one table of operations (digitpipe.serving.api). Parsing, scoring and
picture decoding run in the thread pool, so the event loop (and /health) stays free while requests are refused."""

from __future__ import annotations

import functools
import hmac
import importlib.metadata
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from digitpipe.serving import bodies
from digitpipe.serving.api import Operation, openapi
from digitpipe.serving.inputs import (InputError, csv_images, feedback_body, mlflow_images, picture_image,
                                      predict_images)
from digitpipe.serving.middleware import BodyLimit, HostCheck, Stamped, content_type, model_header_dict
from digitpipe.serving.service import DISCONNECTED, Service
from digitpipe.serving.timeouts import TIMED_OUT

PAGE = Path(__file__).with_name("page")
PICTURE_TYPES = ("image/png", "image/jpeg", "application/octet-stream")


def build_app(service: Service, allowed_hosts: set[str] | None = None, url: str = "http://127.0.0.1") -> Starlette:
    """The ASGI app of `service` at `url`; with `allowed_hosts`, a request naming another Host is refused (on
    loopback: a page elsewhere that rebinds its DNS name to 127.0.0.1 cannot read answers or send feedback)."""
    routes = [Route(op.path, op.handler, methods=[op.method]) for op in OPERATIONS]
    routes.append(Mount("/static", StaticFiles(directory=PAGE)))
    handlers = {InputError: _refused, HTTPException: _http_error, ClientDisconnect: _hung_up, Exception: _failed}
    paths = {op.path for op in OPERATIONS}
    middleware = [Middleware(Stamped, metrics=service.metrics, paths=paths, names=lambda: service.follower.current
                             .names()), Middleware(BodyLimit)]
    if allowed_hosts:
        middleware.insert(1, Middleware(HostCheck, allowed=allowed_hosts, url=url))
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
    return JSONResponse({})


async def version(request: Request) -> Response:
    return Response(importlib.metadata.version("digitpipe"), media_type="text/plain")


async def openapi_json(request: Request) -> Response:
    return JSONResponse(_openapi())


@functools.cache
def _openapi() -> dict:
    return openapi(OPERATIONS, "digitpipe serve", importlib.metadata.version("digitpipe"))


async def predict(request: Request) -> Response:
    """Digits from a JSON batch or one picture; the answers with their request ids."""
    kind = content_type(request.scope)
    if kind == "multipart/form-data":
        images = await run_in_threadpool(picture_image, await _uploaded(request))
    elif kind in PICTURE_TYPES:
        images = await run_in_threadpool(picture_image, await request.body())
    elif kind in ("application/json", ""):
        images = await run_in_threadpool(predict_images, await request.body())
    else:
        raise InputError(415, f"Content-Type {kind[:60]}: send application/json, a PNG/JPEG or a multipart upload")
    answered = await run_in_threadpool(_service(request).answer, images)
    return JSONResponse(answered.body(), headers=answered.headers())


async def invocations(request: Request) -> Response:
    """MLflow's scoring protocol: the same [N, 10] probabilities for every zoo model."""
    kind = content_type(request.scope)
    if kind == "text/csv":
        images = await run_in_threadpool(csv_images, await request.body())
    elif kind in ("application/json", ""):
        images = await run_in_threadpool(mlflow_images, await request.body())
    else:
        raise InputError(415, f"Content-Type {kind[:60]}: /invocations takes application/json or text/csv")
    answered = await run_in_threadpool(_service(request).answer, images)
    return JSONResponse({"predictions": answered.probabilities.tolist()}, headers=answered.headers())


async def feedback(request: Request) -> Response:
    """A person's answer on a served digit: "right" or the true digit, queued for the store (once per answer)."""
    service = _service(request)
    given = request.headers.get("authorization", "").encode("latin-1")  # as it came: any bytes, compared as bytes
    if service.token and not hmac.compare_digest(given, f"Bearer {service.token}".encode()):
        raise InputError(401, "POST /feedback needs the header Authorization: Bearer $DIGITPIPE_FEEDBACK_TOKEN")
    if (kind := content_type(request.scope)) not in ("application/json", ""):
        raise InputError(415, f"Content-Type {kind[:60]}: /feedback takes application/json")
    doc = feedback_body(await request.body())
    answer = await run_in_threadpool(service.requests.find, doc.request_id)
    if answer is None:
        raise InputError(404, f"request_id {doc.request_id[:40]!r}: no answer kept under that id")
    label = answer.digit if doc.label == "right" else doc.label
    waiting = await run_in_threadpool(service.give_feedback, answer, label)
    return JSONResponse({"request_id": answer.request_id, "served": answer.digit, "label": label,
                         "right": label == answer.digit, "waiting": waiting}, status_code=202)


async def _uploaded(request: Request) -> bytes:
    """The one file of a multipart upload."""
    try:
        async with request.form(max_files=1, max_fields=10) as form:
            files = [v for v in form.values() if hasattr(v, "read")]
            if not files:
                raise InputError(422, "the multipart upload holds no file")
            return await files[0].read()
    except HTTPException as exc:  # python-multipart's refusals of a malformed body (a 413 of the limit goes on)
        if exc.status_code != 400:
            raise
        raise InputError(400, f"the multipart upload cannot be read ({exc.detail})") from None


async def _refused(request: Request, exc: InputError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _hung_up(request: Request, exc: ClientDisconnect) -> Response:
    """A client that left before its answer: nobody to answer, nothing failed (counted apart, see Metrics); or one
    whose body the time limit cut (digitpipe.serving.timeouts answered it 408, and so it is counted)."""
    return Response(status_code=408 if request.scope.get(TIMED_OUT) else DISCONNECTED)


async def _failed(request: Request, exc: Exception) -> Response:
    """A bug: answered outside the middleware that names the model, so it names it here."""
    return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the server's log"}, status_code=500,
                        headers=model_header_dict(_service(request).follower.current.names()))


REFUSED = (400, 408, 413, 415, 422)
OPERATIONS = [
    Operation("/", "GET", index, "the drawing page", replies={200: "text/html"}),
    Operation("/predict", "POST", predict, "digits from a JSON batch or one picture",
              bodies={"application/json": bodies.PredictBody, "image/png": None, "image/jpeg": None,
                      "application/octet-stream": None, "multipart/form-data": None},
              replies={200: bodies.PredictReply}, refusals=REFUSED,
              links={"GiveFeedback": {"operationId": "feedback", "requestBody": {
                  "request_id": "$response.body#/predictions/0/request_id", "label": "right"}}}),
    Operation("/invocations", "POST", invocations, "MLflow's scoring protocol",
              bodies={"application/json": bodies.InvocationsBody, "text/csv": None},
              replies={200: bodies.InvocationsReply}, refusals=REFUSED),
    Operation("/feedback", "POST", feedback, "a person's answer on a served digit",
              bodies={"application/json": bodies.FeedbackBody}, replies={202: bodies.FeedbackReply},
              refusals=(400, 401, 404, 408, 409, 413, 415, 422)),
    Operation("/health", "GET", health, "the version answering", replies={200: bodies.HealthReply}),
    Operation("/metrics", "GET", metrics, "Prometheus metrics", replies={200: "text/plain"}),
    Operation("/ping", "GET", ping, "MLflow's client waits on it", replies={200: "application/json"}),
    Operation("/version", "GET", version, "digitpipe's version", replies={200: "text/plain"}),
    Operation("/openapi.json", "GET", openapi_json, "this document", replies={200: "application/json"}),
]
