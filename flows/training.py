"""The training pipeline: validate -> split -> (train -> evaluate -> export -> perturbed digits -> drift reference
-> register) per model -> promote."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.futures import wait
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

from digitpipe import interrupts, promotion, runtime
from digitpipe.records.verdicts import Verdict, VerdictKind, run_tags
from digitpipe.card import card_markdown
from digitpipe.config import PipelineConfig, load_tracking_config
from digitpipe.data import Dataset, Split
from digitpipe.evaluate import write_comparison
from digitpipe.files import first_line, write_json
from digitpipe.hyperparams import check_split
from digitpipe.monitoring.feedback import train_on_feedback
from digitpipe.robustness import Suite
from digitpipe.tracking import FeedbackStore, Registry, RunLog, Tracker, tracker_for
from digitpipe.tracking.lineage import TrainedBefore
from digitpipe.training_key import code_version, training_key
from digitpipe.validation import ValidationReport
from digitpipe.records.training import RegisteredResult
from digitpipe.zoo import device_for
from flows import dask_runner, startup
from flows.approval import ask_a_person
from flows.locks import PromotionLock, training_locks
from tasks import (
    build_reference,
    build_suite,
    check_once,
    explore,
    gather_feedback,
    load_dataset,
    promote_if_earned,
    record_verdict,
    split_by_protocol,
    train_one,
    write_card,
)

log = logging.getLogger("digitpipe")  # one line per stage; the CLI prints it, deployments send it to Prefect
STOP_SECONDS = 2.0  # how long a stopped run waits for its tasks to reach their next check (a scikit-learn fit ends
# only with the process)


@dataclass(frozen=True)
class Prepared:
    """What every model of a run trains and is judged on: the validated data, its split (with any labelled feedback
    in the training part), the feedback held out for the gate, and the recipe of the split."""

    data: Dataset
    validation: ValidationReport
    validated_in: Path  # the validation report and GX's data docs
    split: Split
    recipe: dict
    feedback: Dataset | None
    feedback_used: dict[str, int]


# One model at a time by default: torch already uses every core for one net. A Dask runner (see `with_runner`)
# trains the models at once, each in its own process.
@flow(name="train-digits", task_runner=ThreadPoolTaskRunner(max_workers=1))
def training_flow(cfg: PipelineConfig) -> dict:
    """Train every configured model on cfg.data that is not registered already with its training key, register
    each, promote the best if it earned it; return the summary."""
    startup.set_environment()  # a deployment's run starts here, not at the command line
    interrupts.rearm()  # a signal stops the task threads too; Prefect's engine would keep SIGTERM to itself
    cfg = _with_tracking(cfg)
    tracker = _tracker(cfg)  # an unreachable tracking server fails the run here, before any work
    prepared = prepare(cfg, tracker)
    keys = {name: training_key(name, cfg.spec(name), cfg.seed, prepared.data.digest, prepared.recipe,
                               prepared.split) for name in cfg.models}
    with training_locks(cfg.tracking, cfg.promotion_lock, list(keys.values())):  # a second identical run waits
        unchanged = {} if cfg.force else tracker.registry.lineage.trained_before(keys)
        for before in unchanged.values():
            log.info(before.line())
        names = [name for name in cfg.models if name not in unchanged]
        results, verdict = train_and_judge(cfg, tracker, prepared, {name: keys[name] for name in names}) if names \
            else ([], None)
    if verdict is not None:
        log.info(verdict.line())
    if verdict is not None and verdict.kind is VerdictKind.AWAITING_APPROVAL:
        ask_a_person(cfg.tracking.registered_model, verdict, results)
    summary = summarise(tracker.registry, cfg.out_dir, results, verdict, unchanged)
    if cfg.summary:
        write_json(cfg.summary, summary)
    return summary


def prepare(cfg: PipelineConfig, tracker: Tracker) -> Prepared:
    """Load and validate the data (a report of the same digits is reused), split it, add labelled feedback."""
    data = load_dataset(cfg.data, "train" if cfg.protocol == "standard" else None)
    interrupts.pause_at("loaded")
    validation, validated_in = check_once(data, cfg.min_rows, cfg.out_dir / "validation")
    log.info(f"validated {len(data):,} images from {data.source}: {validation.summary()}")
    split = split_by_protocol(data, cfg.protocol, cfg.data, cfg.test_fraction, cfg.val_fraction, cfg.seed_of_split)
    recipe = cfg.recipe()
    check_split(cfg.params_split, data.digest, recipe, "--params")
    log.info("split ({}): {}".format(cfg.protocol, ", ".join(f"{k} {v:,}" for k, v in split.sizes().items())))
    split, feedback, used = add_feedback(tracker.feedback, split) if cfg.feedback else (split, None, {})
    return Prepared(data, validation, validated_in, split, recipe, feedback, used)


def train_and_judge(cfg: PipelineConfig, tracker: Tracker, prepared: Prepared,
                    keys: dict[str, str]) -> tuple[list[RegisteredResult], Verdict]:
    """Train the models of `keys` (name -> training key) under one pipeline run, register each, and put the best
    through the gate."""
    runs, registry, split = tracker.runs, tracker.registry, prepared.split
    device = device_for(tuple(keys)) if _trains_here() else None  # None: each Dask worker picks its own
    orphans, unjudged = tracker.end_orphans()
    for run_id in orphans:
        log.info(f"marked run {run_id} FAILED: the process that ran it is gone")
    for version in unjudged:
        log.info(f"marked v{version} interrupted: its run stopped before the gate judged it")
    lineage = {**runtime.lineage(), "prefect.flow_run_id": str(flow_run.get_id()),
               "data_digest": prepared.data.digest, "code_version": code_version()}
    with runs.run("pipeline", tags={**lineage, **next(iter(cfg.params_tags.values()), {})}) as parent_id:
        runs.log_inputs(parent_id, run_params(cfg, split, device or "per worker"), split.parts(), cfg.data)
        runs.log_metrics(parent_id, {"validation_seconds": prepared.validation.seconds, **prepared.feedback_used})
        runs.log_artifacts(parent_id, prepared.validated_in, "validation")
        runs.log_artifacts(parent_id, explore(prepared.data, cfg.out_dir / "eda"), "eda")
        runs.log_trained_on(parent_id, split.seen_in_training())
        suite = build_suite(split.test, cfg.seed)
        reference = build_reference(split.train.images)
        runs.set_tags(parent_id, suite.tags())
        futures = [train_one.submit(name, key, cfg, split, suite, reference, device, parent_id, lineage)
                   for name, key in keys.items()]
        try:
            results = []
            for future in futures:
                results.append(future.result())
                log.info(results[-1].line())
            runs.log_artifacts(parent_id, write_comparison(results, cfg.out_dir / parent_id / "comparison"))
            verdict = promote_best(registry, results, split, suite, prepared.feedback)
        except KeyboardInterrupt as stop:
            stopped(runs, registry, parent_id, futures, stop)
            raise
        for result in results:
            publish_card(registry, result, split.test, cfg.out_dir / parent_id / result.name / "card")
        runs.log_metrics(parent_id, {f"{r.name}_test_accuracy": r.accuracy for r in results})
        runs.set_tags(parent_id, run_tags(verdict))
    return results, verdict


def stopped(runs: RunLog, registry: Registry, parent_id: str, futures: list, stop: KeyboardInterrupt) -> None:
    """A signal stopped the run: its models' tasks stop at their next batch (their runs end KILLED, their
    checkpoints kept; a Dask worker's run is marked so here); a version they registered and the gate did not
    judge is marked so that the next run does. A task still busy after that (a scikit-learn fit, which no check
    reaches) ends with the process, now."""
    pending = []
    if _trains_here():  # a Dask worker hears no signal: it stops with its cluster (a local one closes with the command)
        pending = wait(futures, timeout=STOP_SECONDS).not_done
    else:
        logging.getLogger("distributed").setLevel(logging.ERROR)  # the closing cluster's warnings about the task
    try:
        runs.kill_children(parent_id, f"interrupted by {stop or 'SIGINT'}")
        for version in registry.lineage.mark_unjudged(parent_id):
            log.info(f"v{version} interrupted before the gate judged it: the next run trains and judges it again")
    except Exception as exc:  # the store is busy or gone: the next run marks what this one could not
        log.warning(f"stopped without marking its runs ({first_line(exc, 120)}): the next run marks them")
    log.info(f"stopped by {stop or 'SIGINT'}: `digitpipe run` with the same arguments and --resume continues each "
             "net from its last finished epoch")
    if pending and isinstance(stop, interrupts.Interrupted):
        runs.killed(parent_id, f"interrupted by {stop}")  # its block never ends: the process does
        interrupts.end_now(stop)


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


def add_feedback(store: FeedbackStore, split: Split) -> tuple[Split, Dataset | None, dict[str, int]]:
    """`split` with the store's labelled feedback in its training part (`run --feedback`), the feedback held out for
    the gate, and what was used (metrics of the pipeline run: the next retraining starts past it)."""
    before = len(split.train)
    found, through_ms = gather_feedback(store)
    split, held_out = train_on_feedback(split, found)
    used = {"feedback_train_rows": len(split.train) - before, "feedback_through_ms": through_ms}
    log.info(f"labelled feedback: {used['feedback_train_rows']:,} digits added to training, "
             f"{0 if held_out is None else len(held_out):,} held out for the gate")
    return split, held_out, used


def with_runner(dask_address: str | None = None):
    """The training flow on its default runner, or training the models at once on the Dask cluster at
    `dask_address` (prefect-dask; `flows.local_cluster` starts one on this machine)."""
    return training_flow.with_options(task_runner=dask_runner(dask_address)) if dask_address else training_flow


def promote_best(registry: Registry, results: list[RegisteredResult], split: Split, suite: Suite,
                 feedback: Dataset | None = None) -> Verdict:
    """The run's best model goes through the promotion gate; the others are recorded as not candidates."""
    best, others = promotion.candidate(results)
    for other in others:
        record_verdict(registry, promotion.not_candidate(other, best))
    return promote_if_earned(registry, best, split.test, suite, feedback)


