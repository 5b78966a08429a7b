"""One picture through the service's picture reader (read_picture then to_mnist_form) in two checkouts, in one
process, alternating: what reading by contrast costs a picture. Usage: python bench/pictures.py OLD_CHECKOUT [NEW]
(NEW: this checkout). Pictures: a fixture digit drawn on a light page with noise, 1024x768 as JPEG (RGB), PNG (L)
and PNG (RGB), and the drawing pad's 280x280 PNG; prints the median milliseconds of each and the ratio NEW / OLD."""

from __future__ import annotations

import argparse
import importlib.util
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from digitpipe.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]


def reader(checkout: Path):
    """digitpipe/data/pictures.py of `checkout`, loaded on its own (it imports only digitpipe's errors and files)."""
    spec = importlib.util.spec_from_file_location(f"pictures_{abs(hash(checkout))}",
                                                  checkout / "digitpipe/data/pictures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return lambda data: module.to_mnist_form(module.read_picture(data))


def pictures() -> dict[str, bytes]:
    digit = load_dataset(ROOT / "tests/fixtures/mnist-1000").images[0]
    noise = np.random.default_rng(0).normal(0, 6, (768, 1024))
    page = np.full((768, 1024), 220.0) + noise
    page[184:584, 312:712] -= np.asarray(Image.fromarray(digit).resize((400, 400))) * 0.8
    grey = page.clip(0, 255).astype(np.uint8)
    pad = np.asarray(Image.fromarray(digit).resize((280, 280)))
    made = {"1024x768 JPEG RGB": (np.repeat(grey[..., None], 3, 2), "JPEG"), "1024x768 PNG L": (grey, "PNG"),
            "1024x768 PNG RGB": (np.repeat(grey[..., None], 3, 2), "PNG"), "280x280 PNG (the pad)": (pad, "PNG")}
    out = {}
    for name, (array, kind) in made.items():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, kind)
        out[name] = buffer.getvalue()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path, nargs="?", default=ROOT)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    sides = {"old": reader(args.old.resolve()), "new": reader(args.new.resolve())}
    for name, data in pictures().items():
        seen: dict[str, list[float]] = {"old": [], "new": []}
        for round_ in range(args.rounds):
            for side in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                start = time.perf_counter()
                sides[side](data)
                seen[side].append(time.perf_counter() - start)
        old, new = (statistics.median(seen[side]) * 1000 for side in ("old", "new"))
        print(f"{name}: old {old:.1f} ms, new {new:.1f} ms, new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
