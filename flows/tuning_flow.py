"""The tuning flow: load -> split -> open the study -> search (trials on the validation part) -> retrain the best
with other seeds -> pictures, the params file for `run --params`, and a summary beside the shipped defaults."""

from __future__ import annotations

import logging

from prefect import flow

from digitpipe import hyperparams, interrupts, studies
from digitpipe.config import StudyPlan, TuneConfig
from digitpipe.plots import study_pngs
from digitpipe.tracking import tracker_for
from digitpipe.tracking.trials import StudyLog
from digitpipe.zoo import device_for
from flows import startup
from tasks import load_dataset, open_study, seed_spread, search, split_by_protocol

log = logging.getLogger("digitpipe")


@flow(name="tune-digits")
def tuning_flow(cfg: TuneConfig) -> dict:
    """Search cfg.model's hyperparameters until the study has cfg.trials finished trials; return the summary."""
    startup.set_environment()
    interrupts.rearm()  # a signal stops the task threads too; Prefect's engine would keep SIGTERM to itself
    device, runs = device_for((cfg.model,)), tracker_for(cfg.tracking).runs
    data = load_dataset(cfg.data, "train" if cfg.protocol == "standard" else None)
    split = split_by_protocol(data, cfg.protocol, cfg.data, cfg.test_fraction, cfg.val_fraction, cfg.seed_of_split)
    study = open_study(cfg, split)
    runs.fail_orphaned_runs()  # a killed tune's runs, as its trials are failed
    log.info(f"study {cfg.study} ({studies.masked(cfg.storage)}): {cfg.model} on {len(split.train):,} training and "
             f"{len(split.val):,} validation digits; trials so far: {studies.describe(study)}")
    recipe = {"data_digest": data.digest[:16],
              **cfg.recipe()}
    with runs.run(f"tune-{cfg.study}", tags={"optuna.study": cfg.study, **cfg.base_tags}) as parent_id:
        runs.log_params(parent_id, {"model": cfg.model, "trials": cfg.trials, "study": cfg.study, "data": cfg.data,
                                    "storage": studies.masked(cfg.storage), "seed": cfg.seed, "device": device,
                                    "prune": cfg.prune, **recipe, **{f"fixed.{k}": v for k, v in cfg.base.items()}})
        search(cfg, split, study, device, StudyLog(runs, parent_id, cfg.study).trial, cfg.progress)
        summary = summarise(cfg, study) | {"split": recipe}
        if cfg.seeds and summary["best"] and cfg.model != "logreg":  # lbfgs is deterministic: no spread
            seeds = [cfg.seed + i for i in range(1, cfg.seeds + 1)]
            scores = seed_spread(cfg, summary["best"]["params"], split, seeds, device)
            summary["best"]["seeds"] = {"seeds": seeds, **studies.spread(scores)}
        runs.log_metrics(parent_id, {f"trials_{k}": v for k, v in summary["counts"].items()}
                         | ({"best_value": summary["best"]["value"]} if summary["best"] else {}))
        pictures = study_pngs(study, cfg.out_dir / parent_id / "study")
        if summary["best"]:
            for path in (cfg.output, pictures / "best-params.yaml"):  # the file, and a copy on the run
                if path:
                    write_best(path, cfg, summary)
        runs.log_artifacts(parent_id, pictures, "study")
    return summary


def write_best(path, cfg: TuneConfig, summary: dict) -> None:
    """The best trial's values (over the study's fixed ones) as a params file, with the study and split they came
    from (`run --params` refuses another split of the same data: its test part would hold tuned-on digits)."""
    best = summary["best"]
    record = {"name": summary["study"], **{k: summary[k] for k in ("storage", "model", "counts", "split")}}
    record |= {"best_trial": best["number"], "best_value": best["value"],
               **({"seeds": best["seeds"]} if "seeds" in best else {})}
    hyperparams.write_params(path, cfg.model, {**cfg.base, **best["params"]}, record)


def summarise(plan: StudyPlan, study) -> dict:
    """The study's counts, its best trial and the trial of the shipped defaults (the first one enqueued)."""
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    shipped = next((t for t in complete if t.params == plan.defaults()), None)
    best = max(complete, key=lambda t: t.values[0], default=None)  # the front's most accurate, where two objectives
    front = sorted(study.best_trials, key=lambda t: t.values[1]) if plan.pareto and complete else []
    return {"study": plan.study, "storage": studies.masked(plan.storage), "model": plan.model,
            "counts": studies.counts(study), "best": best and _trial(best), "defaults": shipped and _trial(shipped),
            "front": [_trial(t) for t in front]}


def _trial(trial) -> dict:
    return {"number": trial.number, "value": trial.values[0], "params": dict(trial.params),
            **trial.user_attrs["score"]}
