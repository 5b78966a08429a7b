"""`digitpipe validate` and `digitpipe eda` as a user runs them: what they print, write and exit with, for every
input form they document (IDX folder, CSV, PNG folder) and for folders that hold no digits."""

import json

import pytest
from PIL import Image

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




def _png_folder(folder, digits, indices):
    for i in indices:
        (folder / str(digits.labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits.images[i]).save(folder / str(digits.labels[i]) / f"{i:04d}.png")
    return folder


def test_validate_reads_a_png_folder_as_run_does(digits, tmp_path, digitpipe_cli):
    folder = _png_folder(tmp_path / "png", digits, range(200))
    result = digitpipe_cli("validate", "--data", folder)
    assert result.code == 0, result.out + result.err
    assert f"{folder}: 200 images" in result.out and "PASSED" in result.out


def test_validate_fails_a_png_folder_of_one_class(digits, tmp_path, digitpipe_cli):
    threes = [i for i in range(len(digits)) if digits.labels[i] == 3][:5]
    result = digitpipe_cli("validate", "--data", _png_folder(tmp_path / "png", digits, threes))
    assert result.code == 1
    assert "FAIL expect_column_unique_value_count_to_be_between" in result.out and "(observed 1)" in result.out


@pytest.mark.parametrize("content", [{}, {"notes.txt": "not digits"}], ids=["empty", "text-only"])
def test_validate_refuses_a_folder_without_digits(tmp_path, digitpipe_cli, content):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, text in content.items():
        (folder / name).write_text(text)
    result = digitpipe_cli("validate", "--data", folder)
    assert_one_line_error(result.code, result.err, 2,
                          f"{folder}: no train- or t10k-images-idx3-ubyte[.gz] file in this folder")
    assert result.out == ""
