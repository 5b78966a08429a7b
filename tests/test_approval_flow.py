"""Against a real `prefect server` on loopback (and the session's `mlflow server`): a deployment run under
promotion.approval: required ends awaiting approval and starts the approval flow, which suspends; while it waits,
a worker with --limit 1 completes another run (the suspended flow holds no slot); resumed with a person's input,
it moves the champion alias; the form of a version decided elsewhere is cancelled by the hourly expiry flow. And
`digitpipe notify`: a loopback webhook hears of a waiting version, a monitor
alarm and a failed deployment run."""

from __future__ import annotations

import json
import subprocess

import pytest
from mlflow import MlflowClient

from flows.startup import free_port
from tests.conftest import ROOT
from tests.helpers import assert_one_line_error, digitpipe, python, wait_for, write_config
from tests.servers import BIN, prefect_call, prefect_cli, start_prefect_server, stop

pytestmark = [pytest.mark.slow, pytest.mark.servers]
MODEL = "digits-approved"


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> dict:
    server, env = start_prefect_server(tmp_path_factory.mktemp("prefect-server"), free_port())
    yield env
    stop(server)


def _flow_runs(env: dict, deployment: str) -> list[dict]:
    found = prefect_call(env, f"/deployments/name/{deployment}")
    return prefect_call(env, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [found["id"]]}},
                                                   "sort": "EXPECTED_START_TIME_ASC"})


