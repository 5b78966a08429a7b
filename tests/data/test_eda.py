"""The book's exploration on real digits: one complete report per dataset, however many runs write it."""

# explore(DATA, CACHE) as a worker runs it, held at a barrier after writing its own copy of the report and before
# renaming it into place: it leaves the file ME in the folder BARRIER, then waits until RUNS files are there. Runs
# held this way have all passed the check for a finished report, and all rename their copies at once. Prints nothing.
HELD_RUN = """
import sys, time
from pathlib import Path
from digitpipe import eda
from digitpipe.data import load_dataset

data, cache, barrier, me, runs = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
write_report = eda.write_report

def held(data, fresh):
    page = write_report(data, fresh)
    (barrier / me).touch()
    deadline = time.monotonic() + 120  # a guard against a hung test, where another run died before the barrier
    while len(list(barrier.iterdir())) < runs and time.monotonic() < deadline:
        time.sleep(0.01)
    return page

eda.write_report = held
eda.explore(load_dataset(data), cache)
"""


def test_runs_exploring_the_same_data_at_once_leave_one_complete_report(digits, fixture_dir, tmp_path):
    from tests.helpers import python

    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    runs = [python(HELD_RUN, fixture_dir, cache, barrier, i, 2, wait=False) for i in range(2)]  # two workers at once
    done = [(run.wait(timeout=180), run.stderr.read()) for run in runs]
    assert [code for code, _ in done] == [0, 0], done
    assert sorted(p.name for p in barrier.iterdir()) == ["0", "1"]  # both made a copy: their renames collided
    assert [p.name for p in cache.iterdir()] == [digits.digest[:16]]  # no half-made copy left beside it
    folder = cache / digits.digest[:16]
    assert (folder / "report.html").is_file() and (folder / "summary.json").is_file()
