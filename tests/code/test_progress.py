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


def test_the_tuning_bar_counts_finished_trials_only_and_shows_the_best(monkeypatch):
    import io
    import sys

    import optuna

    from digitpipe.progress import trial_bar

    screen = io.StringIO()
    screen.isatty = lambda: True  # a terminal, as far as the bar can tell
    monkeypatch.setattr(sys, "stderr", screen)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize")

    def objective(trial):
        if trial.number == 1:
            raise RuntimeError("a failed trial")  # does not count towards the total
        return trial.suggest_float("x", 0, 1)

    with trial_bar("mlp", 5, 1, True) as bar:
        study.optimize(objective, n_trials=3, callbacks=bar, catch=(RuntimeError,))
    assert "3/5" in screen.getvalue() and "4/5" not in screen.getvalue()
    assert f"best {study.best_value:.4f}" in screen.getvalue()
