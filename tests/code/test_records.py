"""The ground floor's records: verdict tags written and read in one place (old tags too), model references parsed
once, version rows, drift checks as reports hold them; and no verdict word as a literal anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from digitpipe.errors import UserError
from digitpipe.records.drift import DriftKind, DriftVerdict, FeatureDrift
from digitpipe.records.evidence import Evidence, PairedComparison
from digitpipe.records.models import ModelIdentity, ModelRef, VersionRecord
from digitpipe.records.verdicts import WAITS, Verdict, VerdictKind, from_tags, run_tags, to_tags

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", list(VerdictKind))
def test_every_verdict_reads_back_from_its_tags(kind):
    written = Verdict("7", kind, "because", 0.91, "3")
    tags = {k: str(v) for k, v in to_tags(written).items()}
    read = from_tags("7", tags)
    assert (read.kind, read.reason, read.challenger_accuracy, read.champion_version) == (kind, "because", 0.91, "3")
    assert read.at == tags["verdict_at"] and read.said == tags["verdict_reason"]


def test_a_waiting_version_keeps_the_gates_reason_as_data_and_says_it_waits():
    waiting = Verdict("4", VerdictKind.AWAITING_APPROVAL, "beats the champion: 0.99 vs 0.98")
    assert to_tags(waiting)["verdict_reason"] == WAITS + "beats the champion: 0.99 vs 0.98"
    assert run_tags(waiting) == {"verdict": "awaiting_approval", "verdict_reason": waiting.said}
    assert waiting.line() == f"v4 awaiting_approval: {WAITS}beats the champion: 0.99 vs 0.98"
    assert not waiting.promoted and waiting.kind.stands


def test_the_evidence_is_written_beside_the_verdict():
    comparison = PairedComparison(200, 0.99, 0.95, 9, 1, 0.0215)
    tags = to_tags(Verdict("5", VerdictKind.PROMOTED, "beats", 0.99, "2", Evidence(0.99, "passed", 0.9, comparison,
                                                                                   excluded=50)))
    assert {k: tags[k] for k in ("mcnemar_p_value", "only_challenger_right", "only_champion_right",
                                 "comparison_excluded", "champion_version")} == {
        "mcnemar_p_value": "0.0215", "only_challenger_right": 9, "only_champion_right": 1, "comparison_excluded": 50,
        "champion_version": "2"}


@pytest.mark.parametrize("tags, kind, reason", [
    # as digitpipe wrote them before this module existed (the values never changed)
    ({"verdict": "promoted", "verdict_reason": "first champion", "verdict_at": "2026-11-20T10:00:00Z",
      "challenger_accuracy": "0.872"}, VerdictKind.PROMOTED, "first champion"),
    ({"verdict": "awaiting_approval", "verdict_reason": WAITS + "beats the champion"}, VerdictKind.AWAITING_APPROVAL,
     "beats the champion"),
    ({"verdict": "not_promoted", "verdict_reason": "no promotion lock"}, VerdictKind.NOT_PROMOTED, "no promotion lock"),
    ({"verdict": "promoted_by_hand", "verdict_reason": "promoted by hand by ann"}, VerdictKind.PROMOTED_BY_HAND,
     "promoted by hand by ann"),
])
def test_tags_written_by_earlier_versions_are_read(tags, kind, reason):
    read = from_tags("1", tags)
    assert (read.kind, read.reason) == (kind, reason)


@pytest.mark.parametrize("tags", [{}, {"model_name": "lenet"}, {"verdict": "maybe", "verdict_reason": "?"}])
def test_a_version_not_judged_or_with_a_verdict_unknown_here_has_none(tags):
    assert from_tags("1", tags) is None
    assert VersionRecord("1", "2026-12-07 10:00", "r", (), tags).verdict is None


def test_only_promotion_and_a_decision_that_stands_count():
    assert {k for k in VerdictKind if k.promoted} == {VerdictKind.PROMOTED, VerdictKind.PROMOTED_BY_HAND}
    assert {k for k in VerdictKind if not k.stands} == {VerdictKind.NOT_PROMOTED, VerdictKind.NOT_APPROVED,
                                                          VerdictKind.INTERRUPTED}


def test_a_version_row_says_whether_it_waits():
    waiting = VersionRecord("3", "2026-12-07 10:00", "run", ("champion",), {
        "verdict": "awaiting_approval", "verdict_reason": WAITS + "x", "model_name": "lenet", "pipeline_run_id": "p"})
    assert (waiting.awaiting, waiting.model_name, waiting.pipeline_run_id) == (True, "lenet", "p")
    assert not VersionRecord("3", "", "run", (), {"verdict": "rejected"}).awaiting


@pytest.mark.parametrize("text, name, alias, version", [
    ("models:/digits@champion", "digits", "champion", None),
    ("models:/digits/12", "digits", None, "12"),
    ("models:/my-model@previous_champion", "my-model", "previous_champion", None),
])
def test_a_registered_model_reference_is_parsed_once(text, name, alias, version):
    ref = ModelRef.parse(text)
    assert (ref.registered, ref.name, ref.alias, ref.version, ref.text) == (True, name, alias, version, text)


@pytest.mark.parametrize("text", ["models:/digits", "models:/digits/v3", "models:/@champion", "models:/a/b/c"])
def test_a_malformed_registry_reference_is_one_clear_line(text):
    with pytest.raises(UserError) as refused:
        ModelRef.parse(text)
    assert str(refused.value) == f"{text}: expected models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file"


def test_anything_else_is_a_file_and_a_files_identity_names_only_the_file():
    ref = ModelRef.parse("outputs/run/lenet/lenet.onnx")
    assert not ref.registered and ref.path == Path("outputs/run/lenet/lenet.onnx")
    assert ModelIdentity("/m/lenet.onnx").params() == {"uri": "/m/lenet.onnx"}
    assert ModelIdentity("/m/lenet.onnx").name == "lenet"
    assert ModelIdentity("models:/d/2", "d", "2", "mlp", "r", "int8").params() == {
        "uri": "models:/d/2", "registered_model": "d", "version": "2", "model_name": "mlp", "run_id": "r",
        "precision": "int8"}


def test_a_drift_check_is_reported_as_before():
    feature = FeatureDrift(0.31, 0.2, [0.5], [0.4, 0.6], [0.1, 0.9])
    drift = DriftVerdict(DriftKind.DRIFT, 500, ("ink_fraction",), "digitpipe-monitor-v1",
                         {"ink_fraction": feature}).against("v3", "3")
    assert drift.as_dict() == {"verdict": "drift", "rows": 500, "moved": ["ink_fraction"],
                               "spec": "digitpipe-monitor-v1", "features": {"ink_fraction": {
                                   "distance": 0.31, "threshold": 0.2, "edges": [0.5], "reference_shares": [0.4, 0.6],
                                   "batch_shares": [0.1, 0.9]}}, "reference": "v3", "reference_version": "3"}
    assert drift.line() == "drift check: drift against the training data of v3 (ink_fraction PSI 0.31)"
    assert drift.psi_metrics() == {"drift_psi_ink_fraction": 0.31} and drift.drifted
    none = DriftVerdict(DriftKind.NO_REFERENCE, reason="x.onnx is a .onnx file")
    assert none.as_dict() == {"verdict": "no_reference", "reason": "x.onnx is a .onnx file"}
    assert none.line() == "drift check: none (x.onnx is a .onnx file)"


def _code_files():
    for folder in ("digitpipe", "flows", "tasks", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "records" not in path.relative_to(ROOT).parts:
                yield path


def _words(tree: ast.AST):
    """String constants that are values: not in messages (f-strings) nor docstrings, not dictionary keys."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            skip |= {id(n) for n in ast.walk(node)}
        elif isinstance(node, ast.Dict):
            skip |= {id(k) for k in node.keys if k is not None}
        elif isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            if isinstance(first := node.body[0], ast.Expr) and isinstance(first.value, ast.Constant):
                skip.add(id(first.value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node


def test_verdict_words_are_literals_only_in_the_records():
    verdicts = {kind.value for kind in VerdictKind}
    found = [f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}" for path in _code_files()
             for node in _words(ast.parse(path.read_text())) if node.value in verdicts]
    assert found == []


def test_no_verdict_or_stopping_reason_is_recognised_by_its_beginning():
    found = []
    for path in _code_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("startswith", "removeprefix")):
                receiver = ast.unparse(node.func.value).lower()
                if any(word in receiver for word in ("verdict", "reason", "stop", "prun")):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert found == []
