"""What `digitpipe tune` buys and costs, in one run on the book split of ../shared/mnist (skips cleanly without).

Usage: python bench/tuning.py [MNIST_DIR] [--model dnn] [--trials 16] [--epochs 8] [--rows 20000] [--skip-pruning] [--skip-parallel]
1. Pruning pays: the same study (same sampler seed, same trials budget) with Hyperband and without, back to back;
   prints the share pruned, both wall times and their ratio, and both best values.
2. Parallel: one process against two on one PostgreSQL study (a throwaway cluster from tests/pg.py), each process
   with its share of the cores; prints trials per minute and the ratio. Needs Debian's PostgreSQL.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, SHARED_MNIST

from digitpipe import studies
from digitpipe.config import StudyPlan
from digitpipe.data import load_dataset, split_dataset
from digitpipe.data.idx import write_idx
from digitpipe.runtime import core_share


def study(folder: Path, split, args, prune: bool) -> tuple[float, studies.optuna.Study]:
    plan = StudyPlan(model=args.model, trials=args.trials, study=f"prune-{prune}",
                     storage=f"sqlite:///{folder / 'optuna.db'}", base={"epochs": args.epochs}, prune=prune)
    start = time.perf_counter()
    found = studies.search(plan, split, studies.open_study(plan, split))
    return time.perf_counter() - start, found


def pruning(split, args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("a", "b"):
            (Path(tmp) / name).mkdir()
        plain_s, plain = study(Path(tmp) / "a", split, args, prune=False)
        pruned_s, pruned = study(Path(tmp) / "b", split, args, prune=True)
    share = studies.counts(pruned).get("pruned", 0) / len(pruned.trials)
    print(f"pruning: {args.trials} trials of {args.model}, {args.epochs} epochs each at most")
    print(f"  without pruner {plain_s:7.1f} s, best {plain.best_value:.4f}")
    print(f"  with Hyperband {pruned_s:7.1f} s, best {pruned.best_value:.4f}, {share:.0%} of trials pruned")
    print(f"  wall ratio pruned / plain {pruned_s / plain_s:.2f}; best differs by "
          f"{100 * (pruned.best_value - plain.best_value):+.2f} points")


def parallel(data_dir: Path, args) -> None:
    sys.path.insert(0, str(ROOT))
    from flows.startup import free_port
    from tests.pg import pg_bin, start_cluster, stop_cluster

    if pg_bin() is None:
        print("parallel: skipped (no PostgreSQL binaries)")
        return
    cluster = start_cluster(free_port())
    try:
        rates = {}
        for processes in (1, 2):
            database = f"bench_{processes}"
            cluster.run_script(f"CREATE DATABASE {database};")
            threads = max(1, core_share() // processes)
            command = [str(Path(sys.executable).with_name("digitpipe")), "tune", "--data", data_dir, "--model",
                       args.model, "--trials", str(args.trials), "--epochs", str(args.epochs), "--seeds", "0",
                       "--no-prune", "--quiet", "--threads", str(threads), "--storage", cluster.url(database)]
            with tempfile.TemporaryDirectory() as cwd:
                start = time.perf_counter()
                workers = [subprocess.Popen(list(map(str, command)), cwd=cwd) for _ in range(processes)]
                assert all(w.wait() == 0 for w in workers)
                seconds = time.perf_counter() - start
            found = studies.optuna.load_study(study_name=args.model, storage=cluster.url(database))
            finished = len([t for t in found.trials if t.state.name == "COMPLETE"])
            rates[processes] = 60 * finished / seconds
            print(f"parallel: {processes} process(es), {threads} thread(s) each: {finished} trials in "
                  f"{seconds:.1f} s, {rates[processes]:.2f} trials/min (start-up included)")
        print(f"  two processes / one: {rates[2] / rates[1]:.2f}x trials per minute")
    finally:
        stop_cluster(cluster)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", type=Path, default=SHARED_MNIST)
    parser.add_argument("--model", default="dnn")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--rows", type=int, default=20000, help="a stratified sample of the training set")
    parser.add_argument("--skip-parallel", action="store_true")
    parser.add_argument("--skip-pruning", action="store_true")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: no MNIST data at {args.data}")
        return
    data = load_dataset(args.data)
    keep = np.sort(np.random.default_rng(0).permutation(len(data))[: args.rows])
    data = data.subset(keep)
    split = split_dataset(data)
    print(f"book split of {len(data):,} MNIST digits: train {len(split.train):,}, val {len(split.val):,} "
          f"(the test part is not read); {core_share()} cores")
    if not args.skip_pruning:
        pruning(split, args)
    if not args.skip_parallel:
        with tempfile.TemporaryDirectory() as tmp:
            write_idx(Path(tmp) / "train-images-idx3-ubyte.gz", data.images, 2051)  # IDX magic numbers
            write_idx(Path(tmp) / "train-labels-idx1-ubyte.gz", data.labels, 2049)
            parallel(Path(tmp), args)


if __name__ == "__main__":
    main()
