"""The pipeline's Prefect tasks, in one table: each is the library function that does the step, with its policy
(name, retries, caching). Flows call these; code that runs without Prefect calls the same functions directly.

Nothing is cached (NO_CACHE): images travel between the steps, and hashing 47 MB of pixels for a cache key costs
more than the work; no result is persisted, so nothing is written to local storage other machines cannot see."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from digitpipe import approval, batch_scoring, card, data, eda, model_loading, model_run, promotion, robustness
from digitpipe import studies, validation
from digitpipe.errors import UserError
from digitpipe.monitoring import alarms, drift
from digitpipe.tracking import FeedbackStore


def not_a_user_error(_task, _task_run, state) -> bool:
    """Retry a crash or a flaky call (a lost worker, a dropped connection), not bad input, a missing registry
    entry or a lost tracking store: those fail the same way every time."""
    return not isinstance(state.result(raise_on_failure=False), UserError)


def step(function, **policy):
    """`function` as a Prefect task of its own name, without caching or persisted results."""
    return task(function, name=function.__name__, cache_policy=NO_CACHE, persist_result=False, **policy)


ONCE_MORE = {"retries": 1, "retry_condition_fn": not_a_user_error}  # a crash mid-training: continue its checkpoint
# For tasks that talk to a store or a server: two more tries with backoff; computation is not retried.
IO_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": not_a_user_error}

# data
load_dataset = step(data.load_dataset)
check_once = step(validation.check_once)
explore = step(eda.explore)
split_by_protocol = step(data.split_by_protocol)
gather_feedback = step(FeedbackStore.gather_feedback, **IO_RETRIES)
build_suite = step(robustness.build_suite)
build_reference = step(drift.build_reference)

# one model: trained (a retry continues its checkpoint), evaluated, exported, checked and registered in its own run
train_one = step(model_run.train_one, task_run_name="model-{name}", **ONCE_MORE)

# registry
promote_if_earned = step(promotion.promote_if_earned, **IO_RETRIES)
record_verdict = step(promotion.record_verdict, **IO_RETRIES)
decide = step(approval.decide, **IO_RETRIES)
expire = step(approval.expire, **IO_RETRIES)
waiting = step(approval.waiting, **IO_RETRIES)
write_card = step(card.write_card, task_run_name="card-v{version}", **IO_RETRIES)

# tuning
open_study = step(studies.open_study, **IO_RETRIES)
search = step(studies.search)
seed_spread = step(studies.seed_spread)

# scoring
load_model = step(model_loading.load_model, **IO_RETRIES)
score_beside = step(batch_scoring.score_beside, task_run_name="score-{input_path.name}")
record_scored_labels = step(batch_scoring.record_scored_labels, **IO_RETRIES)
batch_alarm = step(alarms.batch_alarm, **IO_RETRIES)
document_batch = step(validation.document_batch)
