"""The training pipeline: validate -> split -> (train -> evaluate -> export -> perturbed digits -> drift reference
-> register) per model -> promote."""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from digitpipe import promotion, runtime
from digitpipe.config import PipelineConfig, load_tracking_config
from digitpipe.data import Dataset, Split
from digitpipe.evaluate import write_comparison
from digitpipe.files import write_json
from digitpipe.hyperparams import check_split, split_recipe
from digitpipe.monitoring.drift import Reference
from digitpipe.monitoring.feedback import train_on_feedback
from digitpipe.progress import epoch_bars
from digitpipe.robustness import Suite
from digitpipe.tracking import Registry, RunLog, Tracker, tracker_for
from digitpipe.zoo import ModelResult, checkpoint_path, device_for, flat_values, spec_for
from flows import dask_runner, startup
from flows.locks import PromotionLock
from tasks import (
    check_robustness,
    describe_training_part,
    evaluate_model,
    explore_data,
    export_model,
    gather_feedback,
    load_data,
    perturb_held_out,
    promote_champion,
    record_monitor_reference,
    record_verdict,
    register_model,
    split_data,
    train_model,
    validate_data,
)

log = logging.getLogger("digitpipe")  # one line per stage; the CLI prints it, deployments send it to Prefect


# One model at a time by default: torch already uses every core for one net. A Dask runner (see `with_runner`)
# trains the models at once, each in its own process.
@flow(name="train-digits", task_runner=ThreadPoolTaskRunner(max_workers=1))
def training_flow(cfg: PipelineConfig) -> dict:
    """Train every configured model on cfg.data, register each, promote the best if it earned it; return the summary."""
    startup.set_environment()  # a deployment's run starts here, not at the command line
    cfg = _with_tracking(cfg)
    device = device_for(cfg.models) if _trains_here() else None  # None: each Dask worker picks its own
    tracker = _tracker(cfg)  # an unreachable tracking server fails the run here, before any work
    runs, registry = tracker.runs, tracker.registry
    data = load_data(cfg.data, "train" if cfg.protocol == "standard" else None)
    # per run: two runs of the same data on one machine (two workers) must not write the same files
    checked = cfg.out_dir / "validation" / f"{data.digest[:16]}-{flow_run.get_id() or 'local'}"
    validation = validate_data(data, cfg.min_rows, checked / "data_docs")
    log.info(f"validated {len(data):,} images from {data.source}: {validation.summary()}")
    split = split_data(data, cfg.protocol, cfg.data, cfg.test_fraction, cfg.val_fraction, cfg.seed_of_split)
    check_split(cfg.params_split, data.digest,
                split_recipe(cfg.protocol, cfg.seed_of_split, cfg.test_fraction, cfg.val_fraction), "--params")
    log.info("split ({}): {}".format(cfg.protocol, ", ".join(f"{k} {v:,}" for k, v in split.sizes().items())))
    split, feedback, used = add_feedback(runs, split) if cfg.feedback else (split, None, {})
    for run_id in runs.fail_orphaned_runs():
        log.info(f"marked run {run_id} FAILED: the process that ran it is gone")
    lineage = {**runtime.lineage(), "prefect.flow_run_id": str(flow_run.get_id()), "data_digest": data.digest}
    with runs.run("pipeline", tags={**lineage, **next(iter(cfg.params_tags.values()), {})}) as parent_id:
        runs.log_inputs(parent_id, run_params(cfg, split, device or "per worker"), split.parts(), cfg.data)
        write_json(checked / "validation.json", validation.as_dict())
        runs.log_metrics(parent_id, {"validation_seconds": validation.seconds, **used})
        runs.log_artifacts(parent_id, checked, "validation")
        runs.log_artifacts(parent_id, explore_data(data, cfg.out_dir / "eda"), "eda")
        runs.log_trained_on(parent_id, split.seen_in_training())
        suite = perturb_held_out(split.test, cfg.seed)
        reference = describe_training_part(split.train.images)
        runs.set_tags(parent_id, suite.tags())
        futures = [train_one.submit(name, cfg, split, suite, reference, device, parent_id, lineage)
                   for name in cfg.models]
        results = []
        for future in futures:
            results.append(future.result())
            log.info(results[-1].line())
        runs.log_artifacts(parent_id, write_comparison(results, cfg.out_dir / parent_id / "comparison"))
        verdict = promote_best(registry, results, split, suite, feedback)
        runs.log_metrics(parent_id, {f"{r.name}_test_accuracy": r.accuracy for r in results})
        runs.set_tags(parent_id, {"verdict": verdict.verdict, "verdict_reason": verdict.reason})
    log.info(f"v{verdict.version} {verdict.verdict}: {verdict.reason}")
    summary = summarise(registry, cfg.out_dir, results, verdict)
    if cfg.summary:
        write_json(cfg.summary, summary)
    return summary


