"""Properties of the command line's flags (issue 35): generated values for every numeric and path flag of `run`,
`score`, `tune`, `validate` and `export` (huge and negative integers, nan, inf, text where a number goes; missing
paths, a folder where a file goes, a file where a folder goes, a file under a file, the command's own input as its
output) are checked in-process up to the point where work would start: the command exits 2 with one line (ours, or
click's usage message) or is accepted, never exits 1 (nothing ran whose verdict could be no), never prints a
traceback, and says no flag's error after a download has started. Where the work would start (the flow, a download,
a Dask cluster, scoring, validation, quantization), a stub records it and stops the command."""

from __future__ import annotations

import contextlib
import io
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import ROOT, write_kaggle_csv

BOUNDED = settings(max_examples=50, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FIXTURE = ROOT / "tests/fixtures/mnist-1000"


class WorkStarted(Exception):
    """Raised by a stub where the command's work would start: the flags were accepted."""


@dataclass
class Outcome:
    code: int | None  # None: the work would have started
    err: str
    started: list[str] = field(default_factory=list)  # the work that began (a download) before the end


# --- generated values --------------------------------------------------------------------------------------------

ODD_NUMBERS = ["", "-0", "nan", "-nan", "inf", "-inf", "1e309", "1.5", "abc", " 3", "0x10", "1_000", "+5", "\u0663",
               "-", "1e-320", "4294967296", "4294967295", "-4294967296", "99999999999999999999999"]
INTS = st.one_of(st.integers(-(2**70), 2**70).map(str), st.integers(-3, 3).map(str), st.sampled_from(ODD_NUMBERS))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.floats(-0.5, 1.5).map(repr),
                   st.sampled_from(ODD_NUMBERS))
# How a path flag is given: a good value, or one of the ways a path goes wrong
PATH_KINDS = ["good", "good", "missing", "folder", "file", "under a file", "the input", "empty folder", "odd name"]


@dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # int, float, a path's role (data, model, config, params, reference, out-file, out-folder) or text
    choices: tuple[str, ...] = ()  # for text: the values to draw from (good ones and bad)


COMMON = [Flag("--config", "config")]
SPLIT = [Flag("--seed", "int"), Flag("--split-seed", "int"), Flag("--epochs", "int"), Flag("--params", "params"),
         Flag("--data", "data"), Flag("--protocol", "text", ("book", "standard", "std", ""))]
COMMANDS: dict[str, tuple[list[Flag], list[Flag]]] = {  # command: (required flags, optional ones)
    "run": ([], [*SPLIT, *COMMON, Flag("--stop-at-accuracy", "float"), Flag("--patience", "int"),
                 Flag("--val-fraction", "float"), Flag("--summary", "out-file"), Flag("--out", "out-folder"),
                 Flag("--models", "text", ("logreg", "mlp,logreg", "lenett", ",")),
                 Flag("--task-runner", "text", ("local", "dask", "threads"))]),
    "tune": ([Flag("--model", "text", ("mlp", "logreg", "fastcnn", "nosuch")), Flag("--trials", "int")],
             [*SPLIT, *COMMON, Flag("--timeout", "float"), Flag("--seeds", "int"), Flag("--threads", "int"),
              Flag("--output", "out-file"), Flag("--objective", "text", ("robust", "accuracy-time", "speed"))]),
    "score": ([Flag("--model", "model"), Flag("--input", "data"), Flag("--output", "out-file")],
              [*COMMON, Flag("--batch-size", "int"), Flag("--max-reject-fraction", "float"),
               Flag("--reference", "reference")]),
    "validate": ([Flag("--data", "data")], [Flag("--min-rows", "int")]),
    "export": ([Flag("--model", "model"), Flag("--output", "out-file")],
               [*COMMON, Flag("--data", "data"), Flag("--seed", "int"), Flag("--max-drop", "float"),
                Flag("--protocol", "text", ("book", "standard", "std")), Flag("--quantize", "switch")]),
}
MAIN_INPUT = {"run": "--data", "tune": "--data", "score": "--input", "validate": "--data", "export": "--model"}


@st.composite
def command_lines(draw, command: str) -> tuple[str, dict[str, object]]:
    """`command` with its required flags and some optional ones, each an int or float (as text), a path kind or a
    choice; returns the command and {flag: value or path kind}."""
    required, optional = COMMANDS[command]
    chosen = required + [f for f in optional if draw(st.integers(0, 3)) == 0]
    values: dict[str, object] = {}
    for flag in chosen:
        if flag.kind == "int":
            values[flag.name] = draw(INTS)
        elif flag.kind == "float":
            values[flag.name] = draw(FLOATS)
        elif flag.kind == "text":
            values[flag.name] = draw(st.sampled_from(flag.choices))
        elif flag.kind == "switch":
            values[flag.name] = True
        else:
            values[flag.name] = (flag.kind, draw(st.sampled_from(PATH_KINDS)))
    main = MAIN_INPUT[command]
    if any(kind == "the input" for _, kind in _paths(values)):  # an output names the input: give it a good one
        values[main] = ("model" if main == "--model" else "data", "good")
    return command, values


