"""The drift monitor's reference of a registered model: a file on the run that registered it, where scoring finds
it again."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from digitpipe.records.models import ModelIdentity

MONITOR_ARTIFACT = "report/monitor_reference.json"  # monitor.REFERENCE_FILE in the model's report folder


class MonitorReferences:
    """The registry's drift references, found by a loaded model's identity (its run)."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    def download(self, identity: ModelIdentity, dest: Path) -> Path | None:
        """The drift monitor's reference of a loaded model (its run's report/monitor_reference.json), or None for a
        file, or a version registered before references were recorded."""
        if identity.run_id is None:
            return None
        try:
            return Path(self.client.download_artifacts(identity.run_id, MONITOR_ARTIFACT, str(dest)))
        except (MlflowException, OSError):
            return None

    def record(self, identity: ModelIdentity, path: Path) -> None:
        """Log a drift reference built after registration where registration would have put it (under the name
        `download` looks for, whatever the file is called)."""
        with tempfile.TemporaryDirectory() as tmp:
            named = shutil.copyfile(path, Path(tmp) / Path(MONITOR_ARTIFACT).name)
            self.client.log_artifact(identity.run_id, str(named), str(Path(MONITOR_ARTIFACT).parent))
