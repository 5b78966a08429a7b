"""The evidence card of a registered version: what the model is, what it was trained on, how well it reads the
held-out digits, what the gate compared it with and what it decided. Its figures are computed here, by scoring the
version's ONNX file (and the champion's) on the held-out part; only the gate's own counts, bootstrap and feedback
figures are read from the verdict's tags. Written as card.json, a self-contained card.html and a markdown summary.

Evidence is append-only: a version's first card (written by its run once the verdict is in) is the decision's and
is never scored again; a later card is a revision beside it, and a new decision is added to a card, the earlier
one kept. A revision compares with a champion deleted since (digitpipe gc) by carrying the decision's card's
comparison and picture: the card needs nothing of the other version once it was written."""

from __future__ import annotations

import base64
import html
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from digitpipe.data import Dataset
from digitpipe.errors import UserError
from digitpipe.evaluate import accuracy_interval, evaluate, mcnemar
from digitpipe.files import atomic_path, write_json, write_text
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.verdicts import from_tags, run_tags
from digitpipe.runtime import utc_now
from digitpipe.tracking import Registry
from digitpipe.tracking.cards import CARD_FOLDER, RecordedCard, card_page

PICTURE = "disagreements.png"  # beside card.json on the run, so that the page can be made again with a new decision
NOT_SPEC = {"model", "seed", "device"}  # parameters of a model's run that are not its spec
EVIDENCE_TAGS = ("champion_version", "challenger_accuracy", "champion_accuracy", "only_challenger_right",
                 "only_champion_right", "mcnemar_p_value", "comparison_excluded", "challenger_robust_accuracy",
                 "champion_robust_accuracy", "robust_digits", "robust_difference_upper_bound", "feedback_images",
                 "challenger_feedback_accuracy", "champion_feedback_accuracy", "feedback_p_value", "approved_by",
                 "approved_at", "approval_comment")


def write_card(registry: Registry, version: str, test: Dataset, folder: Path) -> dict:
    """Score `version` (and the champion its verdict names) on `test`, the held-out part it was judged on; log its
    card on the version's run, name it by a version tag, and keep a copy in `folder`. A version that has a card
    gets a revision beside it: the card it has stays as it is. Returns the card."""
    facts = registry.cards.facts(version)
    tags = facts["tags"]
    with tempfile.TemporaryDirectory(prefix="digitpipe-card-") as tmp:
        made = Path(tmp) / "card"
        made.mkdir()
        onnx = registry.version_onnx(version, Path(tmp) / "challenger")
        predicted = OnnxScorer(onnx).predict(test.images)
        card = {"registered_model": registry.cfg.registered_model, "version": version,
                **_revision(registry.cards.next_revision(facts["run_id"], tags)),
                "model": _model(tags, facts["params"], onnx), "trained_on": _trained_on(tags, facts),
                "held_out": _held_out(test.labels, predicted), "people": _people(tags),
                "decision": _decision(version, tags)}
        champion = tags.get("champion_version")
        if champion and "mcnemar_p_value" in tags:  # the gate compared the two on the digits new to both
            card["comparison"] = _comparison(registry, version, champion, test, predicted, Path(tmp), made / PICTURE)
        _publish(registry, card, made, facts["run_id"])
        folder.mkdir(parents=True, exist_ok=True)
        for part in made.iterdir():  # only the card's own files: a folder the user names is never logged whole
            with atomic_path(folder / part.name) as kept:
                shutil.copyfile(part, kept)
    return card


def refresh_decision(registry: Registry, version: str) -> dict | None:
    """The decision read again from the version's tags (a person decided, or the wait ran out) into its newest
    card and its decision's card, the earlier decision kept beside it, both logged again; the newest card, or None
    where the version has none."""
    with tempfile.TemporaryDirectory(prefix="digitpipe-card-") as tmp:
        newest = registry.cards.recorded(version, Path(tmp) / "newest")
        if newest is None:
            return None
        card = _redecide(registry, version, newest)
        if "revision" in card:  # the decision's card says the decision too; the tag still names the newest
            _redecide(registry, version, registry.cards.recorded(version, Path(tmp) / "decision", decision=True),
                      named=False)
    return card


