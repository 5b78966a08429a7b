"""`digitpipe tune`: a hyperparameter search with Optuna (TPE; Hyperband pruning from 2 epochs) in a database the
team can share, scored on the validation part of the split only: the held-out test part, which the promotion gate
judges with, is never read by a study (tests/model/test_tuning_study.py shuffles its labels and gets the same trials).

A trial's value is the mean of its accuracy on the clean validation digits and on their perturbed copies (the gate's
robustness clause would refuse a model tuned to drop its augmentation)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna

from digitpipe import interrupts, robustness
from digitpipe.config import StudyPlan
from digitpipe.data import Split
from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.progress import trial_bar
from digitpipe.runtime import owner, owner_gone
from digitpipe.records.specs import Choice, NetSpec, Range, spec_for
from digitpipe.records.training import EpochResult
from digitpipe.zoo import train_model

MIN_EPOCHS = 2  # Hyperband's smallest budget: no trial is judged on its first epoch alone
HEARTBEAT_S = 10  # a trial whose process stops beating for 3 of these is failed by the next process to look
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
MAX_ROUNDS = 3  # of trials to replace failed ones: a study whose every trial fails stops after three rounds


@dataclass(frozen=True)
class Score:
    """How one trained model did on the validation part."""

    value: float  # the study's objective: mean of clean and perturbed accuracy (and people's digits', if chosen)
    clean: float
    perturbed: float
    seconds: float
    epochs: int  # 0: not a net
    people: float | None = None  # mean accuracy on the drawn and photographed validation digits

    def metrics(self) -> dict[str, float]:
        return {"objective": self.value, "val_clean_accuracy": self.clean, "val_perturbed_accuracy": self.perturbed,
                "train_seconds": self.seconds, "epochs_run": self.epochs,
                **({"val_people_accuracy": self.people} if self.people is not None else {})}


def _interrupted_trials(record: logging.LogRecord) -> bool:
    """Not Optuna's traceback and lines of a trial stopped by Ctrl-C or SIGTERM: the command says so in one line
    (the trial is recorded as failed, and the study resumes without it)."""
    return interrupts.asked() is None and not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def open_study(plan: StudyPlan, split: Split) -> optuna.Study:
    """The study `plan.study` in `plan.storage`, created, or joined (resumed, or shared with another process) when it
    searched the same model on the same split with the same fixed values."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_interrupted_trials)  # where Optuna logs a failed trial
    storage = _storage(plan.storage)
    identity = {"model": plan.model, "train_digest": split.train.digest[:16], "val_digest": split.val.digest[:16],
                "seed": str(plan.seed), "fixed": repr(sorted(plan.base.items())),
                "objectives": {"accuracy-time": "objective, seconds", "people": "objective with people's digits"}.get(
                    plan.objective, "objective")}
    directions = ["maximize", "minimize"] if plan.pareto else ["maximize"]
    try:  # exactly one of several processes starting at once creates it
        study = optuna.create_study(storage=storage, study_name=plan.study, directions=directions,
                                    sampler=_sampler(plan.seed), pruner=_pruner(plan))
    except optuna.exceptions.DuplicatedStudyError:
        salt = (plan.seed * 7919 + os.getpid()) % 2**31  # a process that joins draws its own trials
        study = optuna.load_study(storage=storage, study_name=plan.study, sampler=_sampler(salt),
                                  pruner=_pruner(plan))
    else:
        for key, value in identity.items():
            study.set_user_attr(key, value)
    if mismatch := [k for k, v in identity.items() if study.user_attrs.get(k, v) != v]:
        raise UserError(f"study {plan.study!r} in {masked(plan.storage)} searched another "
                        + ", ".join(f"{k} ({study.user_attrs[k]}, not {identity[k]})" for k in mismatch)
                        + "; resume it with the same, or name a new --study")
    return study


