"""What the tracking modules share: MLflow's process-global URI set for one call, which process owns a run, a
server's refusal as one line, and the store's times (epoch milliseconds)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Protocol

from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # private, but the only scoped form

from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.runtime import owner

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from digitpipe.config import TrackingConfig
    from digitpipe.records.models import VersionRecord


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


OWNER_TAG = "digitpipe."  # a run's owner as the tags digitpipe.host and digitpipe.pid


def owner_tags() -> dict[str, str]:
    """Which process on which host owns a run: lets a later run tell a dead attempt from a live one."""
    return {OWNER_TAG + key: str(value) for key, value in owner().items()}


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
        raise UserError(f"the MLflow account may not {what} ({first_line(exc, 120)})") from None


@contextmanager
def logged_whole(client: MlflowClient, run_id: str, path: str) -> Iterator[None]:
    """A block that logs a new folder of artifacts at `path` on a run: where it fails (a disk that fills up mid-copy),
    what it copied goes, so that no reader takes half a folder for a whole one. A folder there before is kept."""
    fresh = not client.list_artifacts(run_id, path)
    try:
        yield
    except Exception:
        if fresh:
            with suppress(Exception):  # the error that stopped the copy is the one to report
                get_artifact_repository(client.get_run(run_id).info.artifact_uri).delete_artifacts(path)
        raise


class VersionStore(Protocol):
    """What the registry's collaborators (lineage, cards, quantization, retention) use of the version store
    (digitpipe.tracking.registry.Registry), so that they need not import it."""

    client: MlflowClient
    cfg: TrackingConfig
    promotion_lock: Callable[[], AbstractContextManager]

    def versions(self) -> list[VersionRecord]: ...

    def version_tags(self, version: str, name: str | None = None) -> dict[str, str]: ...

    def set_version_tags(self, version: str, tags: Mapping[str, object]) -> None: ...
