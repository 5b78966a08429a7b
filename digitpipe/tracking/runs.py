"""The experiment's runs: params, metrics, tags, artifacts and inputs; every call names its run explicitly
(thread-safe for Prefect's task threads)."""

from __future__ import annotations

import contextlib
import functools
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.runtime import owner_gone
from digitpipe.tracking.client import OWNER_TAG, now_ms, owner_tags
from digitpipe.tracking.lineage import TRAINED_ON_ARTIFACT

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from digitpipe.config import TrackingConfig
    from digitpipe.data import Dataset
    from digitpipe.records.drift import DriftVerdict
    from digitpipe.records.training import Callback, EpochResult

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests child runs under the parent
MAX_BATCH = 900  # log_batch accepts at most 1000 metrics and 100 params per call
MAX_PARAMS = 100


class RunLog:
    """The experiment's runs; every call names its run explicitly (thread-safe for Prefect's task threads)."""

    def __init__(self, client: MlflowClient, cfg: TrackingConfig) -> None:
        self.client, self.cfg = client, cfg

    @functools.cached_property
    def experiment_id(self) -> str:
        """The configured experiment, created on first use."""
        found = self.client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return found.experiment_id
        # the kind tag makes MLflow 3's UI open the experiment on its training runs, not its GenAI overview
        return self.client.create_experiment(self.cfg.experiment, artifact_location=self.cfg.artifact_location,
                                             tags={"mlflow.experimentKind": "custom_model_development"})

    @contextmanager
    def run(self, name: str, parent_id: str | None = None, tags: Mapping[str, str] | None = None) -> Iterator[str]:
        """A run that ends FINISHED, KILLED if the block is interrupted (SIGINT, SIGTERM), or FAILED if it raises
        (never left RUNNING)."""
        tags = {**(tags or {}), **owner_tags(), "digitpipe.config": self.cfg.config_file}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        try:
            yield run_id
        except KeyboardInterrupt as exc:  # digitpipe.interrupts.Interrupted names its signal
            self.killed(run_id, f"interrupted by {exc or 'SIGINT'}")
            raise
        except BaseException:
            with contextlib.suppress(Exception):  # the store may be what failed; the original error matters more
                self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    @contextmanager
    def drift_run(self, name: str, kind: str, params: Mapping[str, object], drift: DriftVerdict,
                  metrics: Mapping[str, float] | None = None) -> Iterator[str]:
        """One run for a batch checked for drift (a scored file, a served window): its verdict as a tag, each
        feature's PSI and `metrics` as metrics; the block may add artifacts."""
        with self.run(name, tags={"digitpipe.kind": kind, "drift_verdict": drift.kind.value}) as run_id:
            self.log_params(run_id, params)
            self.log_metrics(run_id, {**(metrics or {}), **drift.psi_metrics()})
            yield run_id

    def fail_orphaned_runs(self) -> list[str]:
        """Mark FAILED the RUNNING runs whose process on this host is gone (a kill -9, a crash): never left running."""
        runs = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        orphans = [r.info.run_id for r in runs if owner_gone(_owner(r.data.tags))]
        for run_id in orphans:
            self.client.set_tag(run_id, "digitpipe.failure", "its process died before the run ended")
            self.client.set_terminated(run_id, "FAILED")
        return orphans

    def killed(self, run_id: str, why: str) -> None:
        """End a run KILLED, saying `why` in its `digitpipe.failure` tag (ended first: a tag that cannot be written
        leaves it ended; the store may be what failed)."""
        with contextlib.suppress(Exception):
            self.client.set_terminated(run_id, "KILLED")
        with contextlib.suppress(Exception):
            self.client.set_tag(run_id, "digitpipe.failure", why)

    def kill_children(self, parent_id: str, why: str) -> None:
        """End KILLED the runs under `parent_id` still RUNNING, whose tasks stop with the command (a Dask worker's
        process closes with its cluster; a scikit-learn fit ends with the process)."""
        running = self.client.search_runs([self.experiment_id], f"attributes.status = 'RUNNING' and "
                                          f"tags.`{PARENT_TAG}` = '{parent_id}'", max_results=1000)
        for run in running:
            self.killed(run.info.run_id, why)

    def log_trained_on(self, run_id: str, hashes: np.ndarray) -> None:
        """Record on a pipeline run which images its models trained on (Split.seen_in_training), so that a later
        promotion compares them with a challenger only on images new to both."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(TRAINED_ON_ARTIFACT).name
            np.save(path, hashes)
            self.client.log_artifact(run_id, str(path), str(Path(TRAINED_ON_ARTIFACT).parent))

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        """Parameters, batched (MLflow takes at most 100 per call)."""
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(run_id, params=items[start : start + MAX_PARAMS])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Metrics at one step, batched."""
        now = now_ms()
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), MAX_BATCH):
            self.client.log_batch(run_id, metrics=items[start : start + MAX_BATCH])

    def epoch_logger(self, run_id: str) -> Callback:
        """A training callback that logs each epoch's metrics with the epoch as step."""

        def log_epoch(result: EpochResult) -> None:
            metrics = {k: v for k, v in vars(result).items() if k != "epoch"}
            try:
                self.log_metrics(run_id, {f"epoch_{k}" if k == "seconds" else k: v for k, v in metrics.items()},
                                 result.epoch)
            except MlflowException as exc:  # raised once MLflow's own retries with backoff are spent
                raise UserError(f"lost the MLflow tracking store at {self.cfg.tracking_uri} while logging epoch "
                                f"{result.epoch}; nothing was registered ({first_line(exc.message, 120)})") from None

        return log_epoch

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        """Run tags (free text, searchable in the UI), in one call."""
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        """Every file in `folder` (pictures, JSON, the ONNX file) as run artifacts."""
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def log_inputs(self, run_id: str, params: Mapping[str, object], datasets: Mapping[str, Dataset],
                   source: Path) -> None:
        """What a run was given: `params`, and each dataset (by context: training, evaluation, ...) as a run input
        (name, digest, shape, where it came from), shown in the UI's Datasets column; one call for the datasets."""
        self.log_params(run_id, params)
        inputs = []
        for context, data in datasets.items():
            with warnings.catch_warnings():  # a local path matches MLflow's "" and "file" sources alike: both right
                warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
                dataset = mlflow.data.from_numpy(data.images, targets=data.labels, source=str(Path(source).resolve()),
                                                 name=f"{Path(source).name}-{context}", digest=data.digest[:16])
            inputs.append(DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
        self.client.log_inputs(run_id, inputs)

    def search(self, query: str, limit: int | None = None, order_by: list[str] | None = None) -> list:
        """Runs of the experiment matching `query`: the first `limit`, or all of them, page by page."""
        found, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=limit or 1000,
                                           order_by=order_by, page_token=token)
            found += page
            token = page.token
            if limit or not token:
                return found


def _owner(tags: Mapping[str, str]) -> dict[str, str]:
    """The owner a run's tags recorded (owner_tags), as runtime.owner_gone reads it."""
    return {key: tags.get(OWNER_TAG + key, "") for key in ("host", "pid")}
