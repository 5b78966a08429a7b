"""Real servers for the tests, on loopback: `mlflow server` (sqlite + local artifacts) and `prefect server start`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent  # the virtualenv's console scripts (prefect, mlflow)


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1 with a sqlite backend; returns once it answers /health."""
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder}/server.db",
                               "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_until_up(server, f"http://127.0.0.1:{port}/health", "mlflow server")
    return server


def start_prefect_server(folder: Path, port: int) -> tuple[subprocess.Popen, dict]:
    """A real `prefect server start` on 127.0.0.1 with its own home and sqlite database; returns it and the
    environment a client needs (PREFECT_API_URL and friends)."""
    env = {**os.environ, "PREFECT_HOME": str(folder), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{folder}/prefect.db",
           "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    env.pop("PREFECT_API_URL", None)
    log = open(folder / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    wait_until_up(server, f"{api}/health", "prefect server", timeout=180)
    return server, {**env, "PREFECT_API_URL": api}


def wait_until_up(server: subprocess.Popen, url: str, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            assert server.poll() is None, f"{what} exited with {server.returncode}"
            time.sleep(0.5)
    raise TimeoutError(f"{what} did not start within {timeout} s")


def stop(server: subprocess.Popen) -> None:
    """The server and its worker processes, at once."""
    os.killpg(server.pid, signal.SIGKILL)
    server.wait()