def publish_card(registry: Registry, result: RegisteredResult, test: Dataset, folder: Path) -> None:
    """The version's evidence card on its MLflow run, and its gist as a markdown artifact of this flow run. The
    verdict is recorded (and the alias moved) by now: a card that cannot be written is said, not a failed run."""
    try:
        card = write_card(registry, result.model_version, test, folder)
    except Exception as exc:  # the store went away after the verdict; `digitpipe card` writes it later
        log.warning(f"v{result.model_version}: no evidence card ({first_line(exc, 160)}); write it with "
                    f"`digitpipe card --version {result.model_version}`")
        return
    slug = re.sub(r"[^a-z0-9]+", "-", registry.cfg.registered_model.lower()).strip("-")
    create_markdown_artifact(card_markdown(card, f"runs:/{result.run_id}/card/card.html"),
                             key=f"card-{slug}-v{result.model_version}",
                             description=f"evidence card of {registry.cfg.registered_model} v{result.model_version}")


def run_params(cfg: PipelineConfig, split: Split, device: str) -> dict[str, object]:
    """What a pipeline run was given, as MLflow parameters: data, seed, protocol, split sizes, per-digit test counts."""
    return {"data": cfg.data.resolve(), "train_digest": split.train.digest, "seed": cfg.seed,
            "split_seed": cfg.seed_of_split, "protocol": cfg.protocol,
            "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction, "feedback": cfg.feedback,
            "device": device, "models": ",".join(cfg.models), **{f"split_{part}": n for part, n in split.sizes().items()},
            **{f"split_test_count_{digit}": count for digit, count in enumerate(split.test.class_counts())}}


def summarise(registry: Registry, out_dir: Path, results: list[RegisteredResult], verdict: Verdict | None,
              unchanged: dict[str, TrainedBefore]) -> dict:
    """The run's models (those trained, those unchanged since an earlier version), the verdict on its candidate
    (None: nothing trained), and the champion after it (which may be an earlier run's)."""
    champion = registry.champion()  # None only while no model has ever passed the gate
    return {"models": {**{name: before.summary() for name, before in unchanged.items()},
                       **{r.name: r.summary() for r in results}},
            "verdict": verdict and verdict.summary(),
            "champion": champion and {
                "name": champion.model_name, "model_version": champion.version, "accuracy": champion.accuracy,
                "onnx_path": str(registry.local_onnx(champion, out_dir / "champion")), "promoted": bool(verdict and verdict.promoted)}}
