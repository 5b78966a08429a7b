"""The drift monitor's reference of a registered model: a file on the run that registered it, where scoring finds
it again."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlflow.exceptions import MlflowException

if TYPE_CHECKING:
    from mlflow import MlflowClient

MONITOR_ARTIFACT = "report/monitor_reference.json"  # monitor.REFERENCE_FILE in the model's report folder


class MonitorReferences:
    """Registry's monitor references (a mixin), found by a resolved model's identity."""

    client: MlflowClient

    def monitor_reference(self, identity: dict, dest: Path) -> Path | None:
        """The drift monitor's reference of a resolved model (its run's report/monitor_reference.json), or None for
        a version registered before references were recorded."""
        try:
            return Path(self.client.download_artifacts(identity["run_id"], MONITOR_ARTIFACT, str(dest)))
        except (MlflowException, OSError):
            return None

    def record_monitor_reference(self, identity: dict, path: Path) -> None:
        """Log a drift reference built after registration where registration would have put it."""
        self.client.log_artifact(identity["run_id"], str(path), str(Path(MONITOR_ARTIFACT).parent))
