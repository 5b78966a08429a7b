"""A person's decision on a version awaiting approval (digitpipe.approval) on a sqlite MLflow store: approve (the
alias moves), reject, refusals (not awaiting, no comment, the champion moved meanwhile), the timeout, and the list
of waiting versions. One store for the session (conftest's `mlflow_store`), a registered model of its own per
test; versions are put in the awaiting state as the gate leaves them (promotion.record_verdict)."""

from __future__ import annotations

import re

import pytest
from mlflow import MlflowClient

from digitpipe import approval
from digitpipe.config import PromotionConfig, TrackingConfig
from digitpipe.errors import UserError
from digitpipe.files import first_line
from digitpipe.promotion import record_verdict
from digitpipe.records.verdicts import WAITS, Verdict, VerdictKind, from_tags
from digitpipe.tracking import Registry, tracker_for

GATE_REASON = "beats the champion v1: 0.9800 vs 0.9500 on 400 held-out digits new to both (McNemar p=0.001)"
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


@pytest.fixture(scope="module")
def client(mlflow_store) -> MlflowClient:
    return MlflowClient(mlflow_store)


@pytest.fixture
def registry(mlflow_store, client, request) -> Registry:
    """A registered model named after the test whose promotions wait for a person."""
    name = "approval-" + request.node.name.removeprefix("test_")[:90]
    client.create_registered_model(name)
    return tracker_for(TrackingConfig(tracking_uri=mlflow_store, registered_model=name,
                                      promotion=PromotionConfig(approval="required"))).registry


def add_versions(registry: Registry, count: int) -> None:
    """`count` more versions, without files: a decision reads and writes tags and aliases only."""
    for model in range(count):
        registry.client.create_model_version(registry.cfg.registered_model, "/nowhere",
                                             tags={"model_name": f"model{model + 1}", "test_accuracy": "0.95"})


def awaiting(registry: Registry, version: str, judged_against: str | None = "1") -> None:
    """`version` as the gate leaves it when it earns promotion and a person must approve it."""
    record_verdict(registry, Verdict(version, VerdictKind.AWAITING_APPROVAL, GATE_REASON, 0.98, judged_against))


@pytest.fixture
def champion_and_challenger(registry) -> Registry:
    """v1 the champion (promoted by the gate), v2 awaiting approval against it."""
    add_versions(registry, 2)
    record_verdict(registry, Verdict("1", VerdictKind.PROMOTED, "first champion", 0.95))
    registry.set_alias("champion", "1")
    awaiting(registry, "2")
    return registry


def test_an_approval_moves_the_alias_and_records_who_when_and_why(champion_and_challenger):
    registry = champion_and_challenger
    verdict = approval.decide(registry, "2", "fewer 4/9 confusions", who="ana")
    reason = f"approved by ana: fewer 4/9 confusions (the gate: {GATE_REASON})"
    assert (verdict.version, verdict.kind, verdict.reason, verdict.champion_version) == (
        "2", VerdictKind.PROMOTED, reason, "1")
    assert (registry.alias_version("champion"), registry.alias_version("previous_champion")) == ("2", "1")
    tags = registry.version_tags("2")
    assert {k: tags[k] for k in ("verdict", "verdict_reason", "approved_by", "approval_comment",
                                 "approval_decision", "champion_version")} == {
        "verdict": "promoted", "verdict_reason": reason, "approved_by": "ana",
        "approval_comment": "fewer 4/9 confusions", "approval_decision": "approved", "champion_version": "1"}
    assert re.fullmatch(STAMP, tags["approved_at"]) and re.fullmatch(STAMP, tags["verdict_at"])
    assert approval.waiting(registry) == []


def test_the_decider_is_the_mlflow_account_when_none_is_named(champion_and_challenger, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "reviewer")
    approval.decide(champion_and_challenger, "2", "ok")
    assert champion_and_challenger.version_tags("2")["approved_by"] == "reviewer"


def test_a_rejection_leaves_the_champion_where_it_was(champion_and_challenger):
    registry = champion_and_challenger
    verdict = approval.decide(registry, "2", "worse on my photos", approve=False, who="ana")
    reason = f"rejected by ana: worse on my photos (the gate: {GATE_REASON})"
    assert (verdict.kind, verdict.reason) == (VerdictKind.REJECTED, reason)
    assert (registry.alias_version("champion"), registry.alias_version("previous_champion")) == ("1", None)
    tags = registry.version_tags("2")
    assert (tags["verdict"], tags["verdict_reason"], tags["approval_decision"], tags["approved_by"]) == (
        "rejected", reason, "rejected", "ana")


def test_a_version_decided_already_is_refused_and_left_as_it_was(champion_and_challenger):
    registry = champion_and_challenger
    approval.decide(registry, "2", "ok", who="ana")
    before = registry.version_tags("2")
    approved = f"approved by ana: ok (the gate: {GATE_REASON})"
    for version, decided in (("2", "promoted: " + first_line(approved, 120)), ("1", "promoted: first champion")):
        with pytest.raises(UserError) as refused:
            approval.decide(registry, version, "again", approve=False, who="bob")
        assert str(refused.value) == f"v{version} is not awaiting approval: it was decided already ({decided})"
    assert registry.version_tags("2") == before and registry.alias_version("champion") == "2"


def test_a_version_that_does_not_exist_is_one_clear_line(champion_and_challenger):
    cfg = champion_and_challenger.cfg
    with pytest.raises(UserError) as refused:
        approval.decide(champion_and_challenger, "9", "ok", who="ana")
    assert str(refused.value) == f"{cfg.registered_model} has no version '9' in the registry at {cfg.tracking_uri}"


