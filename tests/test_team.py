"""The team's servers, as docs/team.md starts them: MLflow (basic-auth app) and Prefect (API auth string), both on a
throwaway PostgreSQL cluster; who may do what, and a real `digitpipe run` through them with the pipeline account."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.conftest import FIXTURE, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.servers]
MODEL = "digits-team"


def test_mlflow_refuses_anonymous_and_wrong_passwords(team_mlflow):
    search = f"{team_mlflow['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    for auth in (None, ("pipeline", "not-the-password")):
        refused = requests.get(search, auth=auth, timeout=30)
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == 'Basic realm="mlflow"'
        assert refused.text.startswith("You are not authenticated.")
    assert requests.get(search, auth=("reader", team_mlflow["passwords"]["reader"]), timeout=30).status_code == 200


def test_prefect_refuses_requests_without_the_auth_string(team_prefect):
    flows = f"{team_prefect['PREFECT_API_URL']}/flows/filter"
    for headers in ({}, {"Authorization": "Basic " + _b64("digitpipe:wrong")}):
        refused = requests.post(flows, json={}, headers=headers, timeout=30)
        assert (refused.status_code, refused.json()) == (401, {"exception_message": "Unauthorized"})
    allowed = requests.post(flows, json={}, timeout=30,
                            headers={"Authorization": "Basic " + _b64(team_prefect["PREFECT_API_AUTH_STRING"])})
    assert allowed.status_code == 200


@pytest.fixture(scope="module")
def pipeline_run(team_mlflow, team_prefect, tmp_path_factory) -> dict:
    """`digitpipe run` in a subprocess with the pipeline account, against both servers; its JSON summary. Both refuse
    anonymous calls, so a run that completes has used the credentials it was given."""
    folder = tmp_path_factory.mktemp("team-run")
    config = folder / "mlflow.yaml"
    settings = yaml.safe_load((ROOT / "mlflow.yaml").read_text())
    settings["promotion"]["min_accuracy"] = 0.5  # logreg on the 1,000-image fixture: any sane model is champion
    config.write_text(yaml.safe_dump({**settings, "tracking_uri": team_mlflow["url"], "registered_model": MODEL}))
    env = {**team_prefect, "MLFLOW_TRACKING_URI": team_mlflow["url"], "MLFLOW_TRACKING_USERNAME": "pipeline",
           "MLFLOW_TRACKING_PASSWORD": team_mlflow["passwords"]["pipeline"], "PREFECT_HOME": str(folder / "prefect")}
    done = subprocess.run([sys.executable, "-m", "digitpipe", "run", "--data", str(FIXTURE), "--models", "logreg",
                           "--quiet", "--out", str(folder / "out"), "--summary", str(folder / "summary.json"),
                           "--config", str(config)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads((folder / "summary.json").read_text())


def test_pipeline_account_registers_and_promotes_with_served_artifacts(pipeline_run, team_mlflow, team_prefect,
                                                                       monkeypatch):
    as_user(monkeypatch, team_mlflow, "admin")
    client = MlflowClient(team_mlflow["url"])
    version = pipeline_run["models"]["logreg"]["model_version"]
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == version and champion.tags["verdict"] == "promoted"
    assert client.get_model_version_download_uri(MODEL, version).startswith("mlflow-artifacts:/")
    assert client.get_run(champion.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    # the flow ran on the PostgreSQL Prefect server: its run id is on the version
    flow_run = requests.get(f"{team_prefect['PREFECT_API_URL']}/flow_runs/{champion.tags['prefect.flow_run_id']}",
                            headers={"Authorization": "Basic " + _b64(team_prefect["PREFECT_API_AUTH_STRING"])},
                            timeout=30)
    assert flow_run.status_code == 200 and flow_run.json()["state"]["type"] == "COMPLETED"


def test_reader_reads_runs_but_cannot_move_the_champion(pipeline_run, team_mlflow, monkeypatch):
    as_user(monkeypatch, team_mlflow, "reader")
    client = MlflowClient(team_mlflow["url"])
    experiment = client.get_experiment_by_name("digitpipe").experiment_id
    assert {r.info.run_name for r in client.search_runs([experiment])} >= {"pipeline", "logreg"}
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    refused = requests.post(f"{team_mlflow['url']}/api/2.0/mlflow/registered-models/alias", timeout=30,
                            json={"name": MODEL, "alias": "champion", "version": champion},
                            auth=("reader", team_mlflow["passwords"]["reader"]))
    assert (refused.status_code, refused.text) == (403, "Permission denied")
    with pytest.raises(MlflowException) as raised:  # what a reader using MLflow's client is told
        client.set_registered_model_alias(MODEL, "previous_champion", champion)
    assert str(raised.value) == ("API request to endpoint /api/2.0/mlflow/registered-models/alias failed with error "
                                 "code 403 != 200. Response body: 'Permission denied'")
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion


def as_user(monkeypatch, team_mlflow: dict, user: str) -> None:
    """MlflowClient in this process speaks as `user` (MLflow reads the credentials from the environment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_mlflow["passwords"][user])


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