def _paths(values: dict[str, object]) -> list[tuple[str, str]]:
    return [value for value in values.values() if isinstance(value, tuple)]


# The kinds of path each role must refuse (with exit 2): an input that is not there or not readable, an output that
# cannot be written where it is named
UNUSABLE = {"folder", "empty folder", "missing", "under a file", "odd name"}
MUST_REFUSE = {"data": UNUSABLE | {"file"}, "model": UNUSABLE | {"file"}, "config": UNUSABLE | {"file"},
               "params": UNUSABLE | {"file"}, "reference": set(PATH_KINDS),
               "out-file": {"folder", "empty folder", "under a file"}, "out-folder": {"file", "under a file"}}


def must_refuse(command: str, values: dict[str, object]) -> bool:
    """Whether a flag of `values` is one the command must refuse: a path of a kind its role cannot use (export reads
    --data only to --quantize), or nan for a number (no threshold or fraction is nan)."""
    ignored = {"--data"} if command == "export" and "--quantize" not in values else set()
    return any(value[1] in MUST_REFUSE[value[0]] for name, value in values.items()
               if isinstance(value, tuple) and name not in ignored) or any(
        isinstance(value, str) and value.lower() in ("nan", "-nan") for value in values.values())


# --- paths made for each example ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Good files for every path role, shared by the examples (read-only: each example copies what it may harm)."""

    csv: Path
    model: Path
    config: Path
    params: Path


def _path(role: str, kind: str, inputs: Inputs, tmp: Path, main_input: Path | None) -> Path:
    """A path for a flag of `role` (data, model, config, params, reference, out-file, out-folder), made `kind`."""
    if kind == "missing":
        return tmp / "missing" / "x.csv"
    if kind == "folder":
        folder = tmp / "a folder"
        (folder / "inside").mkdir(parents=True, exist_ok=True)
        (folder / "inside" / "notes.txt").write_text("a user's notes")
        return folder
    if kind == "empty folder":
        (tmp / "empty").mkdir(exist_ok=True)
        return tmp / "empty"
    if kind == "file":
        (tmp / "notes.txt").write_text("a user's notes\n")
        return tmp / "notes.txt"
    if kind == "under a file":
        (tmp / "notes.txt").write_text("a user's notes\n")
        return tmp / "notes.txt" / "x.out"
    if kind == "the input" and role.startswith("out") and main_input is not None:
        return main_input
    if kind == "odd name":
        return tmp / "ü n-ic\u00f6de [1]" / ("out" if role.startswith("out") else "x.csv")
    good = {"data": inputs.csv, "model": inputs.model, "config": inputs.config, "params": inputs.params,
            "reference": tmp / "no-reference.json", "out-file": tmp / "out" / "p.csv", "out-folder": tmp / "outputs"}
    return Path(shutil.copy(good[role], tmp / f"{role}{good[role].suffix}")) if role in (
        "data", "model") else good[role]


def _argv(command: str, values: dict[str, object], inputs: Inputs, tmp: Path) -> tuple[list[str], bool]:
    """The command line, its path flags made real under `tmp` (the main input first: an output may name it), and
    whether an output names the command's input file."""
    main = MAIN_INPUT[command]
    order = sorted(values, key=lambda name: name != main)
    argv, main_input, onto_input = [*command.split()], None, False
    for name in order:
        value = values[name]
        if value is True:
            argv.append(name)
            continue
        if isinstance(value, tuple):
            role, kind = value
            path = _path(role, kind, inputs, tmp, main_input)
            main_input = path if name == main and path.is_file() else main_input
            onto_input |= role.startswith("out") and path == main_input
            value = str(path)
        argv.append(f"{name}={value}")
    return argv, onto_input


# --- running a command up to its work ----------------------------------------------------------------------------


@contextlib.contextmanager
def _no_api() -> Iterator[None]:
    yield None


