"""bench/serving.py's one-digit latency inside the service (the ASGI app, request in to response out) for two
checkouts of digitpipe, alternating on one machine, against one store: what a change to the service costs a request.

Usage: python bench/serving_trees.py OLD_CHECKOUT NEW_CHECKOUT [MNIST_DIR] [--rounds 3] [--calls 2000]
Each checkout's own `bench/serving.py` (`one_at_a_time`) runs in a fresh process from that checkout's source
(PYTHONPATH) with this interpreter's packages, on fastcnn (v1) of a store this checkout makes; prints each round's
p50 and p99 and the ratio of the medians (NEW / OLD). Needs ../shared/mnist or MNIST_DIR (skips cleanly without)."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SHARED_MNIST, mnist_path
from serving import make_store

RUN = """import sys
from pathlib import Path
sys.path[:0] = [{tree!r}, {tree!r} + "/bench"]
from digitpipe.data import load_dataset
from serving import one_at_a_time
one_at_a_time(Path({config!r}), "1", load_dataset({data!r}).images[-2000:], {calls})
"""
INSIDE = re.compile(r"inside the service \(ASGI app, request in to response out\): p50 ([\d.]+) ms, p99 ([\d.]+) ms")


def inside(tree: Path, config: Path, data: Path, calls: int) -> tuple[float, float]:
    """p50 and p99 (ms) inside the service of `tree`, in a fresh process."""
    code = RUN.format(tree=str(tree), config=str(config), data=str(data), calls=calls)
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, timeout=600, cwd=config.parent)
    found = INSIDE.search(done.stdout)
    if done.returncode or not found:
        sys.exit(f"{tree}: exited {done.returncode}: {done.stderr[-800:]}")
    return float(found[1]), float(found[2])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("data", nargs="?", default=str(SHARED_MNIST))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    data = mnist_path([sys.argv[0], args.data])
    with tempfile.TemporaryDirectory() as tmp:
        config = make_store(Path(tmp), data)
        seen: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        for round_ in range(args.rounds):
            for side in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                seen[side].append(inside(getattr(args, side).resolve(), config, data, args.calls))
                print(f"round {round_ + 1} {side}: p50 {seen[side][-1][0]:.2f} ms, p99 {seen[side][-1][1]:.2f} ms",
                      flush=True)
    for i, name in enumerate(("p50", "p99")):
        old, new = (statistics.median(x[i] for x in seen[side]) for side in ("old", "new"))
        print(f"median {name}: old {old:.2f} ms, new {new:.2f} ms, new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
