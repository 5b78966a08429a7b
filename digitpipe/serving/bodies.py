"""The service's JSON bodies as pydantic models: they parse every request body (strictly: a pixel is a JSON number
from 0 to 255, never `true` or "12") and describe every reply, and the OpenAPI document (digitpipe.serving.api) is
generated from them, so the document cannot drift from what the handlers accept."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, Strict

MAX_IMAGES = 1024  # per request

Pixel = Annotated[float, Strict(), Field(ge=0, le=255, allow_inf_nan=False)]  # strict: no booleans, no strings
Flat = Annotated[list[Pixel], Field(min_length=784, max_length=784)]
Row = Annotated[list[Pixel], Field(min_length=28, max_length=28)]
Square = Annotated[list[Row], Field(min_length=28, max_length=28)]
Channel = Annotated[list[Square], Field(min_length=1, max_length=1)]  # 1x28x28, as a torch batch holds it
Image = Flat | Square | Channel
Images = Annotated[list[Image], Field(min_length=1, max_length=MAX_IMAGES)]
PixelRow = Annotated[list[Pixel], Field(min_length=1, max_length=785)]  # 784 pixels and an optional label
RecordRow = Annotated[dict[str, Pixel], Field(min_length=1, max_length=785)]


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

    columns: Annotated[list[str], Field(max_length=785)] | None = None
    data: Annotated[list[PixelRow], Field(min_length=1, max_length=MAX_IMAGES)]
    index: list[int | str] | None = None  # MLflow's client sends it; the order of `data` is the answer's


class InvocationsBody(_Strict):
    """MLflow's scoring-server JSON: exactly one of the four inputs (checked by digitpipe.serving.inputs)."""

    dataframe_split: DataframeSplit | None = None
    dataframe_records: Annotated[list[RecordRow], Field(min_length=1, max_length=MAX_IMAGES)] | None = None
    instances: Images | None = None
    inputs: Images | None = None
    params: dict[str, Any] | None = None  # MLflow's inference parameters: none apply to a digit model


class FeedbackBody(_Strict):
    """A person's answer on a served digit."""

    request_id: Annotated[str, Field(min_length=1, max_length=64)]
    label: Literal["right"] | Annotated[int, Strict(), Field(ge=0, le=9)]


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
