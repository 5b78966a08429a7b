"""The model a command or a server names, loaded once for `score`, the scoring flow and `serve`: a registered
version (its int8 file where one was accepted, checked against the checksum recorded at registration) or a .onnx
file, with who it is and the drift reference it is checked against; and the split it was trained on, rebuilt."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from digitpipe.config import TrackingConfig
from digitpipe.errors import UserError
from digitpipe.monitoring.drift import Reference, registered_reference
from digitpipe.onnx_scorer import SCORE_BATCH, OnnxScorer
from digitpipe.records.models import ModelIdentity, ModelRef

# MLflow and the data readers are imported where a registered model or a split needs them: `score` of a .onnx
# file loads onnxruntime and the readers only.
if TYPE_CHECKING:
    from digitpipe.data import Split
    from digitpipe.tracking import Registry


@dataclass(frozen=True)
class LoadedModel:
    """A model's local ONNX file, who it is, its drift reference (None: no check) and its registry (None: a file)."""

    path: Path
    identity: ModelIdentity
    reference: Reference | None
    registry: Registry | None = None

    def scorer(self, batch_size: int = SCORE_BATCH) -> OnnxScorer:
        """One onnxruntime session on the file (not picklable: made where it scores)."""
        return OnnxScorer(self.path, batch_size)


def load_model(model: ModelRef | str, tracking: TrackingConfig, dest: Path, prefer_int8: bool = True,
               reference: Path | None = None, drift: bool = True) -> LoadedModel:
    """`model` (models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file) with its files downloaded into `dest`. With
    `drift`, its drift reference: the `reference` file where one is named (a bad file is the user's error), else the
    one registered with the version (a missing or unreadable one means no check: it must not stop the scoring)."""
    ref = ModelRef.parse(model) if isinstance(model, str) else model
    registry = None
    if ref.registered:
        from digitpipe.tracking import tracker_for

        registry = tracker_for(tracking, create=False).registry
        path, identity = registry.resolve(ref, dest, prefer_int8)
    elif ref.path.is_file():
        path, identity = ref.path, ModelIdentity(str(ref.path.resolve()))
    else:
        raise UserError(f"{ref.text}: no such model file (expected a .onnx file or models:/NAME@ALIAS)")
    if not drift:
        return LoadedModel(path, identity, None, registry)
    if reference is not None:
        return LoadedModel(path, identity, Reference.load(reference), registry)
    found = registry and registry.monitor_references.download(identity, dest / "reference")
    return LoadedModel(path, identity, registered_reference(found), registry)


def training_split(registry: Registry | None, identity: ModelIdentity, data: Path | None, protocol: str | None,
                   seed: int | None, held_out_only: bool = False) -> tuple[Split, str]:
    """The split a model was trained on, rebuilt, and a phrase saying which: a registry version's own (its run's
    recipe, checked against the recorded digests, with `held_out_only` only the held-out part's), else the one the
    user names for a .onnx file."""
    from digitpipe.data import SplitRecipe

    if registry is None:
        if data is None or protocol is None or seed is None:
            raise UserError("a .onnx file has no training run to rebuild its split from: give --data, --protocol "
                            "and --seed")
        if protocol not in ("book", "standard"):
            raise UserError(f"--protocol {protocol!r}: expected book or standard")
        return SplitRecipe(data, protocol, seed).rebuild(), f"the split named ({protocol}, seed {seed})"
    if protocol is not None or seed is not None:
        raise UserError(f"{identity.uri} is checked on its training run's split: leave out --protocol and --seed")
    recipe = registry.lineage.training_split(identity.registered_model, identity.version, held_out_only)
    if data is not None:
        recipe = dataclasses.replace(recipe, data=data)
    return recipe.rebuild(), f"its training run's split ({recipe.protocol}, seed {recipe.seed})"
