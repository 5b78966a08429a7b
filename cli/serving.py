"""`digitpipe serve`: the registry's champion answers HTTP requests, and its page takes digits drawn by people."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from typing import Annotated

import typer

from cli.app import ConfigOption, app, show_stage_lines
from digitpipe.config import load_tracking_config
from digitpipe.errors import UserError

TOKEN_VARIABLE = "DIGITPIPE_FEEDBACK_TOKEN"
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"  # one part of a host name (RFC 1123)
HOST_NAME = re.compile(rf"(?=.{{1,253}}$){LABEL}(\.{LABEL})*")


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help="models:/NAME@ALIAS (followed when the alias moves), "
                                                   "models:/NAME/VERSION or a .onnx file (default: the configured "
                                                   "model's champion).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; beyond loopback, $DIGITPIPE_FEEDBACK_TOKEN "
                                           "must be set (POST /feedback then needs it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free one).")] = 8000,
    config: ConfigOption = None,
    verbose: Annotated[bool, typer.Option(help="Also log every request (uvicorn's access log).")] = False,
) -> None:
    """Serve a model over HTTP: a page to draw digits on (/), POST /predict, MLflow's POST /invocations,
    POST /feedback, GET /health and GET /metrics. Answers are kept for feedback, which is recorded in the MLflow
    store (tagged source=web) in batches; served digits are checked for drift window by window."""
    import uvicorn

    from digitpipe.serving.app import build_app
    from digitpipe.serving.follower import ModelFollower
    from digitpipe.serving.middleware import model_headers
    from digitpipe.serving.service import Service
    from digitpipe.serving.timeouts import receiving_limits
    from digitpipe.tracking import tracker_for

    show_stage_lines(verbose)
    tracking = load_tracking_config(config)
    model = model or f"models:/{tracking.registered_model}@{tracking.champion_alias}"
    host = _checked_host(host)
    token, loopback = os.environ.get(TOKEN_VARIABLE) or None, _loopback(host)
    if not loopback and not token:
        raise UserError(f"--host {host} listens beyond loopback: set {TOKEN_VARIABLE} (POST /feedback will need "
                        "it) or listen on 127.0.0.1")
    listening = _bind(host, port)
    # the model is loaded before the store is opened for the service: a bad file is one line, and leaves no new
    # mlflow.db behind (a registered model needs a store that exists)
    follower = ModelFollower(model, tracking, tracking.serving.poll_seconds)
    tracker = tracker_for(tracking, create=not follower.ref.registered)
    service = Service(follower, tracker, tracking, token, on_alarm=_announce)
    url = _url(listening)
    typer.echo(f"serving {model}: {_described(follower.current.names())} on {url} "
               "(page /, API /predict /invocations /feedback /health /metrics /openapi.json)", err=True)
    # on loopback, the names a page on this machine uses for it, the bound address as a Host header writes it
    hosts = {"127.0.0.1", "localhost", "[::1]", url.split("/")[2].rsplit(":", 1)[0]} if loopback else None
    limits = receiving_limits(tracking.serving.header_seconds, tracking.serving.body_seconds,
                              headers=lambda: model_headers(follower.current.names()),
                              refused=lambda status: service.metrics.observe("other", status, 0.0))
    server = uvicorn.Server(uvicorn.Config(build_app(service, hosts, url), log_level="info" if verbose else "warning",
                                           access_log=verbose, timeout_graceful_shutdown=10, http=limits))
    server.run(sockets=[listening])


def _checked_host(host: str) -> str:
    """`host` if it is an IP address (brackets around IPv6 taken off) or a host name (a port belongs in --port)."""
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        if HOST_NAME.fullmatch(host):
            return host
    raise UserError(f"--host {host[:80]!r}: not an IP address or a host name (the port goes in --port)")


def _described(names: dict) -> str:
    if names["version"]:
        return f"{names['model']} v{names['version']} ({names['precision']})"
    return f"{names['model']} ({names['precision']}; a file, not a registered version)"


def _url(listening: socket.socket) -> str:
    host, port = listening.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads, so that a port in use is one line at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on such sockets' connections (else Nagle's algorithm and the
    # client's delayed ACK add ~40 ms to every response sent in two writes, as uvicorn sends headers and body)
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise UserError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return listening


def _announce(alarm) -> None:
    """A drifted served window as a Prefect event, where a Prefect server is configured."""
    from flows.startup import configured_api_url

    if configured_api_url():
        from flows.events import announce

        announce(alarm, flush=True)
