"""Labelled feedback: joining labels to a scored file, the held-out share, and the alarm a batch raises."""

from __future__ import annotations

import numpy as np
import pytest

from digitpipe.data import Dataset, split_dataset
from digitpipe.errors import DataError
from digitpipe.monitoring.alarms import DRIFT_EVENT, LOW_ACCURACY_EVENT, Alarm, alarm_for
from digitpipe.monitoring.feedback import held_out, join_labels, labelled_in_file, train_on_feedback
from digitpipe.records.feedback import Feedback, combine
from tests.helpers import write_kaggle_csv


def labels_csv(path, rows: list[tuple[object, object]]):
    path.write_text("ImageId,Label\n" + "".join(f"{i},{label}\n" for i, label in rows))
    return path


def test_labels_join_the_scored_rows_by_image_id(digits, tmp_path):
    scored = write_kaggle_csv(tmp_path / "batch.csv", digits.images[:20])
    labels = labels_csv(tmp_path / "labels.csv", [(5, digits.labels[4]), (1, digits.labels[0]), (20, digits.labels[19])])
    feedback, skipped = join_labels(scored, labels)
    assert skipped == 0 and feedback.image_ids.tolist() == [5, 1, 20]
    assert np.array_equal(feedback.images, digits.images[[4, 0, 19]])
    assert feedback.labels.tolist() == digits.labels[[4, 0, 19]].tolist()


@pytest.mark.parametrize("rows, message", [
    ([(1, 3), (21, 4)], "1 ImageId(s) are not rows of {scored} (first: 21; ImageIds run from 1 to its last row)"),
    ([(1, 3), (2, "")], "line 3: no Label"),
    ([(1, 3), ("", 4)], "line 3: no ImageId"),
    ([(1, 3), (1, 4)], "ImageId 1 is labelled more than once"),
    ([(2, 10)], "ImageId 2: label 10 is not a digit 0-9"),
    ([(1, "seven")], "expected a CSV with columns ImageId,Label of integers"),
])
def test_bad_labels_are_one_clear_error_naming_the_file(digits, tmp_path, rows, message):
    scored = write_kaggle_csv(tmp_path / "batch.csv", digits.images[:20])
    labels = labels_csv(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError) as error:
        join_labels(scored, labels)
    assert str(error.value).startswith(f"{labels}: {message.format(scored=scored)}")


def test_labels_of_rows_the_file_rejected_are_skipped_and_counted(digits, tmp_path):
    scored = write_kaggle_csv(tmp_path / "batch.csv", digits.images[:5])
    lines = scored.read_text().splitlines()
    lines[2] = lines[2].replace(",0,", ",300,", 1)  # row 2: a pixel out of range, rejected when scored
    scored.write_text("\n".join(lines) + "\n")
    feedback, skipped = join_labels(scored, labels_csv(tmp_path / "labels.csv", [(1, 5), (2, 0), (3, 4)]))
    assert (feedback.image_ids.tolist(), feedback.labels.tolist(), skipped) == ([1, 3], [5, 4], 1)


def test_a_later_label_of_the_same_digit_corrects_the_earlier_one(digits):
    first = Feedback(digits.images[:3], np.array([1, 2, 3]), np.arange(1, 4), "monday")
    again = Feedback(digits.images[1:2], np.array([7]), np.array([1]), "tuesday")
    combined = combine([first, again])
    assert len(combined) == 3 and combined.labels.tolist() == [1, 3, 7]


def test_a_file_with_its_own_labels_is_feedback_and_one_without_is_not(digits, tmp_path):
    labelled = labelled_in_file(write_kaggle_csv(tmp_path / "l.csv", digits.subset(np.arange(10))))
    assert labelled.labels.tolist() == digits.labels[:10].tolist() and labelled.image_ids.tolist() == list(range(1, 11))
    assert labelled_in_file(write_kaggle_csv(tmp_path / "u.csv", digits.images[:10])) is None


def test_feedback_round_trips_through_its_file(digits, tmp_path):
    feedback = Feedback(digits.images[:7], digits.labels[:7], np.arange(1, 8), "batch.csv")
    loaded = Feedback.load(feedback.save(tmp_path / "f.npz"))
    assert np.array_equal(loaded.images, feedback.images) and loaded.labels.tolist() == feedback.labels.tolist()


def test_the_held_out_share_is_a_fixed_function_of_each_image(digits):
    mask = held_out(digits)
    assert 0.25 < mask.mean() < 0.35  # HELD_OUT_SHARE 0.3 of 1,000 images
    reordered = digits.subset(np.arange(len(digits))[::-1])
    assert np.array_equal(held_out(reordered), mask[::-1])  # the same digits, whatever the order or the run


def test_training_gets_the_feedback_that_is_not_held_out(digits):
    split = split_dataset(digits)
    shifted = Dataset(np.roll(digits.images[:300], 4, axis=2), digits.labels[:300].copy(), "feedback")
    with_feedback, kept = train_on_feedback(split, combine([Feedback(shifted.images, shifted.labels,
                                                                     np.arange(1, 301), "b")] * 2))  # twice: once
    assert len(with_feedback.train) + len(kept) == len(split.train) + 300
    leaked, _ = train_on_feedback(split, Dataset(split.test.images, split.test.labels, "the test file, labelled"))
    assert leaked == split  # a labelled copy of the base data adds nothing
    assert not np.isin(kept.image_hashes(), with_feedback.train.image_hashes()).any()
    assert with_feedback.test is split.test and with_feedback.val is split.val
    assert train_on_feedback(split, None) == (split, None)


@pytest.mark.parametrize("drift, accuracy, event, reason", [
    ("ok", 0.99, None, None),
    ("warn", None, None, None),
    ("drift", None, DRIFT_EVENT, "the batch drifted from the training data"),
    ("ok", 0.90, LOW_ACCURACY_EVENT, "live accuracy 90.00% is below the floor 95.00%"),
    ("drift", 0.90, LOW_ACCURACY_EVENT, "live accuracy 90.00% is below the floor 95.00%"),
])
def test_a_batch_raises_an_alarm_on_drift_or_low_live_accuracy(drift, accuracy, event, reason):
    alarm = alarm_for("digits", "3", "night.csv", drift == "drift", accuracy, 0.95, new_feedback=False)
    assert (alarm and alarm.event, alarm and alarm.reason) == (event, reason)


def test_an_alarm_asks_for_retraining_only_with_new_feedback_and_never_for_a_plain_onnx_file():
    alert = alarm_for("digits", "3", "night.csv", True, None, 0.95, new_feedback=False)
    assert alert.line() == ("digitpipe.drift.detected for v3 (the batch drifted from the training data); alert for a "
                            "person: no labelled feedback newer than the champion to retrain on")
    retrain = Alarm(alert.event, "digits", "3", "night.csv", alert.reason, retrain=True)
    assert retrain.line().endswith("; retraining requested: labelled feedback newer than the champion exists")
    assert alarm_for("digits", None, "night.csv", True, 0.1, 0.95, new_feedback=True) is None
