"""What a server keeps of its answers (digitpipe.serving.requests): bounded, rotated files that survive a restart,
and people's answers recorded in batches, one per version, kept when the store is down."""

import threading

import numpy as np

from digitpipe.serving.requests import FILES, FeedbackQueue, RequestLog


def _images(n: int, start: int = 0) -> np.ndarray:
    return ((np.arange(n)[:, None, None] + start + np.zeros((1, 28, 28))) % 256).astype(np.uint8)


def test_answers_are_found_by_request_id_and_survive_a_restart(tmp_path):
    log = RequestLog(tmp_path, keep=100)
    ids = log.add(_images(3), np.array([1, 2, 3]), version="4")
    log.close()
    again = RequestLog(tmp_path, keep=100)
    answer = again.find(ids[1])
    assert (answer.digit, answer.version, answer.number) == (2, "4", 2)
    assert np.array_equal(answer.image(), _images(3)[1])
    assert again.add(_images(1), np.array([5]), "4") and again.find(ids[0]).number == 1  # numbering goes on
    assert again.find("unknown") is None


def test_at_most_keep_answers_are_kept_on_disk_the_oldest_go_first(tmp_path):
    log = RequestLog(tmp_path, keep=100)  # 4 files of 25
    ids = [rid for i in range(30) for rid in log.add(_images(5, i), np.zeros(5, int), "1")]
    log.close()
    files = sorted(tmp_path.glob("requests-*.jsonl"))
    assert len(files) == FILES and sum(len(f.read_text().splitlines()) for f in files) <= 100
    assert log.find(ids[0]) is None and log.find(ids[-1]) is not None
    assert RequestLog(tmp_path, keep=100).find(ids[-1]) is not None


def test_a_line_cut_short_by_a_kill_is_skipped(tmp_path):
    log = RequestLog(tmp_path, keep=100)
    kept = log.add(_images(2), np.array([1, 2]), "1")
    log.close()
    with next(tmp_path.glob("requests-*.jsonl")).open("a") as f:
        f.write('{"id": "half')
    again = RequestLog(tmp_path, keep=100)
    assert again.find(kept[1]).digit == 2
    after = again.add(_images(1), np.array([9]), "1")  # starts a line of its own, not glued to the cut one
    again.close()
    assert RequestLog(tmp_path, keep=100).find(after[0]).digit == 9


def test_feedback_is_recorded_in_batches_per_version_and_kept_when_recording_fails(tmp_path):
    log = RequestLog(tmp_path, keep=100)
    ids = log.add(_images(4), np.array([1, 2, 3, 4]), "1") + log.add(_images(1), np.array([7]), "2")
    recorded, fail = [], threading.Event()
    fail.set()

    def record(answers, labels):
        if fail.is_set():
            raise ConnectionError("store down")
        recorded.append(([a.version for a in answers], labels))

    queue = FeedbackQueue(record, batch=100, seconds=3600, unrecorded=tmp_path / "unrecorded.tsv")
    for rid, label in zip(ids, [1, 9, 3, 4, 7], strict=True):
        queue.add(log.find(rid), label)
    queue.add(log.find(ids[1]), 2)  # a second answer on one digit replaces the first
    queue.flush()
    assert recorded == []  # the store was down: nothing lost
    fail.clear()
    queue.close()
    assert sorted(recorded) == [(["1"] * 4, [1, 2, 3, 4]), (["2"], [7])]


def test_a_full_batch_is_recorded_at_once_and_what_the_store_refuses_at_stop_waits_for_the_next_start(tmp_path):
    log = RequestLog(tmp_path, keep=100)
    ids = log.add(_images(3), np.array([1, 2, 3]), "1")
    recorded, arrived = [], threading.Event()

    def record(answers, labels):
        recorded.append(labels)
        arrived.set()

    queue = FeedbackQueue(record, batch=2, seconds=3600, unrecorded=tmp_path / "unrecorded.tsv")
    queue.start()
    queue.add(log.find(ids[0]), 1)
    queue.add(log.find(ids[1]), 5)
    assert arrived.wait(30) and recorded == [[1, 5]]  # the second answer filled the batch: no timer waited
    queue.close()

    def refuse(answers, labels):
        raise ConnectionError("store down")

    down = FeedbackQueue(refuse, batch=100, seconds=3600, unrecorded=tmp_path / "unrecorded.tsv")
    down.add(log.find(ids[2]), 8)
    down.close()
    assert (tmp_path / "unrecorded.tsv").exists()
    back = FeedbackQueue(lambda answers, labels: recorded.append(labels), batch=100, seconds=3600,
                         unrecorded=tmp_path / "unrecorded.tsv")
    back.close()
    assert recorded[-1] == [8] and not (tmp_path / "unrecorded.tsv").exists()
