"""Lineage: which images a pipeline run's models trained on (their hashes, an artifact of the run, logged by
RunLog.log_trained_on), how a version's
run split its data, so that a version can be checked again on the same held-out images, and which version a
training key (digitpipe.training_key) already made."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from digitpipe.errors import UserError
from digitpipe.records.verdicts import Verdict, VerdictKind, from_tags, run_tags, to_tags

if TYPE_CHECKING:
    from digitpipe.data import SplitRecipe
    from digitpipe.tracking.client import VersionStore

TRAINED_ON_ARTIFACT = "lineage/trained_on.npy"  # on the pipeline run: hashes of every image its models trained on
TRAINING_KEY_TAG = "training_key"


@dataclass(frozen=True)
class TrainedBefore:
    """A judged version registered with the training key a run computed: the same model, not trained again."""

    name: str
    version: str
    verdict: Verdict
    tags: Mapping[str, str]

    def line(self) -> str:
        """The stage line for this model."""
        return (f"{self.name} unchanged: same data, code and settings as v{self.version} "
                f"(judged: {self.verdict.kind.value})")

    def summary(self) -> dict[str, object]:
        """This model in a run's JSON summary."""
        robust = self.tags.get("robust_accuracy")
        return {"unchanged": True, "model_version": self.version, "verdict": self.verdict.kind.value,
                "accuracy": float(self.tags.get("test_accuracy", "nan")),
                "robust_accuracy": float(robust) if robust else None, "onnx_path": self.tags.get("onnx_path", "")}


class VersionLineage:
    """The registry's half of lineage: a version's pipeline run, read back."""

    def __init__(self, store: VersionStore) -> None:
        self.store, self.client, self.cfg = store, store.client, store.cfg

    def trained_on(self, version: str, tags: Mapping[str, str] | None = None) -> np.ndarray | None:
        """The image hashes `version` (whose `tags` the caller may have read already) trained on, from its pipeline
        run; None for a version that recorded none."""
        run_id = (tags if tags is not None else self.store.version_tags(version)).get("pipeline_run_id")
        if not run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return np.load(self.client.download_artifacts(run_id, TRAINED_ON_ARTIFACT, tmp))
            except (MlflowException, OSError, ValueError):  # missing, or not a .npy file: nothing known
                return None

    def follow_decision(self, verdict: Verdict) -> None:
        """A person's decision (or the end of the wait) on the candidate of a pipeline run, on that run too: its
        `verdict` tags say what holds now, not that the version waits."""
        run_id = self.store.version_tags(verdict.version).get("pipeline_run_id")
        if not run_id:
            return
        with contextlib.suppress(MlflowException):  # the run is gone (digitpipe gc): the version holds the decision
            for key, value in run_tags(verdict).items():
                self.client.set_tag(run_id, key, value)

    def mark_unjudged(self, pipeline_run: str | None = None) -> list[str]:
        """Mark `interrupted` the versions that no gate judged because their pipeline run stopped first (`pipeline_run`,
        or any run that ended KILLED or FAILED), so that none is left without a verdict and the next run trains
        and judges them again; returns them."""
        try:
            rows = self.store.versions()
        except UserError:  # no registered model yet
            return []
        ended: dict[str, bool] = {}
        marked = []
        for row in rows:
            run_id = row.pipeline_run_id
            if "verdict" in row.tags or TRAINING_KEY_TAG not in row.tags or not run_id:
                continue
            if run_id not in ended:
                ended[run_id] = run_id == pipeline_run or (pipeline_run is None and self._ended(run_id))
            if ended[run_id]:
                self.store.set_version_tags(row.version, to_tags(Verdict(
                    row.version, VerdictKind.INTERRUPTED, f"its pipeline run {run_id} stopped before the gate "
                    "judged it (interrupted, killed or failed): the next run trains and judges it again")))
                marked.append(row.version)
        return marked

    def _ended(self, run_id: str) -> bool:
        """Whether a pipeline run ended without finishing (killed, failed, or deleted)."""
        try:
            return self.client.get_run(run_id).info.status in ("KILLED", "FAILED")
        except MlflowException:
            return True

    def trained_before(self, keys: Mapping[str, str]) -> dict[str, TrainedBefore]:
        """Per model name of `keys` (name -> training key), the newest version registered with that key whose
        verdict stands (a run that crashed before its verdict, a promotion refused for want of a lock, and an
        approval that came too late leave the model to be trained and judged again); versions from before keys
        existed hold none, so they never match."""
        found = {}
        for name, key in keys.items():
            versions = self.client.search_model_versions(
                f"name='{self.cfg.registered_model}' and tags.{TRAINING_KEY_TAG}='{key}'")
            verdicts = {str(mv.version): (from_tags(str(mv.version), mv.tags), mv.tags) for mv in versions}
            standing = [(int(v), verdict, tags) for v, (verdict, tags) in verdicts.items()
                        if verdict is not None and verdict.kind.stands]
            if standing:
                version, verdict, tags = max(standing, key=lambda row: row[0])
                found[name] = TrainedBefore(name, str(version), verdict, tags)
        return found

    def training_split(self, name: str, version: str, held_out_only: bool = False) -> SplitRecipe:
        """How version `version` of `name` was split by its pipeline run (params and dataset digests), to check it
        again on the same held-out images; fractions it did not record are the defaults it then had. With
        `held_out_only`, only the held-out part is checked, which labelled feedback never joins."""
        from digitpipe.data import SplitRecipe

        run_id = self.store.version_tags(version, name).get("pipeline_run_id")
        try:
            run = self.client.get_run(run_id) if run_id else None
        except MlflowException:
            run = None
        params = run.data.params if run else {}
        if "data" not in params:
            raise UserError(f"models:/{name}/{version}: its training run (pipeline_run_id {run_id or 'not recorded'}) "
                            f"is not in the store at {self.cfg.tracking_uri} with its data, so its split is unknown")
        if run.data.metrics.get("feedback_train_rows", 0) > 0 and not held_out_only:
            raise UserError(f"models:/{name}/{version}: trained with labelled feedback from the store, so its split "
                            "cannot be rebuilt from data files; export its .onnx file and give --data to check on")
        digests = {tag.value: d.dataset.digest for d in run.inputs.dataset_inputs for tag in d.tags
                   if tag.key == MLFLOW_DATASET_CONTEXT and (tag.value == "evaluation" or not held_out_only)}
        seed = params.get("split_seed", params.get("seed", 42))  # runs before --split-seed split by --seed
        return SplitRecipe(Path(params["data"]), params.get("protocol", "book"), int(seed),
                           float(params.get("test_fraction", 0.25)), float(params.get("val_fraction", 0.1)), digests)
