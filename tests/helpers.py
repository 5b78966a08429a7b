"""Helpers the tests share: Kaggle-layout files from a Dataset, the one runner of subprocesses (`digitpipe`, `python`
and other commands), the one writer of mlflow.yaml files, MLflow's global tracking URI for a block, the check that a
command failed with one clear line, waiting for something a server does in the background, and a `digitpipe serve`
for a block."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from digitpipe.data import Dataset

PIXELS = [f"pixel{i}" for i in range(784)]
ROOT = Path(__file__).resolve().parents[1]
DIGITPIPE = Path(sys.executable).with_name("digitpipe")  # the console script a user runs, beside this interpreter


def wait_for(condition: Callable[[], object], seconds: float, what: str, poll: float = 0.5):
    """condition()'s first true value, polled every `poll` s; a TimeoutError naming `what` after `seconds` (a guard
    against a hung test, not a timing check)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still waiting after {seconds} s")
        time.sleep(poll)
    return value


def kaggle_frame(data: Dataset | np.ndarray, labelled: bool | None = None):
    """Kaggle's Digit Recognizer layout as a DataFrame: `label` (when labelled), then pixel0..pixel783.
    `data` is a Dataset, or an N x 28 x 28 image array (unlabelled); `labelled` defaults to whether it has labels."""
    import pandas as pd

    if isinstance(data, np.ndarray):
        data = Dataset(data, None)
    frame = pd.DataFrame(data.flat(), columns=PIXELS)
    if data.labels is not None if labelled is None else labelled:
        frame.insert(0, "label", data.labels)
    return frame


def write_kaggle_csv(path: Path, data: Dataset | np.ndarray, labelled: bool | None = None) -> Path:
    """`data` written to `path` as a Kaggle CSV (see `kaggle_frame`); returns `path`."""
    kaggle_frame(data, labelled).to_csv(path, index=False)
    return path


class CliResult(NamedTuple):
    """What a command gave: its exit code and what it printed on stdout and stderr."""

    code: int
    out: str
    err: str


def environ(**changes: str | Path | None) -> dict[str, str]:
    """This process's environment with `changes` (None: the variable unset), for a subprocess's `env`."""
    return {k: str(v) for k, v in {**os.environ, **changes}.items() if v is not None}


def run(command: list, *, env: dict | None = None, cwd: Path = ROOT, timeout: float = 540, wait: bool = True,
        merge_stderr: bool = False, check: bool = False):
    """`command` in a subprocess: a CliResult, or the process (pipes on stdin, stdout, stderr) when not `wait`."""
    # env replaces the environment (None: this process's; see `environ`); merge_stderr: stderr into stdout;
    # check: CalledProcessError on a non-zero exit code
    command, stderr = [str(part) for part in command], subprocess.STDOUT if merge_stderr else subprocess.PIPE
    if not wait:
        return subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, text=True)
    done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
                          timeout=timeout, check=check)
    return CliResult(done.returncode, done.stdout, done.stderr or "")


def digitpipe(*args, **options):
    """`digitpipe ARGS` in a subprocess, as a user runs it (the console script); `options` as for `run`."""
    return run([DIGITPIPE, *args], **options)


def python(code: str, *args, **options):
    """`python -c CODE ARGS` in a subprocess of this interpreter; `options` as for `run`."""
    return run([sys.executable, "-c", code, *args], **options)


# The packages a light command must not load (tests/code/test_imports.py)
HEAVY = ("torch", "sklearn", "scipy", "matplotlib", "great_expectations", "mlflow", "prefect", "skl2onnx",
         "onnxruntime", "pandas", "pyarrow")

# Runs the CLI in a fresh interpreter and prints which heavy top-level packages it loaded, whatever the exit code.
PROBE = """
import json, sys
args, heavy = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["digitpipe", *args]
import cli
try:
    cli.app(standalone_mode=False)
except BaseException:
    pass
print("LOADED", json.dumps(sorted({m.split(".")[0] for m in sys.modules} & heavy)))
"""


