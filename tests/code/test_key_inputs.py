"""The training key: what changes it (data, split, spec, seed, feedback, the library's sources, the lock file) and
what does not (a document beside the sources)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from digitpipe import training_key as tk
from digitpipe.data import Dataset, split_dataset
from digitpipe.records.specs import spec_for

RECIPE = {"protocol": "book", "split_seed": 42, "test_fraction": 0.25, "val_fraction": 0.1}


@pytest.fixture
def library(tmp_path, monkeypatch):
    """A copy of the library's sources and a lock file, which code_version reads instead of the real ones."""
    copy = tmp_path / "digitpipe"
    shutil.copytree(tk.LIBRARY, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "requirements.lock").write_text("torch==2.13.0\n")
    monkeypatch.setattr(tk, "LIBRARY", copy)
    monkeypatch.setattr(tk, "LOCK_FILE", tmp_path / "requirements.lock")
    tk.code_version.cache_clear()
    yield copy
    tk.code_version.cache_clear()


def _version() -> str:
    tk.code_version.cache_clear()
    return tk.code_version()


def test_a_changed_source_or_lock_file_changes_the_code_version_and_a_document_does_not(library):
    before = _version()
    (library / "page.md").write_text("notes")
    assert _version() == before
    (library / "train.py").write_text((library / "train.py").read_text() + "\n# a comment\n")
    changed = _version()
    assert changed != before
    (library.parent / "requirements.lock").write_text("torch==2.13.1\n")
    assert _version() not in (before, changed)


def test_every_input_of_training_changes_the_key(digits):
    split = split_dataset(digits, 0.25, 0.1, 42)
    base = tk.training_key("lenet", spec_for("lenet"), 42, digits.digest, RECIPE, split)
    assert tk.training_key("lenet", spec_for("lenet"), 42, digits.digest, RECIPE, split) == base
    with_feedback = split.__class__(Dataset(np.concatenate([split.train.images, digits.images[:5]]),
                                            np.concatenate([split.train.labels, digits.labels[:5]])),
                                    split.val, split.test)
    changed = {
        "seed": tk.training_key("lenet", spec_for("lenet"), 43, digits.digest, RECIPE, split),
        "spec": tk.training_key("lenet", spec_for("lenet", epochs=3), 42, digits.digest, RECIPE, split),
        "model": tk.training_key("dnn", spec_for("dnn"), 42, digits.digest, RECIPE, split),
        "data": tk.training_key("lenet", spec_for("lenet"), 42, "0" * 64, RECIPE, split),
        "recipe": tk.training_key("lenet", spec_for("lenet"), 42, digits.digest, {**RECIPE, "split_seed": 1}, split),
        "feedback": tk.training_key("lenet", spec_for("lenet"), 42, digits.digest, RECIPE, with_feedback),
    }
    assert base not in changed.values() and len(set(changed.values())) == len(changed)


def test_only_a_version_whose_verdict_stands_is_matched(tmp_path):
    """A run that died before its verdict, a promotion refused for want of a lock and an approval that came too late
    leave the model to be trained again; a judged version (any verdict that stands) is matched, the newest first."""
    from mlflow import MlflowClient

    from digitpipe.config import TrackingConfig
    from digitpipe.tracking import tracker_for

    cfg = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/m.db", registered_model="keys")
    registry = tracker_for(cfg).registry
    client = MlflowClient(cfg.tracking_uri)
    client.create_registered_model("keys")
    for verdict in (None, "rejected", "promoted", "not_promoted", "not_approved", None):
        tags = {"training_key": "k", "model_name": "lenet", **({"verdict": verdict} if verdict else {})}
        client.create_model_version("keys", source=str(tmp_path), tags=tags)
    found = registry.lineage.trained_before({"lenet": "k", "mlp": "other"})
    assert list(found) == ["lenet"] and (found["lenet"].version, found["lenet"].verdict.kind.value) == ("3", "promoted")
