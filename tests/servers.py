"""Real servers for the tests, on loopback: `mlflow server` (sqlite + local artifacts) and `prefect server start`;
and the team's servers, started from compose.yaml's commands and settings without containers. Servers are started
with subprocess.Popen, not tests.helpers.run: each runs until stopped, in a session of its own (stop() kills its
process group), its output in a log file or discarded."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers import CliResult, run

BIN = Path(sys.executable).parent  # the virtualenv's console scripts (prefect, mlflow)
ROOT = Path(__file__).resolve().parents[1]


def start_mlflow_server(folder: Path, port: int) -> subprocess.Popen:
    """A real `mlflow server` on 127.0.0.1 with a sqlite backend, without MLflow's job runner as the README starts
    it; returns once it answers /health."""
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{folder}/server.db",
                               "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
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


def shared_test_api(folder: Path) -> str:
    """The URL of the run's temporary Prefect API, whose files live in `folder`: started by the first process that
    asks (the others wait on the lock, then read its URL) as `digitpipe run` starts one (flows.startup), with its
    database in `folder`; it outlives that process, and stop_shared_test_api stops it."""
    from filelock import FileLock

    from flows.startup import free_port, start_temporary_api, wait_until_ready

    url_file, pid = folder / "url", folder / "pid"
    with FileLock(folder / "lock"):
        if not url_file.exists():
            port = free_port()
            with open(folder / "server.log", "w") as log:
                server = start_temporary_api(port, log, PREFECT_SERVER_DATABASE_CONNECTION_URL=(
                    f"sqlite+aiosqlite:///{folder}/prefect.db"))
            pid.write_text(str(server.pid))
            url = f"http://127.0.0.1:{port}/api"
            try:
                wait_until_ready(url, timeout=180)
            except RuntimeError:
                server.kill()
                pid.unlink()
                raise RuntimeError(f"{url} did not start: {(folder / 'server.log').read_text()[-2000:]}") from None
            url_file.write_text(url)
        return url_file.read_text()


def stop_shared_test_api(folder: Path) -> None:
    """The temporary Prefect API that shared_test_api started in `folder`, if any."""
    pid = folder / "pid"
    if pid.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid.read_text()), signal.SIGKILL)


def prefect_cli(*args: str, env: dict, timeout: float = 300) -> CliResult:
    """`prefect ARGS` (never prompting) from the project's folder, as an operator runs it."""
    return run([BIN / "prefect", "--no-prompt", *args], cwd=ROOT, env=env, timeout=timeout)


def prefect_call(env: dict, path: str, body: dict | None = None, method: str | None = None) -> dict | list | None:
    """One call to the Prefect API at env's PREFECT_API_URL (POST with `body`, else GET, unless `method`), with the
    server's auth string where env has one; the decoded answer (None: no content). Like Prefect's own client, it
    tries again while the server answers 503 (its SQLite database busy, as under a loaded CI machine)."""
    import base64

    import requests

    headers = {}
    if auth := env.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    for attempt in range(6):
        response = requests.request(method or ("POST" if body is not None else "GET"), env["PREFECT_API_URL"] + path,
                                    json=body, headers=headers, timeout=30)
        if response.status_code != 503:
            break
        time.sleep(2 ** attempt / 2)
    assert response.status_code in (200, 201, 204), response.text
    return response.json() if response.content else None


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


COMPOSE = ROOT / "compose.yaml"
_VARIABLE = re.compile(r"\$\{(\w+)(?::?[-?][^}]*)?\}")


def compose() -> dict:
    """compose.yaml, parsed (anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text())


def compose_variables(text: str) -> set[str]:
    """The ${VAR} names that `text` takes from compose's environment."""
    return set(_VARIABLE.findall(text))


@dataclass
class Service:
    """A compose service as this machine runs it: argv, the environment compose gives it, its config files."""

    argv: list[str]
    env: dict[str, str]
    files: dict[str, str]  # path (with `places` applied) -> content


