"""Someone is told: Prefect automations that call a webhook (any URL the team sets, saved as a Prefect Webhook
block) when a version awaits approval, when the monitor raises an alarm (drift, low live accuracy), and when a
deployment run (a scheduled one, or one a trigger started) fails or crashes."""

from __future__ import annotations

from prefect.automations import Automation
from prefect.blocks.webhook import Webhook
from prefect.events.actions import CallWebhook
from prefect.events.schemas.automations import EventTrigger, Posture

from flows.events import AWAITING_EVENT

BLOCK = "digitpipe-notify"
ALARM_EVENTS = (AWAITING_EVENT, "digitpipe.drift.detected", "digitpipe.accuracy.low")
FAILED_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")
# What the webhook receives: JSON a chat hook or a pager can show as it is (templated by Prefect's server)
ALARM_PAYLOAD = ('{"event": "{{ event.event }}", "model": {{ event.resource.name | tojson }}, '
                 '"version": {{ event.resource["digitpipe.version"] | tojson }}, "text": {{ event.payload.line | tojson }}}')
FAILED_PAYLOAD = ('{"event": "{{ event.event }}", "flow_run": {{ event.resource.name | tojson }}, '
                  '"text": {{ ("flow run " ~ event.resource.name ~ " ended " ~ event.event.split(".")[-1]) | tojson }}}')


def set_up(url: str) -> list[str]:
    """Save `url` as the Webhook block and (re)create the automations that call it; returns their names."""
    block_id = Webhook(url=url).save(BLOCK, overwrite=True)
    automations = {
        f"{BLOCK}-alarms": (EventTrigger(expect=set(ALARM_EVENTS), match={"prefect.resource.id": "digitpipe.model.*"},
                                         posture=Posture.Reactive, threshold=1, within=0), ALARM_PAYLOAD),
        f"{BLOCK}-failed-runs": (EventTrigger(expect=set(FAILED_EVENTS),
                                              match={"prefect.resource.id": "prefect.flow-run.*"},
                                              match_related={"prefect.resource.role": "deployment"},
                                              posture=Posture.Reactive, threshold=1, within=0), FAILED_PAYLOAD),
    }
    for name, (trigger, payload) in automations.items():
        _delete(name)
        Automation(name=name, description=f"digitpipe notify: POST to the {BLOCK} webhook block", trigger=trigger,
                   actions=[CallWebhook(block_document_id=block_id, payload=payload)]).create()
    return list(automations)


def _delete(name: str) -> None:
    """Remove the automation called `name`, if there is one (set_up run again replaces its own)."""
    from prefect.exceptions import ObjectNotFound

    try:
        Automation.read(name=name).delete()
    except (ObjectNotFound, ValueError):
        pass
