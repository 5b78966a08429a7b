"""Approval by a person in the Prefect UI, for deployment runs on a Prefect server: the training run ends and
starts this small flow, which suspends with a typed form (linking the version's evidence card) until someone
decides. Suspended, it holds no worker; resumed, Prefect runs it again from the top, where `suspend_flow_run`
returns the form's input, so nothing before the decision may do real work. Also the scheduled expiry of versions
left waiting past approval_timeout_hours (a suspension has no timeout of its own)."""

from __future__ import annotations

import logging

from prefect import flow, get_client
from prefect.client.schemas.filters import (FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState,
                                            FlowRunFilterStateName)
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment
from prefect.states import Cancelled
from pydantic import Field

from digitpipe.config import load_tracking_config
from digitpipe.records.training import RegisteredResult
from digitpipe.records.verdicts import Verdict
from digitpipe.tracking import Registry, tracker_for
from flows import startup
from flows.events import announce_awaiting
from flows.locks import PromotionLock
from tasks import decide, expire, waiting

log = logging.getLogger("digitpipe")
APPROVAL_DEPLOYMENT = "approve-version/by-a-person"  # prefect.yaml


class Decision(RunInput):
    """The form a person fills in. Prefect's open-source server knows no users: the name is what they type, and
    deciding here is as trusted as the server's one shared auth string."""

    approve: bool = Field(description="Approve: the version becomes the champion. Leave unticked to reject it.")
    comment: str = Field(min_length=1, description="Why (recorded on the version as approval_comment).")
    approver: str = Field("", description="Your name (recorded as approved_by).")


def ask_a_person(registered_model: str, verdict: Verdict, results: list[RegisteredResult]) -> None:
    """A version awaits approval: an event (which `digitpipe notify` sends on), and for a deployment run the
    approval flow started on the server, suspended until someone decides in its UI."""
    card = next(f"runs:/{r.run_id}/card/card.html" for r in results if r.model_version == verdict.version)
    announce_awaiting(registered_model, verdict.version, verdict.said, card)
    by_hand = f"`digitpipe approve --version {verdict.version} --comment TEXT` (or --reject)"
    if not deployment.id:  # a run of the CLI or a script: no server to suspend a flow on
        log.info(f"v{verdict.version} waits for a person: {by_hand}")
        return
    try:
        started = ask_for_approval(registered_model, verdict.version, card)
    except ObjectNotFound:  # prefect.yaml's approval deployment was not deployed
        log.info(f"v{verdict.version} waits for a person: {by_hand} (no {APPROVAL_DEPLOYMENT} deployment)")
        return
    log.info(f"v{verdict.version} waits for a person: in the Prefect UI (flow run {started}) or {by_hand}")


def ask_for_approval(registered_model: str, version: str, card: str) -> str:
    """Start the approval flow for `version` without waiting for it; returns its flow run's id."""
    started = run_deployment(APPROVAL_DEPLOYMENT, parameters={"version": version, "registered_model": registered_model,
                                                              "card": card}, timeout=0, as_subflow=False)
    return str(started.id)


@flow(name="approve-version", persist_result=True)
def approval_flow(version: str, registered_model: str | None = None, card: str = "") -> str:
    """Suspend until a person decides on `version` in the Prefect UI, then approve or reject it (digitpipe.approval)."""
    startup.set_environment()
    form = Decision.with_initial_data(
        description=f"**{registered_model} v{version}** earned promotion and waits for a person. Its evidence card: "
                    f"`{card}` (in MLflow, on the version's run). Approve or reject it, and say why.", approve=False)
    decision = suspend_flow_run(wait_for_input=form, key=f"approve-v{version}")
    verdict = decide(_registry(registered_model), version, decision.comment, decision.approve,
                     f"{decision.approver.strip() or 'someone'} (Prefect UI)")
    log.info(verdict.line())
    return verdict.kind.value


@flow(name="expire-approvals")
def expiry_flow(registered_model: str | None = None) -> list[str]:
    """Versions left waiting past approval_timeout_hours become not_approved (prefect.yaml runs this hourly), and
    the suspended approval flows of versions decided elsewhere are cancelled: their forms could only fail."""
    startup.set_environment()
    registry = _registry(registered_model)
    expired = expire(registry)
    for version in expired:
        log.info(f"v{version} not_approved: waited past approval_timeout_hours")
    cancel_undecidable(registry.cfg.registered_model, {row.version for row in waiting(registry)})
    return expired


def cancel_undecidable(registered_model: str, waiting: set[str]) -> None:
    """Cancel the suspended approval flow runs for `registered_model` whose version is not in `waiting`."""
    suspended = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Suspended"])))
    with get_client(sync_client=True) as client:
        for run in client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[approval_flow.name])),
                                         flow_run_filter=suspended):
            version = str(run.parameters.get("version"))
            if run.parameters.get("registered_model") == registered_model and version not in waiting:
                client.set_flow_run_state(run.id, Cancelled(message=f"v{version} was decided elsewhere"), force=True)
                log.info(f"cancelled approval flow run {run.name}: v{version} is no longer awaiting approval")


def _registry(registered_model: str | None) -> Registry:
    tracking = load_tracking_config()  # the worker's $DIGITPIPE_HOME/mlflow.yaml, as for a training run
    if registered_model:
        tracking = tracking.model_copy(update={"registered_model": registered_model})
    return tracker_for(tracking, PromotionLock(tracking, "prefect")).registry
