"""compose.yaml, the team stack (no Docker engine here): what the tests start without containers is what it says
(tests/servers.py reads it), ports stay on loopback, secrets come only from the environment, two workers per pool."""

import re

import yaml

from tests.conftest import ROOT
from tests.servers import BIN, compose, team_mlflow_service, team_prefect_service, team_variables

SERVICES = compose()["services"]
VARIABLES = team_variables()
# a setting (KEY: value, KEY=value) or SQL (PASSWORD 'value') whose name says secret
SECRET_SETTING = re.compile(r"(?<![\w{])\w*(PASSWORD|SECRET_KEY|AUTH_STRING|TOKEN)\w*(\s*[:=]\s*|\s+')(?P<value>\S+)")


def _differences(argv: list[str], command: list[str]) -> dict[str, tuple[str, str]]:
    """{option: (compose's value, the test's)} where the argv the tests run differs from compose's command."""
    assert len(argv) == len(command) and argv[0] == str(BIN / command[0])
    return {command[i - 1]: (c, a) for i, (c, a) in enumerate(zip(command, argv)) if i > 0 and c != a}


def test_the_tests_run_mlflow_as_compose_says_apart_from_host_port_and_folders(tmp_path):
    service = team_mlflow_service(tmp_path, 5999, VARIABLES, "127.0.0.1:6543")
    spec = SERVICES["mlflow"]
    assert _differences(service.argv, spec["command"]) == {
        "--host": ("0.0.0.0", "127.0.0.1"), "--port": ("5000", "5999"),
        "--artifacts-destination": ("/data/artifacts", f"{tmp_path}/artifacts")}
    assert "--app-name" in service.argv and service.argv[service.argv.index("--app-name") + 1] == "basic-auth"
    password = VARIABLES["MLFLOW_DB_PASSWORD"]
    assert service.env == {
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg://mlflow:{password}@127.0.0.1:6543/mlflow",
        "MLFLOW_AUTH_CONFIG_PATH": f"{tmp_path}/basic_auth.ini",
        "MLFLOW_AUTH_ADMIN_PASSWORD": VARIABLES["MLFLOW_AUTH_ADMIN_PASSWORD"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": VARIABLES["MLFLOW_FLASK_SERVER_SECRET_KEY"],
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    ini = service.files[f"{tmp_path}/basic_auth.ini"]
    assert (f"database_uri = postgresql+psycopg://mlflow_auth:{VARIABLES['MLFLOW_AUTH_DB_PASSWORD']}"
            "@127.0.0.1:6543/mlflow_auth\n") in ini and "default_permission = READ\n" in ini


def test_the_tests_run_prefect_as_compose_says_apart_from_host_and_port(tmp_path):
    service = team_prefect_service(tmp_path, 4999, VARIABLES, "127.0.0.1:6543")
    assert _differences(service.argv, SERVICES["prefect"]["command"]) == {
        "--host": ("0.0.0.0", "127.0.0.1"), "--port": ("4200", "4999")}
    assert service.env == {
        "PREFECT_API_DATABASE_CONNECTION_URL":
            f"postgresql+asyncpg://prefect:{VARIABLES['PREFECT_DB_PASSWORD']}@127.0.0.1:6543/prefect",
        "PREFECT_SERVER_API_AUTH_STRING": VARIABLES["PREFECT_API_AUTH_STRING"],
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def test_published_ports_are_on_loopback_only():
    published = {name: spec["ports"] for name, spec in SERVICES.items() if "ports" in spec}
    assert published == {"mlflow": ["127.0.0.1:5000:5000"], "prefect": ["127.0.0.1:4200:4200"],
                         "scheduler": ["127.0.0.1:8786:8786"], "serve": ["127.0.0.1:8000:8000"]}


def test_no_secret_is_written_in_compose_prefect_yaml_or_the_image():
    for name in ("compose.yaml", "prefect.yaml", "Dockerfile"):
        text = (ROOT / name).read_text()
        literal = [m[0] for m in SECRET_SETTING.finditer(text) if not m["value"].startswith("${")]
        assert literal == [], name
        assert re.findall(r"://\w+:(?!\$\{)[^@/\s]+@", text) == [], name  # no password inside a URL either
    # every variable compose takes is required: a missing one stops `docker compose up` with its message
    text = (ROOT / "compose.yaml").read_text()
    assert {required for _, required in re.findall(r"\$\{(\w+)(:\?)?", text)} == {":?"}
    assert sorted(VARIABLES) == ["DIGITPIPE_FEEDBACK_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_AUTH_DB_PASSWORD",
                                 "MLFLOW_DB_PASSWORD",
                                 "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_PIPELINE_PASSWORD",
                                 "POSTGRES_PASSWORD", "PREFECT_API_AUTH_STRING", "PREFECT_DB_PASSWORD"]


def test_two_workers_on_the_deployments_pool_and_a_dask_cluster_of_one_thread_workers():
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]}
    worker = SERVICES["worker"]
    assert worker["deploy"]["replicas"] == 2 and pools == {"digitpipe-process"}
    assert worker["command"] == ["prefect", "worker", "start", "--pool", "digitpipe-process", "--type", "process",
                                 "--limit", "2"]
    assert worker["environment"]["PREFECT_API_URL"] == "http://prefect:4200/api"
    assert worker["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert SERVICES["scheduler"]["command"][:6] == ["dask", "scheduler", "--host", "0.0.0.0", "--port", "8786"]
    dask_worker = SERVICES["dask-worker"]
    assert dask_worker["command"][:5] == ["dask", "worker", "tcp://scheduler:8786", "--nthreads", "1"]
    assert dask_worker["deploy"]["replicas"] == 2
    serve = SERVICES["serve"]  # beyond loopback inside the network: it refuses to start without the token
    assert serve["command"] == ["digitpipe", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert serve["environment"]["DIGITPIPE_FEEDBACK_TOKEN"].startswith("${DIGITPIPE_FEEDBACK_TOKEN:?")


def test_postgres_is_a_named_volume_and_services_start_after_what_they_need_is_healthy():
    postgres = SERVICES["postgres"]
    assert postgres["image"] == "postgres:15" and postgres["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql/data"] and "postgres-data" in compose()["volumes"]
    needs = {name: spec["depends_on"] for name, spec in SERVICES.items() if "depends_on" in spec}
    assert needs["mlflow"] == needs["prefect"] == {"postgres": {"condition": "service_healthy"}}
    for name, depends_on in needs.items():
        for needed, how in depends_on.items():
            assert how == {"condition": "service_healthy"} and "healthcheck" in SERVICES[needed], (name, needed)


def test_the_image_installs_the_team_extra_that_the_servers_need():
    assert '-c requirements.lock ".[team]"' in (ROOT / "Dockerfile").read_text()
    assert all(s.get("build") == "." for name, s in SERVICES.items() if name != "postgres")
