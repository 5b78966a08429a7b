"""What the monitor raises, and recording it without Prefect: an Alarm for a drifted batch or a live accuracy below the
floor (its event names are what Prefect's automations match, prefect.yaml), the champion's live accuracy on labelled
feedback, and the alarm as tags on the version. The flows send the alarm as a Prefect event (flows/events.py), whose
deployment trigger starts a retraining run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitpipe.runtime import utc_now

if TYPE_CHECKING:
    from digitpipe.config import MonitoringConfig
    from digitpipe.records.feedback import Feedback
    from digitpipe.records.drift import DriftVerdict
    from digitpipe.records.models import ModelIdentity
    from digitpipe.tracking import Registry, Tracker

DRIFT_EVENT, LOW_ACCURACY_EVENT = "digitpipe.drift.detected", "digitpipe.accuracy.low"


@dataclass(frozen=True)
class Alarm:
    """What the monitor raises about a batch: an event for Prefect's automations, and whether retraining can help
    (only with labelled feedback newer than the champion; otherwise it is an alert for a person)."""

    event: str
    model: str  # the registered model's name
    version: str
    batch: str
    reason: str
    retrain: bool

    def line(self) -> str:
        """The alarm in one line: what, for which version, why, and whether it asks for retraining."""
        action = ("retraining requested: labelled feedback newer than the champion exists" if self.retrain else
                  "alert for a person: no labelled feedback newer than the champion to retrain on")
        return f"{self.event} for v{self.version} ({self.reason}); {action}"


def alarm_for(model: str, version: str | None, batch: str, drifted: bool,
              live_accuracy: float | None, min_live_accuracy: float | None, new_feedback: bool) -> Alarm | None:
    """The alarm a batch raises, if any: drift, or a live accuracy below the floor (a registered model only)."""
    if version is None:
        return None
    if live_accuracy is not None and min_live_accuracy is not None and live_accuracy < min_live_accuracy:
        reason = f"live accuracy {live_accuracy:.2%} is below the floor {min_live_accuracy:.2%}"
        return Alarm(LOW_ACCURACY_EVENT, model, version, batch, reason, new_feedback)
    if drifted:
        return Alarm(DRIFT_EVENT, model, version, batch, "the batch drifted from the training data", new_feedback)
    return None


@dataclass(frozen=True)
class FeedbackResult:
    """What one batch of labelled feedback told: the model's live accuracy on it, and the alarm it raised."""

    source: str
    rows: int
    live_accuracy: float
    run_id: str
    version: str | None
    alarm: Alarm | None

    def line(self) -> str:
        """The result in one line, as `digitpipe feedback` prints it."""
        named = f"v{self.version}" if self.version else "the model"
        return (f"feedback: {self.rows:,} labelled digits from {Path(self.source).name}, live accuracy of {named} "
                f"{self.live_accuracy:.2%} (run {self.run_id})")


def record_feedback(tracker: Tracker, feedback: Feedback, model_path: Path, identity: ModelIdentity,
                    monitoring: MonitoringConfig) -> FeedbackResult:
    """Score the labelled digits with the model that served them, log the live accuracy and keep the digits in the
    store (a feedback run), tag the version with it; below the floor, raise an alarm, which asks for retraining when
    the version is the champion and feedback it has not seen exists (this batch, unless recorded before)."""
    from digitpipe.onnx_scorer import OnnxScorer  # onnxruntime: only where labels are recorded

    accuracy = float(np.mean(OnnxScorer(model_path).predict(feedback.images) == feedback.labels))
    run_id = tracker.feedback.log_feedback(feedback, identity, accuracy)
    version = identity.version
    if version:
        tagged, rows = accuracy, len(feedback.labels)  # a scored file's labels: this batch's figure
        prefix = "" if feedback.origin == "file" else f"{feedback.origin}_"  # web_live_accuracy: the page's own
        if prefix:  # the page's answers come a few at a time: every answer so far
            tagged, rows = tracker.feedback.answered_accuracy(version, feedback.origin)
        tracker.registry.set_version_tags(version, {f"{prefix}live_accuracy": f"{tagged:.4f}",
                                                    f"{prefix}live_accuracy_at": utc_now(),
                                                    f"{prefix}live_accuracy_rows": rows})
    if feedback.origin == "web" and not monitoring.trust_web_feedback:  # anyone's answers raise no alarm
        return FeedbackResult(feedback.source, len(feedback.labels), accuracy, run_id, version, None)
    if version and feedback.origin == "web":  # a batch of a few clicks says little: judge every answer so far
        accuracy = tagged
    champion = tracker.registry.champion()
    retrainable = champion is not None and champion.version == version and has_new_feedback(tracker)
    alarm = alarm_for(tracker.registry.cfg.registered_model, version, feedback.source, False, accuracy,
                      monitoring.min_live_accuracy, new_feedback=retrainable)
    if alarm:
        record_alarm(tracker.registry, alarm)
    return FeedbackResult(feedback.source, len(feedback.labels), accuracy, run_id, version, alarm)


def batch_alarm(tracker: Tracker, identity: ModelIdentity, batch: str, drift: DriftVerdict) -> Alarm | None:
    """The alarm a scored batch raises for drift, recorded on the version (a low live accuracy is raised where the
    labels are recorded: record_feedback)."""
    alarm = alarm_for(tracker.registry.cfg.registered_model, identity.version, batch, drift.drifted,
                      None, None, new_feedback=False)
    if alarm is None:
        return None
    if has_new_feedback(tracker):
        alarm = dataclasses.replace(alarm, retrain=True)
    record_alarm(tracker.registry, alarm)
    return alarm


def has_new_feedback(tracker: Tracker) -> bool:
    """Whether labelled feedback arrived after the champion was registered and after the feedback the last
    retraining run trained on (what a new retraining could learn from)."""
    champion = tracker.registry.champion()
    seen = max(champion.created_ms if champion else 0, tracker.feedback.feedback_consumed_ms())
    return tracker.feedback.newest_feedback_ms() > seen


def record_alarm(registry: Registry, alarm: Alarm) -> None:
    """The alarm as tags on the version, for whoever looks at the registry next."""
    registry.set_version_tags(alarm.version, {"monitor_alarm": alarm.line(), "monitor_alarm_at": utc_now()})