def _storage(url: str) -> optuna.storages.RDBStorage:
    """The study database, its tables created where missing: several processes starting on a new database race
    to create them (PostgreSQL: a duplicate key in pg_type), so a failed attempt is tried again."""
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
                return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=3 * HEARTBEAT_S)
        except Exception as exc:  # sqlalchemy's and the drivers' errors: all mean "no such database"
            if attempt == 2:
                raise UserError(f"cannot open the study storage {masked(url)} ({first_line(exc, 160)})") from None
            time.sleep(1 + attempt)


def _sampler(seed: int) -> optuna.samplers.BaseSampler:
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # liar: parallel processes spread out


def enqueue_defaults(study: optuna.Study, plan: StudyPlan) -> None:
    """The shipped defaults as the next trial, unless a trial of them finished, runs or waits (a new study; one
    whose defaults trial died)."""
    alive = (*FINISHED, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    if not any(t.params == plan.defaults() for t in study.get_trials(deepcopy=False, states=alive)):
        study.enqueue_trial(plan.defaults())


def _pruner(plan: StudyPlan) -> optuna.pruners.BasePruner:
    spec = spec_for(plan.model, overrides=plan.base)
    if not plan.prune or plan.pareto or not isinstance(spec, NetSpec) or spec.epochs <= MIN_EPOCHS:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=MIN_EPOCHS, max_resource=spec.epochs)


def search(plan: StudyPlan, split: Split, study: optuna.Study, device: str = "cpu",
           on_trial: Callable | None = None, progress: bool = False) -> optuna.Study:
    """Run trials until the study has `plan.trials` finished ones (or `plan.timeout` passes); `on_trial(trial,
    values)` is the tracking context of one trial (digitpipe.tracking.trials.StudyLog.trial). Only split.train and
    split.val are read."""
    try:
        return _search(plan, split, study, device, on_trial, progress)
    except optuna.exceptions.StorageInternalError as exc:  # the database went away mid-study
        raise UserError(f"lost the study storage {masked(plan.storage)} "
                        f"({first_line(exc.__cause__ or exc, 160)}); run the same command again to resume") from None


def _search(plan: StudyPlan, split: Split, study: optuna.Study, device: str, on_trial: Callable | None,
            progress: bool) -> optuna.Study:
    train, val = split.train, split.val  # never split.test
    suite = robustness.build_suite(val, seed=plan.seed)
    fail_orphaned_trials(study)
    enqueue_defaults(study, plan)

    def objective(trial: optuna.trial.Trial) -> float | tuple[float, float]:
        for key, value in owner().items():
            trial.set_user_attr(key, value)
        values = {**plan.base, **suggest(trial, plan.space)}
        with (on_trial(trial, values) if on_trial else contextlib.nullcontext()) as record:
            score = train_and_score(plan, values, Split(train, val, val), suite, device,
                                    None if plan.pareto else trial,  # Optuna prunes single objectives only
                                    record and record.log_epoch)
            if record:
                record.log_score(score.metrics())
        trial.set_user_attr("score", score.metrics())
        return (score.value, score.seconds) if plan.pareto else score.value

    # Stop once the study has its total, counting other processes' running trials (each finishes its own).
    stop_at = optuna.study.MaxTrialsCallback(plan.trials, states=(*FINISHED, optuna.trial.TrialState.RUNNING))
    deadline = None if plan.timeout is None else time.monotonic() + plan.timeout
    with trial_bar(plan.study, plan.trials, _count(study, FINISHED), progress) as bar:
        for _ in range(MAX_ROUNDS):  # a failed trial does not count: run again for what is left
            remaining = plan.trials - _count(study, (*FINISHED, optuna.trial.TrialState.RUNNING))
            left_s = None if deadline is None else deadline - time.monotonic()
            if remaining <= 0 or (left_s is not None and left_s <= 0):
                break
            study.optimize(objective, n_trials=remaining, timeout=left_s, callbacks=[stop_at, *bar],
                           catch=(RuntimeError, FloatingPointError))
    return study


