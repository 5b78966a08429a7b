"""Seed, device and threads: chosen once at the entry point (a Dask worker's task, for its device) and passed down."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Mapping

import numpy as np

# torch is imported inside the functions that need it: a logreg-only run and the scoring commands never load it.


def pick_device() -> str:
    """"cuda" when a GPU is present, else "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with `deterministic` (the CPU), also ask torch for deterministic kernels,
    so the same seed gives the same run to the last digit."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def available_cores() -> int:
    """Cores this process may use (containers often report more than they grant)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def core_share() -> int:
    """The cores this process should use: its share where the environment gives one (OMP_NUM_THREADS: Dask's nanny
    sets it to 1 for each worker, an operator running several workers on one host sets cores / workers), else every
    available core. Two processes that each take every core slow each other down many times over."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    share = min(int(given), available_cores()) if given.isdigit() else 0  # never more threads than cores
    return max(1, share or available_cores())


def owner() -> dict[str, object]:
    """This process as the owner of a run or a trial: a later process tells a dead owner from a live one."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def owner_gone(recorded: Mapping[str, object]) -> bool:
    """Whether the process `owner()` recorded (a run's tags, a trial's attributes) ran on this host and is gone (a
    kill -9, a crash). An owner on another host cannot be checked from here: it is taken as alive."""
    if recorded.get("host") != socket.gethostname():
        return False
    try:
        return not process_alive(int(recorded.get("pid") or 0))
    except ValueError:
        return False


def process_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def use_cores(threads: int | None = None) -> int:
    """Give torch `threads` intra-op threads, by default this process's share of the cores (core_share)."""
    import torch

    threads = max(1, threads or core_share())
    torch.set_num_threads(threads)
    return threads


LINEAGE_PACKAGES = ("digitpipe", "torch", "scikit-learn", "numpy", "onnx", "onnxruntime", "mlflow", "prefect",
                    "great-expectations")


def lineage() -> dict[str, str]:
    """Which code ran: the git commit of the checkout (MLflow's own tag name, shown in its UI) and package versions."""
    from importlib import metadata

    tags = {"mlflow.source.git.commit": git_commit(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    for package in LINEAGE_PACKAGES:
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return tags


def git_commit(checkout: str) -> str:
    """HEAD of the git checkout at `checkout`; 'unknown' outside one (an installed wheel, a container).

    Git refuses a checkout owned by another user ("dubious ownership", as in CI or a mounted volume) unless the
    folder is named safe; the command line names it, since only reading HEAD is asked of git here."""
    import subprocess

    try:
        done = subprocess.run(["git", "-c", f"safe.directory={checkout}", "-C", checkout, "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def utc_now() -> str:
    """The time now, UTC, to the second (ISO 8601): the stamp on decisions recorded in the registry."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
