"""The only module that talks to MLflow. A Tracker is one connection to a store, shared by its two halves:
RunLog (the experiment's runs: params, metrics, tags, artifacts, inputs) and Registry (the registered model:
versions, their tags and files, and the aliases that name them)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode
from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # private, but the only scoped form
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from digitpipe import locks
from digitpipe.config import TrackingConfig
from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.scorer import OnnxScorer

if TYPE_CHECKING:
    from digitpipe.data import Dataset, SplitRecipe
    from digitpipe.export import Quantization
    from digitpipe.feedback import Feedback
    from digitpipe.zoo import Callback, EpochResult

PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests child runs under the parent
MAX_BATCH = 900  # log_batch accepts at most 1000 metrics and 100 params per call
MAX_PARAMS = 100
INT8_ARTIFACT = "model_int8/model.int8.onnx"
MONITOR_ARTIFACT = "report/monitor_reference.json"  # monitor.REFERENCE_FILE in the model's report folder
TRAINED_ON_ARTIFACT = "lineage/trained_on.npy"  # on the pipeline run: hashes of every image its models trained on
FEEDBACK_ARTIFACT = "feedback/feedback.npz"  # on a feedback run: the labelled digits (digitpipe.feedback.Feedback)
FEEDBACK_TAGS = {"digitpipe.kind": "feedback"}
FEEDBACK_RUNS = "tags.`digitpipe.kind` = 'feedback' and attributes.status = 'FINISHED'"


@dataclass(frozen=True)
class Champion:
    """The version the champion alias points at, with the accuracy recorded when it was registered."""

    version: str
    model_name: str
    accuracy: float
    onnx_path: str
    created_ms: int = 0  # when the version was registered (epoch milliseconds)


@functools.cache
def tracker_for(cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None,
                create: bool = True) -> Tracker:
    """One Tracker (one MLflow client, one store check) per configuration, promotion lock and process; with
    `create` False (commands that only read or change what is registered) a missing local store is an error."""
    if not create and (path := _sqlite_file(cfg.tracking_uri)) and not path.exists():
        raise UserError(f"no MLflow store at {cfg.tracking_uri} (no such file): nothing has been registered there")
    return Tracker(cfg, promotion_lock)


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// tracking URI (None for any other store)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


class Tracker:
    """One connection to the MLflow store of `cfg`: its run log and its model registry, sharing one client."""

    def __init__(self, cfg: TrackingConfig, promotion_lock: Callable[[], AbstractContextManager] | None = None) -> None:
        client = MlflowClient(cfg.tracking_uri)
        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        try:  # fail fast and clearly before any work is done, rather than mid-run
            client.search_experiments(max_results=1)
        except Exception as exc:  # MlflowException, requests' and sqlalchemy's errors: all mean "no store"
            raise UserError(f"cannot reach the MLflow tracking store at {cfg.tracking_uri} "
                            f"({first_line(exc)[:160]})") from None
        self.cfg = cfg
        self.runs = RunLog(client, cfg)
        self.registry = Registry(client, cfg, promotion_lock or functools.partial(locks.local_promotion_lock,
                                                                                 cfg.tracking_uri))


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
        """A run that ends FINISHED, or FAILED if the block raises (never left RUNNING)."""
        tags = {**(tags or {}), **owner_tags(), "digitpipe.config": self.cfg.config_file}
        if parent_id:
            tags[PARENT_TAG] = parent_id
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        try:
            yield run_id
        except BaseException:
            with contextlib.suppress(Exception):  # the store may be what failed; the original error matters more
                self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")

    def fail_orphaned_runs(self) -> list[str]:
        """Mark FAILED the RUNNING runs whose process on this host is gone (a kill -9, a crash): never left running."""
        runs = self.client.search_runs([self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000)
        orphans = [r.info.run_id for r in runs
                   if r.data.tags.get("digitpipe.host") == socket.gethostname()
                   and not _process_alive(int(r.data.tags.get("digitpipe.pid", "0")))]
        for run_id in orphans:
            self.client.set_tag(run_id, "digitpipe.failure", "its process died before the run ended")
            self.client.set_terminated(run_id, "FAILED")
        return orphans

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        """Parameters, batched (MLflow takes at most 100 per call)."""
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), MAX_PARAMS):
            self.client.log_batch(run_id, params=items[start : start + MAX_PARAMS])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        """Metrics at one step, batched."""
        now = _now_ms()
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
                raise UserError(f"lost the MLflow tracking store at {self.cfg.tracking_uri} while logging "
                                f"epoch {result.epoch}; nothing was registered ({exc.message[:120]})") from None

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

    def log_trained_on(self, run_id: str, hashes: np.ndarray) -> None:
        """Record on a pipeline run which images its models trained on (Split.seen_in_training), so that a later
        promotion compares them with a challenger only on images new to both."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(TRAINED_ON_ARTIFACT).name
            np.save(path, hashes)
            self.client.log_artifact(run_id, str(path), str(Path(TRAINED_ON_ARTIFACT).parent))

    def log_feedback(self, feedback: Feedback, identity: Mapping[str, str], live_accuracy: float) -> str:
        """One run per batch of labelled feedback: the digits as an artifact any machine can read back (not a file on
        this worker), the live accuracy of the model that scored them, and which model that was. The same digits
        and labels recorded before (a file scored again) keep their first run: they are not new feedback."""
        digest = feedback.dataset().digest
        known = self._search(f"{FEEDBACK_RUNS} and tags.feedback_digest = '{digest}'", limit=1)
        if known:
            return known[0].info.run_id
        with self.run(f"feedback {Path(feedback.source).name}", tags={**FEEDBACK_TAGS,
                                                                       "feedback_digest": digest}) as run_id:
            self.log_params(run_id, {"input": feedback.source, **identity})
            self.log_metrics(run_id, {"live_accuracy": live_accuracy, "labelled_rows": len(feedback.labels)})
            with tempfile.TemporaryDirectory() as tmp:
                path = feedback.save(Path(tmp) / Path(FEEDBACK_ARTIFACT).name)
                self.client.log_artifact(run_id, str(path), str(Path(FEEDBACK_ARTIFACT).parent))
        return run_id

    def feedback_runs(self) -> list[tuple[str, int]]:
        """Every finished feedback run as (run id, start time in epoch ms), oldest first, page by page."""
        runs = self._search(FEEDBACK_RUNS, order_by=["attributes.start_time ASC"])
        return [(r.info.run_id, r.info.start_time) for r in runs]

    def newest_feedback_ms(self) -> int:
        """When the newest finished feedback run started (epoch ms; 0 when there is none)."""
        runs = self._search(FEEDBACK_RUNS, limit=1, order_by=["attributes.start_time DESC"])
        return runs[0].info.start_time if runs else 0

    def feedback_consumed_ms(self) -> int:
        """The newest feedback a finished retraining run trained on (its `feedback_through_ms`; 0 when none did),
        promoted or not: retraining again on the same feedback would give the same verdict."""
        runs = self._search("metrics.feedback_through_ms > 0 and attributes.status = 'FINISHED'", limit=1,
                            order_by=["metrics.feedback_through_ms DESC"])
        return int(runs[0].data.metrics["feedback_through_ms"]) if runs else 0

    def _search(self, query: str, limit: int | None = None, order_by: list[str] | None = None) -> list:
        """Runs of the experiment matching `query`: the first `limit`, or all of them, page by page."""
        found, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], query, max_results=limit or 1000,
                                           order_by=order_by, page_token=token)
            found += page
            token = page.token
            if limit or not token:
                return found

    def load_feedback(self, run_ids: list[str]) -> list[Feedback]:
        """The labelled digits of each feedback run."""
        from digitpipe.feedback import Feedback

        loaded = []
        with tempfile.TemporaryDirectory() as tmp:
            for run_id in run_ids:
                path = self.client.download_artifacts(run_id, FEEDBACK_ARTIFACT, tmp)
                loaded.append(Feedback.load(Path(path), source=f"runs:/{run_id}/{FEEDBACK_ARTIFACT}"))
        return loaded


