"""Shared fixtures: the committed MNIST sample, one temporary Prefect API for the whole run (all pytest-xdist
workers), a session's MLflow store and `mlflow server`, the whole zoo's pipeline run that four end-to-end files
inspect (`first_run`, trained once: see pytest_xdist_make_scheduler), and the CLI run in this process
(`digitpipe_cli`). Helpers that are plain functions live in tests/helpers.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# pytest-xdist's workers share the machine: each takes its share of the cores for torch, onnxruntime and BLAS, and so
# do the subprocesses it starts (digitpipe.runtime.core_share reads OMP_NUM_THREADS). Every worker taking every core
# made the in-process pipeline runs up to 5x slower. Set before numpy loads its BLAS (hence not
# digitpipe.runtime.available_cores: that module imports numpy).
if workers := os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // int(workers))))

from digitpipe.data import load_dataset  # noqa: E402 (after the thread share)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/mnist-1000"
SHARED_MNIST = ROOT.parent / "shared/mnist"
TEST_API_FOLDER = "DIGITPIPE_TEST_PREFECT_API"  # the environment variable that names the run's Prefect API folder

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def fixture_dir() -> Path:
    """1,000 real MNIST training images (stratified), IDX gz."""
    return FIXTURE


@pytest.fixture(scope="session")
def digits():
    """The fixture as a Dataset."""
    return load_dataset(FIXTURE)


@pytest.fixture(scope="session")
def logreg_onnx(digits, tmp_path_factory) -> Path:
    """A logistic regression fitted on the fixture and exported as digitpipe exports it: a .onnx file that
    `digitpipe serve --model FILE` answers with, without a store or a pipeline run."""
    from sklearn.linear_model import LogisticRegression

    from digitpipe.export import export_onnx

    model = LogisticRegression(max_iter=200).fit(digits.images.reshape(-1, 784) / 255.0, digits.labels)
    model.coef_ /= 255.0  # raw pixels in, as digitpipe.baseline.fit_logreg folds it
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "logreg.onnx")


def pytest_configure(config) -> None:
    """The run's controller (or its only process) names the folder of the run's temporary Prefect API: the
    pytest-xdist workers it starts inherit the name."""
    if not hasattr(config, "workerinput"):
        os.environ[TEST_API_FOLDER] = tempfile.mkdtemp(prefix="digitpipe-prefect-api-")


def pytest_unconfigure(config) -> None:
    """The run is over: its temporary Prefect API stops and its folder goes."""
    if not hasattr(config, "workerinput") and (folder := os.environ.pop(TEST_API_FOLDER, None)):
        from tests.servers import stop_shared_test_api

        stop_shared_test_api(Path(folder))
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_api():
    """One temporary Prefect API for the whole run, shared by the pytest-xdist workers (each start costs ~10
    CPU-seconds, most of it sqlite migrations): the first worker that needs it starts it, the run's end stops it.
    Exported as PREFECT_API_URL, as a user's environment names a server: for the subprocesses tests start
    (`digitpipe run` reuses an API only when the environment or profile names one, else it starts its own) and, with
    Prefect's global settings read again, for this process's flows and every thread they start."""
    from prefect.context import refresh_global_settings_context
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from tests.servers import shared_test_api

    url = shared_test_api(Path(os.environ[TEST_API_FOLDER]))
    with pytest.MonkeyPatch.context() as session_env:
        session_env.setenv("PREFECT_API_URL", url)  # put back as it was after the session
        refresh_global_settings_context()
        yield url
        APILogWorker.drain_all()  # this process's last logs and events reach the API before it stops
        EventsWorker.drain_all()
    refresh_global_settings_context()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory, testrun_uid, worker_id) -> str:
    """A sqlite-backed MLflow tracking URI shared by the session: a copy of one store migrated once for every
    pytest-xdist worker of this run (MLflow migrates a fresh store for seconds)."""
    from filelock import FileLock

    from digitpipe.tracking import open_store

    run_folder = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # a worker's folder is in the run's: the template too, removed with the run's
        run_folder = run_folder.parent
    template = run_folder / f"mlflow-{testrun_uid}.db"
    with FileLock(f"{template}.lock"):
        if not template.exists():
            building = template.with_suffix(".building")
            open_store(f"sqlite:///{building}")
            building.rename(template)
    folder = tmp_path_factory.mktemp("mlflow")
    shutil.copyfile(template, folder / "mlflow.db")
    return f"sqlite:///{folder}/mlflow.db"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """A real `mlflow server` on loopback (sqlite, local artifacts) for the session: tests/servers.py."""
    from flows.startup import free_port
    from tests.servers import start_mlflow_server, stop

    folder, port = tmp_path_factory.mktemp("mlflow-server"), free_port()
    server = start_mlflow_server(folder, port)
    yield f"http://127.0.0.1:{port}"
    stop(server)


@pytest.fixture(scope="session")
def tracking(mlflow_store, tmp_path_factory):
    """The TrackingConfig of the files in FIRST_RUN_FILES, on the session's MLflow store. No accuracy floor: nets of 3
    epochs on 1,000 digits stay below the shipped 0.85, and the tests judge the gate's other clauses."""
    from digitpipe.config import PromotionConfig, TrackingConfig

    return TrackingConfig(tracking_uri=mlflow_store, experiment="pipeline-test", registered_model="digits-test",
                          artifact_location=str(tmp_path_factory.mktemp("artifacts")),
                          promotion=PromotionConfig(min_accuracy=0.0))


