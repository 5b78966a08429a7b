"""Evidence cards (digitpipe.card) of registered versions on a sqlite MLflow store: the card of a version written
from its registered file, its runs and its tags; compared with the champion its verdict names; its decision read
again when a person decides, the earlier one kept; and no card to refresh for a version that has none. Evidence is
append-only: `digitpipe card` for a version that has a card writes a revision beside it, and after `digitpipe gc`
deleted the champion it was compared with, the revision carries the decision's card's comparison and picture. One
store for the session (conftest's `mlflow_store`), a registered model of its own per test."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Param

from digitpipe import approval
from digitpipe.card import refresh_decision, write_card
from digitpipe.config import PromotionConfig, TrackingConfig
from digitpipe.data import SplitRecipe
from digitpipe.evaluate import accuracy_interval
from digitpipe.export import export_onnx
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.promotion import record_verdict
from digitpipe.records.evidence import Evidence, PairedComparison
from digitpipe.records.verdicts import WAITS, Verdict, VerdictKind
from digitpipe.tracking import Registry, tracker_for
from tests.helpers import write_config

EXPERIMENT = "code-card"
GATE_REASON = "first champion"
PIPELINE = {"data": "/data/mnist", "protocol": "book", "split_seed": "42", "test_fraction": "0.25",
            "val_fraction": "0.1", "split_train": "675", "split_val": "75", "split_test": "250", "epochs": "3"}


@pytest.fixture(scope="module")
def store(mlflow_store, tmp_path_factory) -> SimpleNamespace:
    artifacts = tmp_path_factory.mktemp("card-artifacts")
    client = MlflowClient(mlflow_store)
    return SimpleNamespace(uri=mlflow_store, client=client, artifacts=artifacts,
                           experiment_id=client.create_experiment(EXPERIMENT, artifact_location=str(artifacts)))


def mean_image_onnx(digits, path: Path) -> Path:
    """A linear model over raw pixels (each digit's mean image in `digits`: no fitting), exported as digitpipe
    exports its logistic regression: 7,850 parameters."""
    pixels = digits.flat() / 255.0
    means = np.stack([pixels[digits.labels == d].mean(0) for d in range(10)])
    model = SimpleNamespace(predict_proba=None, classes_=np.arange(10), coef_=means / 255.0,
                            intercept_=-(means**2).sum(1) / 2)
    return export_onnx(model, path)


@pytest.fixture(scope="module")
def linear_onnx(digits, tmp_path_factory) -> Path:
    """The mean images of the whole fixture: ~80% right on it."""
    return mean_image_onnx(digits, tmp_path_factory.mktemp("linear") / "linear.onnx")


@pytest.fixture(scope="module")
def weaker_onnx(digits, tmp_path_factory) -> Path:
    """The mean images of the fixture's first 100 digits: a champion that answers some digits differently."""
    return mean_image_onnx(digits.subset(np.arange(100)), tmp_path_factory.mktemp("weaker") / "weaker.onnx")


@pytest.fixture(scope="module")
def held_out(digits):
    """The fixture's last 200 digits stand for a run's held-out part."""
    return digits.subset(np.arange(800, 1000))


@pytest.fixture
def registry(store, request) -> Registry:
    name = "card-" + request.node.name.removeprefix("test_")[:90]
    store.client.create_registered_model(name)
    return tracker_for(TrackingConfig(tracking_uri=store.uri, experiment=EXPERIMENT, registered_model=name,
                                      artifact_location=str(store.artifacts),
                                      promotion=PromotionConfig(approval="required"))).registry


def new_run(store, params: dict[str, str]) -> str:
    run_id = store.client.create_run(store.experiment_id).info.run_id
    store.client.log_batch(run_id, params=[Param(key, value) for key, value in params.items()])
    return run_id


def register(store, registry: Registry, onnx: Path, digits, verdict: Verdict | None,
             file: bool = False, data: Path | None = None) -> tuple[str, str]:
    """A logreg version of `onnx` as a pipeline run registers it, judged by `verdict`: (version, its run). With
    `file`, the ONNX file is logged and registered; else, cheaper, the version's source is the file's own folder
    (the card downloads either and checks the checksum). `data`: the files its pipeline run split (what
    `digitpipe card` rebuilds the held-out part from)."""
    pipeline = new_run(store, PIPELINE | ({"data": str(data)} if data else {}))
    run_id = new_run(store, {"model": "logreg", "seed": "42", "device": "cpu", "decay": "0.005", "maxit": "100"})
    tags = {"model_name": "logreg", "pipeline_run_id": pipeline, "data_digest": digits.digest, "training_key": "k1",
            "code_version": "c0de"}
    if file:
        version = registry.register_onnx(run_id, onnx, digits.images[:8], tags)
    else:
        tags |= {"onnx_path": str(onnx), "onnx_sha256": hashlib.sha256(onnx.read_bytes()).hexdigest()}
        version = str(store.client.create_model_version(registry.cfg.registered_model, str(onnx.parent), run_id,
                                                        tags=tags).version)
    if verdict is not None:
        assert verdict.version == version
        record_verdict(registry, verdict)
    return version, run_id


def awaiting(version: str = "1") -> Verdict:
    return Verdict(version, VerdictKind.AWAITING_APPROVAL, GATE_REASON, 0.8)


def logged_card(registry: Registry, version: str, dest: Path) -> tuple[dict, str]:
    """The card on the version's run: card.json and card.html."""
    folder, _, _ = registry.cards.recorded(version, dest)
    return json.loads((folder / "card.json").read_text()), (folder / "card.html").read_text()


def on_run(store, run_id: str) -> dict[str, bytes]:
    """Every file logged on the run, by its artifact path."""
    root = Path(urlparse(store.client.get_run(run_id).info.artifact_uri).path)
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def beats(version: str, champion: str) -> Verdict:
    """The gate's verdict on a version that beat `champion`, with the counts it weighed."""
    return Verdict(version, VerdictKind.PROMOTED, "beats the champion", 0.8, champion,
                   Evidence(0.8, "passed", comparison=PairedComparison(250, 0.8, 0.7, 30, 5, 1e-5)))


def test_the_card_says_what_the_version_is_how_it_reads_the_held_out_digits_and_what_was_decided(
        store, registry, linear_onnx, digits, held_out, tmp_path):
    version, run_id = register(store, registry, linear_onnx, digits, awaiting(), file=True)
    card = write_card(registry, version, held_out, tmp_path / "card")
    name = registry.cfg.registered_model
    predicted = OnnxScorer(linear_onnx).predict(held_out.images)
    right = int(np.sum(predicted == held_out.labels))
    assert 140 < right < 200  # a real model: most of them, not all
    assert (card["registered_model"], card["version"]) == (name, "1")
    assert card["model"] == {"name": "logreg", "spec": {"decay": "0.005", "maxit": "100"}, "parameters": 7850,
                             "onnx_kb": round(linear_onnx.stat().st_size / 1024, 1)}
    assert card["trained_on"] == {
        "data_digest": digits.digest, "seed": "42", "code_version": "c0de", "git_commit": "unknown",
        "training_key": "k1", "split": {key: PIPELINE[key] for key in ("protocol", "split_seed", "test_fraction",
                                                                        "val_fraction", "split_train", "split_val",
                                                                        "split_test")}}
    held = card["held_out"]
    assert (held["images"], held["right"], held["accuracy"]) == (200, right, right / 200)
    assert held["accuracy_ci95"] == list(accuracy_interval(right, 200))
    assert [row["images"] for row in held["per_digit"]] == np.bincount(held_out.labels, minlength=10).tolist()
    tags = registry.version_tags(version)
    assert card["decision"] == {"verdict": "awaiting_approval", "verdict_reason": WAITS + GATE_REASON,
                                "verdict_at": tags["verdict_at"], "challenger_accuracy": "0.8"}
    assert "comparison" not in card and tags["evidence_card"] == "card/card.html"

    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == ["card.html", "card.json"]
    assert json.loads((tmp_path / "card" / "card.json").read_text()) == card
    page = (tmp_path / "card" / "card.html").read_text()
    assert f"<h1>{name} v1: logreg</h1>" in page
    assert f"<p class=verdict>awaiting_approval: {html.escape(WAITS + GATE_REASON)}</p>" in page
    assert "<p>not compared with a champion</p>" in page
    assert logged_card(registry, version, tmp_path / "logged") == (card, page)
    assert sorted(a.path for a in store.client.list_artifacts(run_id, "card")) == ["card/card.html", "card/card.json"]


def test_the_card_compares_the_version_with_the_champion_on_the_digits_new_to_both(store, registry, linear_onnx,
                                                                                  digits, held_out, tmp_path):
    """The champion (the same model here: the two never disagree) trained on the first 50 held-out digits, as its
    pipeline run recorded: the card compares on the other 150."""
    champion, _ = register(store, registry, linear_onnx, digits, None)
    tracker_for(registry.cfg).runs.log_trained_on(registry.version_tags(champion)["pipeline_run_id"],
                                                  held_out.image_hashes()[:50])
    gate = PairedComparison(150, 0.8, 0.8, 0, 0, 1.0)
    verdict = Verdict("2", VerdictKind.REJECTED, "no better than the champion", 0.8, champion,
                      Evidence(0.8, "passed", comparison=gate, excluded=50))
    version, _ = register(store, registry, linear_onnx, digits, verdict)
    card = write_card(registry, version, held_out, tmp_path / "card")
    right = int(np.sum(OnnxScorer(linear_onnx).predict(held_out.images[50:]) == held_out.labels[50:]))
    assert card["comparison"] == {
        "champion_version": "1", "images_new_to_both": 150, "excluded": 50, "challenger_accuracy": right / 150,
        "champion_accuracy": right / 150, "only_challenger_right": 0, "only_champion_right": 0,
        "mcnemar_p_value": 1.0, "disagreements": 0}
    assert card["decision"]["champion_version"] == "1" and card["decision"]["verdict"] == "rejected"
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == ["card.html", "card.json"]  # no disagreements
    assert "<h2>Against the champion</h2><table><tr><th>champion_version</th><td>1</td></tr>" in (
        tmp_path / "card" / "card.html").read_text()


def test_a_new_verdict_is_read_again_into_the_logged_card(store, registry, linear_onnx, digits, held_out, tmp_path):
    version, _ = register(store, registry, linear_onnx, digits, awaiting())
    written = write_card(registry, version, held_out, tmp_path / "card")
    record_verdict(registry, Verdict(version, VerdictKind.NOT_APPROVED, "waited 72 hours (approval_timeout_hours) "
                                                                        "without a decision"))
    refreshed = refresh_decision(registry, version)
    at = registry.version_tags(version)["verdict_at"]
    decision = {"verdict": "not_approved", "verdict_at": at, "challenger_accuracy": "0.8",
                "verdict_reason": "waited 72 hours (approval_timeout_hours) without a decision"}
    assert refreshed == written | {"decision": decision, "earlier_decisions": [written["decision"]]}
    card, page = logged_card(registry, version, tmp_path / "logged")
    assert card == refreshed
    assert "<p class=verdict>not_approved: waited 72 hours (approval_timeout_hours) without a decision</p>" in page
    current, earlier = page.split("<h2>Earlier decisions</h2>")  # the decision before it kept, below the current
    assert "awaiting_approval" not in current and "<td>verdict awaiting_approval, verdict_reason " in earlier
    # the copy the command wrote is not touched: `digitpipe card` writes it again
    assert json.loads((tmp_path / "card" / "card.json").read_text()) == written


def test_a_persons_decision_reaches_the_card(store, registry, linear_onnx, digits, held_out, tmp_path):
    version, _ = register(store, registry, linear_onnx, digits, awaiting())
    write_card(registry, version, held_out, tmp_path / "card")
    approval.decide(registry, version, "reads my 7s", who="ana")
    card, page = logged_card(registry, version, tmp_path / "logged")
    tags = registry.version_tags(version)
    assert card["decision"] == {
        "verdict": "promoted", "verdict_reason": f"approved by ana: reads my 7s (the gate: {GATE_REASON})",
        "verdict_at": tags["verdict_at"], "challenger_accuracy": "0.8", "approved_by": "ana",
        "approved_at": tags["approved_at"], "approval_comment": "reads my 7s"}
    assert f"<p class=verdict>promoted: approved by ana: reads my 7s (the gate: {GATE_REASON})</p>" in page


def test_a_version_without_a_card_has_none_to_refresh(store, registry, linear_onnx, digits):
    register(store, registry, linear_onnx, digits, awaiting())
    assert refresh_decision(registry, "1") is None
    assert "evidence_card" not in registry.version_tags("1")


def test_a_card_written_again_after_gc_keeps_the_comparison_that_decided(store, registry, linear_onnx, weaker_onnx,
                                                                         digits, fixture_dir, digitpipe_cli, tmp_path):
    """v2 beat champion v1, and its card (written as a run writes it, once the verdict is in) compared the two;
    `gc --keep 1` deletes v1. `digitpipe card` for v2 then writes revision 2 beside the decision's card: scored
    again, with the comparison and the picture the decision's card recorded; the decision's card is not touched."""
    held_out = SplitRecipe(fixture_dir).rebuild().test
    register(store, registry, weaker_onnx, digits, Verdict("1", VerdictKind.PROMOTED, GATE_REASON, 0.7),
             file=True, data=fixture_dir)
    version, run_id = register(store, registry, linear_onnx, digits, beats("2", "1"), file=True, data=fixture_dir)
    registry.set_alias("champion", version)
    decided = write_card(registry, version, held_out, tmp_path / "decided")
    assert decided["comparison"]["disagreements"] > 0 and "revision" not in decided
    before = on_run(store, run_id)
    assert sorted(before) == ["card/card.html", "card/card.json", "card/disagreements.png"]
    name = registry.cfg.registered_model
    config = write_config(tmp_path / "mlflow.yaml", tracking_uri=store.uri, experiment=EXPERIMENT,
                          registered_model=name, artifact_location=str(store.artifacts))
    gone = digitpipe_cli("gc", "--keep", 1, "--config", config)
    assert gone.code == 0 and gone.out.startswith("deleted v1 (logreg, promoted, registered "), gone.err

    again = digitpipe_cli("card", "--version", version, "--output", tmp_path / "again", "--config", config)
    assert again.code == 0, again.err
    assert again.out == (f"{name} v2 (logreg): held-out accuracy {decided['held_out']['accuracy']:.2%} on 250 "
                         "images of its training run's split (book, seed 42); revision 2 of its card on its run "
                         "(card-revisions/2/card.html; the decision's card/card.html kept) and in "
                         f"{tmp_path / 'again'}\n")
    card = json.loads((tmp_path / "again" / "card.json").read_text())
    assert card["comparison"] == decided["comparison"] | {"carried_from": "card/card.json: v1 is no longer "
                                                                          "registered"}
    assert (card["held_out"], card["decision"]) == (decided["held_out"], decided["decision"])
    assert card["revision"] == {"number": 2, "written_at": card["revision"]["written_at"],
                                "decision_card": "card/card.html"}
    after = on_run(store, run_id)
    assert {path: data for path, data in after.items() if path.startswith("card/")} == before
    revision = {path.removeprefix("card-revisions/2/"): data for path, data in after.items()
                if path.startswith("card-revisions/2/")}
    assert sorted(revision) == ["card.html", "card.json", "disagreements.png"] == sorted(
        p.name for p in (tmp_path / "again").iterdir())
    assert json.loads(revision["card.json"]) == card
    assert revision["disagreements.png"] == before["card/disagreements.png"]
    page = revision["card.html"].decode()
    assert "<th>carried_from</th><td>card/card.json: v1 is no longer registered</td>" in page
    assert base64.b64encode(before["card/disagreements.png"]).decode() in page
    assert "<p>Revision 2 of this card, written " in page and "the decision's card is card/card.html" in page
    assert registry.version_tags(version)["evidence_card"] == "card-revisions/2/card.html"

    third = digitpipe_cli("card", "--version", version, "--output", tmp_path / "third", "--config", config)
    assert third.code == 0 and "revision 3 of its card on its run (card-revisions/3/card.html;" in third.out
    assert json.loads((tmp_path / "third" / "card.json").read_text())["comparison"] == card["comparison"]
    assert {path: data for path, data in on_run(store, run_id).items() if not path.startswith(
        "card-revisions/3/")} == after


def test_a_first_card_after_the_champion_went_keeps_the_gates_counts_in_its_decision(
        store, registry, linear_onnx, weaker_onnx, digits, held_out, tmp_path):
    register(store, registry, weaker_onnx, digits, None)
    version, _ = register(store, registry, linear_onnx, digits, beats("2", "1"))
    store.client.delete_model_version(registry.cfg.registered_model, "1")
    card = write_card(registry, version, held_out, tmp_path / "card")
    assert card["comparison"] == {"champion_version": "1", "not_compared": "v1 is no longer registered: the gate's "
                                                                           "counts are in the decision"}
    decision = card["decision"]
    assert (decision["champion_version"], decision["champion_accuracy"], decision["challenger_accuracy"],
            decision["only_challenger_right"], decision["only_champion_right"], decision["mcnemar_p_value"],
            decision["comparison_excluded"]) == ("1", "0.7", "0.8", "30", "5", "1e-05", "0")


def test_a_decision_after_a_revision_reaches_the_decisions_card_and_the_newest_keeping_the_earlier_one(
        store, registry, linear_onnx, digits, held_out, tmp_path):
    version, run_id = register(store, registry, linear_onnx, digits, awaiting())
    first = write_card(registry, version, held_out, tmp_path / "first")
    second = write_card(registry, version, held_out, tmp_path / "second")
    assert second["revision"]["number"] == 2 and "revision" not in first
    approval.decide(registry, version, "reads my 7s", who="ana")
    logged = on_run(store, run_id)
    decided, newest = (json.loads(logged[f"{folder}/card.json"]) for folder in ("card", "card-revisions/2"))
    assert decided == first | {"decision": newest["decision"], "earlier_decisions": [first["decision"]]}
    assert newest == second | {"decision": newest["decision"], "earlier_decisions": [second["decision"]]}
    assert newest["decision"]["verdict"] == "promoted" and first["decision"]["verdict"] == "awaiting_approval"
    assert registry.version_tags(version)["evidence_card"] == "card-revisions/2/card.html"
    page = logged["card-revisions/2/card.html"].decode()
    assert "<h2>Earlier decisions</h2>" in page and "verdict awaiting_approval" in page


def test_the_card_shows_how_the_version_reads_peoples_digits_beside_the_champion(store, registry, linear_onnx,
                                                                                  digits, held_out, tmp_path):
    """Its run's accuracy per family of people's digits (version tags), and the champion's where the gate compared
    the two on them."""
    from digitpipe.card import card_markdown
    from digitpipe.records.evidence import RobustComparison

    champion, _ = register(store, registry, linear_onnx, digits, None)
    evidence = Evidence(0.8, "passed", comparison=PairedComparison(250, 0.8, 0.7, 30, 5, 1e-5),
                        people={"drawn": RobustComparison(90, 0.91, 0.95, -0.01, 0.02)})
    version, _ = register(store, registry, linear_onnx, digits, None)
    registry.set_version_tags(version, {"people_accuracy_drawn": 0.92, "people_accuracy_photographed": 0.97})
    record_verdict(registry, Verdict(version, VerdictKind.REJECTED, "reads drawn digits worse", 0.8, champion,
                                     evidence))
    card = write_card(registry, version, held_out, tmp_path / "card")
    assert card["people"] == {"drawn": {"accuracy": 0.92, "digits_new_to_both": 90, "accuracy_on_those": 0.91,
                                        "champion_accuracy": 0.95, "difference_upper_bound": -0.01, "p_value": 0.02},
                              "photographed": {"accuracy": 0.97}}
    page = (tmp_path / "card" / "card.html").read_text()
    assert ("<h2>People's digits (drawn on the page, photographed)</h2><table><tr><th>drawn</th><td>accuracy 0.92, "
            "digits_new_to_both 90, accuracy_on_those 0.91, champion_accuracy 0.95, difference_upper_bound -0.01, "
            "p_value 0.02</td></tr>") in page
    assert ("- drawn digits 92.00%; on the 90 new to the champion 91.00% against its 95.00%\n"
            "- photographed digits 97.00%") in card_markdown(card)
