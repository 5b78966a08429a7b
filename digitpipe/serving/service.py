"""What one server does behind its HTTP routes: answer digits with the followed model, keep the answers, queue
people's feedback into the store in batches, check each window of served digits for drift, count for /metrics."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitpipe.files import first_line
from digitpipe.monitoring.drift import BatchProfile
from digitpipe.records.models import ModelRef
from digitpipe.onnx_scorer import probabilities
from digitpipe.serving.follower import ModelFollower, ServedModel
from digitpipe.serving.inputs import InputError
from digitpipe.serving.middleware import model_header_dict
from digitpipe.serving.requests import Answer, FeedbackQueue, RequestLog

if TYPE_CHECKING:
    from digitpipe.config import TrackingConfig
    from digitpipe.monitoring.alarms import Alarm
    from digitpipe.tracking import Tracker

log = logging.getLogger("digitpipe.serve")
DISCONNECTED = 499  # the status a request whose client hung up is counted under (nginx's); nothing is sent
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class Answered:
    """One request's answer: the model that gave it, each digit's ten probabilities and its request id."""

    served: ServedModel
    probabilities: np.ndarray
    request_ids: list[str]

    def body(self) -> dict:
        """/predict's reply."""
        return {**self.served.names(), "predictions": [
            {"request_id": rid, "digit": int(p.argmax()), "probabilities": [round(float(v), 6) for v in p]}
            for rid, p in zip(self.request_ids, self.probabilities, strict=True)]}

    def headers(self) -> dict[str, str]:
        """The model and version that answered (the only names in MLflow's body), even when swapped out since."""
        return model_header_dict(self.served.names())


