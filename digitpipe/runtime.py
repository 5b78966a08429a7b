"""Seed, device and threads: chosen once at the entry point and passed down."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; with `deterministic` (the CPU), also ask torch for deterministic kernels,
    so the same seed gives the same run to the last digit."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def available_cores() -> int:
    """Cores this process may use (containers often report more than they grant)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_all_cores() -> int:
    """Give torch one intra-op thread per available core."""
    cores = available_cores()
    torch.set_num_threads(cores)
    return cores