@pytest.fixture(scope="session")
def first_run(prefect_api, fixture_dir, tracking, tmp_path_factory):
    """The whole zoo (nets for 3 epochs) on the fixture, (its PipelineConfig, its summary): the run the files in
    FIRST_RUN_FILES inspect, trained once for all of them (they are one pytest-xdist work unit, see below)."""
    from digitpipe.config import PipelineConfig
    from flows.training import training_flow

    out = tmp_path_factory.mktemp("run1")
    cfg = PipelineConfig(data=fixture_dir, epochs=3, out_dir=out, summary=out / "summary.json", tracking=tracking)
    summary = training_flow(cfg)
    return cfg, summary


@pytest.fixture
def chromium():
    """Debian's Chromium, headless, driven by Playwright, and the folder its screenshots go to
    ($DIGITPIPE_SCREENSHOTS); skipped where it is not installed, failed under CI (.ci/run installs it)."""
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("DIGITPIPE_SCREENSHOTS", ROOT / "outputs" / "screenshots")).resolve()
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser, shots
        browser.close()


@pytest.fixture
def digitpipe_cli(monkeypatch, capsys):
    """Runs `digitpipe ARGS...` in this process (`cli.run_cli`, the console script without its exit) and returns a
    CliResult: the exit code and what the command printed on stdout and stderr (not what the test printed before).
    `tracking_uri=URI` points the command's MLflow at a store through MLFLOW_TRACKING_URI, for the rest of the test,
    as a user's environment would."""
    import cli
    from tests.helpers import CliResult

    def run(*args, tracking_uri: str | None = None) -> CliResult:
        if tracking_uri is not None:
            monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
        monkeypatch.setattr("sys.argv", ["digitpipe", *map(str, args)])
        for quieted in ("PREFECT_LOGGING_LEVEL", "MLFLOW_LOGGING_LEVEL", "DASK_LOGGING__DISTRIBUTED"):
            if quieted not in os.environ:  # the CLI sets these for itself: unset again at the test's end, so that
                monkeypatch.setenv(quieted, "")  # later tests' subprocesses log as they would on their own
                monkeypatch.delenv(quieted)
        capsys.readouterr()  # what came before the command is not its output
        code = cli.run_cli()
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def pg_cluster():
    """A throwaway PostgreSQL cluster on a loopback port for the session (tests/pg.py), removed after."""
    from flows.startup import free_port
    from tests.pg import pg_bin, start_cluster, stop_cluster

    if pg_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's postgresql (see .ci/run)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    cluster = start_cluster(free_port())
    yield cluster
    stop_cluster(cluster)


