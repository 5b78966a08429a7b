"""Faults against real processes: kill -9 mid-training, then --resume; a Prefect retry of a training task that died,
from its checkpoint; the tracking server unreachable, or dying mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from digitpipe.data import load_dataset, split_dataset
from flows.startup import free_port
from tests.conftest import FIXTURE, ROOT
from tests.helpers import assert_one_line_error, digitpipe, environ, wait_for, write_config
from tests.servers import start_mlflow_server, stop

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
DEMO = ROOT / "data" / "demo"


@pytest.fixture
def env(tmp_path, prefect_api):
    write_config(tmp_path / "mlflow.yaml", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                 artifact_location=tmp_path / "artifacts")
    return environ(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=None)  # the run's test API, no new server


def _fails_with_one_line(run: subprocess.Popen, message: str) -> None:
    """The run ends (within 300 s) with exit 2 and `digitpipe: error: MESSAGE...` as its last line, no traceback."""
    output = run.communicate(timeout=300)[0]
    assert_one_line_error(run.returncode, output, 2, message)


def _epochs_in(checkpoints: Path) -> int:
    for path in checkpoints.glob("*.pt"):
        try:
            return len(torch.load(path, weights_only=True)["history"])
        except Exception:  # being replaced right now: look again
            return 0
    return 0


EPOCHS = 5


def test_kill_9_then_resume_ends_like_an_uninterrupted_run(tmp_path, env):
    # the 1,000-image fixture, 5 epochs: killed after two, the three runs train ~10 epochs in all
    args = ["run", "--data", str(FIXTURE), "--models", "lenet", "--epochs", str(EPOCHS), "--seed", "3", "--quiet",
            "--config", str(tmp_path / "mlflow.yaml")]
    victim = digitpipe(*args, "--out", tmp_path / "out", env=env, wait=False, merge_stderr=True)

    def two_epochs_checkpointed() -> bool:
        assert victim.poll() is None, f"finished before it could be killed:\n{victim.stdout.read()}"
        return _epochs_in(tmp_path / "out" / "checkpoints") >= 2

    wait_for(two_epochs_checkpointed, 300, "two checkpointed epochs", poll=0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before_kill = _epochs_in(tmp_path / "out" / "checkpoints")
    assert 2 <= done_before_kill < EPOCHS

    resumed = digitpipe(*args, "--out", tmp_path / "out", "--resume", "--summary", tmp_path / "r.json", env=env,
                        wait=False, merge_stderr=True)
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read()
    whole = digitpipe(*args, "--out", tmp_path / "whole", "--summary", tmp_path / "w.json", "--force", env=env,
                      wait=False, merge_stderr=True)  # the resumed run registered this training key already
    assert whole.wait(timeout=600) == 0, whole.stdout.read()

    resumed_summary = json.loads((tmp_path / "r.json").read_text())["models"]["lenet"]
    whole_summary = json.loads((tmp_path / "w.json").read_text())["models"]["lenet"]
    assert resumed_summary["accuracy"] == whole_summary["accuracy"]  # to the last digit
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    curve = [[m.value for m in client.get_metric_history(s["run_id"], "val_loss")] for s in (resumed_summary,
                                                                                           whole_summary)]
    assert curve[0] == curve[1] and len(curve[0]) == EPOCHS
    runs = client.search_runs([client.get_experiment_by_name("digitpipe").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", *["FINISHED"] * 4]
    assert not list((tmp_path / "out" / "checkpoints").glob("*.pt"))  # finished: checkpoint cleared


@pytest.fixture
def one_model(fixture_dir, tmp_path):
    """What train_one is given for a 4-epoch lenet under a pipeline run of a new store, and that store's client."""
    from digitpipe.config import PipelineConfig, TrackingConfig
    from digitpipe.monitoring.drift import build_reference
    from digitpipe.robustness import build_suite
    from digitpipe.tracking import tracker_for

    tracking = TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/m.db", artifact_location=str(tmp_path / "artifacts"))
    cfg = PipelineConfig(data=fixture_dir, models=("lenet",), epochs=4, out_dir=tmp_path / "out", tracking=tracking)
    split = split_dataset(load_dataset(fixture_dir))
    with tracker_for(tracking).runs.run("pipeline") as parent_id:
        yield (cfg, split, build_suite(split.test), build_reference(split.train.images), parent_id), MlflowClient(
            tracking.tracking_uri)


def _epochs_seen(monkeypatch, crash_at: tuple[int, int] | None = None) -> list:
    """Every epoch the training callbacks are given; with `crash_at` (epoch, nth callback call), the worker dies
    there once, after that epoch's checkpoint."""
    from digitpipe.tracking import RunLog

    seen, logger = [], RunLog.epoch_logger

    def watched(self, run_id):
        log = logger(self, run_id)

        def log_epoch(result):
            seen.append(result)
            log(result)
            if crash_at == (result.epoch, len(seen)):
                raise RuntimeError("worker lost")

        return log_epoch

    monkeypatch.setattr(RunLog, "epoch_logger", watched)
    return seen


