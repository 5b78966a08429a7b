"""End to end: `digitpipe run` as a user sees it in a terminal: one line per stage (a logreg run loads no torch, in
a fresh interpreter with its own temporary Prefect API), and Prefect's own log lines back with --verbose."""

from __future__ import annotations

import json

import pytest

from tests.helpers import digitpipe, environ, import_probe, write_config

pytestmark = pytest.mark.slow


def test_a_logreg_run_loads_no_torch_and_prints_one_line_per_stage(tmp_path, fixture_dir):
    write_config(tmp_path / "mlflow.yaml", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    args = ["run", "--data", str(fixture_dir), "--models", "logreg", "--quiet", "--out", str(tmp_path / "out")]
    alone = environ(PREFECT_API_URL=None)  # a user's run: its own temporary API
    done = import_probe(args, cwd=tmp_path, env=alone, timeout=300)
    assert "torch" not in json.loads(done.out.splitlines()[-1].removeprefix("LOADED "))
    lines = done.err.splitlines()
    assert [line.split()[0] for line in lines] == ["validated", "split", "trained", "v1"], done.err
    assert lines[2].startswith("trained logreg: ") and lines[3] == "v1 promoted: first champion"


def test_verbose_restores_prefects_own_log_lines(tmp_path, fixture_dir, prefect_api):
    """On the session's Prefect API (PREFECT_API_URL, inherited): the temporary one is the test above's."""
    write_config(tmp_path / "mlflow.yaml", tracking_uri=f"sqlite:///{tmp_path}/m.db")
    done = digitpipe("run", "--data", fixture_dir, "--models", "logreg", "--quiet", "--verbose", "--out",
                     tmp_path / "out", cwd=tmp_path, timeout=300)
    assert done.code == 0, done.err
    assert "Task run 'model-logreg' - Finished in state Completed()" in done.err
    assert "trained logreg: " in done.err
