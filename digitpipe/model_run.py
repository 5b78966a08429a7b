"""One model of a pipeline run, from training to a registered version, in its own MLflow run under the pipeline's:
train (continuing its checkpoint), evaluate, export, the perturbation suite, the drift reference, register."""

from __future__ import annotations

from pathlib import Path

from digitpipe import interrupts
from digitpipe.config import PipelineConfig
from digitpipe.data import Split
from digitpipe.evaluate import evaluate_model
from digitpipe.export import export_checked
from digitpipe.files import atomic_path
from digitpipe.monitoring.drift import Reference, write_reference
from digitpipe.progress import epoch_bars
from digitpipe.records.specs import NetSpec, flat_values
from digitpipe.records.training import RegisteredResult
from digitpipe.robustness import Suite, check_robustness
from digitpipe.tracking import tracker_for
from digitpipe.tracking.lineage import TRAINING_KEY_TAG
from digitpipe.zoo import checkpoint_path, device_for, train_model


def train_one(name: str, key: str, cfg: PipelineConfig, split: Split, suite: Suite, reference: Reference,
              device: str | None, parent_id: str, lineage: dict) -> RegisteredResult:
    """Model `name` (training key `key`) trained on `device` (None: this process's own; a Dask worker picks its
    own), judged on split.test and `suite`, and registered with its run under `parent_id`. A retry continues
    from the checkpoint the failed attempt left (replaying it whole where training had finished)."""
    device = device or device_for((name,))
    runs = tracker_for(cfg.tracking).runs  # by config, not passed: a Dask worker gets the config, not a client
    spec = cfg.spec(name)
    tuned = cfg.params_tags.get(name, {})  # the params file this model's values came from
    with runs.run(name, parent_id=parent_id, tags={**lineage, **tuned}) as run_id:
        folder = cfg.out_dir / parent_id / name
        runs.log_inputs(run_id, {"model": name, "seed": cfg.seed, "device": device, **flat_values(spec)},
                        {"training": split.train, "evaluation": split.test}, cfg.data)
        checkpoint = claimed(checkpoint_path(cfg.out_dir / "checkpoints", name, spec, cfg.seed, split), parent_id,
                             cfg.resume) if isinstance(spec, NetSpec) else None  # the baseline has none
        with epoch_bars(name, spec, cfg.progress) as bars:
            trained = train_model(name, spec, split, device, cfg.seed, cfg.threads, [runs.epoch_logger(run_id), *bars],
                                  checkpoint)
        interrupts.check()  # between the steps of seconds too, not only in a net's batches
        evaluation, predicted = evaluate_model(trained, split.test, folder)
        onnx_path = export_checked(trained, split.test, predicted, folder)
        interrupts.check()
        robustness = check_robustness(onnx_path, suite, folder)
        write_reference(onnx_path, reference, split.test, folder)
        runs.log_metrics(run_id, {**evaluation.metrics(), **robustness.metrics(),
                                  "train_seconds": trained.train_seconds, "epochs_run": len(trained.history),
                                  **({"torch_threads": trained.threads} if trained.threads else {})})
        runs.set_tags(run_id, {"stop_reason": trained.stop_reason})
        runs.log_artifacts(run_id, folder, "report")
        interrupts.check()  # a stopped run registers nothing more; its checkpoint stays for --resume
        version = tracker_for(cfg.tracking).registry.register_onnx(run_id, onnx_path, split.test.images[:5], {
            "model_name": name, "test_accuracy": evaluation.accuracy, "onnx_path": onnx_path.resolve(),
            "onnx_parity": "passed", "pipeline_run_id": parent_id, "robust_accuracy": robustness.robust_accuracy,
            "invariance_rate": robustness.invariance_rate, **robustness.people_tags(), TRAINING_KEY_TAG: key,
            **suite.tags(), **tuned,
            **{k: v for k, v in lineage.items() if not k.startswith("version.")}})  # versions: on the run
        interrupts.pause_at("registered")
    if checkpoint:
        released(checkpoint)  # kept as a version: the next identical run starts afresh
    return RegisteredResult(name, evaluation.accuracy, evaluation.macro_f1, str(onnx_path.resolve()),
                            onnx_path.stat().st_size / 1024, trained.train_seconds, trained.stop_reason, predicted,
                            robustness, run_id=run_id, model_version=version)


def claimed(checkpoint: Path, pipeline_run: str, resume: bool) -> Path:
    """`checkpoint` for this pipeline run: one another run left is continued only with --resume (else removed), this
    run's own (a retry of train_one) always. The owner is written beside it, on the machine that trains."""
    owner = checkpoint.with_name(checkpoint.name + ".run")
    if not resume and (not owner.is_file() or owner.read_text() != pipeline_run):
        checkpoint.unlink(missing_ok=True)
    with atomic_path(owner) as tmp:
        tmp.write_text(pipeline_run)
    return checkpoint


def released(checkpoint: Path) -> None:
    """Remove a checkpoint (and its owner) once its model is registered."""
    for path in (checkpoint, checkpoint.with_name(checkpoint.name + ".run")):
        path.unlink(missing_ok=True)