@pytest.fixture
def stubbed(monkeypatch, tmp_path) -> list[str]:
    """Stubs where each command's work starts; returns the list the download stub records into."""
    started: list[str] = []

    def work(what: str):
        def stub(*args, **kwargs):
            raise WorkStarted(what)
        return stub

    def fetch(dest, mirrors):
        started.append("download")
        return FIXTURE

    monkeypatch.chdir(tmp_path)  # no mlflow.yaml, no store: nothing may be made here
    for variable in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        monkeypatch.delenv(variable, raising=False)
    for quieted in ("PREFECT_LOGGING_LEVEL", "MLFLOW_LOGGING_LEVEL", "DASK_LOGGING__DISTRIBUTED"):
        monkeypatch.setenv(quieted, "")  # the CLI sets these for itself: unset again at the test's end
        monkeypatch.delenv(quieted)
    monkeypatch.setattr("flows.startup.prefect_api", _no_api)
    for module in ("cli.training", "cli.tune_command"):
        monkeypatch.setattr(f"{module}.fetch_mnist", fetch)
        monkeypatch.setattr(f"{module}.call_flow", work("the flow"))
    monkeypatch.setattr("flows.local_cluster", work("a Dask cluster"))
    monkeypatch.setattr("digitpipe.batch_scoring.score_file", work("scoring"))
    monkeypatch.setattr("digitpipe.validation.validate", work("validation"))
    monkeypatch.setattr("digitpipe.export.quantize_checked", work("quantization"))
    return started


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, logreg_onnx) -> Inputs:
    from digitpipe.data import load_dataset

    tmp = tmp_path_factory.mktemp("flag-inputs")
    digits = load_dataset(FIXTURE)
    rows = np.sort(np.concatenate([np.flatnonzero(digits.labels == d)[:20] for d in range(10)]))
    (tmp / "mlflow.yaml").write_text("experiment: props\n")
    (tmp / "best.yaml").write_text("params:\n  mlp:\n    lr: 0.01\n")
    return Inputs(write_kaggle_csv(tmp / "digits.csv", digits.subset(rows)), logreg_onnx, tmp / "mlflow.yaml",
                  tmp / "best.yaml")


def _run(argv: list[str], started: list[str]) -> Outcome:
    import cli

    started.clear()
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), \
            pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["digitpipe", *argv])
        try:
            code = cli.run_cli()
        except WorkStarted:
            code = None
    return Outcome(code, err.getvalue(), list(started))


def _accepted_or_one_line(outcome: Outcome, argv: list[str]) -> None:
    """Accepted (the work would start, or done: exit 0), or exit 2 with one line; no traceback, never exit 1."""
    said = f"{argv} -> exit {outcome.code}:\n{outcome.err}"
    assert "Traceback" not in outcome.err, said
    if outcome.code in (None, 0):
        return
    assert outcome.code == 2, said
    assert "download" not in outcome.started, f"a flag's error after the download started: {said}"
    lines = outcome.err.strip().splitlines()
    if lines and lines[0].startswith("Usage: digitpipe"):  # click's usage message: a value of the wrong type
        assert lines[-1].startswith("Error: "), said
    else:
        assert len(lines) == 1 and lines[0].startswith("digitpipe: error: "), said


def _check(command: str, values: dict[str, object], inputs: Inputs, started: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="digitpipe-flags-") as tmp:
        argv, onto_input = _argv(command, values, inputs, Path(tmp))
        outcome = _run(argv, started)
        _accepted_or_one_line(outcome, argv)
        if onto_input:
            assert outcome.code == 2, f"{argv}: an output that is the command's input was not refused"
        if must_refuse(command, values):
            assert outcome.code == 2, f"{argv}: a path that cannot be used was accepted ({outcome})"


# --- the properties, one command each ----------------------------------------------------------------------------


@BOUNDED
@example(("run", {"--data": ("data", "folder")}))  # no digits in it: was said only once the Prefect API had started
@example(("run", {"--data": ("data", "good"), "--summary": ("out-file", "the input")}))  # the summary replaced the data
@given(command_lines("run"))
def test_run_flags_are_accepted_or_one_line(stubbed, inputs, line):
    _check(*line, inputs, stubbed)


@BOUNDED
@example(("tune", {"--model": "mlp", "--trials": "1", "--output": ("out-file", "folder")}))  # after MNIST's download
@example(("tune", {"--model": "mlp", "--trials": "1", "--data": ("data", "good"),
                   "--output": ("out-file", "the input")}))
@example(("tune", {"--model": "mlp", "--trials": "1", "--threads": "99999999999"}))  # torch's overflow, mid-study
@given(command_lines("tune"))
def test_tune_flags_are_accepted_or_one_line(stubbed, inputs, line):
    _check(*line, inputs, stubbed)


@BOUNDED
@example(("score", {"--model": ("model", "good"), "--input": ("data", "folder"), "--output": ("out-file", "good")}))
@given(command_lines("score"))
def test_score_flags_are_accepted_or_one_line(stubbed, inputs, line):
    _check(*line, inputs, stubbed)


@BOUNDED
@given(command_lines("validate"))
def test_validate_flags_are_accepted_or_one_line(stubbed, inputs, line):
    _check(*line, inputs, stubbed)


@BOUNDED
@example(("export", {"--model": ("model", "good"), "--output": ("out-file", "good")}))  # no folder yet: a traceback
@example(("export", {"--model": ("model", "file"), "--output": ("out-file", "good")}))  # not ONNX: copied, exit 0
@example(("export", {"--model": ("model", "good"), "--output": ("out-file", "good"), "--quantize": True,
                     "--data": ("data", "good"), "--protocol": "book", "--seed": "-1"}))  # scikit-learn's traceback
@example(("export", {"--model": ("model", "good"), "--output": ("out-file", "good"), "--quantize": True,
                     "--data": ("data", "good"), "--protocol": "book", "--seed": "1", "--max-drop": "nan"}))
@given(command_lines("export"))
def test_export_flags_are_accepted_or_one_line(stubbed, inputs, line):
    _check(*line, inputs, stubbed)
