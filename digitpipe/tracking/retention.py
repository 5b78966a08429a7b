"""Retention: registered versions beyond the newest N go, with their model files and their runs, unless an alias
names them or they await a person's approval. A kept version's evidence needs nothing of a deleted one: its verdict's
counts are its own tags, its card and picture are on its own run, and a card written again carries the comparison
its decision's card recorded (digitpipe.card)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from digitpipe import interrupts

if TYPE_CHECKING:
    from digitpipe.records.models import VersionRecord
    from digitpipe.tracking.client import VersionStore


class Retention:
    """The registry's retention: which versions `digitpipe gc` deletes, and deleting them with their files."""

    def __init__(self, store: VersionStore) -> None:
        self.store, self.client, self.cfg = store, store.client, store.cfg

    def collect_garbage(self, keep: int, dry_run: bool = False) -> list[VersionRecord]:
        """Delete (or with `dry_run`, only name) every version older than the newest `keep` that holds no alias,
        awaits nothing and is not still being judged by a running pipeline; under the promotion lock, so that no
        alias moves onto one meanwhile. Returns them."""
        if dry_run:
            return self._doomed(self.store.versions(), keep)
        with self.store.promotion_lock():
            versions = self.store.versions()
            doomed = self._doomed(versions, keep)
            kept_runs = {v.pipeline_run_id for v in versions if v not in doomed}
            for version in doomed:
                interrupts.pause_at("gc")
                with interrupts.deferred():  # a version goes whole: its registration, its runs and its files
                    self._delete(version, kept_runs)
        return doomed

    def _doomed(self, versions: list[VersionRecord], keep: int) -> list[VersionRecord]:
        """Of `versions` (newest first), those beyond the newest `keep` that gc may delete."""
        return [v for v in versions[keep:] if not v.aliases and not v.awaiting
                and not (v.verdict is None and self._running(v.pipeline_run_id))]

    def _running(self, run_id: str | None) -> bool:
        """Whether the run is still going: its version is registered and not yet judged."""
        try:
            return bool(run_id) and self.client.get_run(run_id).info.status == "RUNNING"
        except MlflowException:
            return False

    def _delete(self, version: VersionRecord, kept_runs: set) -> None:
        """The version, its logged model (files and all), its run's files and the run; its pipeline run too, once no
        version left names it (a champion's comparisons read the pipeline run's record of its training images)."""
        mv = self.client.get_model_version(self.cfg.registered_model, version.version)
        self.client.delete_model_version(self.cfg.registered_model, version.version)
        if model_id := _logged_model_id(mv):
            get_artifact_repository(self.client.get_logged_model(model_id).artifact_location).delete_artifacts()
            self.client.delete_logged_model(model_id)
        pipeline = version.pipeline_run_id
        for run_id in (mv.run_id, *([pipeline] if pipeline and pipeline not in kept_runs else [])):
            try:
                run = self.client.get_run(run_id)
            except MlflowException:
                continue  # gone from the store
            if run.info.lifecycle_stage == "deleted":
                continue  # with an earlier version of the same pipeline run
            get_artifact_repository(run.info.artifact_uri).delete_artifacts()
            self.client.delete_run(run_id)


def _logged_model_id(mv) -> str | None:
    """The logged model a version was registered from (its source is models:/ID; the sqlite store may not fill in
    model_id itself)."""
    source = mv.source or ""
    return mv.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)
