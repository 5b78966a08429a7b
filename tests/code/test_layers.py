"""The house's layers (CLI -> flows -> tasks -> library, .importlinter) hold, and a broken one is caught."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.helpers import CliResult, run

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
CONTRACTS = ("CLI -> flows -> tasks -> library", "The library never imports Prefect (nor prefect-dask)",
             "Only the tracking package imports MLflow",
             "The training core (records, data, zoo, models, train, evaluate, export) imports neither MLflow nor Prefect",
             "No import circle in the library, type-only imports included")


def lint_imports(checkout: Path) -> CliResult:
    """lint-imports on `checkout`, in a bare environment (wide lines)."""
    return run([LINT_IMPORTS, "--no-cache"], cwd=checkout, timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})


def test_the_layer_contracts_hold():
    done = lint_imports(ROOT)
    assert done.code == 0, done.out
    assert all(f"{name} KEPT" in done.out for name in CONTRACTS), done.out
    assert "Contracts: 5 kept, 0 broken." in done.out


@pytest.mark.parametrize(("module", "line", "broken"), [
    ("digitpipe/files.py", "from flows import startup", [CONTRACTS[0]]),
    ("digitpipe/robustness.py", "def _late():\n    import prefect", [CONTRACTS[1]]),
    ("flows/locks.py", "import mlflow", [CONTRACTS[2]]),
    ("digitpipe/train.py", "from digitpipe.tracking import Tracker", [CONTRACTS[3]]),
    ("digitpipe/records/specs.py", "if TYPE_CHECKING:\n    from digitpipe.train import fit", [CONTRACTS[4]]),
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
    assert done.code == 1, done.out
    assert all(f"{name} BROKEN" in done.out for name in broken), done.out  # others may break through it


def test_no_module_of_the_library_is_part_of_an_import_circle():
    """Module by module (the contract above compares packages): type-only and function-level imports count."""
    import graphlib

    import grimp

    graph = grimp.build_graph("digitpipe", include_external_packages=False)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    try:
        graphlib.TopologicalSorter(imports).prepare()
    except graphlib.CycleError as circle:
        pytest.fail(f"an import circle: {' -> '.join(circle.args[1])}")
