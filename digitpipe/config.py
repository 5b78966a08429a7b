"""The one typed configuration: built once at the entry point from mlflow.yaml, the environment and CLI flags."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from digitpipe.errors import UserError
from digitpipe.files import first_line, load_yaml
from digitpipe.records.specs import MODEL_NAMES, SPACES, Choice, LogRegSpec, NetSpec, Range, flat_values, spec_for

BUILT_IN = "built-in defaults"
CONFIG_FILE = Path("mlflow.yaml")  # read from the working directory when no --config names a file


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PromotionConfig(_Frozen):
    """The promotion gate: a challenger needs a passed ONNX parity check and all of these, against the champion on
    the held-out digits neither of them trained on (the `promotion` section of `mlflow.yaml`)."""

    min_accuracy: float = Field(0.85, ge=0, le=1)  # absolute floor on held-out accuracy
    min_margin: float = Field(0.001, ge=0, le=1)  # accuracy (as a fraction) it must beat the champion by
    max_p_value: float = Field(0.05, gt=0, le=1)  # McNemar's test on the two models' errors must be below this
    # Held-out images the champion trained on are left out of the comparison; with fewer than this many left
    # (another --seed, --val-fraction or --data than the champion's), the verdict is not_comparable.
    min_comparable_images: int = Field(200, ge=1)
    # (c) Robustness on the perturbation suite (digitpipe.robustness): the challenger may be less robust than the
    # champion by at most this (a fraction; 0.005 = 0.5 points), judged by the one-sided 95% upper bound of a
    # bootstrap over digits; and, if set, its robust accuracy must reach the floor.
    robust_margin: float = Field(0.005, ge=0, le=1)
    min_robust_accuracy: float | None = Field(None, ge=0, le=1)
    # (d) Labelled feedback (digitpipe.monitoring.feedback): a challenger significantly better than the champion on
    # the held-out feedback digits neither trained on (at least `min_feedback_images` of them) is promoted if it is
    # not worse on the base held-out images by more than `feedback_base_margin` (a fraction).
    min_feedback_images: int = Field(50, ge=1)
    feedback_base_margin: float = Field(0.005, ge=0, le=1)
    # auto: a version that earns promotion becomes the champion; required: it waits (awaiting_approval) for
    # `digitpipe approve`, and after approval_timeout_hours without a decision it is not_approved.
    approval: Literal["auto", "required"] = "auto"
    approval_timeout_hours: float = Field(72, gt=0)


class MonitoringConfig(_Frozen):
    """When a scoring batch no longer looks like its model's training data (the `monitoring` section of
    `mlflow.yaml`; defaults measured by bench/drift.py): a feature's population stability index above `warn_psi`
    is worth a look, above `drift_psi` the batch has drifted (both raised by a batch's sampling noise, so that
    small batches do not raise false alarms: see digitpipe.monitoring.drift)."""

    warn_psi: float = Field(0.1, gt=0)
    drift_psi: float = Field(0.25, gt=0)
    min_rows: int = Field(100, ge=1)  # fewer rows say too little: the verdict is then too_few_rows
    # Labelled feedback on which the champion scores below this raises digitpipe.accuracy.low (None: never).
    min_live_accuracy: float | None = Field(0.95, ge=0, le=1)
    # Feedback from the serving page comes from anyone: kept out of retraining (`run --feedback`), the gate's
    # feedback clause and the alarms unless this is set (it is recorded, tagged source=web, either way).
    trust_web_feedback: bool = False


class ServingConfig(_Frozen):
    """`digitpipe serve` (the `serving` section of `mlflow.yaml`)."""

    poll_seconds: float = Field(30, gt=0)  # how often the alias is read again: a moved champion is served this soon
    requests_dir: str = "served"  # answered requests, kept for feedback (rotated files)
    keep_requests: int = Field(20_000, ge=100)  # at most this many answered requests on disk
    feedback_batch: int = Field(50, ge=1)  # page feedback is recorded as one feedback run per this many answers ...
    feedback_seconds: float = Field(60, gt=0)  # ... or after this long, whichever comes first
    drift_window: int = Field(500, ge=10)  # served digits per drift check against the version's reference
    drift_events: bool = False  # also send a drifted window as a Prefect event (drawn digits drift by nature)
    # Time limits on receiving a request (digitpipe.serving.timeouts), past which the client gets a 408 and the
    # connection is closed. Headers (~1 KB), from the connection opening or a later request's first byte: 20 s lets
    # a packet lost three times on a bad phone link be resent (TCP backs off 1+2+4+8 s). The body, from its headers:
    # 60 s carries the page's largest picture (a few hundred KB) at 100 kbit/s (EDGE), a picture at the 4 MiB limit at
    # 0.6 Mbit/s and a batch at the 32 MiB limit (MLflow clients, on a LAN) at 4.5 Mbit/s.
    header_seconds: float = Field(20, gt=0)
    body_seconds: float = Field(60, gt=0)


SQLITE = "sqlite:///"


def sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite:/// URL (an MLflow store, an Optuna storage); None for any other store."""
    return Path(url.removeprefix(SQLITE)) if url.startswith(SQLITE) else None


