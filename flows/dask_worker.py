"""Preloaded by the workers of `flows.local_cluster` before anything else they import: a worker that Dask closed
ends without the interpreter's teardown of every module (~2 s with torch, Prefect and MLflow loaded), as
`digitpipe.cli` does for the command itself."""

from __future__ import annotations

import atexit
import os
import sys

_closed_by_dask = False


def _exit_now() -> None:
    """Registered first, so it runs last of the exit handlers (after Prefect's log and event drains)."""
    if _closed_by_dask:  # any other exit keeps its exit code and the normal teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def dask_setup(worker) -> None:  # Dask's preload hooks
    atexit.register(_exit_now)


def dask_teardown(worker) -> None:
    global _closed_by_dask
    _closed_by_dask = True
