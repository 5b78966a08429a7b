"""What a CLI run prints at the end: the models of the run side by side, best first, and the champion."""

from digitpipe.progress import print_comparison


def test_the_run_table_shows_clean_and_perturbed_accuracy_best_first(tmp_path, capsys):
    (tmp_path / "a.onnx").write_bytes(b"x" * 2048)
    models = {"lenet": {"accuracy": 0.978, "robust_accuracy": 0.9307, "train_seconds": 21.5, "model_version": "4",
                        "onnx_path": str(tmp_path / "a.onnx")},
              "fastcnn": {"accuracy": 0.9853, "robust_accuracy": 0.9653, "train_seconds": 6.1, "model_version": "5",
                          "onnx_path": str(tmp_path / "a.onnx")}}
    print_comparison({"models": models, "champion": {"name": "fastcnn", "model_version": "5", "accuracy": 0.9853}})
    out = capsys.readouterr().out
    assert "perturbed" in out and out.index("fastcnn") < out.index("lenet")
    assert "96.53%" in out and "93.07%" in out and out.rstrip().endswith("champion: fastcnn v5 (98.53%)")


def test_the_last_line_names_a_version_awaiting_approval(tmp_path, capsys):
    (tmp_path / "a.onnx").write_bytes(b"x")
    models = {"logreg": {"accuracy": 0.872, "robust_accuracy": None, "train_seconds": 0.3, "model_version": "1",
                         "onnx_path": str(tmp_path / "a.onnx")}}
    waiting = {"version": "1", "verdict": "awaiting_approval", "reason": "earned promotion, waits for a person"}
    print_comparison({"models": models, "champion": None, "verdict": waiting})
    assert capsys.readouterr().out.rstrip().endswith(
        "no champion yet: v1 passed the gate and awaits approval (digitpipe approve)")
    print_comparison({"models": models, "champion": None, "verdict": None})
    assert capsys.readouterr().out.rstrip().endswith(
        "no champion yet: no model has passed the promotion gate (see mlflow.yaml)")
