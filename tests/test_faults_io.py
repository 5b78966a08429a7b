"""Faults of the disk and of the store, against the real commands: a read-only working folder (a read-only bind
mount) and a full disk (a filled tmpfs), each in a mount namespace of its own (`unshare -m`), and a tracking store
that cannot be used or reached (MLflow's file store, a closed port, a listener that never answers). Each command
that writes ends with one line naming the path or store, exit 2, having written nothing (bench/stop_times.py measures how soon)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flows.startup import free_port
from tests.conftest import FIXTURE
from tests.helpers import DIGITPIPE, digitpipe, environ, error_line, run, write_config, write_kaggle_csv

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

FAULT_WORDS = {"read-only": "read-only file system", "full": "no space left on the device"}

# Runs inside the mount namespace: makes the fault, runs the command, and reports what it did and what it left (the
# namespace, and its mounts, end with this process: the test's store is untouched).
INSIDE = r"""
import json, os, shutil, sqlite3, subprocess, sys, tempfile
spec = json.loads(sys.argv[1])
folder = spec["folder"]
if spec["fault"] == "read-only":
    subprocess.run(["mount", "--bind", "-o", "ro", folder, folder], check=True)
else:  # a tmpfs just big enough for a copy of the folder, then filled
    kept = tempfile.mkdtemp()
    shutil.copytree(folder, kept, dirs_exist_ok=True, symlinks=True)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(kept) for f in fs) // 1024 * 2 + 1024
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", folder], check=True)
    shutil.copytree(kept, folder, dirs_exist_ok=True, symlinks=True)
    shutil.rmtree(kept)
    with open(os.path.join(folder, ".filler"), "wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass

def files():
    return {os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_size
            for d, _, fs in os.walk(folder) for f in fs if f != ".filler" and not f.endswith(".lock")}

def aliases():
    with sqlite3.connect(f"file:{folder}/mlflow.db?mode=ro", uri=True) as db:
        return sorted(db.execute("SELECT alias, version FROM registered_model_aliases").fetchall())

before, champions = files(), aliases()
done = subprocess.run(spec["command"], cwd=folder, capture_output=True, text=True, timeout=120)
written = sorted(set(files().items()) - set(before.items()))
print(json.dumps({"code": done.returncode, "err": done.stderr, "written": written,
                  "aliases_kept": aliases() == champions}))
"""


@pytest.fixture(scope="module")
def unshare() -> list[str]:
    """How this machine lets a test mount in a namespace of its own: as root (`unshare -m`), else as the root of a
    user namespace (`unshare -r -m`); the tests that need it skipped, before any training, where neither may mount
    a tmpfs and bind it read-only."""
    probe = 'd=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs "$d" && mount --bind -o ro "$d" "$d"'
    for command in (["unshare", "-m"], ["unshare", "-r", "-m"]):
        try:
            if subprocess.run([*command, "sh", "-c", probe], capture_output=True, timeout=30).returncode == 0:
                return command
        except (OSError, subprocess.TimeoutExpired):
            continue
    pytest.skip("this machine lets no test mount a read-only folder or a tmpfs (unshare -m, unshare -r -m)")


@pytest.fixture(scope="module")
def store(unshare, tmp_path_factory, fixture_dir, prefect_api):
    """A working folder with a store of two versions of the fixture (the champion and one other), and inputs for
    `score` and `feedback` beside it: (folder, champion, the other version, inputs folder)."""
    from mlflow import MlflowClient

    from digitpipe.data import Dataset, load_dataset

    folder, inputs = tmp_path_factory.mktemp("work"), tmp_path_factory.mktemp("inputs")
    write_config(folder / "mlflow.yaml", artifact_location=folder / "artifacts", promotion={"min_accuracy": 0.0})
    done = digitpipe("run", "--data", fixture_dir, "--models", "logreg,mlp", "--epochs", "1", "--quiet", cwd=folder,
                     env=environ(MLFLOW_TRACKING_URI=None, PREFECT_API_URL=prefect_api))
    assert done.code == 0, done.err
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    champion = client.get_model_version_by_alias("digits", "champion").version
    (other,) = {v.version for v in client.search_model_versions("name = 'digits'")} - {champion}
    digits = load_dataset(fixture_dir)
    write_kaggle_csv(inputs / "test.csv", Dataset(digits.images[:200], None))
    (inputs / "labels.csv").write_text("ImageId,Label\n" + "".join(
        f"{row},{label}\n" for row, label in enumerate(digits.labels[:200], start=1)))
    return folder, champion, other, inputs


def _commands(fault: str, champion: str, other: str, inputs: Path, outside: Path) -> dict[str, list]:
    """Each command that writes, as it writes in (or beside the store in) the working folder."""
    commands = {
        "run": ["run", "--data", FIXTURE, "--models", "logreg", "--quiet", "--out", outside],  # the store refuses
        "tune": ["tune", "--data", FIXTURE, "--model", "logreg", "--trials", "1", "--quiet"],
        "score": ["score", "--model", "models:/digits@champion", "--input", inputs / "test.csv", "--output", "p.csv"],
        "approve": ["approve", "--version", other, "--comment", "fault test"],
        "promote": ["promote", "--version", other],
        "gc": ["gc", "--keep", "0"],
        "feedback": ["feedback", "--input", inputs / "test.csv", "--labels", inputs / "labels.csv", "--model",
                     f"models:/digits/{champion}"],
        "export": ["export", "--model", "models:/digits@champion", "--output", "e.onnx"],
        "card": ["card", "--version", champion],
        "eda": ["eda", "--data", FIXTURE, "--out", "eda"],
    }
    if fault == "full":
        del commands["approve"]  # nothing awaits approval: it refuses before it would write
    return {name: [str(DIGITPIPE), *map(str, args)] for name, args in commands.items()}


CASES = [(fault, name) for fault in FAULT_WORDS for name in _commands(fault, "1", "2", Path(), Path())]


@pytest.mark.parametrize(("fault", "command"), CASES, ids=[f"{fault}-{name}" for fault, name in CASES])
def test_a_command_that_cannot_write_says_where_in_one_line_and_writes_nothing(unshare, store, fault, command,
                                                                                 tmp_path, prefect_api):
    folder, champion, other, inputs = store
    spec = {"folder": str(folder), "fault": fault,
            "command": _commands(fault, champion, other, inputs, tmp_path / "out")[command]}
    ran = run([*unshare, sys.executable, "-c", INSIDE, json.dumps(spec)], cwd=tmp_path, timeout=300,
              env=environ(MLFLOW_TRACKING_URI=None, PREFECT_API_URL=prefect_api))
    assert ran.code == 0, ran.err
    did = json.loads(ran.out.splitlines()[-1])
    line = error_line(did["err"])
    assert did["code"] == 2, did["err"]
    assert line.startswith("digitpipe: error: ") and "Traceback" not in did["err"], did["err"]
    assert str(folder) in line and FAULT_WORDS[fault] in line, line  # names the path or the store, and why
    assert did["written"] == [] and did["aliases_kept"], did  # nothing written (lock files aside), champion kept
    assert not (tmp_path / "out").exists()


class _Silent:
    """A loopback listener that accepts connections and never answers (the kernel completes the handshakes)."""

    def __enter__(self) -> int:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        return self.sock.getsockname()[1]

    def __exit__(self, *_exc) -> None:
        self.sock.close()


STORES = {
    "a-plain-word": ("garbage", "the MLflow tracking store garbage is a folder"),
    "a-file-uri": ("file:///{tmp}/mlruns", "the MLflow tracking store file:///{tmp}/mlruns is a folder"),
    "http-closed-port": ("http://127.0.0.1:{closed}",
                         "cannot reach the MLflow tracking store at http://127.0.0.1:{closed} (connection refused)"),
    "http-silent": ("http://127.0.0.1:{silent}",
                    "cannot reach the MLflow tracking store at http://127.0.0.1:{silent} (no answer within"),
    "postgres-closed-port": ("postgresql://u:secret@127.0.0.1:{closed}/db",
                             "cannot reach the MLflow tracking store at postgresql://u:***@127.0.0.1:{closed}/db"),
    "postgres-silent": ("postgresql://u:secret@127.0.0.1:{silent}/db",
                        "cannot reach the MLflow tracking store at postgresql://u:***@127.0.0.1:{silent}/db"),
}
STORE_COMMANDS = {
    "run": ["run", "--data", FIXTURE, "--models", "logreg", "--quiet", "--out", "out"],
    "promote": ["promote", "--version", "1"],
}


@pytest.mark.parametrize("command", STORE_COMMANDS)
@pytest.mark.parametrize("kind", STORES)
def test_a_store_that_cannot_be_used_or_reached_is_one_line(kind, command, tmp_path, prefect_api):
    uri, message = STORES[kind]
    with _Silent() as silent:
        where = {"tmp": tmp_path, "closed": free_port(), "silent": silent}
        uri, message = uri.format(**where), message.format(**where)
        done = digitpipe(*STORE_COMMANDS[command], cwd=tmp_path, timeout=120,  # a guard against a hang
                         env=environ(MLFLOW_TRACKING_URI=uri, PREFECT_API_URL=prefect_api))
    assert done.code == 2, done.err
    assert error_line(done.err).startswith(f"digitpipe: error: {message}"), done.err
    assert "Traceback" not in done.err and "secret" not in done.err, done.err
    assert list(tmp_path.iterdir()) == []  # no output folder, no store, no lock


def test_a_write_the_disk_refuses_mid_file_names_the_output_and_leaves_nothing(tmp_path):
    from digitpipe.errors import UserError
    from digitpipe.files import atomic_path

    target = tmp_path / "p.csv"
    with pytest.raises(UserError, match=f"cannot write {target}: no space left on the device"):
        with atomic_path(target) as tmp, open("/dev/full", "wb") as full:  # a write the disk refuses, mid-file
            tmp.write_bytes(b"ImageId,Label\n")
            full.write(b"\0" * 65536)
            full.flush()
    assert list(tmp_path.iterdir()) == []
