"""Preloaded first by the workers of `flows.local_cluster`: a worker that Dask closed ends without the
interpreter's teardown of every module (~2 s with torch, Prefect and MLflow loaded), as `digitpipe.cli` does for
the command itself."""

from __future__ import annotations

import atexit
import os
import sys

_closed_by_dask = False


def _exit_now() -> None:
    """Registered on import, before the other preloads register theirs, so it runs last of the exit handlers
    (after MLflow's run closer and Prefect's log and event drains)."""
    if _closed_by_dask:  # any other exit keeps its exit code and the normal teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


atexit.register(_exit_now)


def dask_teardown(worker) -> None:  # Dask's preload hook, called as the worker closes
    global _closed_by_dask
    _closed_by_dask = True
