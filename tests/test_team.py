"""The team's servers, as docs/team.md starts them: MLflow (basic-auth app) and Prefect (API auth string), both on a
throwaway PostgreSQL cluster; who may do what, and a real `digitpipe run` through them with the pipeline account."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from tests.conftest import FIXTURE, ROOT
from tests.helpers import assert_one_line_error, digitpipe, python, wait_for, write_config
from tests.servers import compose_service, prefect_call, prefect_cli, start_replicas, stop, team_places

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
    # logreg on the 1,000-image fixture: any sane model is champion
    config = _team_config(folder, team_mlflow, MODEL, min_accuracy=0.5)
    code, out, err = digitpipe("run", "--data", FIXTURE, "--models", "logreg", "--quiet", "--out", folder / "out",
                               "--summary", folder / "summary.json", "--config", config,
                               env=_team_env(team_mlflow, team_prefect, folder))
    assert code == 0, out + err
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
    flow_run = prefect_call(team_prefect, f"/flow_runs/{champion.tags['prefect.flow_run_id']}")
    assert flow_run["state"]["type"] == "COMPLETED"


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


def test_the_reader_account_can_neither_approve_nor_reject(pipeline_run, team_mlflow, team_prefect, tmp_path,
                                                           monkeypatch):
    model = "digits-approval-reader"
    client = _admin(monkeypatch, team_mlflow)
    version = client.copy_model_version(f"models:/{MODEL}/{pipeline_run['models']['logreg']['model_version']}",
                                        model).version
    waiting = {"verdict": "awaiting_approval", "verdict_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "verdict_reason": "earned promotion, waits for a person (promotion.approval: required): first champion"}
    for key, value in waiting.items():
        client.set_model_version_tag(model, version, key, value)
    config = _team_config(tmp_path, team_mlflow, model, approval="required")
    env = {**_team_env(team_mlflow, team_prefect, tmp_path), "MLFLOW_TRACKING_USERNAME": "reader",
           "MLFLOW_TRACKING_PASSWORD": team_mlflow["passwords"]["reader"]}
    for decision, refused in (((), "move the champion alias"), (("--reject",), f"write tags on v{version}")):
        done = digitpipe("approve", "--version", version, "--comment", "looks fine", *decision, "--config", config,
                         env=env)
        assert_one_line_error(done.code, done.err, 2, f"the MLflow account may not {refused} (")
    assert not client.get_registered_model(model).aliases
    tags = client.get_model_version(model, version).tags
    assert tags["verdict"] == "awaiting_approval" and "approved_by" not in tags


def as_user(monkeypatch, team_mlflow: dict, user: str) -> None:
    """MlflowClient in this process speaks as `user` (MLflow reads the credentials from the environment)."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", team_mlflow["passwords"][user])


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


# --- Promotion serialized across processes (issue 14): the team servers' lock --------------------------------------

# Holds the promotion lock of the registered model argv[2] on the MLflow server argv[1]; when a line arrives on
# stdin, moves that model's champion alias to version argv[3] (an alias move by a holder, as promotion makes).
HOLDER = """
import sys
import time
from digitpipe.config import TrackingConfig
from digitpipe.tracking import tracker_for
from flows.locks import PromotionLock
tracking = TrackingConfig(tracking_uri=sys.argv[1], registered_model=sys.argv[2])
lock = PromotionLock(tracking, "prefect")
registry = tracker_for(tracking, lock).registry
with lock():
    print("held", flush=True)
    sys.stdin.readline()
    registry.set_alias("champion", sys.argv[3])
"""


def _team_config(folder, team_mlflow, model: str, **gate) -> Path:
    """An mlflow.yaml for the team's MLflow server, the registered model `model` and these gate settings."""
    return write_config(folder / "mlflow.yaml", tracking_uri=team_mlflow["url"], registered_model=model, promotion=gate)


def _team_env(team_mlflow, team_prefect: dict | None, folder) -> dict:
    """A worker's environment: the pipeline account, and the Prefect server when given (else none configured)."""
    if team_prefect is None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    else:
        base = team_prefect
    return {**base, "MLFLOW_TRACKING_URI": team_mlflow["url"], "MLFLOW_TRACKING_USERNAME": "pipeline",
            "MLFLOW_TRACKING_PASSWORD": team_mlflow["passwords"]["pipeline"], "PREFECT_HOME": str(folder / "prefect")}


