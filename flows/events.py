"""The monitor's alarms as Prefect events: the deployment trigger in prefect.yaml starts a retraining run on the
ones that can be fixed by retraining (labelled feedback newer than the champion exists), at most one per window.
A version awaiting approval is an event too; `digitpipe notify` sends these (and failed deployment runs) to a
webhook."""

from __future__ import annotations

from pathlib import Path

from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from digitpipe.monitoring.alarms import Alarm


def announce(alarm: Alarm, flush: bool = False) -> None:
    """Emit `alarm` with the model as its resource (the trigger's `match` and `for_each` read these labels) and the
    batch as a related resource; `flush` waits until it has been sent (a command that exits next)."""
    emit_event(
        event=alarm.event,
        resource={"prefect.resource.id": f"digitpipe.model.{alarm.model}", "prefect.resource.name": alarm.model,
                  "digitpipe.version": alarm.version, "digitpipe.retrain": str(alarm.retrain).lower()},
        related=[{"prefect.resource.id": f"digitpipe.batch.{Path(alarm.batch).name}",
                  "prefect.resource.role": "batch", "digitpipe.path": alarm.batch}],
        payload={"reason": alarm.reason, "line": alarm.line()},
    )
    if flush:
        EventsWorker.drain_all(timeout=30)


AWAITING_EVENT = "digitpipe.approval.awaiting"


def announce_awaiting(model: str, version: str, reason: str, card: str) -> None:
    """Emit that `version` of `model` earned promotion and waits for a person."""
    emit_event(
        event=AWAITING_EVENT,
        resource={"prefect.resource.id": f"digitpipe.model.{model}", "prefect.resource.name": model,
                  "digitpipe.version": version},
        payload={"line": f"{model} v{version} awaits approval: {reason}", "card": card},
    )
