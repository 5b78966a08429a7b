"""The commands' wall times in two checkouts of digitpipe, alternating on one machine (median of N): what a
restructuring costs a user. Usage: python bench/house_compare.py OLD_CHECKOUT NEW_CHECKOUT [--repeats 5]
Each checkout runs from its own source (PYTHONPATH) with this interpreter's packages; a checkout with a `cli`
package runs `python -m cli`, an older one `python -m digitpipe`. Needs ../shared/mnist (skips cleanly without)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from _common import mnist_path

from digitpipe.baseline import fit_logreg
from digitpipe.data import load_dataset, split_dataset
from digitpipe.export import export_onnx
from digitpipe.records.specs import SPECS

FIXTURE = Path(__file__).resolve().parents[1] / "tests/fixtures/mnist-1000"


def command(checkout: Path) -> list[str]:
    return [sys.executable, "-m", "cli" if (checkout / "cli").is_dir() else "digitpipe"]


def seconds(checkout: Path, args: list[str], work: Path) -> float:
    """Wall seconds of one command in a fresh process, run in `work` with a new MLflow store."""
    for leftover in work.glob("mlflow.db*"):
        leftover.unlink()
    env = {**os.environ, "PYTHONPATH": str(checkout), "MLFLOW_TRACKING_URI": f"sqlite:///{work}/mlflow.db"}
    start = time.perf_counter()
    done = subprocess.run(command(checkout) + args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:  # a failed command measures nothing
        sys.exit(f"{checkout}: digitpipe {' '.join(args)} exited {done.returncode}: {done.stderr[-500:]}")
    return time.perf_counter() - start


def rows(mnist: Path, work: Path) -> dict[str, list[str]]:
    """The commands measured, on inputs made here: a 10,000-row CSV and a logreg ONNX file."""
    digits = load_dataset(mnist)
    csv = work / "batch.csv"
    pd.DataFrame(digits.flat()[:10_000], columns=[f"pixel{i}" for i in range(784)]).to_csv(csv, index=False)
    model = export_onnx(fit_logreg(SPECS["logreg"], split_dataset(load_dataset(FIXTURE)).train), work / "m.onnx")
    return {"--help": ["--help"], "score FILE.onnx, 10,000 rows": ["score", "--model", str(model), "--input",
                                                                      str(csv), "--output", str(work / "p.csv")],
            "validate 60,000 images": ["validate", "--data", str(mnist)],
            "run --models logreg, fixture": ["run", "--data", str(FIXTURE), "--models", "logreg", "--quiet",
                                             "--out", str(work / "out")]}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    mnist = mnist_path([])  # exits 0 with a note where ../shared/mnist is absent
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("| command | old (s) | new (s) | new / old |\n|---|---:|---:|---:|")
        for name, argv in rows(mnist, work).items():
            times = {"old": [], "new": []}
            for _ in range(args.repeats):  # alternating: load on the machine falls on both
                for side in times:
                    times[side].append(seconds(getattr(args, side), argv, work))
            old, new = statistics.median(times["old"]), statistics.median(times["new"])
            print(f"| {name} | {old:.2f} | {new:.2f} | {new / old:.3f} |", flush=True)
