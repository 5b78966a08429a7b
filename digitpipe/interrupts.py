"""A stop asked for by SIGINT (Ctrl-C) or SIGTERM. The command's main thread stops where it is, as Ctrl-C always
did; work on other threads (a net training on a task thread) stops at its next batch or step through `check`, so
that each ends its MLflow run and keeps its last checkpoint. Only the standard library: the training core uses it."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PAUSE_VARIABLE = "DIGITPIPE_TEST_PAUSE_AT"  # the fault tests' named points (tests/test_faults.py)
_asked = threading.Event()
_signum = [0]  # the first signal's number, once asked
_armed = threading.Event()  # within `stoppable`


class Interrupted(KeyboardInterrupt):
    """The work was stopped by a signal; the command exits with 128 + its number (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def line(self) -> str:
        """What the command says last."""
        return f"digitpipe: interrupted by {self.name}"


def end_now(stop: Interrupted) -> None:
    """End the process at once, with the command's last line and code: work that no check reaches (a scikit-learn
    fit) ends with the process, once the run's records are written."""
    sys.stdout.flush()
    print(stop.line, file=sys.stderr, flush=True)
    os._exit(stop.exit_code)


def check() -> None:
    """Raise Interrupted where a stop was asked for; cheap enough for every batch (an Event's flag)."""
    if _asked.is_set():
        raise Interrupted(_signum[0])


def asked() -> Interrupted | None:
    """The stop asked for, if any."""
    return Interrupted(_signum[0]) if _asked.is_set() else None


def _note(signum: int) -> None:
    """The first signal asks for the stop; a second one, while the first one's clean-up runs, ends the process."""
    if _asked.is_set():
        print(f"digitpipe: {signal.Signals(signum).name} again: stopped at once", file=sys.stderr, flush=True)
        os._exit(128 + signum)
    _signum[0] = signum
    _asked.set()


def _stop(signum: int, _frame) -> None:
    _note(signum)
    raise Interrupted(signum)


def _hold(signum: int, _frame) -> None:
    _note(signum)


def _install(handler) -> dict:
    """`handler` for both signals at once (none arrives between the two); returns the previous ones."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        return {signum: signal.signal(signum, handler if callable(handler) else handler[signum])
                for signum in SIGNALS}
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


@contextlib.contextmanager
def stoppable() -> Iterator[list[Interrupted]]:
    """SIGINT and SIGTERM raise Interrupted in the main thread and stop other threads at their next check, while
    the block runs (from the main thread only: Python delivers signals there); the list yielded holds the stop, if
    one came, once the block is over."""
    stops: list[Interrupted] = []
    if threading.current_thread() is not threading.main_thread():
        yield stops
        return
    previous = _install(_stop)
    _armed.set()
    try:
        yield stops
    finally:
        _armed.clear()
        _install(previous)
        stops.extend(filter(None, [asked()]))
        _asked.clear()


def rearm() -> None:
    """Within `stoppable`, take SIGTERM back from Prefect's flow engine, which turns it into an exception of its
    own that no task thread hears (a deployment's run, where the runner cancels by SIGTERM, keeps Prefect's)."""
    if _armed.is_set() and threading.current_thread() is threading.main_thread():
        _install(_stop)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A signal waits until the block is done, then stops the work: moving the two aliases and recording the
    verdict are one step to a user, never half done (a second signal still ends the process at once)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not _stop:
        yield
        return
    previous = _install(_hold)
    try:
        yield
    finally:
        _install(previous)
    check()


def reached(point: str) -> bool:
    """For the fault tests: with DIGITPIPE_TEST_PAUSE_AT=`point`, say on stderr that the work got there (a test
    then signals while the work that follows runs); whether it did."""
    if os.environ.get(PAUSE_VARIABLE) != point:
        return False
    print(f"digitpipe: paused at {point}", file=sys.stderr, flush=True)
    return True


def pause_at(point: str) -> None:
    """For the fault tests: at `point` (see `reached`), wait here (up to a minute) for a signal, so that a test
    stops the command at a named point, not at a guessed time."""
    if not reached(point):
        return
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        check()
        time.sleep(0.02)