@pytest.fixture(scope="session")
def team_variables(pg_cluster) -> dict:
    """Fresh secrets for compose.yaml's variables (an operator's env file), and its PostgreSQL init script run on the
    test cluster: the roles and databases the servers use."""
    from tests.servers import compose, compose_service, team_variables

    variables = team_variables()
    init = compose_service("postgres", variables, {}, {}).files["/docker-entrypoint-initdb.d/databases.sql"]
    pg_cluster.run_script(init)
    assert compose()["services"]["postgres"]["image"] == "postgres:15"
    return variables


@pytest.fixture(scope="session")
def team_mlflow(pg_cluster, team_variables, tmp_path_factory) -> dict:
    """compose's basic-auth MLflow server on PostgreSQL (runs and users in two databases) with the team's three
    accounts: admin, pipeline (logs runs, registers models, moves aliases) and reader (default_permission READ only).
    Yields its URL, the accounts' passwords and its log."""
    import secrets

    from flows.startup import free_port
    from tests.servers import add_mlflow_account, start_team_mlflow_server, stop

    passwords = {"admin": team_variables["MLFLOW_AUTH_ADMIN_PASSWORD"],
                 "pipeline": team_variables["MLFLOW_PIPELINE_PASSWORD"], "reader": secrets.token_urlsafe(16)}
    port, folder = free_port(), tmp_path_factory.mktemp("team-mlflow")
    server = start_team_mlflow_server(folder, port, team_variables,
                                      f"127.0.0.1:{pg_cluster.port}")  # compose's postgres:5432
    url = f"http://127.0.0.1:{port}"
    add_mlflow_account(url, passwords["admin"], "pipeline", passwords["pipeline"],
                       {"experiment": "EDIT", "registered_model": "MANAGE"})
    add_mlflow_account(url, passwords["admin"], "reader", passwords["reader"], {})
    yield {"url": url, "passwords": passwords, "log": folder / "server.log"}
    stop(server)


@pytest.fixture(scope="session")
def team_prefect(pg_cluster, team_variables, tmp_path_factory) -> dict:
    """compose's Prefect server on PostgreSQL (asyncpg) that requires an auth string; yields a client's environment."""
    from flows.startup import free_port
    from tests.servers import start_team_prefect_server, stop

    server, env = start_team_prefect_server(tmp_path_factory.mktemp("team-prefect"), free_port(), team_variables,
                                            f"127.0.0.1:{pg_cluster.port}")  # compose's postgres:5432
    yield env
    stop(server)


# the files that inspect the session's `first_run`, in this order (test_scoring_flow.py's first test counts the scoring
# runs in the experiment)
FIRST_RUN_FILES = ("test_training_run.py", "test_scoring_flow.py", "test_int8.py", "test_concurrency.py")
# the end-to-end files, the longest first (a minute or more each, part of it waiting on servers), then the units
SLOWEST_FILES = ("test_team.py", "test_servers.py", *FIRST_RUN_FILES, "test_deployments.py", "test_reliability.py",
                 "test_faults.py", "test_faults_io.py",
                 "test_serving.py", "test_serving_fuzz.py", "test_serving_page.py", "test_serving_timeouts.py",
                 "test_run_command.py", "test_imports.py", "test_registered_model.py", "test_gate.py", "test_loop.py")


def pytest_collection_modifyitems(items) -> None:
    """The slowest files first, so that pytest-xdist's workers (one file each at a time) start them at once instead
    of ending the run with one of them alone."""
    def rank(item) -> int:
        name = item.path.name
        return SLOWEST_FILES.index(name) if name in SLOWEST_FILES else len(SLOWEST_FILES)

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under --dist loadfile, the files in FIRST_RUN_FILES are one work unit, on one worker: a session fixture is one
    per pytest-xdist worker, so that `first_run` is trained once, not once in every worker that runs one of them."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FirstRunTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "first_run" if Path(scope).name in FIRST_RUN_FILES else scope

    return FirstRunTogether(config, log)
