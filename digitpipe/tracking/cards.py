"""Evidence cards on the registry: what a card needs to know about a version (its tags and its runs' parameters),
and the card itself, logged on the version's run and named by a version tag."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

from digitpipe.tracking.client import permitted

if TYPE_CHECKING:
    from digitpipe.tracking.client import VersionStore

CARD_FOLDER = "card"  # on the version's run: card.html, card.json
CARD_TAG = "evidence_card"


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

    def record(self, version: str, run_id: str, folder: Path) -> str:
        """Log the card in `folder` on the version's run; the version's tag names it. Returns the artifact path."""
        with permitted(f"log the card of v{version}"):
            self.client.log_artifacts(run_id, str(folder), CARD_FOLDER)
        path = f"{CARD_FOLDER}/card.html"
        self.store.set_version_tags(version, {CARD_TAG: path})
        return path

    def recorded(self, version: str, dest: Path) -> tuple[Path, str, dict[str, str]] | None:
        """The card logged on the version's run, downloaded into `dest`, the run and the version's tags; None
        where it has none."""
        mv = self.client.get_model_version(self.cfg.registered_model, version)
        if CARD_TAG not in mv.tags:
            return None
        folder = self.client.download_artifacts(mv.run_id, CARD_FOLDER, str(dest))
        return Path(folder), mv.run_id, dict(mv.tags)
