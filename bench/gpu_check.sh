#!/usr/bin/env bash
# For the lent GPU machine (torch only: no prefect, mlflow or great-expectations there; no network).
# Trains lenet and fastcnn for a few epochs on CUDA with the library's own loop and prints seconds per epoch and
# held-out accuracy. MNIST must travel with the working tree: copy ../shared/mnist into .gpu-data/ (git-ignored)
# and name it in the run's carry. Usage there: bash bench/gpu_check.sh [.gpu-data] [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-.gpu-data}
EPOCHS=${2:-3}
PYTHONPATH=. python3 - "$DATA" "$EPOCHS" <<'PY'
import dataclasses, sys
import numpy as np, torch
from digitpipe.data import load_dataset, split_dataset
from digitpipe.models import build_net
from digitpipe.runtime import pick_device, seed_everything
from digitpipe.train import fit, predict_scores
from digitpipe.zoo import SPECS

data, epochs = sys.argv[1], int(sys.argv[2])
device = pick_device()
print(f"device {device}: {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, torch {torch.__version__}")
split = split_dataset(load_dataset(data))
for name in ("lenet", "fastcnn"):
    seed_everything(42, deterministic=device == "cpu")
    spec = dataclasses.replace(SPECS[name], epochs=epochs)
    net = build_net(name)
    history, _ = fit(net, spec, split.train, split.val, device, [lambda r, n=name: print(
        f"  {n} epoch {r.epoch}: {r.seconds:.2f} s, val acc {r.val_accuracy:.4f}", flush=True)])
    acc = np.mean(predict_scores(net, split.test.images, device).argmax(1) == split.test.labels)
    print(f"{name}: {epochs} epochs in {sum(h.seconds for h in history):.1f} s, held-out accuracy {acc:.4f}")
PY
if [ "${SWEEP:-1}" = 1 ]; then PYTHONPATH=. python3 bench/fastcnn_sweep.py "$DATA"; fi
