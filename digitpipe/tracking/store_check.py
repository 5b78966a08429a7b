"""Opening an MLflow store, checked before any work: a store digitpipe cannot use (MLflow's file store) or cannot
reach (a tracking or database server that refuses, or never answers) is one line within seconds; and a write that
a local store refused later (read-only, full) is one line naming the store."""

from __future__ import annotations

import logging
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow import MlflowClient

from digitpipe.config import sqlite_file
from digitpipe.errors import UserError
from digitpipe.files import causes, first_line, writable_database

# The check's limit on each try, a server's connection or answer. MLflow's own: its database engine retries for
# ~100 s before it gives up; its HTTP client waits as long as MLFLOW_HTTP_REQUEST_TIMEOUT on each of its retries.
ANSWER_SECONDS = 3
HTTP_CHECK = {"MLFLOW_HTTP_REQUEST_TIMEOUT": ANSWER_SECONDS, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": 1}
# sqlite's words for a write the file system refused (read-only file or folder, full disk, no journal file)
REFUSED_WRITES = ("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_CANTOPEN", "SQLITE_IOERR")


def checked_client(uri: str) -> MlflowClient:
    """An MLflow client on `uri`, its store asked for one experiment: a UserError where it cannot be used."""
    _quiet_logs()
    if _file_store(uri):
        raise UserError(f"the MLflow tracking store {uri} is a folder (MLflow's file store, no model registry): "
                        "use a database, sqlite:///PATH/mlflow.db, or a tracking server, http://HOST:PORT")
    try:
        _reach_database(uri)
        client = MlflowClient(uri)
        with _quick_http():
            client.search_experiments(max_results=1)
    except Exception as exc:  # MlflowException, requests' and sqlalchemy's errors: all mean "no store"
        raise UserError(f"cannot reach the MLflow tracking store at {shown(uri)} ({_why(exc)}): start it, or point "
                        "tracking_uri (mlflow.yaml, MLFLOW_TRACKING_URI) at one that runs") from None
    return client


def _why(exc: BaseException) -> str:
    """What the deepest cause says, in words where MLflow's line would be cut before it says it."""
    deepest = list(causes(exc))[-1]
    if isinstance(deepest, ConnectionRefusedError):
        return "connection refused"
    if isinstance(deepest, TimeoutError):
        return f"no answer within {ANSWER_SECONDS} s, asked twice"
    return first_line(deepest if isinstance(deepest, OSError) else exc, 160)  # an OSError: a name not found


def shown(uri: str) -> str:
    """`uri` with its password, if it holds one, hidden: it goes into error lines and logs."""
    parts = urllib.parse.urlsplit(uri)
    if not parts.password:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


def _file_store(uri: str) -> bool:
    """A path or file: URI, which MLflow 3 opens as its file store (in "maintenance mode", and with no registry)."""
    return urllib.parse.urlsplit(uri).scheme in ("", "file") and not uri.startswith("databricks")


def _reach_database(uri: str) -> None:
    """Connect once to a PostgreSQL or MySQL store's server, within ANSWER_SECONDS (both drivers' connect_timeout
    covers a server that accepts and never answers): MLflow's engine would retry for ~100 s."""
    if urllib.parse.urlsplit(uri).scheme.split("+")[0] not in ("postgresql", "mysql"):  # postgresql+psycopg too
        return
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": ANSWER_SECONDS},
                                      poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


@contextmanager
def _quick_http() -> Iterator[None]:
    """MLflow's HTTP limits, lowered for the check alone (a smaller value the user set wins): a server that never
    answers fails the command after two tries of ANSWER_SECONDS, not after minutes of MLflow's retries. MLflow
    reads them on each request; the run's own requests keep the limits of flows.startup.ENVIRONMENT."""
    saved = {key: os.environ.get(key) for key in HTTP_CHECK}
    for key, cap in HTTP_CHECK.items():
        given = saved[key]
        os.environ[key] = str(min(cap, int(given)) if given and given.isdigit() else cap)
    retries = logging.getLogger("urllib3.connectionpool")  # its "Retrying (...)" line: the check's error says it all
    level = retries.level
    retries.setLevel(logging.ERROR)
    try:
        yield
    finally:
        retries.setLevel(level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def refused_write(exc: BaseException, uris: list[str]) -> UserError | None:
    """`exc` as one line naming the store when a local store among `uris` refused a write (sqlite's error among its
    causes); None for any other error."""
    refusal = next((e for e in causes(exc) if _refused(e)), None)
    stores = [uri for uri in uris if sqlite_file(uri) is not None]
    if refusal is None or not stores:
        return None
    for uri in stores:  # the file system says why: a read-only or full folder, a file not this user's
        try:
            writable_database(sqlite_file(uri), f"the MLflow store {uri}")
        except UserError as refused:
            return refused
    return UserError(f"the MLflow store {stores[0]} refused a write ({first_line(refusal, 120)})")


def _refused(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.Error) and (getattr(exc, "sqlite_errorname", None) or "").startswith(
        REFUSED_WRITES)


class _DropRefusedWrites(logging.Filter):
    """MLflow logs a database error with its traceback (and the SQL) before raising it; a write the file system
    refused reaches the user as one line naming the store instead (refused_write)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and any(_refused(e) for e in causes(record.exc_info[1])))


def _quiet_logs() -> None:
    """Before the first client: it creates a new store's tables, saying so at INFO."""
    for noisy in ("mlflow", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    database_log = logging.getLogger("mlflow.store.db.utils")
    if not any(isinstance(f, _DropRefusedWrites) for f in database_log.filters):
        database_log.addFilter(_DropRefusedWrites())
