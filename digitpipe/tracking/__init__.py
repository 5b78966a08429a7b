"""The only package that talks to MLflow. A Tracker is one store, its client shared by RunLog (runs.py: the
experiment's runs, their params, metrics, tags, artifacts and inputs), the FeedbackStore built on it (feedback.py:
labelled digits as runs) and Registry (registry.py: the registered model's versions, their tags and files, the
aliases that name them). Each feature's records on a version are a collaborator of the Registry in a module of its
own, naming its artifacts: lineage.py, monitoring.py, quantization.py, cards.py, retention.py."""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import AbstractContextManager

from mlflow import MlflowClient

from digitpipe import locks
from digitpipe.config import TrackingConfig
from digitpipe.errors import UserError
from digitpipe.files import writable_database
from digitpipe.tracking import store_check
from digitpipe.tracking.registry import Champion, Registry
from digitpipe.tracking.feedback import FeedbackStore
from digitpipe.tracking.runs import RunLog

__all__ = ["Champion", "FeedbackStore", "Registry", "RunLog", "Tracker", "open_store", "tracker_for"]


def tracker_for(cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None,
                create: bool = True) -> Tracker:
    """This process's Tracker for `cfg` and `promotion_lock`; with `create` False (commands that only read or change
    what is registered) a missing local store is an error, with `create` (commands that log runs) a local store
    that cannot be written (a read-only or full folder) is one."""
    if (path := cfg.local_store) is not None:
        if not create and not path.exists():
            raise UserError(f"no MLflow store at {cfg.tracking_uri} (no such file): nothing has been registered there")
        if create:
            writable_database(path, f"the MLflow store {cfg.tracking_uri}")
    return _tracker(cfg, promotion_lock)


@functools.cache
def _tracker(cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None) -> Tracker:
    return Tracker(cfg, promotion_lock)


_CLIENTS: dict[str, MlflowClient] = {}  # one per store and process: the stores `refused_write` may name


def _checked_client(uri: str) -> MlflowClient:
    """One MLflow client per store and process, the store checked once: before any work is done, not mid-run."""
    if uri not in _CLIENTS:
        _CLIENTS[uri] = store_check.checked_client(uri)
    return _CLIENTS[uri]


def refused_write(exc: BaseException) -> UserError | None:
    """A write that a local store this process opened refused (its sqlite database or folder read-only, its disk
    full) as one line naming the store; None for any other error."""
    return store_check.refused_write(exc, list(_CLIENTS))


class Tracker:
    """The MLflow store of `cfg`: its run log and its model registry, sharing the process's client for it."""

    def __init__(self, cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None) -> None:
        client = _checked_client(cfg.tracking_uri)
        self.cfg = cfg
        self.runs = RunLog(client, cfg)
        self.feedback = FeedbackStore(self.runs)
        self.registry = Registry(client, cfg, promotion_lock or functools.partial(locks.local_promotion_lock,
                                                                                 cfg.tracking_uri))

    def end_orphans(self) -> tuple[list[str], list[str]]:
        """What a process killed mid-run left: its runs (on this host) marked FAILED, then the versions such runs
        registered and no gate judged marked interrupted; returns both (run ids, versions)."""
        return self.runs.fail_orphaned_runs(), self.registry.lineage.mark_unjudged()


def open_store(uri: str) -> None:
    """Create or migrate the store at `uri` (a new sqlite store runs its migrations: seconds); an unusable or
    unreachable store is a UserError."""
    _checked_client(uri)
