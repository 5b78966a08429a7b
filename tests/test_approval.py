"""End to end: promotion.approval: required. A run that earns promotion leaves awaiting_approval and the champion
where it was; `approve` promotes and records who and why, `--reject` does not; a champion that moved meanwhile
makes the approval refuse and the next run judge the model again; two approvals at once decide once; a version left
waiting past the timeout becomes not_approved; the card follows each decision; each bad input gets one line and
exit 2, aliases unchanged."""

from __future__ import annotations

import threading

import pytest
from mlflow import MlflowClient

from digitpipe.locks import local_promotion_lock
from digitpipe.promotion import user
from tests.helpers import assert_one_line_error, digitpipe, wait_for, write_config

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


def test_a_person_approves_or_rejects_what_the_gate_let_through(store, fixture_dir, tmp_path, digitpipe_cli,
                                                              monkeypatch):
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
    card = _card(uri, "2")  # the card on the run says what the person decided
    assert (card["decision"]["verdict"], card["decision"]["approved_by"]) == ("rejected", user())

    digitpipe_cli(*run, "--models", "mlp", "--epochs", "10")  # v3 waits, judged against v1 ...
    assert _tags(uri, "3")["verdict"] == "awaiting_approval"
    assert digitpipe_cli("promote", "--version", 2, "--config", config).code == 0  # ... which then moves
    late = digitpipe_cli("approve", "--version", 3, "--comment", "ok", "--config", config)
    assert_one_line_error(late.code, late.err, 2, "v3 not approved: judged against champion v1, but the champion is "
                                                  "now v2 (the next run trains it again and judges it against the "
                                                  "new champion)")
    assert _champion(uri) == "2" and _tags(uri, "3")["verdict"] == "not_approved"
    again = digitpipe_cli(*run, "--models", "mlp", "--epochs", "10")  # same key as v3, which no verdict settled
    assert "v4 awaiting_approval: " in again.err and "unchanged" not in again.err, again.err
    assert _tags(uri, "4")["champion_version"] == "2" and _tags(uri, "4")["training_key"] == _tags(uri, "3")[
        "training_key"]
    monkeypatch.chdir(tmp_path)  # the hourly expiry flow reads ./mlflow.yaml, as a deployment's worker does
    from flows.approval import expiry_flow

    assert expiry_flow() == [] and _tags(uri, "4")["verdict"] == "awaiting_approval"  # v4 waits within its time

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
    waits = f"waiting for the promotion lock {tmp_path}/m.db.promotion.lock: another promotion holds it\n"
    with local_promotion_lock(uri):  # both reach the lock before either decides: a check outside it would pass twice
        both = [digitpipe("approve", "--version", 1, "--comment", f"approver {i}", "--config", config, wait=False)
                for i in range(2)]
        readers = [_StderrReader(process) for process in both]
        for reader in readers:  # each says it waits at the lock: it made every check it makes outside the lock
            reader.wait_for_line(waits, 120)
    codes = [process.wait(timeout=120) for process in both]
    outs, errs = [process.stdout.read() for process in both], [reader.text() for reader in readers]
    winner = codes.index(0)
    assert sorted(codes) == [0, 2], (codes, errs)
    assert outs[winner].startswith(f"digits v1 promoted: champion -> v1 (approved by {user()}: approver {winner}")
    assert_one_line_error(codes[1 - winner], errs[1 - winner], 2, "v1 is not awaiting approval: it was decided "
                                                                  f"already (promoted: approved by {user()}: "
                                                                  f"approver {winner}")
    assert _champion(uri) == "1" and _tags(uri, "1")["approval_comment"] == f"approver {winner}"

    for model in ("mlp", "dnn"):
        assert digitpipe_cli(*run, model).code == 0
    for version in ("2", "3"):
        MlflowClient(uri).set_model_version_tag("digits", version, "verdict_at", "2026-01-01T00:00:00Z")  # long ago
    late = digitpipe_cli("approve", "--version", 2, "--comment", "back from holiday", "--config", config)
    assert_one_line_error(late.code, late.err, 2, "v2 not approved: waited 72 hours (approval_timeout_hours) "
                                                  "without a decision")
    expired = digitpipe_cli("approvals", "--config", config)
    assert expired.out.splitlines() == ["v3 not_approved: waited past approval_timeout_hours",
                                        "digits: no version is awaiting approval"]
    assert [_tags(uri, v)["verdict"] for v in ("2", "3")] == ["not_approved"] * 2 and _champion(uri) == "1"
    assert _card(uri, "3")["decision"]["verdict"] == "not_approved"


class _StderrReader:
    """The lines a process writes on stderr, in `lines` as they come (a thread reads the pipe until it closes)."""

    def __init__(self, process) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def _read(self, stderr) -> None:
        for line in stderr:
            self.lines.append(line)

    def wait_for_line(self, line: str, seconds: float) -> None:
        """Returns once `line` has come; fails, with all of stderr, where the process exited without it."""
        wait_for(lambda: line in self.lines or not self._thread.is_alive(), seconds, f"the line {line!r}", poll=0.1)
        assert line in self.lines, self.text()

    def text(self) -> str:
        """All of it, once the process has exited."""
        self._thread.join(timeout=30)
        return "".join(self.lines)


def _card(uri: str, version: str) -> dict:
    """The card.json logged on the version's run."""
    import json
    import tempfile

    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(client.get_model_version("digits", version).run_id, "card/card.json", tmp)
        return json.loads(open(path).read())
