"""The process's share of the cores, which torch and onnxruntime are given (digitpipe.runtime.core_share)."""

from __future__ import annotations

import pytest

from digitpipe.runtime import available_cores, core_share


@pytest.mark.parametrize("given, share", [
    (None, "every core"), ("1", 1), ("0", "every core"), ("two", "every core"), ("100000", "every core")])
def test_the_share_is_omp_num_threads_but_never_more_than_the_available_cores(monkeypatch, given, share):
    if given is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", given)
    assert core_share() == (available_cores() if share == "every core" else share)