def import_probe(args: list, **options) -> CliResult:
    """`digitpipe ARGS` run by PROBE: its last line on stdout is `LOADED [...]`, the HEAVY packages it imported."""
    return python(PROBE, json.dumps([str(a) for a in args]), json.dumps(HEAVY), **options)


def write_config(path: Path, **overrides) -> Path:
    """The shipped mlflow.yaml with `overrides` (a section's keys merged into it), checked, written to `path`."""
    import yaml

    from digitpipe.config import TrackingConfig

    settings = yaml.safe_load((ROOT / "mlflow.yaml").read_text())
    for key, value in overrides.items():
        settings[key] = {**settings.get(key, {}), **value} if isinstance(value, dict) else (
            str(value) if isinstance(value, Path) else value)
    TrackingConfig(**settings)  # a mistyped key or a bad value fails here, not in the command under test
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(settings))
    return path


def error_line(stderr: str) -> str:
    """The last line a command wrote on stderr: where the CLI's one-line error stands."""
    lines = stderr.strip().splitlines()
    return lines[-1] if lines else ""


def assert_one_line_error(code: int, stderr: str, expected_code: int, start: str) -> None:
    """The command exited with `expected_code`, its last line on stderr is `digitpipe: error: START...`, and it
    printed no traceback."""
    assert code == expected_code, stderr
    assert error_line(stderr).startswith(f"digitpipe: error: {start}"), stderr
    assert "Traceback" not in stderr, stderr


@contextlib.contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI (what `mlflow.pyfunc` and `models:/` sources use) set to `uri` for a block,
    and reset after it: mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which must not leak."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


class Serving:
    """A running `digitpipe serve`: its URL and port, requests to it; `log`, its stderr, once it has stopped."""

    def __init__(self, port: int) -> None:
        self.port, self.url, self.log = port, f"http://127.0.0.1:{port}", ""

    def call(self, path: str, body: bytes | None = None, content_type: str = "application/json",
             headers: dict | None = None) -> tuple[int, dict, object]:
        """(status, headers, the body parsed where it is JSON) of one request."""
        import urllib.error
        import urllib.request

        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": content_type,
                                                                             **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as reply:
                status, head, raw = reply.status, dict(reply.headers), reply.read()
        except urllib.error.HTTPError as refused:
            status, head, raw = refused.code, dict(refused.headers), refused.read()
        is_json = head.get("content-type", "").startswith("application/json")
        return status, head, json.loads(raw) if is_json and raw.strip() else raw

    def predict(self, images: np.ndarray) -> dict:
        """/predict's answer to a JSON batch of `images` (200 asserted)."""
        status, _, body = self.call("/predict", json.dumps({"images": images.tolist()}).encode())
        assert status == 200, body
        return body

    def version(self) -> str:
        return self.call("/health")[2]["version"]


@contextlib.contextmanager
def serving_process(folder: Path, config: Path, *args: str | Path, env: dict | None = None) -> Iterator[Serving]:
    """`digitpipe serve --config CONFIG ARGS...` in `folder` on a free loopback port, answering /health, until the
    block ends; then stopped as a user would (SIGTERM)."""
    import signal

    from flows.startup import free_port

    def healthy() -> bool:
        with contextlib.suppress(OSError):
            return served.call("/health")[0] == 200
        return False

    served = Serving(free_port())
    process = run([DIGITPIPE, "serve", "--config", config, "--port", str(served.port), *args], cwd=folder, env=env,
                  wait=False)
    try:
        wait_for(lambda: process.poll() is not None or healthy(), 120, "digitpipe serve's /health")
        assert process.poll() is None, process.stderr.read()
        yield served
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            served.log = process.communicate(timeout=60)[1]
        except subprocess.TimeoutExpired:  # a hung stop fails the test, never leaves a server behind
            process.kill()
            served.log = process.communicate()[1]
            raise
