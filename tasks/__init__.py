"""The pipeline's Prefect tasks, in one table: each is the library function that does the step, with its policy
(name, retries, caching). Flows call these; code that runs without Prefect calls the same functions directly.

Nothing is cached (NO_CACHE): images travel between the steps, and hashing 47 MB of pixels for a cache key costs
more than the work; no result is persisted, so nothing is written to local storage other machines cannot see."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from digitpipe import approval, batch_scoring, card, eda, evaluate, export, promotion, robustness, studies, validation, zoo
from digitpipe.data import load_dataset, split_by_protocol
from digitpipe.errors import UserError
from digitpipe.monitoring import alarms, drift, feedback
from digitpipe.tracking import Registry


def not_a_user_error(_task, _task_run, state) -> bool:
    """Retry a crash or a flaky call (a lost worker, a dropped connection), not bad input, a missing registry
    entry or a lost tracking store: those fail the same way every time."""
    return not isinstance(state.result(raise_on_failure=False), UserError)


def step(function, name: str, **policy):
    """`function` as a Prefect task called `name`, without caching or persisted results."""
    return task(function, name=name, cache_policy=NO_CACHE, persist_result=False, **policy)


ONCE_MORE = {"retries": 1, "retry_condition_fn": not_a_user_error}  # a crash mid-training: continue its checkpoint
# For tasks that talk to a store or a server: two more tries with backoff; computation is not retried.
IO_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": not_a_user_error}

# data
load_data = step(load_dataset, "load_data")
validate_data = step(validation.check_once, "validate_data")
explore_data = step(eda.explore, "explore_data")
split_data = step(split_by_protocol, "split_data")
gather_feedback = step(feedback.gather, "gather_feedback", **IO_RETRIES)
perturb_held_out = step(robustness.build_suite, "perturb_held_out")
describe_training_part = step(drift.build_reference, "describe_training_part")

# one model
train_model = step(zoo.train_model, "train_model", task_run_name="train-{name}", **ONCE_MORE)
evaluate_model = step(evaluate.evaluate_model, "evaluate_model")
export_model = step(export.export_checked, "export_model")
check_robustness = step(robustness.check_robustness, "check_robustness")
record_monitor_reference = step(drift.write_reference, "record_monitor_reference")

# registry
register_model = step(Registry.register_onnx, "register_model", **IO_RETRIES)
promote_champion = step(promotion.promote_if_earned, "promote_champion", **IO_RETRIES)
record_verdict = step(promotion.record_verdict, "record_verdict", **IO_RETRIES)
decide_approval = step(approval.decide, "decide_approval", **IO_RETRIES)
expire_approvals = step(approval.expire, "expire_approvals", **IO_RETRIES)
waiting_approvals = step(approval.waiting, "waiting_approvals", **IO_RETRIES)
write_card = step(card.write_card, "write_card", task_run_name="card-v{version}", **IO_RETRIES)

# tuning
open_study = step(studies.open_study, "open_study", **IO_RETRIES)
search_study = step(studies.search, "search_study")
retrain_seeds = step(studies.seed_spread, "retrain_seeds")

# scoring
fetch_model = step(batch_scoring.fetch_model, "fetch_model", **IO_RETRIES)
score_one = step(batch_scoring.score_beside, "score_one", task_run_name="score-{input_path.name}")
keep_feedback = step(batch_scoring.record_scored_labels, "keep_feedback", **IO_RETRIES)
check_batch = step(alarms.batch_alarm, "check_batch", **IO_RETRIES)
document_batch = step(validation.document_batch, "document_batch")
