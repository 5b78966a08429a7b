"""Prefect task wrappers: a few lines each, calling digitpipe functions."""

from digitpipe.errors import UserError


def not_a_user_error(_task, _task_run, state) -> bool:
    """Retry a crash or a flaky call (a lost worker, a dropped connection), not bad input, a missing registry
    entry or a lost tracking store: those fail the same way every time."""
    return not isinstance(state.result(raise_on_failure=False), UserError)


# For tasks that talk to a store or a server: two more tries with backoff; computation is not retried.
IO_RETRIES = {"retries": 2, "retry_delay_seconds": [2, 10], "retry_condition_fn": not_a_user_error}
