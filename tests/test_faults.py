"""The standing fault suite for interrupts: `run` and `tune` stopped by SIGINT, SIGTERM or kill -9 at named points
(DIGITPIPE_TEST_PAUSE_AT, digitpipe.interrupts.pause_at), then what must hold: the command ends
with one line and 128 + the signal, no traceback; no MLflow run left RUNNING once the next command starts; no
version without a verdict; the champion unchanged or wholly moved; the locks free; the next command works."""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import torch
from filelock import FileLock
from mlflow import MlflowClient

from digitpipe.interrupts import PAUSE_VARIABLE
from tests.conftest import FIXTURE, SHARED_MNIST
from flows.startup import free_port
from tests.helpers import digitpipe, environ, wait_for, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


class Store:
    """A folder with its mlflow.yaml (a low accuracy floor, so that the fixture's models can be promoted), its
    sqlite store, and the commands run in it."""

    def __init__(self, folder: Path, prefect_api: str) -> None:
        self.folder, self.uri = folder, f"sqlite:///{folder}/mlflow.db"
        self.config = write_config(folder / "mlflow.yaml", tracking_uri=self.uri,
                                   artifact_location=folder / "artifacts", promotion={"min_accuracy": 0.5})
        self.env = environ(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=None)

    def run(self, *args, pause: str | None = None, wait: bool = True):
        command = ["run", "--data", FIXTURE, "--quiet", "--config", self.config, "--out", self.folder / "out", *args]
        return digitpipe(*command, env={**self.env, **({PAUSE_VARIABLE: pause} if pause else {})}, cwd=self.folder,
                         wait=wait)

    def cli(self, *args):
        return digitpipe(*args, "--config", self.config, env=self.env, cwd=self.folder)

    def stopped(self, command: subprocess.Popen, point: str, signum: int) -> tuple[int, str]:
        """Send `signum` once the command says it paused at `point`; its exit code and stderr (how long it takes
        to stop is measured by bench/stop_times.py)."""
        lines = _wait_for_pause(command, point)
        command.send_signal(signum)
        rest = command.communicate(timeout=60)[1]  # a guard against a hang, not a measure
        return command.returncode, "\n".join(lines) + "\n" + rest

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.uri)

    def statuses(self) -> dict[str, str]:
        experiment = self.client.get_experiment_by_name("digitpipe")
        if experiment is None:  # no run was ever started in this store
            return {}
        runs = self.client.search_runs([experiment.experiment_id])
        return {f"{r.info.run_name}-{r.info.run_id[:6]}": r.info.status for r in runs}

    def verdicts(self) -> dict[int, str | None]:
        return {int(mv.version): mv.tags.get("verdict") for mv in self.client.search_model_versions("name='digits'")}

    def champion(self) -> str | None:
        try:
            champion = self.client.get_registered_model("digits").aliases.get("champion")
            return None if champion is None else str(champion)
        except Exception:
            return None


@pytest.fixture
def store(tmp_path, prefect_api):
    return Store(tmp_path, prefect_api)


def _wait_for_pause(command: subprocess.Popen, point: str) -> list[str]:
    """The command's stderr lines up to `digitpipe: paused at POINT` (pytest-timeout ends a command that hangs)."""
    lines: list[str] = []
    while f"digitpipe: paused at {point}" not in lines:
        line = command.stderr.readline()
        assert line, f"ended before it paused at {point}:\n" + "\n".join(lines)
        lines.append(line.rstrip("\n"))
    return lines


def _one_line(code: int, stderr: str, signum: int) -> None:
    name = signal.Signals(signum).name
    assert code == 128 + signum, stderr
    assert stderr.strip().splitlines()[-1] == f"digitpipe: interrupted by {name}", stderr
    assert "Traceback" not in stderr and "ERROR" not in stderr, stderr


