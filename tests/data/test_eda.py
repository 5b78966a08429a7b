"""The book's exploration on real digits: numbers right, pictures and HTML written."""

import json

from digitpipe import cli


def test_eda_cli_writes_report_with_the_books_pictures(fixture_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["digitpipe", "eda", "--data", str(fixture_dir), "--out", str(tmp_path)])
    assert cli.run_cli() == 0
    assert "report.html" in capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["images"] == 1000 and summary["pixel_min"] == 0 and summary["pixel_max"] == 255
    assert sum(summary["label_counts"].values()) == 1000
    assert abs(sum(summary["label_proportions"].values()) - 1) < 1e-3
    page = (tmp_path / "report.html").read_text()
    for picture in ("sample_digits.png", "centre_block_histograms.png", "mean_digits.png"):
        assert (tmp_path / picture).stat().st_size > 5000 and picture in page


def test_validate_cli_exit_codes(fixture_dir, tmp_path, monkeypatch, capsys):
    import pytest

    def run(path, *extra):
        monkeypatch.setattr("sys.argv", ["digitpipe", "validate", "--data", str(path), *extra])
        with pytest.raises(SystemExit) as exit_info:
            raise SystemExit(cli.run_cli())
        return exit_info.value.code

    assert run(fixture_dir) == 0 and "PASSED" in capsys.readouterr().out
    assert run(fixture_dir, "--min-rows", "5000") == 1 and "FAILED" in capsys.readouterr().out
    (tmp_path / "x.csv").write_text("label,pixel0\n")
    assert run(tmp_path / "x.csv") == 2