def compose_service(name: str, variables: dict[str, str], places: dict[str, str],
                    options: dict[str, str]) -> Service:
    """Service `name` of compose.yaml with its ${VAR}s taken from `variables`, container names (hosts, paths) in
    `places` replaced by this machine's, and the values of the command's `options` (--host, --port) replaced."""

    def local(text: str) -> str:
        text = _VARIABLE.sub(lambda m: variables[m[1]], str(text))
        for container, here in places.items():
            text = text.replace(container, here)
        return text

    stack = compose()
    spec, configs = stack["services"][name], stack.get("configs", {})
    command = spec.get("command", [])  # none: the image's (postgres)
    argv = [str(BIN / word) if i == 0 else options[command[i - 1]] if command[i - 1] in options else local(word)
            for i, word in enumerate(command)]
    env = {key: local(value) for key, value in spec.get("environment", {}).items()}
    files = {local(c["target"]): local(configs[c["source"]]["content"]) for c in spec.get("configs", [])}
    return Service(argv, env, files)


def team_variables() -> dict[str, str]:
    """Fresh secrets for every ${VAR} compose.yaml takes, as an operator's env file would hold (URL-safe)."""
    return {name: secrets.token_hex(16) if name != "PREFECT_API_AUTH_STRING" else f"digitpipe:{secrets.token_hex(16)}"
            for name in compose_variables(COMPOSE.read_text())}


def team_mlflow_service(folder: Path, port: int, variables: dict[str, str], postgres: str) -> Service:
    """compose's mlflow on 127.0.0.1:`port`, PostgreSQL at `postgres` (host:port), artifacts and config in `folder`."""
    return compose_service("mlflow", variables, {"postgres:5432": postgres, "/data": str(folder),
                                                 "/etc/digitpipe": str(folder)},
                           {"--host": "127.0.0.1", "--port": str(port)})


def team_prefect_service(folder: Path, port: int, variables: dict[str, str], postgres: str) -> Service:
    """compose's prefect on 127.0.0.1:`port`, PostgreSQL at `postgres` (host:port)."""
    return compose_service("prefect", variables, {"postgres:5432": postgres},
                           {"--host": "127.0.0.1", "--port": str(port)})


def start_team_mlflow_server(folder: Path, port: int, variables: dict[str, str], postgres: str) -> subprocess.Popen:
    """compose's `mlflow` service without a container: basic-auth app, runs and users in PostgreSQL, artifacts
    served by the server (clients get mlflow-artifacts: URIs); returns once it answers /health."""
    service = team_mlflow_service(folder, port, variables, postgres)
    for path, content in service.files.items():
        Path(path).write_text(content)
    log = open(folder / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    server = subprocess.Popen(service.argv, env={**os.environ, **service.env}, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    wait_until_up(server, f"http://127.0.0.1:{port}/health", "mlflow server")
    return server


def start_team_prefect_server(folder: Path, port: int, variables: dict[str, str], postgres: str) -> tuple[
        subprocess.Popen, dict]:
    """compose's `prefect` service without a container: its database in PostgreSQL, every API call but the health
    check requiring the auth string; returns it and the environment of a client."""
    service = team_prefect_service(folder, port, variables, postgres)
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    # test-only: a home of its own, no UI to build at start (compose serves the UI), and lapsed leases freed within
    # a second instead of 15 (the lease test waits for two)
    env = {**base, **service.env, "PREFECT_HOME": str(folder), "PREFECT_UI_ENABLED": "false",
           "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "1"}
    log = open(folder / "server.log", "w")  # noqa: SIM115 (kept open for the server's lifetime)
    server = subprocess.Popen(service.argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    wait_until_up(server, f"{api}/health", "prefect server", timeout=180)
    return server, {**base, "PREFECT_HOME": str(folder), "PREFECT_API_URL": api,
                    "PREFECT_API_AUTH_STRING": variables["PREFECT_API_AUTH_STRING"]}


def team_places(mlflow_url: str, prefect_api: str) -> dict[str, str]:
    """Where compose's services reach the two servers -> where the tests run them."""
    return {"http://prefect:4200/api": prefect_api, "http://mlflow:5000": mlflow_url}


def start_replicas(service: Service, count: int, folder: Path, env: dict[str, str]) -> list[subprocess.Popen]:
    """`count` processes of a compose service (its replicas) without containers: `env` with the service's own settings
    over it, a PREFECT_HOME each, output in folder/<i>.log."""
    base = {k: v for k, v in env.items() if not k.startswith("PREFECT_API")}  # only what the service sets
    folder.mkdir(parents=True, exist_ok=True)
    replicas = []
    for i in range(count):
        home, log = folder / f"home-{i}", open(folder / f"{i}.log", "w")  # noqa: SIM115 (open while it runs)
        replicas.append(subprocess.Popen(service.argv, env={**base, **service.env, "PREFECT_HOME": str(home)},
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    return replicas


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
