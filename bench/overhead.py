"""What each command costs beside the work inside it (the ceremony issue's table), in one run.

Usage: python bench/overhead.py [MNIST_DIR] [--repeats 3] [--skip-dask] [--dask-only] [--epochs 3]
Each row: the median wall time of the command (a fresh process, as a user runs it), the seconds of the work inside
it measured in this process with the library alone, and their ratio. Reads ../shared/mnist (skips cleanly without).
The demo run's local and Dask rows alternate (local, dask, local, dask, ...) so that other load on the machine falls
on both; `--dask-only` runs just that pair (with `--epochs N` for the nets) and prints each pair's ratio and the
median training seconds per model from the run summaries.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import ROOT, best_of, mnist_path, timed

from digitpipe.baseline import fit_logreg
from digitpipe.data import load_dataset, split_dataset
from digitpipe.export import export_onnx
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.specs import SPECS

CLI = [sys.executable, "-m", "cli"]


def wall(args: list[str], cwd: Path, repeats: int, fresh: Path | None = None) -> float:
    """Median wall seconds of `digitpipe ARGS` in a new process; `fresh` (an MLflow db) is removed before each."""
    times = []
    for _ in range(repeats):
        if fresh is not None:
            fresh.unlink(missing_ok=True)
        start = time.perf_counter()
        done = subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode not in (0, 1):
            sys.exit(f"digitpipe {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return statistics.median(times)


def kaggle_csv(path: Path, images: np.ndarray) -> Path:
    pd.DataFrame(images.reshape(len(images), -1), columns=[f"pixel{i}" for i in range(784)]).to_csv(path, index=False)
    return path


def summary_train_seconds(path: Path) -> float:
    return sum(m["train_seconds"] for m in json.loads(path.read_text())["models"].values())


def demo_pair(work: Path, repeats: int, epochs: int, verbose: bool = False) -> list[tuple[str, float, float]]:
    """`run --data data/demo --models mlp,dnn,lenet` on the local runner and on Dask, alternating; two rows
    (median wall s, median summed train_seconds), and with `verbose` each pair's ratio and per-model seconds."""
    demo = ["run", "--data", str(ROOT / "data/demo"), "--models", "mlp,dnn,lenet", "--epochs", str(epochs),
            "--quiet", "--out", str(work / "o"), "--force"]  # --force: each repeat trains (the same key would skip)
    wall(demo[:3] + ["--models", "mlp", "--epochs", "1", "--quiet", "--out", str(work / "o")], work, 1)  # a new store
    walls: dict[str, list[float]] = {"local": [], "dask": []}
    trained: dict[str, list[dict[str, float]]] = {"local": [], "dask": []}
    for i in range(repeats):
        for runner in ("local", "dask"):
            summary = work / f"s-{runner}.json"
            walls[runner].append(wall(demo + ["--task-runner", runner, "--summary", str(summary)], work, 1))
            models = json.loads(summary.read_text())["models"]
            trained[runner].append({name: model["train_seconds"] for name, model in models.items()})
        if verbose:
            print(f"pair {i + 1}: local {walls['local'][-1]:.2f} s, dask {walls['dask'][-1]:.2f} s, "
                  f"ratio {walls['dask'][-1] / walls['local'][-1]:.2f}; train s local {_fmt(trained['local'][-1])}, "
                  f"dask {_fmt(trained['dask'][-1])}", flush=True)
    if verbose:
        ratios = [dask / local for dask, local in zip(walls["dask"], walls["local"])]
        print(f"dask / local per pair: {', '.join(f'{r:.2f}' for r in ratios)}; median {statistics.median(ratios):.2f}")
        for runner in ("local", "dask"):
            medians = {name: statistics.median(t[name] for t in trained[runner]) for name in trained[runner][0]}
            print(f"median train_seconds, {runner}: {_fmt(medians)}")
    return [(f"run demo mlp,dnn,lenet --epochs {epochs}", statistics.median(walls["local"]),
             statistics.median(sum(t.values()) for t in trained["local"])),
            ("same with --task-runner dask", statistics.median(walls["dask"]),
             statistics.median(sum(t.values()) for t in trained["dask"]))]


