"""A throwaway PostgreSQL cluster for the tests, on a loopback port (compose.yaml's init script makes the databases).

PostgreSQL refuses to run as root and pytest's temporary folders are private to root, so a test run as root keeps the
cluster in a folder of its own under the system's temporary folder, owned by an unprivileged system user."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PG_USER = "digitpipe-pg"  # the unprivileged system user that owns and runs the cluster when the tests run as root


def pg_bin() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class Cluster:
    folder: Path
    port: int
    password: str  # the superuser's (postgres)
    user: str | None  # the system user it runs as; None: this process's own

    def url(self, database: str = "postgres", role: str = "postgres", password: str | None = None,
            driver: str = "psycopg") -> str:
        """A SQLAlchemy URL (postgresql+DRIVER://...) for `database` as `role`."""
        return (f"postgresql+{driver}://{role}:{password or self.password}@127.0.0.1:{self.port}/{database}")

    def run_script(self, sql: str) -> None:
        """An SQL script run by psql as the superuser, as the postgres image runs its init scripts (statement by
        statement: CREATE DATABASE refuses to run in a transaction)."""
        # not tests.helpers.run: the script goes to psql on stdin
        done = subprocess.run([str(pg_bin() / "psql"), "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", "postgres", "-q"], input=sql, capture_output=True, text=True,
                              env={**os.environ, "PGPASSWORD": self.password}, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr}")


def _as_owner(cluster_user: str | None, *command: str | Path) -> None:
    # not tests.helpers.run: the command runs as the cluster's system user (user=)
    done = subprocess.run([str(c) for c in command], user=cluster_user, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed ({done.returncode}): {done.stderr or done.stdout}")


def _unprivileged_user() -> str | None:
    """PG_USER (created once, a system account without a login shell) when running as root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                       check=True, capture_output=True)
    return PG_USER


def start_cluster(port: int) -> Cluster:
    """initdb in a new temporary folder and start the server on 127.0.0.1:`port` (password logins over TCP only)."""
    bin_dir = pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    user = _unprivileged_user()
    folder = Path(tempfile.mkdtemp(prefix="digitpipe-pg-"))
    cluster = Cluster(folder, port, secrets.token_urlsafe(16), user)
    (folder / "pwfile").write_text(cluster.password)
    if user:
        shutil.chown(folder, user)
        shutil.chown(folder / "pwfile", user)
    _as_owner(user, bin_dir / "initdb", "-D", folder / "data", "-U", "postgres", "--pwfile", folder / "pwfile",
              "--auth-host=scram-sha-256", "--auth-local=reject", "-E", "UTF8", "--no-locale")
    (folder / "pwfile").unlink()
    _start(cluster)
    return cluster


def _start(cluster: Cluster) -> None:
    # the socket goes in the cluster's folder: Debian's /var/run/postgresql belongs to the postgres package's user
    _as_owner(cluster.user, pg_bin() / "pg_ctl", "-D", cluster.folder / "data", "-l", cluster.folder / "server.log",
              "-w", "-t", "60", "-o", f"-c listen_addresses=127.0.0.1 -p {cluster.port} -k {cluster.folder}", "start")


def restart_cluster(cluster: Cluster, while_down: Callable[[], None] = lambda: None) -> None:
    """Stop the server (fast: open sessions are cut, as a crash or an upgrade would), call `while_down`, and start it
    again on the same port."""
    _as_owner(cluster.user, pg_bin() / "pg_ctl", "-D", cluster.folder / "data", "-m", "fast", "-w", "stop")
    try:
        while_down()
    finally:
        _start(cluster)


def stop_cluster(cluster: Cluster) -> None:
    """Stop the server at once (its data is thrown away) and remove its folder."""
    try:
        _as_owner(cluster.user, pg_bin() / "pg_ctl", "-D", cluster.folder / "data", "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(cluster.folder, ignore_errors=True)
