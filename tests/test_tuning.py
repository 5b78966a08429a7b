"""`digitpipe tune` as a user runs it on the fixture: the study's trials as nested MLflow runs with its pictures, a
params file that `run --params` trains with, a study that resumes after kill -9, two processes on one PostgreSQL
study, and one line for every bad input."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3

import optuna
import pytest
import yaml
from mlflow import MlflowClient

from tests.helpers import assert_one_line_error, digitpipe, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


def _tune(fixture_dir, cwd, *args, **kwargs):
    return digitpipe("tune", "--data", fixture_dir, "--model", "mlp", "--epochs", "3", "--quiet", *args, cwd=cwd,
                     **kwargs)


def _study(cwd, name="mlp", storage=None) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=storage or f"sqlite:///{cwd / 'optuna.db'}")


def test_a_study_is_tracked_and_its_best_values_train_a_run(fixture_dir, tmp_path):
    done = _tune(fixture_dir, tmp_path, "--trials", "4", "--seeds", "2", "--output", "best.yaml")
    assert done.code == 0, done.err
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digitpipe").experiment_id
    (parent,) = client.search_runs([experiment], "tags.mlflow.runName = 'tune-mlp'")
    trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(t.data.tags["optuna.state"] for t in trials) == sorted(
        t.state.name.lower() for t in _study(tmp_path).trials)
    assert len(trials) == 4 and all("hidden" in t.data.params and "trial_seconds" in t.data.metrics for t in trials)
    assert any(len(client.get_metric_history(t.info.run_id, "val_accuracy")) >= 1 for t in trials)
    pictures = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/optimization_history.png", "study/objective_vs_seconds.png", "study/best-params.yaml"} <= pictures
    written = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert written["study"]["name"] == "mlp" and len(written["study"]["seeds"]["seeds"]) == 2
    assert written["params"]["mlp"]["epochs"] == 3

    ran = digitpipe("run", "--data", fixture_dir, "--models", "mlp", "--params", "best.yaml", "--set",
                    "mlp.epochs=2", "--quiet", cwd=tmp_path)
    assert ran.code == 0, ran.err
    (model_run,) = client.search_runs([experiment], "tags.mlflow.runName = 'mlp'")
    best = written["params"]["mlp"]
    assert model_run.data.params["epochs"] == "2"  # --set wins over the params file
    assert model_run.data.params["hidden"] == str(best["hidden"]) and model_run.data.params["lr"] == str(best["lr"])
    version = client.search_model_versions("name = 'digits'")[0]
    assert version.tags["params_study"] == "mlp" and len(version.tags["params_file_digest"]) == 16

    elsewhere = digitpipe("run", "--data", fixture_dir, "--models", "mlp", "--params", "best.yaml", "--split-seed", "7",
                          "--quiet", cwd=tmp_path)
    assert_one_line_error(elsewhere.code, elsewhere.err, 2, "--params was tuned on another split of this data "
                          "(split_seed 42, not 7): its test part would hold digits the study tuned on")


def test_a_study_killed_mid_trial_resumes_to_its_total(fixture_dir, tmp_path):
    """kill -9 while a trial trains: that trial ends FAIL when the study resumes, which runs on to 4 finished."""
    args = ("--trials", "4", "--seeds", "0", "--no-prune", "--set", "mlp.epochs=400")  # seconds per trial
    started = _tune(fixture_dir, tmp_path, *args, wait=False)

    def a_trial_running_after_one_finished():
        """Read-only, straight from sqlite: opening the study through Optuna could race the tune's own schema
        creation."""
        assert started.poll() is None, "the study ended before it could be killed"
        try:
            with contextlib.closing(sqlite3.connect(f"file:{tmp_path / 'optuna.db'}?mode=ro", uri=True)) as db:
                states = db.execute("SELECT state, (SELECT count(*) FROM trial_user_attributes a WHERE a.trial_id = "
                                    "t.trial_id AND a.key = 'pid') FROM trials t ORDER BY number").fetchall()
        except sqlite3.OperationalError:  # no file or no tables yet
            return False
        # the running trial has recorded its process: a kill before that is left to the heartbeat's grace period
        return any(state == "COMPLETE" for state, _ in states) and states[-1] == ("RUNNING", 1)

    wait_for(a_trial_running_after_one_finished, 300, "a running trial", poll=0.05)
    os.kill(started.pid, signal.SIGKILL)
    started.wait()
    resumed = _tune(fixture_dir, tmp_path, *args)
    assert resumed.code == 0, resumed.err
    states = [t.state.name for t in _study(tmp_path).trials]
    assert states.count("COMPLETE") == 4 and states.count("FAIL") == 1, states


def test_two_processes_share_one_postgresql_study(fixture_dir, tmp_path, pg_cluster):
    pg_cluster.run_script("CREATE DATABASE tuning_shared;")
    storage = pg_cluster.url("tuning_shared")
    args = ("--trials", "8", "--seeds", "0", "--no-prune", "--threads", "1", "--storage", storage,
            "--study", "shared")
    workers = [_tune(fixture_dir, tmp_path, *args, "--set", "mlp.epochs=10", wait=False) for _ in range(2)]
    for worker in workers:
        worker.communicate(timeout=540)
        assert worker.returncode == 0
    trials = _study(tmp_path, "shared", storage).trials
    finished = [t for t in trials if t.state.name == "COMPLETE"]
    assert 8 <= len(finished) <= 9  # the cap: each process stops once the study has 8 (one may be mid-trial then)
    assert {t.user_attrs["pid"] for t in finished} == {w.pid for w in workers}


@pytest.mark.parametrize(("args", "code", "line"), [
    (("--model", "resnet", "--trials", "2"), 2, "command line: model: unknown model 'resnet'"),
    (("--model", "mlp", "--trials", "0"), 2, "command line: trials: Input should be greater than or equal to 1"),
    (("--model", "mlp", "--trials", "2", "--set", "mlp.lr=-1"), 2, "--set: mlp.lr: -1.0 is out of range"),
    (("--model", "mlp", "--trials", "2", "--storage", "nosuchdb://x"), 2, "cannot open the study storage nosuchdb://x"),
    (("--model", "logreg", "--trials", "2", "--epochs", "3"), 2, "--epochs: logreg has no epochs"),
    (("--model", "mlp", "--trials", "2", "--set", "dnn.lr=0.1"), 2, "--set names dnn, which this command does not train (mlp)"),
    (("--model", "logreg", "--trials", "2", "--set", "logreg.decay=0.01", "--set", "logreg.max_iter=50"), 2,
     "--set and --params fix every field tune searches for logreg (decay, max_iter): nothing is left to search"),
    (("--model", "mlp", "--trials", "2", "--epochs", "0"), 2, "fixed values: mlp.epochs: 0 is out of range [1, 1000]"),
    (("--model", "mlp", "--trials", "2", "--data", "no-such-folder"), 2, "no-such-folder: no such file or directory"),
])
def test_a_bad_tune_is_one_line(fixture_dir, tmp_path, args, code, line):
    done = digitpipe("tune", *(("--data", fixture_dir) if "--data" not in args else ()), *args, "--quiet",
                     cwd=tmp_path)
    assert_one_line_error(done.code, done.err, code, line)
    assert not (tmp_path / "optuna.db").exists() or "--storage" in args