def _fmt(seconds: dict[str, float]) -> str:
    return " ".join(f"{name} {value:.2f}" for name, value in seconds.items())


def robustness_seconds(fixture: Path, model: Path, work: Path) -> float:
    """The robustness clause's work in a logreg run on the fixture (best of 3, libraries warm as in a run): the
    perturbation suite of its held-out part and the model on it with its flips picture. (The run measured beside
    it starts from a new store, so it has no champion to score on the suite as well.)"""
    from digitpipe.robustness import build_suite, check_robustness

    held_out = split_dataset(load_dataset(fixture)).test

    def clause() -> None:
        check_robustness(model, build_suite(held_out), work / "robustness")

    (work / "robustness").mkdir(exist_ok=True)
    clause()  # first call: imports (matplotlib, scipy.ndimage) a run has already paid for its other pictures
    return best_of(clause)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mnist", nargs="?")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--dask-only", action="store_true", help="only the demo run, local vs dask, alternating")
    parser.add_argument("--epochs", type=int, default=3, help="the demo run's epochs per net")
    args = parser.parse_args()
    mnist = mnist_path([sys.argv[0]] + ([args.mnist] if args.mnist else []))
    n, rows = args.repeats, []
    work = Path(tempfile.mkdtemp(prefix="digitpipe-overhead-"))
    (work / "mlflow.yaml").write_text(f"tracking_uri: sqlite:///{work}/mlflow.db\n")
    if args.dask_only:
        local, dask = demo_pair(work, n, args.epochs, verbose=True)
        print(f"dask / local on the demo run, medians: {dask[1] / local[1]:.2f} ({dask[1]:.2f} s / {local[1]:.2f} s)")
        return
    data = load_dataset(mnist)
    model = export_onnx(fit_logreg(SPECS["logreg"], split_dataset(data).train), work / "logreg.onnx")
    scorer = OnnxScorer(model)

    rows.append(("digitpipe --help", wall(["--help"], work, n), 0.0))
    csv = kaggle_csv(work / "test10k.csv", data.images[:10_000])
    score_args = ["score", "--model", str(model), "--input", str(csv), "--output", str(work / "p.csv")]
    rows.append(("score FILE.onnx, 10,000-row CSV", wall(score_args, work, n),
                 timed(scorer.scores, data.images[:10_000])))
    fixture = ROOT / "tests/fixtures/mnist-1000"
    run_logreg = ["run", "--data", str(fixture), "--models", "logreg", "--quiet", "--out", str(work / "o"),
                  "--summary", str(work / "s.json")]
    rows.append(("run --models logreg (fixture, new store)", wall(run_logreg, work, n, fresh=work / "mlflow.db"),
                 summary_train_seconds(work / "s.json")))
    clause = robustness_seconds(fixture, model, work)
    rows.append(("models", wall(["models"], work, n), 0.0))
    from digitpipe.validation import validate

    rows.append(("validate --data (60,000 images)", wall(["validate", "--data", str(mnist)], work, n),
                 validate(data).seconds))
    if args.skip_dask:
        demo = ["run", "--data", str(ROOT / "data/demo"), "--models", "mlp,dnn,lenet", "--epochs", str(args.epochs),
                "--quiet", "--out", str(work / "o"), "--summary", str(work / "s.json"), "--force"]
        rows.append((f"run demo mlp,dnn,lenet --epochs {args.epochs}", wall(demo, work, n),
                     summary_train_seconds(work / "s.json")))
    else:
        rows += demo_pair(work, n, args.epochs)

    print(f"{'command':45} {'wall s':>8} {'work s':>8} {'wall/work':>10}")
    for name, seconds, inner in rows:
        ratio = f"{seconds / inner:.1f}" if inner else "-"
        print(f"{name:45} {seconds:8.2f} {inner:8.2f} {ratio:>10}")
    if not args.skip_dask:
        print(f"dask / local on the demo run: {rows[-1][1] / rows[-2][1]:.2f}")
    logreg_run = rows[2][1]
    print(f"robustness clause in the logreg fixture run: {clause:.2f} s of {logreg_run:.2f} s wall "
          f"({clause / (logreg_run - clause):.1%} added to the run without it)")


if __name__ == "__main__":
    main()
