"""The house's layers (CLI -> flows -> tasks -> library, .importlinter) hold, and a broken one is caught."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = ("CLI -> flows -> tasks -> library", "The library never imports Prefect (nor prefect-dask)",
             "Only the tracking package imports MLflow",
             "The training core (data, zoo, models, train, evaluate, export) imports neither MLflow nor Prefect")


def lint_imports(checkout: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=checkout, capture_output=True, text=True,
                          timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_the_layer_contracts_hold():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout
    assert all(f"{name} KEPT" in done.stdout for name in CONTRACTS), done.stdout
    assert "Contracts: 4 kept, 0 broken." in done.stdout


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("digitpipe/files.py", "from flows import startup", [CONTRACTS[0]]),
    ("digitpipe/robustness.py", "def _late():\n    import prefect", [CONTRACTS[1]]),
    ("flows/locks.py", "import mlflow", [CONTRACTS[2]]),
    ("digitpipe/train.py", "from digitpipe.tracking import Tracker", [CONTRACTS[3]]),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, broken):
    """In a copy of the checkout, one forbidden import added (inside a function too): lint-imports fails, naming
    the broken contract (a chain through the new import may break others too)."""
    for part in ("cli", "flows", "tasks", "digitpipe", ".importlinter"):
        copy = shutil.copytree if (ROOT / part).is_dir() else shutil.copyfile
        copy(ROOT / part, tmp_path / part)
    with (tmp_path / module).open("a") as source:
        source.write(f"\n\n{line}\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout
    assert all(f"{name} BROKEN" in done.stdout for name in broken), done.stdout  # others may break through it
