"""The book's exploration on real digits: numbers right, pictures and HTML written."""

import json

from tests.helpers import assert_one_line_error


def test_eda_cli_writes_report_with_the_books_pictures(fixture_dir, tmp_path, digitpipe_cli):
    code, out, _ = digitpipe_cli("eda", "--data", fixture_dir, "--out", tmp_path)
    assert code == 0
    assert "report.html" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 1000 and summary["pixel_min"] == 0 and summary["pixel_max"] == 255
    assert sum(summary["label_counts"].values()) == 1000
    assert abs(sum(summary["label_proportions"].values()) - 1) < 1e-3
    page = (tmp_path / "report.html").read_text()
    for picture in ("sample_digits.png", "centre_block_histograms.png", "mean_digits.png"):
        assert (tmp_path / picture).stat().st_size > 5000 and picture in page


def test_validate_cli_exit_codes(fixture_dir, tmp_path, digitpipe_cli):
    passed = digitpipe_cli("validate", "--data", fixture_dir)
    assert passed.code == 0 and "PASSED" in passed.out
    failed = digitpipe_cli("validate", "--data", fixture_dir, "--min-rows", "5000")
    assert failed.code == 1 and "FAILED" in failed.out
    (tmp_path / "x.csv").write_text("label,pixel0\n")
    unreadable = digitpipe_cli("validate", "--data", tmp_path / "x.csv")
    assert_one_line_error(unreadable.code, unreadable.err, 2, f"{tmp_path / 'x.csv'}: header must be ")


def test_runs_exploring_the_same_data_at_once_leave_one_complete_report(digits, fixture_dir, tmp_path):
    import subprocess
    import sys

    code = (f"from pathlib import Path; from digitpipe.data import load_dataset; from digitpipe.pipeline import "
            f"explore; explore(load_dataset(Path({str(fixture_dir)!r})), Path({str(tmp_path)!r}))")
    runs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]  # two workers' runs, one machine
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    assert [p.name for p in tmp_path.iterdir()] == [digits.digest[:16]]  # no half-made copy left beside it
    folder = tmp_path / digits.digest[:16]
    assert (folder / "report.html").is_file() and (folder / "summary.json").is_file()
