"""End to end: a run does not train again what has not changed. The second identical run trains and registers
nothing and exits 0; a changed spec retrains that model only; --force retrains all; a fresh working directory and
an empty Prefect home against the same store still skip (the key is found in the registry, not on this machine)."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from tests.helpers import digitpipe, environ, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _versions(uri: str) -> dict[str, str]:
    """version -> model name, for every registered version."""
    return {str(mv.version): mv.tags["model_name"] for mv in MlflowClient(uri).search_model_versions("name='digits'")}


def _unchanged(err: str) -> list[str]:
    return [line for line in err.splitlines() if " unchanged: " in line]


def test_a_second_identical_run_trains_nothing_and_a_changed_spec_retrains_only_that_model(
        tmp_path, fixture_dir, digitpipe_cli):
    uri = f"sqlite:///{tmp_path}/m.db"
    config = write_config(tmp_path / "mlflow.yaml", tracking_uri=uri, promotion={"min_accuracy": 0})
    run = ("run", "--data", fixture_dir, "--models", "logreg,mlp", "--epochs", "2", "--quiet", "--config", config,
           "--out", tmp_path / "out")
    first = digitpipe_cli(*run)
    assert first.code == 0, first.err
    assert _versions(uri) == {"1": "logreg", "2": "mlp"} and not _unchanged(first.err)
    judged = {v: MlflowClient(uri).get_model_version("digits", v).tags["verdict"] for v in ("1", "2")}

    again = digitpipe_cli(*run, "--summary", tmp_path / "again.json")
    assert again.code == 0, again.err
    assert _unchanged(again.err) == [
        f"logreg unchanged: same data, code and settings as v1 (judged: {judged['1']})",
        f"mlp unchanged: same data, code and settings as v2 (judged: {judged['2']})"]
    assert "trained " not in again.err and _versions(uri) == {"1": "logreg", "2": "mlp"}
    assert "passed (reused: the same digits passed before)" in again.err

    changed = digitpipe_cli(*run, "--set", "mlp.hidden=20")
    assert changed.code == 0, changed.err
    assert _unchanged(changed.err) == [_unchanged(again.err)[0]] and "trained mlp: " in changed.err
    assert _versions(uri)["3"] == "mlp" and len(_versions(uri)) == 3

    forced = digitpipe_cli(*run, "--force")
    assert forced.code == 0, forced.err
    assert not _unchanged(forced.err) and sorted(_versions(uri).values()).count("logreg") == 2
    client = MlflowClient(uri)
    pipelines = client.search_runs([client.get_experiment_by_name("digitpipe").experiment_id],
                                   "tags.mlflow.runName = 'pipeline'")
    assert len(pipelines) == 3  # the first, the changed and the forced run: two of them reused the validation
    for run in pipelines:  # a reused validation logs its data docs too, not only validation.json
        assert {a.path for a in client.list_artifacts(run.info.run_id, "validation/data_docs")} >= {
            "validation/data_docs/index.html"}


def test_a_fresh_home_and_an_empty_prefect_home_against_the_same_store_still_skip(tmp_path, fixture_dir):
    uri = f"sqlite:///{tmp_path}/m.db"
    args = ("run", "--data", fixture_dir, "--models", "logreg", "--quiet")
    for home in ("first", "second"):  # each with its own working directory, outputs and Prefect home
        (tmp_path / home).mkdir()
        write_config(tmp_path / home / "mlflow.yaml", tracking_uri=uri, promotion={"min_accuracy": 0})
        done = digitpipe(*args, cwd=tmp_path / home, timeout=300, env=environ(
            PREFECT_API_URL=None, PREFECT_HOME=tmp_path / home / ".prefect", HOME=tmp_path / home,
            DIGITPIPE_HOME=tmp_path / home))
        assert done.code == 0, done.err
    assert _unchanged(done.err) == ["logreg unchanged: same data, code and settings as v1 (judged: promoted)"]
    assert _versions(uri) == {"1": "logreg"}
