"""ModelFollower alone, against the session's sqlite store (its own experiment and registered model): a .onnx file is
loaded and never followed, a missing one is one UserError line; models:/NAME@ALIAS loads the version the alias names
with its identity and its drift reference, a moved alias is swapped in by refresh() (callbacks told, the old version's
downloaded files removed), and a load that fails leaves the version served and no folder behind."""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from digitpipe.config import TrackingConfig
from digitpipe.errors import UserError
from digitpipe.export import export_onnx
from digitpipe.monitoring.drift import Reference, build_reference, write_reference
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.models import ModelIdentity
from digitpipe.serving.follower import ModelFollower
from digitpipe.tracking import tracker_for

NAME = "follower-test"
CHAMPION = f"models:/{NAME}@champion"


def centroid_onnx(digits, path: Path) -> Path:
    """A real digit model without a fit (~80% right on the fixture): each digit's mean image in `digits` as a linear
    classifier, exported as digitpipe exports its logistic regression. No session-wide logistic regression to fit
    (logreg_onnx: seconds) for a file that only follows versions."""
    flat = digits.images.reshape(-1, 784).astype(np.float64)
    means = np.stack([flat[digits.labels == d].mean(0) for d in range(10)])
    scale = 255.0 ** 2 * 20  # logits a few units apart, not a one-hot softmax
    model = SimpleNamespace(predict_proba=None, classes_=np.arange(10), coef_=means / scale,
                            intercept_=-0.5 * (means ** 2).sum(1) / scale)
    return export_onnx(model, path)


@pytest.fixture(scope="module")
def store(mlflow_store, digits, tmp_path_factory):
    """Version 1 (the digits' means of the fixture's first half, with a drift reference on its run) and version 2
    (the second half's, registered without one) of NAME: (tracking, registry, {version: (run id, .onnx file)}, v1's
    reference)."""
    folder = tmp_path_factory.mktemp("follower")
    tracking = TrackingConfig(tracking_uri=mlflow_store, experiment=NAME, registered_model=NAME,
                              artifact_location=str(folder / "artifacts"))
    tracker = tracker_for(tracking)
    models = {}
    halves = {"first-half": digits.subset(np.arange(500)), "second-half": digits.subset(np.arange(500, 1000))}
    for name, half in halves.items():
        onnx = centroid_onnx(half, folder / f"{name}.onnx")
        with tracker.runs.run(name) as run_id:
            version = tracker.registry.register_onnx(run_id, onnx, digits.images[:5], {"model_name": name})
        models[version] = (run_id, onnx)
    assert sorted(models) == ["1", "2"]  # a fresh registered model in the session's store
    written = write_reference(models["1"][1], build_reference(digits.images[:500]), digits, folder)
    tracker.registry.monitor_references.record(ModelIdentity(CHAMPION, run_id=models["1"][0]), written)
    return tracking, tracker.registry, models, Reference.load(written)


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The folder tempfile makes its folders in, for this test: what a follower leaves behind is seen there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def at_v1(store, scratch):
    """A follower of the champion alias, which names version 1 when it starts; stopped at the end."""
    tracking, registry, _, _ = store
    registry.set_alias("champion", "1")
    follower = ModelFollower(CHAMPION, tracking, poll_seconds=600)
    yield follower
    follower.stop()
    assert list(scratch.iterdir()) == []  # stop() leaves nothing behind either


def test_a_onnx_file_is_served_as_it_is_and_never_followed(digits, scratch, tmp_path):
    onnx = centroid_onnx(digits, tmp_path / "means.onnx")
    follower = ModelFollower(str(onnx), TrackingConfig(tracking_uri="sqlite:////nonexistent/no.db"), 600)
    served = follower.current
    assert served.identity == ModelIdentity(str(onnx.resolve()))  # no version, run or precision
    assert (served.version, served.reference, served.folder, served.answered) == (None, None, None, (0, 0))
    assert served.names() == {"model": "means", "version": None, "precision": "fp32"}  # the file's stem
    assert served.path == onnx and follower.registry is None
    assert np.array_equal(served.scorer.scores(digits.images), OnnxScorer(onnx).scores(digits.images))
    assert follower.refresh() is False  # no store is asked: the URI above names none
    assert follower.current is served
    follower.stop()
    assert list(scratch.iterdir()) == []


def test_a_missing_file_is_one_line_naming_it(tmp_path, scratch):
    missing = tmp_path / "nowhere" / "model.onnx"
    with pytest.raises(UserError) as raised:
        ModelFollower(str(missing), TrackingConfig(), 600)
    assert str(raised.value) == f"{missing}: no such model file (expected a .onnx file or models:/NAME@ALIAS)"


