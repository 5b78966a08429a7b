"""The lock under which a promotion reads, compares and moves the champion alias (no MLflow, no Prefect here)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from filelock import FileLock, Timeout

from digitpipe.config import sqlite_file
from digitpipe.errors import PromotionRefused

log = logging.getLogger("digitpipe")


@contextlib.contextmanager
def local_promotion_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a local sqlite store, seen by every process on this machine. Any other store
    is refused: MLflow's REST API has no lock, and flows/locks.py gives a Tracker the one every worker sees there
    (a Prefect global concurrency limit)."""
    database = sqlite_file(tracking_uri)
    if database is None:
        raise PromotionRefused(f"no promotion lock for the MLflow store at {tracking_uri}: promote through "
                               "`digitpipe run`, `digitpipe promote` or a deployment, which take one")
    lock = FileLock(f"{database}.promotion.lock")
    try:
        held = lock.acquire(blocking=False)
    except Timeout:  # say why the command stops here (and tests see that it reached the lock)
        log.warning("waiting for the promotion lock %s: another promotion holds it", lock.lock_file)
        held = lock.acquire()
    with held:
        yield
