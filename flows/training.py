"""The training pipeline: validate -> split -> (train -> evaluate -> export -> register) per model -> promote."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from digitpipe import runtime, steps
from digitpipe.config import PipelineConfig, load_tracking_config
from digitpipe.data import Split
from digitpipe.progress import epoch_bars
from digitpipe.promotion import Verdict
from digitpipe.tracking import Tracker
from flows import dask_runner
from tasks.data import explore_data, load_data, split_data, validate_data
from tasks.modeling import evaluate_model, export_model, train_model
from tasks.registry import promote_champion, record_verdict, register_model

SUMMARY_KEYS = ("accuracy", "run_id", "model_version", "onnx_path", "train_seconds")


# One model at a time by default: torch already uses every core for one net. A Dask runner (see `with_runner`)
# trains the models at once, each in its own process.
@flow(name="train-digits", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def training_flow(cfg: PipelineConfig) -> dict:
    """Train every configured model on cfg.data, register each, promote the best if it earned it; return the summary."""
    if cfg.tracking is None:  # a deployment: the project's mlflow.yaml, MLFLOW_TRACKING_URI overriding its store
        cfg = cfg.model_copy(update={"tracking": load_tracking_config(Path("mlflow.yaml"))})
    device = str(runtime.pick_device())
    runtime.seed_everything(cfg.seed, deterministic=device == "cpu")
    runtime.use_all_cores()
    tracker = Tracker(cfg.tracking)  # an unreachable tracking server fails the run here, before any work
    data = load_data(cfg.data)
    checked = cfg.out_dir / "validation" / data.digest[:16]  # per dataset: the GX data docs and report
    validation = validate_data(data, cfg.min_rows, checked / "data_docs")
    split = split_data(data, cfg)
    for run_id in tracker.fail_orphaned_runs():
        print(f"marked run {run_id} FAILED: the process that ran it is gone")
    lineage = {**runtime.lineage(), "prefect.flow_run_id": str(flow_run.get_id()), "data_digest": data.digest}
    with tracker.run("pipeline", tags=lineage) as parent_id:
        folder = cfg.out_dir / parent_id
        log_inputs(tracker, parent_id, cfg, split, device)
        steps.write_json(checked / "validation.json", validation.as_dict())
        tracker.log_metrics(parent_id, {"validation_seconds": validation.seconds})
        tracker.log_artifacts(parent_id, checked, "validation")
        tracker.log_artifacts(parent_id, explore_data(data, folder / "eda"), "eda")
        futures = [train_one.submit(name, cfg, split, device, parent_id, lineage) for name in cfg.models]
        results = [future.result() for future in futures]
        tracker.log_artifacts(parent_id, steps.write_comparison(results, folder / "comparison"))
        verdict = promote_best(tracker, results, split)
        tracker.log_metrics(parent_id, {f"{r['name']}_test_accuracy": r["accuracy"] for r in results})
        tracker.set_tags(parent_id, {"verdict": verdict.verdict, "verdict_reason": verdict.reason})
    summary = make_summary(tracker, cfg, results, verdict)
    print(f"v{verdict.version} {verdict.verdict}: {verdict.reason}")
    if cfg.summary:
        steps.write_json(cfg.summary, summary)
    return summary


def with_runner(dask_address: str | None = None, dask_workers: int = 0):
    """The training flow on its default runner, or training the models at once on a Dask cluster (prefect-dask):
    a local cluster of `dask_workers` processes, or the cluster at `dask_address`."""
    if not (dask_address or dask_workers):
        return training_flow
    return training_flow.with_options(task_runner=dask_runner(dask_address, dask_workers))


def log_inputs(tracker: Tracker, run_id: str, cfg: PipelineConfig, split: Split, device: str) -> None:
    """What this pipeline run was given: data (as MLflow dataset inputs), seed, protocol, split sizes and per-digit
    test counts."""
    tracker.log_params(run_id, {
        "data": cfg.data, "data_digest": split.train.digest, "seed": cfg.seed, "protocol": cfg.protocol,
        "device": device, "models": ",".join(cfg.models), **{f"split_{part}": n for part, n in split.sizes().items()},
        **{f"split_test_count_{digit}": count for digit, count in enumerate(split.test.class_counts())}})
    for part, context in (("train", "training"), ("val", "validation"), ("test", "evaluation")):
        tracker.log_dataset(run_id, getattr(split, part), context, source=cfg.data)


@task(cache_policy=NO_CACHE, task_run_name="model-{name}")
def train_one(name: str, cfg: PipelineConfig, split: Split, device: str, parent_id: str, lineage: dict) -> dict:
    """One model from training to a registered version, in its own MLflow run under the pipeline's."""
    tracker = Tracker(cfg.tracking)  # built here, not passed: a Dask worker gets the config, not a client
    with tracker.run(name, parent_id=parent_id, tags=lineage) as run_id:
        folder = cfg.out_dir / parent_id / name
        spec = steps.model_spec(name, cfg)
        tracker.log_params(run_id, {"model": name, "seed": cfg.seed, "device": device, **vars(spec)})
        tracker.log_dataset(run_id, split.train, "training", source=cfg.data)
        tracker.log_dataset(run_id, split.test, "evaluation", source=cfg.data)
        with epoch_bars(name, spec, cfg.progress) as bars:
            trained = train_model(name, cfg, split, device, [tracker.epoch_logger(run_id), *bars])
        evaluation, predicted = evaluate_model(trained, split, folder)
        onnx_path = export_model(trained, split, predicted, folder)
        tracker.log_metrics(run_id, {**evaluation.metrics(), "train_seconds": trained.train_seconds,
                                     "epochs_run": len(trained.history)})
        tracker.set_tags(run_id, {"stop_reason": trained.stop_reason})
        tracker.log_artifacts(run_id, folder, "report")
        version = register_model(tracker, run_id, onnx_path, split.test.images[:5], {
            "model_name": name, "test_accuracy": evaluation.accuracy, "onnx_path": onnx_path.resolve(),
            "onnx_parity": "passed", "pipeline_run_id": parent_id,
            **{k: v for k, v in lineage.items() if not k.startswith("version.")}})  # versions: on the run
    return {"name": name, "accuracy": evaluation.accuracy, "run_id": run_id, "model_version": version,
            "onnx_path": str(onnx_path.resolve()), "train_seconds": trained.train_seconds,
            "macro_f1": evaluation.macro_f1, "onnx_kb": onnx_path.stat().st_size / 1024,
            "stop_reason": trained.stop_reason, "predicted": predicted}


def promote_best(tracker: Tracker, results: list[dict], split: Split) -> Verdict:
    """Put this run's best model through the promotion gate; the others are recorded as not candidates."""
    best = max(results, key=lambda r: r["accuracy"])
    for other in results:
        if other is not best:
            record_verdict(tracker, Verdict(other["model_version"], "not_candidate", (
                f"{best['name']} v{best['model_version']} was the best model of this pipeline run"), other["accuracy"]))
    return promote_champion(tracker, best["model_version"], split.test, best["predicted"])


def make_summary(tracker: Tracker, cfg: PipelineConfig, results: list[dict], verdict: Verdict) -> dict:
    """The run's models and the champion after it (which may be an earlier run's)."""
    models = {r["name"]: {k: r[k] for k in SUMMARY_KEYS} for r in results}
    champion = tracker.champion()  # None only while no model has ever passed the gate
    return {"models": models, "verdict": {"version": verdict.version, "verdict": verdict.verdict,
                                          "reason": verdict.reason}, "champion": champion and {
        "name": champion.model_name, "model_version": champion.version, "accuracy": champion.accuracy,
        "onnx_path": str(tracker.local_onnx(champion, cfg.out_dir / "champion")), "promoted": verdict.promoted}}
