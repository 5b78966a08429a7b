"""Preloaded by the workers of `flows.local_cluster`, before anything else they import."""

from __future__ import annotations

import atexit
import os
import sys


def _exit_now() -> None:
    """Registered first, so it runs last of the exit handlers (after Prefect's log and event drains): ends the
    process without the interpreter's teardown of every module (~2 s with torch, Prefect and MLflow loaded),
    as `digitpipe.cli` does for the command itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def dask_setup(worker) -> None:  # noqa: ARG001 - Dask's preload hook
    atexit.register(_exit_now)
