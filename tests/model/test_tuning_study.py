"""A study on the fixture: its trials never read the held-out test part, the shipped defaults come first, bad
trials are pruned through the training loop's callbacks, and a dead process's trial is failed at once."""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import optuna
import pytest

from digitpipe import studies
from digitpipe.config import StudyPlan
from digitpipe.data import Dataset
from digitpipe.errors import UserError
from digitpipe.records.specs import SPACES, SPECS, flat_values

pytestmark = pytest.mark.slow  # each study trains nets: seconds


def _plan(tmp_path, name="s", **changes) -> StudyPlan:
    return StudyPlan(**{"model": "mlp", "trials": 4, "study": name, "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
                        "base": {"epochs": 3}, "threads": 1, **changes})


def _values(study) -> list[tuple[str, float | None]]:
    return [(t.state.name, t.value) for t in study.trials]


def test_shuffled_test_labels_leave_every_trial_bit_identical(split, tmp_path):
    rng = np.random.default_rng(0)
    shuffled = dataclasses.replace(split, test=Dataset(split.test.images, rng.permutation(split.test.labels)))
    assert (shuffled.test.labels != split.test.labels).any()
    searched = []
    for name, parts in (("plain", split), ("shuffled", shuffled)):
        plan = _plan(tmp_path / name, name=name)
        (tmp_path / name).mkdir()
        searched.append(studies.search(plan, parts, studies.open_study(plan, parts)))
    assert _values(searched[0]) == _values(searched[1])
    assert len(searched[0].trials) == 4 and all(v is not None for _, v in _values(searched[0]) if _ == "COMPLETE")


def test_the_first_trial_is_the_shipped_defaults_and_a_study_stops_at_its_total(split, tmp_path):
    plan = _plan(tmp_path, trials=3)
    study = studies.search(plan, split, studies.open_study(plan, split))
    defaults = {k: v for k, v in flat_values(SPECS["mlp"]).items() if k in SPACES["mlp"]}
    assert study.trials[0].params == defaults
    assert len(study.trials) == 3
    again = studies.search(plan, split, studies.open_study(plan, split))  # resumed: nothing left to do
    assert len(again.trials) == 3


def test_pruning_stops_a_trial_through_the_loops_callback(split, tmp_path):
    """A pruner that prunes everything: every trial stops at its first report, after one of its six epochs, and
    its state is PRUNED."""
    plan = _plan(tmp_path, trials=3, base={"epochs": 6})
    study = studies.open_study(plan, split)
    study.pruner = optuna.pruners.ThresholdPruner(lower=1.01)  # no accuracy reaches it
    studies.search(plan, split, study)
    assert [t.state.name for t in study.trials] == ["PRUNED"] * 3
    assert all(max(t.intermediate_values) == 1 for t in study.trials)


def test_a_study_of_another_split_is_refused_in_one_line(split, digits, tmp_path):
    from digitpipe.data import split_dataset

    plan = _plan(tmp_path)
    studies.open_study(plan, split)
    other = split_dataset(digits, seed=7)
    with pytest.raises(UserError) as caught:
        studies.open_study(plan, other)
    assert str(caught.value) == (
        f"study 's' in sqlite:///{tmp_path}/optuna.db searched another train_digest ({split.train.digest[:16]}, "
        f"not {other.train.digest[:16]}), val_digest ({split.val.digest[:16]}, not {other.val.digest[:16]}); "
        "resume it with the same, or name a new --study")


def test_a_trial_whose_process_died_is_failed_at_once(split, tmp_path):
    plan = _plan(tmp_path)
    study = studies.open_study(plan, split)
    dead = subprocess.Popen(["true"])
    dead.wait()
    trial = study.ask()
    trial.set_user_attr("host", __import__("socket").gethostname())
    trial.set_user_attr("pid", dead.pid)
    assert studies.fail_orphaned_trials(study) == [trial.number]
    assert study.trials[-1].state.name == "FAIL"


def test_a_dead_defaults_trial_is_enqueued_again(split, tmp_path):
    """The summary compares the best with the shipped defaults: a kill -9 of that first trial must not lose it."""
    plan = _plan(tmp_path, trials=2, prune=False)
    study = studies.open_study(plan, split)
    studies.enqueue_defaults(study, plan)
    study.tell(study.ask().number, state=optuna.trial.TrialState.FAIL)  # the defaults' trial, killed
    studies.search(plan, split, study)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[1].params == plan.defaults()


def test_a_field_the_user_fixed_is_not_searched(split, tmp_path):
    plan = _plan(tmp_path, trials=2, base={"epochs": 2, "lr": 0.05, "hidden": 20})
    study = studies.search(plan, split, studies.open_study(plan, split))
    assert all(set(t.params) == set(SPACES["mlp"]) - {"lr", "hidden"} for t in study.trials)


def test_accuracy_against_time_is_a_two_objective_study_without_pruning(split, tmp_path):
    plan = _plan(tmp_path, trials=3, objective="accuracy-time", base={"epochs": 4})
    study = studies.search(plan, split, studies.open_study(plan, split))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert all(t.state.name == "COMPLETE" and len(t.values) == 2 and not t.intermediate_values for t in study.trials)
    assert study.best_trials  # the Pareto front


def test_the_people_objective_adds_the_drawn_and_photographed_validation_digits(split, tmp_path):
    plan = _plan(tmp_path, trials=1, objective="people", base={"epochs": 2})
    (trial,) = studies.search(plan, split, studies.open_study(plan, split)).trials
    score = trial.user_attrs["score"]
    assert 0 < score["val_people_accuracy"] < 1
    assert trial.value == pytest.approx(np.mean([score["val_clean_accuracy"], score["val_perturbed_accuracy"],
                                                 score["val_people_accuracy"]]))
    robust = _plan(tmp_path, "r", trials=1, base={"epochs": 2})
    with pytest.raises(UserError, match="searched another objectives"):  # a study keeps its objective
        studies.open_study(robust.model_copy(update={"study": "s"}), split)
