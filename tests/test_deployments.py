"""Against a real `prefect server` on loopback (and the session's `mlflow server`): prefect.yaml deployed, a run of it
on a process worker, a schedule the server refuses, and the retraining trigger that drift events start."""

from __future__ import annotations

import datetime
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.startup import free_port
from tests.conftest import ROOT
from tests.helpers import CliResult, digitpipe, python, wait_for, write_config
from tests.servers import BIN, prefect_call, prefect_cli, start_prefect_server, stop

pytestmark = [pytest.mark.slow, pytest.mark.servers]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> dict:
    """A real `prefect server start` on loopback; the environment its clients need."""
    server, env = start_prefect_server(tmp_path_factory.mktemp("prefect-server"), free_port())
    yield env
    stop(server)


def test_deployment_runs_on_a_process_worker_and_registers_the_model(prefect_server, mlflow_server, tmp_path):
    """prefect.yaml deployed to a Prefect server, a run triggered, a process worker runs it, the registry has it."""
    home = tmp_path / "home"  # the worker's project folder (DIGITPIPE_HOME): the code, and its own mlflow.yaml
    home.mkdir()
    for part in ("flows", "data"):
        (home / part).symlink_to(ROOT / part)
    write_config(home / "mlflow.yaml", registered_model="digits-deployed", promotion={"min_accuracy": 0.5},
                 experiment="deployed")  # the server story's is its own
    env = {**prefect_server, "DIGITPIPE_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server}
    created = prefect_cli("work-pool", "create", "digitpipe-process", "--type", "process", env=env)
    assert created.code == 0, created.out + created.err
    deployed = prefect_cli("deploy", "--all", env=env)
    assert deployed.code == 0, deployed.out + deployed.err
    assert "weekly-retrain" in deployed.out and "nightly-score" in deployed.out

    # not tests.helpers.run: a worker that runs until stopped, its output in a file, stopped with its process group
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "digitpipe-process"], cwd=home,
                              env=env, stdout=(tmp_path / "worker.log").open("w"), stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        params = {"cfg": {"data": "data/demo", "models": ["logreg"], "out_dir": str(tmp_path / "out"),
                          "summary": str(tmp_path / "summary.json")}}
        ran = prefect_cli("deployment", "run", "train-digits/weekly-retrain", "--params", json.dumps(params), "--watch",
                      "--watch-timeout", "500", env=env, timeout=560)
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert ran.code == 0 and "Completed" in ran.out, ran.out + ran.err + log
    summary = json.loads((tmp_path / "summary.json").read_text())
    client = MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias("digits-deployed", "champion")
    assert str(champion.version) == summary["models"]["logreg"]["model_version"]
    assert champion.tags["verdict"] == "promoted" and champion.tags["prefect.flow_run_id"] in ran.out


def test_an_invalid_schedule_fails_the_deploy_with_the_reason(prefect_server, tmp_path):
    broken = tmp_path / "prefect.yaml"
    broken.write_text((ROOT / "prefect.yaml").read_text().replace('cron: "0 3 * * 1"', 'cron: "0 3 * * monday-ish"'))
    prefect_cli("work-pool", "create", "digitpipe-process", "--type", "process", "--overwrite", env=prefect_server)
    done = prefect_cli("deploy", "--all", "--prefect-file", str(broken), env={**prefect_server, "DIGITPIPE_HOME": "."})
    output = done.out + done.err
    assert done.code == 1, output
    # Prefect's CLI prints the validation error on stdout: pydantic's heading, the field, then the reason
    lines = [line.strip() for line in done.out.splitlines()]
    reason = lines.index("1 validation error for CronSchedule")
    assert lines[reason + 1:reason + 3] == ["cron", 'Value error, Invalid cron string: "0 3 * * monday-ish"'], output


SENTINEL = "sentinel-"  # the name of a model that only _wait_until_evaluated's events are about


def _deployment_runs(env: dict) -> list[dict]:
    """The retrain-on-feedback deployment's flow runs, _wait_until_evaluated's included."""
    deployment = prefect_call(env, "/deployments/name/train-digits/retrain-on-feedback")
    return prefect_call(env, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment["id"]]}}})


def _retrain_runs(env: dict) -> list[dict]:
    """The retraining runs the monitor's events started."""
    return [run for run in _deployment_runs(env) if not _model(run).startswith(SENTINEL)]


def _model(run: dict) -> str:
    return run["parameters"].get("cfg", {}).get("registered_model", "")


def _wait_until_evaluated(env: dict, events: list[dict]) -> None:
    """Returns once the server's triggers have evaluated `events`, and acted on them: after each, a drift event
    about a model of its own that the retraining trigger answers with a run (`follows`: the server evaluates it
    only once the event it follows was), then those runs."""
    sentinels = [f"{SENTINEL}{uuid.uuid4().hex[:12]}" for _ in events]
    now = datetime.datetime.now(datetime.UTC).isoformat()
    prefect_call(env, "/events", [
        {"id": str(uuid.uuid4()), "occurred": now, "event": "digitpipe.drift.detected", "follows": event["id"],
         "resource": {"prefect.resource.id": f"digitpipe.model.{name}", "prefect.resource.name": name,
                      "digitpipe.retrain": "true"}}
        for name, event in zip(sentinels, events)])
    wait_for(lambda: set(sentinels) <= {_model(run) for run in _deployment_runs(env)}, 60,
             "the retraining trigger's runs for the events that follow the ones it must have evaluated", poll=0.5)