class Metrics:
    """The Prometheus counters of one server (their own registry, so that tests can build several)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = r = CollectorRegistry()
        self.requests = Counter("digitpipe_requests", "HTTP requests answered", ["route", "status"], registry=r)
        self.errors = Counter("digitpipe_errors", "Requests refused (4xx) or failed (5xx)", ["route", "status"],
                              registry=r)
        self.disconnects = Counter("digitpipe_client_disconnects", "Clients that hung up before their answer",
                                   ["route"], registry=r)
        self.latency = Histogram("digitpipe_request_seconds", "Time from request to response", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.digits = Counter("digitpipe_digits_served", "Digits answered", registry=r)
        self.version = Gauge("digitpipe_served_version", "1 for the version answering now",
                             ["model", "version", "precision"], registry=r)
        self.drift = Gauge("digitpipe_drift_verdict", "1 for the last window's drift verdict", ["verdict"],
                           registry=r)
        self.answers = Counter("digitpipe_feedback", "People's answers on served digits", ["answer"], registry=r)
        self.live_accuracy = Gauge("digitpipe_web_live_accuracy", "confirmed / (confirmed + corrected) of the "
                                   "version served, from the store's figures at its start on", registry=r)
        self._answered, self._lock = (0, 0), threading.Lock()  # (confirmed, all) of the version served

    def observe(self, route: str, status: int, seconds: float) -> None:
        if status == DISCONNECTED:
            self.disconnects.labels(route).inc()
            return
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        if status >= 400:
            self.errors.labels(route, str(status)).inc()

    def serving(self, served: ServedModel) -> None:
        """A new version answers: its gauges, and the page's live accuracy from its figures in the store."""
        self.version.clear()
        self.version.labels(*[v or "" for v in served.names().values()]).set(1)  # a file has no version
        with self._lock:
            self._answered = served.answered
            self._set_live_accuracy()

    def answer(self, right: bool, current: bool) -> None:
        """Count one person's answer; into live accuracy if it was on the version served now."""
        self.answers.labels("confirmed" if right else "corrected").inc()
        if current:
            with self._lock:
                self._answered = (self._answered[0] + right, self._answered[1] + 1)
                self._set_live_accuracy()

    def _set_live_accuracy(self) -> None:
        confirmed, answered = self._answered
        self.live_accuracy.set(confirmed / answered if answered else float("nan"))

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Service:
    """A followed model and everything kept about what it answered."""

    def __init__(self, follower: ModelFollower, tracker: Tracker, tracking: TrackingConfig,
                 token: str | None = None, on_alarm: Callable[[Alarm], None] | None = None) -> None:
        cfg = tracking.serving
        self.follower, self.tracker, self.tracking, self.token, self.on_alarm = (
            follower, tracker, tracking, token, on_alarm)
        self.requests = RequestLog(cfg.requests_dir, cfg.keep_requests)
        self.feedback = FeedbackQueue(self._record_feedback, cfg.feedback_batch, cfg.feedback_seconds,
                                      Path(cfg.requests_dir) / "unrecorded-feedback.tsv")
        self.metrics = Metrics()
        self.background = ThreadPoolExecutor(1, thread_name_prefix="digitpipe-record")  # store writes, in order
        self._window_lock = threading.Lock()
        self._windows = 0  # drift windows so far
        self._start_window(follower.current)
        follower.on_swap(self._start_window)

    def answer(self, images: np.ndarray) -> Answered:
        """The followed model's answer for each image, kept for feedback and counted into the drift window."""
        served = self.follower.current
        scores = served.scorer.scores(images)
        probs = probabilities(scores)
        ids = self.requests.add(images, probs.argmax(1), served.version)
        self._count(served, images, scores)
        self.metrics.digits.inc(len(images))
        return Answered(served, probs, ids)

    def give_feedback(self, answer: Answer, label: int) -> int:
        """Queue a person's answer on a served digit (the first label given to an answer stands: a second is
        refused); returns how many wait to be recorded."""
        if (kept := self.requests.label(answer.request_id, label)) is not None:
            raise InputError(409, f"request_id {answer.request_id}: feedback was given already (the digit {kept}); "
                                  "an answer takes one label, the first")
        self.metrics.answer(label == answer.digit, current=answer.version == self.follower.current.version)
        return self.feedback.add(answer, label)

    def _record_feedback(self, answers: list[Answer], labels: list[int]) -> None:
        """One feedback run for a batch of answers on one version, as `digitpipe feedback` records labels."""
        from digitpipe.monitoring.alarms import record_feedback
        from digitpipe.records.feedback import Feedback

        version = answers[0].version
        feedback = Feedback(np.stack([a.image() for a in answers]), np.array(labels, np.int64),
                            np.array([a.number for a in answers], np.int64),
                            f"web-{answers[-1].at[:19].replace(':', '')}", origin="web")
        with tempfile.TemporaryDirectory(prefix="digitpipe-feedback-") as tmp:
            current = self.follower.current
            if version == current.version:  # the version answering now (or a file): its own file
                path, identity = current.path, current.identity
            else:
                ref = ModelRef.of_version(current.identity.registered_model, version)
                path, identity = self.tracker.registry.resolve(ref, Path(tmp))
            result = record_feedback(self.tracker, feedback, path, identity, self.tracking.monitoring)
        log.info("%s", result.line())

    def _start_window(self, served: ServedModel) -> None:
        self.metrics.serving(served)
        with self._window_lock:
            self._window: tuple[ServedModel, list[tuple[np.ndarray, np.ndarray]], int] = (served, [], 0)

    def _count(self, served: ServedModel, images: np.ndarray, scores: np.ndarray) -> None:
        """Keep the digits for the drift window (profiled when it is full, off the request's path)."""
        with self._window_lock:
            owner, kept, rows = self._window
            if served.reference is None or owner is not served:  # no reference, or the old version's request
                return
            kept.append((images, scores))
            self._window = (served, kept, rows + len(images))
            if rows + len(images) < self.tracking.serving.drift_window:
                return
            self._windows += 1
            self._window, number = (served, [], 0), self._windows
        self.background.submit(self._record_window, served, kept, number)

    def _record_window(self, served: ServedModel, kept: list, number: int) -> None:
        """The window's verdict (for /metrics) and each feature's PSI as a serving run; a Prefect event only where
        asked for."""
        runs = self.tracker.runs
        try:
            profile = BatchProfile(served.reference)
            profile.add(np.concatenate([images for images, _ in kept]), np.concatenate([s for _, s in kept]))
            drift = profile.verdict(self.tracking.monitoring)
            self.metrics.drift.clear()
            self.metrics.drift.labels(drift.kind.value).set(1)
            with runs.drift_run(f"served window {number}", "serving",
                                {**served.identity.params(), "window_digits": drift.rows}, drift):
                pass  # the verdict and each feature's PSI are the window's whole record
            if self.tracking.serving.drift_events and drift.drifted and self.on_alarm:
                from digitpipe.monitoring.alarms import batch_alarm

                if alarm := batch_alarm(self.tracker, served.identity, f"served window {number}", drift):
                    self.on_alarm(alarm)
        except Exception as exc:  # a signal: a store that is down must not stop the answers
            log.warning("cannot record served window %d (%s)", number, first_line(exc, 160))

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        """Follow the alias and record feedback while the server runs; record what waits when it stops."""
        self.follower.start()
        self.feedback.start()
        try:
            yield
        finally:  # the follower's files go last: the feedback recorded at the end scores with them
            self.feedback.close()
            self.background.shutdown(wait=True)
            self.follower.stop()
            self.requests.close()
