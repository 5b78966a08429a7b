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
import dataclasses, sys, time
import numpy as np, torch
from digitpipe.data import load_dataset, split_dataset
from digitpipe.models import SPECS
from digitpipe.runtime import pick_device, seed_everything
from digitpipe.train import predict_scores, train_model

data, epochs = sys.argv[1], int(sys.argv[2])
device = pick_device()
print(f"device {device}: {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}")
split = split_dataset(load_dataset(data))
for name in ("lenet", "fastcnn"):
    seed_everything(42, deterministic=device.type == "cpu")
    spec = dataclasses.replace(SPECS[name], epochs=epochs)
    trained = train_model(name, spec, split, device, [lambda r, n=name: print(
        f"  {n} epoch {r.epoch}: {r.seconds:.2f} s, val acc {r.val_accuracy:.4f}", flush=True)])
    acc = np.mean(predict_scores(trained.model, split.test.images, device).argmax(1) == split.test.labels)
    print(f"{name}: {epochs} epochs in {trained.train_seconds:.1f} s, held-out accuracy {acc:.4f}")
PY
if [ "${SWEEP:-1}" = 1 ]; then PYTHONPATH=. python3 bench/fastcnn_sweep.py "$DATA"; fi
