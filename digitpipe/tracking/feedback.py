"""The feedback store: one run per batch of labelled digits scored live, the digits as its artifact, found again
by tag."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from digitpipe.records.feedback import Feedback, combine

if TYPE_CHECKING:
    from digitpipe.data import Dataset
    from digitpipe.records.models import ModelIdentity
    from digitpipe.tracking.runs import RunLog

FEEDBACK_ARTIFACT = "feedback/feedback.npz"  # on a feedback run: the labelled digits (monitoring.feedback.Feedback)
FEEDBACK_TAGS = {"digitpipe.kind": "feedback"}
FEEDBACK_RUNS = "tags.`digitpipe.kind` = 'feedback' and attributes.status = 'FINISHED'"


class FeedbackStore:
    """The experiment's feedback runs, written and found through its run log."""

    def __init__(self, runs: RunLog) -> None:
        self.runs, self.client, self.cfg = runs, runs.client, runs.cfg

    def log_feedback(self, feedback: Feedback, identity: ModelIdentity, live_accuracy: float) -> str:
        """One run per batch of labelled feedback: the digits as an artifact any machine can read back (not a file on
        this worker), the live accuracy of the model that scored them, and which model that was. The same digits
        and labels recorded before for the same model (a file scored again) keep their first run: they are not new
        feedback; for another model they are its own feedback, in a run of its own."""
        digest = feedback.dataset().digest
        model = identity.params() if identity.version is None else {
            "registered_model": identity.registered_model, "version": identity.version}
        for known in self.runs.search(f"{FEEDBACK_RUNS} and tags.feedback_digest = '{digest}'"):
            if all(known.data.params.get(key) == value for key, value in model.items()):
                return known.info.run_id
        tags = {**FEEDBACK_TAGS, "feedback_digest": digest, "source": feedback.origin}
        with self.runs.run(f"feedback {Path(feedback.source).name}", tags=tags) as run_id:
            self.runs.log_params(run_id, {"input": feedback.source, **identity.params()})
            self.runs.log_metrics(run_id, {"live_accuracy": live_accuracy, "labelled_rows": len(feedback.labels)})
            with tempfile.TemporaryDirectory() as tmp:
                path = feedback.save(Path(tmp) / Path(FEEDBACK_ARTIFACT).name)
                self.client.log_artifact(run_id, str(path), str(Path(FEEDBACK_ARTIFACT).parent))
        return run_id

    def feedback_runs(self) -> list[tuple[str, int]]:
        """Every finished feedback run to train and judge on as (run id, start time in epoch ms), oldest first:
        feedback from the serving page only where `monitoring.trust_web_feedback` says so."""
        runs = self.runs.search(FEEDBACK_RUNS, order_by=["attributes.start_time ASC"])
        trusted = self.cfg.monitoring.trust_web_feedback
        return [(r.info.run_id, r.info.start_time) for r in runs if trusted or r.data.tags.get("source") != "web"]

    def gather_feedback(self) -> tuple[Dataset | None, int]:
        """Every labelled feedback digit in the store, each distinct image once with its latest label (None when
        there is none), and when the newest of those feedback runs started (epoch ms)."""
        found = self.feedback_runs()
        return combine(self.load_feedback([run_id for run_id, _ in found])), max((ms for _, ms in found), default=0)

    def newest_feedback_ms(self) -> int:
        """When the newest feedback run to train on started (epoch ms; 0 when there is none)."""
        return max((ms for _, ms in self.feedback_runs()), default=0)

    def answered_accuracy(self, version: str, origin: str) -> tuple[float, int]:
        """A version's accuracy over all its feedback runs from `origin` (the page's: confirmed / (confirmed +
        corrected), every answer counted once per batch it came in) and how many answers that is."""
        runs = self.runs.search(f"{FEEDBACK_RUNS} and tags.source = '{origin}' and params.version = '{version}'")
        rows = sum(r.data.metrics.get("labelled_rows", 0) for r in runs)
        right = sum(r.data.metrics.get("labelled_rows", 0) * r.data.metrics.get("live_accuracy", 0) for r in runs)
        return (right / rows if rows else float("nan")), int(rows)

    def feedback_consumed_ms(self) -> int:
        """The newest feedback a finished retraining run trained on (its `feedback_through_ms`; 0 when none did),
        promoted or not: retraining again on the same feedback would give the same verdict."""
        runs = self.runs.search("metrics.feedback_through_ms > 0 and attributes.status = 'FINISHED'", limit=1,
                            order_by=["metrics.feedback_through_ms DESC"])
        return int(runs[0].data.metrics["feedback_through_ms"]) if runs else 0

    def load_feedback(self, run_ids: list[str]) -> list[Feedback]:
        """The labelled digits of each feedback run."""
        loaded = []
        with tempfile.TemporaryDirectory() as tmp:
            for run_id in run_ids:
                path = self.client.download_artifacts(run_id, FEEDBACK_ARTIFACT, tmp)
                loaded.append(Feedback.load(Path(path), source=f"runs:/{run_id}/{FEEDBACK_ARTIFACT}"))
        return loaded