def where_logged(card: dict) -> str:
    """Where `card` is on the version's run, as the `card` command says it."""
    if (revision := card.get("revision")) is None:
        return f"card on its run ({card_page(None)})"
    return (f"revision {revision['number']} of its card on its run ({card_page(revision['number'])}; the "
            f"decision's {revision['decision_card']} kept)")


def _revision(number: int | None) -> dict:
    """What a revision says of itself (nothing for the decision's card): which, when, and where the decision's is."""
    if number is None:
        return {}
    return {"revision": {"number": number, "written_at": utc_now(), "decision_card": card_page(None)}}


def _redecide(registry: Registry, version: str, recorded: RecordedCard, named: bool = True) -> dict:
    """The card in `recorded` with the version's decision now, the one it said before kept in `earlier_decisions`,
    logged again where it was."""
    card = json.loads((recorded.folder / "card.json").read_text())
    decision = _decision(version, recorded.tags)
    if decision != card["decision"]:
        card["earlier_decisions"] = [*card.get("earlier_decisions", []), card["decision"]]
        card["decision"] = decision
    _publish(registry, card, recorded.folder, recorded.run_id, named)
    return card


def _publish(registry: Registry, card: dict, made: Path, run_id: str, named: bool = True) -> None:
    """card.json and card.html (the picture inline) in `made`, logged on the version's run where the card's
    revision belongs (named by the version's tag unless `named` is False)."""
    write_json(made / "card.json", card)
    picture = made / PICTURE
    write_text(made / "card.html", card_html(card, picture.read_bytes() if picture.is_file() else None))
    registry.cards.record(card["version"], run_id, made, (card.get("revision") or {}).get("number"), named)


def _decision(version: str, tags: dict) -> dict:
    """The decision on the version and the evidence it recorded (nothing for a version not judged yet)."""
    verdict = from_tags(version, tags)
    said = {**run_tags(verdict), **({"verdict_at": verdict.at} if verdict.at else {})} if verdict else {}
    return said | {key: tags[key] for key in EVIDENCE_TAGS if key in tags}


def _model(tags: dict, params: dict, onnx: Path) -> dict:
    import onnx as onnx_lib

    graph = onnx_lib.load(str(onnx)).graph
    return {"name": tags.get("model_name", "?"), "spec": {k: v for k, v in params.items() if k not in NOT_SPEC},
            "parameters": int(sum(np.prod(t.dims, dtype=np.int64) for t in graph.initializer)),
            "onnx_kb": round(onnx.stat().st_size / 1024, 1)}


def _trained_on(tags: dict, facts: dict) -> dict:
    pipeline = facts["pipeline"]
    return {"data_digest": tags.get("data_digest", "not recorded"),
            "split": {k: pipeline[k] for k in ("protocol", "split_seed", "test_fraction", "val_fraction",
                                               "split_train", "split_val", "split_test") if k in pipeline},
            "seed": facts["params"].get("seed", "not recorded"),
            "code_version": tags.get("code_version", "not recorded (registered before code versions)"),
            "git_commit": tags.get("mlflow.source.git.commit", "unknown"),
            "training_key": tags.get("training_key", "not recorded")}


def _held_out(labels: np.ndarray, predicted: np.ndarray) -> dict:
    """Accuracy with its 95% interval and per-digit precision and recall, from the confusion matrix."""
    evaluation = evaluate(labels, predicted)
    confusion = np.array(evaluation.confusion)
    right = int(np.trace(confusion))
    low, high = accuracy_interval(right, int(confusion.sum()))
    return {"images": int(confusion.sum()), "right": right, "accuracy": right / max(int(confusion.sum()), 1),
            "accuracy_ci95": [low, high],
            "per_digit": [{"digit": d, "images": int(confusion[d].sum()), "precision": evaluation.precision[d],
                           "recall": evaluation.recall[d]} for d in range(len(confusion))],
            "confusion": evaluation.confusion}


