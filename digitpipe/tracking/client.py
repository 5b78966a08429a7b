"""What the tracking modules share: MLflow's process-global URI set for one call, which process owns a run, a
server's refusal as one line, and the store's times (epoch milliseconds)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # private, but the only scoped form

from digitpipe.errors import UserError
from digitpipe.files import first_line


@contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent calls (log_model, download_artifacts of models:/) read a process-global URI, and setting it
    also rewrites the MLFLOW_TRACKING_URI variable: set it for one call, then put both back as they were."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def owner_tags() -> dict[str, str]:
    """Which process on which host owns a run: lets a later run tell a dead attempt from a live one."""
    return {"digitpipe.host": socket.gethostname(), "digitpipe.pid": str(os.getpid())}


def iso_minute(ms: int) -> str:
    """An epoch-milliseconds time as UTC `YYYY-MM-DD HH:MM`."""
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def now_ms() -> int:
    """The time now in epoch milliseconds, MLflow's unit."""
    return int(time.time() * 1000)


@contextmanager
def permitted(what: str) -> Iterator[None]:
    """A refusal by a tracking server with authentication (a read-only account) as one line."""
    try:
        yield
    except MlflowException as exc:
        if exc.error_code not in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
            raise
        raise UserError(f"the MLflow account may not {what} ({first_line(exc)[:120]})") from None
