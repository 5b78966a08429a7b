"""Prefect flows: the pipeline diagrams, reading top to bottom."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

# Two Dask defaults that slow training down (bench/README.md; compose.yaml's dask-worker sets the same through its
# environment). The nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
# adaptive mmap threshold: each batch's tensors are then mapped and unmapped, page faults and all, and LeNet trains
# ~1.6x slower (None leaves glibc's default). The worker's statistical profiler walks every thread's stack each
# 10 ms, holding the GIL: LeNet ~15% slower; its pictures are for a dashboard, which these workers do not serve.
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False}


@contextlib.contextmanager
def local_cluster(workers: int, preload: Sequence[str] = ()) -> Iterator[Callable[[], str]]:
    """A local Dask cluster of `workers` one-task processes, started on a thread now so that the workers import
    `preload` (the tasks' heavy modules) beside this process's own start-up; yields a function that waits for the
    cluster and returns its scheduler's address. Workers inherit this process's environment (PREFECT_API_URL) and
    end without the interpreter's teardown (flows.dask_worker)."""
    import dask
    from distributed import LocalCluster

    dask.config.set(WORKER_CONFIG)  # the nanny reads it as it spawns a worker, and hands it on
    with ThreadPoolExecutor(1, thread_name_prefix="digitpipe-dask") as pool:
        starting = pool.submit(LocalCluster, n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, preload=["flows.dask_worker", *preload])
        try:
            yield lambda: starting.result().scheduler_address
        finally:
            with contextlib.suppress(Exception):  # a cluster that failed to start has nothing to close
                starting.result().close()


def dask_runner(address: str):
    """A prefect-dask task runner on the Dask scheduler at `address` (`local_cluster` starts one here)."""
    import dask
    from prefect_dask import DaskTaskRunner

    # Each model's task carries the split and the perturbation suite, so workers need no shared storage: 18 MB on
    # the demo data, ~200 MB on 60,000 images. Dask's warning about large graphs would only alarm the user.
    dask.config.set({"distributed.admin.large-graph-warning-threshold": "1GB"})
    return DaskTaskRunner(address=address)
