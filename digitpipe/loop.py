"""The loop from scoring back to retraining, without Prefect: record labelled feedback and the champion's live
accuracy on it, and decide what a batch raises (digitpipe.feedback.Alarm). The flows send the alarm as a Prefect
event, whose deployment trigger starts a retraining run (prefect.yaml)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitpipe.config import MonitoringConfig
from digitpipe.feedback import Alarm, Feedback, alarm_for
from digitpipe.runtime import utc_now
from digitpipe.scorer import OnnxScorer
from digitpipe.tracking import Registry, Tracker


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
        named = f"v{self.version}" if self.version else "the model"
        return (f"feedback: {self.rows:,} labelled digits from {Path(self.source).name}, live accuracy of {named} "
                f"{self.live_accuracy:.2%} (run {self.run_id})")


def record_feedback(tracker: Tracker, feedback: Feedback, model_path: Path, identity: dict,
                    monitoring: MonitoringConfig) -> FeedbackResult:
    """Score the labelled digits with the model that served them, log the live accuracy and keep the digits in the
    store (a feedback run), tag the version with it; below the floor, raise an alarm, which asks for retraining when
    the version is the champion and feedback it has not seen exists (this batch, unless recorded before)."""
    accuracy = float(np.mean(OnnxScorer(model_path).predict(feedback.images) == feedback.labels))
    run_id = tracker.runs.log_feedback(feedback, identity, accuracy)
    version = identity.get("version")
    if version:
        tracker.registry.set_version_tags(version, {"live_accuracy": f"{accuracy:.4f}", "live_accuracy_at": utc_now(),
                                                    "live_accuracy_rows": len(feedback.labels)})
    champion = tracker.registry.champion()
    retrainable = champion is not None and champion.version == version and has_new_feedback(tracker)
    alarm = alarm_for(tracker.registry.cfg.registered_model, version, feedback.source, None, accuracy,
                      monitoring.min_live_accuracy, new_feedback=retrainable)
    if alarm:
        record_alarm(tracker.registry, alarm)
    return FeedbackResult(feedback.source, len(feedback.labels), accuracy, run_id, version, alarm)


def batch_alarm(tracker: Tracker, identity: dict, batch: str, drift: dict) -> Alarm | None:
    """The alarm a scored batch raises for drift, recorded on the version (a low live accuracy is raised where the
    labels are recorded: record_feedback)."""
    alarm = alarm_for(tracker.registry.cfg.registered_model, identity.get("version"), batch, drift.get("verdict"),
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
    seen = max(champion.created_ms if champion else 0, tracker.runs.feedback_consumed_ms())
    return tracker.runs.newest_feedback_ms() > seen


def record_alarm(registry: Registry, alarm: Alarm) -> None:
    """The alarm as tags on the version, for whoever looks at the registry next."""
    registry.set_version_tags(alarm.version, {"monitor_alarm": alarm.line(), "monitor_alarm_at": utc_now()})


