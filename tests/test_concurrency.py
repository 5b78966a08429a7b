"""End to end, at once: two processes promoting the versions of conftest's `first_run` in the same registry, and
training on a local Dask cluster (its workers' settings, a `digitpipe run --task-runner dask`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from digitpipe.config import TrackingConfig
from digitpipe.data import load_dataset, split_dataset
from digitpipe.batch_scoring import OnnxScorer
from tests.helpers import fluent_tracking_uri, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]


_together = None  # in each race process: the barrier both wait at before promoting


def _join_race(barrier) -> None:
    global _together
    _together = barrier


def _promote(uri: str, name: str, version: str, data: Path) -> bool:
    from digitpipe.promotion import promote_if_earned
    from digitpipe.tracking import Tracker
    from digitpipe.records.training import RegisteredResult

    registry = Tracker(TrackingConfig(tracking_uri=uri, registered_model=name)).registry
    test = split_dataset(load_dataset(data)).test
    with tempfile.TemporaryDirectory() as tmp:
        predicted = OnnxScorer(registry.version_onnx(version, Path(tmp))).predict(test.images)
    result = RegisteredResult(name, float(np.mean(predicted == test.labels)), 0.0, "", 0.0, 0.0, "", predicted, None,
                              run_id="", model_version=version)
    _together.wait(timeout=120)  # both processes promote at the same moment (one process alone would time out)
    return promote_if_earned(registry, result, test).promoted


def test_concurrent_promotions_leave_the_better_model_champion(first_run, fixture_dir, tracking):
    """Two processes promote at once, the weaker one first in half the rounds: the better version always wins."""
    client = MlflowClient(tracking.tracking_uri)
    _, summary = first_run
    ranked = sorted(summary["models"].values(), key=lambda m: m["accuracy"])
    weak, strong = ranked[0], ranked[-1]
    spawn = multiprocessing.get_context("spawn")
    # a models:/ source is looked up in the fluent store; two processes race in all four rounds (imports paid once)
    with fluent_tracking_uri(tracking.tracking_uri), spawn.Pool(2, _join_race, (spawn.Barrier(2),)) as pool:
        rounds(client, tracking, fixture_dir, weak, strong, pool)


def rounds(client, tracking, fixture_dir, weak, strong, pool) -> None:
    """Four races in registries of their own, the weak version first in half of them."""
    for round_ in range(4):
        name = f"race-{round_}"
        client.create_registered_model(name)
        versions = {}
        for model in (weak, strong):  # copies of the first run's versions, in a registry of their own
            original = client.get_model_version(tracking.registered_model, model["model_version"])
            copy = client.create_model_version(name, original.source, original.run_id, tags=original.tags)
            versions[model["model_version"]] = str(copy.version)
        order = [weak, strong] if round_ % 2 else [strong, weak]
        pool.starmap(_promote, [(tracking.tracking_uri, name, versions[m["model_version"]], fixture_dir)
                                for m in order])
        champion = client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == versions[strong["model_version"]]


def test_a_local_dask_cluster_keeps_glibcs_malloc_settings_has_no_profiler_and_preloads_what_it_is_given():
    import sys

    from distributed import Client

    from flows import local_cluster

    def facts():
        import dask

        return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), dask.config.get("distributed.worker.profile.enabled"),
                {"flows.dask_worker", "digitpipe.export"} <= set(sys.modules))

    with local_cluster(2, ["digitpipe.export"]) as started, Client(started()) as client:
        # Dask's own malloc setting made LeNet train 1.6x slower, its profiler ~15%; flows.dask_worker is preloaded
        assert list(client.run(facts).values()) == [(None, False, True), (None, False, True)]


def test_a_dask_run_from_the_command_line_trains_on_the_workers_and_prints_only_its_stage_lines(
        fixture_dir, tracking, tmp_path):
    import re

    from digitpipe.runtime import core_share
    from tests.helpers import digitpipe

    config = write_config(tmp_path / "mlflow.yaml", **tracking.model_dump(exclude={"config_file", "registered_model"}),
                          registered_model="digits-dask-cli")
    done = digitpipe("run", "--data", fixture_dir, "--models", "logreg,mlp", "--epochs", "1", "--task-runner", "dask",
                     "--quiet", "--out", tmp_path / "o", "--summary", tmp_path / "summary.json", "--config", config,
                     timeout=300)
    assert (done.code, done.out) == (0, ""), done.err
    stages = ["validated 1,000 images from .*", r"split \(book\): .*", "trained logreg: .*, registered v[12]",
              "trained mlp: .*, registered v[12]", "v[12] promoted: first champion"]
    lines = done.err.splitlines()  # no Dask, Prefect or warning chatter: one line per stage
    lines[2:4] = sorted(lines[2:4])  # with two workers or more, mlp may finish first
    assert len(lines) == len(stages) and all(re.fullmatch(s, line) for s, line in zip(stages, lines)), done.err
    summary = json.loads((tmp_path / "summary.json").read_text())
    client = MlflowClient(tracking.tracking_uri)
    runs = {name: client.get_run(model["run_id"]) for name, model in summary["models"].items()}
    parent = client.get_run(runs["mlp"].data.tags["mlflow.parentRunId"])
    assert {run.data.tags["digitpipe.pid"] for run in runs.values()}.isdisjoint({parent.data.tags["digitpipe.pid"]})
    workers = 2 if core_share() >= 4 else 1  # one per model (two here), each with at least two of the run's cores
    assert runs["mlp"].data.metrics["torch_threads"] == max(1, core_share() // workers)
