"""The training pipeline: validate -> split -> (train -> evaluate -> export -> register) per model -> promote."""

from __future__ import annotations

from prefect import flow

from digitpipe import runtime, steps
from digitpipe.config import PipelineConfig
from digitpipe.data import Split
from digitpipe.progress import epoch_bars
from digitpipe.tracking import Tracker
from tasks.data import explore_data, load_data, split_data, validate_data
from tasks.modeling import evaluate_model, export_model, train_model
from tasks.registry import promote_champion, register_model

SUMMARY_KEYS = ("accuracy", "run_id", "model_version", "onnx_path", "train_seconds")


@flow(name="train-digits", log_prints=True)
def training_flow(cfg: PipelineConfig) -> dict:
    """Train every configured model on cfg.data, register each, promote the best if it earned it; returns the summary."""
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
    with tracker.run("pipeline", tags={"data_digest": data.digest}) as parent_id:
        folder = cfg.out_dir / parent_id
        log_inputs(tracker, parent_id, cfg, split, device, data.digest)
        steps.write_json(checked / "validation.json", validation.as_dict())
        tracker.log_metrics(parent_id, {"validation_seconds": validation.seconds})
        tracker.log_artifacts(parent_id, checked, "validation")
        tracker.log_artifacts(parent_id, explore_data(data, folder / "eda"), "eda")
        results = [train_one(name, cfg, split, device, tracker, parent_id) for name in cfg.models]
        tracker.log_artifacts(parent_id, steps.write_comparison(results, folder / "comparison"))
        models = {r["name"]: {k: r[k] for k in SUMMARY_KEYS} for r in results}
        best = max(models, key=lambda name: models[name]["accuracy"])
        promotion = promote_champion(tracker, models[best]["model_version"])
        tracker.log_metrics(parent_id, {f"{name}_test_accuracy": m["accuracy"] for name, m in models.items()})
    champion = promotion.champion
    summary = {"models": models, "champion": {
        "name": champion.model_name, "model_version": champion.version, "accuracy": champion.accuracy,
        "onnx_path": str(tracker.local_onnx(champion, cfg.out_dir / "champion")), "promoted": promotion.promoted}}
    print(f"champion: {champion.model_name} v{champion.version} ({champion.accuracy:.2%}); {promotion.reason}")
    if cfg.summary:
        steps.write_json(cfg.summary, summary)
    return summary


def log_inputs(tracker: Tracker, run_id: str, cfg: PipelineConfig, split: Split, device: str, digest: str) -> None:
    """What this pipeline run was given: data, seed, protocol, split sizes and per-digit test counts."""
    tracker.log_params(run_id, {
        "data": cfg.data, "data_digest": digest, "seed": cfg.seed, "protocol": cfg.protocol, "device": device,
        "models": ",".join(cfg.models), **{f"split_{part}": size for part, size in split.sizes().items()},
        **{f"split_test_count_{digit}": count for digit, count in enumerate(split.test.class_counts())}})


def train_one(name: str, cfg: PipelineConfig, split: Split, device: str, tracker: Tracker, parent_id: str) -> dict:
    """One model from training to a registered version, in its own MLflow run under the pipeline's."""
    with tracker.run(name, parent_id=parent_id) as run_id:
        folder = cfg.out_dir / parent_id / name
        spec = steps.model_spec(name, cfg)
        tracker.log_params(run_id, {"model": name, "seed": cfg.seed, "device": device, **vars(spec)})
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
            "onnx_parity": "passed", "pipeline_run_id": parent_id})
    return {"name": name, "accuracy": evaluation.accuracy, "run_id": run_id, "model_version": version,
            "onnx_path": str(onnx_path.resolve()), "train_seconds": trained.train_seconds,
            "macro_f1": evaluation.macro_f1, "onnx_kb": onnx_path.stat().st_size / 1024,
            "stop_reason": trained.stop_reason}

