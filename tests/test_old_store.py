"""A store made before the library was restructured (commit b55328e: tests/fixtures/old-store.tar.gz, rebuilt by
tests/fixtures/make_old_store.py) is still read, judged against and rolled back to by the CLI of this checkout, with
what a user sees unchanged: its versions as `digitpipe models` listed them, its champion scoring a file, a new run
judged against its champion, its versions restored as champion, the evidence card of one of them.

The store in the fixture: v1 mlp (previous_champion, promoted: first champion), v2 logreg (champion, promoted over
v1), v3 mlp (not_candidate), v4 mlp (rejected against v2); registered model `digits`, experiment `digitpipe`. It was
built in a fixed folder (expected.json's `root`); each test unpacks it into its own and rewrites that prefix in every
text column of mlflow.db (runs', experiments' and logged models' artifact locations, the data path of the runs'
params, the ONNX paths of the versions' tags...), in mlflow.yaml and in expected.json. The data it was trained on is
tests/fixtures/mnist-1000, put where the runs name it (data/mnist-1000 of the store's folder). Nothing of the
runs' output folders comes with it: every model file is downloaded from the relocated artifacts."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import tarfile
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.helpers import digitpipe, environ, error_line, write_kaggle_csv

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/old-store.tar.gz"
SAMPLE = ROOT / "tests/fixtures/mnist-1000"
NAME = "digits"  # the registered model the old code registered into (the shipped mlflow.yaml's)
ROW = re.compile(r"│\s*(\d+) │ (\S+)\s*│\s*(\S+) │\s*(\S+) │\s*(\S+) │ ([a-z_]*)\s*│ ([a-z_]+)\s*│")


class OldStore(NamedTuple):
    folder: Path
    config: Path  # the mlflow.yaml it was built with, relocated
    db: Path
    expected: dict  # what the old code printed and recorded (expected.json)

    def cli(self, *args, timeout: float = 300):
        """`digitpipe ARGS --config CONFIG` of this checkout, in the store's folder, with no tracking URI of the
        environment's."""
        return digitpipe(*args, "--config", self.config, cwd=self.folder, timeout=timeout,
                         env=environ(MLFLOW_TRACKING_URI=None))

    def tags(self, version: int | str) -> dict[str, str]:
        with sqlite3.connect(self.db) as db:
            return dict(db.execute("SELECT key, value FROM model_version_tags WHERE name = ? AND version = ?",
                                   (NAME, int(version))))

    def aliases(self) -> dict[str, int]:
        with sqlite3.connect(self.db) as db:
            return dict(db.execute("SELECT alias, version FROM registered_model_aliases WHERE name = ?", (NAME,)))

    def run(self, *args: str):
        """A `digitpipe run` of this checkout on the data the old versions trained on (--force: a model the old code
        registered with the same settings is trained again, whatever the training key says)."""
        return self.cli("run", "--data", self.folder / "data/mnist-1000", *args, "--force", "--quiet", "--out",
                        self.folder / "new-outputs")


def text_columns(connection: sqlite3.Connection):
    """(table, column) of every column of every table of a sqlite database."""
    for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for column in [row[1] for row in connection.execute(f'PRAGMA table_info("{table}")')]:
            yield table, column


def relocate(db: Path, old: str, new: str) -> int:
    """`old` replaced by `new` in every text value of every table of the sqlite file `db`; the count of values
    changed."""
    changed = 0
    with sqlite3.connect(db) as connection:
        for table, column in list(text_columns(connection)):
            changed += connection.execute(
                f'UPDATE "{table}" SET "{column}" = replace("{column}", ?, ?) '
                f'WHERE typeof("{column}") = \'text\' AND instr("{column}", ?) > 0', (old, new, old)).rowcount
    return changed


