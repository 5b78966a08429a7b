"""What every request goes through before its handler: counted for /metrics and stamped with the model that
answers (every reply carries the X-Model-* headers), its Host checked on loopback, its body held to the limit of
its kind and, when large, read only a few at a time (so several large bodies at once cannot take the memory)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

PICTURE_BODY = 4 * 1024 * 1024  # a photo after the page's shrinking (1024 px JPEG) is a few hundred KB
# 1,024 images of any float32 in 0-255: 15.6 MB as MLflow's client writes a frame (dataframe_split), 25.1 MB as
# dataframe_records, which repeat the column names (digits' whole values: 4.3 and 13.2 MB); room for a label column
BATCH_BODY = 32 * 1024 * 1024
SMALL_BODY = 64 * 1024  # feedback, and bodies a route does not read
LARGE = 1024 * 1024  # bodies over this are read LARGE_AT_ONCE at a time
LARGE_AT_ONCE = 2
BATCH_TYPES = ("application/json", "text/csv", "")


def body_limit(path: str, content_type: str) -> int:
    """The largest body a request to `path` with `content_type` may send."""
    if path not in ("/predict", "/invocations"):
        return SMALL_BODY
    return BATCH_BODY if content_type in BATCH_TYPES else PICTURE_BODY


def header(scope, name: bytes) -> str:
    """The request's header `name` (lower case), as it came ("" when absent)."""
    return next((value for key, value in scope["headers"] if key == name), b"").decode("latin-1")


def content_type(scope) -> str:
    """The request's media type, lower case, without parameters."""
    return header(scope, b"content-type").split(";")[0].strip().lower()


class BodyLimit:
    """Refuses a body over its route's limit with 413: at once when its Content-Length says so, else as soon as the
    bytes streamed in pass it (uvicorn sets no limit, and Starlette reads whole bodies). A body over LARGE (or of
    unknown length) waits for one of LARGE_AT_ONCE slots: its bytes stay in the socket meanwhile (uvicorn stops
    reading a connection whose body nobody reads)."""

    def __init__(self, app) -> None:
        self.app = app
        self.large = asyncio.Semaphore(LARGE_AT_ONCE)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, declared = body_limit(scope["path"], content_type(scope)), _declared_length(scope)
        if declared is not None and declared > limit:
            return await JSONResponse({"error": _over(declared, limit)}, 413)(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, _over(seen, limit, streamed=True))
            return message

        if (declared or 0) <= LARGE and (declared is not None or scope["method"] in ("GET", "HEAD")):
            return await self.app(scope, counted, send)
        async with self.large:
            await self.app(scope, counted, send)


def _declared_length(scope) -> int | None:
    declared = header(scope, b"content-length")
    return int(declared) if declared.isascii() and declared.isdigit() and len(declared) < 19 else None


def _over(size: int, limit: int, streamed: bool = False) -> str:
    size_text = f"over {size:,} bytes so far" if streamed else f"of {size:,} bytes"
    return f"request body {size_text}: the limit is {limit:,} bytes"


class HostCheck:
    """Refuses a request naming a Host other than `allowed` (on loopback: a page elsewhere that rebinds its DNS
    name to 127.0.0.1 cannot read answers or send feedback), in the JSON of every other refusal."""

    def __init__(self, app, allowed: set[str], url: str) -> None:
        self.app, self.allowed, self.url = app, allowed, url

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            host = header(scope, b"host")
            name = host.lower() if host.endswith("]") else host.lower().rsplit(":", 1)[0]  # without a port
            if name.removesuffix(".") not in self.allowed:
                message = f"Host {host[:60]!r} is not served here: use {self.url} or http://localhost"
                return await JSONResponse({"error": message}, 400)(scope, receive, send)
        await self.app(scope, receive, send)


class Stamped:
    """Counts every request by route and status, and its latency, for /metrics; adds the served model's X-Model-*
    headers to every reply that does not name its model already (a /predict answered by the version swapped out
    keeps its own)."""

    def __init__(self, app, metrics, paths: set[str], names: Callable[[], dict[str, str | None]]) -> None:
        self.app, self.metrics, self.paths, self.names = app, metrics, paths, names

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def stamped(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                headers = message.setdefault("headers", [])
                if not any(name == b"x-model-name" for name, _ in headers):
                    headers.extend(model_headers(self.names()))
            await send(message)

        try:
            await self.app(scope, receive, stamped)
        finally:
            route = scope["path"] if scope["path"] in self.paths else "other"
            self.metrics.observe(route, status[0], time.perf_counter() - start)


def model_headers(names: dict[str, str | None]) -> list[tuple[bytes, bytes]]:
    """The X-Model-Name, -Version (empty for a file) and -Precision headers of a reply, as ASGI sends them."""
    return [(b"x-model-name", str(names["model"]).encode("latin-1", "replace")),
            (b"x-model-version", (names["version"] or "").encode("latin-1", "replace")),
            (b"x-model-precision", str(names["precision"]).encode("latin-1", "replace"))]


def model_header_dict(names: dict[str, str | None]) -> dict[str, str]:
    """model_headers as a Starlette response takes them."""
    return {name.decode(): value.decode("latin-1") for name, value in model_headers(names)}
