"""The team's servers when things go wrong (issue 14): a promotion-lock holder that dies or stalls, a remote store with
no lock every worker sees, PostgreSQL restarted while a run trains. A file of its own so that pytest-xdist runs it
beside test_team.py: most of its time is spent waiting for Prefect's 60 s leases to lapse."""

from __future__ import annotations

import getpass
import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import FIXTURE, ROOT
from tests.helpers import wait_for
from tests.team import (admin_client, concurrency_limit, run_digitpipe, no_run_left_running, prefect_call, team_config,
                        team_env)

pytestmark = [pytest.mark.slow, pytest.mark.servers]

# Holds the promotion lock of the registered model argv[2] on the MLflow server argv[1]; when a line arrives on
# stdin, moves that model's champion alias to version argv[3] (an alias move by a holder, as promotion makes).
HOLDER = """
import sys
import time
from digitpipe.config import TrackingConfig
from digitpipe.tracking import tracker_for
from flows.locks import promotion_lock_for
tracking = TrackingConfig(tracking_uri=sys.argv[1], registered_model=sys.argv[2])
lock = promotion_lock_for(tracking, "prefect")
registry = tracker_for(tracking, lock).registry
with lock():
    print("held", flush=True)
    sys.stdin.readline()
    registry.set_alias("champion", sys.argv[3])
"""



