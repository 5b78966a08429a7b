"""The version store (digitpipe.tracking.registry.Registry) and its collaborators on a sqlite MLflow store: version
rows, tags and aliases, a registered file downloaded and checked against its checksum, lineage, drift references,
int8 records, evidence cards and retention. One store for the session (conftest's `mlflow_store`: a fresh store
migrates for seconds), a registered model of its own per test."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.exceptions import MlflowException

from digitpipe.config import TrackingConfig
from digitpipe.data import SplitRecipe
from digitpipe.errors import UserError
from digitpipe.export import Quantization, export_onnx
from digitpipe.records.models import ModelIdentity, ModelRef
from digitpipe.records.verdicts import Verdict, VerdictKind, to_tags
from digitpipe.tracking import Champion, Registry, tracker_for
from digitpipe.tracking.client import iso_minute

EXPERIMENT = "code-registry"


@dataclass(frozen=True)
class Store:
    uri: str
    client: MlflowClient
    experiment_id: str
    artifacts: Path  # the experiment's artifact folder: runs' files and logged models


@pytest.fixture(scope="module")
def store(mlflow_store, tmp_path_factory) -> Store:
    artifacts = tmp_path_factory.mktemp("registry-artifacts")
    client = MlflowClient(mlflow_store)
    return Store(mlflow_store, client, client.create_experiment(EXPERIMENT, artifact_location=str(artifacts)),
                 artifacts)


@pytest.fixture(scope="module")
def linear_onnx(digits, tmp_path_factory) -> Path:
    """A linear model over raw pixels (each digit's mean image: no fitting, ~80% right on the fixture), exported as
    digitpipe exports its logistic regression."""
    pixels = digits.flat() / 255.0
    means = np.stack([pixels[digits.labels == d].mean(0) for d in range(10)])
    model = SimpleNamespace(predict_proba=None, classes_=np.arange(10), coef_=means / 255.0,
                            intercept_=-(means**2).sum(1) / 2)
    return export_onnx(model, tmp_path_factory.mktemp("linear") / "linear.onnx")


@pytest.fixture
def registry(store, request) -> Registry:
    """A registered model named after the test, empty."""
    name = "registry-" + request.node.name.removeprefix("test_")[:90]
    store.client.create_registered_model(name)
    return tracker_for(TrackingConfig(tracking_uri=store.uri, experiment=EXPERIMENT, registered_model=name,
                                      artifact_location=str(store.artifacts))).registry


def new_run(store: Store, params: dict | None = None, finished: bool = True) -> str:
    run_id = store.client.create_run(store.experiment_id).info.run_id
    if params:
        store.client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
    if finished:
        store.client.set_terminated(run_id)
    return run_id


def add_version(store: Store, registry: Registry, tags: dict | None = None, run_id: str | None = None) -> str:
    """A version without files (what version rows, tags, aliases and verdicts need), on a run of its own."""
    tags = {k: str(v) for k, v in (tags or {}).items()}
    return str(store.client.create_model_version(registry.cfg.registered_model, str(store.artifacts),
                                                 run_id or new_run(store), tags=tags).version)


def verdict_tags(version: str, kind: VerdictKind, reason: str = "because", **fields) -> dict[str, object]:
    return to_tags(Verdict(version, kind, reason, **fields))


def test_versions_are_rows_newest_first_with_their_aliases_and_tags(store, registry):
    runs = [new_run(store) for _ in range(3)]
    for run_id, model in zip(runs, ("logreg", "mlp", "lenet")):
        add_version(store, registry, {"model_name": model, "test_accuracy": 0.9}, run_id)
    registry.set_alias("champion", "2")
    registry.set_alias("previous_champion", "1")
    registry.set_alias("canary", "2")
    rows = registry.versions()
    assert [(row.version, row.run_id, row.aliases, dict(row.tags)) for row in rows] == [
        ("3", runs[2], (), {"model_name": "lenet", "test_accuracy": "0.9"}),
        ("2", runs[1], ("canary", "champion"), {"model_name": "mlp", "test_accuracy": "0.9"}),
        ("1", runs[0], ("previous_champion",), {"model_name": "logreg", "test_accuracy": "0.9"})]
    created = store.client.get_model_version(registry.cfg.registered_model, "3").creation_timestamp
    assert rows[0].created == iso_minute(created) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", rows[0].created)
    assert (rows[1].model_name, rows[1].verdict, rows[1].awaiting) == ("mlp", None, False)


def test_a_registered_model_that_does_not_exist_is_one_clear_line(store):
    absent = tracker_for(TrackingConfig(tracking_uri=store.uri, registered_model="never-registered")).registry
    with pytest.raises(UserError) as refused:
        absent.versions()
    assert str(refused.value) == f"no registered model 'never-registered' in the registry at {store.uri}"


def test_version_tags_are_written_as_strings_and_read_back(store, registry):
    version = add_version(store, registry, {"model_name": "lenet"})
    registry.set_version_tags(version, {"test_accuracy": 0.975, "robust_digits": 300, "note": "kept"})
    assert registry.version_tags(version) == {"model_name": "lenet", "test_accuracy": "0.975",
                                              "robust_digits": "300", "note": "kept"}
    name = registry.cfg.registered_model
    with pytest.raises(UserError) as refused:
        registry.version_tags("9")
    assert str(refused.value) == f"{name} has no version '9' in the registry at {store.uri}"
    other = tracker_for(TrackingConfig(tracking_uri=store.uri, registered_model="elsewhere")).registry
    assert other.version_tags(version, name) == registry.version_tags(version)  # another model's, by name


def test_the_champion_is_the_version_its_alias_names(store, registry):
    assert (registry.champion(), registry.alias_version("champion")) == (None, None)
    add_version(store, registry, {"model_name": "logreg", "test_accuracy": 0.91, "onnx_path": "/m/logreg.onnx"})
    add_version(store, registry, {"model_name": "lenet", "test_accuracy": 0.989, "onnx_path": "/m/lenet.onnx"})
    registry.set_alias("champion", "2")
    created = store.client.get_model_version(registry.cfg.registered_model, "2").creation_timestamp
    assert registry.champion() == Champion("2", "lenet", 0.989, "/m/lenet.onnx", created)
    registry.set_alias("champion", "1")
    assert (registry.champion().version, registry.alias_version("champion")) == ("1", "1")
    assert registry.alias_version("previous_champion") is None


class LapsedLease:
    """A promotion lock held as a lease (flows/locks.py) that ran out: it says so when checked."""

    def __call__(self):
        return contextlib.nullcontext()

    def check(self) -> None:
        raise UserError("the promotion lease lapsed")


def test_a_lease_that_lapsed_moves_no_alias(store, registry):
    """A lock held as a lease proves it still holds before the alias moves."""
    add_version(store, registry)
    guarded = tracker_for(registry.cfg, LapsedLease()).registry
    with pytest.raises(UserError, match="^the promotion lease lapsed$"):
        guarded.set_alias("champion", "1")
    assert registry.alias_version("champion") is None


def test_a_registered_file_is_downloaded_checked_and_refused_once_damaged(store, registry, linear_onnx, digits,
                                                                         tmp_path):
    run_id = new_run(store)
    assert registry.register_onnx(run_id, linear_onnx, digits.images[:8], {"model_name": "logreg"}) == "1"
    registry.set_alias("champion", "1")
    name = registry.cfg.registered_model
    ref = ModelRef.parse(f"models:/{name}@champion")
    path, identity = registry.resolve(ref, tmp_path / "first")
    assert path.read_bytes() == linear_onnx.read_bytes() and path.is_relative_to(tmp_path / "first")
    assert identity == ModelIdentity(f"models:/{name}@champion", name, "1", "logreg", run_id, "fp32")
    assert registry.version_tags("1")["onnx_sha256"] == hashlib.sha256(linear_onnx.read_bytes()).hexdigest()
    assert registry.version_of(ref) == "1" == registry.version_of(ModelRef.of_version(name, "1"))

    model_id = store.client.get_model_version(name, "1").source.removeprefix("models:/")
    stored = [p for p in store.artifacts.rglob("model.onnx") if model_id in p.parts]
    assert len(stored) == 1
    stored[0].write_bytes(stored[0].read_bytes()[:-64] + bytes(64))  # the registry's copy damaged on disk
    with pytest.raises(UserError) as refused:
        registry.resolve(ref, tmp_path / "second")
    assert str(refused.value) == (f"models:/{name}@champion: the stored ONNX file does not match the checksum "
                                  "recorded at registration (corrupted or replaced); refusing to score with it")


def test_the_gate_and_the_card_read_the_registered_file_not_a_local_copy(store, registry, linear_onnx, digits,
                                                                        tmp_path):
    """A damaged registered file is refused even while the file it was registered from is intact on this machine."""
    local = tmp_path / "kept.onnx"
    local.write_bytes(linear_onnx.read_bytes())
    registry.register_onnx(new_run(store), local, digits.images[:8], {"model_name": "logreg", "onnx_path": local})
    name = registry.cfg.registered_model
    assert registry.version_onnx("1", tmp_path / "first").read_bytes() == local.read_bytes()
    model_id = store.client.get_model_version(name, "1").source.removeprefix("models:/")
    stored = next(p for p in store.artifacts.rglob("model.onnx") if model_id in p.parts)
    stored.write_bytes(stored.read_bytes()[:-64] + bytes(64))
    with pytest.raises(UserError) as refused:
        registry.version_onnx("1", tmp_path / "second")
    assert str(refused.value).startswith(f"models:/{name}/1: the stored ONNX file does not match the checksum")


def test_a_reference_to_nothing_registered_is_one_clear_line(store, registry):
    add_version(store, registry)
    name = registry.cfg.registered_model
    for text in (f"models:/{name}@champion", f"models:/{name}/7"):
        with pytest.raises(UserError) as refused:
            registry.version_of(ModelRef.parse(text))
        message = str(refused.value)
        assert message.startswith(f"{text}: not in the registry at {store.uri} (") and "\n" not in message


def test_the_newest_version_whose_verdict_stands_is_trained_before(store, registry):
    """Per model, the newest version of the same training key whose decision stands: one awaiting a person stands,
    one that came too late to be approved or could not be judged does not."""
    judged = [("logreg", VerdictKind.REJECTED), ("logreg", VerdictKind.AWAITING_APPROVAL), ("logreg", None),
              ("mlp", VerdictKind.PROMOTED), ("mlp", VerdictKind.NOT_APPROVED), ("lenet", VerdictKind.NOT_PROMOTED),
              ("dnn", VerdictKind.PROMOTED)]
    for version, (model, kind) in enumerate(judged, start=1):
        tags = {"model_name": model, "training_key": f"key-{model}", "test_accuracy": 0.9}
        add_version(store, registry, tags | (verdict_tags(str(version), kind) if kind else {}))
    found = registry.lineage.trained_before({"logreg": "key-logreg", "mlp": "key-mlp", "lenet": "key-lenet",
                                             "dnn": "another-key"})
    assert {name: (row.version, row.verdict.kind) for name, row in found.items()} == {
        "logreg": ("2", VerdictKind.AWAITING_APPROVAL), "mlp": ("4", VerdictKind.PROMOTED)}
    assert found["mlp"].line() == "mlp unchanged: same data, code and settings as v4 (judged: promoted)"
    assert found["mlp"].summary() == {"unchanged": True, "model_version": "4", "verdict": "promoted",
                                      "accuracy": 0.9, "robust_accuracy": None, "onnx_path": ""}


def test_the_images_a_version_trained_on_come_from_its_pipeline_run(store, registry):
    runs = tracker_for(registry.cfg).runs
    pipeline, empty = new_run(store), new_run(store)
    hashes = np.array([3, 1, 2**63 + 5], dtype="<u8")
    runs.log_trained_on(pipeline, hashes)
    recorded = add_version(store, registry, {"pipeline_run_id": pipeline})
    nothing_logged = add_version(store, registry, {"pipeline_run_id": empty})
    no_pipeline = add_version(store, registry)
    trained_on = registry.lineage.trained_on(recorded)
    assert trained_on.dtype == np.dtype("<u8") and trained_on.tolist() == hashes.tolist()
    assert registry.lineage.trained_on("any", {"pipeline_run_id": pipeline}).tolist() == hashes.tolist()
    assert registry.lineage.trained_on(nothing_logged) is None
    assert registry.lineage.trained_on(no_pipeline) is None


def test_a_versions_split_is_read_from_its_pipeline_run(store, registry):
    params = {"data": "/data/mnist", "protocol": "standard", "split_seed": 7, "seed": 3, "test_fraction": 0.2}
    pipeline, fed = new_run(store, params), new_run(store, params)
    store.client.log_metric(fed, "feedback_train_rows", 40)
    name = registry.cfg.registered_model
    split = add_version(store, registry, {"pipeline_run_id": pipeline})
    assert registry.lineage.training_split(name, split) == SplitRecipe(Path("/data/mnist"), "standard", 7, 0.2, 0.1)
    unknown = add_version(store, registry)
    with pytest.raises(UserError) as refused:
        registry.lineage.training_split(name, unknown)
    assert str(refused.value) == (f"models:/{name}/{unknown}: its training run (pipeline_run_id not recorded) is not "
                                  f"in the store at {store.uri} with its data, so its split is unknown")
    with_feedback = add_version(store, registry, {"pipeline_run_id": fed})
    with pytest.raises(UserError, match=f"^models:/{name}/{with_feedback}: trained with labelled feedback"):
        registry.lineage.training_split(name, with_feedback)
    assert registry.lineage.training_split(name, with_feedback, held_out_only=True).seed == 7


def test_a_drift_reference_recorded_on_a_versions_run_is_downloaded_again(store, registry, tmp_path):
    name, run_id = registry.cfg.registered_model, new_run(store)
    version = add_version(store, registry, {"model_name": "lenet"}, run_id)
    identity = ModelIdentity(f"models:/{name}/{version}", name, version, "lenet", run_id, "fp32")
    assert registry.monitor_references.download(identity, tmp_path / "before") is None
    reference = tmp_path / "made" / "monitor_reference.json"
    reference.parent.mkdir()
    reference.write_text('{"spec": "digitpipe-monitor-v1"}')
    registry.monitor_references.record(identity, reference)
    downloaded = registry.monitor_references.download(identity, tmp_path / "after")
    assert downloaded == tmp_path / "after" / "monitor_reference.json"
    assert downloaded.read_text() == '{"spec": "digitpipe-monitor-v1"}'
    assert registry.monitor_references.download(ModelIdentity("/m/lenet.onnx"), tmp_path / "file") is None


def test_an_accepted_int8_file_is_recorded_and_preferred_and_a_refused_one_only_noted(store, registry,
                                                                                      linear_onnx, tmp_path):
    name, run_id = registry.cfg.registered_model, new_run(store)
    version = add_version(store, registry, {"model_name": "logreg"}, run_id)
    identity = ModelIdentity(f"models:/{name}/{version}", name, version, "logreg", run_id, "fp32")
    accepted = Quantization(0.9125, 0.9120, 0.001, linear_onnx)  # any file stands for the int8 one here
    registry.quantization.record(identity, accepted, "checked on the held-out part of /data")
    assert registry.version_tags(version) == {
        "model_name": "logreg", "int8_status": "accepted",
        "int8_sha256": hashlib.sha256(linear_onnx.read_bytes()).hexdigest(), "int8_accuracy": "0.912",
        "fp32_accuracy": "0.9125", "int8_reason": "int8 accepted: held-out accuracy 0.9120 vs fp32 0.9125 (drop 0.05 "
                                                  "points, limit 0.10), checked on the held-out part of /data"}
    path, loaded = registry.resolve(ModelRef.of_version(name, version), tmp_path / "int8")
    assert path == tmp_path / "int8" / "model.int8.onnx"
    assert path.read_bytes() == linear_onnx.read_bytes() and loaded.precision == "int8"

    refused_run = new_run(store)
    refused_version = add_version(store, registry, {"model_name": "logreg"}, refused_run)
    refused = Quantization(0.9125, 0.88, 0.001, None)
    registry.quantization.record(dataclasses.replace(identity, version=refused_version, run_id=refused_run), refused,
                                 "checked on the held-out part of /data")
    tags = registry.version_tags(refused_version)
    assert (tags["int8_status"], tags["int8_sha256"], tags["int8_accuracy"]) == ("refused", "", "0.88")
    assert [a.path for a in store.client.list_artifacts(refused_run)] == []


def test_a_card_is_logged_on_the_versions_run_named_by_a_tag_and_downloaded(store, registry, tmp_path):
    pipeline = new_run(store, {"data": "/data/mnist", "split_seed": 42})
    run_id = new_run(store, {"model": "lenet", "seed": 42, "epochs": 30})
    version = add_version(store, registry, {"model_name": "lenet", "pipeline_run_id": pipeline}, run_id)
    assert registry.cards.facts(version) == {
        "tags": {"model_name": "lenet", "pipeline_run_id": pipeline}, "run_id": run_id,
        "params": {"model": "lenet", "seed": "42", "epochs": "30"},
        "pipeline": {"data": "/data/mnist", "split_seed": "42"}}
    assert registry.cards.recorded(version, tmp_path / "none") is None
    made = tmp_path / "made"
    made.mkdir()
    (made / "card.json").write_text('{"version": "1"}')
    (made / "card.html").write_text("<h1>v1</h1>")
    assert registry.cards.record(version, run_id, made) == "card/card.html"
    folder, recorded_run, tags = registry.cards.recorded(version, tmp_path / "back")
    assert (recorded_run, tags["evidence_card"]) == (run_id, "card/card.html")
    assert {p.name: p.read_text() for p in folder.iterdir()} == {"card.json": '{"version": "1"}',
                                                                  "card.html": "<h1>v1</h1>"}
    with pytest.raises(UserError, match=f"^{registry.cfg.registered_model} has no version '9' in the registry"):
        registry.cards.facts("9")


def test_the_facts_of_a_version_whose_pipeline_run_is_gone_have_empty_parameters(store, registry):
    version = add_version(store, registry, {"pipeline_run_id": "0" * 32})
    assert (registry.cards.facts(version)["params"], registry.cards.facts(version)["pipeline"]) == ({}, {})


def test_gc_keeps_the_newest_the_aliased_the_awaiting_and_the_unjudged_of_a_running_pipeline(store, registry,
                                                                                           linear_onnx, digits):
    """Versions 7 and 6 are the newest two; 4 awaits a person; 3's pipeline still runs and has not judged it;
    1 is the previous champion. 5 (a registered file) and 2 go, with their runs and files; 5's pipeline run goes
    too, while 2's stays: version 4 came from it."""
    shared, running, own = new_run(store), new_run(store, finished=False), new_run(store)
    runs = [""]  # runs[n]: version n's own run

    def version(tags: dict, file: bool = False) -> str:
        runs.append(new_run(store))
        store.client.log_text(runs[-1], "report", "report/summary.txt")
        if file:
            return registry.register_onnx(runs[-1], linear_onnx, digits.images[:8], tags)
        return add_version(store, registry, tags, runs[-1])

    version({"model_name": "logreg"} | verdict_tags("1", VerdictKind.PROMOTED))
    version({"pipeline_run_id": shared})  # not judged, its pipeline run finished: a crash
    version({"pipeline_run_id": running})  # not judged yet: its pipeline run is still going
    version({"pipeline_run_id": shared} | verdict_tags("4", VerdictKind.AWAITING_APPROVAL))
    version({"pipeline_run_id": own} | verdict_tags("5", VerdictKind.REJECTED), file=True)
    version(verdict_tags("6", VerdictKind.REJECTED))
    version(verdict_tags("7", VerdictKind.PROMOTED))
    registry.set_alias("champion", "7")
    registry.set_alias("previous_champion", "1")
    model_id = store.client.get_model_version(registry.cfg.registered_model, "5").source.removeprefix("models:/")
    model_files = store.artifacts / "models" / model_id
    assert (model_files / "artifacts" / "model.onnx").is_file()

    named = registry.retention.collect_garbage(keep=2, dry_run=True)
    assert [row.version for row in named] == ["5", "2"] and len(registry.versions()) == 7
    deleted = registry.retention.collect_garbage(keep=2)
    assert deleted == named
    assert [row.version for row in registry.versions()] == ["7", "6", "4", "3", "1"]
    stage = {run_id: store.client.get_run(run_id).info.lifecycle_stage
             for run_id in (runs[5], runs[2], own, runs[4], runs[3], shared, running)}
    assert stage == {runs[5]: "deleted", runs[2]: "deleted", own: "deleted", runs[4]: "active", runs[3]: "active",
                     shared: "active", running: "active"}
    assert list(model_files.rglob("*")) == []  # the logged model's files (MLflow leaves its empty folder)
    with pytest.raises(MlflowException, match=f"Logged model with ID '{model_id}' not found"):
        store.client.get_logged_model(model_id)
    assert [a.path for a in store.client.list_artifacts(runs[2], "report")] == []
    assert [a.path for a in store.client.list_artifacts(runs[4], "report")] == ["report/summary.txt"]
    assert registry.retention.collect_garbage(keep=2) == []


def test_the_same_digits_labelled_for_two_versions_are_each_versions_own_feedback(store, registry, digits):
    from digitpipe.records.feedback import Feedback

    feedback = tracker_for(registry.cfg).feedback
    name, labelled = registry.cfg.registered_model, Feedback(digits.images[:10], digits.labels[:10],
                                                             np.arange(1, 11), "night.csv")
    first = feedback.log_feedback(labelled, ModelIdentity(f"models:/{name}/1", name, "1"), 0.9)
    again = feedback.log_feedback(labelled, ModelIdentity(f"models:/{name}@champion", name, "1"), 0.9)
    other = feedback.log_feedback(labelled, ModelIdentity(f"models:/{name}/2", name, "2"), 0.8)
    assert first == again != other  # the same file scored again by v1 is not new; v2's labels are its own
    assert (store.client.get_run(other).data.params["version"], store.client.get_run(other).data.metrics[
        "live_accuracy"]) == ("2", 0.8)
