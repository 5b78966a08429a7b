"""Lineage: which images a pipeline run's models trained on (their hashes, an artifact of the run), how a version's
run split its data, so that a version can be checked again on the same held-out images, and which version a
training key (digitpipe.training_key) already made."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from digitpipe.errors import UserError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from digitpipe.config import TrackingConfig
    from digitpipe.data import SplitRecipe

TRAINED_ON_ARTIFACT = "lineage/trained_on.npy"  # on the pipeline run: hashes of every image its models trained on


JUDGE_AGAIN = {"not_promoted", "not_approved"}  # verdicts that leave a model to train again with the same key
TRAINING_KEY_TAG = "training_key"


@dataclass(frozen=True)
class TrainedBefore:
    """A judged version registered with the training key a run computed: the same model, not trained again."""

    name: str
    version: str
    verdict: str
    tags: Mapping[str, str]

    def line(self) -> str:
        """The stage line for this model."""
        return f"{self.name} unchanged: same data, code and settings as v{self.version} (judged: {self.verdict})"

    def summary(self) -> dict[str, object]:
        """This model in a run's JSON summary."""
        robust = self.tags.get("robust_accuracy")
        return {"unchanged": True, "model_version": self.version, "verdict": self.verdict,
                "accuracy": float(self.tags.get("test_accuracy", "nan")),
                "robust_accuracy": float(robust) if robust else None, "onnx_path": self.tags.get("onnx_path", "")}


class RunLineage:
    """RunLog's half of lineage (a mixin): the pipeline run records what its models trained on."""

    client: MlflowClient

    def log_trained_on(self, run_id: str, hashes: np.ndarray) -> None:
        """Record on a pipeline run which images its models trained on (Split.seen_in_training), so that a later
        promotion compares them with a challenger only on images new to both."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(TRAINED_ON_ARTIFACT).name
            np.save(path, hashes)
            self.client.log_artifact(run_id, str(path), str(Path(TRAINED_ON_ARTIFACT).parent))


class VersionLineage:
    """Registry's half of lineage (a mixin: it uses Registry's version_tags): a version's pipeline run, read back."""

    client: MlflowClient
    cfg: TrackingConfig

    def trained_on(self, version: str, tags: Mapping[str, str] | None = None) -> np.ndarray | None:
        """The image hashes `version` (whose `tags` the caller may have read already) trained on, from its pipeline
        run; None for a version that recorded none."""
        run_id = (tags if tags is not None else self.version_tags(version)).get("pipeline_run_id")
        if not run_id:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            try:
                return np.load(self.client.download_artifacts(run_id, TRAINED_ON_ARTIFACT, tmp))
            except (MlflowException, OSError, ValueError):  # missing, or not a .npy file: nothing known
                return None

    def trained_before(self, keys: Mapping[str, str]) -> dict[str, TrainedBefore]:
        """Per model name of `keys` (name -> training key), the newest version registered with that key whose
        verdict stands (a run that crashed before its verdict, a promotion refused for want of a lock, and an
        approval that came too late leave the model to be trained and judged again); versions from before keys
        existed hold none, so they never match."""
        found = {}
        for name, key in keys.items():
            versions = self.client.search_model_versions(
                f"name='{self.cfg.registered_model}' and tags.{TRAINING_KEY_TAG}='{key}'")
            judged = sorted((mv for mv in versions if mv.tags.get("verdict", "not_promoted") not in JUDGE_AGAIN),
                            key=lambda mv: -int(mv.version))
            if judged:
                found[name] = TrainedBefore(name, str(judged[0].version), judged[0].tags["verdict"], judged[0].tags)
        return found

    def training_split(self, name: str, version: str, held_out_only: bool = False) -> SplitRecipe:
        """How version `version` of `name` was split by its pipeline run (params and dataset digests), to check it
        again on the same held-out images; fractions it did not record are the defaults it then had. With
        `held_out_only`, only the held-out part is checked, which labelled feedback never joins."""
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
        if run.data.metrics.get("feedback_train_rows", 0) > 0 and not held_out_only:
            raise UserError(f"models:/{name}/{version}: trained with labelled feedback from the store, so its split "
                            "cannot be rebuilt from data files; export its .onnx file and give --data to check on")
        digests = {tag.value: d.dataset.digest for d in run.inputs.dataset_inputs for tag in d.tags
                   if tag.key == MLFLOW_DATASET_CONTEXT and (tag.value == "evaluation" or not held_out_only)}
        seed = params.get("split_seed", params.get("seed", 42))  # runs before --split-seed split by --seed
        return SplitRecipe(Path(params["data"]), params.get("protocol", "book"), int(seed),
                           float(params.get("test_fraction", 0.25)), float(params.get("val_fraction", 0.1)), digests)