def _admin(monkeypatch, team_mlflow) -> MlflowClient:
    as_user(monkeypatch, team_mlflow, "admin")
    return MlflowClient(team_mlflow["url"])


def _no_run_left_running(client: MlflowClient) -> None:
    experiment = client.get_experiment_by_name("digitpipe").experiment_id
    assert client.search_runs([experiment], "attributes.status = 'RUNNING'") == []


def _limit(team_prefect: dict, name: str) -> dict:
    return prefect_call(team_prefect, f"/v2/concurrency_limits/{name}")


# --- Several workers on one pool, promotion serialized across them (issue 14) ---------------------------------------

POOL, DEPLOYMENT = "digitpipe-process", "train-digits/weekly-retrain"
RACE = [("logreg", None), ("mlp", 10), ("dnn", 10), ("lenet", 10)]  # one split; nets finish later, some better
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture  # one test's: the workers stop polling the server as soon as it is done
def team_workers(team_variables, team_mlflow, team_prefect, tmp_path_factory):
    """compose's `worker` service, both replicas, without containers: process workers on the pool that reach the
    servers with compose's client settings (the pipeline account) and run flows in this checkout (DIGITPIPE_HOME,
    as the image sets it); the pool and prefect.yaml's weekly-retrain deployment created as docs/team.md says, its
    Monday schedule switched off (so that only the test's runs reach the workers)."""
    folder = tmp_path_factory.mktemp("workers")
    env = {**team_prefect, "DIGITPIPE_HOME": str(ROOT)}
    for command in (["work-pool", "create", POOL, "--type", "process"], ["deploy", "--name", DEPLOYMENT.split("/")[1]]):
        done = prefect_cli(*command, env=env)
        assert done.code == 0, done.out + done.err
    deployment = prefect_call(team_prefect, f"/deployments/name/{DEPLOYMENT}")
    for schedule in deployment["schedules"]:
        prefect_call(team_prefect, f"/deployments/{deployment['id']}/schedules/{schedule['id']}", {"active": False},
                     "PATCH")
    places = team_places(team_mlflow["url"], team_prefect["PREFECT_API_URL"])
    service = compose_service("worker", team_variables, places, {})
    # test-only: poll every second instead of every 10 s, so that both workers find the runs while all are waiting
    workers = start_replicas(service, 2, folder, {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"})
    try:
        wait_for(lambda: len(prefect_call(team_prefect, f"/work_pools/{POOL}/workers/filter", {})) == 2, 120,
                 "both workers polling the pool")
        yield
    finally:
        for worker in workers:
            stop(worker)
        _kill_unfinished_flow_runs(team_prefect)


def test_four_deployment_runs_on_two_workers_promote_one_at_a_time_in_the_recorded_lock_order(
        team_workers, team_mlflow, team_prefect, tmp_path, monkeypatch):
    model = "digits-race"
    # no margin, any p-value below 1: a challenger right on at least two more of the disputed held-out digits than the
    # champion is promoted. The nets beat logreg and lenet, the slowest, beats them: more than one run passes.
    tracking = {"tracking_uri": team_mlflow["url"], "registered_model": model,
                "promotion": {"min_accuracy": 0.5, "min_margin": 0.0, "max_p_value": 1.0, "robust_margin": 1.0}}
    deployment = prefect_call(team_prefect, f"/deployments/name/{DEPLOYMENT}")["id"]
    out = tmp_path / "outputs"  # one output folder for all four runs, as a host's workers share one checkout
    flow_runs = [prefect_call(team_prefect, f"/deployments/{deployment}/create_flow_run", {"parameters": {"cfg": {
        "data": str(FIXTURE), "models": [name], "epochs": epochs, "out_dir": str(out), "tracking": tracking,
        "force": True}}})["id"]
        for name, epochs in RACE]
    finished = wait_for(lambda: _finished(team_prefect, flow_runs), 480, "the four flow runs")
    assert [run["state"]["type"] for run in finished] == ["COMPLETED"] * 4, [run["state"] for run in finished]
    # all four were running at one moment, two on each worker (--limit 2)
    started, ended = ([datetime.fromisoformat(run[key]) for run in finished] for key in ("start_time", "end_time"))
    assert max(started) < min(ended)
    workers = [run["labels"]["prefect.worker.name"] for run in finished]
    assert sorted(Counter(workers).values()) == [2, 2], workers
    # the same data was validated once for all four (a folder written under a temporary name and renamed) and no
    # hidden half-made copy is left; each run wrote its own files in a folder named by its MLflow run
    assert [p.name for p in (out / "validation").iterdir()] == [p.name for p in (out / "validation").glob("[!.]*")]
    assert len(list((out / "validation").iterdir())) == 1
    shared = {"validation", "eda", "checkpoints", "champion"}
    run_folders = {p.name for p in out.iterdir() if p.is_dir() and p.name not in shared}

    client = _admin(monkeypatch, team_mlflow)
    versions = sorted(client.search_model_versions(f"name='{model}'"), key=lambda v: int(v.tags["promotion_order"]))
    assert sorted(v.tags["model_name"] for v in versions) == sorted(name for name, _ in RACE)
    assert [int(v.tags["promotion_order"]) for v in versions] == [1, 2, 3, 4]
    assert {v.tags["prefect.flow_run_id"] for v in versions} == set(flow_runs)
    assert run_folders == {client.get_run(v.run_id).data.tags["mlflow.parentRunId"] for v in versions}
    # replayed in lock order, each verdict was reached against the champion the previous ones left
    champion = previous = None
    for v in versions:
        assert v.tags["verdict"] in ("promoted", "rejected"), v.tags["verdict_reason"]
        assert v.tags.get("champion_version") == champion, (v.version, v.tags["verdict_reason"])
        if v.tags["verdict"] == "promoted":
            previous, champion = champion, str(v.version)
    assert previous is not None  # more than one passed the gate: the lock order decided the champion
    print("lock order:", ", ".join(f"v{v.version} {v.tags['model_name']} {v.tags['verdict']}" for v in versions))
    aliases = client.get_registered_model(model).aliases
    assert aliases.get("champion") == champion and aliases.get("previous_champion") == previous
    assert _limit(team_prefect, f"digitpipe-promotion-{model}")["limit"] == 1  # created by the first run
    _no_run_left_running(client)


def _finished(team_prefect: dict, flow_runs: list[str]) -> list[dict] | None:
    """The flow runs, once every one has reached a final state."""
    runs = [prefect_call(team_prefect, f"/flow_runs/{run}") for run in flow_runs]
    return runs if all(run["state"]["type"] in FINAL for run in runs) else None


def _kill_unfinished_flow_runs(team_prefect: dict) -> None:
    """The processes of the pool's flow runs that are still going (a failed test): a process worker may start each
    in a session of its own, which stopping the worker's session does not reach."""
    body = {"work_pools": {"name": {"any_": [POOL]}}, "flow_runs": {"state": {"type": {"not_any_": sorted(FINAL)}}}}
    for run in prefect_call(team_prefect, "/flow_runs/filter", body):
        if run.get("infrastructure_pid"):  # "host:pid"
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(run["infrastructure_pid"].rsplit(":", 1)[1]), signal.SIGKILL)


def test_a_dead_holder_does_not_block_promotion_beyond_its_lease_and_a_lapsed_one_moves_nothing(
        pipeline_run, team_mlflow, team_prefect, tmp_path, monkeypatch):
    # one registered model per case, so that the two waits for a lease to lapse (~60 s each) overlap; their versions
    # are copies of the pipeline run's
    dead, frozen = "digits-lease-dead", "digits-lease-frozen"
    configs = {model: _team_config(tmp_path / model, team_mlflow, model, min_accuracy=0.5) for model in (dead, frozen)}
    env = _team_env(team_mlflow, team_prefect, tmp_path)
    client = _admin(monkeypatch, team_mlflow)
    trained = f"models:/{MODEL}/{pipeline_run['models']['logreg']['model_version']}"
    first, second = (client.copy_model_version(trained, dead).version for _ in range(2))
    client.set_registered_model_alias(dead, "champion", first)
    for _ in range(3):
        client.copy_model_version(trained, frozen)
    client.set_registered_model_alias(frozen, "champion", "2")
    client.set_registered_model_alias(frozen, "previous_champion", "1")
    promotions = {  # each case's promotion and what it prints
        dead: (["--version", second], f"{dead}: champion -> v{second} (promoted by hand by pipeline "
                                      f"(replacing v{first}))"),  # the MLflow account
        frozen: (["--rollback"], f"{frozen}: champion -> v1, previous_champion -> v2")}

    def holder(model: str, version: str) -> subprocess.Popen:
        """A promotion of `version` that holds `model`'s lock until told to move the champion."""
        started = python(HOLDER, team_mlflow["url"], model, version, env=env, wait=False)
        assert started.stdout.readline() == "held\n"
        assert _limit(team_prefect, f"digitpipe-promotion-{model}")["active_slots"] == 1
        return started

    killed = holder(dead, second)  # killed while holding the slot: a promotion waits for its lease to lapse
    killed.kill()
    killed.wait()
    stopped = holder(frozen, "3")  # frozen past its lease while holding the slot: a promotion goes ahead
    stopped.send_signal(signal.SIGSTOP)
    waiting = {model: digitpipe("promote", *args, "--config", configs[model], env=env, wait=False)
               for model, (args, _) in promotions.items()}
    try:
        for model, (_, printed) in promotions.items():
            out, err = waiting[model].communicate(timeout=300)
            assert (waiting[model].returncode, out.splitlines()[-1]) == (0, printed), err
        assert _limit(team_prefect, f"digitpipe-promotion-{dead}")["active_slots"] == 0
        # woken, the frozen holder finds its lease gone and moves nothing
        stopped.send_signal(signal.SIGCONT)
        _, err = stopped.communicate("move\n", timeout=120)
    finally:  # a failed check leaves no stopped holder or waiting promotion behind
        for process in (stopped, *waiting.values()):
            if process.poll() is None:
                process.kill()
    assert stopped.returncode == 1
    assert err.strip().splitlines()[-1] == (f"flows.locks.LeaseLost: the lease on the promotion lock "
                                            f"digitpipe-promotion-{frozen} lapsed before an alias moved: stopped; "
                                            "another worker may have promoted since")
    assert client.get_model_version_by_alias(frozen, "champion").version == "1"


def test_a_remote_store_without_a_prefect_server_refuses_promotion_unless_the_risk_is_accepted(
        team_mlflow, tmp_path, monkeypatch):
    model = "digits-unlocked"
    config = _team_config(tmp_path, team_mlflow, model, min_accuracy=0.5)
    env = _team_env(team_mlflow, None, tmp_path)
    refusal = (f"digitpipe: error: no promotion lock: the MLflow store at {team_mlflow['url']} is remote and no "
               "Prefect server is configured (PREFECT_API_URL) to serialize promotions; configure one, or pass "
               "--unlocked-promotion to accept promotions that may interleave")
    code, out, err = digitpipe("run", "--data", FIXTURE, "--models", "logreg", "--quiet", "--out", tmp_path / "o",
                               "--config", config, env=env)
    assert (code, err.strip().splitlines()[-1]) == (2, refusal), out + err
    client = _admin(monkeypatch, team_mlflow)
    [version] = client.search_model_versions(f"name='{model}'")  # trained and registered, not promoted
    assert (version.tags["verdict"], version.tags["verdict_reason"]) == ("not_promoted", refusal.split(": ", 2)[2])
    assert client.get_registered_model(model).aliases == {}
    _no_run_left_running(client)

    code, out, err = digitpipe("promote", "--version", version.version, "--config", config, env=env)
    assert (code, err.strip().splitlines()[-1]) == (2, refusal)
    code, out, err = digitpipe("promote", "--version", version.version, "--unlocked-promotion", "--config", config,
                               env=env)
    assert code == 0, err
    assert client.get_model_version_by_alias(model, "champion").version == version.version


# --- The team's Dask cluster (issue 14) --------------------------------------------------------------------------

# Scores the files argv[3:] with the champion of the model named in the mlflow.yaml argv[2], one task per file on
# the Dask scheduler argv[1] (flows.scoring_flow); prints the rows each file scored.
SCORE_ON_DASK = """
import sys
from pathlib import Path
from digitpipe.config import load_tracking_config
from flows.scoring_flow import score_files
config = Path(sys.argv[2])
model = f"models:/{load_tracking_config(config).registered_model}@champion"
reports = score_files([Path(p) for p in sys.argv[3:]], dask_address=sys.argv[1], model=model, config=config)
print(*[r["scored"] for r in reports])
"""


@pytest.fixture  # one test's, like team_workers
def team_dask(team_variables, team_mlflow, team_prefect, tmp_path_factory) -> tuple[str, set[int]]:
    """compose's Dask `scheduler` and both `dask-worker` replicas, started apart from any run, without containers:
    the workers reach the servers with compose's client settings and import this checkout (compose's PYTHONPATH).
    Yields the scheduler's address and the workers' pids."""
    from distributed import Client

    from flows.startup import free_port

    port, folder = free_port(), tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{port}"
    places = team_places(team_mlflow["url"], team_prefect["PREFECT_API_URL"]) | {
        "tcp://scheduler:8786": address, "/home/digitpipe/app": str(ROOT)}
    scheduler = compose_service("scheduler", team_variables, {}, {"--host": "127.0.0.1", "--port": str(port)})
    workers = compose_service("dask-worker", team_variables, places, {})
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(folder)}  # test-only: scratch space removed with the folder
    processes = start_replicas(scheduler, 1, folder / "scheduler", env)
    processes += start_replicas(workers, 2, folder / "workers", env)

    def profiler_enabled() -> bool:  # sent by value, run on each worker
        import dask

        return dask.config.get("distributed.worker.profile.enabled")

    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            # compose's settings reach the workers: glibc's own malloc settings, not Dask's (1.6x slower training)
            assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
            assert set(client.run(profiler_enabled).values()) == {False}  # and no profiler: nets ~15% slower
            yield address, set(client.run(os.getpid).values())
    finally:
        for process in processes:
            stop(process)