def _checkpoint_epochs(folder: Path) -> list[int]:
    return [len(torch.load(path, weights_only=True)["history"]) for path in (folder / "checkpoints").glob("*.pt")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_training_stops_at_the_next_batch_and_resume_continues_from_the_epoch(store, signum):
    command = store.run("--models", "lenet", "--epochs", "3", pause="epoch 1", wait=False)
    code, stderr = store.stopped(command, "epoch 1", signum)
    _one_line(code, stderr, signum)
    assert "--resume continues each net from its last finished epoch" in stderr
    assert sorted(store.statuses().values()) == ["KILLED", "KILLED"]  # the pipeline's run and lenet's
    assert _checkpoint_epochs(store.folder / "out") == [1]
    assert store.verdicts() == {}  # nothing registered

    resumed = store.run("--models", "lenet", "--epochs", "3", "--resume")
    assert resumed.code == 0, resumed.err
    lenet = next(r for r in store.client.search_runs(["1"], "attributes.status = 'FINISHED'") if
                 r.info.run_name == "lenet")
    assert len(store.client.get_metric_history(lenet.info.run_id, "val_loss")) == 3  # the stopped epoch replayed
    assert store.verdicts() == {1: "promoted"} and _checkpoint_epochs(store.folder / "out") == []


def test_a_signal_while_loading_ends_before_any_run_and_a_logreg_fit_ends_with_the_process(store):
    command = store.run("--models", "logreg", pause="loaded", wait=False)
    code, stderr = store.stopped(command, "loaded", signal.SIGTERM)
    _one_line(code, stderr, signal.SIGTERM)
    assert store.statuses() == {}  # stopped before the pipeline's run began

    command = store.run("--models", "logreg", "--data", SHARED_MNIST, "--protocol", "book", pause="logreg fit",
                        wait=False) if SHARED_MNIST.is_dir() else None
    if command is None:
        pytest.skip(f"a fit of seconds needs the MNIST training set at {SHARED_MNIST}")
    code, stderr = store.stopped(command, "logreg fit", signal.SIGINT)
    _one_line(code, stderr, signal.SIGINT)  # the fit no check reaches ends with the process
    assert "RUNNING" not in store.statuses().values() and store.verdicts() == {}


def test_sigterm_after_registration_marks_the_version_and_the_next_run_judges_again(store):
    command = store.run("--models", "mlp", "--epochs", "2", pause="registered", wait=False)
    code, stderr = store.stopped(command, "registered", signal.SIGTERM)
    _one_line(code, stderr, signal.SIGTERM)
    assert "v1 interrupted before the gate judged it: the next run trains and judges it again" in stderr
    assert store.verdicts() == {1: "interrupted"} and store.champion() is None
    listed = store.cli("models")
    assert listed.code == 0 and "interrupted" in listed.out, listed.err

    again = store.run("--models", "mlp", "--epochs", "2")
    assert again.code == 0, again.err
    assert "mlp unchanged" not in again.err  # an interrupted version does not stand
    assert store.verdicts() == {1: "interrupted", 2: "promoted"} and store.champion() == "2"
    assert "RUNNING" not in store.statuses().values()


def test_sigint_during_the_gate_keeps_the_champion_and_frees_the_lock_and_serve_stops_on_sigterm(store):
    first = store.run("--models", "mlp", "--epochs", "2")
    assert first.code == 0 and store.champion() == "1", first.err
    command = store.run("--models", "mlp", "--epochs", "2", "--seed", "5", pause="gate", wait=False)
    code, stderr = store.stopped(command, "gate", signal.SIGINT)
    _one_line(code, stderr, signal.SIGINT)
    assert store.champion() == "1" and store.verdicts() == {1: "promoted", 2: "interrupted"}
    lock = FileLock(f"{store.folder}/mlflow.db.promotion.lock")
    lock.acquire(timeout=0)  # free at once: no other process holds it
    lock.release()
    scored = store.cli("score", "--model", "models:/digits@champion", "--input", FIXTURE, "--output",
                       store.folder / "scored.csv")
    assert scored.code == 0, scored.err  # the champion's file still matches its checksum

    before = set(store.folder.iterdir())  # scoring stopped mid-file leaves no output, whole or half
    command = digitpipe("score", "--model", "models:/digits@champion", "--input", FIXTURE, "--output",
                        store.folder / "stopped.csv", "--config", store.config,
                        env={**store.env, PAUSE_VARIABLE: "scored chunk"}, cwd=store.folder, wait=False)
    code, stderr = store.stopped(command, "scored chunk", signal.SIGINT)
    _one_line(code, stderr, signal.SIGINT)
    assert set(store.folder.iterdir()) == before

    port = free_port()  # the service stops as gracefully, with the same line
    served = digitpipe("serve", "--port", port, "--config", store.config, env=store.env, cwd=store.folder,
                       wait=False)
    wait_for(lambda: _healthy(port), 120, "the service")
    served.send_signal(signal.SIGTERM)
    stderr = served.communicate(timeout=60)[1]
    _one_line(served.returncode, stderr, signal.SIGTERM)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def test_kill_9_at_the_gate_leaves_what_the_next_run_marks_and_judges(store):
    command = store.run("--models", "mlp,lenet", "--epochs", "2", pause="gate", wait=False)
    _wait_for_pause(command, "gate")
    command.kill()
    command.wait()
    assert set(store.statuses().values()) == {"RUNNING", "FINISHED"}  # the pipeline's run, left by kill -9
    assert None in store.verdicts().values() and store.champion() is None
    kept = store.cli("gc", "--keep", "5")  # any command that writes the registry cleans up after a kill first
    assert kept.code == 0, kept.err
    assert sorted(set(store.statuses().values())) == ["FAILED", "FINISHED"]
    assert "interrupted" in store.verdicts().values()

    again = store.run("--models", "mlp,lenet", "--epochs", "2")
    assert again.code == 0, again.err
    assert "RUNNING" not in store.statuses().values()
    assert None not in store.verdicts().values()  # the unjudged version marked interrupted, the new ones judged
    assert store.champion() is not None


def test_two_identical_runs_started_together_train_once(store):
    runs = [store.run("--models", "lenet", "--epochs", "3", wait=False) for _ in range(2)]
    stderr = sorted(run.communicate(timeout=300)[1] for run in runs)
    assert [run.returncode for run in runs] == [0, 0], stderr
    trained = [err for err in stderr if "registered v1" in err]
    waited = [err for err in stderr if "lenet unchanged: same data, code and settings as v1" in err]
    assert len(trained) == len(waited) == 1, stderr
    assert "waiting for the training lock" in waited[0], stderr  # they did overlap
    assert store.verdicts() == {1: "promoted"}


def test_tune_stopped_by_sigint_is_one_line_and_resumes(store):
    args = ["tune", "--data", FIXTURE, "--model", "mlp", "--trials", "2", "--epochs", "2", "--seeds", "0",
            "--config", store.config]
    command = digitpipe(*args, env={**store.env, PAUSE_VARIABLE: "epoch 1"}, cwd=store.folder, wait=False)
    code, stderr = store.stopped(command, "epoch 1", signal.SIGINT)
    _one_line(code, stderr, signal.SIGINT)
    assert "Trial 0 failed" not in stderr
    assert "RUNNING" not in store.statuses().values()
    resumed = digitpipe(*args, env=store.env, cwd=store.folder)
    assert resumed.code == 0, resumed.err
    assert "trials 2 complete" in resumed.out


def test_approve_and_gc_stopped_in_their_lock_change_nothing_and_run_again(tmp_path, prefect_api):
    store = Store(tmp_path, prefect_api)
    store.config = write_config(store.config, promotion={"min_accuracy": 0.5, "approval": "required"})
    first = store.run("--models", "mlp,logreg", "--epochs", "2")
    assert first.code == 0, first.err
    waiting = next(v for v, verdict in store.verdicts().items() if verdict == "awaiting_approval")

    approve = ["approve", "--version", str(waiting), "--comment", "looks right", "--config", store.config]
    command = digitpipe(*approve, env={**store.env, PAUSE_VARIABLE: "approval"}, cwd=store.folder, wait=False)
    code, stderr = store.stopped(command, "approval", signal.SIGINT)
    _one_line(code, stderr, signal.SIGINT)
    assert store.verdicts()[waiting] == "awaiting_approval" and store.champion() is None
    approved = digitpipe(*approve, env=store.env, cwd=store.folder)
    assert approved.code == 0 and store.champion() == str(waiting), approved.err

    other = next(v for v in store.verdicts() if v != waiting)
    gc = ["gc", "--keep", "0", "--config", store.config]
    command = digitpipe(*gc, env={**store.env, PAUSE_VARIABLE: "gc"}, cwd=store.folder, wait=False)
    code, stderr = store.stopped(command, "gc", signal.SIGTERM)
    _one_line(code, stderr, signal.SIGTERM)
    assert set(store.verdicts()) == {waiting, other}  # stopped before it deleted anything
    collected = digitpipe(*gc, env=store.env, cwd=store.folder)
    assert collected.code == 0 and set(store.verdicts()) == {waiting}, collected.err
