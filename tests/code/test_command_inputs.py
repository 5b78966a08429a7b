"""What a user gives a command is never lost and a bad value is said before any work (issue 35's first findings):
`score` never writes over its input or into a folder, a header alone is no batch, a UTF-8 BOM is read, seeds out of
range, a field given twice to --set and a negative --min-rows are one line and exit 2, and without --data a bad flag
is said before MNIST is fetched."""

from __future__ import annotations

import pytest

from digitpipe.data import Dataset
from tests.helpers import assert_one_line_error, write_kaggle_csv


@pytest.fixture
def batch(tmp_path, digits):
    return write_kaggle_csv(tmp_path / "test.csv", Dataset(digits.images[:20], digits.labels[:20]), labelled=False)


def test_score_never_writes_over_its_input(digitpipe_cli, logreg_onnx, batch):
    before = batch.read_bytes()
    done = digitpipe_cli("score", "--model", logreg_onnx, "--input", batch, "--output", batch)
    assert_one_line_error(done.code, done.err, 2, f"{batch}: writing it would replace the input {batch}")
    assert batch.read_bytes() == before


def test_score_never_writes_over_its_model_file_or_a_hard_link_of_its_input(digitpipe_cli, logreg_onnx, batch,
                                                                               tmp_path):
    import os
    import shutil

    model = shutil.copyfile(logreg_onnx, tmp_path / "m.onnx")
    before = model.read_bytes()
    done = digitpipe_cli("score", "--model", model, "--input", batch, "--output", model)
    assert_one_line_error(done.code, done.err, 2, f"{model}: writing it would replace the input {model}")
    assert model.read_bytes() == before
    linked = tmp_path / "linked.csv"
    os.link(batch, linked)  # one file under two names
    done = digitpipe_cli("score", "--model", model, "--input", batch, "--output", linked)
    assert_one_line_error(done.code, done.err, 2, f"{linked}: writing it would replace the input {linked}")


def test_score_refuses_a_rejects_file_that_is_the_input(digitpipe_cli, logreg_onnx, tmp_path, digits):
    source = write_kaggle_csv(tmp_path / "p.csv.rejects.csv", Dataset(digits.images[:20], digits.labels[:20]),
                              labelled=False)
    before = source.read_bytes()
    done = digitpipe_cli("score", "--model", logreg_onnx, "--input", source, "--output", tmp_path / "p.csv")
    assert_one_line_error(done.code, done.err, 2, f"{tmp_path / 'p.csv'}: writing it would replace the input {source}")
    assert source.read_bytes() == before and not (tmp_path / "p.csv").exists()


def test_score_refuses_a_file_of_the_folder_it_reads(digitpipe_cli, logreg_onnx, fixture_dir, tmp_path):
    import shutil

    folder = shutil.copytree(fixture_dir, tmp_path / "idx")
    images = next(folder.glob("*images*"))
    before = images.read_bytes()
    done = digitpipe_cli("score", "--model", logreg_onnx, "--input", folder, "--output", images)
    assert_one_line_error(done.code, done.err, 2, f"{images}: writing it would replace the input {images}")
    assert images.read_bytes() == before


@pytest.mark.parametrize("where, said", [
    ("folder", "{out}: {out} is a folder, not a file to write"),
    ("under a file", "{out}: {parent} is a file, not a folder to write in"),
])
def test_score_output_that_cannot_be_a_file_is_one_line_before_any_work(digitpipe_cli, logreg_onnx, batch, tmp_path,
                                                                         where, said):
    if where == "folder":
        out = tmp_path / "out"
        out.mkdir()
        parent = None
    else:
        parent = tmp_path / "notes.txt"
        parent.write_text("mine")
        out = parent / "p.csv"
    done = digitpipe_cli("score", "--model", logreg_onnx, "--input", batch, "--output", out)
    assert_one_line_error(done.code, done.err, 2, said.format(out=out, parent=parent))


def test_a_header_alone_is_no_batch_to_score(digitpipe_cli, logreg_onnx, tmp_path):
    header_only = tmp_path / "empty.csv"
    header_only.write_text(",".join(f"pixel{i}" for i in range(784)) + "\n")
    done = digitpipe_cli("score", "--model", logreg_onnx, "--input", header_only, "--output", tmp_path / "p.csv")
    assert_one_line_error(done.code, done.err, 2, f"{header_only}: no rows to score")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]  # nothing written, not even half


def test_a_csv_with_a_utf8_bom_is_scored(digitpipe_cli, logreg_onnx, batch, tmp_path):
    with_bom = tmp_path / "bom.csv"
    with_bom.write_bytes(b"\xef\xbb\xbf" + batch.read_bytes())
    done = digitpipe_cli("score", "--model", logreg_onnx, "--input", with_bom, "--output", tmp_path / "p.csv")
    assert done.code == 0, done.err
    assert done.out.startswith("scored 20 rows, rejected 0 (0.00%)")


