"""The registered model: versions with their tags and files (checked against the checksums recorded at
registration), the aliases that name them, and the lock under which promotion moves an alias. What each feature
keeps on a version is a collaborator of its own: lineage, monitor references, quantization, cards, retention."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.models import ModelIdentity, ModelRef, VersionRecord
from digitpipe.tracking.cards import CardRecords
from digitpipe.tracking.client import fluent_uri, iso_minute, permitted
from digitpipe.tracking.lineage import VersionLineage
from digitpipe.tracking.monitoring import MonitorReferences
from digitpipe.tracking.quantization import INT8_ARTIFACT, QuantizationRecords
from digitpipe.tracking.retention import Retention

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from digitpipe.config import TrackingConfig


@dataclass(frozen=True)
class Champion:
    """The version the champion alias points at, with the accuracy recorded when it was registered."""

    version: str
    model_name: str
    accuracy: float
    onnx_path: str
    created_ms: int = 0  # when the version was registered (epoch milliseconds)


class Registry:
    """The registered model of `cfg`: versions with their tags and files, the aliases that name them, the lock
    under which promotion reads, compares and moves an alias, and each feature's records on its versions."""

    def __init__(self, client: MlflowClient, cfg: TrackingConfig,
                 promotion_lock: Callable[[], AbstractContextManager]) -> None:
        self.client, self.cfg = client, cfg
        self.promotion_lock = promotion_lock
        self.lineage = VersionLineage(self)
        self.monitor_references = MonitorReferences(client)
        self.quantization = QuantizationRecords(client)
        self.cards = CardRecords(self)
        self.retention = Retention(self)

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
        with fluent_uri(self.cfg.tracking_uri), mlflow.start_run(run_id=run_id):
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
        with fluent_uri(self.cfg.tracking_uri):  # the sqlite registry looks the logged model up via the global URI
            version = self.client.create_model_version(name, f"models:/{info.model_id}", run_id, tags=tags,
                                                       model_id=info.model_id)
        return str(version.version)

    def versions(self) -> list[VersionRecord]:
        """Every version of the registered model, newest first, with its aliases and tags (for `digitpipe models`)."""
        name = self.cfg.registered_model
        try:
            aliases = self.client.get_registered_model(name).aliases
        except MlflowException:
            raise UserError(f"no registered model {name!r} in the registry at {self.cfg.tracking_uri}") from None
        rows = [VersionRecord(str(mv.version), iso_minute(mv.creation_timestamp), mv.run_id,
                              tuple(sorted(a for a, v in aliases.items() if str(v) == str(mv.version))), dict(mv.tags))
                for mv in self.client.search_model_versions(f"name='{name}'")]
        return sorted(rows, key=lambda row: -int(row.version))

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
        with permitted(f"write tags on v{version}"):
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
        with permitted(f"move the {alias} alias"):
            self.client.set_registered_model_alias(self.cfg.registered_model, alias, version)

    def next_promotion_order(self) -> int:
        """One more than the highest promotion_order of any version: called under the promotion lock, it records
        the order in which promotions entered it."""
        return 1 + max((int(v.tags.get("promotion_order", 0)) for v in self.versions()), default=0)

    def resolve(self, ref: ModelRef, dest: Path, prefer_int8: bool = True) -> tuple[Path, ModelIdentity]:
        """Download the ONNX file of a registered version (its int8 variant where one was accepted) and check it
        against its recorded checksum; returns the file and the model's identity."""
        mv = self._model_version(ref)
        identity = ModelIdentity(ref.text, ref.name, str(mv.version), mv.tags.get("model_name", "?"), mv.run_id,
                                 "fp32")
        if prefer_int8 and mv.tags.get("int8_status") == "accepted":
            path = self._download_run_file(mv.run_id, INT8_ARTIFACT, dest)
            return _verified(path, mv.tags.get("int8_sha256"), ref), dataclasses.replace(identity, precision="int8")
        # the registry's copy is the truth, not a path recorded at registration
        path = self._download_onnx(ref.name, str(mv.version), dest)
        return _verified(path, mv.tags.get("onnx_sha256"), ref), identity

    def version_of(self, ref: ModelRef) -> str:
        """The version `ref` names now, without downloading it: what a server polls."""
        return str(self._model_version(ref).version)

    def _model_version(self, ref: ModelRef):
        try:
            return (self.client.get_model_version_by_alias(ref.name, ref.alias) if ref.alias
                    else self.client.get_model_version(ref.name, ref.version))
        except MlflowException as exc:
            raise UserError(f"{ref.text}: not in the registry at {self.cfg.tracking_uri} "
                            f"({first_line(exc.message, 160)})") from None

    def version_onnx(self, version: str, dest: Path) -> Path:
        """The registered fp32 ONNX file of one version, downloaded into `dest` and checked against its recorded
        checksum: what the gate and the card judge is the registry's copy, never a local one that may differ."""
        return self.resolve(ModelRef.of_version(self.cfg.registered_model, version), dest, prefer_int8=False)[0]

    def local_onnx(self, champion: Champion, dest: Path) -> Path:
        """A local copy of a champion's ONNX file: the path recorded at registration, else downloaded."""
        if champion.onnx_path and Path(champion.onnx_path).is_file():
            return Path(champion.onnx_path)
        return self._download_onnx(self.cfg.registered_model, champion.version, dest)

    def _download_onnx(self, name: str, version: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        uri = f"models:/{name}/{version}"
        try:
            with fluent_uri(self.cfg.tracking_uri):  # models:/ URIs resolve against the global registry
                folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
        except (MlflowException, OSError) as exc:
            raise UserError(f"{uri}: cannot download its model files ({first_line(exc, 160)})") from None
        found = next(folder.rglob("*.onnx"), None)
        if found is None:
            raise UserError(f"{uri}: the registered model holds no .onnx file")
        return found

    def _download_run_file(self, run_id: str, artifact: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self.client.download_artifacts(run_id, artifact, str(dest)))
        except (MlflowException, OSError) as exc:
            raise UserError(f"run {run_id}: cannot download {artifact} ({first_line(exc, 160)})") from None


def _verified(path: Path, expected_sha256: str | None, ref: ModelRef) -> Path:
    """`path` if its SHA-256 is the one recorded at registration; a changed or damaged artifact is refused."""
    if expected_sha256 and hashlib.sha256(path.read_bytes()).hexdigest() != expected_sha256:
        raise UserError(f"{ref.text}: the stored ONNX file does not match the checksum recorded at registration "
                        "(corrupted or replaced); refusing to score with it")
    return path
