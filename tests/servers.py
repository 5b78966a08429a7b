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


def start_team_mlflow_server(folder: Path, port: int, backend_uri: str, auth_db_uri: str,
                             admin_password: str) -> subprocess.Popen:
    """`mlflow server --app-name basic-auth` on 127.0.0.1: runs and users in PostgreSQL (`backend_uri`,
    `auth_db_uri`), artifacts served by the server (clients get mlflow-artifacts: URIs). Its auth ini holds no
    secret: the admin's password and the CSRF key come from the environment, as an operator's would."""
    ini = folder / "basic_auth.ini"
    # a password check costs ~0.1 s (scrypt) and a pipeline run makes hundreds of calls: cache good logins for 60 s
    ini.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {auth_db_uri}\nadmin_username = admin\n"
                   "auth_cache_ttl_seconds = 60\n")
    env = {**os.environ, "MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
           "MLFLOW_FLASK_SERVER_SECRET_KEY": os.urandom(16).hex()}
    log = open(folder / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
                               "--host", "127.0.0.1", "--port", str(port), "--backend-store-uri", backend_uri,
                               "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_until_up(server, f"http://127.0.0.1:{port}/health", "mlflow server")
    return server


def start_team_prefect_server(folder: Path, port: int, database_url: str, auth_string: str) -> tuple[
        subprocess.Popen, dict]:
    """`prefect server start` on 127.0.0.1 with its database in PostgreSQL (`database_url`, postgresql+asyncpg)
    and every API call but the health check requiring `auth_string`; returns it and the environment of a client."""
    env = {**os.environ, "PREFECT_HOME": str(folder), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_API_DATABASE_CONNECTION_URL": database_url, "PREFECT_SERVER_API_AUTH_STRING": auth_string,
           "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    env.pop("PREFECT_API_URL", None)
    log = open(folder / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    wait_until_up(server, f"{api}/health", "prefect server", timeout=180)
    client = {k: v for k, v in env.items() if k not in ("PREFECT_API_DATABASE_CONNECTION_URL",
                                                         "PREFECT_SERVER_API_AUTH_STRING")}
    return server, {**client, "PREFECT_API_URL": api, "PREFECT_API_AUTH_STRING": auth_string}


def add_mlflow_account(url: str, admin_password: str, username: str, password: str,
                       grants: dict[str, str]) -> None:
    """A user of a basic-auth MLflow server, created by its admin through the auth REST API, with a permission on
    every resource of each type in `grants` ({"experiment": "EDIT", ...}); what is not granted falls back to the
    server's default_permission."""
    import requests

    calls = [("/api/2.0/mlflow/users/create", {"username": username, "password": password})]
    calls += [("/api/3.0/mlflow/users/permissions/grant", {"username": username, "resource_type": kind,
                                                           "resource_id": "*", "permission": permission})
              for kind, permission in grants.items()]
    for path, body in calls:
        response = requests.post(f"{url}{path}", json=body, auth=("admin", admin_password), timeout=30)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