def test_a_follower_that_cannot_start_leaves_no_folder(tmp_path, scratch):
    with pytest.raises(UserError):
        ModelFollower(str(tmp_path / "missing.onnx"), TrackingConfig(), 600)
    assert list(scratch.iterdir()) == []


def test_an_alias_loads_its_version_with_identity_and_drift_reference(store, at_v1, digits):
    _, registry, models, reference = store
    served = at_v1.current
    run_id, onnx = models["1"]
    assert served.identity == ModelIdentity(CHAMPION, registered_model=NAME, version="1", model_name="first-half",
                                            run_id=run_id, precision="fp32")
    assert served.names() == {"model": "first-half", "version": "1", "precision": "fp32"}
    assert served.reference == reference  # the one recorded on its run
    assert served.answered == (0, 0)  # no page feedback recorded on it yet
    assert at_v1.registry.cfg == registry.cfg  # the store and registered model it was given
    assert served.folder.parent == at_v1._folder and served.path.is_relative_to(served.folder)
    assert served.path.read_bytes() == onnx.read_bytes()  # the registry's copy, checked against its checksum
    assert np.array_equal(served.scorer.predict(digits.images), OnnxScorer(onnx).predict(digits.images))
    assert at_v1.refresh() is False  # the alias has not moved
    assert at_v1.current is served


def test_a_moved_alias_is_swapped_in_and_the_old_files_go(store, at_v1, digits):
    _, registry, models, _ = store
    old, swapped = at_v1.current, []
    at_v1.on_swap(swapped.append)
    registry.set_alias("champion", "2")
    assert at_v1.refresh() is True
    new = at_v1.current
    assert swapped == [new] and new is not old
    assert new.identity == ModelIdentity(CHAMPION, registered_model=NAME, version="2", model_name="second-half",
                                         run_id=models["2"][0], precision="fp32")
    assert new.reference is None  # none was recorded for version 2: no drift check, and no error
    assert not old.folder.exists() and new.folder.is_dir() and new.folder != old.folder
    assert list(at_v1._folder.iterdir()) == [new.folder]
    # a request that took the old version before the swap still scores with it: its session is in memory
    assert np.array_equal(old.scorer.predict(digits.images), OnnxScorer(models["1"][1]).predict(digits.images))
    assert np.array_equal(new.scorer.predict(digits.images), OnnxScorer(models["2"][1]).predict(digits.images))
    assert (old.scorer.predict(digits.images) != new.scorer.predict(digits.images)).any()  # two different models
    assert at_v1.refresh() is False and swapped == [new]  # told once per move
    registry.set_alias("champion", "1")
    assert at_v1.refresh() is True and [s.version for s in swapped] == ["2", "1"]  # and back again
    assert not new.folder.exists()


def test_a_load_that_fails_keeps_the_version_served_and_leaves_no_folder(store, at_v1):
    _, registry, _, _ = store
    served, swapped = at_v1.current, []
    at_v1.on_swap(swapped.append)
    checksum = registry.version_tags("2")["onnx_sha256"]
    registry.set_version_tags("2", {"onnx_sha256": "0" * 64})  # as if its stored file had been replaced
    registry.set_alias("champion", "2")
    try:
        with pytest.raises(UserError) as raised:
            at_v1.refresh()
    finally:
        registry.set_version_tags("2", {"onnx_sha256": checksum})
    assert str(raised.value) == (f"{CHAMPION}: the stored ONNX file does not match the checksum recorded at "
                                 "registration (corrupted or replaced); refusing to score with it")
    assert at_v1.current is served and swapped == []
    assert list(at_v1._folder.iterdir()) == [served.folder]  # the failed download's folder is gone
    assert at_v1.refresh() is True and at_v1.current.version == "2"  # tried again at the next poll


def test_an_alias_that_names_nothing_is_one_line(store, scratch):
    tracking, _, _, _ = store
    with pytest.raises(UserError) as raised:
        ModelFollower(f"models:/{NAME}@nobody", tracking, 600)
    assert str(raised.value).startswith(f"models:/{NAME}@nobody: not in the registry at {tracking.tracking_uri} (")
    assert "\n" not in str(raised.value)
    assert all(not any(left.iterdir()) for left in scratch.iterdir())  # nothing downloaded stays (the empty
    # digitpipe-serve-* folder that does: test_a_follower_that_cannot_start_leaves_no_folder)
