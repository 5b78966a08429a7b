"""The model a server answers with: one onnxruntime session for the version behind an alias, swapped for the new
one when the alias moves (read again every poll interval), so that no request fails during the move."""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from digitpipe.files import first_line
from digitpipe.model_loading import load_model
from digitpipe.monitoring.drift import Reference
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.models import ModelIdentity, ModelRef

if TYPE_CHECKING:
    from digitpipe.config import TrackingConfig
    from digitpipe.tracking import Registry

log = logging.getLogger("digitpipe.serve")


@dataclass(frozen=True)
class ServedModel:
    """One loaded version: its session, who it is (model name, version, precision) and its drift reference."""

    scorer: OnnxScorer
    identity: ModelIdentity
    path: Path
    reference: Reference | None
    folder: Path | None = None  # what was downloaded for it (removed when it is replaced)
    answered: tuple[int, int] = (0, 0)  # the page's answers on it in the store so far: (confirmed, all)

    @property
    def version(self) -> str | None:
        return self.identity.version

    def names(self) -> dict[str, str | None]:
        """What every response says about the model that answered it."""
        return dict(self._names)

    @functools.cached_property
    def _names(self) -> dict[str, str | None]:  # once per version, not per reply
        return {"model": self.identity.name, "version": self.version, "precision": self.identity.precision or "fp32"}


def _answered(tags: dict[str, str]) -> tuple[int, int]:
    """(confirmed, all) of the page's answers recorded on a version (its web_live_accuracy tags)."""
    try:
        rows = int(tags.get("web_live_accuracy_rows", 0))
        return round(float(tags.get("web_live_accuracy", 0)) * rows), rows
    except ValueError:
        return 0, 0


class ModelFollower:
    """The version `model` names now: loaded at start, then followed by a polling thread (a .onnx file is not
    followed). A request takes `current` once and keeps it: a swap never changes the session under a running
    request."""

    def __init__(self, model: str, tracking: TrackingConfig, poll_seconds: float) -> None:
        self.ref, self.tracking, self.poll_seconds = ModelRef.parse(model), tracking, poll_seconds
        self.registry: Registry | None = None  # the store of a registered model, once loaded
        self._folder = Path(tempfile.mkdtemp(prefix="digitpipe-serve-"))
        self._stop = threading.Event()
        self._swaps: list = []  # callbacks told of each new version (the drift window starts again)
        try:
            self.current = self._load()
        except BaseException:  # a server that cannot start leaves no folder behind
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    def _load(self) -> ServedModel:
        if not self.ref.registered:
            loaded = load_model(self.ref, self.tracking, self._folder)
            return ServedModel(loaded.scorer(), loaded.identity, loaded.path, None)
        folder = Path(tempfile.mkdtemp(dir=self._folder))
        try:
            loaded = load_model(self.ref, self.tracking, folder)  # int8 where accepted, as `score` does
            self.registry = loaded.registry
            answered = _answered(self.registry.version_tags(loaded.identity.version))
            return ServedModel(loaded.scorer(), loaded.identity, loaded.path, loaded.reference, folder, answered)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a failed download is tried again at the next poll
            raise

    def on_swap(self, callback) -> None:
        """Call `callback(new ServedModel)` after each swap."""
        self._swaps.append(callback)

    def refresh(self) -> bool:
        """Load the version the alias names now if it moved; True when it did."""
        if self.registry is None or self.registry.version_of(self.ref) == self.current.version:
            return False
        old, self.current = self.current, self._load()
        log.info("serving %s v%s (was v%s)", self.ref.text, self.current.version, old.version)
        for callback in self._swaps:
            callback(self.current)
        if old.folder:
            shutil.rmtree(old.folder, ignore_errors=True)  # its session stays in memory for requests in flight
        return True

    def start(self) -> None:
        """Poll the alias in a daemon thread until `stop`."""
        threading.Thread(target=self._poll, name="digitpipe-follow", daemon=True).start()

    def _poll(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.refresh()
            except Exception as exc:  # the store may be down a while: keep answering with the version we have
                log.warning("cannot read %s (%s); still serving v%s", self.ref.text, first_line(exc, 160),
                            self.current.version)

    def stop(self) -> None:
        self._stop.set()
        shutil.rmtree(self._folder, ignore_errors=True)
