"""The service's JSON bodies as pydantic models: they parse every request body (strictly: a pixel is a JSON number
from 0 to 255, never `true` or "12") and describe every reply, and the OpenAPI document (digitpipe.serving.api) is
generated from them, so the document cannot drift from what the handlers accept."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, Strict, StrictInt, StrictStr

MAX_IMAGES = 1024  # per request
MLFLOW_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")

# fail_fast everywhere: a list stops at its first bad item, so a refused body of 1,024 bad images costs one error,
# not 800,000 (pydantic builds every error before the first is read)
Pixel = Annotated[float, Strict(), Field(ge=0, le=255, allow_inf_nan=False)]  # strict: no booleans, no strings
Flat = Annotated[list[Pixel], Field(min_length=784, max_length=784, fail_fast=True)]
Row = Annotated[list[Pixel], Field(min_length=28, max_length=28, fail_fast=True)]
Square = Annotated[list[Row], Field(min_length=28, max_length=28, fail_fast=True)]
Channel = Annotated[list[Square], Field(min_length=1, max_length=1, fail_fast=True)]  # 1x28x28, as torch holds it
Image = Flat | Square | Channel
Images = Annotated[list[Image], Field(min_length=1, max_length=MAX_IMAGES, fail_fast=True)]
PixelRow = Annotated[list[Pixel], Field(min_length=784, max_length=785, fail_fast=True)]  # 784 pixels, maybe a label
# a column: pixel0..pixel783, label, or pandas' name for an unnamed column (its position, 0..783)
ColumnName = Annotated[str, Field(pattern=r"^(pixel)?([0-9]|[1-9][0-9]|[1-6][0-9][0-9]|7[0-7][0-9]|78[0-3])$|^label$")]
RecordRow = Annotated[dict[ColumnName, Pixel], Field(min_length=784, max_length=785,  # other names are refused
                                                     json_schema_extra={"additionalProperties": False})]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageBatch(_Strict):
    """digitpipe's own batch."""

    images: Images


class ImageList(RootModel[Images]):
    """The list of images alone."""


class PredictBody(RootModel[ImageBatch | ImageList]):
    """POST /predict as JSON: {"images": [...]} or the list alone (parsed as the one its first byte names)."""


class DataframeSplit(_Strict):
    """pandas' `to_dict(orient="split")`, as MLflow's client writes a DataFrame."""

    columns: Annotated[list[ColumnName], Field(min_length=784, max_length=785)] | None = None
    data: Annotated[list[PixelRow], Field(min_length=1, max_length=MAX_IMAGES, fail_fast=True)]
    index: list[StrictInt | StrictStr] | None = None  # MLflow's client sends it; the order of `data` is the answer's


class InvocationsBody(_Strict):
    """MLflow's scoring-server JSON: exactly one of the four inputs (checked by digitpipe.serving.inputs)."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": [key]} for key in MLFLOW_KEYS]})

    # absent, never null: None is only the default of the three not given
    dataframe_split: DataframeSplit = None  # type: ignore[assignment]
    dataframe_records: Annotated[list[RecordRow], Field(min_length=1, max_length=MAX_IMAGES,
                                                        fail_fast=True)] = None  # type: ignore
    instances: Images = None  # type: ignore[assignment]
    inputs: Images = None  # type: ignore[assignment]
    params: dict[str, Any] | None = None  # MLflow's inference parameters: none apply to a digit model


def _whole(value: object) -> object:
    """7.0 is the integer 7 in JSON (and in its schema), while true and "7" stay refused."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


Digit = Annotated[int, Strict(), Field(ge=0, le=9), BeforeValidator(_whole)]


class FeedbackBody(_Strict):
    """A person's answer on a served digit."""

    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    label: Literal["right"] | Digit


Probabilities = Annotated[list[float], Field(min_length=10, max_length=10)]


class Prediction(_Strict):
    request_id: str  # what POST /feedback names
    digit: Annotated[int, Field(ge=0, le=9)]
    probabilities: Probabilities


class ModelNames(_Strict):
    model: str
    version: str | None  # None: a .onnx file, not a registered version
    precision: str


class PredictReply(ModelNames):
    predictions: list[Prediction]


class InvocationsReply(_Strict):
    predictions: list[Probabilities]


class FeedbackReply(_Strict):
    request_id: str
    served: Annotated[int, Field(ge=0, le=9)]
    label: Annotated[int, Field(ge=0, le=9)]
    right: bool
    waiting: int  # answers queued for the store now


class HealthReply(ModelNames):
    status: Literal["ready"]
    feedback_token: bool  # whether POST /feedback needs Authorization: Bearer $DIGITPIPE_FEEDBACK_TOKEN


class ErrorReply(_Strict):
    error: str  # one line
