"""The only package that talks to MLflow. A Tracker is one connection to a store, shared by its two halves:
RunLog (runs.py: the experiment's runs, their params, metrics, tags, artifacts and inputs) and Registry (registry.py:
the registered model's versions, their tags and files, and the aliases that name them). Each feature's records are
a module of their own, naming their artifacts, mixed into those two: feedback.py, lineage.py, monitoring.py and
quantization.py."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager

from mlflow import MlflowClient

from digitpipe import locks
from digitpipe.config import TrackingConfig
from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.tracking.registry import Champion, Registry
from digitpipe.tracking.runs import RunLog

__all__ = ["Champion", "Registry", "RunLog", "Tracker", "open_store", "tracker_for"]


@functools.cache
def tracker_for(cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None,
                create: bool = True) -> Tracker:
    """One Tracker (one MLflow client, one store check) per configuration, promotion lock and process; with
    `create` False (commands that only read or change what is registered) a missing local store is an error."""
    if not create and (path := cfg.local_store) and not path.exists():
        raise UserError(f"no MLflow store at {cfg.tracking_uri} (no such file): nothing has been registered there")
    return Tracker(cfg, promotion_lock)


class Tracker:
    """One connection to the MLflow store of `cfg`: its run log and its model registry, sharing one client."""

    def __init__(self, cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None) -> None:
        for noisy in ("mlflow", "alembic"):  # before the client: it creates a new store's tables, saying so at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)
        client = MlflowClient(cfg.tracking_uri)
        try:  # fail fast and clearly before any work is done, rather than mid-run
            client.search_experiments(max_results=1)
        except Exception as exc:  # MlflowException, requests' and sqlalchemy's errors: all mean "no store"
            raise UserError(f"cannot reach the MLflow tracking store at {cfg.tracking_uri} "
                            f"({first_line(exc)[:160]})") from None
        self.cfg = cfg
        self.runs = RunLog(client, cfg)
        self.registry = Registry(client, cfg, promotion_lock or functools.partial(locks.local_promotion_lock,
                                                                                 cfg.tracking_uri))


def open_store(uri: str) -> None:
    """Create or migrate the store at `uri` (a new sqlite store runs its migrations: seconds)."""
    MlflowClient(uri).search_experiments(max_results=1)
