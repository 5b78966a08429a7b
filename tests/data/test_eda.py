"""The book's exploration on real digits: one complete report per dataset, however many runs write it."""


def test_runs_exploring_the_same_data_at_once_leave_one_complete_report(digits, fixture_dir, tmp_path):
    from tests.helpers import python

    code = (f"from pathlib import Path; from digitpipe.data import load_dataset; from digitpipe.eda import "
            f"explore; explore(load_dataset(Path({str(fixture_dir)!r})), Path({str(tmp_path)!r}))")
    runs = [python(code, wait=False) for _ in range(2)]  # two workers' runs at once, one machine (it prints nothing)
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    assert [p.name for p in tmp_path.iterdir()] == [digits.digest[:16]]  # no half-made copy left beside it
    folder = tmp_path / digits.digest[:16]
    assert (folder / "report.html").is_file() and (folder / "summary.json").is_file()
