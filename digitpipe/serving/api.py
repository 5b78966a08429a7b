"""The service's routes described once: each Operation names its handler, the bodies it takes (a pydantic model of
digitpipe.serving.bodies, or raw bytes for pictures) and the replies it gives; the Starlette routes and the OpenAPI
document at GET /openapi.json are both built from that one table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from digitpipe.serving.bodies import ErrorReply

BINARY = {"type": "string", "format": "binary"}
REFUSALS = {400: "a body that cannot be read", 401: "feedback without the token", 404: "no such request id",
            408: "a request not received in time", 409: "feedback given already", 413: "a body over its limit",
            415: "a Content-Type the route does not take", 422: "a body that is not what the route takes"}


@dataclass(frozen=True)
class Operation:
    """One route: `bodies` maps each Content-Type it takes to its model (None: raw bytes); `replies` maps each
    status to its model, or to a media type for a reply that is not JSON."""

    path: str
    method: str
    handler: Callable
    summary: str
    bodies: dict[str, type[BaseModel] | None] = field(default_factory=dict)
    replies: dict[int, type[BaseModel] | str] = field(default_factory=dict)
    refusals: tuple[int, ...] = ()
    links: dict[str, dict] = field(default_factory=dict)  # OpenAPI links from its 200 reply to other operations

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


def openapi(operations: list[Operation], title: str, version: str) -> dict:
    """The OpenAPI 3.1 document of `operations`, their schemas generated from the models that parse the bodies."""
    models = {m for op in operations for m in [*op.bodies.values(), *op.replies.values(), ErrorReply]
              if isinstance(m, type)}
    refs, defs = models_json_schema([(m, _mode(m, operations)) for m in models],
                                    ref_template="#/components/schemas/{model}")
    paths: dict[str, dict] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, refs, operations)
    return {"openapi": "3.1.0", "info": {"title": title, "version": version}, "paths": paths,
            "components": {"schemas": defs.get("$defs", {})}}


def _mode(model: type[BaseModel], operations: list[Operation]) -> str:
    return "validation" if any(model in op.bodies.values() for op in operations) else "serialization"


def _operation(op: Operation, refs: dict, operations: list[Operation]) -> dict:
    doc: dict = {"operationId": op.operation_id, "summary": op.summary, "responses": {}}
    if op.bodies:
        doc["requestBody"] = {"required": True, "content": {
            kind: {"schema": refs[(model, _mode(model, operations))] if model else _raw(kind)}
            for kind, model in op.bodies.items()}}
    for status, reply in op.replies.items():
        content = ({"application/json": {"schema": refs[(reply, "serialization")]}} if isinstance(reply, type)
                   else {reply: {"schema": _raw(reply)}})
        doc["responses"][str(status)] = {"description": "answered", "content": content}
        if status == 200 and op.links:
            doc["responses"]["200"]["links"] = op.links
    for status in op.refusals:
        doc["responses"][str(status)] = {"description": REFUSALS[status], "content": {
            "application/json": {"schema": refs[(ErrorReply, "serialization")]}}}
    return doc


def _raw(media_type: str) -> dict:
    """The schema of a body no model parses: a file upload, text, any JSON, or bytes."""
    if media_type == "multipart/form-data":
        return {"type": "object", "properties": {"file": BINARY}, "required": ["file"]}
    if media_type.startswith("text/"):
        return {"type": "string"}
    return {} if media_type == "application/json" else BINARY
