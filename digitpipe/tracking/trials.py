"""A study's records in MLflow: one `tune` run per process searching it, a nested run per trial (its values,
per-epoch metrics, state complete/pruned/failed, seconds) and the study's pictures on the parent. Optuna's own
MLflowCallback is not used: it imports mlflow outside this package."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from optuna.exceptions import TrialPruned

from digitpipe.tracking.runs import RunLog
from digitpipe.records.training import Callback


@dataclass(frozen=True)
class TrialLog:
    """What a trial logs while it trains: each epoch, then its score."""

    runs: RunLog
    run_id: str

    @property
    def log_epoch(self) -> Callback:
        return self.runs.epoch_logger(self.run_id)

    def log_score(self, metrics: Mapping[str, float]) -> None:
        self.runs.log_metrics(self.run_id, metrics)


@dataclass(frozen=True)
class StudyLog:
    """The MLflow records of one process's share of a study, under its parent run `parent_id`."""

    runs: RunLog
    parent_id: str
    study: str

    @contextmanager
    def trial(self, trial, values: Mapping[str, object]) -> Iterator[TrialLog]:
        """A nested run for `trial` with `values` as params; a pruned trial's run ends FINISHED, tagged pruned."""
        start, state, pruned = time.perf_counter(), "complete", None
        tags = {"optuna.study": self.study, "optuna.trial": str(trial.number)}
        with self.runs.run(f"trial-{trial.number}", parent_id=self.parent_id, tags=tags) as run_id:
            self.runs.log_params(run_id, values)
            try:
                yield TrialLog(self.runs, run_id)
            except TrialPruned as exc:
                state, pruned = "pruned", exc
            except BaseException:
                self.runs.set_tags(run_id, {"optuna.state": "failed",
                                            "trial_seconds": f"{time.perf_counter() - start:.1f}"})
                raise
            self.runs.set_tags(run_id, {"optuna.state": state})
            self.runs.log_metrics(run_id, {"trial_seconds": time.perf_counter() - start})
        if pruned:
            raise pruned
