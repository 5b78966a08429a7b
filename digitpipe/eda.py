"""The book's exploration of a digit dataset: numbers, pictures and one HTML page that shows them."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from digitpipe.data.dataset import N_CLASSES, Dataset
from digitpipe.files import write_json, write_once, write_text
from digitpipe.plots import block_histograms_png, mean_digits_png, sample_digits_png

CENTRE_BLOCK = (376, 377, 404, 405)  # the book's central 2x2 pixels (row 13-14, column 12-13)


def describe(data: Dataset) -> dict:
    """Dimensions, label counts and proportions, pixel range and ink statistics."""
    flat = data.flat()
    summary = {"source": data.source, "digest": data.digest, "images": len(data), "height": 28, "width": 28,
               "pixels_per_image": flat.shape[1], "pixel_min": int(flat.min()), "pixel_max": int(flat.max()),
               "pixel_mean": round(float(flat.mean()), 3),
               "share_of_zero_pixels": round(float(np.mean(flat == 0)), 4)}
    if data.labels is not None:
        counts = np.bincount(data.labels, minlength=N_CLASSES)
        summary["label_counts"] = {str(d): int(c) for d, c in enumerate(counts)}
        summary["label_proportions"] = {str(d): round(float(c / len(data)), 4) for d, c in enumerate(counts)}
    return summary


def write_report(data: Dataset, out_dir: Path) -> Path:
    """Pictures, summary.json and report.html in `out_dir`; returns the HTML page."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = describe(data)
    write_json(out_dir / "summary.json", summary)
    pictures = [("Sample digits, upright", sample_digits_png(data, out_dir / "sample_digits.png"))]
    if data.labels is not None:
        pictures += [
            ("Central 2x2 block (pixel376, 377, 404, 405) per digit",
             block_histograms_png(data, CENTRE_BLOCK, out_dir / "centre_block_histograms.png")),
            ("Mean image of each digit", mean_digits_png(data, out_dir / "mean_digits.png")),
        ]
    return write_text(out_dir / "report.html", _html(summary, pictures))  # last and atomic: its presence means done


def explore(data: Dataset, cache: Path) -> Path:
    """The book's exploration of `data`, written once per dataset digest under `cache` and reused after."""
    return write_once(cache / data.digest[:16], lambda fresh: write_report(data, fresh), "report.html")


def _html(summary: dict, pictures: list[tuple[str, Path]]) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in summary.items() if not isinstance(v, dict))
    labels = ""
    if "label_counts" in summary:
        labels = "<h2>Labels</h2><table><tr><th>digit</th><th>count</th><th>proportion</th></tr>" + "".join(
            f"<tr><td>{d}</td><td>{c}</td><td>{summary['label_proportions'][d]:.2%}</td></tr>"
            for d, c in summary["label_counts"].items()) + "</table>"
    figures = "".join(f"<h2>{html.escape(title)}</h2><img src='{path.name}' alt='{html.escape(title)}'>"
                      for title, path in pictures)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>digitpipe EDA</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:2px 10px;text-align:left}"
            f"img{{max-width:100%}}</style></head><body><h1>Exploring {html.escape(summary['source'])}</h1>"
            f"<table>{rows}</table>{labels}{figures}</body></html>\n")
