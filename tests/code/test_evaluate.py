"""Metrics against hand-computed values."""

import numpy as np

from digitpipe.evaluate import evaluate


def test_accuracy_precision_recall_and_confusion():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 4, 5, 6])
    predicted = np.array([0, 1, 1, 1, 2, 0, 3, 4, 5, 6])
    result = evaluate(labels, predicted)
    assert result.accuracy == 0.8
    assert result.precision[0] == 0.5 and result.recall[0] == 0.5
    assert result.precision[1] == 2 / 3 and result.recall[1] == 1.0
    assert result.recall[2] == 0.5 and result.precision[2] == 1.0
    assert result.confusion[0][1] == 1 and result.confusion[2][0] == 1 and np.sum(result.confusion) == 10
    assert result.precision[9] == 0.0  # digit never seen nor predicted: defined as 0, not a crash
    assert result.metrics()["test_accuracy"] == 0.8 and len(result.metrics()) == 22
    assert 0 < result.macro_f1 < 1
