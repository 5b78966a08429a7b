"""Each command imports only what its work needs: a heavy import added at some module's top fails here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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


def loaded(args: list[str], cwd) -> set[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)
    marker = [line for line in done.stdout.splitlines() if line.startswith("LOADED ")]
    assert marker, done.stderr[-2000:]
    return set(json.loads(marker[-1].removeprefix("LOADED ")))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, digits):
    from digitpipe.baseline import fit_logreg
    from digitpipe.data import split_dataset
    from digitpipe.export import export_onnx
    from digitpipe.zoo import SPECS

    return export_onnx(fit_logreg(SPECS["logreg"], split_dataset(digits).train),
                       tmp_path_factory.mktemp("model") / "logreg.onnx")


def test_help_and_a_bad_flag_load_nothing_heavy(tmp_path):
    assert loaded(["--help"], tmp_path) == set()
    assert loaded(["run", "--epochs", "zero"], tmp_path) == set()


def test_score_with_an_onnx_file_loads_onnxruntime_and_the_readers_only(tmp_path, onnx_model, fixture_dir):
    args = ["score", "--model", str(onnx_model), "--input", str(fixture_dir), "--output", str(tmp_path / "p.csv")]
    assert loaded(args, tmp_path) <= {"onnxruntime", "pandas", "pyarrow"}
    assert (tmp_path / "p.csv").is_file()


def test_registry_commands_load_mlflow_but_no_training_stack(tmp_path):
    (tmp_path / "mlflow.yaml").write_text(f"tracking_uri: sqlite:///{tmp_path}/m.db\n")
    for args in (["models"], ["promote", "--rollback"]):
        assert loaded(args, tmp_path).isdisjoint({"torch", "sklearn", "skl2onnx", "great_expectations", "prefect"})


def test_validate_loads_great_expectations_but_not_torch_or_mlflow(tmp_path, fixture_dir):
    assert loaded(["validate", "--data", str(fixture_dir)], tmp_path).isdisjoint({"torch", "mlflow", "prefect"})


@pytest.mark.slow
def test_a_logreg_run_loads_no_torch_and_prints_one_line_per_stage(tmp_path, fixture_dir):
    (tmp_path / "mlflow.yaml").write_text(f"tracking_uri: sqlite:///{tmp_path}/m.db\n")
    args = ["run", "--data", str(fixture_dir), "--models", "logreg", "--quiet", "--out", str(tmp_path / "out")]
    alone = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # a user's run: its own temporary API
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args), json.dumps(HEAVY)], capture_output=True,
                          text=True, cwd=tmp_path, env=alone, timeout=300)
    assert "torch" not in json.loads(done.stdout.splitlines()[-1].removeprefix("LOADED "))
    lines = done.stderr.splitlines()
    assert [line.split()[0] for line in lines] == ["validated", "split", "trained", "v1"], done.stderr
    assert lines[2].startswith("trained logreg: ") and lines[3] == "v1 promoted: first champion"


@pytest.mark.slow
def test_verbose_restores_prefects_own_log_lines(tmp_path, fixture_dir, prefect_api):
    """On the session's Prefect API (PREFECT_API_URL, inherited): the temporary one is the test above's."""
    (tmp_path / "mlflow.yaml").write_text(f"tracking_uri: sqlite:///{tmp_path}/m.db\n")
    done = subprocess.run([sys.executable, "-m", "cli", "run", "--data", str(fixture_dir), "--models", "logreg",
                           "--quiet", "--verbose", "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Task run 'train-logreg' - Finished in state Completed()" in done.stderr
    assert "trained logreg: " in done.stderr