def _with_tracking(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with its tracking settings: the given ones, else (a deployment) the working directory's mlflow.yaml,
    MLFLOW_TRACKING_URI overriding its store; for the registered model a triggered run names, where it names one."""
    tracking = cfg.tracking or load_tracking_config()
    if cfg.registered_model:
        tracking = tracking.model_copy(update={"registered_model": cfg.registered_model})
    return cfg.model_copy(update={"tracking": tracking})


def _trains_here() -> bool:
    """Whether the models train in this process (the default runner's threads), not on Dask workers: a worker
    picks its own device (it may have a GPU this process lacks), and this process then needs no torch."""
    from prefect.context import FlowRunContext

    return isinstance(FlowRunContext.get().task_runner, ThreadPoolTaskRunner)


def _tracker(cfg: PipelineConfig) -> Tracker:
    """This process's Tracker for the run's store, with the promotion lock the run was given."""
    return tracker_for(cfg.tracking, PromotionLock(cfg.tracking, cfg.promotion_lock))


def add_feedback(runs: RunLog, split: Split) -> tuple[Split, Dataset | None, dict[str, int]]:
    """`split` with the store's labelled feedback in its training part (`run --feedback`), the feedback held out for
    the gate, and what was used (metrics of the pipeline run: the next retraining starts past it)."""
    before = len(split.train)
    found, through_ms = gather_feedback(runs)
    split, held_out = train_on_feedback(split, found)
    used = {"feedback_train_rows": len(split.train) - before, "feedback_through_ms": through_ms}
    log.info(f"labelled feedback: {used['feedback_train_rows']:,} digits added to training, "
             f"{0 if held_out is None else len(held_out):,} held out for the gate")
    return split, held_out, used


def with_runner(dask_address: str | None = None):
    """The training flow on its default runner, or training the models at once on the Dask cluster at
    `dask_address` (prefect-dask; `flows.local_cluster` starts one on this machine)."""
    return training_flow.with_options(task_runner=dask_runner(dask_address)) if dask_address else training_flow


@task(cache_policy=NO_CACHE, task_run_name="model-{name}")
def train_one(name: str, cfg: PipelineConfig, split: Split, suite: Suite, reference: Reference, device: str | None,
              parent_id: str, lineage: dict) -> ModelResult:
    """One model from training to a registered version, in its own MLflow run under the pipeline's (on `device`,
    else on this process's own)."""
    device = device or device_for((name,))
    tracker = _tracker(cfg)  # by config, not passed: a Dask worker gets the config, not a client
    spec = spec_for(name, cfg.epochs, cfg.stop_at_accuracy, cfg.patience, cfg.hyperparams.get(name))
    runs = tracker.runs
    tuned = cfg.params_tags.get(name, {})  # the params file this model's values came from
    with runs.run(name, parent_id=parent_id, tags={**lineage, **tuned}) as run_id:
        folder = cfg.out_dir / parent_id / name
        runs.log_inputs(run_id, {"model": name, "seed": cfg.seed, "device": device, **flat_values(spec)},
                        {"training": split.train, "evaluation": split.test}, cfg.data)
        checkpoint = checkpoint_path(cfg.out_dir / "checkpoints", name, spec, cfg.seed, split)
        if not cfg.resume:  # a left-over checkpoint of an identical run; a retry of this task continues its own
            checkpoint.unlink(missing_ok=True)
        with epoch_bars(name, spec, cfg.progress) as bars:
            trained = train_model(name, spec, split, device, cfg.seed, cfg.threads,
                                  [runs.epoch_logger(run_id), *bars], checkpoint)
        evaluation, predicted = evaluate_model(trained, split.test, folder)
        onnx_path = export_model(trained, split.test, predicted, folder)
        robustness = check_robustness(onnx_path, suite, folder)
        record_monitor_reference(onnx_path, reference, split.test, folder)
        runs.log_metrics(run_id, {**evaluation.metrics(), **robustness.metrics(),
                                  "train_seconds": trained.train_seconds, "epochs_run": len(trained.history),
                                  **({"torch_threads": trained.threads} if trained.threads else {})})
        runs.set_tags(run_id, {"stop_reason": trained.stop_reason})
        runs.log_artifacts(run_id, folder, "report")
        version = register_model(tracker.registry, run_id, onnx_path, split.test.images[:5], {
            "model_name": name, "test_accuracy": evaluation.accuracy, "onnx_path": onnx_path.resolve(),
            "onnx_parity": "passed", "pipeline_run_id": parent_id, "robust_accuracy": robustness.robust_accuracy,
            "invariance_rate": robustness.invariance_rate, **suite.tags(), **tuned,
            **{k: v for k, v in lineage.items() if not k.startswith("version.")}})  # versions: on the run
    return ModelResult(name, evaluation.accuracy, evaluation.macro_f1, run_id, version, str(onnx_path.resolve()),
                       onnx_path.stat().st_size / 1024, trained.train_seconds, trained.stop_reason, predicted,
                       robustness)


def promote_best(registry: Registry, results: list[ModelResult], split: Split, suite: Suite,
                 feedback: Dataset | None = None) -> promotion.Verdict:
    """The run's best model goes through the promotion gate; the others are recorded as not candidates."""
    best, others = promotion.candidate(results)
    for other in others:
        record_verdict(registry, promotion.not_candidate(other, best))
    return promote_champion(registry, best, split.test, suite, feedback)


def run_params(cfg: PipelineConfig, split: Split, device: str) -> dict[str, object]:
    """What a pipeline run was given, as MLflow parameters: data, seed, protocol, split sizes, per-digit test counts."""
    return {"data": cfg.data.resolve(), "data_digest": split.train.digest, "seed": cfg.seed,
            "split_seed": cfg.seed_of_split, "protocol": cfg.protocol,
            "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction, "feedback": cfg.feedback,
            "device": device, "models": ",".join(cfg.models), **{f"split_{part}": n for part, n in split.sizes().items()},
            **{f"split_test_count_{digit}": count for digit, count in enumerate(split.test.class_counts())}}


def summarise(registry: Registry, out_dir: Path, results: list[ModelResult], verdict: promotion.Verdict) -> dict:
    """The run's models, the verdict on its candidate, and the champion after it (which may be an earlier run's)."""
    champion = registry.champion()  # None only while no model has ever passed the gate
    return {"models": {r.name: r.summary() for r in results},
            "verdict": {"version": verdict.version, "verdict": verdict.verdict, "reason": verdict.reason},
            "champion": champion and {
                "name": champion.model_name, "model_version": champion.version, "accuracy": champion.accuracy,
                "onnx_path": str(registry.local_onnx(champion, out_dir / "champion")), "promoted": verdict.promoted}}