def _people(tags: dict) -> dict:
    """Accuracy per family of people's digits, as the version's run measured it on its suite, and where the gate
    compared the two on the digits new to the champion, both models' accuracy on those."""
    from digitpipe.robustness import PEOPLE

    families = {}
    for family in PEOPLE:
        if (mine := tags.get(f"people_accuracy_{family}")) is None:
            continue
        families[family] = {"accuracy": float(mine)}
        if f"{family}_digits" in tags:
            families[family] |= {"digits_new_to_both": int(tags[f"{family}_digits"]),
                                 "accuracy_on_those": float(tags[f"challenger_{family}_accuracy"]),
                                 "champion_accuracy": float(tags[f"champion_{family}_accuracy"]),
                                 "difference_upper_bound": float(tags[f"{family}_difference_upper_bound"]),
                                 "p_value": float(tags.get(f"{family}_p_value", "nan"))}
    return families


def _comparison(registry: Registry, version: str, champion: str, test: Dataset, predicted: np.ndarray,
                scratch: Path, picture: Path) -> dict:
    """McNemar's counts against `champion` on the held-out digits it never trained on, and the picture of those
    on which the two disagree (written to `picture`)."""
    from digitpipe.plots import disagreements_png

    try:
        tags = registry.version_tags(champion)
    except UserError:  # deleted since (digitpipe gc)
        return _carried(registry, version, champion, scratch / "decision", picture)
    seen = registry.lineage.trained_on(champion, tags)
    new = np.ones(len(test), bool) if seen is None else ~np.isin(test.image_hashes(), seen)
    theirs = OnnxScorer(registry.version_onnx(champion, scratch / "champion")).predict(test.images[new])
    ours, labels = predicted[new], test.labels[new]
    paired = mcnemar(labels, ours, theirs)
    disagreements = int(np.sum(ours != theirs))
    if disagreements:
        disagreements_png(test.images[new], labels, ours, theirs, picture, f"v{version}", f"v{champion}")
    return {"champion_version": champion, "images_new_to_both": paired.images,
            "excluded": int(len(test) - paired.images), "challenger_accuracy": paired.challenger_accuracy,
            "champion_accuracy": paired.champion_accuracy, "only_challenger_right": paired.only_challenger_right,
            "only_champion_right": paired.only_champion_right, "mcnemar_p_value": paired.p_value,
            "disagreements": disagreements}


def _carried(registry: Registry, version: str, champion: str, scratch: Path, picture: Path) -> dict:
    """For a champion no longer registered: the comparison the version's decision's card recorded, its picture
    copied to `picture`; without one, a note (the gate's counts are in the decision)."""
    gone = f"v{champion} is no longer registered"
    recorded = registry.cards.recorded(version, scratch, decision=True)
    earlier = json.loads((recorded.folder / "card.json").read_text()).get("comparison", {}) if recorded else {}
    if "mcnemar_p_value" not in earlier:
        return {"champion_version": champion, "not_compared": f"{gone}: the gate's counts are in the decision"}
    if (kept := recorded.folder / PICTURE).is_file():
        shutil.copyfile(kept, picture)
    return earlier | {"carried_from": f"{CARD_FOLDER}/card.json: {gone}"}