@pytest.mark.parametrize("args, said", [
    (("run", "--seed", "-1"), "command line: seed: Input should be greater than or equal to 0"),
    (("run", "--seed", "99999999999"), "command line: seed: Input should be less than or equal to 4294967295"),
    (("run", "--split-seed", "-3"), "command line: split_seed: Input should be greater than or equal to 0"),
    (("tune", "--model", "mlp", "--trials", "2", "--seed", "-1"),
     "command line: seed: Input should be greater than or equal to 0"),
    (("run", "--val-fraction", "1.5"), "command line: val_fraction: Input should be less than 1"),
    (("run", "--models", "mlp", "--set", "mlp.lr=0.1", "--set", "mlp.lr=0.2"), "--set mlp.lr is given twice"),
])
def test_a_bad_value_is_said_before_any_download_or_work(digitpipe_cli, tmp_path, monkeypatch, args, said):
    """Without --data the command would fetch MNIST: the value is checked first."""
    monkeypatch.chdir(tmp_path)
    done = digitpipe_cli(*args)
    assert_one_line_error(done.code, done.err, 2, said)
    assert "fetch" not in done.err


def test_validate_refuses_a_negative_row_floor(digitpipe_cli, fixture_dir):
    done = digitpipe_cli("validate", "--data", fixture_dir, "--min-rows", "-5")
    assert done.code == 2 and "Invalid value for '--min-rows'" in done.err and "Traceback" not in done.err


def test_a_long_error_is_cut_at_a_word_not_in_one():
    from digitpipe.files import first_line

    said = first_line(RuntimeError("Max retries exceeded with url: /api/2.0/mlflow/experiments/search\nat line 2"), 30)
    assert said == "Max retries exceeded with ..."
    assert first_line(ValueError("short"), 30) == "short" and first_line(KeyError()) == "KeyError"


def test_an_unknown_model_is_said_in_our_words(digitpipe_cli, fixture_dir):
    done = digitpipe_cli("run", "--data", fixture_dir, "--models", "lenett")
    assert_one_line_error(done.code, done.err, 2, "command line: models: unknown model(s) ['lenett']; choose from")
    assert "Value error" not in done.err


@pytest.mark.parametrize("command, flag, kind", [
    ("run --data {data} --models logreg --out {path}", "--out", "file"),
    ("run --data {data} --models logreg --summary {path}", "--summary", "folder"),
    ("eda --data {data} --out {path}", "--out", "file"),
    ("card --version 1 --output {path}", "--output", "file"),
    ("export --model {model} --output {path}", "--output", "folder"),
    ("export --model {model} --output {path}/x.onnx", "--output", "under a file"),
])
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(digitpipe_cli, tmp_path, fixture_dir,
                                                                           logreg_onnx, monkeypatch, command, flag,
                                                                           kind):
    monkeypatch.chdir(tmp_path)  # no store, no outputs: the command must stop before either is made
    path = tmp_path / "existing"
    if kind == "folder":
        path.mkdir()
    else:
        path.write_text("a user's file")
    args = command.format(data=fixture_dir, model=logreg_onnx, path=path).split()
    done = digitpipe_cli(*args)
    said = {"file": f"{flag} {path}: a file, not a folder to write in",
            "folder": f"{flag} {path}: a folder, not a file to write",
            "under a file": f"{flag} {path}/x.onnx: {path} is a file, not a folder to write in"}[kind]
    assert_one_line_error(done.code, done.err, 2, said)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]
    assert kind == "folder" or path.read_text() == "a user's file"


def test_export_refuses_to_copy_a_model_file_onto_itself(digitpipe_cli, logreg_onnx, tmp_path):
    import shutil

    model = shutil.copyfile(logreg_onnx, tmp_path / "m.onnx")
    done = digitpipe_cli("export", "--model", model, "--output", model)
    assert_one_line_error(done.code, done.err, 2, f"--output {model}: the model file itself")


def test_a_setting_given_twice_in_a_yaml_file_is_one_line(digitpipe_cli, tmp_path, fixture_dir):
    config = tmp_path / "mlflow.yaml"
    config.write_text("experiment: a\nregistered_model: digits\nexperiment: b\n")
    done = digitpipe_cli("models", "--config", config)
    assert_one_line_error(done.code, done.err, 2, f"{config}: not valid YAML ('experiment' is given twice (line 3))")
    params = tmp_path / "best.yaml"
    params.write_text("params:\n  mlp:\n    lr: 0.1\n    lr: 0.2\n")
    done = digitpipe_cli("run", "--data", fixture_dir, "--models", "mlp", "--params", params)
    assert_one_line_error(done.code, done.err, 2, f"{params}: not valid YAML ('lr' is given twice (line 4))")
