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


def png_bomb(path):
    """A real grey PNG of 20,000 x 20,000 pixels (400 megapixels, ~390 KB on disk): a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    side, packer = 20_000, zlib.compressobj(9)
    row = b"\0" * (side + 1)  # a filter byte, then the row's pixels
    pixels = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def test_validate_refuses_a_decompression_bomb_naming_the_file(digits, tmp_path, digitpipe_cli):
    folder = _png_folder(tmp_path / "png", digits, range(20))
    bomb = png_bomb(folder / "3" / "bomb.png")
    result = digitpipe_cli("validate", "--data", folder)
    assert_one_line_error(result.code, result.err, 2, f"{bomb}: refused, not decoded: a decompression bomb")


@pytest.mark.slow
def test_run_and_score_give_one_line_for_bad_input(digits, tmp_path, prefect_api):
    """As a user sees it in a terminal: a malformed CSV, an empty folder and a PNG folder holding a decompression
    bomb each end `run` (and the bomb `score`) with exactly one line on stderr, exit 2, and no output file."""
    from digitpipe.baseline import fit_logreg
    from digitpipe.export import export_onnx
    from digitpipe.records.specs import SPECS
    from tests.helpers import digitpipe, environ

    (tmp_path / "malformed.csv").write_text("label,pixel0\n1,2\n")
    (tmp_path / "empty").mkdir()
    bomb = png_bomb(_png_folder(tmp_path / "png", digits, range(20)) / "3" / "bomb.png")
    env = environ(PREFECT_API_URL=prefect_api, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db")
    expected = {tmp_path / "malformed.csv": "header must be ", tmp_path / "empty": "no train- or t10k-images-idx3",
                tmp_path / "png": "refused, not decoded: a decompression bomb"}
    for data, message in expected.items():
        result = digitpipe("run", "--data", data, "--models", "logreg", "--quiet", "--out", tmp_path / "out", env=env)
        shown = bomb if data.name == "png" else data
        assert (result.code, result.err.splitlines()) == (2, [result.err.strip()]), result.err
        assert result.err.startswith(f"digitpipe: error: {shown}: {message}"), result.err
    model = export_onnx(fit_logreg(SPECS["logreg"], digits), tmp_path / "logreg.onnx")
    scored = digitpipe("score", "--model", model, "--input", tmp_path / "png", "--output", tmp_path / "o.csv", env=env)
    assert (scored.code, scored.err) == (2, f"digitpipe: error: {bomb}: refused, not decoded: a decompression bomb "
                                            "(Image size (400000000 pixels) exceeds limit of 178956970 pixels, could be "
                                            "decompression bomb DOS attack.)\n")
    assert not (tmp_path / "o.csv").exists()
