"""The lock under which a promotion reads, compares and moves the champion alias (no MLflow, no Prefect here)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from filelock import FileLock


@contextlib.contextmanager
def local_promotion_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a local sqlite store, seen by every process on this machine. MLflow's REST API
    has no lock, so against a remote server this is no lock at all: flows/locks.py gives Tracker one every worker
    sees there (a Prefect global concurrency limit)."""
    database = tracking_uri.removeprefix("sqlite:///")
    if database == tracking_uri:
        yield
        return
    with FileLock(f"{database}.promotion.lock"):
        yield
