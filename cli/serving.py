"""`digitpipe serve`: the registry's champion answers HTTP requests, and its page takes digits drawn by people."""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Annotated

import typer

from cli.app import ConfigOption, app, show_stage_lines
from digitpipe.config import load_tracking_config
from digitpipe.errors import UserError

TOKEN_VARIABLE = "DIGITPIPE_FEEDBACK_TOKEN"


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
    from digitpipe.serving.service import Service
    from digitpipe.tracking import tracker_for

    show_stage_lines(verbose)
    tracking = load_tracking_config(config)
    model = model or f"models:/{tracking.registered_model}@{tracking.champion_alias}"
    token, loopback = os.environ.get(TOKEN_VARIABLE) or None, _loopback(host)
    from_registry = model.startswith("models:/")
    if not loopback and not token:
        raise UserError(f"--host {host} listens beyond loopback: set {TOKEN_VARIABLE} (POST /feedback will need "
                        "it) or listen on 127.0.0.1")
    listening = _bind(host, port)
    tracker = tracker_for(tracking, create=not from_registry)
    follower = ModelFollower(model, tracker.registry if from_registry else None, tracking.serving.poll_seconds)
    service = Service(follower, tracker, tracking, token, on_alarm=_announce)
    bound_host, bound_port = listening.getsockname()[:2]
    names = follower.current.names()
    typer.echo(f"serving {model}: {names['model']} v{names['version']} ({names['precision']}) on "
               f"http://{bound_host}:{bound_port}/ (page /, API /predict /invocations /feedback /health /metrics)",
               err=True)
    hosts = ["127.0.0.1", "localhost", "[::1]", "::1"] if loopback else None
    server = uvicorn.Server(uvicorn.Config(build_app(service, hosts), log_level="info" if verbose else "warning",
                                           access_log=verbose, timeout_graceful_shutdown=10))
    server.run(sockets=[listening])


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
