"""The lock under which a promotion reads, compares and moves the champion alias (no MLflow, no Prefect here)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from digitpipe.config import sqlite_file
from digitpipe.errors import PromotionRefused, UserError
from digitpipe.files import REFUSALS, first_line

log = logging.getLogger("digitpipe")


@contextlib.contextmanager
def local_training_lock(tracking_uri: str, key: str) -> Iterator[None]:
    """An exclusive file lock for one training key beside a local sqlite store (a folder of them): a second run of
    the same training waits here while the first trains and is judged."""
    database = sqlite_file(tracking_uri)
    folder = Path(f"{database}.training")
    with _refused(folder, "training lock"):
        folder.mkdir(exist_ok=True)
    with _held(FileLock(folder / f"{key}.lock"), "training lock",
               "another run is training the same model on the same data"):
        yield


@contextlib.contextmanager
def _held(lock: FileLock, name: str, holder: str) -> Iterator[None]:
    """`lock` held; a line says why the command waits when another process holds it."""
    with _refused(lock.lock_file, name):
        try:
            held = lock.acquire(blocking=False)
        except Timeout:  # say why the command stops here (and tests see that it reached the lock)
            log.warning("waiting for the %s %s: %s", name, lock.lock_file, holder)
            held = lock.acquire()
    with held:
        yield


@contextlib.contextmanager
def _refused(path: object, name: str) -> Iterator[None]:
    """A lock file that cannot be made or opened (a read-only or full folder, another user's file) as one line:
    the command stops before it changes anything."""
    try:
        yield
    except OSError as exc:
        why = REFUSALS[exc.errno][0] if exc.errno in REFUSALS else first_line(exc, 80)
        raise UserError(f"cannot take the {name} {Path(path).absolute()}: {why}; locks are made beside the MLflow "
                        "store, so its folder must be writable (run where it is, or point tracking_uri at another "
                        "store)") from None


@contextlib.contextmanager
def local_promotion_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive file lock beside a local sqlite store, seen by every process on this machine. Any other store
    is refused: MLflow's REST API has no lock, and flows/locks.py gives a Tracker the one every worker sees there
    (a Prefect global concurrency limit)."""
    database = sqlite_file(tracking_uri)
    if database is None:
        raise PromotionRefused(f"no promotion lock for the MLflow store at {tracking_uri}: promote through "
                               "`digitpipe run`, `digitpipe promote` or a deployment, which take one")
    with _held(FileLock(f"{database}.promotion.lock"), "promotion lock", "another promotion holds it"):
        yield
