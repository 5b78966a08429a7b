"""End to end: promotion.approval: required. A run that earns promotion leaves awaiting_approval and the champion
where it was; `approve` promotes and records who and why, `--reject` does not; a champion that moved meanwhile
makes the approval refuse; two approvals at once decide once; a version left waiting past the timeout becomes
not_approved; each bad input gets one line and exit 2, aliases unchanged."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from digitpipe.promotion import user
from tests.helpers import assert_one_line_error, digitpipe, write_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

# no floor, no margin, any p-value: every run's model earns promotion; a person decides
GATE = {"approval": "required", "min_accuracy": 0, "min_margin": 0, "max_p_value": 1, "robust_margin": 1}

WEAK = ("--models", "logreg", "--set", "logreg.max_iter=2")  # a first champion every later model beats


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path}/m.db"
    return uri, write_config(tmp_path / "mlflow.yaml", tracking_uri=uri, promotion=GATE)


def _champion(uri: str) -> str | None:
    aliases = MlflowClient(uri).get_registered_model("digits").aliases
    return aliases.get("champion") and str(aliases["champion"])


def _tags(uri: str, version: str) -> dict:
    return MlflowClient(uri).get_model_version("digits", version).tags


def test_a_person_approves_or_rejects_what_the_gate_let_through(store, fixture_dir, tmp_path, digitpipe_cli):
    uri, config = store
    run = ("run", "--data", fixture_dir, "--quiet", "--config", config, "--out", tmp_path / "out")
    first = digitpipe_cli(*run, *WEAK)
    assert first.code == 0, first.err
    assert "v1 awaiting_approval: earned promotion, waits for a person (promotion.approval: required): first " \
           "champion" in first.err
    assert _champion(uri) is None
    listed = digitpipe_cli("approvals", "--config", config)
    assert listed.out.startswith("v1 logreg awaiting approval since ")

    approved = digitpipe_cli("approve", "--version", 1, "--comment", "checked the card", "--config", config)
    assert approved.code == 0, approved.err
    assert approved.out.startswith(f"digits v1 promoted: champion -> v1 (approved by {user()}: checked the card")
    tags = _tags(uri, "1")
    assert (_champion(uri), tags["verdict"], tags["approved_by"], tags["approval_comment"]) == (
        "1", "promoted", user(), "checked the card") and tags["approved_at"].endswith("Z")
    again = digitpipe_cli("approve", "--version", 1, "--comment", "twice", "--config", config)
    assert_one_line_error(again.code, again.err, 2, "v1 is not awaiting approval: it was decided already (promoted")

    second = digitpipe_cli(*run, "--models", "mlp", "--epochs", "5")
    assert "v2 awaiting_approval: " in second.err and _champion(uri) == "1"
    rejected = digitpipe_cli("approve", "--version", 2, "--reject", "--comment", "not on a Friday", "--config", config)
    assert rejected.code == 0, rejected.err
    assert rejected.out.startswith(f"digits v2 rejected: champion unchanged (rejected by {user()}: not on a Friday")
    assert _champion(uri) == "1" and _tags(uri, "2")["approval_decision"] == "rejected"

    digitpipe_cli(*run, "--models", "mlp", "--epochs", "10")  # v3 waits, judged against v1 ...
    assert _tags(uri, "3")["verdict"] == "awaiting_approval"
    assert digitpipe_cli("promote", "--version", 2, "--config", config).code == 0  # ... which then moves
    late = digitpipe_cli("approve", "--version", 3, "--comment", "ok", "--config", config)
    assert_one_line_error(late.code, late.err, 2, "v3 was judged against champion v1, but the champion is now v2: "
                                                  "not approved (the next run judges against the new champion)")
    assert _champion(uri) == "2" and _tags(uri, "3")["verdict"] == "awaiting_approval"

    for args, message in ((("--version", 99, "--comment", "x"), "digits has no version '99'"),
                          (("--version", 3, "--comment", " "), "--comment: say why"),
                          (("--version", 2, "--comment", "x"), "v2 is not awaiting approval")):
        bad = digitpipe_cli("approve", *args, "--config", config)
        assert_one_line_error(bad.code, bad.err, 2, message)
    assert _champion(uri) == "2"


def test_two_approvals_at_once_decide_once_and_a_forgotten_version_times_out(store, fixture_dir, tmp_path,
                                                                              digitpipe_cli):
    uri, config = store
    run = ("run", "--data", fixture_dir, "--quiet", "--config", config, "--out", tmp_path / "out", "--models")
    assert digitpipe_cli(*run, *WEAK[1:]).code == 0
    both = [digitpipe("approve", "--version", 1, "--comment", f"approver {i}", "--config", config, wait=False)
            for i in range(2)]
    done = sorted((process.wait(timeout=120), process.stderr.read()) for process in both)
    assert [code for code, _ in done] == [0, 2], done
    assert "v1 is not awaiting approval: it was decided already (promoted" in done[1][1]
    assert _champion(uri) == "1"

    assert digitpipe_cli(*run, "mlp").code == 0
    MlflowClient(uri).set_model_version_tag("digits", "2", "verdict_at", "2026-01-01T00:00:00Z")  # long ago
    expired = digitpipe_cli("approvals", "--config", config)
    assert expired.out.splitlines() == ["v2 not_approved: waited past approval_timeout_hours",
                                        "digits: no version is awaiting approval"]
    assert _tags(uri, "2")["verdict"] == "not_approved" and _champion(uri) == "1"
