"""Hyperparameters from outside the code: `run --set MODEL.FIELD=VALUE` and `run --params FILE.yaml` (what
`digitpipe tune` writes), checked against the zoo's spec types, bounds and choices.

Which value wins, most specific last: the zoo's default, then a run's shorthand for every net (--epochs,
--patience, --stop-at-accuracy), then the params file, then --set."""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from digitpipe.errors import UserError
from digitpipe.files import load_yaml, write_text
from digitpipe.records.specs import SPECS, NetSpec, flat_fields

Overrides = dict[str, dict[str, object]]  # model -> {field (dotted for a field of a field): value}

# What a value may be, inclusive bounds and choices; a field not named here is only type-checked.
BOUNDS: dict[str, tuple[float, float]] = {
    "epochs": (1, 1000), "batch_size": (1, 65536), "lr": (1e-7, 10.0), "momentum": (0.0, 0.999),
    "weight_decay": (0.0, 1.0), "label_smoothing": (0.0, 0.5), "hidden": (1, 8192), "width": (1, 512),
    "stop_at_val_accuracy": (0.01, 1.0), "patience": (1, 1000), "decay": (1e-9, 100.0), "max_iter": (1, 100000),
    "degrees": (0.0, 90.0), "shift_px": (0.0, 14.0), "scale": (0.0, 0.9), "pen_share": (0.0, 1.0),
    "pen_full_share": (0.0, 1.0), "noise_share": (0.0, 1.0), "noise_sigma": (0.0, 255.0), "blur_share": (0.0, 1.0),
    "blur_sigma": (0.3, 5.0), "slant_share": (0.0, 1.0), "slant_degrees": (0.0, 60.0), "elastic_share": (0.0, 1.0),
    "elastic_alpha": (0.0, 100.0), "elastic_sigma": (0.5, 10.0), "pen_pixels": (0.0, 3.0),
    "round_pen_share": (0.0, 1.0), "round_pen_min": (0.3, 4.0), "round_pen_max": (0.3, 4.0), "photo_share": (0.0, 1.0),
    "photo_fade": (0.0, 1.0),
}
# Pairs of fields whose first may not exceed its second (either taken from the zoo where a source leaves it out)
ORDERED: tuple[tuple[str, str], ...] = (("augmentation.round_pen_min", "augmentation.round_pen_max"),)
CHOICES: dict[str, tuple[str, ...]] = {"optimizer": ("sgd", "adamw"), "schedule": ("constant", "onecycle")}


@dataclass(frozen=True)
class ParamsFile:
    """A params file's checked values, and what identifies it for the record (its digest, the study it came from)."""

    path: Path
    values: Overrides
    digest: str
    study: str | None = None
    split: dict | None = None  # the split a study tuned on (data digest, protocol, seed, fractions)

    def tags(self) -> dict[str, dict[str, str]]:
        """Per model the file sets: recorded on its run and the version it registers."""
        tags = {"params_file": str(self.path.resolve()), "params_file_digest": self.digest[:16],
                **({"params_study": self.study} if self.study else {})}
        return {model: tags for model in self.values}


def parse_sets(items: Iterable[str]) -> Overrides:
    """`--set MODEL.FIELD=VALUE` items as checked overrides (values read as YAML: 3e-3, 8, true, none)."""
    out: Overrides = {}
    for item in items:
        name, eq, text = item.partition("=")
        model, dot, key = name.strip().partition(".")
        if not eq or not dot or not key:
            raise UserError(f"--set {item!r}: expected MODEL.FIELD=VALUE, e.g. fastcnn.lr=3e-3")
        if key in out.get(model, {}):
            raise UserError(f"--set {model}.{key} is given twice: give each field once")
        out.setdefault(model, {})[key] = _yaml_value(text.strip())
    return checked(out, "--set")


def read_params(path: Path) -> ParamsFile:
    """The checked values of a params file: `params: {MODEL: {FIELD: VALUE}}`, optionally `study: {name: ...}`."""
    if not path.is_file():
        raise UserError(f"{path}: no such params file")
    raw = path.read_bytes()
    try:
        doc = load_yaml(raw)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict):
        raise UserError(f"{path}: expected a mapping with a 'params' section of MODEL: {{FIELD: VALUE}}")
    study = doc.get("study") if isinstance(doc.get("study"), dict) else {}
    values = {model: fields for model, fields in doc["params"].items()}
    return ParamsFile(path, checked(values, str(path)), hashlib.sha256(raw).hexdigest(), study.get("name"),
                      study.get("split") if isinstance(study.get("split"), dict) else None)


