"""Seed, device and threads: chosen once at the entry point and passed down."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch so the same seed on the CPU gives the same run."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def available_cores() -> int:
    """Cores this process may use (containers often report more than they grant)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_all_cores() -> int:
    """Give torch one intra-op thread per available core."""
    cores = available_cores()
    torch.set_num_threads(cores)
    return cores
