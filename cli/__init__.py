"""The `digitpipe` command line, above the flows: each command builds its configuration, then calls a flow or a
library function (CLI -> flows -> tasks -> digitpipe; .importlinter holds the contracts).

Each command imports only what its work needs (heavy libraries are imported inside the commands), so `--help`
answers at once and `score` with an ONNX file never loads torch, MLflow or Prefect (tests/code/test_imports.py)."""

# each module registers its commands on the app
from cli import training, tune_command, registry, data, score_commands, serving, notify  # noqa: F401, I001
from cli.app import app, main, run_cli

__all__ = ["app", "main", "run_cli"]