def test_a_dead_holder_does_not_block_promotion_beyond_its_lease_and_a_lapsed_one_moves_nothing(
        team_mlflow, team_prefect, tmp_path, monkeypatch):
    model = "digits-lease"
    config = team_config(tmp_path, team_mlflow, model, min_accuracy=0.5)
    env = team_env(team_mlflow, team_prefect, tmp_path)
    code, out, err = run_digitpipe("run", "--data", FIXTURE, "--models", "logreg", "--quiet", "--out", tmp_path / "o",
                                   "--config", config, env=env)
    assert code == 0, out + err
    client = admin_client(monkeypatch, team_mlflow)
    first = client.get_model_version_by_alias(model, "champion").version
    second = client.copy_model_version(f"models:/{model}/{first}", model).version  # a second version to promote
    holder_args = [sys.executable, "-c", HOLDER, team_mlflow["url"], model, str(second)]
    lock = f"digitpipe-promotion-{model}"

    # killed while holding the slot: the next promotion waits for its lease to lapse, then proceeds
    holder = subprocess.Popen(holder_args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    assert concurrency_limit(team_prefect, lock)["active_slots"] == 1
    holder.kill()
    holder.wait()
    code, out, err = run_digitpipe("promote", "--version", second, "--config", config, env=env)
    assert (code, out.splitlines()[-1]) == (0, f"{model}: champion -> v{second} (promoted by hand by "
                                               f"{getpass.getuser()} (replacing v{first}))"), err
    assert concurrency_limit(team_prefect, lock)["active_slots"] == 0

    # frozen past its lease while holding the slot: another promotion goes ahead; woken, the holder moves nothing
    holder = subprocess.Popen(holder_args, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    holder.send_signal(signal.SIGSTOP)
    code, out, err = run_digitpipe("promote", "--rollback", "--config", config, env=env)
    assert (code, out.splitlines()[-1]) == (0, f"{model}: champion -> v{first}, previous_champion -> v{second}"), err
    holder.send_signal(signal.SIGCONT)
    _, err = holder.communicate("move\n", timeout=120)
    assert holder.returncode == 1
    assert err.strip().splitlines()[-1] == (f"flows.locks.LeaseLost: the lease on the promotion lock {lock} lapsed "
                                            "before an alias moved: stopped; another worker may have promoted since")
    assert client.get_model_version_by_alias(model, "champion").version == first


def test_a_remote_store_without_a_prefect_server_refuses_promotion_unless_the_risk_is_accepted(
        team_mlflow, tmp_path, monkeypatch):
    model = "digits-unlocked"
    config = team_config(tmp_path, team_mlflow, model, min_accuracy=0.5)
    env = team_env(team_mlflow, None, tmp_path)
    refusal = (f"digitpipe: error: no promotion lock: the MLflow store at {team_mlflow['url']} is remote and no "
               "Prefect server is configured (PREFECT_API_URL) to serialize promotions; configure one, or pass "
               "--unlocked-promotion to accept promotions that may interleave")
    code, out, err = run_digitpipe("run", "--data", FIXTURE, "--models", "logreg", "--quiet", "--out", tmp_path / "o",
                                   "--config", config, env=env)
    assert (code, err.strip().splitlines()[-1]) == (2, refusal), out + err
    client = admin_client(monkeypatch, team_mlflow)
    [version] = client.search_model_versions(f"name='{model}'")  # trained and registered, not promoted
    assert (version.tags["verdict"], version.tags["verdict_reason"]) == ("not_promoted", refusal.split(": ", 2)[2])
    assert client.get_registered_model(model).aliases == {}
    no_run_left_running(client)

    code, out, err = run_digitpipe("promote", "--version", version.version, "--config", config, env=env)
    assert (code, err.strip().splitlines()[-1]) == (2, refusal)
    code, out, err = run_digitpipe("promote", "--version", version.version, "--unlocked-promotion", "--config", config,
                                   env=env)
    assert code == 0, err
    assert client.get_model_version_by_alias(model, "champion").version == version.version


# --- Faults on the shared parts (issue 14) ---------------------------------------------------------------------------

def test_a_postgresql_restart_while_a_run_trains_is_carried_over_by_the_clients_retries(
        team_mlflow, team_prefect, pg_cluster, tmp_path, monkeypatch):
    from tests.pg import restart_cluster

    model = "digits-pg-restart"
    config = team_config(tmp_path, team_mlflow, model, min_accuracy=0.5)
    client = admin_client(monkeypatch, team_mlflow)
    started_ms = int(time.time() * 1000)
    run = run_digitpipe("run", "--data", FIXTURE, "--models", "lenet", "--epochs", 6, "--quiet", "--out",
                        tmp_path / "o", "--config", config, env=team_env(team_mlflow, team_prefect, tmp_path),
                        wait=False)
    lenet = _first_epoch_logged(client, started_ms, run)
    log_size = team_mlflow["log"].stat().st_size
    refused = '"POST /api/2.0/mlflow/runs/log-batch HTTP/1.1" 503 Service Unavailable'

    def database_down():
        # the run trains on with the database down until the MLflow server has refused it an epoch's metrics
        run.send_signal(signal.SIGCONT)
        wait_for(lambda: refused in _read_from(team_mlflow["log"], log_size), 120, "the MLflow server's 503")

    run.send_signal(signal.SIGSTOP)  # held between two epochs' metrics, so the outage falls while it trains
    restart_cluster(pg_cluster, database_down)
    out, err = run.communicate(timeout=540)
    # the client retried the refused call with backoff: the run went on once PostgreSQL was back
    assert (run.returncode, err.strip().splitlines()[-1]) == (0, "v1 promoted: first champion"), out + err
    assert [m.step for m in client.get_metric_history(lenet, "val_accuracy")] == [1, 2, 3, 4, 5, 6]
    champion = client.get_model_version_by_alias(model, "champion")
    assert (champion.version, champion.run_id, champion.tags["verdict"]) == ("1", lenet, "promoted")
    _aliases_point_at_verified_onnx_files(client, team_mlflow["url"], model, tmp_path / "check")
    no_run_left_running(client)
    flow_run = prefect_call(team_prefect, "get", f"/flow_runs/{champion.tags['prefect.flow_run_id']}")
    assert flow_run["state"]["type"] == "COMPLETED"  # the Prefect server, on the same cluster, carried on too


def _first_epoch_logged(client: MlflowClient, started_ms: int, run: subprocess.Popen) -> str:
    """The id of the lenet run this test started, once its first epoch's metrics are in MLflow."""
    def logged():
        assert run.poll() is None, run.communicate()
        experiment = client.get_experiment_by_name("digitpipe")
        runs = experiment and client.search_runs(
            [experiment.experiment_id], f"tags.mlflow.runName = 'lenet' and attributes.start_time >= {started_ms}")
        return runs and "val_accuracy" in runs[0].data.metrics and runs[0].info.run_id

    return wait_for(logged, 300, "the run's first epoch in MLflow")


def _aliases_point_at_verified_onnx_files(client: MlflowClient, url: str, model: str, folder: Path) -> None:
    import mlflow

    for alias, version in client.get_registered_model(model).aliases.items():
        tags = client.get_model_version(model, version).tags
        served = client.get_model_version_download_uri(model, version)  # mlflow-artifacts:/...
        files = Path(mlflow.artifacts.download_artifacts(served, dst_path=str(folder / alias), tracking_uri=url))
        [onnx] = files.rglob("*.onnx")
        assert hashlib.sha256(onnx.read_bytes()).hexdigest() == tags["onnx_sha256"], (alias, version)


def _read_from(path: Path, offset: int) -> str:
    with path.open() as log:
        log.seek(offset)
        return log.read()
