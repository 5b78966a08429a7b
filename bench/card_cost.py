"""What the evidence card costs: one fixture run of logreg and LeNet (the flow in this process, on a temporary
Prefect API and a fresh sqlite store), with the time spent writing the cards (scoring both ONNX files, the
picture, logging to MLflow, the Prefect artifact) summed beside the run's wall time. Prints their ratio.

Usage: python bench/card_cost.py [MNIST_DIR] [--epochs N]   (default: the committed fixture, tests/fixtures/mnist-1000)
Target (the issue): at most 2% of the run's wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import ROOT


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", nargs="?", default=str(ROOT / "tests/fixtures/mnist-1000"))
    parser.add_argument("--epochs", type=int, help="every net's epochs (default: the zoo's, 30 for LeNet)")
    args = parser.parse_args()

    from digitpipe.config import PipelineConfig, PromotionConfig, TrackingConfig
    from flows import startup, training

    spent = []
    publish = training.publish_card

    def timed_publish(*call, **named):
        start = time.perf_counter()
        publish(*call, **named)
        spent.append(time.perf_counter() - start)

    training.publish_card = timed_publish
    with tempfile.TemporaryDirectory(prefix="digitpipe-card-bench-") as folder, startup.prefect_api() as api_url:
        startup.wait_until_ready(api_url)
        tracking = TrackingConfig(tracking_uri=f"sqlite:///{folder}/m.db", promotion=PromotionConfig(min_accuracy=0))
        for attempt in ("warm-up (a champion to compare with)", "measured"):
            cfg = PipelineConfig(data=Path(args.data).resolve(), models=("logreg", "lenet"), epochs=args.epochs,
                                 out_dir=Path(folder) / "out", tracking=tracking, force=True)
            spent.clear()
            start = time.perf_counter()
            training.training_flow(cfg)
            wall = time.perf_counter() - start
            print(f"{attempt}: run {wall:.1f} s, cards {sum(spent):.2f} s ({len(spent)} cards), "
                  f"cards / run {sum(spent) / wall:.3f}")


if __name__ == "__main__":
    main()