def _train_one(given):
    """tasks.train_one in a flow, retried at once."""
    from prefect import flow

    from tasks import train_one

    @flow
    def one_model_run():
        return train_one.with_options(retry_delay_seconds=0)("lenet", "key", *given[:4], "cpu", given[4], {})

    return one_model_run()


def test_a_prefect_retry_continues_training_from_the_checkpoint(one_model, monkeypatch):
    given, client = one_model
    seen = _epochs_seen(monkeypatch, crash_at=(2, 2))  # the first attempt dies after epoch 2's checkpoint
    result = _train_one(given)
    assert [r.epoch for r in seen] == [1, 2, 1, 2, 3, 4]
    assert seen[2:4] == seen[0:2]  # epochs 1-2 replayed from the checkpoint (same timings), not trained again
    runs = client.search_runs([client.get_experiment_by_name("digitpipe").experiment_id], "attributes.run_name = 'lenet'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FINISHED"] and result.model_version == "1"
    assert not list((given[0].out_dir / "checkpoints").iterdir())  # registered: the next run starts afresh


def test_a_registration_that_fails_once_is_retried_without_training_again(one_model, monkeypatch):
    from mlflow.exceptions import MlflowException

    from digitpipe.tracking import Registry

    given, client = one_model
    seen, register, calls = _epochs_seen(monkeypatch), Registry.register_onnx, []

    def flaky(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise MlflowException("the store went away")
        return register(self, *args, **kwargs)

    monkeypatch.setattr(Registry, "register_onnx", flaky)
    result = _train_one(given)
    assert [r.epoch for r in seen] == [1, 2, 3, 4, 1, 2, 3, 4] and seen[4:] == seen[:4]  # replayed, not retrained
    assert len(calls) == 2 and result.model_version == "1"
    assert [str(v.version) for v in client.search_model_versions("name='digits'")] == ["1"]


def test_unreachable_tracking_server_is_one_clear_line_and_nothing_runs(tmp_path, env):
    closed_port = "http://127.0.0.1:9"  # discard port: nothing listens on loopback
    failed = digitpipe("run", "--data", DEMO, "--models", "logreg", "--quiet", "--out", tmp_path / "out", "--config",
                       tmp_path / "mlflow.yaml", env={**env, "MLFLOW_TRACKING_URI": closed_port}, wait=False,
                       merge_stderr=True)
    _fails_with_one_line(failed, f"cannot reach the MLflow tracking store at {closed_port}")
    assert not (tmp_path / "out").exists()  # stopped before reading data or writing anything


def test_tracking_server_dying_mid_run_fails_cleanly_and_registers_nothing(tmp_path, env):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_mlflow_server(tmp_path, port)
    try:
        run = digitpipe("run", "--data", FIXTURE, "--models", "lenet", "--epochs", "8", "--quiet", "--out",
                        tmp_path / "out", "--config", tmp_path / "mlflow.yaml", env={**env, "MLFLOW_TRACKING_URI": uri},
                        wait=False, merge_stderr=True)
        while _epochs_in(tmp_path / "out" / "checkpoints") < 1:
            assert run.poll() is None, run.stdout.read()
            time.sleep(0.05)
    finally:
        stop(server)  # the tracking server dies between epochs
    _fails_with_one_line(run, f"lost the MLflow tracking store at {uri} while logging epoch")
    # What did the failed run leave behind? Read in the dead server's own backend store (start_mlflow_server's
    # server.db): the same rows a restarted server would serve, without its seconds of start-up.
    client = MlflowClient(f"sqlite:///{tmp_path}/server.db")
    assert client.search_experiments(filter_string="name = 'digitpipe'")  # the store the run logged to
    assert client.search_registered_models() == []  # nothing registered, so no alias can point anywhere


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited; its new parent reaps it
    except psutil.NoSuchProcess:
        return True


def test_a_runs_temporary_prefect_api_is_out_of_a_terminals_reach_and_dies_with_the_run(tmp_path, fixture_dir):
    """The API is in a session of its own (a terminal's ^C goes to the run's process group only, and the run stops
    the API itself), and goes when the run is killed with -9."""
    import psutil

    write_config(tmp_path / "mlflow.yaml", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    run = digitpipe("run", "--data", fixture_dir, "--models", "lenet", "--epochs", "50", "--quiet", "--out",
                    tmp_path / "out", cwd=tmp_path, env=environ(PREFECT_API_URL=None), wait=False)
    try:
        api = wait_for(lambda: next((c.pid for c in psutil.Process(run.pid).children()
                                     if "uvicorn" in " ".join(c.cmdline())), None), 120, "the run's Prefect API")
        assert os.getsid(api) != os.getsid(run.pid) and os.getpgid(api) != os.getpgid(run.pid)
    finally:
        run.kill()
        run.wait()
    wait_for(lambda: _gone(api), 30, "the Prefect API of a run killed with -9")
