"""digitpipe.interrupts: a signal stops the main thread where it is and other threads at their next check; alias
moves are never cut in half; the training loop stops at its next batch with the last epoch's checkpoint kept."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest
import torch

from digitpipe import interrupts, train
from digitpipe.data.dataset import Dataset
from digitpipe.models import build_net
from digitpipe.records.specs import SPECS, with_values


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_raises_interrupted_in_the_main_thread_with_its_exit_code(signum, code, name):
    with pytest.raises(interrupts.Interrupted) as stopped, interrupts.stoppable() as stops:
        signal.raise_signal(signum)
    assert (stopped.value.exit_code, stopped.value.name) == (code, name)
    assert [stop.signum for stop in stops] == [signum]  # what the command line reports after the block
    assert interrupts.asked() is None  # and the next command starts with none


def test_handlers_are_restored_after_the_block():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(interrupts.Interrupted), interrupts.stoppable():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_thread_stops_at_its_next_check():
    reached = threading.Event()
    outcome = []

    def work():
        reached.set()
        try:
            while True:
                interrupts.check()
        except interrupts.Interrupted as stop:
            outcome.append(stop.name)

    with interrupts.stoppable():
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        reached.wait(5)
        with pytest.raises(interrupts.Interrupted):
            signal.raise_signal(signal.SIGINT)
        worker.join(5)  # within the command: its end clears the stop for the next one
    assert outcome == ["SIGINT"]


def test_a_deferred_block_finishes_before_the_signal_stops_the_work():
    done = []
    with pytest.raises(interrupts.Interrupted), interrupts.stoppable():
        with interrupts.deferred():
            signal.raise_signal(signal.SIGTERM)
            done.append("first alias")
            done.append("second alias")
        done.append("after the block")
    assert done == ["first alias", "second alias"]


def test_outside_a_command_deferred_and_check_change_nothing():
    before = {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS}
    with interrupts.deferred():
        interrupts.check()
    interrupts.rearm()  # no command armed it: the handlers stay as they are
    assert {signum: signal.getsignal(signum) for signum in interrupts.SIGNALS} == before


def test_a_second_signal_inside_a_deferred_block_ends_the_process_at_once():
    from tests.helpers import python

    done = python("import signal\nfrom digitpipe import interrupts\n"
                  "with interrupts.stoppable(), interrupts.deferred():\n"
                  "    signal.raise_signal(signal.SIGINT)\n    signal.raise_signal(signal.SIGINT)\n"
                  "    print('never here')\n")
    assert (done.code, done.out) == (130, "")
    assert done.err == "digitpipe: SIGINT again: stopped at once\n"


def test_training_stops_at_the_next_batch_and_keeps_the_last_epochs_checkpoint(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = Dataset(rng.integers(0, 256, (512, 28, 28), dtype=np.uint8), rng.integers(0, 10, 512).astype(np.int64),
                   "random")
    spec = with_values(SPECS["mlp"], {"epochs": 5, "batch_size": 64, "patience": None})
    checkpoint = tmp_path / "mlp.pt"
    batches = []

    def stop_in_the_second_epoch(result):  # a callback runs after each epoch's checkpoint
        if result.epoch == 1:
            interrupts._note(signal.SIGTERM)  # what the handler does, without raising in this (main) thread

    original = interrupts.check

    def counted():
        batches.append(1)
        original()

    torch.manual_seed(0)
    monkeypatch.setattr(interrupts, "check", counted)
    try:
        with pytest.raises(interrupts.Interrupted):
            train.fit(build_net("mlp", spec), spec, data, data, "cpu", [stop_in_the_second_epoch], checkpoint)
    finally:
        interrupts._asked.clear()
    assert len(batches) == 8 + 1  # one epoch of 8 batches, then the first check of the next
    assert len(torch.load(checkpoint, weights_only=True)["history"]) == 1