def test_a_suspended_approval_flow_holds_no_worker_and_its_input_moves_the_alias(prefect_server, mlflow_server,
                                                                               tmp_path):
    home = tmp_path / "home"  # the worker's DIGITPIPE_HOME: the code, and an mlflow.yaml that wants a person
    home.mkdir()
    for part in ("flows", "data"):
        (home / part).symlink_to(ROOT / part)
    write_config(home / "mlflow.yaml", registered_model=MODEL, experiment="approval-flow",
                 promotion={"min_accuracy": 0.5, "approval": "required"})
    env = {**prefect_server, "DIGITPIPE_HOME": str(home), "MLFLOW_TRACKING_URI": mlflow_server,
           "PREFECT_WORKER_QUERY_SECONDS": "2"}
    assert prefect_cli("work-pool", "create", "digitpipe-process", "--type", "process", "--overwrite", env=env).code == 0
    deployed = prefect_cli("deploy", "--all", env=env)
    assert deployed.code == 0 and "by-a-person" in deployed.out, deployed.out + deployed.err
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "digitpipe-process", "--limit", "1"],
                              cwd=home, env=env, stdout=(tmp_path / "worker.log").open("w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        first = _train(env, tmp_path, "logreg")
        mv = MlflowClient(mlflow_server).get_model_version(MODEL, "1")
        assert mv.tags["verdict"] == "awaiting_approval" and not MlflowClient(mlflow_server).get_registered_model(
            MODEL).aliases, first
        suspended = wait_for(lambda: [r for r in _flow_runs(env, "approve-version/by-a-person")
                                      if r["state"]["name"] == "Suspended"], 120, "a suspended approval flow run")
        assert suspended[0]["parameters"]["version"] == "1"
        assert suspended[0]["parameters"]["card"] == f"runs:/{mv.run_id}/card/card.html"

        _train(env, tmp_path, "mlp")  # the one slot is free: the suspended run holds none
        prefect_call(env, f"/flow_runs/{suspended[0]['id']}/resume",
                     {"run_input": {"approve": True, "comment": "read the card", "approver": "Ada"}})
        decided = wait_for(lambda: [r for r in _flow_runs(env, "approve-version/by-a-person")
                                    if r["id"] == suspended[0]["id"] and r["state"]["type"] in ("COMPLETED", "FAILED")],
                           180, "the resumed approval flow run")
    finally:
        stop(worker)
    log = (tmp_path / "worker.log").read_text()
    assert decided[0]["state"]["type"] == "COMPLETED", log[-3000:]
    client = MlflowClient(mlflow_server)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == "1" and champion.tags["verdict"] == "promoted"
    assert (champion.tags["approved_by"], champion.tags["approval_comment"]) == ("Ada (Prefect UI)", "read the card")
    assert client.get_model_version(MODEL, "2").tags["verdict"] == "awaiting_approval"  # still the person's to decide

    # v2 decided from the CLI instead: the hourly expiry flow cancels its suspended form, which could only fail
    rejected = digitpipe("approve", "--version", "2", "--reject", "--comment", "not this one", "--config",
                         home / "mlflow.yaml", env=env)
    assert rejected.code == 0, rejected.err
    second = [r for r in _flow_runs(env, "approve-version/by-a-person") if r["parameters"]["version"] == "2"]
    assert [r["state"]["name"] for r in second] == ["Suspended"]
    tidied = python("from flows.approval import expiry_flow; print(expiry_flow())", env=env, cwd=home)
    assert tidied.code == 0 and tidied.out.strip().endswith("[]"), tidied.err
    assert prefect_call(env, f"/flow_runs/{second[0]['id']}")["state"]["type"] == "CANCELLED"
    assert prefect_call(env, f"/flow_runs/{decided[0]['id']}")["state"]["type"] == "COMPLETED"


def _train(env: dict, tmp_path, model: str) -> str:
    """One weekly-retrain deployment run of `model` on the demo data, watched to its end; its output."""
    params = {"cfg": {"data": "data/demo", "models": [model], "epochs": 1, "out_dir": str(tmp_path / "out")}}
    ran = prefect_cli("deployment", "run", "train-digits/weekly-retrain", "--params", json.dumps(params), "--watch",
                      "--watch-timeout", "300", env=env, timeout=360)
    assert ran.code == 0 and "Completed" in ran.out, ran.out + ran.err + (tmp_path / "worker.log").read_text()[-3000:]
    return ran.out


@pytest.fixture
def receiver():
    """A webhook on loopback: the JSON bodies POSTed to it, in order, and its URL."""
    import http.server
    import threading

    bodies: list[dict] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield bodies, f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_the_webhook_hears_of_a_waiting_version_an_alarm_and_a_failed_deployment_run(prefect_server, receiver,
                                                                                     tmp_path, fixture_dir):
    bodies, url = receiver
    env = {**prefect_server, "DIGITPIPE_HOME": str(ROOT)}
    refused = digitpipe("notify", "--url", "not a url", env=env)
    assert_one_line_error(refused.code, refused.err, 2, "--url 'not a url': expected an http:// or https:// URL")
    done = digitpipe("notify", "--url", url, env=env)
    assert done.code == 0, done.err
    assert done.out == f"automations digitpipe-notify-alarms, digitpipe-notify-failed-runs post to {url}\n"

    config = write_config(tmp_path / "mlflow.yaml", tracking_uri=f"sqlite:///{tmp_path}/m.db",
                          registered_model="digits-told", promotion={"min_accuracy": 0, "approval": "required"})
    waiting = digitpipe("run", "--data", fixture_dir, "--models", "logreg", "--quiet", "--config", config, "--out",
                        tmp_path / "out", env=env)
    assert waiting.code == 0, waiting.err
    alarm = python("from digitpipe.monitoring.alarms import Alarm; from flows.events import announce\n"
                   "announce(Alarm('digitpipe.drift.detected', 'digits-told', '1', 'night.csv', 'the batch drifted "
                   "from the training data', False), flush=True)", env=env)
    assert alarm.code == 0, alarm.err
    assert prefect_cli("work-pool", "create", "digitpipe-process", "--type", "process", "--overwrite", env=env).code == 0
    assert prefect_cli("deploy", "--name", "weekly-retrain", env=env).code == 0
    deployment = prefect_call(env, "/deployments/name/train-digits/weekly-retrain")["id"]
    flow_run = prefect_call(env, f"/deployments/{deployment}/create_flow_run", {})
    prefect_call(env, f"/flow_runs/{flow_run['id']}/set_state", {"state": {"type": "FAILED", "message": "boom"},
                                                                 "force": True})

    wait_for(lambda: len(bodies) >= 3, 90, "three notifications")
    by_event = {body["event"]: body for body in bodies}
    assert by_event["digitpipe.approval.awaiting"]["text"].startswith(
        "digits-told v1 awaits approval: earned promotion, waits for a person")
    assert by_event["digitpipe.drift.detected"] == {
        "event": "digitpipe.drift.detected", "model": "digits-told", "version": "1",
        "text": "digitpipe.drift.detected for v1 (the batch drifted from the training data); alert for a person: no "
                "labelled feedback newer than the champion to retrain on"}
    assert by_event["prefect.flow-run.Failed"] == {"event": "prefect.flow-run.Failed", "flow_run": flow_run["name"],
                                                   "text": f"flow run {flow_run['name']} ended Failed"}
