"""End to end: `digitpipe export --quantize` on a version of conftest's `first_run`: an accepted int8 file is
recorded on the version, and `digitpipe score` then uses it."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def test_accepted_int8_is_recorded_and_then_used_for_scoring(first_run, fixture_dir, tracking, tmp_path, digitpipe_cli):
    _, summary = first_run
    name, version = tracking.registered_model, summary["models"]["lenet"]["model_version"]
    exported = digitpipe_cli("export", "--model", f"models:/{name}/{version}", "--quantize", "--max-drop", "1.0",
                             "--data", fixture_dir, "--output", tmp_path / "int8.onnx", tracking_uri=tracking.tracking_uri)
    assert exported.code == 0
    client = MlflowClient(tracking.tracking_uri)
    tags = client.get_model_version(name, version).tags
    assert tags["int8_status"] == "accepted" and "int8 accepted" in tags["int8_reason"]
    scored = digitpipe_cli("score", "--model", f"models:/{name}/{version}", "--input", fixture_dir,
                           "--output", tmp_path / "p.csv")
    assert scored.code == 0
    sidecar = json.loads((tmp_path / "p.csv.json").read_text())
    assert sidecar["model"]["precision"] == "int8" and sidecar["scored"] == 1000
