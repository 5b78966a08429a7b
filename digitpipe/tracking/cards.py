"""Evidence cards on the registry: what a card needs to know about a version (its tags and its runs' parameters),
and the card itself, logged on the version's run and named by a version tag. The first card of a version is the
decision's, in card/; each later one is a revision beside it, in card-revisions/N/, so that nothing a card once
recorded is written over."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, NamedTuple

from mlflow.exceptions import MlflowException

from digitpipe.tracking.client import logged_whole, permitted

if TYPE_CHECKING:
    from digitpipe.tracking.client import VersionStore

CARD_FOLDER = "card"  # on the version's run: card.html, card.json, the picture
REVISIONS = "card-revisions"  # card-revisions/2, 3, ...: the cards written after the decision's
CARD_TAG = "evidence_card"  # names the newest card's page


def card_page(revision: int | None) -> str:
    """Where a card's page is on the version's run: the decision's card (None), or a revision of it."""
    return f"{CARD_FOLDER if revision is None else f'{REVISIONS}/{revision}'}/card.html"


class RecordedCard(NamedTuple):
    """A card logged on a version's run, downloaded: its folder, the run and the version's tags."""

    folder: Path
    run_id: str
    tags: dict[str, str]


class CardRecords:
    """The registry's evidence cards: what a card says of a version, and the card on the version's run."""

    def __init__(self, store: VersionStore) -> None:
        self.store, self.client, self.cfg = store, store.client, store.cfg

    def facts(self, version: str) -> dict:
        """What a version's card says it is and was trained on: its tags, its own run's parameters (the model's
        spec, seed) and its pipeline run's (data, split); missing runs give empty parameters."""
        try:
            mv = self.client.get_model_version(self.cfg.registered_model, version)
        except MlflowException:
            self.store.version_tags(version)  # its clear error
            raise
        tags = dict(mv.tags)
        return {"tags": tags, "run_id": mv.run_id, "params": self._params(mv.run_id),
                "pipeline": self._params(tags.get("pipeline_run_id"))}

    def _params(self, run_id: str | None) -> dict[str, str]:
        try:
            return dict(self.client.get_run(run_id).data.params) if run_id else {}
        except MlflowException:
            return {}

    def next_revision(self, run_id: str, tags: dict[str, str]) -> int | None:
        """The revision a new card of the version is: None for its first (the decision's card), else 2, 3, ..."""
        if CARD_TAG not in tags:
            return None
        numbers = [int(name) for entry in self.client.list_artifacts(run_id, REVISIONS)
                   if (name := PurePosixPath(entry.path).name).isdigit()]
        return max(numbers, default=1) + 1

    def record(self, version: str, run_id: str, folder: Path, revision: int | None = None,
               named: bool = True) -> str:
        """Log the card in `folder` on the version's run, as the decision's card or as `revision`; with `named`,
        the version's tag names it (the newest). Returns its page's artifact path."""
        page = card_page(revision)
        parent = str(PurePosixPath(page).parent)
        with permitted(f"log the card of v{version}"), logged_whole(self.client, run_id, parent):
            self.client.log_artifacts(run_id, str(folder), parent)
        if named:
            self.store.set_version_tags(version, {CARD_TAG: page})
        return page

    def recorded(self, version: str, dest: Path, decision: bool = False) -> RecordedCard | None:
        """The newest card logged on the version's run (with `decision`, the decision's card), downloaded into
        `dest`; None where the version has none."""
        mv = self.client.get_model_version(self.cfg.registered_model, version)
        if CARD_TAG not in mv.tags:
            return None
        page = card_page(None) if decision else mv.tags[CARD_TAG]
        folder = self.client.download_artifacts(mv.run_id, str(PurePosixPath(page).parent), str(dest))
        return RecordedCard(Path(folder), mv.run_id, dict(mv.tags))
