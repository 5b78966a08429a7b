"""Preloaded first by the workers of `flows.local_cluster`: a worker that Dask closed ends without the
interpreter's teardown of every module (flows.startup.exit_now), as the command line does."""

from __future__ import annotations

import atexit

from flows.startup import skip_teardown

_closed_by_dask = False


def _exit_now() -> None:
    """Registered on import, before the other preloads register theirs, so it runs last of the exit handlers
    (after MLflow's run closer and Prefect's log and event drains)."""
    if _closed_by_dask:  # any other exit keeps its exit code and the normal teardown
        skip_teardown(0)


atexit.register(_exit_now)


def dask_teardown(worker) -> None:  # Dask's preload hook, called as the worker closes
    global _closed_by_dask
    _closed_by_dask = True
