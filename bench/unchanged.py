"""What the training key saves: two CLI runs of the same models on the same data, one after the other, in one fresh
folder with its own sqlite store; the second trains nothing. Prints both wall times and their ratio.

Usage: python bench/unchanged.py [MNIST_DIR] [--models logreg,mlp,dnn,lenet,fastcnn] [--epochs N]
Target (the issue): on the 60,000-image set with all five models, the second run at most 5% of the first and at
most 30 s on 2 cores. The whole CLI is timed (imports, the temporary Prefect API, validation, split), as a user
waits for it.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, data_parser, mnist_path


def main() -> None:
    parser = data_parser()
    parser.add_argument("--models", default="logreg,mlp,dnn,lenet,fastcnn")
    parser.add_argument("--epochs", type=int, help="every net's epochs (default: the zoo's)")
    args = parser.parse_args()
    data = mnist_path([sys.argv[0], args.data] if args.data else sys.argv[:1]).resolve()
    digitpipe = Path(sys.executable).parent / "digitpipe"
    command = [str(digitpipe), "run", "--data", str(data), "--models", args.models, "--quiet",
               *(["--epochs", str(args.epochs)] if args.epochs else [])]
    with tempfile.TemporaryDirectory(prefix="digitpipe-unchanged-") as folder:
        (Path(folder) / "mlflow.yaml").write_text((ROOT / "mlflow.yaml").read_text())
        seconds = []
        for attempt in ("first", "second"):
            start = time.perf_counter()
            done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
            seconds.append(time.perf_counter() - start)
            if done.returncode != 0:
                sys.exit(f"the {attempt} run failed:\n{done.stderr}")
            print(f"{attempt} run: {seconds[-1]:.1f} s")
            print("  " + "\n  ".join(line for line in done.stderr.splitlines() if "|" not in line))
    print(f"second / first: {seconds[1] / seconds[0]:.3f} ({args.models} on {data})")


if __name__ == "__main__":
    main()