class Registry:
    """The registered model of `cfg`: versions with their tags and files, the aliases that name them, and the lock
    under which promotion reads, compares and moves an alias."""

    def __init__(self, client: MlflowClient, cfg: TrackingConfig,
                 promotion_lock: Callable[[], AbstractContextManager]) -> None:
        self.client, self.cfg = client, cfg
        self.promotion_lock = promotion_lock

    def register_onnx(self, run_id: str, onnx_path: Path, images: np.ndarray, tags: Mapping[str, object]) -> str:
        """Log the ONNX model on `run_id` and register it under the configured name with `tags` (plus its
        checksum, which scoring verifies before loading) in one call; returns the new version."""
        import onnx
        import onnxruntime

        proto = onnx.load(str(onnx_path))
        example = OnnxScorer(onnx_path).as_input(images)
        signature = mlflow.models.infer_signature(example, np.zeros((len(example), 10), np.float32))
        # Explicit requirements: MLflow would otherwise spend ~3 s in a subprocess inferring them.
        requirements = [f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"]
        with _fluent_uri(self.cfg.tracking_uri), mlflow.start_run(run_id=run_id):
            info = mlflow.onnx.log_model(proto, name="model", signature=signature, input_example=example[:2],
                                         save_as_external_data=False, pip_requirements=requirements,
                                         onnx_execution_providers=["CPUExecutionProvider"])
        checksum = hashlib.sha256(proto.SerializeToString()).hexdigest()
        name = self.cfg.registered_model
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        tags = {k: str(v) for k, v in {**tags, "onnx_sha256": checksum}.items()}
        with _fluent_uri(self.cfg.tracking_uri):  # the sqlite registry looks the logged model up via the global URI
            version = self.client.create_model_version(name, f"models:/{info.model_id}", run_id, tags=tags,
                                                       model_id=info.model_id)
        return str(version.version)

    def versions(self) -> list[dict[str, str]]:
        """Every version of the registered model, newest first, with its aliases and tags (for `digitpipe models`)."""
        name = self.cfg.registered_model
        try:
            aliases = self.client.get_registered_model(name).aliases
        except MlflowException:
            raise UserError(f"no registered model {name!r} in the registry at {self.cfg.tracking_uri}") from None
        rows = []
        for mv in self.client.search_model_versions(f"name='{name}'"):
            version = str(mv.version)
            rows.append({**mv.tags, "version": version, "created": _iso(mv.creation_timestamp), "run_id": mv.run_id,
                         "aliases": ", ".join(sorted(a for a, v in aliases.items() if str(v) == version))})
        return sorted(rows, key=lambda row: -int(row["version"]))

    def version_tags(self, version: str, name: str | None = None) -> dict[str, str]:
        """The tags of one version (of the configured registered model, or `name`); a clear error if the model or
        version does not exist."""
        name = name or self.cfg.registered_model
        try:
            return dict(self.client.get_model_version(name, version).tags)
        except MlflowException:
            raise UserError(f"{name} has no version {version!r} in the registry at {self.cfg.tracking_uri}") from None

    def set_version_tags(self, version: str, tags: Mapping[str, object]) -> None:
        """Write tags on one version (verdicts, checksums, quantization results)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(self.cfg.registered_model, version, key, str(value))

    def champion(self) -> Champion | None:
        """The version holding the champion alias, or None when there is none yet."""
        try:
            mv = self.client.get_model_version_by_alias(self.cfg.registered_model, self.cfg.champion_alias)
        except MlflowException:
            return None
        tags = mv.tags
        return Champion(str(mv.version), tags.get("model_name", "?"), float(tags.get("test_accuracy", "nan")),
                        tags.get("onnx_path", ""), int(mv.creation_timestamp or 0))

    def alias_version(self, alias: str) -> str | None:
        """The version `alias` points at in the configured registered model, or None."""
        try:
            return str(self.client.get_model_version_by_alias(self.cfg.registered_model, alias).version)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        """Point `alias` at `version`; a lock held as a lease (flows.locks) first proves it still holds."""
        if check := getattr(self.promotion_lock, "check", None):
            check()
        self.client.set_registered_model_alias(self.cfg.registered_model, alias, version)

    def next_promotion_order(self) -> int:
        """One more than the highest promotion_order of any version: called under the promotion lock, it records
        the order in which promotions entered it."""
        return 1 + max((int(v.get("promotion_order", 0)) for v in self.versions()), default=0)

    def resolve(self, uri: str, dest: Path, prefer_int8: bool = True) -> tuple[Path, dict]:
        """Download the ONNX file of `models:/NAME@ALIAS` or `models:/NAME/VERSION` (its int8 variant where one
        was accepted); returns the file and the model's identity."""
        match = re.fullmatch(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))", uri)
        if not match:
            raise UserError(f"{uri}: expected models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file")
        name, alias, version = match.groups()
        try:
            mv = (self.client.get_model_version_by_alias(name, alias) if alias
                  else self.client.get_model_version(name, version))
        except MlflowException as exc:
            raise UserError(f"{uri}: not in the registry at {self.cfg.tracking_uri} ({exc.message[:160]})") from None
        identity = {"uri": uri, "registered_model": name, "version": str(mv.version),
                    "model_name": mv.tags.get("model_name", "?"), "run_id": mv.run_id, "precision": "fp32"}
        if prefer_int8 and mv.tags.get("int8_status") == "accepted":
            path = self._download_run_file(mv.run_id, INT8_ARTIFACT, dest)
            return _verified(path, mv.tags.get("int8_sha256"), uri), identity | {"precision": "int8"}
        # the registry's copy is the truth, not a path recorded at registration
        return _verified(self._download_onnx(name, str(mv.version), dest), mv.tags.get("onnx_sha256"), uri), identity

    def version_onnx(self, version: str, dest: Path) -> Path:
        """The registered fp32 ONNX file of one version, downloaded into `dest` and checked against its checksum."""
        return self.resolve(f"models:/{self.cfg.registered_model}/{version}", dest, prefer_int8=False)[0]

    def local_onnx(self, champion: Champion, dest: Path) -> Path:
        """A local copy of a champion's ONNX file: the path recorded at registration, else downloaded."""
        if champion.onnx_path and Path(champion.onnx_path).is_file():
            return Path(champion.onnx_path)
        return self._download_onnx(self.cfg.registered_model, champion.version, dest)

    def _download_onnx(self, name: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        uri = f"models:/{name}/{version}"
        try:
            with _fluent_uri(self.cfg.tracking_uri):  # models:/ URIs resolve against the global registry
                folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
        except (MlflowException, OSError) as exc:
            raise UserError(f"{uri}: cannot download its model files ({first_line(exc)[:160]})") from None
        found = next(folder.rglob("*.onnx"), None)
        if found is None:
            raise UserError(f"{uri}: the registered model holds no .onnx file")
        return found

    def _download_run_file(self, run_id: str, artifact: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, artifact, str(dest)))
        except (MlflowException, OSError) as exc:
            raise UserError(f"run {run_id}: cannot download {artifact} ({first_line(exc)[:160]})") from None

    def monitor_reference(self, identity: dict, dest: Path) -> Path | None:
        """The drift monitor's reference of a resolved model (its run's report/monitor_reference.json), or None for
        a version registered before references were recorded."""
        try:
            return Path(self.client.download_artifacts(identity["run_id"], MONITOR_ARTIFACT, str(dest)))
        except (MlflowException, OSError):
            return None

    def record_monitor_reference(self, identity: dict, path: Path) -> None:
        """Log a drift reference built after registration where registration would have put it."""
        self.client.log_artifact(identity["run_id"], str(path), str(Path(MONITOR_ARTIFACT).parent))

    def record_quantization(self, identity: dict, result: Quantization, checked_on: str) -> None:
        """Log the int8 file (if accepted) on the version's run and the decision (and the split it was checked on)
        as version tags."""
        if result.path is not None:
            with tempfile.TemporaryDirectory() as tmp:  # the artifact's name is fixed, whatever the user called the file
                named = Path(shutil.copyfile(result.path, Path(tmp) / Path(INT8_ARTIFACT).name))
                self.client.log_artifact(identity["run_id"], str(named), str(Path(INT8_ARTIFACT).parent))
        checksum = hashlib.sha256(result.path.read_bytes()).hexdigest() if result.path else ""
        for key, value in {"int8_status": "accepted" if result.accepted else "refused", "int8_sha256": checksum,
                           "int8_accuracy": result.int8_accuracy, "fp32_accuracy": result.fp32_accuracy,
                           "int8_reason": f"{result.reason()}, {checked_on}"}.items():
            self.client.set_model_version_tag(identity["registered_model"], identity["version"], key, str(value))

    def trained_on(self, version: str) -> np.ndarray | None:
        """The image hashes `version` trained on, from its pipeline run; None for a version that recorded none."""
        run_id = self.version_tags(version).get("pipeline_run_id")
        if not run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return np.load(self.client.download_artifacts(run_id, TRAINED_ON_ARTIFACT, tmp))
            except (MlflowException, OSError, ValueError):  # missing, or not a .npy file: nothing known
                return None

    def training_split(self, name: str, version: str) -> SplitRecipe:
        """How version `version` of `name` was split by its pipeline run (params and dataset digests), to check it
        again on the same held-out images; fractions it did not record are the defaults it then had."""
        from digitpipe.data import SplitRecipe

        run_id = self.version_tags(version, name).get("pipeline_run_id")
        try:
            run = self.client.get_run(run_id) if run_id else None
        except MlflowException:
            run = None
        params = run.data.params if run else {}
        if "data" not in params:
            raise UserError(f"models:/{name}/{version}: its training run (pipeline_run_id {run_id or 'not recorded'}) "
                            f"is not in the store at {self.cfg.tracking_uri} with its data, so its split is unknown")
        if run.data.metrics.get("feedback_train_rows", 0) > 0:
            raise UserError(f"models:/{name}/{version}: trained with labelled feedback from the store, so its split "
                            "cannot be rebuilt from data files; export its .onnx file and give --data to check on")
        digests = {tag.value: d.dataset.digest for d in run.inputs.dataset_inputs for tag in d.tags
                   if tag.key == MLFLOW_DATASET_CONTEXT}
        return SplitRecipe(Path(params["data"]), params.get("protocol", "book"), int(params.get("seed", 42)),
                           float(params.get("test_fraction", 0.25)), float(params.get("val_fraction", 0.1)), digests)


@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent calls (log_model, download_artifacts of models:/) read a process-global URI, and setting it
    also rewrites the MLFLOW_TRACKING_URI variable: set it for one call, then put both back as they were."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _verified(path: Path, expected_sha256: str | None, uri: str) -> Path:
    """`path` if its SHA-256 is the one recorded at registration; a changed or damaged artifact is refused."""
    if expected_sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != expected_sha256:
        raise UserError(f"{uri}: the stored ONNX file does not match the checksum recorded at registration "
                        "(corrupted or replaced); refusing to score with it")
    return path


def owner_tags() -> dict[str, str]:
    """Which process on which host owns a run: lets a later run tell a dead attempt from a live one."""
    return {"digitpipe.host": socket.gethostname(), "digitpipe.pid": str(os.getpid())}


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ms / 1000))


def _now_ms() -> int:
    return int(time.time() * 1000)


def open_store(uri: str) -> None:
    """Create or migrate the store at `uri` (a new sqlite store runs its migrations: seconds)."""
    MlflowClient(uri).search_experiments(max_results=1)