def _wait_for_events(env: dict, name: str, count: int) -> list[dict]:
    """The server's events called `name` once it has `count` of them (events travel over a websocket), the ones
    _wait_until_evaluated sent left out."""
    def events() -> list[dict]:
        found = prefect_call(env, "/events/filter", {"filter": {"event": {"name": [name]}}, "limit": 50})["events"]
        found = [e for e in found if not e["resource"].get("prefect.resource.name", "").startswith(SENTINEL)]
        return found if len(found) >= count else []

    return wait_for(events, 60, f"{count} {name} event(s)", poll=1)


def test_drift_starts_one_retraining_only_when_labelled_feedback_can_fix_it(prefect_server, mlflow_server, digits,
                                                                            tmp_path):
    """The loop's reaction on a real Prefect server: the retraining deployment's trigger from prefect.yaml starts a
    run for drift only when feedback newer than the champion exists, and one run for a night of drifted files."""
    import numpy as np

    from tests.helpers import write_kaggle_csv

    model = "digits-loop-server"
    env = {**prefect_server, "DIGITPIPE_HOME": str(ROOT)}
    # a floor on live accuracy that logreg's feedback on clean digits passes
    config = write_config(tmp_path / "mlflow.yaml", tracking_uri=mlflow_server, registered_model=model,
                          promotion={"min_accuracy": 0.5}, experiment="loop-server",
                          monitoring={"min_live_accuracy": 0.5})
    prefect_cli("work-pool", "create", "digitpipe-process", "--type", "process", "--overwrite", env=env)
    deployed = prefect_cli("deploy", "--name", "retrain-on-feedback", env=env)
    assert deployed.code == 0, deployed.out + deployed.err

    def cli(*args: str) -> CliResult:
        return digitpipe(*args, "--config", config, env={k: v for k, v in env.items() if k != "MLFLOW_TRACKING_URI"},
                         timeout=300)

    def score(*nights: list[Path]) -> CliResult:  # a scoring flow run on the server per night
        code = "from pathlib import Path; from flows.scoring_flow import scoring_flow\n" + "".join(
            f"scoring_flow({[str(f) for f in files]!r}, model='models:/{model}@champion', config=Path('{config}'))\n"
            for files in nights)
        return python(code, env=env, timeout=300)

    trained = cli("run", "--data", str(ROOT / "tests/fixtures/mnist-1000"), "--models", "logreg", "--quiet",
                  "--out", str(tmp_path / "out"))
    assert trained.code == 0, trained.err
    clean = write_kaggle_csv(tmp_path / "clean.csv", digits.images[:300])
    drifted = [write_kaggle_csv(tmp_path / f"shifted{i}.csv", np.roll(digits.images[300 * i:300 * i + 300], 4, axis=2))
               for i in (1, 2)]

    done = score([clean], [drifted[0]])  # clean: no event; drifted without feedback: an alert, no retraining
    assert done.code == 0, done.out + done.err
    alert = _wait_for_events(env, "digitpipe.drift.detected", 1)
    assert [e["resource"]["digitpipe.retrain"] for e in alert] == ["false"]
    champion = MlflowClient(mlflow_server).get_model_version_by_alias(model, "champion")
    assert champion.tags["monitor_alarm"] == (f"digitpipe.drift.detected for v{champion.version} (the batch drifted "
                                              "from the training data); alert for a person: no labelled feedback "
                                              "newer than the champion to retrain on")
    _wait_until_evaluated(env, alert)  # the trigger has seen the alert: it must not have fired
    assert _retrain_runs(env) == []

    labels = tmp_path / "labels.csv"  # labels arrive for the clean batch: above the floor, no alarm
    labels.write_text("ImageId,Label\n" + "".join(f"{i + 1},{y}\n" for i, y in enumerate(digits.labels[:300])))
    told = cli("feedback", "--input", str(clean), "--labels", str(labels), "--model", f"models:/{model}@champion")
    assert told.code == 0 and len(told.out.splitlines()) == 1, told.out + told.err

    done = score(drifted)  # a night of drifted files, now with feedback to learn from: two events, one retraining
    assert done.code == 0, done.out + done.err
    events = _wait_for_events(env, "digitpipe.drift.detected", 3)
    assert sorted(e["resource"]["digitpipe.retrain"] for e in events) == ["false", "true", "true"]
    wait_for(lambda: _retrain_runs(env), 60, "a retrain-on-feedback flow run", poll=1)
    _wait_until_evaluated(env, events)  # the trigger has seen both retrain events: its window absorbed the second
    runs = _retrain_runs(env)
    assert len(runs) == 1 and runs[0]["parameters"]["cfg"]["feedback"] is True
    assert runs[0]["parameters"]["cfg"]["registered_model"] == model  # the event's, not the project's mlflow.yaml's
    tags = MlflowClient(mlflow_server).get_model_version_by_alias(model, "champion").tags
    assert tags["monitor_alarm"].endswith("retraining requested: labelled feedback newer than the champion exists")