def suggest(trial: optuna.trial.Trial, space: dict[str, Range | Choice]) -> dict[str, object]:
    """This trial's values for every field of `space`."""
    out: dict[str, object] = {}
    for key, dim in space.items():
        if isinstance(dim, Choice):
            out[key] = trial.suggest_categorical(key, list(dim.options))
        elif dim.integer:
            out[key] = trial.suggest_int(key, int(dim.low), int(dim.high), log=dim.log)
        else:
            out[key] = trial.suggest_float(key, dim.low, dim.high, log=dim.log)
    return out


def train_and_score(plan: StudyPlan, values: dict[str, object], split: Split, suite: robustness.Suite, device: str,
                    trial: optuna.trial.Trial | None = None, log_epoch: Callable | None = None,
                    seed: int | None = None) -> Score:
    """Train `plan.model` with `values` on split.train, report each epoch's validation accuracy to `trial` (which
    may prune it: then optuna.TrialPruned is raised), and score it on the clean and perturbed validation digits."""
    def report(result: EpochResult) -> None:
        if log_epoch:
            log_epoch(result)
        if trial is not None:
            trial.report(result.val_accuracy, result.epoch)
            if trial.should_prune():  # stops the loop; the trial is recorded as pruned
                raise optuna.TrialPruned(f"pruned at epoch {result.epoch}")

    spec = spec_for(plan.model, overrides=values)
    trained = train_model(plan.model, spec, split, device, plan.seed if seed is None else seed, plan.threads,
                          [report])
    if trained.history and not np.isfinite(trained.history[-1].train_loss):  # diverged: a FAIL, not a value
        raise FloatingPointError(f"training loss {trained.history[-1].train_loss} after epoch {len(trained.history)}")
    result, _ = robustness.measure(lambda images: trained.scores(images).argmax(1), suite)
    people = float(np.mean(list(result.people.values()))) if result.people else None
    parts = [result.clean_accuracy, result.robust_accuracy, *([people] if plan.objective == "people" and people
                                                              is not None else [])]
    return Score(float(np.mean(parts)), result.clean_accuracy, result.robust_accuracy, trained.train_seconds,
                 len(trained.history), people)


def seed_spread(plan: StudyPlan, values: dict[str, object], split: Split, seeds: list[int],
                device: str = "cpu") -> list[Score]:
    """`values` retrained with each training seed on the same split (validation part only)."""
    suite = robustness.build_suite(split.val, seed=plan.seed)
    return [train_and_score(plan, {**plan.base, **values}, Split(split.train, split.val, split.val), suite, device,
                            seed=seed) for seed in seeds]


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the RUNNING trials whose process on this host is gone (a kill -9): at once, where heartbeats
    would take their grace period (they still catch another machine's dead process)."""
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    orphans = [t.number for t in running if owner_gone(t.user_attrs)]
    for number in orphans:
        with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):  # another process did
            study.tell(number, state=optuna.trial.TrialState.FAIL)
    return orphans


def _count(study: optuna.Study, states: tuple) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def counts(study: optuna.Study) -> dict[str, int]:
    """Trials by state, lower-case names (complete, pruned, fail, running, waiting)."""
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    return {state: states.count(state) for state in sorted(set(states))}


def describe(study: optuna.Study) -> str:
    """"3 complete, 1 pruned, 1 waiting" (the shipped defaults wait in a new study), or "none"."""
    return ", ".join(f"{n} {state}" for state, n in counts(study).items()) or "none"


def masked(url: str) -> str:
    """`url` without its password, for messages and tags."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: say so as given
        return url


def spread(scores: list[Score]) -> dict[str, float]:
    """Mean and spread (sample standard deviation, min, max) of scores' values, and their mean seconds."""
    values = np.array([s.value for s in scores])
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max()),
            "seconds": float(np.mean([s.seconds for s in scores]))}

