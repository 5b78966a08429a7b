"""The only package that talks to MLflow. A Tracker is one store, its client shared by RunLog (runs.py: the
experiment's runs, their params, metrics, tags, artifacts and inputs), the FeedbackStore built on it (feedback.py:
labelled digits as runs) and Registry (registry.py: the registered model's versions, their tags and files, the
aliases that name them). Each feature's records on a version are a collaborator of the Registry in a module of its
own, naming its artifacts: lineage.py, monitoring.py, quantization.py, cards.py, retention.py."""

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
from digitpipe.tracking.feedback import FeedbackStore
from digitpipe.tracking.runs import RunLog

__all__ = ["Champion", "FeedbackStore", "Registry", "RunLog", "Tracker", "open_store", "tracker_for"]


def tracker_for(cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None,
                create: bool = True) -> Tracker:
    """This process's Tracker for `cfg` and `promotion_lock`; with `create` False (commands that only read or change
    what is registered) a missing local store is an error."""
    if not create and (path := cfg.local_store) and not path.exists():
        raise UserError(f"no MLflow store at {cfg.tracking_uri} (no such file): nothing has been registered there")
    return _tracker(cfg, promotion_lock)


@functools.cache
def _tracker(cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None) -> Tracker:
    return Tracker(cfg, promotion_lock)


@functools.cache
def _checked_client(uri: str) -> MlflowClient:
    """One MLflow client per store and process, the store checked once: before any work is done, not mid-run."""
    for noisy in ("mlflow", "alembic"):  # before the client: it creates a new store's tables, saying so at INFO
        logging.getLogger(noisy).setLevel(logging.WARNING)
    client = MlflowClient(uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, requests' and sqlalchemy's errors: all mean "no store"
        raise UserError(f"cannot reach the MLflow tracking store at {uri} ({first_line(exc, 160)})") from None
    return client


class Tracker:
    """The MLflow store of `cfg`: its run log and its model registry, sharing the process's client for it."""

    def __init__(self, cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None) -> None:
        client = _checked_client(cfg.tracking_uri)
        self.cfg = cfg
        self.runs = RunLog(client, cfg)
        self.feedback = FeedbackStore(self.runs)
        self.registry = Registry(client, cfg, promotion_lock or functools.partial(locks.local_promotion_lock,
                                                                                 cfg.tracking_uri))


def open_store(uri: str) -> None:
    """Create or migrate the store at `uri` (a new sqlite store runs its migrations: seconds)."""
    MlflowClient(uri).search_experiments(max_results=1)
