"""The lock under which a promotion reads, compares and moves the champion alias (no MLflow, no Prefect here)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from filelock import FileLock

from digitpipe.errors import PromotionRefused


@contextlib.contextmanager
def local_promotion_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a local sqlite store, seen by every process on this machine. Any other store
    is refused: MLflow's REST API has no lock, and flows/locks.py gives a Tracker the one every worker sees there
    (a Prefect global concurrency limit)."""
    database = tracking_uri.removeprefix("sqlite:///")
    if database == tracking_uri:
        raise PromotionRefused(f"no promotion lock for the MLflow store at {tracking_uri}: promote through "
                               "`digitpipe run`, `digitpipe promote` or a deployment, which take one")
    with FileLock(f"{database}.promotion.lock"):
        yield
