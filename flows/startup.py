"""Start-up and shut-down of a process that runs flows: the environment, the Prefect API (the server configured
at PREFECT_API_URL, or a temporary one), a new local MLflow store, and the fast exit.

Prefect's own temporary server starts only when the first flow runs, after every heavy import, and takes seconds
to stop. Started here as the run's first step, in its own process, its start-up overlaps the pipeline's imports,
and it is stopped at once when the run is over (its sqlite database is transactional, so nothing is lost). A new
sqlite store is migrated by a subprocess beside those imports too. The costs: bench/README.md.
This module imports nothing from Prefect or MLflow: it must cost nothing before they are asked for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

ENVIRONMENT = {
    # Prefect's throwaway local API migrates a sqlite db on first start: longer than the 20 s default
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    # MLflow retries HTTP calls with backoff; its defaults wait minutes on a dead server, these a few seconds
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # clean command-line and CI logs
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",  # a server's "View run" lines too
}
QUIET = {"PREFECT_LOGGING_LEVEL": "WARNING", "MLFLOW_LOGGING_LEVEL": "WARNING",
         "DASK_LOGGING__DISTRIBUTED": "warning"}  # read by each library as it configures its logging on import


def set_environment(quiet: bool = False) -> None:
    """The process's defaults for Prefect, MLflow and great-expectations (a variable the user set wins); `quiet`:
    without their own log lines (a local Dask cluster's start and stop lines too)."""
    for key, value in {**ENVIRONMENT, **(QUIET if quiet else {})}.items():
        os.environ.setdefault(key, value)


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, as Prefect itself would find it."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    import tomllib

    home = Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect"))
    try:
        profiles = tomllib.loads((home / "profiles.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "ephemeral")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL")


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """A block in which PREFECT_API_URL names the run's Prefect API (yielded): the configured server, or a
    temporary one started now in a subprocess (call `wait_until_ready` before the first flow)."""
    url = configured_api_url()
    if url:
        yield url
        return
    port = free_port()
    server = start_temporary_api(port)
    url = f"http://127.0.0.1:{port}/api"
    os.environ["PREFECT_API_URL"] = url  # this process, and Dask workers it starts, use the temporary server
    try:
        yield url
    finally:
        _flush_prefect_clients()
        os.environ.pop("PREFECT_API_URL", None)
        server.terminate()
        try:  # uvicorn's graceful stop waits seconds on Prefect's background services; nothing is in flight now
            server.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def start_temporary_api(port: int, log: IO | None = None, **settings: str) -> subprocess.Popen:
    """Prefect's temporary server (ephemeral: its own services, a sqlite database) on 127.0.0.1:`port`, started in
    a subprocess as Prefect starts it; its output to `log` (default: this process's), `settings` added to its
    environment (PREFECT_SERVER_DATABASE_CONNECTION_URL: another database than PREFECT_HOME's)."""
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **settings}
    # Its own session: a terminal's ^C reaches the command, which then stops the API itself, not the API mid-run.
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"], env=env, stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT if log else None, start_new_session=True,
        preexec_fn=_dies_with_this_process())


def _dies_with_this_process():
    """For a child, between fork and exec: SIGTERM to it once this process is gone, even by kill -9 (Linux's
    parent-death signal); None elsewhere, where only this process's own exit stops it. Resolved here, so that the
    child only makes one C call (nothing to import after a fork)."""
    import ctypes
    import signal

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # this process died before the signal was armed
            os._exit(0)

    return arm


def wait_until_ready(url: str, timeout: float = 120.0) -> None:
    """Block until the API at `url` answers its health check (a first start migrates its database: seconds)."""
    import urllib.request  # here, not at the top: every command imports this module, and --help needs none of it

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the temporary Prefect API at {url} did not start within {timeout:.0f} s")
        time.sleep(0.05)


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _flush_prefect_clients() -> None:
    """Send the logs and events Prefect still holds in its background workers while the server is up."""
    if "prefect" not in sys.modules:  # the run ended before Prefect was imported: nothing to send
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):  # a failed flush must not hide the run's own outcome
            worker.drain_all(timeout=5)


def prepare_store(uri: str) -> StoreCreation | StoreCheck | None:
    """What the store needs before the first flow: a new local sqlite store created (its migrations take seconds)
    by a subprocess beside this one's imports; any other store (a server, a folder) checked. Call .wait() before the
    first tracking call. None when there is nothing to do. A local store that cannot be written (a read-only or
    full folder) is refused now, before any work."""
    from digitpipe.config import sqlite_file  # the config is built by then: no cost
    from digitpipe.files import writable_database

    if (database := sqlite_file(uri)) is None:
        return StoreCheck(uri)
    writable_database(database, f"the MLflow store {uri}")
    if database.exists():
        return None
    return StoreCreation(subprocess.Popen(
        [sys.executable, "-m", "flows.startup", "prepare-store", uri], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "MLFLOW_LOGGING_LEVEL": "WARNING"}))


@dataclasses.dataclass(frozen=True)
class StoreCheck:
    """A store that is not a local sqlite file (prepare_store)."""

    uri: str

    def wait(self) -> None:
        """The store checked in this process once its imports are done (the client kept for the flow): where it
        cannot be used or reached, one line before any flow starts, so that no flow run is left half-reported."""
        from digitpipe.tracking import open_store

        open_store(self.uri)


class StoreCreation:
    """The subprocess that creates a new local store (prepare_store)."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process

    def wait(self) -> None:
        """Block until the store is made; its one line (a UserError) where it could not be."""
        from digitpipe.errors import UserError

        said = self.process.communicate()[0].strip().splitlines()
        if self.process.returncode:
            raise UserError(said[-1] if said else f"the MLflow store creation exited {self.process.returncode}")


def _create_store(uri: str) -> int:
    """What the subprocess of prepare_store runs: the store made, or one line on stdout and exit 2."""
    from filelock import FileLock

    from digitpipe.config import sqlite_file
    from digitpipe.errors import UserError
    from digitpipe.files import first_line
    from digitpipe.tracking import open_store

    try:
        with FileLock(f"{sqlite_file(uri)}.create.lock"):  # two commands started at once
            open_store(uri)
    except Exception as exc:  # a UserError's line as it is; anything else said once, not as a traceback
        print(exc if isinstance(exc, UserError) else f"cannot create the MLflow store {uri} ({first_line(exc, 160)})")
        return 2
    return 0


def exit_now(code: int) -> None:
    """Exit after the atexit handlers, skipping the interpreter's teardown of every module: with Prefect, MLflow
    and great-expectations loaded it takes seconds and does nothing a user needs."""
    import atexit

    atexit._run_exitfuncs()  # CPython's own exit handlers (Prefect's log drain, temporary files)
    skip_teardown(code)


def skip_teardown(code: int) -> None:
    """End the process now, its output flushed, without running the exit handlers or the modules' teardown."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__" and sys.argv[1:2] == ["prepare-store"]:  # see prepare_store
    sys.exit(_create_store(sys.argv[2]))