def mentions(db: Path, text: str) -> list[str]:
    """The columns (table.column) of the sqlite file `db` with a value that contains `text`."""
    with sqlite3.connect(db) as connection:
        return [f"{table}.{column}" for table, column in list(text_columns(connection)) if connection.execute(
            f'SELECT 1 FROM "{table}" WHERE instr(CAST("{column}" AS TEXT), ?) > 0 LIMIT 1', (text,)).fetchone()]


@pytest.fixture
def old_store(tmp_path) -> OldStore:
    """The fixture's store unpacked into tmp_path/store and relocated there, its data beside it."""
    folder = tmp_path / "store"
    with tarfile.open(FIXTURE) as tar:
        tar.extractall(folder, filter="data")
    old = json.loads((folder / "expected.json").read_text())["root"]
    assert relocate(folder / "mlflow.db", old, str(folder)) > 0
    for name in ("mlflow.yaml", "expected.json"):
        (folder / name).write_text((folder / name).read_text().replace(old, str(folder)))
    shutil.copytree(SAMPLE, folder / "data/mnist-1000")
    assert mentions(folder / "mlflow.db", old) == []  # nothing left that names the folder it was built in
    return OldStore(folder, folder / "mlflow.yaml", folder / "mlflow.db",
                    json.loads((folder / "expected.json").read_text()))


def rows(stdout: str) -> dict[int, tuple[str, ...]]:
    """`digitpipe models`' first line of each version: version -> (model, accuracy, robust, live, aliases, verdict)."""
    return {int(m[1]): m.groups()[1:] for line in stdout.splitlines() if (m := ROW.match(line))}


def test_models_lists_the_old_versions_as_the_old_code_did(old_store):
    done = old_store.cli("models")
    assert done.code == 0, done.err
    assert rows(done.out) == {
        4: ("mlp", "54.40%", "47.93%", "-", "", "rejected"),
        3: ("mlp", "67.20%", "60.20%", "-", "", "not_candidate"),
        2: ("logreg", "87.20%", "77.67%", "-", "champion", "promoted"),
        1: ("mlp", "61.20%", "53.00%", "-", "previous_champion", "promoted"),
    }, done.out
    assert done.out == old_store.expected["models_stdout"]  # the whole table, reasons and dates, as before


def test_the_old_champion_scores_a_file(old_store, digits, tmp_path):
    expected = old_store.expected
    assert not Path(old_store.tags(2)["onnx_path"]).exists()  # the file it was registered from: it is downloaded
    scored = write_kaggle_csv(tmp_path / "scored.csv", digits.images[:expected["scored_rows"]])  # as it scored
    output = tmp_path / "predictions.csv"
    done = old_store.cli("score", "--model", f"models:/{NAME}@champion", "--input", scored, "--output", output)
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert re.fullmatch(rf"scored 20 rows, rejected 0 \(0\.00%\) in [\d.]+ s \([\d,]+ rows/s\) -> {re.escape(str(output))}",
                        lines[0]), done.out
    assert lines[1:] == ["drift check: too_few_rows against the training data of v2"], done.out
    with output.open() as f:
        predicted = list(csv.DictReader(f))
    assert [row["ImageId"] for row in predicted] == [str(i) for i in range(1, 21)]
    assert [row["Label"] for row in predicted] == expected["scored_labels"]  # what v2 answered under the old code


