"""Each command imports only what its work needs: a heavy import added at some module's top fails here."""

from __future__ import annotations

import json

import pytest

from tests.helpers import import_probe, write_config


def loaded(args: list[str], cwd) -> set[str]:
    """The heavy packages (tests/helpers.py's HEAVY) that `digitpipe ARGS` imported, run from `cwd`."""
    done = import_probe(args, cwd=cwd, timeout=120)
    marker = [line for line in done.out.splitlines() if line.startswith("LOADED ")]
    assert marker, done.err[-2000:]
    return set(json.loads(marker[-1].removeprefix("LOADED ")))


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory, digits):
    from digitpipe.baseline import fit_logreg
    from digitpipe.data import split_dataset
    from digitpipe.export import export_onnx
    from digitpipe.records.specs import SPECS

    return export_onnx(fit_logreg(SPECS["logreg"], split_dataset(digits).train),
                       tmp_path_factory.mktemp("model") / "logreg.onnx")


def test_help_and_a_bad_flag_load_nothing_heavy(tmp_path):
    assert loaded(["--help"], tmp_path) == set()
    assert loaded(["run", "--epochs", "zero"], tmp_path) == set()


def test_score_with_an_onnx_file_loads_onnxruntime_and_the_readers_only(tmp_path, onnx_model, fixture_dir):
    args = ["score", "--model", str(onnx_model), "--input", str(fixture_dir), "--output", str(tmp_path / "p.csv")]
    assert loaded(args, tmp_path) <= {"onnxruntime", "pandas", "pyarrow"}
    assert (tmp_path / "p.csv").is_file()


@pytest.mark.slow  # a fresh interpreter importing MLflow: seconds
def test_registry_commands_load_mlflow_but_no_training_stack(tmp_path):
    write_config(tmp_path / "mlflow.yaml", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    for args in (["models"], ["promote", "--rollback"]):
        assert loaded(args, tmp_path).isdisjoint({"torch", "sklearn", "skl2onnx", "great_expectations", "prefect"})


@pytest.mark.slow  # a fresh interpreter importing great-expectations: seconds
def test_validate_loads_great_expectations_but_not_torch_or_mlflow(tmp_path, fixture_dir):
    assert loaded(["validate", "--data", str(fixture_dir)], tmp_path).isdisjoint({"torch", "mlflow", "prefect"})