def card_html(card: dict, picture: bytes | None) -> str:
    """The card as one self-contained page (the picture inline), readable in MLflow's artifact view."""
    def rows(pairs) -> str:
        return "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(_shown(v))}</td></tr>" for k, v in pairs)

    held = card["held_out"]
    digits = "".join(f"<tr><td>{d['digit']}</td><td>{d['images']}</td><td>{d['precision']:.2%}</td>"
                     f"<td>{d['recall']:.2%}</td></tr>" for d in held["per_digit"])
    low, high = held["accuracy_ci95"]
    comparison, revision, earlier = card.get("comparison"), card.get("revision"), card.get("earlier_decisions")
    parts = [
        f"<h1>{html.escape(card['registered_model'])} v{card['version']}: {html.escape(card['model']['name'])}</h1>",
        f"<p>Revision {revision['number']} of this card, written {revision['written_at']}; the decision's card is "
        f"{html.escape(revision['decision_card'])}</p>" if revision else "",
        f"<p class=verdict>{html.escape(card['decision'].get('verdict', 'not judged yet'))}: "
        f"{html.escape(card['decision'].get('verdict_reason', ''))}</p>",
        "<h2>The model</h2><table>", rows([(k, v) for k, v in card["model"].items() if k != "spec"]),
        rows(card["model"]["spec"].items()), "</table>",
        "<h2>Trained on</h2><table>", rows(card["trained_on"].items()), "</table>",
        f"<h2>Held-out accuracy: {held['accuracy']:.2%} (95% interval {low:.2%} to {high:.2%}, "
        f"{held['right']:,} of {held['images']:,})</h2>",
        "<table><tr><th>digit</th><th>images</th><th>precision</th><th>recall</th></tr>", digits, "</table>",
        "<h2>People's digits (drawn on the page, photographed)</h2><table>" + rows(card["people"].items())
        + "</table>" if card.get("people") else "",
        "<h2>Against the champion</h2>" + ("<table>" + rows(comparison.items()) + "</table>" if comparison
                                          else "<p>not compared with a champion</p>"),
        f"<img alt='digits on which the two disagree' src='data:image/png;base64,"
        f"{base64.b64encode(picture).decode()}'>" if picture else "",
        "<h2>The decision</h2><table>", rows(card["decision"].items()), "</table>",
        "<h2>Earlier decisions</h2><table>" + rows((d.get("verdict_at", "?"), d) for d in earlier) + "</table>"
        if earlier else ""]
    style = ("body{font-family:sans-serif;max-width:1000px;margin:2em auto}th,td{padding:2px 10px;text-align:left}"
             ".verdict{font-size:1.2em;background:#eef;padding:.5em}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(card['registered_model'])} "
            f"v{card['version']}</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")


def card_markdown(card: dict, link: str = "") -> str:
    """The card's gist in markdown (a Prefect artifact of the flow run), linking the full card."""
    held, decision = card["held_out"], card["decision"]
    low, high = held["accuracy_ci95"]
    lines = [f"# {card['registered_model']} v{card['version']}: {card['model']['name']}",
             f"**{decision.get('verdict', 'not judged yet')}**: {decision.get('verdict_reason', '')}", "",
             f"- held-out accuracy {held['accuracy']:.2%} (95% interval {low:.2%} to {high:.2%}) on "
             f"{held['images']:,} images",
             f"- {card['model']['parameters']:,} parameters, ONNX {card['model']['onnx_kb']} KB",
             f"- data {card['trained_on']['data_digest'][:16]}, code {card['trained_on']['code_version'][:16]}"]
    lines += [f"- {family} digits {row['accuracy']:.2%}" + (f"; on the {row['digits_new_to_both']} new to the "
              f"champion {row['accuracy_on_those']:.2%} against its {row['champion_accuracy']:.2%}"
              if "champion_accuracy" in row else "")
              for family, row in card.get("people", {}).items()]
    if (comparison := card.get("comparison")) and "mcnemar_p_value" in comparison:
        lines.append(f"- against champion v{comparison['champion_version']} on {comparison['images_new_to_both']:,} "
                     f"digits new to both: {comparison['challenger_accuracy']:.2%} vs "
                     f"{comparison['champion_accuracy']:.2%}, {comparison['only_challenger_right']} right only by "
                     f"it, {comparison['only_champion_right']} only by the champion, McNemar "
                     f"p={comparison['mcnemar_p_value']:.3g}")
    return "\n".join(lines + ([f"\nThe whole card: {link}"] if link else []))


def _shown(value: object) -> str:
    """A figure as a person reads it: 4 significant digits (tags hold floats as long strings), a dict as pairs."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_shown(item)}" for key, item in value.items())
    if isinstance(value, str) and "." in value:
        try:
            value = float(value)
        except ValueError:
            pass
    return f"{value:.4g}" if isinstance(value, float) else str(value)
