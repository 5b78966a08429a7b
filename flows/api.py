"""The Prefect API a command-line run talks to: the server configured at PREFECT_API_URL, or a temporary one.

Prefect's own temporary server starts only when the first flow runs, after every heavy import, and takes seconds
to stop. Started here as the run's first step, in its own process, its start-up overlaps the pipeline's imports,
and it is stopped at once when the run is over (its sqlite database is transactional, so nothing is lost).
This module imports nothing from Prefect: it must cost nothing before the server is asked for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, as Prefect itself would find it."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
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
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "error", "--lifespan", "on"], env=env, stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT if log else None)


def wait_until_ready(url: str, timeout: float = 120.0) -> None:
    """Block until the API at `url` answers its health check (a first start migrates its database: seconds)."""
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
