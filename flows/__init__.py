"""Prefect flows: the pipeline diagrams, reading top to bottom."""


def dask_runner(address: str | None = None, workers: int = 0):
    """A prefect-dask task runner: on the Dask scheduler at `address`, else on a local cluster of `workers`
    single-threaded processes (each task gets a process of its own: its own RNG, its own torch threads)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