class TrackingConfig(_Frozen):
    """Where runs and models go, and when a model earns the champion alias (the `mlflow.yaml` file)."""

    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str | None = None  # None: MLflow's default next to the tracking store
    experiment: str = "digitpipe"
    registered_model: str = "digits"
    champion_alias: str = "champion"
    previous_alias: str = "previous_champion"  # where the champion goes when it is replaced (for --rollback)
    promotion: PromotionConfig = PromotionConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    serving: ServingConfig = ServingConfig()
    config_file: str = BUILT_IN  # which file these settings came from (recorded on every run), set by the loader

    @property
    def local_store(self) -> Path | None:
        """The database file of a local sqlite store (None for a tracking server or another database)."""
        return sqlite_file(self.tracking_uri)

    @model_validator(mode="before")
    @classmethod
    def _gate_keys_at_top_level(cls, values: object) -> object:
        """Files written before the `promotion` section put the gate's keys at the top level: still read them."""
        if isinstance(values, dict) and (flat := values.keys() & PromotionConfig.model_fields.keys()):
            nested = dict(values.get("promotion") or {})
            values = {k: v for k, v in values.items() if k not in flat} | {
                "promotion": nested | {k: values[k] for k in flat}}
        return values


# torch's threads of a process: far above any machine's cores (torch itself overflows past 2**31 and would start as
# many threads as it is told)
MAX_THREADS = 1024
# numpy's and scikit-learn's seeds are 32-bit: a larger or negative one is the user's error, said before any work
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class SplitSettings(_Frozen):
    """How a run or a study splits its data, and the training seed the split's seed defaults to (shared by the
    pipeline's and tuning's configurations)."""

    protocol: Literal["book", "standard"] = "book"  # standard: test on the t10k files beside the training files
    test_fraction: float = Field(0.25, gt=0, lt=1)
    val_fraction: float = Field(0.1, gt=0, lt=1)
    seed: Seed = 42  # training seeds; the split's too unless split_seed is given
    split_seed: Seed | None = None  # the split on its own (tuning retrains one split with several training seeds)

    @property
    def seed_of_split(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def recipe(self) -> dict[str, object]:
        """How the data is split: what a params file records and digitpipe.hyperparams.check_split compares."""
        return {"protocol": self.protocol, "split_seed": self.seed_of_split, "test_fraction": self.test_fraction,
                "val_fraction": self.val_fraction}


class PipelineConfig(SplitSettings):
    """Everything one pipeline run needs, passed down from the entry point."""

    data: Path
    models: tuple[str, ...] = MODEL_NAMES
    epochs: int | None = Field(None, ge=1)  # overrides every net's epoch count when set
    stop_at_accuracy: float | None = Field(None, gt=0, le=1)  # the book's early-stopping rule, for every net
    patience: int | None = Field(None, ge=1)  # early stopping on validation loss, for every net
    resume: bool = False  # continue each net from its last checkpoint of an identical run
    force: bool = False  # train a model even where a version with its training key is registered
    feedback: bool = False  # also train on the labelled feedback in the store (its held-out share judges the gate)
    progress: bool = False  # a progress bar per model (the CLI turns it on for terminals)
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)  # torch threads per model; None: every core it may use
    # Per model, fields of its spec that differ from the zoo's (--set, --params; checked by digitpipe.hyperparams)
    hyperparams: dict[str, dict[str, Any]] = {}
    # Per model, the params file its values came from (path, digest, study): tags of its run and version
    params_tags: dict[str, dict[str, str]] = {}
    params_split: dict[str, Any] | None = None  # the split the params file's study tuned on (hyperparams.check_split)
    min_rows: int = Field(100, ge=1)
    out_dir: Path = Path("outputs")
    summary: Path | None = None
    tracking: TrackingConfig | None = None  # None: read mlflow.yaml in the working directory (a deployment's case)
    # Train for this registered model instead of the tracking config's: a triggered retraining names the model its
    # event was about (prefect.yaml), which need not be the one in the worker's mlflow.yaml.
    registered_model: str | None = None
    # What locks promotion where the MLflow store is remote (a local sqlite store always takes its file lock):
    # "prefect", the concurrency limit on the run's Prefect server (a deployment's case); "refuse", no server every
    # worker sees (the CLI's temporary Prefect API), so promotion refuses; "unlocked", the user accepted the risk.
    promotion_lock: Literal["prefect", "refuse", "unlocked"] = "prefect"

    @field_validator("hyperparams")
    @classmethod
    def _known_fields(cls, values: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from digitpipe.hyperparams import checked

        try:
            return checked(values, "hyperparams")
        except UserError as exc:
            raise ValueError(str(exc).removeprefix("hyperparams: ")) from None

    def spec(self, name: str) -> LogRegSpec | NetSpec:
        """Model `name`'s full spec in this run: the zoo's, with the run's epochs, stopping rules and values."""
        return spec_for(name, self.epochs, self.stop_at_accuracy, self.patience, self.hyperparams.get(name))

    @field_validator("models")
    @classmethod
    def _known_models(cls, models: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in models if m not in MODEL_NAMES]
        if unknown or not models:
            raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODEL_NAMES)}")
        return tuple(dict.fromkeys(models))


