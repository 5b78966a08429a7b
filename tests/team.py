"""What the team tests share: calls to the team's servers as one of its accounts, and `digitpipe` as a worker runs it
(the servers themselves are conftest's session fixtures)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import requests
import yaml
from mlflow import MlflowClient

from tests.conftest import ROOT


def as_user(monkeypatch, team_mlflow: dict, user: str) -> None:
    """MlflowClient in this process speaks as `user` (MLflow reads the credentials from the environment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_mlflow["passwords"][user])


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def team_config(folder, team_mlflow, model: str, **gate) -> Path:
    """An mlflow.yaml for the team's MLflow server, the registered model `model` and these gate settings."""
    settings = yaml.safe_load((ROOT / "mlflow.yaml").read_text())
    settings["promotion"] |= gate
    config = folder / "mlflow.yaml"
    config.write_text(yaml.safe_dump({**settings, "tracking_uri": team_mlflow["url"], "registered_model": model}))
    return config


def team_env(team_mlflow, team_prefect: dict | None, folder) -> dict:
    """A worker's environment: the pipeline account, and the Prefect server when given (else none configured)."""
    if team_prefect is None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    else:
        base = team_prefect
    return {**base, "MLFLOW_TRACKING_URI": team_mlflow["url"], "MLFLOW_TRACKING_USERNAME": "pipeline",
            "MLFLOW_TRACKING_PASSWORD": team_mlflow["passwords"]["pipeline"], "PREFECT_HOME": str(folder / "prefect")}


def run_digitpipe(*args, env: dict, wait: bool = True):
    """`digitpipe ARGS` in a subprocess: (exit code, stdout, stderr), or the process itself when not `wait`."""
    started = subprocess.Popen([sys.executable, "-m", "digitpipe", *map(str, args)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if not wait:
        return started
    out, err = started.communicate(timeout=540)
    return started.returncode, out, err


def admin_client(monkeypatch, team_mlflow) -> MlflowClient:
    as_user(monkeypatch, team_mlflow, "admin")
    return MlflowClient(team_mlflow["url"])


def no_run_left_running(client: MlflowClient) -> None:
    experiment = client.get_experiment_by_name("digitpipe").experiment_id
    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []


def concurrency_limit(team_prefect: dict, name: str) -> dict:
    return prefect_call(team_prefect, "get", f"/v2/concurrency_limits/{name}")


def prefect_call(team_prefect: dict, method: str, path: str, body: dict | None = None) -> dict | list:
    """One call to the team's Prefect API with its auth string; the decoded answer."""
    response = requests.request(method, f"{team_prefect['PREFECT_API_URL']}{path}", json=body, timeout=30,
                                headers={"Authorization": "Basic " + b64(team_prefect["PREFECT_API_AUTH_STRING"])})
    assert response.status_code in (200, 201), response.text
    return response.json()
