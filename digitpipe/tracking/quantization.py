"""The int8 variant of a registered version: its file on the version's run and the decision as version tags
(which Registry.resolve reads to prefer it)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from digitpipe.export import Quantization
    from digitpipe.records.models import ModelIdentity

INT8_ARTIFACT = "model_int8/model.int8.onnx"


class QuantizationRecords:
    """The registry's int8 records, written for a loaded model's identity."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def record(self, identity: ModelIdentity, result: Quantization, checked_on: str) -> None:
        """Log the int8 file (if accepted) on the version's run and the decision (and the split it was checked on)
        as version tags."""
        if result.path is not None:
            with tempfile.TemporaryDirectory() as tmp:  # a fixed artifact name, whatever the user called the file
                named = Path(shutil.copyfile(result.path, Path(tmp) / Path(INT8_ARTIFACT).name))
                self.client.log_artifact(identity.run_id, str(named), str(Path(INT8_ARTIFACT).parent))
        checksum = hashlib.sha256(result.path.read_bytes()).hexdigest() if result.path else ""
        for key, value in {"int8_status": "accepted" if result.accepted else "refused", "int8_sha256": checksum,
                           "int8_accuracy": result.int8_accuracy, "fp32_accuracy": result.fp32_accuracy,
                           "int8_reason": f"{result.reason()}, {checked_on}"}.items():
            self.client.set_model_version_tag(identity.registered_model, identity.version, key, str(value))
