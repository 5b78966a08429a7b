"""Registered models as the rest of the house sees them: a reference a user gives (`models:/NAME@ALIAS`,
`models:/NAME/VERSION` or a .onnx file), who a loaded model is, and one registered version's row."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from digitpipe.errors import UserError
from digitpipe.records.verdicts import Verdict, VerdictKind, from_tags

_REGISTERED = re.compile(r"models:/([^/@]+)(?:@([^/]+)|/(\d+))")


@dataclass(frozen=True)
class ModelRef:
    """A model as a command names it: a registered version by alias or number, or a file (`path`)."""

    text: str
    name: str | None = None  # the registered model
    alias: str | None = None
    version: str | None = None
    path: Path | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """`models:/NAME@ALIAS`, `models:/NAME/VERSION`, or anything else as a file path; a malformed models:/ URI
        is a UserError."""
        if not text.startswith("models:/"):
            return cls(text, path=Path(text))
        if not (match := _REGISTERED.fullmatch(text)):
            raise UserError(f"{text}: expected models:/NAME@ALIAS, models:/NAME/VERSION or a .onnx file")
        name, alias, version = match.groups()
        return cls(text, name, alias, version)

    @classmethod
    def of_version(cls, name: str, version: str) -> ModelRef:
        return cls(f"models:/{name}/{version}", name, version=version)

    @property
    def registered(self) -> bool:
        return self.path is None


@dataclass(frozen=True)
class ModelIdentity:
    """Who a loaded model is: what it was asked for as, and for a registered version its model, number, run and the
    precision of the file loaded (int8 where one was accepted)."""

    uri: str
    registered_model: str | None = None
    version: str | None = None
    model_name: str | None = None
    run_id: str | None = None
    precision: str | None = None  # fp32 or int8; None for a file

    def params(self) -> dict[str, str]:
        """The identity as MLflow params and JSON: only what is known."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def name(self) -> str:
        """The model's name in replies and reports: its zoo name, else the file's stem."""
        return self.model_name or Path(self.uri).stem


@dataclass(frozen=True)
class VersionRecord:
    """One registered version: its number, when it was registered (UTC, to the minute), its run, the aliases that
    name it and its tags."""

    version: str
    created: str
    run_id: str
    aliases: tuple[str, ...]
    tags: Mapping[str, str]

    @property
    def verdict(self) -> Verdict | None:
        return from_tags(self.version, self.tags)

    @property
    def awaiting(self) -> bool:
        return (verdict := self.verdict) is not None and verdict.kind is VerdictKind.AWAITING_APPROVAL

    @property
    def model_name(self) -> str:
        return self.tags.get("model_name", "?")

    @property
    def pipeline_run_id(self) -> str | None:
        return self.tags.get("pipeline_run_id")