@pytest.mark.usefixtures("prefect_api")
def test_a_new_run_is_judged_against_the_old_champion(old_store):
    done = old_store.run("--models", "mlp", "--epochs", "1", "--set", "mlp.hidden=16")
    assert done.code == 0, done.err
    lines = done.err.splitlines()
    assert lines[0].startswith("validated 1,000 images from ") and "9 of 9 expectations passed" in lines[0], done.err
    assert lines[1] == "split (book): train 675, val 75, test 250", done.err
    assert re.fullmatch(r"trained mlp: [\d.]+% held-out accuracy \([\d.]+% perturbed\) in [\d.]+ s, registered v5",
                        lines[2]), done.err
    verdict = re.fullmatch(
        r"v5 rejected: does not beat the champion by the margin 0\.0010: (0\.\d{4}) vs champion v2 0\.8720 on the "
        r"same 250 held-out images champion v2 never trained on \(0 excluded\) \((\d+) right only by the challenger, "
        r"(\d+) only by the champion\)", lines[3])
    assert verdict, done.err
    assert lines[4:] == [], done.err
    tags = old_store.tags(5)
    assert tags["verdict"] == "rejected" and tags["champion_version"] == "2"
    assert float(tags["champion_accuracy"]) == 0.872  # the old v2 scored by this checkout, as the old code recorded
    assert (tags["only_challenger_right"], tags["only_champion_right"]) == verdict.groups()[1:]
    assert float(tags["mcnemar_p_value"]) < 0.05 and tags["comparison_excluded"] == "0"
    gap = (int(tags["only_champion_right"]) - int(tags["only_challenger_right"])) / 250
    assert round(0.872 - float(verdict[1]), 4) == round(gap, 4)
    assert old_store.aliases() == {"champion": 2, "previous_champion": 1}


@pytest.mark.usefixtures("prefect_api")
def test_the_old_versions_are_rolled_back_to(old_store):
    """Rollback to the old v1; a new champion beats it; rollback restores v1 again."""
    done = old_store.cli("promote", "--rollback")
    assert (done.code, done.out) == (0, f"{NAME}: champion -> v1, previous_champion -> v2\n"), done.err
    assert old_store.aliases() == {"champion": 1, "previous_champion": 2}
    assert old_store.tags(1)["rollback"].startswith("restored as champion from v2 at ")

    done = old_store.run("--models", "logreg")  # v2's model again: it beats v1 as v2 did under the old code
    assert done.code == 0, done.err
    assert done.err.splitlines()[-1].startswith(
        "v5 promoted: beats the champion: 0.8720 vs champion v1 0.6120 on the same 250 held-out images champion v1 "
        "never trained on (0 excluded) (72 right only by the challenger, 7 only by the champion), McNemar "
        "p=1.06e-14"), done.err
    tags = old_store.tags(5)
    assert (tags["verdict"], tags["champion_version"], tags["only_challenger_right"], tags["only_champion_right"],
            tags["mcnemar_p_value"]) == ("promoted", "1", "72", "7", "1.06e-14")
    assert old_store.aliases() == {"champion": 5, "previous_champion": 1}

    done = old_store.cli("promote", "--rollback")
    assert (done.code, done.out) == (0, f"{NAME}: champion -> v1, previous_champion -> v5\n"), done.err
    assert old_store.aliases() == {"champion": 1, "previous_champion": 5}
    listed = old_store.cli("models")
    assert listed.code == 0, listed.err
    assert {v: row[4] for v, row in rows(listed.out).items()} == {
        5: "previous_champion", 4: "", 3: "", 2: "", 1: "champion"}, listed.out


def test_an_old_versions_card_gets_a_revision_and_keeps_the_decisions(old_store, tmp_path):
    folder = tmp_path / "card"
    done = old_store.cli("card", "--version", "1", "--output", folder)
    assert done.code == 0, done.err
    assert done.out == (f"{NAME} v1 (mlp): held-out accuracy 61.20% on 250 images of its training run's split (book, "
                        f"seed 42); revision 2 of its card on its run (card-revisions/2/card.html; the decision's "
                        f"card/card.html kept) and in {folder}\n")
    assert (folder / "card.html").is_file() and (folder / "card.json").is_file()
    assert old_store.tags(1)["evidence_card"] == "card-revisions/2/card.html"


def test_a_version_the_store_does_not_hold_is_refused_plainly(old_store):
    done = old_store.cli("card", "--version", "9")
    assert done.code != 0 and "Traceback" not in done.err, done.err
    assert error_line(done.err).startswith("digitpipe: error: "), done.err