def test_the_team_dask_cluster_trains_the_models_and_scores_the_files(team_dask, team_mlflow, team_prefect, tmp_path,
                                                                     monkeypatch):
    from digitpipe.data import load_dataset
    from tests.helpers import write_kaggle_csv

    address, worker_pids = team_dask
    config = _team_config(tmp_path, team_mlflow, "digits-cluster", min_accuracy=0.5)
    env = _team_env(team_mlflow, team_prefect, tmp_path)
    code, out, err = digitpipe("run", "--data", FIXTURE, "--models", "logreg,mlp", "--epochs", 1, "--task-runner",
                               "dask", "--dask-address", address, "--quiet", "--out", tmp_path / "o", "--summary",
                               tmp_path / "summary.json", "--config", config, env=env)
    assert code == 0, out + err
    summary = json.loads((tmp_path / "summary.json").read_text())
    client = _admin(monkeypatch, team_mlflow)
    runs = {name: client.get_run(m["run_id"]) for name, m in summary["models"].items()}
    assert {run.data.tags["digitpipe.pid"] for run in runs.values()} <= {str(pid) for pid in worker_pids}
    assert runs["mlp"].data.metrics["torch_threads"] == 1  # the worker's share (one thread, OMP_NUM_THREADS=1)
    assert summary["verdict"]["verdict"] == "promoted"

    images = load_dataset(FIXTURE).images
    inputs = [write_kaggle_csv(tmp_path / f"part{i}.csv", images[i * 100:(i + 1) * 100]) for i in range(3)]
    done = python(SCORE_ON_DASK, address, config, *inputs, env=env, timeout=300)
    assert (done.code, done.out.splitlines()[-1:]) == (0, ["100 100 100"]), done.out + done.err
    assert all(path.with_name(path.name + ".predictions.csv").is_file() for path in inputs)


# --- Faults on the shared parts (issue 14) ---------------------------------------------------------------------------

def test_a_postgresql_restart_while_a_run_trains_is_carried_over_by_the_clients_retries(
        team_mlflow, team_prefect, pg_cluster, tmp_path, monkeypatch):
    from tests.pg import restart_cluster

    model = "digits-pg-restart"
    config = _team_config(tmp_path, team_mlflow, model, min_accuracy=0.5)
    client = _admin(monkeypatch, team_mlflow)
    started_ms = int(time.time() * 1000)
    run = digitpipe("run", "--data", FIXTURE, "--models", "lenet", "--epochs", 6, "--quiet", "--out", tmp_path / "o",
                    "--config", config, env=_team_env(team_mlflow, team_prefect, tmp_path), wait=False)
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
    _no_run_left_running(client)
    flow_run = prefect_call(team_prefect, f"/flow_runs/{champion.tags['prefect.flow_run_id']}")
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