class StudyPlan(_Frozen):
    """What a `digitpipe tune` process searches, and where the study lives (shared by every process on it)."""

    model: str
    trials: int = Field(ge=1)  # the study's total of finished (complete or pruned) trials, shared by every process
    study: str
    storage: str  # an SQLAlchemy URL: sqlite:///optuna.db for one process, postgresql+psycopg://... for several
    base: dict[str, Any] = {}  # fixed values of the model's spec, not searched (--set, --params, --epochs)
    seed: Seed = 42  # every trial's training seed
    timeout: float | None = Field(None, gt=0)  # seconds this process searches at most
    prune: bool = True
    # robust: mean of clean and perturbed accuracy; people: and of the drawn and photographed digits (digitpipe.people);
    # accuracy-time: the robust objective and seconds, the Pareto front
    objective: Literal["robust", "people", "accuracy-time"] = "robust"
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)  # torch threads of this process (its share of the cores)

    @property
    def pareto(self) -> bool:
        """Two objectives, the objective up and training seconds down: the front, unpruned."""
        return self.objective == "accuracy-time"

    @property
    def space(self) -> dict[str, Range | Choice]:
        """What the study searches: the model's space less the fields the user fixed."""
        return {k: v for k, v in SPACES[self.model].items() if k not in self.base}

    def defaults(self) -> dict[str, object]:
        """The shipped values of the searched fields: the study's first trial."""
        return {k: v for k, v in flat_values(spec_for(self.model, overrides=self.base)).items() if k in self.space}

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model not in MODEL_NAMES:
            raise ValueError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")
        return model

    @model_validator(mode="after")
    def _known_fields(self) -> StudyPlan:
        from digitpipe.hyperparams import checked

        checked({self.model: self.base}, "fixed values")  # e.g. --epochs 0
        if not set(SPACES[self.model]) - set(self.base):
            raise UserError(f"--set and --params fix every field tune searches for {self.model} "
                            f"({', '.join(SPACES[self.model])}): nothing is left to search")
        return self


class TuneConfig(StudyPlan, SplitSettings):
    """One `digitpipe tune` process: its study, the data and split it searches on, and where its records go."""

    data: Path
    seeds: int = Field(3, ge=0)  # training seeds the best trial is retrained with (its spread); 0: none
    base_tags: dict[str, str] = {}  # the params file the fixed values came from
    output: Path | None = None  # the best values as a params file for `run --params`
    out_dir: Path = Path("outputs")
    progress: bool = False
    tracking: TrackingConfig


def load_tracking_config(path: Path | None = None) -> TrackingConfig:
    """The settings of `path` (which must exist), else of ./mlflow.yaml where there is one, else the built-in
    defaults (the shipped mlflow.yaml's values); MLFLOW_TRACKING_URI in the environment overrides tracking_uri."""
    if path is not None and not path.is_file():
        raise UserError(f"{path}: no such configuration file")
    path = path or (CONFIG_FILE if CONFIG_FILE.is_file() else None)
    values: dict = {}
    if path is not None:
        try:
            values = load_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({first_line(exc)})") from None
        if not isinstance(values, dict):
            raise UserError(f"{path}: expected a mapping of settings, not {type(values).__name__}")
    if os.environ.get("MLFLOW_TRACKING_URI"):
        values["tracking_uri"] = os.environ["MLFLOW_TRACKING_URI"]
    values["config_file"] = str(path.resolve()) if path else BUILT_IN
    return build(TrackingConfig, values, source=str(path or BUILT_IN))


def build(model: type[BaseModel], values: dict, source: str) -> BaseModel:
    """Validate `values` into `model`, turning pydantic's report into one user-readable line."""
    try:
        return model(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        said = first["msg"].removeprefix("Value error, ")  # our own validators' words, without pydantic's label
        raise UserError(f"{source}: {where}: {said}") from None