@pytest.mark.parametrize("comment", ["", "   \n"])
def test_a_decision_without_a_comment_is_refused_before_anything_changes(champion_and_challenger, comment):
    with pytest.raises(UserError) as refused:
        approval.decide(champion_and_challenger, "2", comment, who="ana")
    assert str(refused.value) == "--comment: say why (it is recorded on the version)"
    assert from_tags("2", champion_and_challenger.version_tags("2")).kind is VerdictKind.AWAITING_APPROVAL
    assert champion_and_challenger.alias_version("champion") == "1"


def test_an_approval_after_the_champion_moved_is_not_approved(champion_and_challenger):
    """v2 beat v1; v3 became the champion meanwhile: approving v2 would promote it over a model it was never
    judged against, so it is not_approved (the next run trains and judges it again)."""
    registry = champion_and_challenger
    add_versions(registry, 1)
    registry.set_alias("champion", "3")
    with pytest.raises(UserError) as refused:
        approval.decide(registry, "2", "ok", who="ana")
    reason = ("judged against champion v1, but the champion is now v3 (the next run trains it again and judges it "
              "against the new champion)")
    assert str(refused.value) == f"v2 not approved: {reason}"
    tags = registry.version_tags("2")
    assert (tags["verdict"], tags["verdict_reason"], tags["champion_version"]) == ("not_approved", reason, "1")
    assert "approved_by" not in tags and registry.alias_version("champion") == "3"


def test_a_rejection_after_the_champion_moved_still_stands(champion_and_challenger):
    registry = champion_and_challenger
    add_versions(registry, 1)
    registry.set_alias("champion", "3")
    assert approval.decide(registry, "2", "no", approve=False, who="ana").kind is VerdictKind.REJECTED
    assert registry.alias_version("champion") == "3"


def test_a_retry_after_the_alias_moved_completes_the_approval(champion_and_challenger):
    """An approval that moved the alias and died before its verdict was recorded is completed by a second one."""
    registry = champion_and_challenger
    registry.set_alias("champion", "2")  # the first attempt got this far
    verdict = approval.decide(registry, "2", "ok", who="ana")
    assert (verdict.kind, registry.alias_version("champion")) == (VerdictKind.PROMOTED, "2")


def test_the_first_champion_can_wait_for_approval(registry):
    add_versions(registry, 1)
    awaiting(registry, "1", judged_against=None)
    assert approval.decide(registry, "1", "first one", who="ana").kind is VerdictKind.PROMOTED
    assert (registry.alias_version("champion"), registry.alias_version("previous_champion")) == ("1", None)


def test_versions_that_waited_past_the_timeout_expire_and_can_no_longer_be_approved(champion_and_challenger):
    registry = champion_and_challenger
    add_versions(registry, 2)
    for version in ("3", "4"):
        awaiting(registry, version)
    registry.set_version_tags("2", {"verdict_at": "2020-01-01T00:00:00Z"})  # waited for months
    registry.set_version_tags("3", {"verdict_at": "2020-01-01T00:00:00Z"})
    timed_out = "waited 72 hours (approval_timeout_hours) without a decision"
    with pytest.raises(UserError) as refused:
        approval.decide(registry, "3", "ok", who="ana")
    assert str(refused.value) == f"v3 not approved: {timed_out}"
    assert approval.expire(registry) == ["2"]
    for version in ("2", "3"):
        tags = registry.version_tags(version)
        assert (tags["verdict"], tags["verdict_reason"]) == ("not_approved", timed_out)
    assert [row.version for row in approval.waiting(registry)] == ["4"]
    assert approval.expire(registry) == [] and registry.alias_version("champion") == "1"


def test_the_timeout_is_the_configured_one(registry):
    add_versions(registry, 1)
    awaiting(registry, "1", judged_against=None)
    registry.set_version_tags("1", {"verdict_at": "2020-01-01T00:00:00Z"})
    hurried = tracker_for(registry.cfg.model_copy(update={
        "promotion": PromotionConfig(approval="required", approval_timeout_hours=0.5)})).registry
    assert approval.expire(hurried) == ["1"]
    assert registry.version_tags("1")["verdict_reason"] == (
        "waited 0.5 hours (approval_timeout_hours) without a decision")


def test_waiting_lists_the_awaiting_versions_newest_first(registry):
    add_versions(registry, 4)
    for version in ("1", "3", "4"):
        awaiting(registry, version, judged_against=None)
    record_verdict(registry, Verdict("4", VerdictKind.REJECTED, "rejected by ana: no"))
    rows = approval.waiting(registry)
    assert [(row.version, row.model_name, row.aliases) for row in rows] == [("3", "model3", ()), ("1", "model1", ())]
    assert rows[0].tags["verdict_reason"] == WAITS + GATE_REASON and rows[0].verdict.reason == GATE_REASON


def test_a_version_not_judged_yet_is_not_said_to_be_decided(registry):
    add_versions(registry, 1)
    with pytest.raises(UserError) as refused:
        approval.decide(registry, "1", "ok", who="ana")
    assert str(refused.value) == "v1 is not awaiting approval: the gate has not judged it"


def test_the_pipeline_run_says_what_the_person_decided(champion_and_challenger, client):
    registry = champion_and_challenger
    pipeline = client.create_run("0", tags={"verdict": "awaiting_approval", "verdict_reason": "waits"}).info.run_id
    registry.set_version_tags("2", {"pipeline_run_id": pipeline})
    approval.decide(registry, "2", "fewer 4/9 confusions", who="ana")
    tags = client.get_run(pipeline).data.tags
    assert (tags["verdict"], tags["verdict_reason"]) == (
        "promoted", f"approved by ana: fewer 4/9 confusions (the gate: {GATE_REASON})")
