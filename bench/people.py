"""How the zoo reads people's digits (digitpipe.people: drawn on the page, photographed, other hands) beside t10k,
and scikit-learn's bundled 8x8 `load_digits` (another collection, reserved as an outside check: nothing trains, tunes
or selects on it), one table: per model, per seed, with training seconds.

Standard protocol: fit on MNIST's 60,000 training images less the default 10% validation slice, test on t10k
(make the folder with bench/standard_mnist.py). The families are made once from a seeded sample of t10k and kept in
OUT/families-*.npz; each trained model's ONNX file is kept in OUT/LABEL/, so a second run (another --label, more
seeds) trains only what is missing.

Usage: python bench/people.py [MNIST_DIR] [--models fastcnn,logreg,mlp,dnn,lenet] [--seeds 42,7,1]
       [--book-seeds 42] [--digits 1000] [--label shipped] [--set augmentation.elastic_share=0.5,...]
--seeds are fastcnn's training seeds, --book-seeds the book's four models'; --set changes fastcnn's spec.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from _common import ROOT, data_parser, data_path

from digitpipe import people
from digitpipe.data import load_dataset, split_by_protocol
from digitpipe.export import export_onnx
from digitpipe.onnx_scorer import OnnxScorer
from digitpipe.records.specs import spec_for
from digitpipe.runtime import pick_device, use_cores
from digitpipe.zoo import train_model

OUT = ROOT / "outputs" / "people-bench"
COLUMNS = ("t10k", *people.FAMILIES, "load_digits")


def main() -> None:
    parser = data_parser()
    parser.add_argument("--models", default="fastcnn,logreg,mlp,dnn,lenet")
    parser.add_argument("--seeds", default="42,7,1", help="fastcnn's training seeds")
    parser.add_argument("--book-seeds", default="42", help="the book's four models' training seeds")
    parser.add_argument("--digits", type=int, default=1000, help="t10k digits per family")
    parser.add_argument("--label", default="shipped", help="names this configuration's folder of trained models")
    parser.add_argument("--set", default="", help="fastcnn spec fields, e.g. augmentation.elastic_share=0.5")
    parser.add_argument("--train-only", action="store_true", help="train and keep the models; no table")
    args = parser.parse_args()
    overrides = {k: float(v) for k, v in (item.split("=") for item in args.set.split(",") if item)}
    folder = data_path(args)
    split = split_by_protocol(load_dataset(folder), "standard", folder)
    device, threads = pick_device(), use_cores()
    print(f"standard protocol: fit on {len(split.train):,} ({len(split.val):,} for validation), t10k "
          f"{len(split.test):,}; {device}, {threads} threads; fastcnn changes: {overrides or 'none'}", flush=True)
    runs = [(name, int(seed)) for name in args.models.split(",")
            for seed in (args.seeds if name == "fastcnn" else args.book_seeds).split(",")]
    models = {run: _trained(*run, split, device, OUT / args.label, overrides if run[0] == "fastcnn" else {})
              for run in runs}
    if args.train_only:
        return
    sets = _benchmark(split.test, args.digits)
    print(f"{'model':<8} {'seed':>4} " + " ".join(f"{c:>12}" for c in COLUMNS) + f" {'train s':>8}")
    for name in args.models.split(","):
        rows = [(seed, _row(models[(name, seed)][0], sets), models[(name, seed)][1]) for n, seed in runs if n == name]
        for seed, row, seconds in rows:
            print(f"{name:<8} {seed:>4} " + " ".join(f"{100 * a:>12.2f}" for a in row) + f" {seconds:>8.1f}")
        if len(rows) > 1:
            mean = np.mean([row for _, row, _ in rows], axis=0)
            print(f"{name:<8} {'mean':>4} " + " ".join(f"{100 * a:>12.2f}" for a in mean)
                  + f" {np.mean([s for _, _, s in rows]):>8.1f}", flush=True)


def _trained(name: str, seed: int, split, device: str, folder: Path, overrides: dict) -> tuple[Path, float]:
    """The ONNX file of `name` trained from `seed` (trained now unless kept from an earlier run) and its seconds."""
    path, facts = folder / f"{name}-{seed}.onnx", folder / f"{name}-{seed}.json"
    if path.exists() and facts.exists() and json.loads(facts.read_text())["overrides"] == overrides:
        return path, json.loads(facts.read_text())["seconds"]
    trained = train_model(name, spec_for(name, overrides=overrides), split, device, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(trained.model, path)
    facts.write_text(json.dumps({"seconds": trained.train_seconds, "overrides": overrides}))
    print(f"trained {name} seed {seed} in {trained.train_seconds:.1f} s -> {path}", flush=True)
    return path, trained.train_seconds


def _benchmark(test, digits: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(images, labels) per column: t10k whole, each family of a seeded sample of it, load_digits."""
    sample = np.sort(np.random.default_rng(0).permutation(len(test))[:digits])
    images, labels = test.images[sample], test.labels[sample]
    cache = OUT / f"families-{people.SPEC}-{digits}-{test.digest[:12]}.npz"  # another test set: made again
    if cache.exists():
        made = dict(np.load(cache))
    else:
        made = {}
        for family in people.FAMILIES:
            start = time.perf_counter()
            made[family] = people.family(family, images, labels)
            print(f"made {digits} {family} digits in {time.perf_counter() - start:.1f} s", flush=True)
        OUT.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(cache, **made)
    outside_images, outside_labels = _load_digits()
    return {"t10k": (test.images, test.labels), **{f: (made[f], labels) for f in people.FAMILIES},
            "load_digits": (outside_images, outside_labels)}


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8x8 digits (UCI's, written by 43 people: 0-16 ink counts) in MNIST's form, through
    the service's reader (to_mnist_form), each given a 2-pixel margin (its ink touches the 8x8 frame) and enlarged
    eight times as a camera would see it; one the reader finds blank counts as a black digit."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    framed = np.pad(bunch.images * 255 / 16, ((0, 0), (2, 2), (2, 2))).astype(np.uint8)
    big = [np.asarray(Image.fromarray(img).resize((96, 96), Image.Resampling.BILINEAR)) for img in framed]
    return np.stack([people.mnist_form(img) for img in big]), bunch.target


def _row(path: Path, sets: dict) -> list[float]:
    scorer = OnnxScorer(path)
    return [float(np.mean(scorer.predict(images) == labels)) for images, labels in sets.values()]


if __name__ == "__main__":
    main()