def check_split(tuned: dict | None, data_digest: str, recipe: dict, source: str) -> None:
    """Refuse to judge tuned values on another split of the data they were tuned on: its test part would hold
    digits the study trained or validated on. (t10k, the standard protocol's test part, no study ever reads.)"""
    if not tuned or tuned.get("data_digest") != data_digest[:16] or recipe["protocol"] == "standard":
        return  # other data, or a test part (t10k) that is not this data
    if differ := [k for k in recipe if tuned.get(k) != recipe[k]]:
        raise UserError(f"{source} was tuned on another split of this data ("
                        + ", ".join(f"{k} {tuned.get(k)}, not {recipe[k]}" for k in differ)
                        + "): its test part would hold digits the study tuned on; split as the study did "
                        "(--split-seed, --protocol, --val-fraction)")


def combine(*layers: Overrides) -> Overrides:
    """Overrides of several sources, a later one winning field by field."""
    out: Overrides = {}
    for layer in layers:
        for model, fields in layer.items():
            out[model] = {**out.get(model, {}), **fields}
    return out


def checked(values: Mapping[str, Mapping[str, object]], source: str) -> Overrides:
    """`values` with every model, field, type and bound checked (one UserError line naming the first bad one)."""
    out: Overrides = {}
    for model, fields in values.items():
        if model not in SPECS:
            raise UserError(f"{source}: unknown model {model!r}; choose from {', '.join(SPECS)}")
        known = flat_fields(SPECS[model])  # name -> (the zoo's value, the type)
        for key, value in _flat(fields, f"{source}: {model}").items():
            if key not in known:
                raise UserError(f"{source}: {model} has no field {key!r}; it has {', '.join(known)}")
            default, kind = known[key]
            if value is None and default is not None:
                raise UserError(f"{source}: {model}.{key}: must be set (got none)")
            out.setdefault(model, {})[key] = _checked_value(f"{source}: {model}.{key}", key, value, kind)
        if isinstance(SPECS[model], NetSpec) and SPECS[model].width is None and "width" in fields:
            raise UserError(f"{source}: {model}.width: {model} has no convolutions")
        _check_order(f"{source}: {model}", {k: v for k, (v, _) in known.items()} | out.get(model, {}))
    return out


def _check_order(where: str, values: Mapping[str, object]) -> None:
    """One UserError line for the first pair of ORDERED whose low end lies above its high end."""
    for low, high in ORDERED:
        if low in values and high in values and values[low] > values[high]:
            raise UserError(f"{where}.{low}: {values[low]} is above {high.rpartition('.')[2]} {values[high]}; "
                            "set both")


def _checked_value(where: str, key: str, value: object, kind: object) -> object:
    allowed = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None:
        if type(None) in allowed:
            return None
        raise UserError(f"{where}: must be set (got none)")
    base = next(t for t in allowed if t is not type(None))
    value = _as_type(where, value, base)
    name = key.rpartition(".")[2]
    if name in BOUNDS and not BOUNDS[name][0] <= value <= BOUNDS[name][1]:
        raise UserError(f"{where}: {value} is out of range [{BOUNDS[name][0]:g}, {BOUNDS[name][1]:g}]")
    if name in CHOICES and value not in CHOICES[name]:
        raise UserError(f"{where}: {value!r} is not one of {', '.join(CHOICES[name])}")
    return value


def _as_type(where: str, value: object, base: type) -> object:
    """`value` as `base` (int, float, bool or str): a whole number is a float too, YAML's '3e-3' string a float."""
    if base is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise UserError(f"{where}: expected {base.__name__}, got {value!r}")


def _flat(fields: object, where: str) -> dict[str, object]:
    """A model's fields from YAML, a nested mapping ({augmentation: {degrees: 8}}) as dotted names."""
    if not isinstance(fields, dict):
        raise UserError(f"{where}: expected a mapping of FIELD: VALUE")
    out: dict[str, object] = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            out |= {f"{key}.{k}": v for k, v in _flat(value, where).items()}
        else:
            out[str(key)] = value
    return out


def _yaml_value(text: str) -> object:
    """A --set value read as YAML; "none" (and YAML's null) unsets an optional field."""
    if text.lower() in ("", "none"):
        return None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def write_params(path: Path, model: str, values: Mapping[str, object], study: Mapping[str, object]) -> Path:
    """A params file for `run --params`: the model's values and the study they came from (written atomically)."""
    doc = {"study": dict(study), "params": {model: dict(values)}}
    return write_text(path, f"# digitpipe tune's result: digitpipe run --params {path}\n"
                      + yaml.safe_dump(doc, sort_keys=False))

